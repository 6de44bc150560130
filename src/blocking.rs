//! Truly blocking calls, run on a pool of OS threads while the calling tasklet is parked.
//!
//! # Design
//!
//! One process-wide pool: a queue of jobs (mutex + condition variable) served by worker threads
//! that are started on demand, up to [`MAX_THREADS`], and retire after [`IDLE_TIMEOUT`] without
//! work. A job carries the function, a slot for its result (or panic), and a
//! [`RemoteWaker`](crate::reactor::RemoteWaker) for the tasklet that waits: when the function
//! returns, the worker fills the slot and wakes the tasklet through its reactor's lock-free
//! queue and `Poller::notify()`. The waiting thread keeps running its other tasklets meanwhile,
//! and `run()` does not return while such a wait is pending.
//!
//! Rejected: a thread per call (creation costs tens of microseconds and nothing bounds the
//! thread count); running the function on the caller's thread (it would block every tasklet of
//! the thread, the very thing `unblock` exists to avoid).
//!
//! # Borrowing callers
//!
//! [`unblock`] takes a `'static` function. Inside the crate, `unblock_scoped` lets the function
//! borrow from the caller's frame (name resolution borrows the caller's `&str`), which is sound
//! only because the caller cannot leave that frame before the job has finished: not by
//! returning (it waits for the result) and not by unwinding (a kill while waiting makes the
//! guard block the thread until the job is done, as `std::thread::scope` does). Name
//! resolution never waits for a tasklet, so that block is bounded by the resolver's timeouts.
//!
//! # Kills
//!
//! A kill of a tasklet waiting in [`unblock`] takes effect at once: the job owns everything it
//! touches (`'static`), finishes on its worker and drops its result with the slot, and its late
//! wake-up finds the remote-wait slot freed and is dropped. Blocking the killed tasklet's
//! thread until the job ended (the old behaviour) froze every tasklet of the thread, and hung
//! it forever when the job waited for one of them. Inside `with_kills_deferred` (the shims) a
//! kill ends the wait with [`Wake::Never`]: `unblock` must still return a value and blocks, so
//! such callers use `io::unblock_unless_killed`, which returns `None` at once.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use crate::reactor::RemoteWaker;
use crate::scheduler::{existing_scheduler, BlockedOn, Wake};

/// Most worker threads alive at once.
pub const MAX_THREADS: usize = 64;

/// How long an idle worker waits for a job before it exits.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

static POOL: Pool = Pool {
    state: Mutex::new(PoolState { jobs: VecDeque::new(), threads: 0, idle: 0 }),
    work: Condvar::new(),
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    fn submit(&'static self, job: Job) {
        let mut state = lock(&self.state);
        state.jobs.push_back(job);
        // One idle worker per queued job: a job queued behind a busy worker while the pool
        // could still grow would wait for that job (forever if they wait for each other).
        if state.idle >= state.jobs.len() {
            self.work.notify_one();
            return;
        }
        if state.threads < MAX_THREADS {
            let spawned =
                thread::Builder::new().name("tasklet-unblock".into()).spawn(move || self.work_loop());
            match spawned {
                Ok(_) => state.threads += 1,
                Err(err) if state.threads == 0 => {
                    // No worker at all: run the job here rather than never.
                    log::warn!("tasklet: cannot start an unblock worker ({err}); running the job inline");
                    let job = state.jobs.pop_back().expect("just pushed");
                    drop(state);
                    job();
                }
                Err(err) => log::warn!("tasklet: cannot start another unblock worker ({err})"),
            }
        }
    }

    fn work_loop(&'static self) {
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                job();
                state = lock(&self.state);
                continue;
            }
            state.idle += 1;
            let (next, timeout) =
                self.work.wait_timeout(state, IDLE_TIMEOUT).unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

/// Where a job leaves its outcome.
struct Slot<R> {
    result: Mutex<Option<thread::Result<R>>>,
    done: Condvar,
}

/// Runs `f` on a pool of worker threads and parks the calling tasklet until it returns; the
/// other tasklets of the thread run meanwhile. Use it for calls that block the OS thread and
/// have no readiness to wait for: file system calls, blocking C libraries, CPU-heavy work, DNS.
///
/// Returns what `f` returns; if `f` panics, the panic is resumed in the caller. On a thread
/// that never used the runtime, `f` simply runs on the pool while the thread blocks.
///
/// The pool starts threads on demand, at most [`MAX_THREADS`], and retires a thread after
/// [`IDLE_TIMEOUT`] without work. If the calling tasklet is killed while it waits, the kill
/// takes effect at once; `f` still runs to completion on its worker (it owns everything it
/// touches) and its result is dropped there. Inside
/// [`with_kills_deferred`](crate::io::with_kills_deferred) a kill cannot unwind, and `unblock`
/// must return `f`'s value, so there it blocks the thread until `f` has returned: use
/// [`io::unblock_unless_killed`](crate::io::unblock_unless_killed) in such scopes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let slow = tasklets::spawn(|| tasklets::unblock(|| {
///     std::thread::sleep(Duration::from_millis(20)); // blocks a pool thread, not this one
///     6 * 7
/// }));
/// let ticks = tasklets::spawn(|| (0..3).map(|_| tasklets::time::sleep(Duration::from_millis(1))).count());
/// tasklets::run();
/// assert_eq!(slow.join().unwrap(), 42);
/// assert_eq!(ticks.join().unwrap(), 3);
/// ```
pub fn unblock<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let job = Submitted::new(f);
    let result = match job.wait_cooperatively() {
        Some(result) => result,
        // A kill deferred by `with_kills_deferred` ended the wait: block (see the docs).
        None => job.wait(),
    };
    resume(result)
}

