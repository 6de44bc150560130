//! Who uses each fd, and which pollers it is registered with: one registration of an fd per
//! poller, shared by every layer that parks on it.
//!
//! # Design
//!
//! An fd is used through several layers at once: `net` (a `Source`), raw-fd code
//! (`io::Registration`, any number of them), and `tasklets-shims` (which keeps an
//! `io::Registration` per socket number, made on its first park). epoll accepts one
//! registration of a file per fd number per instance (a second `EPOLL_CTL_ADD` fails with
//! `EEXIST`), so the layers cannot each register: every user of an fd is an [`FdUser`], and the
//! users of one fd share one registration per poller. Two tables, both indexed by fd number:
//!
//! - **The records** (this module, process-wide): per fd number, the number of live users, an
//!   *epoch* that changes whenever the last user leaves, the pollers the fd is registered
//!   with, and the identity (device, inode) of the file registered. One mutex per fd number,
//!   taken only when a user joins or leaves and when the fd is first registered with a
//!   thread's poller, never on an ordinary park.
//! - **Each reactor's entries** (`reactor::Reactor`, thread-local): per fd number, the epoch it
//!   was registered under, the ready flags and the waiters. A park finds its entry by fd
//!   number and compares the epoch with its user's: O(1), no lock, no allocation.
//!
//! The life of a registration:
//!
//! ```text
//! join(fd)          users += 1; the user remembers the record's epoch
//! first park on X   (record lock) add fd to X's poller, key = (fd, epoch); X joins the
//!                   record's pollers; X's entry says "registered under epoch"
//! later parks on X  entry[fd].epoch == user.epoch: park (no lock, no system call)
//! leave()           users -= 1; the last user, under the lock, deletes the fd from every
//!                   poller of the record (while the number still names the file: callers
//!                   leave before they close), bumps the epoch, and tells each reactor to drop
//!                   its entry: directly on this thread, by a message to the others. Anyone
//!                   still parked there wakes, and its wait fails with EBADF.
//! ```
//!
//! Events carry (fd, epoch) as their key, so an event of a deleted registration, or of a
//! closed fd whose number was reused, never reaches the new one.
//!
//! **Stale records.** A user that breaks the contract (closes the fd before leaving), or a
//! close that bypassed the shims' `close` hook (glibc's internal `fclose`, a raw system call),
//! leaves a record behind whose registrations the kernel already dropped with the file. When
//! the next user joins a record that has registrations, one `fstat` compares the file with the
//! one registered; a different file resets the record (new epoch, pollers forgotten, their
//! reactors told), so the newcomer registers afresh instead of trusting a registration that no
//! longer exists. Joining a record without registrations (the normal case for a fresh socket)
//! costs no system call.
//!
//! **Threads.** Each thread's poller holds its own registration (epoll lets one fd sit in
//! several instances; each gets the edges), so tasklets of several threads may park on one fd.
//! The record's list of pollers is what lets the last user, on whatever thread, delete the fd
//! from all of them before it is closed.
//!
//! # Rejected alternatives
//!
//! - *A registration per user* (the first design): the second layer to park on an fd got
//!   `EEXIST` from epoll (a std socket parked through the shims could not then be used through
//!   `net`; `poll` on a `net` socket blocked the thread; two `io::Registration`s of one fd
//!   failed).
//! - *Each user keeping a list of (poller, key) pairs*, searched under a mutex on every park:
//!   a lock and a scan per park, and still one registration per user.
//! - *Counting users per poller* instead of per fd: a user leaving on another thread would have
//!   to update that thread's table, which only its own thread may touch; the fd must be deleted
//!   from every poller synchronously, before the close, so the count has to be process-wide.
//!
//! The table is a list of buckets of doubling size (64, 128, 256, ... record pointers),
//! allocated zeroed on first use and never freed, and a record is allocated the first time its
//! fd number is used: any fd number up to `i32::MAX` maps to its record with a few
//! instructions, and memory follows the fd numbers in use, not the largest one.

use std::alloc::Layout;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::reactor::{
    interrupted, interrupts, key, timed_out, Begin, Direction, Interruptible, Reactor, Shared,
};
use crate::scheduler::{existing_scheduler, scheduler, BlockedOn, State, Task, Wake};
use crate::timer::{deadline_after, now_nanos, Alarm, Nanos};

