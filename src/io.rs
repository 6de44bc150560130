//! Parking on raw file descriptors: the I/O bridge for fds that `tasklets::net` does not own.
//!
//! [`tasklets::net`](crate::net) covers sockets end to end. This module is the layer beneath it,
//! for everything else that speaks readiness: a pipe, an `inotify` or `signalfd` descriptor, a
//! socket made by another library, or the `tasklets-shims` crate, which hooks libc's blocking
//! calls. The discipline is the one `net` follows (after Go's netpoller):
//!
//! - **Try first.** Make the fd non-blocking (`O_NONBLOCK`) yourself, attempt the operation,
//!   and park only when it fails with `WouldBlock`; [`Registration::io`] is that loop.
//! - **Register once, shared.** The fd is added to the poller of each thread that waits on it,
//!   the first time it waits there, in edge-triggered mode. Every user of the fd shares that
//!   registration: any number of [`Registration`]s, a [`tasklets::net`](crate::net) socket
//!   owning the fd, the shims' hooked calls. When the last of them is dropped, the fd is
//!   deleted from every poller. A `Registration` does not own the fd: drop it *before*
//!   closing the fd, or the kernel may hand the number to a new file while a poller still
//!   watches the old one.
//! - **Kills.** A tasklet killed while parked in [`Registration::wait`] unwinds from there,
//!   like from any blocking call of the runtime. Code that must not unwind (a function called
//!   through a C ABI frame) runs its waits inside [`with_kills_deferred`].
//! - **Interrupts.** [`interrupt`], called from a signal handler, ends the thread's
//!   *interruptible* waits ([`Registration::wait_interruptible`], [`sleep_interruptible`])
//!   with [`io::ErrorKind::Interrupted`]: how code that stands in for blocking system calls
//!   (the shims) reports `EINTR`. Ordinary waits are never interrupted.
//!
//! # Examples
//!
//! A reader tasklet parks on one end of a socket pair until the writer tasklet has written:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::fd::AsRawFd;
//! use std::os::unix::net::UnixStream;
//! use tasklets::io::{Interest, Registration};
//!
//! let (mut a, mut b) = UnixStream::pair().unwrap();
//! a.set_nonblocking(true).unwrap();
//! let reader = tasklets::spawn(move || {
//!     // SAFETY: `a` outlives `registration` (locals drop before the captured `a`).
//!     let registration = unsafe { Registration::new(a.as_raw_fd()) };
//!     let mut buf = [0; 16];
//!     let n = registration.io(Interest::Readable, None, || a.read(&mut buf)).unwrap();
//!     buf[..n].to_vec()
//! });
//! tasklets::spawn(move || b.write_all(b"hello").unwrap());
//! assert_eq!(reader.join().unwrap(), b"hello");
//! ```

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::reactor::Direction;
use crate::registrations::FdUser;
use crate::scheduler::existing_scheduler;

/// The readiness a tasklet waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interest {
    /// The fd has data to read, a connection to accept, or reached end of file or an error.
    Readable,
    /// The fd has room to write, finished connecting, or hit an error.
    Writable,
}

impl From<Interest> for Direction {
    fn from(interest: Interest) -> Direction {
        match interest {
            Interest::Readable => Direction::Read,
            Interest::Writable => Direction::Write,
        }
    }
}

/// A user of a raw fd's registrations with the pollers of the threads whose tasklets wait on
/// it.
///
/// The fd is added to a thread's poller the first time a tasklet of that thread waits on it,
/// and deleted from every poller when its last user goes. All users of one fd share these
/// registrations (one per poller): several `Registration`s of the fd, a `tasklets::net`
/// socket that owns it, the hooked calls of `tasklets-shims`. It is `Send` and `Sync`:
/// tasklets of several threads may wait on one fd (each thread's poller gets the edges).
pub struct Registration {
    user: FdUser,
}

impl Registration {
    /// Makes a registration for `fd`, which should be non-blocking (`O_NONBLOCK`): the
    /// runtime only parks when an attempt fails with `WouldBlock`, so an attempt on a blocking
    /// fd blocks the whole thread.
    ///
    /// Costs no system call, except when the fd is already registered by another user: then
    /// one `fstat` checks that it is still the same file (a number closed and reused without
    /// its users leaving first must not inherit their registrations).
    ///
    /// # Safety
    ///
    /// `fd` must stay open until the registration is dropped (or [`deregister`]ed): drop it
    /// before closing the fd. (Closing first lets the kernel reuse the number for another file
    /// while a poller still watches the old one, and the drop would then act on the wrong
    /// file.)
    ///
    /// [`deregister`]: Registration::deregister
    pub unsafe fn new(fd: RawFd) -> Registration {
        Registration { user: FdUser::join(fd) }
    }

