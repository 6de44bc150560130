//! Watching every scheduler of the process from another thread: a registry of live
//! schedulers, the counters each one shares, snapshots taken on request, and stall detection
//! by sampling, in the style of Go's `sysmon`.
//!
//! # Design
//!
//! A scheduler is confined to its thread, and a scheduler that is stalled (a tasklet computes
//! without giving up the CPU, or is stuck in native code) cannot answer for itself. So the
//! monitor splits what it knows in two:
//!
//! - **Shared counters, written by the owner, read by anyone** ([`Counters`]): the switch
//!   counter, the id of the running tasklet, whether the thread sleeps in its poller, the
//!   poll counter. The owner writes them with plain `Relaxed` stores where it already updates
//!   its own state (one store per switch for the counter, which replaces the thread-local one,
//!   one for the running id, two per blocking poll for the idle flag): no clock read, no
//!   read-modify-write, no fence. A reader samples them without any cooperation from the owner.
//! - **Snapshots, taken by the owner when asked** ([`SchedulerHandle::request_snapshot`]): the
//!   reader bumps a request counter and notifies the scheduler's poller (the cross-thread wake-up
//!   path the reactor already has); the owner compares the counter with the last one it answered
//!   whenever it polls (at once when it sleeps in the poller, once per pass over the run queue
//!   while tasklets wait on I/O or timers) and, on a thread that never polls, every
//!   [`CHECK_EVERY`] switches, found with a mask test on the counter it has just incremented:
//!   the atomic load happens once per 256 switches, never per switch. It then takes a
//!   [`Snapshot`] and publishes it in a shared slot ([`SchedulerHandle::latest_snapshot`]). A
//!   stalled scheduler does not answer; its last published snapshot stays there, with the
//!   instant it was taken, so a reader can show it as stale.
//!
//! **Stalls** are found as Go's `sysmon` finds goroutines that run too long: a [`Watcher`]
//! samples each scheduler's counters; a scheduler that is not idle in its poller, whose switch
//! counter and running tasklet have not changed for longer than a threshold, is held by that
//! tasklet right now ([`Activity::Stalled`]). The time is measured from the first sample that
//! saw the counter at its current value, so it is a lower bound, exact to one sampling period.
//! The main tasklet holding the thread is reported apart ([`Activity::MainBusy`]): main is the
//! thread's own code, which runs outside the scheduler between `run()` calls.
//!
//! # The built-in sysmon (stall reports by default)
//!
//! The stall report of [`set_stall_threshold`](crate::set_stall_threshold) comes from one
//! process-wide thread, `tasklet-sysmon`, started with the first scheduler (and again in a
//! forked child, which inherits no threads: `pthread_atfork` handlers hold the registry across
//! the fork, so the child never inherits it locked, and drop the other threads' schedulers
//! from the child's registry). It samples every scheduler's counters as above,
//! against each scheduler's own threshold (an atomic in `Shared`, `u64::MAX` for "never"),
//! every fifth of the smallest threshold, between [`SYSMON_MIN_PERIOD`] and
//! [`SYSMON_MAX_PERIOD`] (20 ms for the default 100 ms: 50 wake-ups a second, a few
//! microseconds of CPU each). A tasklet other than main that holds its thread past the
//! threshold is reported once per slice, **while it still holds the thread**: a warning
//! through `log` (stderr when no logger would show it, see `debug::warn`) and an
//! [`EventKind::Stall`] event. The report names the tasklet: the owner lists its *named*
//! tasklets in a small table of the shared block when they are created and reaped (a lock
//! per named spawn; unnamed spawns, the fast path, touch nothing), since the sysmon may never
//! read a `Task`, which belongs to another thread and may be freed at any moment.
//!
//! This costs the owner nothing per switch: no clock read, no extra store (the counter and the
//! running id were shared already). Per-tasklet CPU accounting (a clock read per switch) is
//! therefore off by default and needed only for the CPU column of snapshots and for
//! [`run_watchdog`](crate::run_watchdog).
//!
//! Events that the owner reports itself (deadlocks of the main tasklet) are also kept, the
//! last [`EVENTS_KEPT`] per scheduler, for [`SchedulerHandle::events`].
//!
//! Rejected: asking each scheduler for its state at every refresh (a stalled one never
//! answers, which is exactly when it matters); a clock read per switch to time slices
//! (issue 14: a TSC read can cost more than the switch in some VMs; this was the stall report
//! before the sysmon, after the fact only, and doubled the cost of a switch in such VMs); a
//! check of the request flag at every switch (an atomic load on the hot path for a feature used
//! rarely); the sysmon reading the running tasklet's name through a pointer into its `Task`
//! (a data race with the owner reusing the task for a new tasklet); a sysmon that backs off
//! while every scheduler idles (a thread that wakes and stalls at once would be reported up to
//! one long period late).
//!
//! Everything here uses std atomics and the poller's portable notification; the OS thread id
//! ([`SchedulerHandle::os_thread_id`]) is each system's own (`sys::thread_id` off Linux).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{Thread, ThreadId};
use std::time::{Duration, Instant, SystemTime};