/// What is known of one fd number's users and registrations.
#[derive(Default)]
struct Record {
    /// Live users (see [`FdUser`]).
    users: u32,
    /// Changes whenever the last user leaves (or the record is found stale).
    epoch: u32,
    /// The pollers the fd is registered with, one registration each.
    pollers: Vec<Arc<Shared>>,
    /// The file registered (device, inode), known while `pollers` is not empty.
    identity: Option<(u64, u64)>,
}

/// Bucket `i` holds the record pointers of fds `64 * (2^i - 1) ..= 64 * (2^(i+1) - 1) - 1`.
const FIRST_BUCKET_BITS: u32 = 6;
const BUCKETS: usize = (31 - FIRST_BUCKET_BITS + 1) as usize;

type Slot = AtomicPtr<Mutex<Record>>;

static TABLE: [AtomicPtr<Slot>; BUCKETS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; BUCKETS];

/// The record of fd number `fd` (non-negative), made on first use and never freed (later fds
/// with the same number reuse it). A bucket is an array of null pointers from
/// `alloc_zeroed`, so its untouched pages cost no memory: a lone socket at fd 600,000 costs a
/// few pages, not a table of 600,000 records.
fn record(fd: RawFd) -> &'static Mutex<Record> {
    let n = fd as usize + (1 << FIRST_BUCKET_BITS);
    let bits = usize::BITS - 1 - n.leading_zeros();
    let bucket = &TABLE[(bits - FIRST_BUCKET_BITS) as usize];
    let len = 1usize << bits;
    let layout = Layout::array::<Slot>(len).expect("a bucket fits in memory");
    let mut slots = bucket.load(Ordering::Acquire);
    if slots.is_null() {
        // SAFETY: `layout` has a non-zero size.
        let fresh = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Slot>();
        if fresh.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        slots = match bucket.compare_exchange(slots, fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(theirs) => {
                // SAFETY: `fresh` was allocated above with `layout` and never shared.
                unsafe { std::alloc::dealloc(fresh.cast(), layout) };
                theirs
            }
        };
    }
    // SAFETY: a published bucket holds `len` slots (all-zero bytes are null `AtomicPtr`s) and
    // is never freed; `n - len < len`.
    let slot = unsafe { &*slots.add(n - len) };
    let mut record = slot.load(Ordering::Acquire);
    if record.is_null() {
        let fresh = Box::into_raw(Box::default());
        record = match slot.compare_exchange(record, fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(theirs) => {
                // SAFETY: `fresh` came from `Box::into_raw` above and was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                theirs
            }
        };
    }
    // SAFETY: a published record is never freed.
    unsafe { &*record }
}

fn lock(fd: RawFd) -> MutexGuard<'static, Record> {
    record(fd).lock().unwrap_or_else(PoisonError::into_inner)
}

