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
//! guard block the thread until the job is done, as `std::thread::scope` does).

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use crate::reactor::RemoteWaker;
use crate::scheduler::{existing_scheduler, BlockedOn};

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
        if state.idle > 0 {
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
/// [`IDLE_TIMEOUT`] without work. If the calling tasklet is killed while it waits, `f` still
/// runs to completion on its worker and its result is dropped.
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
    unblock_scoped(f)
}

/// [`unblock`] for a function that may borrow from the caller (see the module comment).
pub(crate) fn unblock_scoped<'a, F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'a,
    R: Send + 'a,
{
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
    let job: Box<dyn FnOnce() + Send + 'a> = {
        let slot = slot.clone();
        let waker: Option<RemoteWaker> = waker.clone();
        Box::new(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(f));
            *lock(&slot.result) = Some(result);
            slot.done.notify_all();
            if let Some(waker) = waker {
                waker.wake();
            }
        })
    };
    // SAFETY: the job may borrow from the caller's frame ('a). The caller does not leave this
    // function before the job has run to completion: on return it has taken the result, and on
    // unwind `Completion` blocks the thread until the job has stored it. So every borrow the
    // job holds outlives the job, which is all that extending its lifetime to 'static needs.
    let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + 'a>, Job>(job) };
    let completion = Completion { slot: &slot };
    POOL.submit(job);
    if let (Some(sched), Some(waker)) = (existing_scheduler(), &waker) {
        let _ = sched.reactor().wait_remote(waker, BlockedOn::Unblock);
    }
    let result = completion.wait();
    std::mem::forget(completion);
    match result {
        Ok(value) => value,
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// Blocks the thread until the job has stored its result; on unwind too (see `unblock_scoped`).
struct Completion<'s, R> {
    slot: &'s Slot<R>,
}

impl<R> Completion<'_, R> {
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

impl<R> Drop for Completion<'_, R> {
    fn drop(&mut self) {
        // Only reached when unwinding out of `unblock_scoped` (killed while waiting).
        drop(self.wait());
    }
}