use crate::debug::{snapshot, Snapshot};

/// A scheduler that never polls looks for snapshot requests once every this many switches.
pub const CHECK_EVERY: u64 = 256;

/// How many events ([`SchedulerHandle::events`]) each scheduler keeps.
pub const EVENTS_KEPT: usize = 64;

/// The built-in sysmon samples at most this often (thresholds under 5 ms).
pub const SYSMON_MIN_PERIOD: Duration = Duration::from_millis(1);

/// The built-in sysmon samples at least this often (thresholds over 100 ms).
pub const SYSMON_MAX_PERIOD: Duration = Duration::from_millis(20);

/// What one scheduler shares with other threads (see the module comment).
pub(crate) struct Shared {
    id: u64,
    thread: Thread,
    os_tid: Option<u64>,
    main_id: u64,
    /// Times a tasklet other than main gave up the CPU: the scheduler's own counter.
    pub(crate) switches: AtomicU64,
    polls: AtomicU64,
    running: AtomicU64,
    idle: AtomicBool,
    alive: AtomicBool,
    requested: AtomicU64,
    answered: AtomicU64,
    /// The stall threshold in nanoseconds (`u64::MAX`: never report), read by the sysmon.
    stall_ns: AtomicU64,
    /// Names of the scheduler's named tasklets that have not finished, for the sysmon's
    /// reports (see "The built-in sysmon").
    names: Mutex<HashMap<u64, Box<str>>>,
    /// The reactor's shared half, to wake the poller; set when the poller is made.
    notifier: Mutex<Option<Arc<crate::reactor::Shared>>>,
    published: Mutex<Option<Arc<PublishedSnapshot>>>,
    events: Mutex<(u64, VecDeque<Event>)>,
}

static REGISTRY: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers the calling thread's new scheduler, whose main tasklet has id `main_id`.
pub(crate) fn register(main_id: u64) -> Arc<Shared> {
    let shared = Arc::new(Shared {
        id: NEXT_ID.fetch_add(1, Relaxed),
        thread: std::thread::current(),
        os_tid: os_thread_id(),
        main_id,
        switches: AtomicU64::new(0),
        polls: AtomicU64::new(0),
        running: AtomicU64::new(main_id),
        idle: AtomicBool::new(false),
        alive: AtomicBool::new(true),
        requested: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        stall_ns: AtomicU64::new(nanos(crate::DEFAULT_STALL_THRESHOLD)),
        names: Mutex::new(HashMap::new()),
        notifier: Mutex::new(None),
        published: Mutex::new(None),
        events: Mutex::new((0, VecDeque::new())),
    });
    lock(&REGISTRY).push(shared.clone());
    sysmon::ensure_started();
    shared
}