    /// The registered fd.
    pub fn fd(&self) -> RawFd {
        self.user.fd()
    }

    /// Stops using the fd now, as dropping the registration does, but through a shared
    /// reference: for code that is about to close an fd that tasklets (of any thread) may be
    /// parked on.
    ///
    /// Later waits through this registration fail with `EBADF`. If it was the fd's last user,
    /// the fd is deleted from every poller, and every tasklet parked on it (through any
    /// registration) wakes and its wait fails with `EBADF`, rather than staying parked on a
    /// file that is going away. Calling it again does nothing; dropping it afterwards does
    /// nothing more.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    /// use std::rc::Rc;
    /// use std::os::unix::net::UnixStream;
    /// use tasklets::io::{Interest, Registration};
    ///
    /// let (a, _b) = UnixStream::pair().unwrap();
    /// a.set_nonblocking(true).unwrap();
    /// // SAFETY: the registration is deregistered before `a` is closed.
    /// let registration = Rc::new(unsafe { Registration::new(a.as_raw_fd()) });
    /// let waiter = {
    ///     let registration = registration.clone();
    ///     tasklets::spawn(move || registration.wait(Interest::Readable, None))
    /// };
    /// tasklets::schedule(); // the waiter parks
    /// registration.deregister();
    /// drop(a);
    /// let err = waiter.join().unwrap().unwrap_err();
    /// assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    /// ```
    pub fn deregister(&self) {
        self.user.leave();
    }

    /// Parks the current tasklet until the fd is ready for `interest`, or until `deadline`.
    ///
    /// Readiness is edge-triggered and wake-ups may be spurious: after this returns, retry the
    /// operation, and wait again if it still fails with `WouldBlock`. An edge that arrived
    /// while nobody waited is remembered, so a wait right after a failed attempt never misses
    /// it. Several tasklets may wait at once; an edge wakes all of them, in arrival order.
    ///
    /// In the main tasklet the other tasklets run meanwhile; on a thread without tasklets the
    /// thread blocks in its poller.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] when `deadline` passes first; any error of the poller
    /// (e.g. `EPERM` for a regular file, which epoll refuses: regular files are always ready);
    /// `EBADF` when the fd was deregistered (see [`deregister`](Registration::deregister));
    /// an error of kind [`io::ErrorKind::Other`] when the tasklet is killed while kills are
    /// deferred (see [`with_kills_deferred`]). Otherwise a kill unwinds the tasklet from here.
    pub fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
        self.user.wait(interest.into(), deadline, None).map_err(timed_out_kind)
    }

    /// [`wait`](Registration::wait), also ended by an interrupt of the thread (see
    /// [`interrupt`]) that came after the snapshot `since`: then it fails with
    /// [`io::ErrorKind::Interrupted`], at once if the interrupt came before the call.
    ///
    /// For code that reports `EINTR` the way a blocking system call does: take the snapshot
    /// when the blocking operation starts, and pass it to each wait the operation makes.
    ///
    /// # Errors
    ///
    /// Those of [`wait`](Registration::wait), and [`io::ErrorKind::Interrupted`].
    pub fn wait_interruptible(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        since: Interrupts,
    ) -> io::Result<()> {
        self.user.wait(interest.into(), deadline, Some(since.0)).map_err(timed_out_kind)
    }

    /// Runs `op` until it does not fail with `WouldBlock`, parking for `interest` between
    /// attempts (and retrying at once after `Interrupted`).
    ///
    /// # Errors
    ///
    /// The first error of `op` other than `WouldBlock` and `Interrupted`, or an error of
    /// [`wait`](Registration::wait).
    pub fn io<R>(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        mut op: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            match op() {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
            self.wait(interest, deadline)?;
        }
    }
}

/// The reactor reports an expired deadline as `WouldBlock` (what std reports for socket
/// timeouts); a registration's wait says `TimedOut`.
fn timed_out_kind(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::WouldBlock {
        io::Error::from(io::ErrorKind::TimedOut)
    } else {
        err
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration").field("fd", &self.fd()).finish_non_exhaustive()
    }
}

/// Interrupts the calling thread's interruptible waits, as a signal interrupts a blocking
/// system call: every tasklet of the thread parked in [`Registration::wait_interruptible`] or
/// [`sleep_interruptible`] wakes and its wait fails with [`io::ErrorKind::Interrupted`]; one
/// that is not parked at the moment sees it at its next interruptible wait whose snapshot is
/// older.
///
/// Async-signal-safe (an atomic add and at most one `write` to the thread's poller's
/// eventfd), and meant to be called from a signal handler: that is how `tasklets-shims`
/// reports `EINTR` from the blocking calls a handler interrupts. The thread does not have to
/// be idle: a thread blocked in its poller is woken, and a busy one wakes the waiters at its
/// next poll (once per pass over its run queue).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use tasklets::io::{interrupt, sleep_interruptible, Interrupts};
///
/// let sleeper = tasklets::spawn(|| {
///     sleep_interruptible(Instant::now() + Duration::from_secs(3600), Interrupts::now())
/// });
/// tasklets::schedule(); // the sleeper parks
/// interrupt(); // what a signal handler on this thread would do
/// let err = sleeper.join().unwrap().unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
/// ```
pub fn interrupt() {
    crate::reactor::interrupt();
}

