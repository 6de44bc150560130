//! Scheduler threads: start N OS threads that each run their own scheduler, run a closure on
//! each, spawn tasklets on a chosen thread from anywhere, and stop and join them.
//!
//! # Design
//!
//! Each thread's main tasklet serves a *mailbox*, an unbounded [`sync::channel`] of messages
//! ("spawn this", "stop"). It waits for them in `receive` like any tasklet, so the thread's
//! other tasklets run while it waits, and the thread sleeps in its poller when none is
//! runnable; a message from another thread wakes it through the poller. A [`Thread`] handle is
//! the mailbox's sender with the thread's index: `Send`, `Sync` and cheap to clone.
//! [`Thread::spawn`] posts a job that spawns the tasklet over there; the tasklet's result or
//! panic comes back through a `sync::channel(1)` held by the [`JoinHandle`].
//!
//! The thread's own closure (the one given to [`Builder::spawn`]) runs as its first tasklet,
//! the *root*. Stopping is a message too, queued behind the jobs posted before it: the thread
//! leaves the mailbox loop, drops the mailbox (later spawns report [`JoinError::Killed`]),
//! kills its tasklets if asked ([`Threads::shutdown`]), runs the rest to completion
//! ([`run`](crate::run)), and sends the root's outcome back; tasklets still blocked on
//! local channels after that are killed at thread exit, as always.
//!
//! Tasklets never move between these threads (moving a suspended stack is unsound: compiled
//! code caches thread-local addresses), so there is no work stealing: what runs where is what
//! the program says. `docs/multicore.md` shows the patterns.
//!
//! Rejected: a per-thread lock-free queue plus `notify` for the mailbox (what the reactor does
//! internally): the `sync` channel is that already, with closing and a parked receiver for
//! free. Detached threads on drop: dropping [`Threads`] stops (killing what still runs) and
//! joins, as dropping a runtime does elsewhere, so no scheduler thread outlives its owner
//! unnoticed.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

use crate::scheduler::{panic_message, scheduler};
use crate::sync::{self, RecvError, TrySendError};
use crate::{JoinError, TaskletExit};

/// A job for a thread's main tasklet: spawns a tasklet there.
type Job = Box<dyn FnOnce() + Send>;

/// What a thread's mailbox carries.
enum Message {
    Spawn(Job),
    Stop { kill: bool },
}

thread_local! {
    /// The handle of the scheduler thread running this code, on threads started here.
    static CURRENT: RefCell<Option<Thread>> = const { RefCell::new(None) };
}

