//! The cooperative paths: try the call without blocking, park the tasklet on the poller when it
//! would block, honour the socket's timeouts for the whole call, report `EINTR` when a signal
//! handler interrupts the call (see `signals`), and never unwind (every park runs with kills
//! deferred).

use std::time::{Duration, Instant};

use libc::{c_int, c_long};
use tasklets::io::{with_kills_deferred, Interest, Interrupts, Registration};

use crate::signals::Marks;
use crate::{fdtable, sys};

/// Whether hooked calls on this thread may park: the shims are installed and the thread has a
/// scheduler. Checks the process-wide flag first, so before `install()` (and before `main`)
/// no thread-local is touched.
#[inline]
pub(crate) fn thread_is_cooperative() -> bool {
    crate::is_installed() && tasklets::io::is_cooperative()
}

/// Whether a call on `fd` takes the cooperative path: the thread is cooperative and `fd` is a
/// socket other than stdin/stdout/stderr (see the crate comment for why those stay as they
/// are).
#[inline]
pub(crate) fn fd_is_cooperative(fd: c_int) -> bool {
    fd > 2 && thread_is_cooperative() && fdtable::is_socket(fd)
}

/// Why a park ended without readiness: an `errno` value to fail the call with.
pub(crate) type ParkError = c_int;

/// The deadline for a blocking call on `fd` in direction `interest`, from the socket's own
/// `SO_RCVTIMEO` / `SO_SNDTIMEO` (the kernel keeps what the user set; none means forever).
pub(crate) fn deadline_for(fd: c_int, interest: Interest) -> Option<Instant> {
    let opt = match interest {
        Interest::Readable => libc::SO_RCVTIMEO,
        Interest::Writable => libc::SO_SNDTIMEO,
    };
    sys::socket_timeout(fd, opt).and_then(|timeout| Instant::now().checked_add(timeout))
}

/// Parks the current tasklet until socket `fd` may be ready for `interest`, or `deadline`, or
/// an interrupt of the thread after `since`.
///
/// `Err(EAGAIN)` when the deadline passed (what a blocking socket call reports when its
/// `SO_RCVTIMEO`/`SO_SNDTIMEO` expires), `Err(EINTR)` when interrupted (the caller decides
/// whether that fails the call: see [`Call::park`]), `Err(ECANCELED)` when the tasklet was
/// killed meanwhile (the kill is delivered at its next ordinary switch point), `Err(EBADF)`
/// when the socket was closed under the wait, `Err(ENOTSOCK)` when the number turned out not
/// to be a socket (any more), or the poller's error.
pub(crate) fn park(fd: c_int, interest: Interest, deadline: Option<Instant>, since: Interrupts) -> Result<(), ParkError> {
    let Some(st) = sys::fstat(fd) else { return Err(sys::errno()) };
    let is_socket = st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
    let slot = match is_socket.then(|| fdtable::slot(fd, &st)).flatten() {
        Some(slot) => slot,
        None => {
            // The number was closed and reused behind libc's back for something that is not
            // a socket: the socket call fails as the kernel would fail it on this fd.
            fdtable::set_not_socket(fd);
            return Err(libc::ENOTSOCK);
        }
    };
    let result = with_kills_deferred(|| slot.registration().wait_interruptible(interest, deadline, since));
    result.map_err(|err| match err.kind() {
        std::io::ErrorKind::TimedOut => libc::EAGAIN,
        std::io::ErrorKind::Interrupted => libc::EINTR,
        _ => err.raw_os_error().unwrap_or(libc::ECANCELED),
    })
}

/// Whether the user put the file description of `fd` in non-blocking mode (or it cannot be
/// asked, in which case the real call is left to report the error).
pub(crate) fn user_nonblocking(fd: c_int) -> bool {
    let flags = sys::getfl(fd);
    flags < 0 || flags & libc::O_NONBLOCK as c_long != 0
}

/// One blocking socket call in progress, from the hook's entry to its return, however many
/// attempts and parks it takes (a `send` of many chunks, a `MSG_WAITALL` receive, an
/// `accept` woken by another tasklet's connection).
pub(crate) struct Call {
    fd: c_int,
    interest: Interest,
    /// The call's deadline from `SO_RCVTIMEO`/`SO_SNDTIMEO`, read at its first park and kept:
    /// as in the kernel, the timeout bounds the whole call, not each wait.
    deadline: Option<Option<Instant>>,
    /// Signal handlers that ran on the thread before the call started do not interrupt it.
    marks: Marks,
    /// What the interruptible waits compare with (moved on when a handler that does not
    /// interrupt the call woke one).
    since: Interrupts,
}

impl Call {
    /// The call starts now: signal handlers that run from here on may interrupt it.
    pub(crate) fn new(fd: c_int, interest: Interest) -> Call {
        Call { fd, interest, deadline: None, marks: Marks::now(), since: Interrupts::now() }
    }

    /// The call's deadline, read from the socket on first use.
    pub(crate) fn deadline(&mut self) -> Option<Instant> {
        let (fd, interest) = (self.fd, self.interest);
        *self.deadline.get_or_insert_with(|| deadline_for(fd, interest))
    }

    /// Parks until the socket may be ready (`Ok`: try again), or fails the call: `EAGAIN` at
    /// the deadline, `EINTR` when a signal handler that ran since the call started interrupts
    /// it (without `SA_RESTART`, or any handler when a timeout is set, as the kernel decides),
    /// or the error of [`park`].
    pub(crate) fn park(&mut self) -> Result<(), ParkError> {
        let deadline = self.deadline();
        self.park_until(deadline)
    }