/// `duration` in nanoseconds, saturating (`u64::MAX` means "never").
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn os_thread_id() -> Option<u64> {
    // SAFETY: `gettid` has no preconditions and cannot fail.
    Some(unsafe { libc::gettid() } as u64)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn os_thread_id() -> Option<u64> {
    crate::sys::thread_id()
}

/// The CPU time the calling thread has used.
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    crate::sys::syscall!(clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts)).ok()?;
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

impl Shared {
    /// The scheduler is going away: out of the registry, and its poller released.
    pub(crate) fn unregister(self: &Arc<Self>) {
        self.alive.store(false, Relaxed);
        self.idle.store(false, Relaxed);
        lock(&self.notifier).take();
        lock(&REGISTRY).retain(|s| !Arc::ptr_eq(s, self));
    }

    /// The scheduler made its poller: requests can wake it from now on.
    pub(crate) fn set_notifier(&self, notifier: Arc<crate::reactor::Shared>) {
        *lock(&self.notifier) = Some(notifier);
    }

    /// The tasklet with this id runs now. One relaxed store.
    #[inline(always)]
    pub(crate) fn set_running(&self, id: u64) {
        self.running.store(id, Relaxed);
    }

    /// The thread sleeps in its poller (`true`) or stopped sleeping.
    #[inline]
    pub(crate) fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Relaxed);
    }

    /// Counts one more switch of a tasklet other than main if `tasklet`; returns the count.
    #[inline(always)]
    pub(crate) fn count_switch(&self, tasklet: bool) -> u64 {
        let n = self.switches.load(Relaxed) + u64::from(tasklet);
        self.switches.store(n, Relaxed);
        n
    }

    /// The poller was called: publishes the count and answers a pending snapshot request.
    /// Called by the reactor after each poll, before it wakes anyone.
    pub(crate) fn polled(&self, polls: u64) {
        self.polls.store(polls, Relaxed);
        self.answer_if_requested();
    }

    /// Takes and publishes a snapshot if one was requested since the last answer. Runs on the
    /// owning thread with no scheduler state borrowed.
    #[inline]
    pub(crate) fn answer_if_requested(&self) {
        let requested = self.requested.load(Relaxed);
        if requested != self.answered.load(Relaxed) {
            self.answer(requested);
        }
    }

    #[cold]
    fn answer(&self, ticket: u64) {
        let published = PublishedSnapshot {
            snapshot: snapshot(),
            ticket,
            taken_at: Instant::now(),
            thread_cpu: thread_cpu(),
        };
        *lock(&self.published) = Some(Arc::new(published));
        self.answered.store(ticket, Relaxed);
    }

    /// Sets the stall threshold the sysmon applies to this scheduler (`None`: never report).
    pub(crate) fn set_stall_threshold(&self, threshold: Option<Duration>) {
        let old = self.stall_ns.swap(threshold.map_or(u64::MAX, nanos), Relaxed);
        if threshold.is_some_and(|t| nanos(t) < old) {
            // The sysmon may be asleep for a fifth of the old threshold: a stall under the new
            // one could begin and end before it looks again.
            sysmon::wake();
        }
    }

    /// The stall threshold (`None`: stalls are not reported).
    fn stall_threshold(&self) -> Option<Duration> {
        match self.stall_ns.load(Relaxed) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// A named tasklet was created: the sysmon may name it in a report.
    #[cold]
    pub(crate) fn add_name(&self, id: u64, name: &str) {
        lock(&self.names).insert(id, name.into());
    }

    /// A named tasklet finished.
    #[cold]
    pub(crate) fn remove_name(&self, id: u64) {
        lock(&self.names).remove(&id);
    }

    /// Keeps an event (a stall, a deadlock report).
    #[cold]
    pub(crate) fn record(&self, kind: EventKind, tasklet: Option<u64>, message: String) {
        let mut events = lock(&self.events);
        events.0 += 1;
        let seq = events.0;
        if events.1.len() == EVENTS_KEPT {
            events.1.pop_front();
        }
        events.1.push_back(Event { seq, at: SystemTime::now(), kind, tasklet, message });
    }
}