/// A snapshot of the calling thread's interrupt count (see [`interrupt`]): the point after
/// which an interrupt ends an interruptible wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupts(u64);

impl Interrupts {
    /// The calling thread's count now.
    pub fn now() -> Interrupts {
        Interrupts(crate::reactor::interrupts())
    }

    /// Whether the calling thread was interrupted since this snapshot was taken.
    pub fn interrupted_since(self) -> bool {
        crate::reactor::interrupts() != self.0
    }
}

/// Sleeps the current tasklet until `until`, unless the thread is interrupted (see
/// [`interrupt`]) after the snapshot `since`: an interruptible [`crate::time::sleep_until`].
///
/// # Errors
///
/// [`io::ErrorKind::Interrupted`] when interrupted (at once if the interrupt came before the
/// call); an error of kind [`io::ErrorKind::Other`] when the tasklet is killed while kills are
/// deferred (see [`with_kills_deferred`]). Otherwise a kill unwinds the tasklet from here. On
/// a thread without a scheduler this sleeps the thread, and only an interrupt that came
/// before the call is reported.
pub fn sleep_interruptible(until: Instant, since: Interrupts) -> io::Result<()> {
    crate::reactor::sleep_interruptible(until, since.0)
}

/// Whether a wait on the calling thread parks the current tasklet rather than the thread:
/// true once the thread has a scheduler (it spawned a tasklet, made a channel wait, ...).
///
/// Cheap (one thread-local read), allocation-free, and callable at any time, even before
/// `main` and from thread-local destructors; code that hooks blocking calls asks it first and
/// forwards straight to the OS when it is false.
///
/// # Examples
///
/// ```
/// std::thread::spawn(|| {
///     assert!(!tasklets::io::is_cooperative());
///     tasklets::spawn(|| {}).join().unwrap();
///     assert!(tasklets::io::is_cooperative());
/// })
/// .join()
/// .unwrap();
/// ```
pub fn is_cooperative() -> bool {
    existing_scheduler().is_some()
}

/// Runs `f` with kills of the current tasklet deferred: inside, a kill never unwinds.
///
/// For code that must not unwind, above all functions reached through a C ABI frame (hooks
/// of libc's blocking calls: a Rust unwind into a frame that called them as `extern "C"`
/// aborts the process). If the tasklet is killed while parked inside `f`, the wait fails
/// instead ([`Registration::wait`] with an error of kind [`io::ErrorKind::Other`],
/// [`crate::time::sleep`] returns early) and the kill stays pending: later waits inside `f`
/// fail at once without parking, and the kill is delivered at the first switch point after
/// `f` returns. A tasklet that returns first ends killed all the same ([`crate::JoinError::Killed`]).
/// Scopes nest. On a thread without a scheduler, or in the main tasklet (which cannot be
/// killed), this just calls `f`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let sleeper = tasklets::spawn(|| {
///     tasklets::io::with_kills_deferred(|| tasklets::time::sleep(Duration::from_secs(3600)));
///     // The sleep returned early; the kill is delivered at the next switch point.
///     tasklets::schedule();
///     unreachable!();
/// });
/// tasklets::schedule(); // the sleeper starts and parks
/// sleeper.kill();
/// assert!(matches!(sleeper.join(), Err(tasklets::JoinError::Killed)));
/// ```
pub fn with_kills_deferred<R>(f: impl FnOnce() -> R) -> R {
    match existing_scheduler() {
        Some(sched) => sched.current().deferring_kills(f),
        None => f(),
    }
}

/// [`unblock`](crate::unblock) for code that runs with kills deferred
/// ([`with_kills_deferred`]): returns `None` at once when a kill ends the wait (the kill stays
/// pending, as for every wait in such a scope), and `f` finishes on its pool thread in the
/// background, where its result is dropped. `f` must own everything it touches. A panic in
/// `f` is resumed in the caller.
///
/// # Examples
///
/// ```
/// let t = tasklets::spawn(|| {
///     tasklets::io::with_kills_deferred(|| tasklets::io::unblock_unless_killed(|| 6 * 7))
/// });
/// assert_eq!(t.join().unwrap(), Some(42));
/// ```
pub fn unblock_unless_killed<F, R>(f: F) -> Option<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    crate::blocking::unblock_unless_killed(f)
}
