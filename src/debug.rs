//! Seeing the constellation: a snapshot of every tasklet of the thread (what it waits on, when
//! it last ran, how often and how long it ran), scheduler counters, and the switches that
//! control accounting and stall reports.
//!
//! # Accounting
//!
//! Per-tasklet CPU accounting is **off by default** and turned on per thread with
//! [`set_accounting`]: then each switch reads a cheap clock once (the TSC on x86_64, see
//! `clock`) and charges the slice since the previous switch to the tasklet that just stopped
//! running; time the thread spends waiting in the poller is charged to nobody. The clock read
//! was a third of the cost of a switch on the benchmark VM, more in others (measured in
//! `docs/benchmarks.md`), hence the default. Snapshots show CPU times only with accounting on
//! ([`Snapshot::accounting`] says which); switch counts are kept either way. The watchdog
//! ([`run_watchdog`](crate::run_watchdog)) turns accounting on for its duration.
//!
//! Stall reports ([`set_stall_threshold`]) need no accounting: the built-in sysmon thread (see
//! [`crate::monitor`]) watches every scheduler's switch counter and reports a tasklet that
//! holds its thread too long *while* it does. Nothing can preempt native code: the watchdog
//! acts only when the tasklet finally gives up the CPU, like Stackless's `run(timeout)` checks
//! between tasklets, and unlike its interpreter-level one.
//!
//! # Dumps on a signal
//!
//! [`dump_on_signal`] is Go's SIGQUIT goroutine dump. A signal handler may not allocate or
//! touch a scheduler (it interrupts one mid-switch), so the handler does two async-signal-safe
//! things only: it bumps a process-wide request counter and writes to an `eventfd` (a drained
//! self-pipe off Linux: `sys::SignalWaker`). Every scheduler's poller watches it (added,
//! edge-triggered, the first time the scheduler polls after the handler was installed; never
//! closed, so never deleted), so a thread asleep in `epoll_wait` wakes up. Each scheduler compares the counter with the last value it saw
//! whenever it polls, and dumps its own tasklets if the counter moved: after the wait in the
//! idle path, and at the busy-path check that runs while tasklets wait on I/O or timers.
//! Rejected: a dedicated dump tasklet per thread blocked on the eventfd (it would keep `run()`
//! from ever returning, since a tasklet parked on I/O keeps the thread alive), and a check at
//! every switch (the hot path stays free of it). A thread whose tasklets only compute and use
//! channels never polls, and a thread stuck in native code never reaches a switch; neither
//! dumps (a debugger can: `gdb -p PID`, `thread apply all bt`).

use std::cell::Cell;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::clock;
use crate::reactor::Direction;
use crate::runqueue::Priority;
use crate::scheduler::{scheduler, BlockedOn, Describe, State};
use crate::sys::{syscall, SignalWaker};

/// What a tasklet is doing, as [`TaskletInfo::state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskletState {
    /// It is the one taking the snapshot.
    Running,
    /// In the run queue.
    Runnable,
    /// Waiting; [`TaskletInfo::waiting_on`] says for what.
    Blocked,
    /// Alive but neither runnable nor blocked.
    Paused,
}

/// What a blocked tasklet waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitingOn {
    /// Sending on the channel with this id.
    Send {
        /// The channel's id (see the `Debug` of [`Channel`](crate::Channel)).
        channel: u64,
    },
    /// Receiving on the channel with this id.
    Receive {
        /// The channel's id.
        channel: u64,
    },
    /// An fd to become readable or writable.
    Io {
        /// The file descriptor.
        fd: RawFd,
        /// Waiting for writability (else readability).
        write: bool,
    },
    /// Sleeping.
    Sleep,
    /// The tasklet with this id to finish.
    Join {
        /// The joined tasklet's id.
        tasklet: u64,
    },
    /// A function running on the [`unblock`](crate::unblock) pool.
    Unblock,
}

impl fmt::Display for WaitingOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WaitingOn::Send { channel } => write!(f, "send on channel {channel}"),
            WaitingOn::Receive { channel } => write!(f, "receive on channel {channel}"),
            WaitingOn::Io { fd, write: false } => write!(f, "read on fd {fd}"),
            WaitingOn::Io { fd, write: true } => write!(f, "write on fd {fd}"),
            WaitingOn::Sleep => f.write_str("sleep"),
            WaitingOn::Join { tasklet } => write!(f, "join of tasklet {tasklet}"),
            WaitingOn::Unblock => f.write_str("unblock job"),
        }
    }
}