/// Every scheduler of the process that is alive now, oldest first.
///
/// # Examples
///
/// ```
/// let here = tasklets::monitor::current().expect("this thread has a scheduler now");
/// assert!(tasklets::monitor::schedulers().iter().any(|s| s.id() == here.id()));
/// ```
pub fn schedulers() -> Vec<SchedulerHandle> {
    lock(&REGISTRY).iter().cloned().map(SchedulerHandle).collect()
}

/// The calling thread's scheduler, created if it has none yet (`None` only while the thread
/// exits).
pub fn current() -> Option<SchedulerHandle> {
    crate::scheduler::try_scheduler().map(|s| SchedulerHandle(s.monitor().clone()))
}

/// A `Send + Sync` handle to one scheduler, for watching it from any thread.
#[derive(Clone)]
pub struct SchedulerHandle(Arc<Shared>);

/// What a scheduler's shared counters say at one instant ([`SchedulerHandle::counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Times a tasklet other than main gave up the CPU ([`SchedulerStats::switches`](crate::SchedulerStats)).
    pub switches: u64,
    /// Calls to the poller, as of the last one.
    pub polls: u64,
    /// The id of the tasklet that runs now (main's while the thread idles).
    pub running: u64,
    /// Whether the thread sleeps in its poller, waiting for I/O, a timer or a wake-up.
    pub idle: bool,
}

/// A snapshot a scheduler took of itself, on request ([`SchedulerHandle::latest_snapshot`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PublishedSnapshot {
    /// The scheduler's tasklets and counters.
    pub snapshot: Snapshot,
    /// The request it answered (see [`SchedulerHandle::request_snapshot`]).
    pub ticket: u64,
    /// When it was taken.
    pub taken_at: Instant,
    /// The CPU time the thread had used then.
    pub thread_cpu: Option<Duration>,
}

/// What a kept [`Event`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A tasklet held the thread longer than the stall threshold, reported by the built-in
    /// sysmon while it still held it (see [`set_stall_threshold`](crate::set_stall_threshold)).
    Stall,
    /// The main tasklet would have blocked for ever: its operation failed with a deadlock error.
    Deadlock,
}

/// Something a scheduler reported about itself ([`SchedulerHandle::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// Numbers the scheduler's events from 1.
    pub seq: u64,
    /// When it happened.
    pub at: SystemTime,
    /// What it is.
    pub kind: EventKind,
    /// The tasklet it is about (the one that stalled), if any.
    pub tasklet: Option<u64>,
    /// The report, as logged.
    pub message: String,
}

impl SchedulerHandle {
    /// A process-unique number for this scheduler (not reused).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The name of the scheduler's thread.
    pub fn thread_name(&self) -> Option<&str> {
        self.0.thread.name()
    }

    /// The std id of the scheduler's thread.
    pub fn thread_id(&self) -> ThreadId {
        self.0.thread.id()
    }

    /// The operating system's id of the thread: Linux's TID (as in `/proc/self/task/TID`),
    /// macOS's `pthread_threadid_np`, FreeBSD's `pthread_getthreadid_np` (the ids `ps`, debuggers
    /// and profilers show).
    pub fn os_thread_id(&self) -> Option<u64> {
        self.0.os_tid
    }

    /// The id of the scheduler's main tasklet.
    pub fn main_tasklet(&self) -> u64 {
        self.0.main_id
    }

    /// Whether the scheduler still runs (its thread has not exited).
    pub fn is_alive(&self) -> bool {
        self.0.alive.load(Relaxed)
    }

