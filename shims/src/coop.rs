//! The cooperative paths: try the call without blocking, park the tasklet on the poller when it
//! would block, honour the socket's timeouts, and never unwind (every park runs with kills
//! deferred).

use std::time::{Duration, Instant};

use libc::{c_int, c_long};
use tasklets::io::{with_kills_deferred, Interest, Registration};

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

/// Parks the current tasklet until socket `fd` may be ready for `interest`, or `deadline`.
///
/// `Err(EAGAIN)` when the deadline passed (what a blocking socket call reports when its
/// `SO_RCVTIMEO`/`SO_SNDTIMEO` expires), `Err(ECANCELED)` when the tasklet was killed meanwhile
/// (the kill is delivered at its next ordinary switch point), `Err(ENOTSOCK)` when the number
/// turned out not to be a socket (any more), or the poller's error.
pub(crate) fn park(fd: c_int, interest: Interest, deadline: Option<Instant>) -> Result<(), ParkError> {
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
    let result = with_kills_deferred(|| slot.registration().wait(interest, deadline));
    result.map_err(|err| match err.kind() {
        std::io::ErrorKind::TimedOut => libc::EAGAIN,
        _ => err.raw_os_error().unwrap_or(libc::ECANCELED),
    })
}

/// Whether the user put the file description of `fd` in non-blocking mode (or it cannot be
/// asked, in which case the real call is left to report the error).
pub(crate) fn user_nonblocking(fd: c_int) -> bool {
    let flags = sys::getfl(fd);
    flags < 0 || flags & libc::O_NONBLOCK as c_long != 0
}

/// The blocking-call loop of a socket operation: runs `attempt` (the operation with
/// `MSG_DONTWAIT`, which never blocks) until it does not fail with `EAGAIN`, parking the
/// tasklet in between, unless the user asked for non-blocking mode (then `EAGAIN` is theirs).
/// Returns the C result with `errno` as the real blocking call would leave it: untouched on
/// success.
pub(crate) fn io_loop(fd: c_int, interest: Interest, mut attempt: impl FnMut() -> c_long) -> c_long {
    let saved = sys::errno();
    let mut deadline = None;
    loop {
        let r = attempt();
        if r >= 0 {
            sys::set_errno(saved);
            return r;
        }
        let err = sys::errno();
        if err != libc::EAGAIN || user_nonblocking(fd) {
            return sys::fail(err);
        }
        let deadline = *deadline.get_or_insert_with(|| deadline_for(fd, interest));
        if let Err(err) = park(fd, interest, deadline) {
            return sys::fail(err);
        }
    }
}

/// Sleeps the current tasklet for `dur` (a kill ends the sleep early, as "completed").
///
/// A sleep cut short was cut short by a kill (only the timer or a kill wakes a sleeper). The
/// tasklet then yields once before returning: code that loops on sleeps alone never reaches a
/// switch point where the kill could land, and with the kill pending every later sleep
/// returns at once, so without the yield such a loop would take the thread for good.
pub(crate) fn sleep(dur: Duration) {
    let until = Instant::now().checked_add(dur);
    with_kills_deferred(|| {
        tasklets::time::sleep(dur);
        if until.is_some_and(|until| Instant::now() < until) {
            tasklets::schedule();
        }
    });
}

/// How a multi-fd wait ended.
pub(crate) enum Waited {
    /// Something may be ready: re-check with a zero timeout.
    Ready,
    /// The deadline passed.
    TimedOut,
    /// The tasklet was killed, or the wait failed with this `errno`.
    Failed(c_int),
}

/// Parks the current tasklet until one of several fds may be ready, or `deadline`: the fds are
/// put in a temporary epoll instance (level-triggered), which is itself waited on as one
/// readable fd. `fill` adds the fds (`epoll_ctl(ADD)` through [`epoll_add`]).
pub(crate) fn wait_many(deadline: Option<Instant>, fill: impl FnOnce(c_int) -> Result<(), c_int>) -> Waited {
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
            let result = with_kills_deferred(|| registration.wait(Interest::Readable, deadline));
            drop(registration);
            match result {
                Ok(()) => Waited::Ready,
                Err(err) if err.kind() == std::io::ErrorKind::TimedOut => Waited::TimedOut,
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