/// One tasklet in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskletInfo {
    /// The tasklet's id.
    pub id: u64,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Whether it is the thread's main tasklet.
    pub is_main: bool,
    /// Its priority level.
    pub priority: Priority,
    /// What it is doing.
    pub state: TaskletState,
    /// What it waits for, when blocked.
    pub waiting_on: Option<WaitingOn>,
    /// When its current wait times out (a sleep's end, a read timeout, `receive_timeout`).
    pub deadline: Option<Instant>,
    /// How long ago it last stopped running (`None`: never ran, or accounting is off).
    pub since_last_ran: Option<Duration>,
    /// How many times it gave up the CPU (counted with accounting on or off).
    pub switches: u64,
    /// CPU time spent running while accounting was on (zero when it never was; see
    /// [`Snapshot::accounting`]).
    pub cpu_time: Duration,
    /// Where it was spawned or bound (the caller of `spawn`, `Builder::spawn` or
    /// `Builder::bind`); `None` for the main tasklet.
    pub spawned_at: Option<&'static std::panic::Location<'static>>,
}

/// Scheduler counters in a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Times a tasklet other than main gave up the CPU (yielded, blocked or finished) since the
    /// scheduler was created.
    pub switches: u64,
    /// Tasklets woken from a wait (channel, I/O, timer, join, unblock).
    pub wakeups: u64,
    /// Calls to the readiness poller.
    pub polls: u64,
    /// Tasklets alive now, main included.
    pub alive: usize,
    /// Tasklets runnable now, the current one included.
    pub runnable: usize,
    /// Tasklets parked on fds, on the `unblock` pool or on [`sync`](crate::sync) channels now.
    pub parked_on_io: usize,
    /// Armed timers now.
    pub timers: usize,
}

/// Every tasklet of the calling thread and the scheduler's counters, at one instant.
///
/// `Display` prints an aligned table, the goroutine dump of this runtime.
///
/// # Examples
///
/// ```
/// let ch = tasklets::Channel::<u8>::new();
/// let rx = ch.clone();
/// tasklets::Builder::new().name("waiter").spawn(move || rx.receive())?;
/// tasklets::run();
/// let snap = tasklets::snapshot();
/// let waiter = snap.tasklets.iter().find(|t| t.name.as_deref() == Some("waiter")).unwrap();
/// assert_eq!(waiter.state, tasklets::TaskletState::Blocked);
/// assert!(matches!(waiter.waiting_on, Some(tasklets::WaitingOn::Receive { .. })));
/// println!("{snap}");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The tasklets, main first, then by id.
    pub tasklets: Vec<TaskletInfo>,
    /// The scheduler's counters.
    pub stats: SchedulerStats,
    /// Whether per-tasklet CPU accounting was on ([`set_accounting`]): without it,
    /// [`TaskletInfo::cpu_time`] and [`TaskletInfo::since_last_ran`] say nothing.
    pub accounting: bool,
}

/// Takes a [`Snapshot`] of the calling thread's tasklets.
pub fn snapshot() -> Snapshot {
    let sched = scheduler();
    let now_tick = clock::now();
    let accounting = sched.accounting_on();
    let tasklets = sched
        .all_tasks()
        .into_iter()
        .map(|task| {
            let (switches, cpu, last_ran) = task.accounting();
            let state = match task.state() {
                _ if sched.is_current(&task) => TaskletState::Running,
                State::Runnable => TaskletState::Runnable,
                State::Blocked(_) => TaskletState::Blocked,
                State::Paused | State::Finished => TaskletState::Paused,
            };
            let waiting_on = match task.state() {
                State::Blocked(on) => Some(match on {
                    BlockedOn::Send(channel) => WaitingOn::Send { channel },
                    BlockedOn::Receive(channel) => WaitingOn::Receive { channel },
                    BlockedOn::Join(tasklet) => WaitingOn::Join { tasklet },
                    BlockedOn::Sleep => WaitingOn::Sleep,
                    BlockedOn::Io(fd, dir) => WaitingOn::Io { fd, write: dir == Direction::Write },
                    BlockedOn::Unblock => WaitingOn::Unblock,
                }),
                _ => None,
            };
            TaskletInfo {
                id: task.id(),
                name: task.name().map(str::to_owned),
                is_main: task.is_main(),
                priority: task.priority(),
                state,
                waiting_on,
                deadline: task.timer().map(|(deadline, _)| deadline),
                since_last_ran: (accounting && last_ran != 0 && state != TaskletState::Running)
                    .then(|| clock::to_duration(now_tick.saturating_sub(last_ran))),
                switches,
                cpu_time: clock::to_duration(cpu),
                spawned_at: task.spawned_at(),
            }
        })
        .collect::<Vec<_>>();
    let (switches, wakeups, polls) = sched.counters();
    let stats = SchedulerStats {
        switches,
        wakeups,
        polls,
        alive: tasklets.len(),
        runnable: sched.runcount(),
        parked_on_io: sched.reactor().parked(),
        timers: sched.timers().len(),
    };
    Snapshot { tasklets, stats, accounting }
}