    /// The shared counters, read without the scheduler's help.
    pub fn counters(&self) -> Counters {
        Counters {
            switches: self.0.switches.load(Relaxed),
            polls: self.0.polls.load(Relaxed),
            running: self.0.running.load(Relaxed),
            idle: self.0.idle.load(Relaxed),
        }
    }

    /// Asks the scheduler to publish a snapshot of itself, and returns the request's ticket.
    ///
    /// It answers the next time it polls (at once if it sleeps in its poller), or within
    /// [`CHECK_EVERY`] switches on a thread that never polls; a stalled scheduler answers
    /// when it moves again. Requests made before an answer are answered together.
    pub fn request_snapshot(&self) -> u64 {
        let ticket = self.0.requested.fetch_add(1, Relaxed) + 1;
        if let Some(notifier) = lock(&self.0.notifier).as_ref() {
            notifier.notify();
        }
        ticket
    }

    /// Whether the request with this ticket (or a later one) was answered.
    pub fn is_answered(&self, ticket: u64) -> bool {
        self.0.answered.load(Relaxed) >= ticket
    }

    /// The last snapshot the scheduler published, if it ever did.
    pub fn latest_snapshot(&self) -> Option<Arc<PublishedSnapshot>> {
        lock(&self.0.published).clone()
    }

    /// The events the scheduler kept (the last [`EVENTS_KEPT`]), oldest first.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.0.events).1.iter().cloned().collect()
    }
}

impl fmt::Debug for SchedulerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerHandle")
            .field("id", &self.0.id)
            .field("thread", &self.0.thread.name().unwrap_or("<unnamed>"))
            .field("alive", &self.is_alive())
            .finish_non_exhaustive()
    }
}

impl PartialEq for SchedulerHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SchedulerHandle {}

/// What a [`Watcher`] found a scheduler doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activity {
    /// Sleeping in its poller.
    Idle,
    /// Switching between tasklets, or held by one for less than the threshold.
    Running,
    /// The main tasklet has held the thread for at least `for_at_least`: the thread runs its
    /// own code outside the scheduler (or main computes between `run()` calls).
    MainBusy {
        /// How long, at least.
        for_at_least: Duration,
    },
    /// The tasklet `tasklet` has held the thread for at least `for_at_least` without giving
    /// up the CPU, longer than the threshold: the thread is stalled right now.
    Stalled {
        /// The tasklet that holds the thread.
        tasklet: u64,
        /// How long, at least (a lower bound, exact to one sampling period).
        for_at_least: Duration,
    },
}

/// Finds stalls while they happen by sampling the schedulers' shared counters, as Go's
/// `sysmon` does (see the module comment). The caller samples periodically (every 10 to
/// 100 ms, say): a stall is seen within one period after it passes the threshold.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use tasklets::monitor::{Activity, Watcher};
///
/// let stuck = std::thread::spawn(|| {
///     let hog = tasklets::Builder::new().name("hog").spawn(|| std::thread::sleep(Duration::from_millis(300)));
///     tasklets::run(); // the hog holds the thread in native code
///     hog.unwrap().id()
/// });
/// let mut watcher = Watcher::new(Duration::from_millis(50));
/// let mut seen = None;
/// while seen.is_none() && !stuck.is_finished() {
///     for s in tasklets::monitor::schedulers() {
///         if let Activity::Stalled { tasklet, .. } = watcher.observe(&s, Instant::now()) {
///             seen = Some(tasklet);
///         }
///     }
///     std::thread::sleep(Duration::from_millis(10));
/// }
/// assert_eq!(seen, Some(stuck.join().unwrap()));
/// ```
#[derive(Debug)]
pub struct Watcher {
    threshold: Duration,
    seen: HashMap<u64, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    switches: u64,
    running: u64,
    since: Instant,
}

impl Watcher {
    /// A watcher that calls a scheduler stalled when one tasklet holds it longer than
    /// `threshold`.
    pub fn new(threshold: Duration) -> Watcher {
        Watcher { threshold, seen: HashMap::new() }
    }