/// Configures and starts scheduler threads: how many, their names, their stack size, and
/// whether each is pinned to a CPU.
///
/// # Examples
///
/// ```
/// let threads = tasklets::threads::Builder::new(2)
///     .name("worker")
///     .pin_to_cpus(true)
///     .spawn(|index| std::thread::current().name().unwrap().to_owned() + &format!(" root {index}"))?;
/// let roots: Vec<String> = threads.join().into_iter().map(Result::unwrap).collect();
/// assert_eq!(roots, ["worker-0 root 0", "worker-1 root 1"]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    count: usize,
    name: String,
    pin: bool,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder for `count` threads, named `tasklets-0`, `tasklets-1`, ..., not pinned, with
    /// std's default stack size for their main stacks.
    pub fn new(count: usize) -> Builder {
        Builder { count, name: "tasklets".into(), pin: false, stack_size: None }
    }

    /// Names the threads `{prefix}-{index}`.
    pub fn name(mut self, prefix: impl Into<String>) -> Builder {
        self.name = prefix.into();
        self
    }

    /// Pins thread `i` to the `i`-th CPU this process may run on (`sched_setaffinity`),
    /// wrapping around when there are more threads than CPUs. Off by default. Linux only:
    /// elsewhere [`spawn`](Builder::spawn) fails with `Unsupported` when it is on.
    pub fn pin_to_cpus(mut self, pin: bool) -> Builder {
        self.pin = pin;
        self
    }

    /// The size of each thread's own stack, where its main tasklet runs (tasklets have their
    /// own stacks: see [`Builder::stack_size`](crate::Builder::stack_size)).
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.stack_size = Some(size);
        self
    }

    /// Starts the threads and runs `f(index)` as the first tasklet of each; returns once every
    /// thread has its scheduler and poller (and is pinned, if asked).
    ///
    /// # Errors
    /// `InvalidInput` for 0 threads; the error of a thread that could not be started, pinned,
    /// or given a poller or a stack for its first tasklet (the threads started so far are
    /// stopped and joined first).
    pub fn spawn<F, R>(self, f: F) -> io::Result<Threads<R>>
    where
        F: Fn(usize) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        if self.count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tasklets::threads: no threads to start",
            ));
        }
        let cpus = match self.pin {
            true => Some(crate::sys::allowed_cpus()?).filter(|cpus| !cpus.is_empty()),
            false => None,
        };
        let f = Arc::new(f);
        let (started, starts) = sync::channel::<io::Result<()>>(self.count);
        let mut threads = Threads { threads: Vec::new(), joiners: Vec::new() };
        for index in 0..self.count {
            let cpu = cpus.as_ref().map(|cpus| cpus[index % cpus.len()]);
            let (mailbox, inbox) = sync::channel(usize::MAX);
            let (done_tx, done) = sync::channel(1);
            let me = Thread { index, cpu, mailbox };
            let mut builder = thread::Builder::new().name(format!("{}-{index}", self.name));
            if let Some(size) = self.stack_size {
                builder = builder.stack_size(size);
            }
            let (f, started, thread) = (f.clone(), started.clone(), me.clone());
            let os = builder.spawn(move || thread_main(thread, f, inbox, started, done_tx))?;
            threads.threads.push(me);
            threads.joiners.push(Joiner { done, os });
        }
        drop(started);
        for _ in 0..self.count {
            match starts.receive() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err), // dropping `threads` stops the others
                Err(_) => return Err(io::Error::other("tasklets::threads: a thread ended while starting")),
            }
        }
        Ok(threads)
    }
}

/// Starts `count` scheduler threads and runs `f(index)` as the first tasklet of each
/// ([`Builder::new(count).spawn(f)`](Builder::spawn)).
///
/// # Errors
/// As [`Builder::spawn`].
///
/// # Examples
///
/// Shared nothing: each thread computes on its own; `join` returns what each root returned.
///
/// ```
/// let threads = tasklets::threads::spawn(2, |index| (1..=10).map(|n| n * (index + 1)).sum::<usize>())?;
/// let sums: Vec<usize> = threads.join().into_iter().map(Result::unwrap).collect();
/// assert_eq!(sums, [55, 110]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn<F, R>(count: usize, f: F) -> io::Result<Threads<R>>
where
    F: Fn(usize) -> R + Send + Sync + 'static,
    R: Send + 'static,
{
    Builder::new(count).spawn(f)
}

/// The handle of the scheduler thread the caller runs on, if it is one started by this module.
///
/// # Examples
///
/// ```
/// assert!(tasklets::threads::current().is_none()); // not a scheduler thread
/// let threads = tasklets::threads::spawn(2, |index| tasklets::threads::current().unwrap().index() == index)?;
/// assert!(threads.join().into_iter().all(|same| same.unwrap()));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn current() -> Option<Thread> {
    CURRENT.with(|current| current.borrow().clone())
}

/// Running scheduler threads, made by [`spawn`] or [`Builder::spawn`]; `R` is what each
/// thread's root closure returns.
///
/// Dropping it without [`join`](Threads::join) or [`shutdown`](Threads::shutdown) does what
/// `shutdown` does and ignores the results.
pub struct Threads<R> {
    threads: Vec<Thread>,
    joiners: Vec<Joiner<R>>,
}

/// What joining one thread needs: where its root's outcome arrives, and the OS thread.
struct Joiner<R> {
    done: sync::Receiver<Result<R, JoinError>>,
    os: thread::JoinHandle<()>,
}

impl<R> Threads<R> {
    /// The number of threads.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether there are no threads (never true: at least one is started).
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// The handle of thread `index`.
    ///
    /// # Panics
    /// When `index >= self.len()`, as slice indexing does.
    #[track_caller]
    pub fn thread(&self, index: usize) -> &Thread {
        &self.threads[index]
    }