/// Prints a [`Snapshot`] of the calling thread to standard error.
///
/// For a dump on demand, as Go dumps its goroutines on `SIGQUIT`, see [`dump_on_signal`]; a
/// signal handler itself must not call this (it allocates).
pub fn dump() {
    eprintln!("{}", snapshot());
}

/// Dump requests received by the signal handler of [`dump_on_signal`] so far.
static DUMP_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// What the handler wakes sleeping pollers with (an eventfd on Linux, a self-pipe elsewhere:
/// see `sys::SignalWaker`); set once, never dropped.
static DUMP_WAKER: OnceLock<SignalWaker> = OnceLock::new();
/// Serialises installations (creating the waker once, `sigaction`).
static INSTALL: Mutex<()> = Mutex::new(());

/// Makes `signal` print a [`Snapshot`] of every thread's tasklets to standard error, as Go
/// prints its goroutines on `SIGQUIT`; the process goes on running.
///
/// Installs a process-wide handler for `signal` (replacing the previous disposition; the
/// handler only records the request and wakes the pollers). Each thread with a scheduler dumps
/// its own tasklets the next time it polls for I/O: at once if it is waiting in its poller,
/// within one pass over its run queue while tasklets wait on I/O or timers. A thread whose
/// tasklets only compute and use channels does not poll and does not dump, and no thread can
/// dump while native code holds it (see the design notes of the `debug` module's source). Calling it again, for
/// the same or another signal, is allowed.
///
/// # Errors
/// `InvalidInput` for `SIGSEGV`, `SIGBUS`, `SIGILL` and `SIGFPE` (faults, and the stack
/// overflow handler's), and for signals that cannot be caught or do not exist (`sigaction`'s
/// `EINVAL`); the OS error if the eventfd (self-pipe off Linux) cannot be created.
///
/// # Examples
///
/// ```no_run
/// // `kill -QUIT <pid>` now prints the tasklets of every thread to stderr.
/// tasklets::dump_on_signal(libc::SIGQUIT)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn dump_on_signal(signal: libc::c_int) -> io::Result<()> {
    if matches!(signal, libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signal} reports a fault; it cannot request a tasklet dump"),
        ));
    }
    let _guard = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if DUMP_WAKER.get().is_none() {
        let _ = DUMP_WAKER.set(SignalWaker::new()?);
    }
    // SAFETY: a zeroed `sigaction` is a valid value (empty mask, no flags); the handler is an
    // `extern "C" fn(c_int)` that only touches atomics and calls `write`, both
    // async-signal-safe; the pointers passed are valid for the call.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = request_dump as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        syscall!(sigemptyset(&mut action.sa_mask))?;
        syscall!(sigaction(signal, &action, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// The signal handler of [`dump_on_signal`]: async-signal-safe, preserves `errno`.
extern "C" fn request_dump(_signal: libc::c_int) {
    DUMP_REQUESTS.fetch_add(1, Ordering::Relaxed);
    // `OnceLock::get` is one atomic load; the waker is never dropped.
    if let Some(waker) = DUMP_WAKER.get() {
        waker.wake();
    }
}

/// The descriptor pollers watch for dump requests, once [`dump_on_signal`] was called.
pub(crate) fn dump_eventfd() -> Option<RawFd> {
    DUMP_WAKER.get().map(SignalWaker::fd)
}

/// The dump requests so far; a scheduler starts from the value at its creation.
pub(crate) fn dump_requests() -> u64 {
    DUMP_REQUESTS.load(Ordering::Relaxed)
}

/// Dumps the calling thread's tasklets if a dump was requested since `seen` was updated.
/// Called by the reactor whenever it polls, with no scheduler state borrowed.
pub(crate) fn dump_if_requested(seen: &Cell<u64>) {
    let requests = DUMP_REQUESTS.load(Ordering::Relaxed);
    if requests == seen.get() {
        return;
    }
    seen.set(requests);
    let thread = std::thread::current();
    let report = format!(
        "tasklet dump of thread '{}' ({:?}):\n{}\n",
        thread.name().unwrap_or("<unnamed>"),
        thread.id(),
        snapshot()
    );
    // One write of the whole report, so dumps of several threads do not interleave by line.
    let _ = io::stderr().lock().write_all(report.as_bytes());
}

/// Turns per-tasklet CPU accounting on the calling thread on or off (**off by default**). On,
/// each switch reads the clock once and snapshots show each tasklet's CPU time and how long
/// ago it last ran; off, a switch reads no clock and those figures stop advancing.
/// [`run_watchdog`](crate::run_watchdog) turns it on for its duration. Stall reports do not
/// need it ([`set_stall_threshold`]).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// tasklets::set_accounting(true);
/// let t = tasklets::Builder::new().name("worker").spawn(|| {
///     let start = Instant::now();
///     while start.elapsed() < Duration::from_millis(2) {}
///     tasklets::schedule();
/// })?;
/// tasklets::schedule();
/// let snap = tasklets::snapshot();
/// assert!(snap.accounting);
/// let worker = snap.tasklets.iter().find(|t| t.name.as_deref() == Some("worker")).unwrap();
/// assert!(worker.cpu_time >= Duration::from_millis(1));
/// tasklets::set_accounting(false);
/// tasklets::run();
/// assert!(!t.is_alive());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_accounting(on: bool) {
    scheduler().set_accounting(on);
}

/// Sets how long a tasklet may hold the calling thread's CPU without giving it up before it is
/// reported, or `None` for never. The default is
/// [`DEFAULT_STALL_THRESHOLD`](crate::DEFAULT_STALL_THRESHOLD) (100 ms).
///
/// The report comes while the stall is happening, from the process's sysmon thread (see
/// [`crate::monitor`]), within a fifth of the threshold after it passes (at least 1 ms, at
/// most 20 ms): a warning naming the tasklet (`log::warn!`; with no logger active, the first
/// stall of the process goes to stderr instead), kept as a
/// [`monitor::EventKind::Stall`](crate::monitor::EventKind) event. It needs no accounting and
/// costs nothing per switch. The main tasklet is never reported (it is the thread's own code).
pub fn set_stall_threshold(threshold: Option<Duration>) {
    scheduler().set_stall_threshold(threshold);
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "{} tasklet(s): {} runnable, {} parked on I/O or unblock, {} timer(s); {} switches, {} wake-ups, {} polls{}",
            s.alive,
            s.runnable,
            s.parked_on_io,
            s.timers,
            s.switches,
            s.wakeups,
            s.polls,
            if self.accounting { "" } else { "; CPU accounting off (tasklets::set_accounting)" }
        )?;
        let rows: Vec<[String; 6]> = self
            .tasklets
            .iter()
            .map(|t| {
                let waiting = match (t.waiting_on, t.deadline) {
                    (Some(on), Some(deadline)) => {
                        format!("{on} (for {:.1?} more)", deadline.saturating_duration_since(Instant::now()))
                    }
                    (Some(on), None) => on.to_string(),
                    (None, _) => String::new(),
                };
                [
                    match t.priority {
                        Priority::Normal => Describe(t.id, t.name.as_deref()).to_string(),
                        other => format!("{} [{other}]", Describe(t.id, t.name.as_deref())),
                    },
                    format!("{:?}", t.state).to_lowercase(),
                    waiting,
                    t.since_last_ran.map_or_else(|| "-".to_owned(), |d| format!("{d:.1?}")),
                    t.switches.to_string(),
                    if self.accounting { format!("{:.1?}", t.cpu_time) } else { "off".to_owned() },
                ]
            })
            .collect();
        let header = ["TASKLET", "STATE", "WAITING ON", "LAST RAN", "SWITCHES", "CPU"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 6]| -> fmt::Result {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                if i >= 3 {
                    out.push_str(&format!("{cell:>width$}", width = widths[i]));
                } else {
                    out.push_str(&format!("{cell:<width$}", width = widths[i]));
                }
            }
            writeln!(f, "{}", out.trim_end())
        };
        line(f, header)?;
        for row in &rows {
            line(f, [&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]])?;
        }
        Ok(())
    }
}