/// [`unblock`] that returns `None` at once when a kill (deferred by
/// [`with_kills_deferred`](crate::io::with_kills_deferred)) ends the wait: the job finishes in
/// the background and its result is dropped. See `crate::io::unblock_unless_killed`.
pub(crate) fn unblock_unless_killed<F, R>(f: F) -> Option<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    Submitted::new(f).wait_cooperatively().map(resume)
}

/// [`unblock`] for a function that may borrow from the caller (see the module comment). A kill
/// while it waits blocks the thread until the job has finished.
pub(crate) fn unblock_scoped<'a, F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'a,
    R: Send + 'static,
{
    let job: Box<dyn FnOnce() -> R + Send + 'a> = Box::new(f);
    // SAFETY: the job may borrow from the caller's frame ('a). The caller does not leave this
    // function before the job has run to completion: on return it has taken the result, and on
    // unwind `Completion` blocks the thread until the job has stored it. So every borrow the
    // job holds outlives the job, which is all that extending its lifetime to 'static needs.
    let job = unsafe {
        std::mem::transmute::<Box<dyn FnOnce() -> R + Send + 'a>, Box<dyn FnOnce() -> R + Send + 'static>>(
            job,
        )
    };
    let job = Submitted::new(job);
    let completion = Completion { job: &job };
    let result = match job.wait_cooperatively() {
        Some(result) => result,
        None => job.wait(),
    };
    std::mem::forget(completion);
    resume(result)
}

/// Returns the job's value or resumes its panic.
fn resume<R>(result: thread::Result<R>) -> R {
    match result {
        Ok(value) => value,
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// A job handed to the pool, and how to wait for it.
struct Submitted<R> {
    slot: Arc<Slot<R>>,
    waker: Option<RemoteWaker>,
}

impl<R: Send + 'static> Submitted<R> {
    /// Submits `f`, which owns everything it touches: the pool thread may outlive the caller's
    /// wait (a kill), and then drops the result itself.
    fn new<F: FnOnce() -> R + Send + 'static>(f: F) -> Submitted<R> {
        let slot = Arc::new(Slot { result: Mutex::new(None), done: Condvar::new() });
        let waker = existing_scheduler().and_then(|sched| match sched.reactor().remote_waker() {
            Ok(waker) => Some(waker),
            Err(err) => {
                log::warn!(
                    "tasklet: cannot wait for the unblock pool cooperatively ({err}); blocking the thread"
                );
                None
            }
        });
        let job = {
            let slot = slot.clone();
            let waker = waker.clone();
            Box::new(move || {
                let result = panic::catch_unwind(AssertUnwindSafe(f));
                *lock(&slot.result) = Some(result);
                slot.done.notify_all();
                if let Some(waker) = waker {
                    waker.wake();
                }
            })
        };
        POOL.submit(job);
        Submitted { slot, waker }
    }
}

impl<R> Submitted<R> {
    /// Parks the current tasklet until the job is done and returns its result; `None` when the
    /// wait ended first (a kill deferred by `with_kills_deferred`). A kill that can unwind
    /// unwinds from here, leaving the job to finish alone. Without a scheduler, blocks.
    fn wait_cooperatively(&self) -> Option<thread::Result<R>> {
        if let (Some(sched), Some(waker)) = (existing_scheduler(), &self.waker) {
            if sched.reactor().wait_remote(waker, BlockedOn::Unblock) == Wake::Never {
                return None;
            }
        }
        Some(self.wait())
    }

    /// Blocks the thread until the job has stored its result.
    fn wait(&self) -> thread::Result<R> {
        let mut result = lock(&self.slot.result);
        loop {
            if let Some(result) = result.take() {
                return result;
            }
            result = self.slot.done.wait(result).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Blocks the thread until a scoped job has stored its result, on unwind (see `unblock_scoped`).
struct Completion<'s, R> {
    job: &'s Submitted<R>,
}

impl<R> Drop for Completion<'_, R> {
    fn drop(&mut self) {
        // Only reached when unwinding out of `unblock_scoped` (killed while waiting).
        drop(self.job.wait());
    }
}