    /// The threshold.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Samples `scheduler`'s counters at `now` and says what it is doing.
    pub fn observe(&mut self, scheduler: &SchedulerHandle, now: Instant) -> Activity {
        let c = scheduler.counters();
        if c.idle || !scheduler.is_alive() {
            self.seen.remove(&scheduler.id());
            return Activity::Idle;
        }
        let seen = self.seen.entry(scheduler.id()).or_insert(Seen {
            switches: c.switches,
            running: c.running,
            since: now,
        });
        if seen.switches != c.switches || seen.running != c.running {
            *seen = Seen { switches: c.switches, running: c.running, since: now };
        }
        let held = now.saturating_duration_since(seen.since);
        if held < self.threshold {
            Activity::Running
        } else if c.running == scheduler.main_tasklet() {
            Activity::MainBusy { for_at_least: held }
        } else {
            Activity::Stalled { tasklet: c.running, for_at_least: held }
        }
    }

    /// Forgets the schedulers not in `alive` (call with [`schedulers()`] now and then).
    pub fn retain(&mut self, alive: &[SchedulerHandle]) {
        self.seen.retain(|id, _| alive.iter().any(|s| s.id() == *id));
    }
}

/// The built-in sysmon: one thread per process that reports stalls while they happen (see
/// "The built-in sysmon" in the module comment).
mod sysmon {
    use super::*;

    /// The process the sysmon thread runs in (0: none started); a forked child starts its own.
    static STARTED_IN: Mutex<u32> = Mutex::new(0);
    /// Wakes the sysmon when the first scheduler registers, and when a threshold is lowered
    /// (its period shrinks with the smallest threshold).
    static REGISTERED: Condvar = Condvar::new();

    /// Counts `wake` calls, so that one made while the sysmon samples is not lost.
    static WAKES: AtomicU64 = AtomicU64::new(0);

    /// Makes the sysmon sample now and recompute its period.
    pub(super) fn wake() {
        let _registry = lock(&REGISTRY);
        WAKES.fetch_add(1, Relaxed);
        REGISTERED.notify_all();
    }

    /// Starts the sysmon thread unless this process has one.
    pub(super) fn ensure_started() {
        static FORK_HANDLERS: std::sync::Once = std::sync::Once::new();
        FORK_HANDLERS.call_once(|| {
            // SAFETY: registers three handlers that only lock and unlock this module's two
            // statics in the forking thread (see `hold_for_fork`); they never run user code.
            unsafe {
                libc::pthread_atfork(Some(hold_for_fork), Some(release_in_parent), Some(release_in_child))
            };
        });
        let pid = std::process::id();
        let mut started = lock(&STARTED_IN);
        if *started == pid {
            REGISTERED.notify_one();
            return;
        }
        let spawned = std::thread::Builder::new().name("tasklet-sysmon".into()).spawn(run);
        match spawned {
            Ok(_) => *started = pid,
            Err(err) => {
                log::warn!("tasklet: cannot start the sysmon thread, stalls will not be reported: {err}")
            }
        }
    }

    /// The two locks the sysmon takes, held by the forking thread across a `fork`.
    type Held = (MutexGuard<'static, u32>, MutexGuard<'static, Vec<Arc<Shared>>>);

    thread_local! {
        static HELD: std::cell::RefCell<Option<Held>> = const { std::cell::RefCell::new(None) };
    }

    /// `pthread_atfork`'s prepare handler: takes the registry (and the started flag) so that no
    /// other thread holds them at the fork. A child inherits only the forking thread: a lock
    /// the sysmon held at that instant would stay held there forever, and the child's first
    /// scheduler would wait for it in `register` (`tests/fork.rs`). The order is the one every
    /// other path agrees with: nothing takes `STARTED_IN` while holding `REGISTRY`.
    extern "C" fn hold_for_fork() {
        let held = (lock(&STARTED_IN), lock(&REGISTRY));
        HELD.with(|slot| *slot.borrow_mut() = Some(held));
    }

