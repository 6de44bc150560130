//! The OS readiness layer: one epoll instance per reactor on Linux, `polling` elsewhere, behind
//! the same small API (`Poller::add_with_mode` / `modify_with_mode` / `delete` with a key and
//! read/write interest, `wait(events, timeout)`, `notify`), so that `reactor` does not care
//! which one it runs on.
//!
//! # Why not `polling` on Linux
//!
//! `polling` 3.11's epoll backend makes every `wait` five system calls: `timerfd_settime` (its
//! timeout goes through a timerfd), `epoll_ctl` for the timerfd, `epoll_pwait`, a `read` of its
//! notifier eventfd, and `epoll_ctl` to re-arm the notifier (which it registers oneshot). An
//! empty wait costs 674 ns there against 65 ns for a bare `epoll_wait`. A cross-thread wake-up
//! (`tasklets::sync`) is one wait on the sleeping side, so those calls were most of a round
//! trip: `strace -f -c` of `multicore --child roundtrip tasklets-sync0` counted 13.0 system
//! calls per round trip with `polling`, against tokio's 2.6 (mio: one `epoll_wait`, one `write`).
//! With this module (and the reactor's "notify only a sleeper" flag) it counts 3.7 at capacity
//! 0 and 2.5 at capacity 1 (12.3 before), and the round trip's CPU fell from 6.67 to 4.98 µs
//! (capacity 0), 4.47 to 3.10 µs (capacity 1), 37.5 to 6.5 µs for `unblock`, in one run of
//! `multicore --only roundtrip` each on the shared 2-vCPU VM (docs/benchmarks.md, *Cross-thread
//! wake and the Linux poller*).
//!
//! Rejected: `polling` with its unreleased fix (smol-rs/polling#250) — not on crates.io, and
//! its notifier would still be read per wake; `rustix::event::epoll` — the crate already calls
//! libc through one door (`sys::syscall!`), and the few epoll calls did not justify a second
//! way in (rustix stays in the lock file only through `polling`, for the other targets).
//!
//! # Design (Linux)
//!
//! - **One system call per wait**: `epoll_wait` with the timeout in milliseconds, rounded *up*
//!   (a timer must never fire early: the scheduler would poll again for the remainder, which
//!   is correct but costs a wait; rounding down would make that the rule for every sub-ms
//!   timeout), or `epoll_pwait2` (ns timeouts, Linux 5.11) when the timeout has a sub-ms part.
//!   The scheduler's idle wait ends on a 500 µs grid (`src/timer.rs`); rounded up to whole
//!   milliseconds it woke sleepers ~0.5 ms late on average and up to 1 ms late, which made
//!   a p99 sleep lateness under 1 ms impossible (issue 14 goal 3, docs/benchmarks.md
//!   *Timers*). There is no probe: the first `ENOSYS` (a kernel before 5.11, or an emulator)
//!   switches the process to the rounded `epoll_wait` for good.
//! - **Edge-triggered** registrations (or oneshot, `TASKLET_POLL_MODE=oneshot`), with
//!   `EPOLLIN | EPOLLPRI | EPOLLRDHUP` for read interest and `EPOLLOUT` for write interest.
//! - **The notifier** is an eventfd registered once, edge-triggered, under the key
//!   `usize::MAX` (as in `polling`, which the reactor's own reserved keys respect). Each
//!   `write` to an eventfd is a new edge even while its counter is non-zero, so it is never
//!   read (mio's waker does the same): a notify costs one `write` and the wait that sees it
//!   nothing more. Should the counter ever be full (2^64 - 2 writes), `notify` reads it to
//!   zero and writes again. At most one write per wait: a `notified` flag set by the first
//!   notifier and cleared by the waiter after each wait; a notify between that clear and the
//!   next wait writes again, and its edge makes that wait return at once (never lost).
//! - **System calls without libc's wrappers.** `epoll_wait` and `write` are cancellation points,
//!   so glibc wraps each in `__pthread_enable_asynccancel`/`__pthread_disable_asynccancel`
//!   (~30 instructions a call; callgrind counted ~95 per cross-thread round trip). Rust never
//!   cancels threads, so the wait is the bare `epoll_pwait` system call (with no signal mask:
//!   `epoll_wait` itself is missing on aarch64 and riscv64) and the notify the bare `write`,
//!   both through `libc::syscall`; the `write` then also bypasses a `write` interposed by
//!   the shims, which has nothing to do with an eventfd.
//! - `notify` is async-signal-safe (an atomic compare-exchange and a `write`): `io::interrupt`
//!   calls it from signal handlers.
//!
//! # Design (other systems: kqueue through `polling`)
//!
//! Compile-checked only (README, *Platforms*). `polling` does the registrations and the wait;
//! two things of the Linux poller are kept around it rather than taken from it:
//!
//! - **The notifier** is a `sys::SignalWaker` (a self-pipe that the notifier drains before it
//!   writes one byte, so each notify is an edge), registered edge-triggered under its own key
//!   and filtered out of the events. `polling`'s own `notify` submits a kevent through a
//!   freshly allocated `Vec`, which a signal handler must not do, and `io::interrupt` is
//!   documented as async-signal-safe. At most one write per wait, as on Linux.
//! - **After `fork`** the Linux rules hold (see `Poller`'s docs there), for another reason: a
//!   kqueue is not inherited by a child at all, so in a child the poller's descriptor number is
//!   closed, or names a file the child opened since. An inherited poller never touches it:
//!   waits only sleep, deletes are skipped, adds and modifies fail, notifies are dropped, and
//!   dropping it leaks the `polling` poller instead of closing that number.