/// The identity (device, inode) of the file `fd` refers to.
fn identity(fd: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: `libc::stat` is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `struct stat`.
    crate::sys::syscall!(fstat(fd, &mut st))?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Deletes `fd` from every poller of `record` and tells their reactors; bumps the epoch.
/// Called with the record locked, while the number still names the registered file (or no
/// file at all: then the kernel already dropped the registrations and the deletes fail
/// harmlessly).
fn forget_everywhere(fd: RawFd, record: &mut Record) {
    let epoch = record.epoch;
    record.epoch = record.epoch.wrapping_add(1);
    record.identity = None;
    let local = existing_scheduler().map(|sched| sched.reactor());
    for shared in record.pollers.drain(..) {
        // SAFETY: `fd` is only used for the duration of the call, which tolerates a closed
        // number (the deletion then fails and is logged).
        shared.delete(unsafe { BorrowedFd::borrow_raw(fd) });
        match local {
            Some(reactor) if reactor.owns(&shared) => reactor.forget(fd, epoch),
            _ => shared.forget_remotely(fd, epoch),
        }
    }
}

/// One user of an fd's registrations: a `net` socket, an `io::Registration`, a socket the
/// shims park on. Does not own the fd: its owner calls [`FdUser::leave`] (or drops it) before
/// closing the fd.
pub(crate) struct FdUser {
    fd: RawFd,
    /// The record's epoch when this user joined; a user whose epoch is gone is stale (its fd
    /// was closed under it) and cannot park any more.
    epoch: u32,
    left: AtomicBool,
}

impl FdUser {
    /// Joins the users of `fd` (see the module comment for when this costs an `fstat`).
    pub(crate) fn join(fd: RawFd) -> FdUser {
        if fd < 0 {
            return FdUser { fd, epoch: 0, left: AtomicBool::new(true) };
        }
        let mut record = lock(fd);
        if !record.pollers.is_empty() && identity(fd).ok() != record.identity {
            // A record left behind by a close nobody here heard of: its registrations
            // died with the old file.
            forget_everywhere(fd, &mut record);
            record.users = 0;
        }
        record.users += 1;
        FdUser { fd, epoch: record.epoch, left: AtomicBool::new(false) }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Stops using the fd. The last user deletes it from every poller (see the module
    /// comment); tasklets parked on it then wake and their waits fail with `EBADF`. Later
    /// waits through this user fail with `EBADF`. Idempotent.
    pub(crate) fn leave(&self) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut record = lock(self.fd);
        if record.epoch != self.epoch {
            return; // the record was reset under a stale user: nothing of it is ours
        }
        record.users -= 1;
        if record.users == 0 {
            forget_everywhere(self.fd, &mut record);
        }
    }

    /// Parks until the fd is ready in `dir` (or may be: wake-ups can be spurious), or
    /// `deadline` passes (`WouldBlock`), or, with `interruptible`, until the thread is
    /// interrupted after the given interrupt count (`Interrupted`; see `io::interrupt`).
    /// Registers the fd with this thread's poller on the first wait here.
    pub(crate) fn wait(
        &self,
        dir: Direction,
        deadline: Option<Instant>,
        interruptible: Option<u64>,
    ) -> io::Result<()> {
        let mut deadline = OpDeadline::at(deadline.map(crate::timer::to_nanos));
        self.wait_for(dir, false, &mut deadline, interruptible)
    }

    /// [`FdUser::wait`] for one wait of an operation whose deadline is `deadline` (computed at
    /// its first park, with the clock read that arms the alarm: see [`OpDeadline`]).
    ///
    /// With `drained_only` (a stream read about to try its `recv`) it parks only if the fd's
    /// read side is `Drained` (see `Reactor::begin_wait`), and otherwise returns `Ok` at once,
    /// without registering the fd or making a scheduler: the check and the wait are one lookup
    /// of the fd's entry (issue 14: they were two).
    #[inline]
    pub(crate) fn wait_for(
        &self,
        dir: Direction,
        drained_only: bool,
        deadline: &mut OpDeadline,
        interruptible: Option<u64>,
    ) -> io::Result<()> {
        let sched = if drained_only {
            match existing_scheduler() {
                Some(sched) => sched,
                None => return Ok(()),
            }
        } else {
            scheduler()
        };
        let reactor = sched.reactor();
        if self.left.load(Ordering::Relaxed) {
            return if drained_only { Ok(()) } else { Err(closed()) };
        }
        let known = deadline.known();
        let may_park = || {
            if known.is_some_and(|d| d <= now_nanos()) {
                return Err(timed_out());
            }
            if interruptible.is_some_and(|since| since != interrupts()) {
                return Err(interrupted());
            }
            Ok(())
        };
        loop {
            let begun = reactor.begin_wait(
                self.fd,
                self.epoch,
                dir,
                drained_only,
                || sched.current_rc(),
                may_park,
            )?;
            match begun {
                Begin::Parked => break,
                // An edge came while nobody waited, or the read side is not drained: try.
                Begin::Ready | Begin::NotDrained => return Ok(()),
                Begin::Unregistered => self.register(reactor)?, // the first wait on this thread
            }
        }
        let me = sched.current();
        let waiting = IoWait { reactor, fd: self.fd, epoch: self.epoch, dir, task: me };
        reactor.rearm(self.fd, self.epoch)?;
        me.set_state(State::Blocked(BlockedOn::Io(self.fd, dir)));
        let alarm = deadline.fix().map(|d| Alarm::arm_current(sched, d));
        let interrupts_slot = interruptible.map(|_| Interruptible::begin(reactor, &sched.current_rc()));
        let wake = sched.park();
        drop(interrupts_slot);
        let timed_out_now = alarm.as_ref().is_some_and(Alarm::fired);
        drop(alarm);
        let still_registered = waiting.end();
        if timed_out_now {
            return Err(timed_out());
        }
        if wake == Wake::Never {
            return Err(crate::reactor::killed());
        }
        if !still_registered || self.left.load(Ordering::Relaxed) {
            return Err(closed());
        }
        if interruptible.is_some_and(|since| since != interrupts()) {
            return Err(interrupted());
        }
        Ok(())
    }

    /// A stream read through this user returned less than it asked for (see
    /// `Reactor::read_was_short`).
    #[inline]
    pub(crate) fn read_was_short(&self) {
        if let Some(sched) = existing_scheduler() {
            sched.reactor().read_was_short(self.fd, self.epoch);
        }
    }

    /// Registers the fd with this thread's poller (the first wait here adds it).
    #[cold]
    fn register(&self, reactor: &Reactor) -> io::Result<()> {
        let shared = reactor.shared()?;
        let mut record = lock(self.fd);
        if record.epoch != self.epoch || self.left.load(Ordering::Relaxed) {
            return Err(closed());
        }
        if !record.pollers.iter().any(|p| Arc::ptr_eq(p, &shared)) {
            if record.pollers.is_empty() {
                record.identity = Some(identity(self.fd)?);
            }
            let key = key(self.fd as usize, self.epoch);
            // SAFETY: the fd is open (its users are alive) and is deleted from this poller by
            // the last user's `leave`, before it is closed.
            match unsafe { shared.add(self.fd, key, reactor.mode()) } {
                Ok(()) => {}
                // Already in this poller under a registration the record lost track of (a
                // stale record reset while the same file stayed open): take it over.
                Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
                    // SAFETY: the fd is open (see above).
                    shared.modify(unsafe { BorrowedFd::borrow_raw(self.fd) }, key, reactor.mode())?;
                }
                Err(err) => {
                    if record.pollers.is_empty() {
                        record.identity = None;
                    }
                    return Err(err);
                }
            }
            record.pollers.push(shared);
        }
        reactor.mark_registered(self.fd, self.epoch);
        Ok(())
    }
}

impl Drop for FdUser {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Takes a parked tasklet out of its fd's waiters when its wait ends, also by unwinding (a
/// kill).
struct IoWait<'a> {
    reactor: &'a Reactor,
    fd: RawFd,
    epoch: u32,
    dir: Direction,
    task: &'a Task,
}

impl IoWait<'_> {
    /// Ends the wait; whether the fd is still registered (see [`Reactor::end_wait`]).
    #[inline]
    fn end(self) -> bool {
        let this = std::mem::ManuallyDrop::new(self);
        this.reactor.end_wait(this.fd, this.epoch, this.dir, this.task)
    }
}