/// Wraps the process's panic hook (once) so that a panic in a tasklet other than a thread's
/// main one first names the tasklet: std's message says only `thread 'main' panicked at ..`,
/// since the OS thread is what std knows. The previous hook (std's default, or one the user set
/// before the first scheduler was created) then runs unchanged; a hook set later replaces this
/// one, as `set_hook` always does.
///
/// std formats `thread '{name}' panicked at {location}:\n{message}`; the tasklet line goes
/// right before it, in the same style: `tasklet 'boom' (id 3) on thread 'main' panicked:`.
pub(crate) fn install_panic_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(sched) = crate::scheduler::existing_scheduler() {
                let task = sched.current();
                if !task.is_main() {
                    let thread = std::thread::current();
                    let tasklet = match task.name() {
                        Some(name) => format!("tasklet '{name}' (id {})", task.id()),
                        None => format!("tasklet (id {})", task.id()),
                    };
                    let _ = writeln!(
                        io::stderr().lock(),
                        "{tasklet} on thread '{}' panicked:",
                        thread.name().unwrap_or("<unnamed>")
                    );
                }
            }
            previous(info);
        }));
    });
}

/// The kinds of report that reach stderr when no logger would show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// A tasklet held the thread past the stall threshold: only the first of the process is
    /// printed (the next ones are likely the same mistake, such as forgetting the shims).
    Stall,
    /// The main tasklet deadlocked: each is printed, at most one a second.
    Deadlock,
}