#[cfg(not(target_os = "linux"))]
pub(crate) use portable::{Event, Events, PollMode, Poller};

#[cfg(target_os = "linux")]
pub(crate) use linux::{Event, Events, PollMode, Poller};

/// Whether `event` says that the fd's read side is closed, in error, or has urgent data (see
/// `reactor`, "Short reads"). Only the Linux poller reports this; elsewhere a short read never
/// lets a reader skip its next `recv` (see [`REPORTS_READ_CLOSED`]).
#[inline]
pub(crate) fn read_closed(event: &Event) -> bool {
    #[cfg(target_os = "linux")]
    return event.read_closed;
    #[cfg(not(target_os = "linux"))]
    {
        let _ = event;
        true
    }
}

/// Whether this platform's poller reports a closed read side ([`read_closed`]), which the
/// skipped `recv` after a short read depends on.
pub(crate) const REPORTS_READ_CLOSED: bool = cfg!(target_os = "linux");

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    use std::time::Duration;

    use crate::sys::syscall;

    /// The notifier's key (reserved, as in `polling`).
    const NOTIFY_KEY: u64 = u64::MAX;

    /// How many events one wait returns at most (as `polling::Events::new`).
    const CAPACITY: usize = 1024;

    /// The kernel's signal set size, `epoll_pwait`'s last argument (unused with no mask).
    const SIGSET_SIZE: libc::c_long = 8;

    /// How an fd's readiness is reported.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum PollMode {
        /// Once per registration, until re-armed with `modify_with_mode`.
        Oneshot,
        /// On every change from not ready to ready.
        Edge,
    }

    /// Interest in (when registering) or readiness of (when reported) one fd.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Event {
        /// The registration's key.
        pub(crate) key: usize,
        /// Readable (or read side closed, or an error).
        pub(crate) readable: bool,
        /// Writable (or hung up, or an error).
        pub(crate) writable: bool,
        /// The read side is closed (`EPOLLRDHUP`, `EPOLLHUP`), the socket has an error
        /// (`EPOLLERR`), or urgent data came (`EPOLLPRI`): a short read no longer proves that
        /// the next read would block (see `reactor`, "Short reads"). Reported only.
        pub(crate) read_closed: bool,
    }

    impl Event {
        pub(crate) fn new(key: usize, readable: bool, writable: bool) -> Event {
            Event { key, readable, writable, read_closed: false }
        }

        pub(crate) fn all(key: usize) -> Event {
            Event::new(key, true, true)
        }

        pub(crate) fn readable(key: usize) -> Event {
            Event::new(key, true, false)
        }

        fn flags(self, mode: PollMode) -> u32 {
            let mut flags = match mode {
                PollMode::Oneshot => libc::EPOLLONESHOT,
                PollMode::Edge => libc::EPOLLET,
            };
            if self.readable {
                flags |= libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP;
            }
            if self.writable {
                flags |= libc::EPOLLOUT;
            }
            flags as u32
        }
    }

    /// The events one wait returned.
    pub(crate) struct Events {
        buf: Vec<libc::epoll_event>,
        len: usize,
    }

    impl Events {
        pub(crate) fn new() -> Events {
            Events { buf: vec![libc::epoll_event { events: 0, u64: 0 }; CAPACITY], len: 0 }
        }

        pub(crate) fn clear(&mut self) {
            self.len = 0;
        }

        /// The fd events (the notifier's are left out).
        pub(crate) fn iter(&self) -> impl Iterator<Item = Event> + '_ {
            const READ: i32 =
                libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR;
            const WRITE: i32 = libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR;
            const CLOSED: i32 = libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI;
            self.buf[..self.len].iter().filter(|e| e.u64 != NOTIFY_KEY).map(|e| {
                let flags = e.events as i32;
                Event {
                    key: e.u64 as usize,
                    readable: flags & READ != 0,
                    writable: flags & WRITE != 0,
                    read_closed: flags & CLOSED != 0,
                }
            })
        }
    }

    /// `PWAIT2` once `epoll_pwait2` answered `ENOSYS`: waits round up to whole milliseconds.
    const NO_PWAIT2: u8 = 1;
    /// Whether `epoll_pwait2` is known to be missing (`NO_PWAIT2`), per process.
    static PWAIT2: AtomicU8 = AtomicU8::new(0);

    /// `epoll_wait(epoll, events, ms)` as the bare `epoll_pwait` system call with no signal
    /// mask, not glibc's wrapper (a cancellation point, which switches asynchronous
    /// cancellation on and off around the call in a multi-threaded process).
    fn epoll_pwait(epoll: RawFd, events: &mut Events, ms: libc::c_int) -> io::Result<libc::c_int> {
        let capacity = events.buf.len() as libc::c_long;
        // SAFETY: the buffer holds `capacity` events and outlives the call; no signal mask
        // (null) makes `epoll_pwait` the plain `epoll_wait`, whatever the mask's size says.
        syscall!(syscall(
            libc::SYS_epoll_pwait,
            epoll as libc::c_long,
            events.buf.as_mut_ptr(),
            capacity,
            ms as libc::c_long,
            std::ptr::null::<libc::sigset_t>(),
            SIGSET_SIZE,
        ))
        .map(|n| n as libc::c_int)
    }

    /// `epoll_pwait2(epoll, events, timeout)` without a signal mask: `epoll_wait` with a
    /// nanosecond timeout (libc has no wrapper for it).
    fn epoll_pwait2(epoll: RawFd, events: &mut Events, timeout: Duration) -> io::Result<libc::c_int> {
        let spec = libc::timespec {
            tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let capacity = events.buf.len() as libc::c_long;
        // SAFETY: the buffer holds `capacity` events and `spec` a valid timespec, both alive
        // for the call; a null signal mask makes it `epoll_wait` with a finer timeout.
        syscall!(syscall(
            libc::SYS_epoll_pwait2,
            epoll as libc::c_long,
            events.buf.as_mut_ptr(),
            capacity,
            &spec as *const libc::timespec,
            std::ptr::null::<libc::sigset_t>(),
            SIGSET_SIZE,
        ))
        .map(|n| n as libc::c_int)
    }

    /// An epoll instance and its notifier.
    ///
    /// # After `fork`
    ///
    /// A child inherits the epoll instance itself, not a copy: the parent's registrations, its
    /// queued events and its notifier are shared. A child that waited on it would take the
    /// parent's edges (its readers would never wake), and one whose teardown deleted the fds
    /// would unregister the parent's sockets. So a poller remembers the fork generation it was
    /// made in; in a child (a later generation) it never touches the instance again: deletes
    /// are skipped (the parent still uses the fds), adds and modifies fail with an error that
    /// says why, notifies are dropped, and a wait only sleeps for its timeout (timers and
    /// channels keep working in the child; I/O waits need a scheduler made after the fork,
    /// e.g. on a new thread). The check is one relaxed load, on paths that make a system call.
    #[derive(Debug)]
    pub(crate) struct Poller {
        epoll: OwnedFd,
        eventfd: OwnedFd,
        notified: AtomicBool,
        generation: u64,
    }

    impl Poller {
        pub(crate) fn new() -> io::Result<Poller> {
            let generation = super::fork::generation();
            let epoll = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
            // SAFETY: a new fd that nothing else owns.
            let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
            let eventfd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
            // SAFETY: a new fd that nothing else owns.
            let eventfd = unsafe { OwnedFd::from_raw_fd(eventfd) };
            let poller = Poller { epoll, eventfd, notified: AtomicBool::new(false), generation };
            let mut event =
                libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: NOTIFY_KEY };
            syscall!(epoll_ctl(
                poller.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                poller.eventfd.as_raw_fd(),
                &mut event
            ))?;
            Ok(poller)
        }

        /// Whether this poller was inherited through `fork` (see the type's docs).
        fn inherited(&self) -> bool {
            super::fork::inherited(self.generation)
        }

        fn ctl(&self, op: i32, fd: RawFd, event: Option<(Event, PollMode)>) -> io::Result<()> {
            if self.inherited() {
                if op == libc::EPOLL_CTL_DEL {
                    return Ok(()); // the parent's registration: not the child's to remove
                }
                return Err(super::fork::refused());
            }
            let mut raw = match event {
                Some((ev, mode)) => libc::epoll_event { events: ev.flags(mode), u64: ev.key as u64 },
                None => libc::epoll_event { events: 0, u64: 0 },
            };
            // SAFETY: `raw` is a valid event for the call's duration; a bad fd is an error.
            syscall!(epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut raw))?;
            Ok(())
        }

        /// Adds `fd` under `event`'s key and interest.
        ///
        /// # Safety
        ///
        /// `fd` must be open and be deleted from this poller before it is closed.
        pub(crate) unsafe fn add_with_mode(&self, fd: RawFd, event: Event, mode: PollMode) -> io::Result<()> {
            self.ctl(libc::EPOLL_CTL_ADD, fd, Some((event, mode)))
        }

        /// Changes the key and interest of an fd in this poller (and re-arms a oneshot one).
        pub(crate) fn modify_with_mode(
            &self,
            fd: BorrowedFd<'_>,
            event: Event,
            mode: PollMode,
        ) -> io::Result<()> {
            self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), Some((event, mode)))
        }

        /// Deletes an fd from this poller.
        pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
            self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), None)
        }

        /// Waits for events (at most `timeout`; `None`: until one comes or `notify` is called)
        /// in one system call; returns how many fd events and notifications came. A timeout
        /// with a sub-millisecond part is kept to the nanosecond by `epoll_pwait2` where the
        /// kernel has it (Linux 5.11), else rounded up to whole milliseconds.
        pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
            let ms = super::fork::timeout_ms(timeout);
            if self.inherited() {
                events.len = 0;
                super::fork::sleep(ms)?;
                return Ok(0);
            }
            let epoll = self.epoll.as_raw_fd();
            let res = match timeout.filter(|d| d.subsec_nanos() % 1_000_000 != 0) {
                Some(exact) if PWAIT2.load(Ordering::Relaxed) != NO_PWAIT2 => {
                    match epoll_pwait2(epoll, events, exact) {
                        Err(err) if err.raw_os_error() == Some(libc::ENOSYS) => {
                            // An old kernel, or an emulator without it: whole ms from now on.
                            PWAIT2.store(NO_PWAIT2, Ordering::Relaxed);
                            epoll_pwait(epoll, events, ms)
                        }
                        res => res,
                    }
                }
                _ => epoll_pwait(epoll, events, ms),
            };
            // Any notify from now on must write again: the waiter is past the edge it made.
            self.notified.store(false, Ordering::SeqCst);
            events.len = res? as usize;
            Ok(events.len)
        }

        /// Makes the current or next `wait` return at once. Async-signal-safe.
        pub(crate) fn notify(&self) -> io::Result<()> {
            if self.inherited() {
                return Ok(()); // the parent's notifier: a child never wakes the parent
            }
            if self.notified.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                return Ok(()); // a write since the last wait returned is still pending
            }
            let one = 1u64.to_ne_bytes();
            let fd = self.eventfd.as_raw_fd();
            // SAFETY: writes 8 bytes from a live buffer to our eventfd (the bare system call:
            // see "System calls without libc's wrappers").
            let wrote = unsafe {
                libc::syscall(libc::SYS_write, fd as libc::c_long, one.as_ptr(), one.len() as libc::c_long)
            };
            if wrote == -1 {
                // Full counter (EAGAIN): empty it and write again. Errors are not built into an
                // `io::Error` before this point (signal handlers call this).
                let mut buf = [0u8; 8];
                // SAFETY: reads 8 bytes into a live buffer from our eventfd.
                let _ = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                syscall!(write(fd, one.as_ptr().cast(), one.len()))?;
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Instant;

        #[test]
        fn a_wait_never_returns_before_its_timeout() {
            let poller = Poller::new().unwrap();
            let mut events = Events::new();
            let start = Instant::now();
            poller.wait(&mut events, Some(Duration::from_micros(1500))).unwrap();
            assert!(start.elapsed() >= Duration::from_micros(1500));
            assert_eq!(events.iter().count(), 0);
        }

        /// Sub-millisecond timeouts go to `epoll_pwait2` (or, without it, round up): either
        /// way a wait never ends before its timeout, for timeouts below, at and above a
        /// millisecond, with and without a sub-millisecond part.
        #[test]
        fn a_sub_millisecond_wait_never_returns_before_its_timeout() {
            let poller = Poller::new().unwrap();
            let mut events = Events::new();
            for micros in [1, 250, 999, 1000, 1250, 2001] {
                let timeout = Duration::from_micros(micros);
                let start = Instant::now();
                assert_eq!(poller.wait(&mut events, Some(timeout)).unwrap(), 0);
                let slept = start.elapsed();
                assert!(slept >= timeout, "a {timeout:?} wait returned after {slept:?}");
            }
            poller.notify().unwrap();
            assert_eq!(poller.wait(&mut events, Some(Duration::from_micros(300))).unwrap(), 1);
        }

        #[test]
        fn a_notify_before_or_during_a_wait_ends_it_and_the_next_wait_sleeps_again() {
            let poller = std::sync::Arc::new(Poller::new().unwrap());
            let mut events = Events::new();
            poller.notify().unwrap();
            poller.notify().unwrap();
            assert_eq!(poller.wait(&mut events, None).unwrap(), 1);
            assert_eq!(events.iter().count(), 0, "the notifier's event is not an fd event");
            // The eventfd is never read: the next wait must still sleep (edge-triggered).
            assert_eq!(poller.wait(&mut events, Some(Duration::from_millis(20))).unwrap(), 0);
            let other = poller.clone();
            let waker = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                other.notify().unwrap();
            });
            assert_eq!(poller.wait(&mut events, Some(Duration::from_secs(20))).unwrap(), 1);
            waker.join().unwrap();
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod portable {
    use std::io;
    use std::mem::ManuallyDrop;
    use std::os::fd::{BorrowedFd, RawFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    pub(crate) use polling::{Event, PollMode};

    use crate::sys::SignalWaker;

    /// The notifier's key: `polling` reserves `usize::MAX`, the reactor `usize::MAX - 1`; no fd
    /// registration has this one (it would need fd number 2^32 - 3).
    const NOTIFY_KEY: usize = usize::MAX - 2;

    /// The events one wait returned.
    pub(crate) struct Events(polling::Events);

    impl Events {
        pub(crate) fn new() -> Events {
            Events(polling::Events::new())
        }

        pub(crate) fn clear(&mut self) {
            self.0.clear();
        }

        /// The fd events (the notifier's are left out).
        pub(crate) fn iter(&self) -> impl Iterator<Item = Event> + '_ {
            self.0.iter().filter(|event| event.key != NOTIFY_KEY)
        }
    }

    /// A `polling` poller (kqueue) and its notifier; see the module comment.
    #[derive(Debug)]
    pub(crate) struct Poller {
        poller: ManuallyDrop<polling::Poller>,
        notifier: SignalWaker,
        notified: AtomicBool,
        generation: u64,
    }

    impl Poller {
        pub(crate) fn new() -> io::Result<Poller> {
            let generation = super::fork::generation();
            let poller = polling::Poller::new()?;
            let notifier = SignalWaker::new()?;
            // SAFETY: the notifier is owned by this poller, and deleted before it is closed
            // (`drop` below).
            unsafe { poller.add_with_mode(notifier.fd(), Event::readable(NOTIFY_KEY), PollMode::Edge)? };
            Ok(Poller {
                poller: ManuallyDrop::new(poller),
                notifier,
                notified: AtomicBool::new(false),
                generation,
            })
        }

        /// Whether this poller was inherited through `fork`.
        fn inherited(&self) -> bool {
            super::fork::inherited(self.generation)
        }

        /// Adds `fd` under `event`'s key and interest.
        ///
        /// # Safety
        ///
        /// `fd` must be open and be deleted from this poller before it is closed.
        pub(crate) unsafe fn add_with_mode(&self, fd: RawFd, event: Event, mode: PollMode) -> io::Result<()> {
            if self.inherited() {
                return Err(super::fork::refused());
            }
            // SAFETY: this function's contract.
            unsafe { self.poller.add_with_mode(fd, event, mode) }
        }

        /// Changes the key and interest of an fd in this poller (and re-arms a oneshot one).
        pub(crate) fn modify_with_mode(
            &self,
            fd: BorrowedFd<'_>,
            event: Event,
            mode: PollMode,
        ) -> io::Result<()> {
            if self.inherited() {
                return Err(super::fork::refused());
            }
            self.poller.modify_with_mode(fd, event, mode)
        }

        /// Deletes an fd from this poller.
        pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
            if self.inherited() {
                return Ok(()); // the parent's registration: not the child's to remove
            }
            self.poller.delete(fd)
        }

        /// Waits for events (at most `timeout`; `None`: until one comes or `notify` is
        /// called); returns how many fd events and notifications came.
        pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
            if self.inherited() {
                events.clear();
                super::fork::sleep(super::fork::timeout_ms(timeout))?;
                return Ok(0);
            }
            let res = self.poller.wait(&mut events.0, timeout);
            // Any notify from now on must write again: the waiter is past the edge it made.
            self.notified.store(false, Ordering::SeqCst);
            res
        }

        /// Makes the current or next `wait` return at once. Async-signal-safe.
        pub(crate) fn notify(&self) -> io::Result<()> {
            if self.inherited() {
                return Ok(()); // the parent's notifier: a child never wakes the parent
            }
            if self.notified.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                self.notifier.wake();
            }
            Ok(())
        }
    }

    impl Drop for Poller {
        fn drop(&mut self) {
            if self.inherited() {
                return; // leak it: its kqueue number is not ours in this process
            }
            // SAFETY: the notifier is still open (dropped after this); `fd` borrows it only
            // for the call.
            let notifier = unsafe { BorrowedFd::borrow_raw(self.notifier.fd()) };
            let _ = self.poller.delete(notifier);
            // SAFETY: not used again; dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.poller) };
        }
    }
}