    /// [`Call::park`] with another deadline (`connect`'s retry of a full backlog).
    pub(crate) fn park_until(&mut self, deadline: Option<Instant>) -> Result<(), ParkError> {
        loop {
            match park(self.fd, self.interest, deadline, self.since) {
                Err(libc::EINTR) => {
                    if self.marks.interrupted(self.deadline().is_none()) {
                        return Err(libc::EINTR);
                    }
                    // A handler the kernel would restart this call after: wait on.
                    self.since = Interrupts::now();
                }
                result => return result,
            }
        }
    }

    /// The blocking-call loop of a socket operation: runs `attempt` (the operation with
    /// `MSG_DONTWAIT`, which never blocks) until it does not fail with `EAGAIN`, parking the
    /// tasklet in between, unless the user asked for non-blocking mode (then `EAGAIN` is
    /// theirs). Returns the C result with `errno` as the real blocking call would leave it:
    /// untouched on success.
    pub(crate) fn io(&mut self, mut attempt: impl FnMut() -> c_long) -> c_long {
        let saved = sys::errno();
        loop {
            let r = attempt();
            if r >= 0 {
                sys::set_errno(saved);
                return r;
            }
            let err = sys::errno();
            if err != libc::EAGAIN || user_nonblocking(self.fd) {
                return sys::fail(err);
            }
            if let Err(err) = self.park() {
                return sys::fail(err);
            }
        }
    }
}

/// Sleeps the current tasklet until `until` (`None`: a deadline too far to represent; a kill
/// ends the sleep early, as "completed"). `Err(left)` when a signal handler that ran on the
/// thread since the sleep started interrupts it (any handler: the kernel never restarts a
/// sleep), with the time that was left.
///
/// A sleep cut short by a kill yields once before returning: code that loops on sleeps alone
/// never reaches a switch point where the kill could land, and with the kill pending every
/// later sleep returns at once, so without the yield such a loop would take the thread for
/// good.
pub(crate) fn sleep_until(until: Option<Instant>) -> Result<(), Duration> {
    let marks = Marks::now();
    let mut since = Interrupts::now();
    let until = until.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365 * 30));
    with_kills_deferred(|| loop {
        match tasklets::io::sleep_interruptible(until, since) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {
                if marks.interrupted(false) {
                    return Err(until.saturating_duration_since(Instant::now()));
                }
                since = Interrupts::now();
            }
            Err(_) => {
                // Killed: the kill is delivered at the next switch point; let it come.
                if Instant::now() < until {
                    tasklets::schedule();
                }
                return Ok(());
            }
        }
    })
}

/// Sleeps for `dur` (see [`sleep_until`]).
pub(crate) fn sleep(dur: Duration) -> Result<(), Duration> {
    sleep_until(Instant::now().checked_add(dur))
}

/// How a multi-fd wait ended.
pub(crate) enum Waited {
    /// Something may be ready: re-check with a zero timeout.
    Ready,
    /// The deadline passed.
    TimedOut,
    /// The thread was interrupted (see `tasklets::io::interrupt`).
    Interrupted,
    /// The tasklet was killed, or the wait failed with this `errno`.
    Failed(c_int),
}

/// Parks the current tasklet until one of several fds may be ready, or `deadline`: the fds are
/// put in a temporary epoll instance (level-triggered), which is itself waited on as one
/// readable fd. `fill` adds the fds (`epoll_ctl(ADD)` through [`epoll_add`]).
pub(crate) fn wait_many(
    deadline: Option<Instant>,
    since: Interrupts,
    fill: impl FnOnce(c_int) -> Result<(), c_int>,
) -> Waited {
    // SAFETY: epoll_create1 takes a flag word and touches no memory.
    let epfd = unsafe { sys::raw!(libc::SYS_epoll_create1, libc::EPOLL_CLOEXEC) } as c_int;
    if epfd < 0 {
        return Waited::Failed(sys::errno());
    }
    let waited = match fill(epfd) {
        Err(err) => Waited::Failed(err),
        Ok(()) => {
            // SAFETY: `epfd` stays open until after the registration is dropped, below.
            let registration = unsafe { Registration::new(epfd) };
            let result =
                with_kills_deferred(|| registration.wait_interruptible(Interest::Readable, deadline, since));
            drop(registration);
            match result {
                Ok(()) => Waited::Ready,
                Err(err) if err.kind() == std::io::ErrorKind::TimedOut => Waited::TimedOut,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => Waited::Interrupted,
                Err(err) => Waited::Failed(err.raw_os_error().unwrap_or(libc::ECANCELED)),
            }
        }
    };
    sys::close_own(epfd);
    waited
}

/// Adds `fd` to the temporary epoll instance `epfd` for `events` (level-triggered). Fds epoll
/// refuses (regular files: always ready, so a zero-timeout check already reported them) and
/// fds listed twice are skipped.
pub(crate) fn epoll_add(epfd: c_int, fd: c_int, events: u32) -> Result<(), c_int> {
    let mut event = libc::epoll_event { events, u64: fd as u64 };
    let event = &mut event as *mut libc::epoll_event;
    // SAFETY: `event` points to a valid epoll_event that lives for the duration of the call.
    let r = unsafe { sys::raw!(libc::SYS_epoll_ctl, epfd, libc::EPOLL_CTL_ADD, fd, event) };
    match (r, sys::errno()) {
        (0, _) => Ok(()),
        (_, libc::EPERM | libc::EEXIST) => Ok(()),
        (_, err) => Err(err),
    }
}

/// The remaining time until `deadline` (zero once passed), or `None` for no deadline.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}