    /// The handles of every thread, in index order.
    pub fn iter(&self) -> std::slice::Iter<'_, Thread> {
        self.threads.iter()
    }

    /// Stops taking new tasklets (those spawned before still start), waits until every
    /// tasklet of every thread has finished, and returns each thread's root outcome, in index
    /// order: its value, its panic, or [`JoinError::Deadlock`] if it was left blocked on a
    /// local channel forever. A tasklet calling this parks; a plain thread blocks. A tasklet
    /// that never finishes (an accept loop, a wait on a `sync` channel nobody sends on) makes
    /// `join` wait forever, as `std::thread::JoinHandle::join` would: use
    /// [`shutdown`](Threads::shutdown) for those.
    ///
    /// # Panics
    /// When called from one of these threads (it would wait for itself).
    #[track_caller]
    pub fn join(self) -> Vec<Result<R, JoinError>> {
        self.stop(false)
    }

    /// As [`join`](Threads::join), but first kills the tasklets still alive on each thread
    /// (their destructors run); a root that was still running reports
    /// [`JoinError::Killed`].
    ///
    /// # Panics
    /// When called from one of these threads.
    #[track_caller]
    pub fn shutdown(self) -> Vec<Result<R, JoinError>> {
        self.stop(true)
    }

    /// The index of the calling thread among these, if it is one of them.
    fn own_index(&self) -> Option<usize> {
        let me = current()?;
        self.threads.iter().position(|thread| thread.mailbox.same_channel(&me.mailbox))
    }

    #[track_caller]
    fn stop(mut self, kill: bool) -> Vec<Result<R, JoinError>> {
        assert!(
            self.own_index().is_none(),
            "tasklets::threads: a scheduler thread cannot join the threads it belongs to"
        );
        for thread in &self.threads {
            let _ = thread.mailbox.send(Message::Stop { kill });
        }
        std::mem::take(&mut self.joiners).into_iter().map(Joiner::join).collect()
    }
}

impl<R> Joiner<R> {
    fn join(self) -> Result<R, JoinError> {
        let outcome = self.done.receive();
        let exited = self.os.join();
        match (outcome, exited) {
            (Ok(outcome), _) => outcome,
            (Err(_), Err(payload)) => Err(JoinError::Panicked(payload)),
            (Err(_), Ok(())) => Err(JoinError::Killed),
        }
    }
}

impl<R> Drop for Threads<R> {
    /// Stops the threads, killing what still runs, and joins them; dropped on one of these
    /// threads, it does not wait for that one (which stops by itself once the dropping
    /// tasklet gives up the CPU).
    fn drop(&mut self) {
        if self.joiners.is_empty() {
            return;
        }
        let own = self.own_index();
        for thread in &self.threads {
            let _ = thread.mailbox.send(Message::Stop { kill: true });
        }
        for (index, joiner) in std::mem::take(&mut self.joiners).into_iter().enumerate() {
            if Some(index) != own {
                drop(joiner.join());
            }
        }
    }
}

impl<R> fmt::Debug for Threads<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Threads").field("threads", &self.threads).finish_non_exhaustive()
    }
}

impl<'a, R> IntoIterator for &'a Threads<R> {
    type Item = &'a Thread;
    type IntoIter = std::slice::Iter<'a, Thread>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A handle to one scheduler thread: `Send`, `Sync` and cheap to clone, so any thread or
/// tasklet can spawn tasklets on it.
#[derive(Clone)]
pub struct Thread {
    index: usize,
    cpu: Option<usize>,
    mailbox: sync::Sender<Message>,
}

impl Thread {
    /// The thread's index (0 to `len - 1`).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The CPU the thread is pinned to, if it was pinned.
    pub fn cpu(&self) -> Option<usize> {
        self.cpu
    }