/// What both pollers share about `fork` (the rules are in the Linux `Poller`'s docs): a
/// generation count that a `pthread_atfork` child handler bumps in each child.
mod fork {
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Once;
    use std::time::Duration;

    /// How many times this process's ancestry forked since the first poller was made.
    static FORKS: AtomicU64 = AtomicU64::new(0);

    extern "C" fn count_fork_in_child() {
        FORKS.fetch_add(1, Ordering::Relaxed);
    }

    /// The current fork generation, for a poller being made (installs the handler once).
    pub(super) fn generation() -> u64 {
        static HANDLER: Once = Once::new();
        HANDLER.call_once(|| {
            // SAFETY: registers a handler that only bumps an atomic (async-signal-safe, as a
            // child handler after a multithreaded fork must be).
            unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) };
        });
        FORKS.load(Ordering::Relaxed)
    }

    /// Whether a poller made in `generation` was inherited through `fork` (one relaxed load).
    #[inline]
    pub(super) fn inherited(generation: u64) -> bool {
        FORKS.load(Ordering::Relaxed) != generation
    }

    /// The error of an add or modify on an inherited poller.
    pub(super) fn refused() -> io::Error {
        io::Error::other(
            "this thread's poller was inherited through fork() and belongs to the parent \
             process; wait for I/O from a scheduler made after the fork (a new thread)",
        )
    }

    /// A wait's timeout in whole milliseconds, rounded up (a timer must never fire early);
    /// -1 for none.
    #[inline]
    pub(super) fn timeout_ms(timeout: Option<Duration>) -> i32 {
        match timeout {
            None => -1,
            Some(Duration::ZERO) => 0, // the common short cut, without 128-bit arithmetic
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        }
    }

    /// An inherited poller's wait: it only sleeps for `ms` (or until a signal).
    pub(super) fn sleep(ms: i32) -> io::Result<()> {
        // SAFETY: no fds: poll only sleeps.
        crate::sys::syscall!(poll(std::ptr::null_mut(), 0, ms)).map(drop)
    }
}