impl Drop for IoWait<'_> {
    fn drop(&mut self) {
        self.reactor.end_wait(self.fd, self.epoch, self.dir, self.task);
    }
}

/// The deadline of one operation's waits (a socket call with a timeout, a
/// `Registration::wait` with a deadline).
///
/// A timeout becomes a deadline at the operation's first park, with one clock read, taken
/// after the fd's entry said "park" (a read that finds data, or the `recv` a `Drained` check
/// lets through, reads no clock), which also proves that it has not passed: a timeout is
/// never zero. Later waits of the operation check it against the clock before parking. A
/// deadline given as such (`at`) is checked before every park.
pub(crate) struct OpDeadline {
    /// In nanoseconds; 0: none.
    timeout: u64,
    /// `None` until known; then the deadline (`None` inside: no timeout, or one too far to
    /// represent).
    at: Option<Option<Nanos>>,
}

impl OpDeadline {
    /// The deadline `timeout` nanoseconds (0: none) after the operation's first park.
    #[inline]
    pub(crate) fn after(timeout: u64) -> OpDeadline {
        OpDeadline { timeout, at: None }
    }

    /// A deadline known already (`None`: none).
    #[inline]
    pub(crate) fn at(deadline: Option<Nanos>) -> OpDeadline {
        OpDeadline { timeout: 0, at: Some(deadline) }
    }

    /// The deadline to check against the clock before parking: one known before this park.
    #[inline]
    fn known(&self) -> Option<Nanos> {
        self.at.flatten()
    }

    /// The deadline, computed now (one clock read) if this is the first park.
    #[inline]
    fn fix(&mut self) -> Option<Nanos> {
        let timeout = self.timeout;
        *self.at.get_or_insert_with(|| deadline_after(timeout))
    }
}

/// The error of a wait whose fd stopped being registered: its last user left (the fd is
/// being closed) while the tasklet was parked, or this user had left already.
pub(crate) fn closed() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}