    /// Spawns a tasklet running `f` on this thread; it starts when the thread's main tasklet
    /// next runs (the thread is woken through its poller if it sleeps). Never waits.
    ///
    /// If the thread has stopped taking tasklets (joined or shut down), or cannot allocate a
    /// stack for it, `f` is dropped without running and the handle's
    /// [`join`](JoinHandle::join) reports [`JoinError::Killed`].
    ///
    /// # Examples
    ///
    /// ```
    /// let threads = tasklets::threads::spawn(2, |_| ())?;
    /// let answers: Vec<_> = threads.iter().map(|thread| thread.spawn(move || 40 + thread_index())).collect();
    /// fn thread_index() -> usize { tasklets::threads::current().unwrap().index() }
    /// let answers: Vec<usize> = answers.into_iter().map(|a| a.join().unwrap()).collect();
    /// assert_eq!(answers, [40, 41]);
    /// threads.join();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (report, result) = sync::channel(1);
        let job: Job = Box::new(move || {
            if let Err(err) = crate::Builder::new().spawn(move || run_and_report(f, report)) {
                log::warn!("tasklets::threads: cannot spawn a tasklet: {err}");
            }
        });
        // A stopped thread dropped its mailbox: the job (and `report`) is dropped here.
        let _ = self.mailbox.send(Message::Spawn(job));
        JoinHandle { result }
    }
}

impl fmt::Debug for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thread").field("index", &self.index).field("cpu", &self.cpu).finish_non_exhaustive()
    }
}

/// Waits for a tasklet spawned with [`Thread::spawn`]; `Send`, unlike
/// [`Tasklet`](crate::Tasklet).
pub struct JoinHandle<T> {
    result: sync::Receiver<Result<T, JoinError>>,
}

impl<T> JoinHandle<T> {
    /// Waits until the tasklet has finished and returns its value, its panic
    /// ([`JoinError::Panicked`]), or [`JoinError::Killed`] (killed, or never started: see
    /// [`Thread::spawn`]). A tasklet calling this parks; a plain thread blocks.
    pub fn join(self) -> Result<T, JoinError> {
        match self.result.receive() {
            Ok(outcome) => outcome,
            Err(RecvError::Closed) => Err(JoinError::Killed),
            Err(RecvError::Deadlock) => Err(JoinError::Deadlock),
        }
    }

    /// Whether the tasklet has finished (or will never run).
    pub fn is_finished(&self) -> bool {
        !self.result.is_empty() || self.result.is_closed()
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
    }
}

/// The body of a tasklet spawned with [`Thread::spawn`]: runs `f` and reports how it ended.
fn run_and_report<F, T>(f: F, report: sync::Sender<Result<T, JoinError>>)
where
    F: FnOnce() -> T,
{
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => drop(report.try_send(Ok(value))),
        Err(payload) if payload.is::<TaskletExit>() => {
            let _ = report.try_send(Err(JoinError::Killed));
            panic::resume_unwind(payload);
        }
        Err(payload) => {
            if let Err(TrySendError::Closed(Err(JoinError::Panicked(payload)))) =
                report.try_send(Err(JoinError::Panicked(payload)))
            {
                log::error!(
                    "a tasklet spawned on a scheduler thread panicked and was never joined: {}",
                    panic_message(&*payload)
                );
            }
        }
    }
}

/// The life of a scheduler thread (see the module comment).
fn thread_main<F, R>(
    me: Thread,
    f: Arc<F>,
    inbox: sync::Receiver<Message>,
    started: sync::Sender<io::Result<()>>,
    done: sync::Sender<Result<R, JoinError>>,
) where
    F: Fn(usize) -> R + Send + Sync + 'static,
    R: Send + 'static,
{
    let index = me.index;
    let start = || -> io::Result<crate::Tasklet<R>> {
        if let Some(cpu) = me.cpu {
            crate::sys::pin_thread(cpu)?;
        }
        scheduler().reactor().shared()?; // the poller, now: a failure shows at start
        crate::Builder::new().name(format!("root {index}")).spawn(move || f(index))
    };
    let root = match start() {
        Ok(root) => root,
        Err(err) => {
            let _ = started.send(Err(err));
            return;
        }
    };
    let _ = started.send(Ok(()));
    drop(started);
    CURRENT.with(|current| *current.borrow_mut() = Some(me));
    let mut kill = false;
    for message in &inbox {
        match message {
            Message::Spawn(job) => job(),
            Message::Stop { kill: k } => {
                kill = k;
                break;
            }
        }
    }
    drop(inbox);
    if kill {
        let sched = scheduler();
        for task in sched.all_tasks() {
            if !task.is_main() {
                sched.kill(&task);
            }
        }
    }
    crate::run();
    let _ = done.send(root.join());
    drop(CURRENT.with(|current| current.borrow_mut().take()));
}