    /// The parent's handler: the locks go back.
    extern "C" fn release_in_parent() {
        HELD.with(|slot| drop(slot.borrow_mut().take()));
    }

    /// The child's handler: only the forking thread's scheduler (if any) still exists, so the
    /// other threads' ones leave the registry before the locks go back.
    extern "C" fn release_in_child() {
        HELD.with(|slot| {
            if let Some((started, mut registry)) = slot.borrow_mut().take() {
                let me = std::thread::current().id();
                registry.retain(|s| s.thread.id() == me);
                drop(registry);
                drop(started);
            }
        });
    }

    /// What the sysmon last saw of one scheduler.
    struct Seen {
        switches: u64,
        running: u64,
        since: Instant,
        reported: bool,
    }

    fn run() {
        let mut seen: HashMap<u64, Seen> = HashMap::new();
        loop {
            let schedulers: Vec<Arc<Shared>> = {
                let mut registry = lock(&REGISTRY);
                while registry.is_empty() {
                    seen.clear();
                    registry = REGISTERED.wait(registry).unwrap_or_else(|p| p.into_inner());
                }
                registry.clone()
            };
            let wakes = WAKES.load(Relaxed);
            let now = Instant::now();
            let mut period = SYSMON_MAX_PERIOD;
            seen.retain(|id, _| schedulers.iter().any(|s| s.id == *id));
            for shared in &schedulers {
                let Some(threshold) = shared.stall_threshold() else {
                    seen.remove(&shared.id);
                    continue;
                };
                period = period.min(threshold / 5);
                sample(shared, threshold, now, &mut seen);
            }
            drop(schedulers);
            // Sleeps on the registry's condition variable so that a lowered threshold
            // (`wake`) cuts the sleep short: `WAKES` is bumped under the lock, so a wake made
            // while this pass sampled is seen here and one made later finds the sysmon
            // waiting. A spurious wake-up only samples early.
            let registry = lock(&REGISTRY);
            if WAKES.load(Relaxed) == wakes {
                drop(REGISTERED.wait_timeout(registry, period.max(SYSMON_MIN_PERIOD)));
            }
        }
    }

    /// Samples one scheduler; reports its stall once if one tasklet has held it past
    /// `threshold`.
    fn sample(shared: &Shared, threshold: Duration, now: Instant, seen: &mut HashMap<u64, Seen>) {
        let idle = shared.idle.load(Relaxed);
        let running = shared.running.load(Relaxed);
        let switches = shared.switches.load(Relaxed);
        if idle || !shared.alive.load(Relaxed) || running == shared.main_id {
            seen.remove(&shared.id);
            return;
        }
        let entry = seen.entry(shared.id).or_insert(Seen { switches, running, since: now, reported: false });
        if entry.switches != switches || entry.running != running {
            *entry = Seen { switches, running, since: now, reported: false };
        }
        let held = now.saturating_duration_since(entry.since);
        if held >= threshold && !entry.reported {
            entry.reported = true;
            report(shared, running, held, threshold);
        }
    }

    #[cold]
    fn report(shared: &Shared, tasklet: u64, held: Duration, threshold: Duration) {
        let name = lock(&shared.names).get(&tasklet).cloned();
        let message = format!(
            "tasklet {} held the thread for {:?} without giving up the CPU, and still holds it: thread \
             '{}' is stalled (stall threshold {:?})",
            crate::scheduler::Describe(tasklet, name.as_deref()),
            Duration::from_millis(held.as_millis() as u64),
            shared.thread.name().unwrap_or("<unnamed>"),
            crate::debug::rounded(threshold),
        );
        // Kept first, logged second: whoever reads the warning finds the event already kept.
        shared.record(EventKind::Stall, Some(tasklet), message.clone());
        crate::debug::warn(crate::debug::Report::Stall, &message);
    }
}