/// Logs `message` as a warning; when no logger would show it (none installed, or
/// `log::max_level()` is `Off`), prints it to stderr instead, as Go prints its deadlock error,
/// once per process for stalls and at most once a second for deadlocks.
pub(crate) fn warn(kind: Report, message: &str) {
    if log::log_enabled!(log::Level::Warn) {
        log::warn!("{message}");
        return;
    }
    static STALL_PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static LAST_DEADLOCK_MS: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let print = match kind {
        Report::Stall => !STALL_PRINTED.swap(true, Ordering::Relaxed),
        Report::Deadlock => {
            // Milliseconds since the first report, plus one so that 0 means "never printed".
            let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
            let last = LAST_DEADLOCK_MS.load(Ordering::Relaxed);
            (last == 0 || now >= last + 1000)
                && LAST_DEADLOCK_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        }
    };
    if print {
        let hint = match kind {
            Report::Stall => " (printed once; install a logger, or see tasklets::set_stall_threshold)",
            Report::Deadlock => "",
        };
        let _ = writeln!(io::stderr().lock(), "tasklets: {message}{hint}");
    }
}

/// `duration` to the nearest microsecond, for messages: a threshold converted to clock ticks
/// and back prints as "100ms", not "99.999999ms".
pub(crate) fn rounded(duration: Duration) -> Duration {
    Duration::from_micros((duration.as_nanos() as f64 / 1000.0).round() as u64)
}

/// A one-paragraph report of what every blocked tasklet waits on, for deadlock errors.
pub(crate) fn deadlock_report() -> String {
    let snap = snapshot();
    let blocked: Vec<String> = snap
        .tasklets
        .iter()
        .filter(|t| !t.is_main && t.state != TaskletState::Runnable && t.state != TaskletState::Running)
        .map(|t| match t.waiting_on {
            Some(on) => format!("tasklet {} waits on {on}", Describe(t.id, t.name.as_deref())),
            None => format!("tasklet {} is paused", Describe(t.id, t.name.as_deref())),
        })
        .collect();
    if blocked.is_empty() {
        "no other tasklet is alive".to_owned()
    } else {
        blocked.join("; ")
    }
}
