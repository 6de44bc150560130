//! The I/O bridge: each scheduler's readiness poller, the per-fd waiters, and cross-thread
//! wake-ups.
//!
//! # Design (after Go's netpoller)
//!
//! - **Try first.** A socket operation is attempted directly; only when it fails with
//!   `WouldBlock` does the tasklet park. A read that finds data costs one syscall and nothing
//!   else.
//! - **Register once, edge-triggered.** The first time an fd would block on a thread, it is
//!   added to that thread's poller with read and write interest in edge mode (`EPOLLET`). It
//!   stays registered until its last user is done with it, which deletes it from every poller
//!   *before* the fd is closed. Every layer that uses the fd (`net`'s `Source`,
//!   `io::Registration`, the shims) shares that one registration per poller: the
//!   process-wide half of the bookkeeping, who uses each fd and where it is registered, is
//!   the `registrations` module's. Oneshot mode would need an `epoll_ctl(MOD)` before every park
//!   to re-arm; edge mode needs none (`TASKLET_POLL_MODE=oneshot` selects oneshot, to measure
//!   the difference; see `docs/io.md`).
//! - **Per-fd waiters, indexed by fd number.** The reactor's entry for an fd (a vector indexed
//!   by fd number: a park finds it in O(1), with no lock) holds the tasklets parked for
//!   reading and for writing (FIFO: one slot, a queue only when several wait), plus a *ready*
//!   flag per direction for an edge that arrived while nobody waited, so that a later waiter
//!   retries once instead of missing it (Go's `pdReady`). An event wakes every waiter of its
//!   direction; they retry in order, and those that find nothing park again. So two tasklets
//!   may read one socket at once: each byte goes to exactly one of them, in the order the
//!   kernel hands them out.
//! - **Short reads** (issue 14). A TCP read that returns less than it asked for (and more than
//!   nothing) emptied the receive queue, so the next read would fail with `EAGAIN`: the
//!   reactor marks the fd's read side `Drained` and the next read parks *before* trying
//!   (`Source::io_raw`), saving a `recv` per message of a request/response protocol (mio and
//!   tokio do the same: a short read clears read readiness). The check is the wait's own
//!   lookup of the entry (`begin_wait` with `drained_only`: park if `Drained`, else try the
//!   `recv`), and a read timeout's clock read happens only once the entry said "park"
//!   (`registrations::OpDeadline`). Every read event the poller
//!   delivers clears the mark (before the waiters run). Why no wake-up is lost, edge-triggered:
//!   every byte that was not returned by the short `recv` was queued after that `recv` looked at
//!   the queue, and queueing it makes a new edge in this thread's epoll instance, which only
//!   this thread waits on; so that edge is harvested by a poll *after* the `recv`, on this
//!   thread, and that poll either wakes the parked reader or, if it has not parked yet, clears
//!   the mark (the reader then tries the `recv`). Edges harvested *before* the `recv` are the
//!   only ones the mark throws away (with the `ready` flag of an edge that came while nobody
//!   waited), and their bytes were read by it. Data arriving during the `recv` (TCP's backlog,
//!   processed as the call returns) makes its edge during the call: also harvested after it.
//!   Oneshot mode re-arms before parking, and re-arming reports a socket that is ready.
//!
//!   The catch is the end of stream: a FIN that came with the last data makes one edge for
//!   both, and the read that takes the data is short; no edge is left for the FIN, so a reader
//!   that parked then would sleep forever. Hence the read side's `Closed` state, sticky until
//!   the entry is reset: set by any event with `EPOLLRDHUP`, `EPOLLHUP` or `EPOLLERR`, after
//!   which reads always try first. If the FIN's edge is harvested before the short read, the
//!   state is `Closed` and the next read returns 0; if after, that harvest wakes the reader
//!   parked on `Drained`. `EPOLLPRI` counts as closed too: a read stops at TCP's urgent mark
//!   with data queued behind it, so a short read there does not mean empty. Only TCP streams
//!   skip (a Unix stream read can stop at a change of credentials or at passed fds with data
//!   behind; a datagram is always "short"), never in non-blocking mode, never for an empty
//!   buffer, and only on Linux, whose poller (`poller`) reports the read side closed; `polling`
//!   cannot (it does not register `EPOLLRDHUP`), so elsewhere reads always try first.
//!   Pinned by `tests/short_reads.rs` (the FIN in the same segment as the last data, a racing
//!   `shutdown(Write)`, resets, urgent data, data racing the park); each fails (a reader parked
//!   for good) without the `Closed` state.
//! - **Stale events.** A registration's key is the fd number and the *epoch* of the fd's
//!   record in `registrations`, which changes whenever the fd's last user leaves, so an event still
//!   queued for a closed fd (whose number the kernel may already have reused) is recognised
//!   and dropped.
//! - **When the poller runs.** Never on a switch: a wait is a system call (one `epoll_wait` on
//!   Linux, see `poller`; `polling` issued five per wait). The scheduler polls without blocking once per
//!   pass over the run queue (and at most every 50 µs) while tasklets are runnable, and blocks
//!   in the poller until the next timer when none is.
//! - **Cross-thread wake-ups.** Other threads (the `unblock` pool, `sync` channels) cannot
//!   touch a scheduler; they push a token onto the reactor's *remote queue* and call
//!   `Poller::notify()` if the owner sleeps in its poller. The scheduler drains the queue
//!   whenever it polls. A token's slot carries a generation, so a wake that arrives after its
//!   wait ended (a timeout or a kill ended it first: `crate::sync`) is dropped. A wake made on
//!   the waiter's own thread skips the queue and the poller.
//! - **The remote queue** is a `Mutex<Vec<Remote>>` and a `queued` flag beside it (set by each
//!   push and cleared by the owner's drain, both under the lock; read without it). The owner
//!   looks at the flag alone, and drains by swapping the vector with a spare one of its own, so
//!   that in the steady state nothing is allocated and a message costs one uncontended lock on
//!   each side. (It was `crossbeam-queue`'s `SegQueue`: callgrind counted ~330 instructions per
//!   cross-thread round trip in its `push` and two `pop`s — the last one finding it empty —
//!   and a block allocated and freed every 31 messages; the lock and the flag cost ~80.)
//! - **Polls without a system call.** Only tasklets waiting on an fd need the poller's events
//!   (`parked` counts them with the tasklets in remote slots, `remote_parked` the latter). With
//!   none, a poll that would not sleep anyway — a zero timeout, or a remote message already
//!   queued — skips `epoll_wait` and only drains the queue. This is the common case of a
//!   ping-pong across threads: the thread that wakes its partner goes idle with the answer's
//!   wake often already queued (on one CPU the partner ran in between), and its
//!   `epoll_wait(0)` was one system call in two per round trip at `sync::channel(0)`. Edges
//!   not harvested stay queued in the epoll instance (and the notifier's edge with them, which
//!   then makes the next real wait return at once: one spurious pass, never a lost wake) until
//!   the next poll that has fd waiters, or that sleeps, harvests them; a tasklet that starts
//!   waiting on an fd meanwhile finds its `ready` flag unset, parks, and is woken by that
//!   harvest, exactly as when the edge comes after it parked. `polls` counts the system calls.
//!   Such a poll took no time, so it reads no clock either unless a timer is armed: the pass's
//!   clock (`polled_at`), which only serves to fire timers, keeps the last poll's reading.
//! - **Notify only a sleeper.** The eventfd write is skipped when the owner is not blocked in
//!   the poller (Go's `netpollBreak` only when a thread sits in `netpoll`): a busy scheduler
//!   drains the queue at its next poll anyway (the same poll where a written eventfd would be
//!   seen), so the write only cost a syscall on each side. The owner publishes `sleeping`
//!   before it blocks; the waker pushes its message, then reads `sleeping`. No wake is lost:
//!   the owner runs `store(sleeping, true); fence(SeqCst); queued.load()` and the waker
//!   `queue.push(m), queued = true; fence(SeqCst); sleeping.load()`. The two SeqCst fences are totally ordered;
//!   if the owner's comes first, the waker's load sees `true` and it writes the eventfd, which
//!   makes the owner's wait return (or not block); if the waker's comes first, the owner sees
//!   the queue non-empty and polls without blocking. Either way the message is drained by the
//!   poll. A waker that reads a stale `true` (the owner just woke) writes once more: a spurious
//!   return of the next wait, never a lost wake. `polling` itself writes at most once per wait
//!   (its own "notified" flag, cleared by the waiting side), so many wakes during one sleep
//!   cost one write. Signals (`interrupt`) and the monitor notify unconditionally: they do not
//!   go through the queue. (Measured: docs/benchmarks.md, "Cross-thread wake".)
//!
//! # Sockets that move between threads
//!
//! Sockets are `Send` and `Sync`, like std's. A socket is registered with the poller of each
//! thread where it would block, once per thread (epoll lets one fd sit in several epoll
//! instances, and each gets the edges). So a listener moved to another thread works there, and
//! the common std pattern of several threads blocking in `accept` on one shared listener works
//! without any registration moving back and forth. The fd's record lists every poller an fd is
//! registered with; the last user to leave, on whatever thread, deletes it from all of them
//! (`epoll_ctl` works on any thread's epoll instance) before the fd is closed, and tells each
//! reactor to drop its entry (directly on its own thread, by a message on the others).
//! (Moving the single registration instead, the first design, made two threads blocked on one
//! socket steal it from each other in a loop: 120 ms of CPU per 300 ms idle.)

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::poller::{Event, Events, PollMode, Poller};
use crate::registrations::{FdUser, OpDeadline};
use crate::scheduler::{scheduler, BlockedOn, State, Task, Wake};

/// Which readiness a tasklet waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// How [`Reactor::begin_wait`] went.
pub(crate) enum Begin {
    /// The tasklet is among the fd's waiters: park.
    Parked,
    /// An edge came while nobody waited: retry the operation.
    Ready,
    /// The fd is not registered with this thread's poller under the user's epoch.
    Unregistered,
    /// A wait only if the read side is drained, and it is not: try the `recv`.
    NotDrained,
}

/// The part of a reactor other threads may hold: the poller and the queue of remote wake-ups.
pub(crate) struct Shared {
    poller: Poller,
    /// Messages from other threads, in arrival order (see "The remote queue" above).
    remote: Mutex<Vec<Remote>>,
    /// Whether `remote` holds any message: set under its lock by each push, cleared under it
    /// by the owner's drain, read without it (the owner's check before each poll).
    queued: AtomicBool,
    /// Whether the owner is (about to be) blocked in the poller: only then does a message on
    /// `remote` need the eventfd write (see "Notify only a sleeper" above).
    sleeping: AtomicBool,
}

impl Shared {
    /// Wakes the poller's owner if it sleeps in it, or makes its next wait return at once.
    pub(crate) fn notify(&self) {
        if let Err(err) = self.poller.notify() {
            log::warn!("tasklet: cannot notify a poller: {err}");
        }
    }

    /// Queues `message` for the owner and wakes it only if it sleeps in the poller.
    fn send(&self, message: Remote) {
        {
            let mut remote = self.remote.lock().unwrap_or_else(PoisonError::into_inner);
            remote.push(message);
            self.queued.store(true, Ordering::Relaxed);
        }
        // Pairs with the fence in `Reactor::poll` (the proof is in the module comment).
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            self.notify();
        }
    }
}

/// A message from another thread.
#[derive(Clone, Copy)]
enum Remote {
    /// Wake the tasklet waiting with this token.
    Wake(usize),
    /// The fd registered under this key (fd, epoch) was deleted from this poller by its last
    /// user, on another thread: drop the entry and wake anyone parked on it.
    Forget(usize),
}

/// The reactor's state of one fd number: whether (and under which epoch of its record) it is
/// registered with this thread's poller, and who waits on it.
#[derive(Default)]
struct FdEntry {
    epoch: u32,
    registered: bool,
    ready: [bool; 2],
    /// What a reader may assume about the read side (see "Short reads" above).
    read: ReadState,
    waiters: [Waiters; 2],
}

/// What the reactor knows of an fd's read side, for skipping the `recv` that would fail with
/// `EAGAIN` after a short read (see "Short reads" in the module comment).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
enum ReadState {
    /// Nothing known: a reader tries the `recv` first.
    #[default]
    Unknown,
    /// The last `recv` of a stream returned less than asked for, and no read event came since:
    /// the receive queue was empty then and every byte since has an event still to come, so a
    /// reader parks without trying.
    Drained,
    /// Sticky until the entry is reset: the poller reported the read side closed, an error, or
    /// urgent data. A reader always tries the `recv` first (a FIN that came with the last data
    /// has no event of its own left).
    Closed,
}

/// The tasklets parked on one fd in one direction, in arrival order: a single slot, and a
/// queue (allocated on first need) only while several wait at once. Small, because a reactor
/// holds an entry for every fd number of each range of 256 it has registered one in: 40 bytes an fd.
#[derive(Default)]
struct Waiters {
    first: Option<Rc<Task>>,
    /// Boxed so that an entry with at most one waiter per direction (the common case) stays
    /// 8 bytes here instead of a `VecDeque`'s 32.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Rc<Task>>>>,
}

impl Waiters {
    #[inline]
    fn push(&mut self, task: Rc<Task>) {
        if self.is_empty() {
            self.first = Some(task);
        } else {
            self.push_more(task);
        }
    }

    #[cold]
    fn push_more(&mut self, task: Rc<Task>) {
        self.rest.get_or_insert_default().push_back(task);
    }

    #[inline]
    fn pop(&mut self) -> Option<Rc<Task>> {
        match self.first.take() {
            Some(task) => Some(task),
            None => self.rest.as_mut()?.pop_front(),
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(|rest| rest.is_empty())
    }

    /// Takes `task` out if it is still there.
    #[inline]
    fn remove(&mut self, task: &Task) -> bool {
        if self.first.as_deref().is_some_and(|t| std::ptr::eq(t, task)) {
            self.first = None;
            return true;
        }
        self.rest.is_some() && self.remove_more(task)
    }

    #[cold]
    fn remove_more(&mut self, task: &Task) -> bool {
        let Some(rest) = self.rest.as_mut() else { return false };
        let pos = rest.iter().position(|t| std::ptr::eq(&**t, task));
        pos.and_then(|pos| rest.remove(pos)).is_some()
    }
}

/// A reactor's fd entries, indexed by fd number: chunks of [`FdTable::CHUNK`] entries
/// allocated when an fd of their range is first registered, so a lookup is two indexings and
/// memory follows the fd numbers in use (a lone socket at fd 600,000 costs one chunk, not
/// 600,000 entries).
#[derive(Default)]
struct FdTable {
    chunks: Vec<Option<Box<[FdEntry; FdTable::CHUNK]>>>,
}

impl FdTable {
    const CHUNK: usize = 256;

    /// Where `fd` lives: (chunk, index in it). A negative fd maps past every chunk.
    #[inline]
    fn place(fd: RawFd) -> (usize, usize) {
        let fd = fd as u32 as usize;
        (fd / Self::CHUNK, fd % Self::CHUNK)
    }

    #[inline]
    fn get(&self, fd: RawFd) -> Option<&FdEntry> {
        let (chunk, index) = Self::place(fd);
        Some(&self.chunks.get(chunk)?.as_ref()?[index])
    }

    #[inline]
    fn get_mut(&mut self, fd: RawFd) -> Option<&mut FdEntry> {
        let (chunk, index) = Self::place(fd);
        Some(&mut self.chunks.get_mut(chunk)?.as_mut()?[index])
    }

    /// The entry of `fd` (non-negative), allocating its chunk on first use.
    #[inline]
    fn entry(&mut self, fd: RawFd) -> &mut FdEntry {
        let (chunk, index) = Self::place(fd);
        if self.chunks.get(chunk).is_none_or(Option::is_none) {
            self.grow(chunk);
        }
        match &mut self.chunks[chunk] {
            Some(entries) => &mut entries[index],
            None => unreachable!("grow made the chunk"),
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, chunk: usize) {
        if self.chunks.len() <= chunk {
            self.chunks.resize_with(chunk + 1, || None);
        }
        self.chunks[chunk].get_or_insert_with(|| Box::new(std::array::from_fn(|_| FdEntry::default())));
    }
}

/// The tasklets waiting for other threads: a slot each, and the free slots (one `RefCell`
/// for both: a wait's start and end each borrow once).
struct RemoteSlots {
    slots: Vec<RemoteSlot>,
    free: Vec<usize>,
}

/// A tasklet waiting for another thread.
struct RemoteSlot {
    generation: u32,
    task: Option<Rc<Task>>,
    done: bool,
}

/// The thread-local half of a reactor, owned by the scheduler.
pub(crate) struct Reactor {
    shared: OnceCell<Arc<Shared>>,
    fds: RefCell<FdTable>,
    remotes: RefCell<RemoteSlots>,
    /// The spare buffer the remote queue's messages are drained into (swapped with the queue's
    /// own under its lock, so that neither side allocates once both have grown).
    drained: Cell<Vec<Remote>>,
    /// Tasklets parked on fds or on other threads: while any is, the thread is not idle for good.
    parked: Cell<usize>,
    /// Of those, the tasklets parked on other threads (in a remote slot): the rest wait on fds,
    /// and only they need the poller's events (see "Polls without a system call").
    remote_parked: Cell<usize>,
    events: RefCell<Events>,
    /// When the last poll returned: the scheduler pass's clock (see [`Reactor::polled_at`]).
    last_poll: Cell<Option<Instant>>,
    mode: PollMode,
    /// Calls to the poller since the reactor was created.
    polls: Cell<u64>,
    /// Dump requests seen (see `debug::dump_on_signal`).
    dumps_seen: Cell<u64>,
    /// Whether the poller watches the dump-request eventfd.
    watches_dumps: Cell<bool>,
    /// Tasklets in interruptible waits (see `io::interrupt`); a slot is freed by its waiter.
    interruptible: RefCell<Vec<Option<Rc<Task>>>>,
    free_interruptible: RefCell<Vec<usize>>,
    /// The thread's interrupt count when the interruptible waiters were last woken.
    interrupts_seen: Cell<u64>,
}

thread_local! {
    /// This thread's interrupt count (see `io::interrupt`). Const-initialised and without a
    /// destructor, so a signal handler may touch it.
    static INTERRUPTS: AtomicU64 = const { AtomicU64::new(0) };
    /// This thread's poller, for a signal handler to wake it (null while there is none).
    static POLLER: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
}

/// The calling thread's interrupt count.
#[inline]
pub(crate) fn interrupts() -> u64 {
    INTERRUPTS.with(|count| count.load(Ordering::Relaxed))
}

/// Counts an interrupt of the calling thread and wakes its poller, so that the scheduler wakes
/// the thread's interruptible waiters at once, even if the thread was about to block in (or
/// is blocked in) the poller. Async-signal-safe: an atomic add, a thread-local read and at
/// most one `write` to an eventfd.
pub(crate) fn interrupt() {
    INTERRUPTS.with(|count| count.fetch_add(1, Ordering::Relaxed));
    let poller = POLLER.with(Cell::get);
    if !poller.is_null() {
        // SAFETY: the pointer is set while the thread's reactor holds its `Shared` and cleared
        // (on this same thread) before the reactor lets it go, so it is live here.
        // `Poller::notify` is an atomic swap and an eventfd write: async-signal-safe.
        let _ = unsafe { &*poller }.poller.notify();
    }
}

/// The key of the dump-request eventfd's events. `polling` reserves `usize::MAX`; no fd
/// registration has this key, as that would need fd number 2^32 - 2.
const DUMP_KEY: usize = usize::MAX - 1;

/// Minimum time between two non-blocking polls while tasklets are runnable.
const BUSY_POLL_INTERVAL: Duration = Duration::from_micros(50);

/// A poller key or remote token: an index (an fd number, a remote slot) and the generation
/// that tells a stale one apart.
pub(crate) fn key(index: usize, generation: u32) -> usize {
    index | (generation as usize) << 32
}

fn split(key: usize) -> (usize, u32) {
    (key & 0xffff_ffff, (key >> 32) as u32)
}

impl Reactor {
    pub(crate) fn new() -> Reactor {
        let mode = match std::env::var_os("TASKLET_POLL_MODE") {
            Some(v) if v == "oneshot" => PollMode::Oneshot,
            _ => PollMode::Edge,
        };
        Reactor {
            shared: OnceCell::new(),
            fds: RefCell::new(FdTable::default()),
            remotes: RefCell::new(RemoteSlots { slots: Vec::new(), free: Vec::new() }),
            drained: Cell::new(Vec::new()),
            parked: Cell::new(0),
            remote_parked: Cell::new(0),
            events: RefCell::new(Events::new()),
            last_poll: Cell::new(None),
            mode,
            polls: Cell::new(0),
            dumps_seen: Cell::new(crate::debug::dump_requests()),
            watches_dumps: Cell::new(false),
            interruptible: RefCell::new(Vec::new()),
            free_interruptible: RefCell::new(Vec::new()),
            interrupts_seen: Cell::new(interrupts()),
        }
    }

    /// The shared half, creating the poller on first use.
    pub(crate) fn shared(&self) -> io::Result<Arc<Shared>> {
        self.shared_ref().cloned()
    }

    /// [`Reactor::shared`] without cloning the `Arc` (no atomic add and subtract per poll).
    #[inline]
    fn shared_ref(&self) -> io::Result<&Arc<Shared>> {
        match self.shared.get() {
            Some(shared) => Ok(shared),
            None => self.make_shared(),
        }
    }

    #[cold]
    #[inline(never)]
    fn make_shared(&self) -> io::Result<&Arc<Shared>> {
        let shared = Arc::new(Shared {
            poller: Poller::new()?,
            remote: Mutex::new(Vec::new()),
            queued: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
        });
        let shared = self.shared.get_or_init(|| shared);
        POLLER.with(|poller| poller.set(Arc::as_ptr(shared)));
        scheduler().monitor().set_notifier(shared.clone());
        Ok(shared)
    }

    /// Whether `shared` is this reactor's (without cloning the `Arc`).
    #[inline]
    pub(crate) fn owns(&self, shared: &Arc<Shared>) -> bool {
        self.shared.get().is_some_and(|own| Arc::ptr_eq(own, shared))
    }

    /// Calls to the poller so far.
    pub(crate) fn polls(&self) -> u64 {
        self.polls.get()
    }

    /// Tasklets parked on fds or on other threads.
    pub(crate) fn parked(&self) -> usize {
        self.parked.get()
    }

    /// Whether tasklets wait for fds or for other threads.
    pub(crate) fn has_waiters(&self) -> bool {
        self.parked.get() > 0
    }

    /// Records that `fd` was just added to this thread's poller under `epoch`. Tasklets still
    /// parked on an earlier registration of the number (whose deletion has not reached this
    /// thread yet) are woken: their wait fails, its epoch being gone.
    pub(crate) fn mark_registered(&self, fd: RawFd, epoch: u32) {
        let stale = {
            let mut fds = self.fds.borrow_mut();
            let entry = fds.entry(fd);
            let stale = std::mem::take(&mut entry.waiters);
            *entry = FdEntry { epoch, registered: true, ..FdEntry::default() };
            stale
        };
        self.wake_all(stale);
    }

    /// Drops the entry of an fd deleted from this poller under `epoch` (nothing if the entry
    /// has moved on to another epoch), waking anyone still parked on it (their wait fails).
    pub(crate) fn forget(&self, fd: RawFd, epoch: u32) {
        let waiters = {
            let mut fds = self.fds.borrow_mut();
            let Some(entry) = fds.get_mut(fd) else { return };
            if !entry.registered || entry.epoch != epoch {
                return;
            }
            entry.registered = false;
            entry.ready = [false; 2];
            entry.read = ReadState::Unknown;
            std::mem::take(&mut entry.waiters)
        };
        self.wake_all(waiters);
    }

    fn wake_all(&self, waiters: [Waiters; 2]) {
        for mut list in waiters {
            while let Some(task) = list.pop() {
                self.parked.set(self.parked.get() - 1);
                scheduler().wake(task);
            }
        }
    }

    /// Records that a stream read of `fd` just returned less than it asked for (and more than
    /// nothing): unless the read side was reported closed, the next read parks without trying.
    /// An edge that came before this read is consumed with it (its data was read).
    #[inline]
    pub(crate) fn read_was_short(&self, fd: RawFd, epoch: u32) {
        if !crate::poller::REPORTS_READ_CLOSED {
            return;
        }
        let mut fds = self.fds.borrow_mut();
        if let Some(entry) = fds.get_mut(fd) {
            if entry.read == ReadState::Unknown && entry.registered && entry.epoch == epoch {
                entry.read = ReadState::Drained;
                entry.ready[Direction::Read as usize] = false;
            }
        }
    }

    /// Starts a wait of the tasklet `task` makes a reference to on `fd` in `dir`, with one
    /// lookup: [`Begin::Unregistered`] if `fd` is not registered here under `epoch` (register,
    /// then begin again), [`Begin::Ready`] if an edge arrived while nobody waited (consumed:
    /// retry the operation instead), the error of `may_park` if it refuses (an expired deadline,
    /// an interrupt; it must not touch the reactor), else [`Begin::Parked`]: the tasklet is
    /// among the fd's waiters. With `drained_only` (a stream read about to try its `recv`), a
    /// read side that is not `Drained` (or an fd not registered here) gives
    /// [`Begin::NotDrained`]: the `recv` may find data, try it (see "Short reads").
    #[inline]
    pub(crate) fn begin_wait(
        &self,
        fd: RawFd,
        epoch: u32,
        dir: Direction,
        drained_only: bool,
        task: impl FnOnce() -> Rc<Task>,
        may_park: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<Begin> {
        let mut fds = self.fds.borrow_mut();
        let Some(entry) = fds.get_mut(fd).filter(|e| e.registered && e.epoch == epoch) else {
            return Ok(if drained_only { Begin::NotDrained } else { Begin::Unregistered });
        };
        if drained_only && entry.read != ReadState::Drained {
            return Ok(Begin::NotDrained);
        }
        if std::mem::take(&mut entry.ready[dir as usize]) {
            return Ok(Begin::Ready);
        }
        may_park()?;
        entry.waiters[dir as usize].push(task());
        self.parked.set(self.parked.get() + 1);
        Ok(Begin::Parked)
    }

    /// Ends a wait begun with [`Reactor::begin_wait`]: takes `task` out of the waiters of `fd`
    /// if it is still there (woken another way than readiness), and says whether `fd` is
    /// still registered here under `epoch` (not, when its last user left meanwhile).
    #[inline]
    pub(crate) fn end_wait(&self, fd: RawFd, epoch: u32, dir: Direction, task: &Task) -> bool {
        let (removed, registered) = {
            let mut fds = self.fds.borrow_mut();
            match fds.get_mut(fd) {
                Some(entry) => {
                    (entry.waiters[dir as usize].remove(task), entry.registered && entry.epoch == epoch)
                }
                None => (false, false),
            }
        };
        if removed {
            self.parked.set(self.parked.get() - 1);
        }
        registered
    }

    /// Re-arms a oneshot registration for the directions that have waiters.
    #[inline]
    pub(crate) fn rearm(&self, fd: RawFd, epoch: u32) -> io::Result<()> {
        if self.mode != PollMode::Oneshot {
            return Ok(());
        }
        self.rearm_oneshot(fd, epoch)
    }

    #[cold]
    fn rearm_oneshot(&self, fd: RawFd, epoch: u32) -> io::Result<()> {
        let shared = self.shared()?;
        let (r, w) = {
            let fds = self.fds.borrow();
            let waits = |dir: usize| fds.get(fd).is_some_and(|entry| !entry.waiters[dir].is_empty());
            (waits(0), waits(1))
        };
        // SAFETY: the fd is registered with this poller and still open (its users are alive).
        let fd_ref = unsafe { BorrowedFd::borrow_raw(fd) };
        shared.poller.modify_with_mode(fd_ref, Event::new(key(fd as usize, epoch), r, w), PollMode::Oneshot)
    }

    /// The poll mode registrations use (edge unless `TASKLET_POLL_MODE=oneshot`).
    pub(crate) fn mode(&self) -> PollMode {
        self.mode
    }

    /// Makes a remote token for the current tasklet, which will park until another thread
    /// calls [`RemoteWaker::wake`] with it.
    #[inline]
    pub(crate) fn remote_waker(&self) -> io::Result<RemoteWaker> {
        let shared = self.shared()?;
        let mut remotes = self.remotes.borrow_mut();
        let RemoteSlots { slots, free } = &mut *remotes;
        let index = free.pop().unwrap_or_else(|| {
            slots.push(RemoteSlot { generation: 0, task: None, done: false });
            slots.len() - 1
        });
        // A free slot is not done and holds no task (see `RemoteWait`'s drop).
        let slot = &slots[index];
        debug_assert!(!slot.done && slot.task.is_none());
        Ok(RemoteWaker { shared, token: key(index, slot.generation) })
    }

    /// Parks the current tasklet until `waker` was woken. Returns `Wake::Never` only when the
    /// tasklet was killed again while unwinding.
    pub(crate) fn wait_remote(&self, waker: &RemoteWaker, blocked_on: BlockedOn) -> Wake {
        let (index, _) = split(waker.token);
        let wait = RemoteWait { reactor: self, index };
        while !wait.woken() {
            if wait.park(blocked_on) == Wake::Never {
                return Wake::Never;
            }
        }
        Wake::Woken
    }

    /// Begins a wait for another thread whose end the caller decides (a cross-thread channel
    /// operation, which a timer or a kill may also end): the current tasklet parks with
    /// [`RemoteWait::park`] until the returned waker is woken, and the guard frees the slot
    /// when dropped (a wake still in flight is then dropped when it arrives).
    #[inline]
    pub(crate) fn remote_wait(&self) -> io::Result<(RemoteWait<'_>, RemoteWaker)> {
        let waker = self.remote_waker()?;
        let (index, _) = split(waker.token);
        Ok((RemoteWait { reactor: self, index }, waker))
    }

    /// Polls for I/O events, waiting at most `timeout` (`None`: until something happens), and
    /// wakes the tasklets they concern. Returns whether it could poll.
    pub(crate) fn poll(&self, timeout: Option<Duration>) -> bool {
        self.poll_with(timeout, None)
    }

    /// The scheduler pass's clock: when the last poll returned (see [`Reactor::poll`]), or now
    /// if there was none. The scheduler fires due timers against it instead of reading the
    /// clock again. After a poll that made no system call while no timer was armed, it is the
    /// reading of an earlier poll (see "Polls without a system call"): only use it for timers.
    pub(crate) fn polled_at(&self) -> Instant {
        self.last_poll.get().unwrap_or_else(Instant::now)
    }

    /// [`Reactor::poll`]; a non-blocking poll takes `before` (read by the caller just before)
    /// as the time it returned, instead of reading the clock again.
    fn poll_with(&self, timeout: Option<Duration>, before: Option<Instant>) -> bool {
        let shared = match self.shared_ref() {
            Ok(shared) => shared,
            Err(err) => {
                log::warn!("tasklet: cannot create a poller: {err}");
                return false;
            }
        };
        // Only fd waiters need the poller's events; with none, a poll that would not sleep
        // (a zero timeout, or a message already queued) makes no system call (see "Polls
        // without a system call").
        let needs_events = self.parked.get() > self.remote_parked.get();
        let skip =
            !needs_events && (timeout == Some(Duration::ZERO) || shared.queued.load(Ordering::Acquire));
        if skip {
            // The pass's clock, as below; but a poll that did not wait took no time, and only
            // timers need "now" (the scheduler fires them against `polled_at`): with none
            // armed, the last poll's reading stands (no clock read, ~35 ns on the VM of
            // docs/benchmarks.md).
            match before {
                Some(before) => self.last_poll.set(Some(before)),
                None if scheduler().timers().len() > 0 => self.last_poll.set(Some(Instant::now())),
                None => {}
            }
            // Nothing to answer: the scheduler answered requests just before (`answer_requests`,
            // in the switch that went idle or in `poll_while_busy`, or a poll of the same idle
            // loop), and this poll did not wait.
        } else if !self.wait_and_wake(shared, timeout, before) {
            return false;
        }
        if shared.queued.load(Ordering::Acquire) {
            self.drain_remote(shared);
        }
        true
    }

    /// Starts watching the dump-request eventfd, once it exists.
    #[cold]
    #[inline(never)]
    fn watch_dumps(&self, shared: &Shared) {
        if let Some(fd) = crate::debug::dump_eventfd() {
            // SAFETY: the dump eventfd is never closed.
            match unsafe { shared.poller.add_with_mode(fd, Event::readable(DUMP_KEY), PollMode::Edge) } {
                Ok(()) => self.watches_dumps.set(true),
                Err(err) => log::warn!("tasklet: cannot watch for dump requests: {err}"),
            }
        }
    }

    /// What a poll that called the poller answers before it wakes anyone: a dump request (the
    /// dump shows what the tasklets waited on when it was asked for, or while it slept),
    /// interrupts, a snapshot request (publishing the poll count first).
    #[inline]
    fn answer_after_poll(&self) {
        crate::debug::dump_if_requested(&self.dumps_seen);
        self.wake_interrupted();
        scheduler().monitor().polled(self.polls.get());
    }

    /// The poll's system call: waits in the poller (at most `timeout`), then wakes the fd
    /// waiters of the events it returned. Returns whether the poller could wait.
    fn wait_and_wake(&self, shared: &Shared, timeout: Option<Duration>, before: Option<Instant>) -> bool {
        self.polls.set(self.polls.get() + 1);
        if !self.watches_dumps.get() {
            self.watch_dumps(shared); // only a poll that may sleep needs to be woken for a dump
        }
        let mut events = self.events.borrow_mut();
        events.clear();
        let mut timeout = timeout;
        let blocks = timeout != Some(Duration::ZERO);
        if blocks {
            // The fence orders this store before the check below (no SeqCst store needed).
            shared.sleeping.store(true, Ordering::Relaxed);
            // Pairs with the fence in `Shared::send` (the proof is in the module comment).
            fence(Ordering::SeqCst);
            if shared.queued.load(Ordering::Relaxed) {
                timeout = Some(Duration::ZERO);
            }
        }
        let waited = shared.poller.wait(&mut events, timeout);
        if blocks {
            shared.sleeping.store(false, Ordering::Relaxed);
        }
        // The pass's one clock read (after the wait: what it returns to is "now" for the timers
        // fired next; a non-blocking wait takes its caller's reading from just before).
        self.last_poll.set(Some(match before {
            Some(before) if !blocks => before,
            _ => Instant::now(),
        }));
        if let Err(err) = waited {
            if err.kind() != io::ErrorKind::Interrupted {
                log::warn!("tasklet: polling failed: {err}");
                return false;
            }
        }
        self.answer_after_poll();
        let sched = scheduler();
        let mut fds = self.fds.borrow_mut();
        for event in events.iter() {
            if event.key == DUMP_KEY {
                continue; // the counter says whether to dump, below
            }
            let (fd, epoch) = split(event.key);
            let Some(entry) = fds.get_mut(fd as RawFd) else { continue };
            if !entry.registered || entry.epoch != epoch {
                continue; // stale: the fd was deleted from this poller since
            }
            if event.readable {
                // Before the waiters run: a woken reader must see the read side's news.
                if crate::poller::read_closed(&event) {
                    entry.read = ReadState::Closed;
                } else if entry.read == ReadState::Drained {
                    entry.read = ReadState::Unknown;
                }
            }
            for (dir, ready) in [(0, event.readable), (1, event.writable)] {
                if !ready {
                    continue;
                }
                if entry.waiters[dir].is_empty() {
                    entry.ready[dir] = true;
                }
                // Waking only touches the scheduler's run queue, never the fd table. A poll
                // wakes a batch (~50 tasklets with 1,000 busy connections), each to resume on
                // a stack last touched a batch ago: prefetch them all, the misses overlap.
                while let Some(task) = entry.waiters[dir].pop() {
                    self.parked.set(self.parked.get() - 1);
                    crate::scheduler::prefetch_resume(&task);
                    sched.wake(task);
                }
            }
        }
        true
    }

    /// Takes every message queued by other threads and acts on it, in arrival order.
    fn drain_remote(&self, shared: &Shared) {
        let mut batch = self.drained.take();
        {
            let mut remote = shared.remote.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *remote, &mut batch);
            shared.queued.store(false, Ordering::Relaxed);
        }
        for &message in &batch {
            match message {
                Remote::Wake(token) => self.wake_remote(token),
                Remote::Forget(key) => {
                    let (fd, epoch) = split(key);
                    self.forget(fd as RawFd, epoch);
                }
            }
        }
        batch.clear();
        self.drained.set(batch);
    }

    /// A tasklet left its remote slot (woken, or its wait ended another way).
    #[inline]
    fn unpark_remote(&self) {
        self.parked.set(self.parked.get() - 1);
        self.remote_parked.set(self.remote_parked.get() - 1);
    }

    fn wake_remote(&self, token: usize) {
        let (index, generation) = split(token);
        let task = {
            let mut remotes = self.remotes.borrow_mut();
            let Some(slot) = remotes.slots.get_mut(index).filter(|s| s.generation == generation) else {
                return;
            };
            slot.done = true;
            slot.task.take()
        };
        if let Some(task) = task {
            self.unpark_remote();
            scheduler().wake(task);
        }
    }

    /// Adds the current tasklet, about to park, to the interruptible waiters; returns its slot
    /// (free it with [`Reactor::end_interruptible`]).
    pub(crate) fn begin_interruptible(&self, task: Rc<Task>) -> usize {
        let mut waiters = self.interruptible.borrow_mut();
        match self.free_interruptible.borrow_mut().pop() {
            Some(index) => {
                waiters[index] = Some(task);
                index
            }
            None => {
                waiters.push(Some(task));
                waiters.len() - 1
            }
        }
    }

    /// Frees an interruptible waiter's slot (whether or not an interrupt woke it).
    pub(crate) fn end_interruptible(&self, index: usize) {
        self.interruptible.borrow_mut()[index] = None;
        self.free_interruptible.borrow_mut().push(index);
    }

    /// Wakes every interruptible waiter if the thread was interrupted since the last time.
    /// (Their slots stay theirs until they free them.)
    #[inline]
    fn wake_interrupted(&self) {
        let now = interrupts();
        if now != self.interrupts_seen.get() {
            self.wake_interrupted_now(now);
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_interrupted_now(&self, now: u64) {
        self.interrupts_seen.set(now);
        let woken: Vec<Rc<Task>> =
            self.interruptible.borrow_mut().iter_mut().filter_map(Option::take).collect();
        for task in woken {
            scheduler().wake(task);
        }
    }

    /// Answers what was asked of the thread without a poll: a dump, interrupts, a snapshot
    /// (their notifies may have come while the thread was busy, or before it had a poller).
    pub(crate) fn answer_requests(&self) {
        crate::debug::dump_if_requested(&self.dumps_seen);
        self.wake_interrupted();
        scheduler().monitor().answer_if_requested();
    }

    /// Polls without blocking if tasklets wait on I/O and the last poll is old enough. Returns
    /// the time it read (one clock read), for the scheduler's due timers.
    pub(crate) fn poll_while_busy(&self) -> Instant {
        self.answer_requests();
        let now = Instant::now();
        if self.parked.get() == 0 {
            return now;
        }
        if self.last_poll.get().is_some_and(|last| now.duration_since(last) < BUSY_POLL_INTERVAL) {
            return now;
        }
        self.poll_with(Some(Duration::ZERO), Some(now));
        now
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        // Before the `Shared` may go: a signal handler must not reach a poller being freed.
        if self.shared.get_mut().is_some() {
            POLLER.with(|poller| poller.set(std::ptr::null()));
        }
    }
}

/// A tasklet's wait for another thread, which frees its remote slot when the wait ends
/// (normally or by unwinding).
pub(crate) struct RemoteWait<'a> {
    reactor: &'a Reactor,
    index: usize,
}

impl RemoteWait<'_> {
    /// Whether the waker was woken.
    pub(crate) fn woken(&self) -> bool {
        self.reactor.remotes.borrow().slots[self.index].done
    }

    /// Parks the current tasklet as `blocked_on` until the waker is woken or something else
    /// makes it runnable (its timer, a kill: then [`Wake::Never`] as from any park); returns
    /// at once if the waker was woken already. The wait stays open: a wake that comes later
    /// still counts, until the guard is dropped.
    pub(crate) fn park(&self, blocked_on: BlockedOn) -> Wake {
        let sched = scheduler();
        {
            let mut remotes = self.reactor.remotes.borrow_mut();
            let slot = &mut remotes.slots[self.index];
            if slot.done {
                return Wake::Woken;
            }
            if slot.task.is_none() {
                slot.task = Some(sched.current_rc());
                self.reactor.parked.set(self.reactor.parked.get() + 1);
                self.reactor.remote_parked.set(self.reactor.remote_parked.get() + 1);
            }
        }
        sched.current().set_state(State::Blocked(blocked_on));
        sched.park()
    }
}

impl Drop for RemoteWait<'_> {
    fn drop(&mut self) {
        let task = {
            let mut remotes = self.reactor.remotes.borrow_mut();
            let slot = &mut remotes.slots[self.index];
            slot.generation = slot.generation.wrapping_add(1);
            slot.done = false;
            let task = slot.task.take();
            remotes.free.push(self.index);
            task
        };
        if task.is_some() {
            self.reactor.unpark_remote();
        }
    }
}

/// A `Send` handle that wakes one tasklet of another thread (see [`Reactor::remote_waker`]).
#[derive(Clone)]
pub(crate) struct RemoteWaker {
    shared: Arc<Shared>,
    token: usize,
}

impl RemoteWaker {
    /// Whether the tasklet this wakes belongs to `reactor`'s thread.
    pub(crate) fn is_for(&self, reactor: &Reactor) -> bool {
        reactor.owns(&self.shared)
    }

    /// Wakes the tasklet (from any thread). Waking a tasklet that stopped waiting is harmless.
    /// On the tasklet's own thread the wake is made at once, without the queue and the poller.
    pub(crate) fn wake(&self) {
        if let Some(sched) = crate::scheduler::existing_scheduler() {
            if sched.reactor().owns(&self.shared) {
                sched.reactor().wake_remote(self.token);
                return;
            }
        }
        self.shared.send(Remote::Wake(self.token));
    }

    /// [`RemoteWaker::wake`] for a waker known to be another thread's (a late wake of `sync`).
    pub(crate) fn wake_other_thread(self) {
        self.shared.send(Remote::Wake(self.token));
    }
}

impl Shared {
    /// Adds `fd` to this poller under `key`, in `mode`, with read and write interest.
    ///
    /// # Safety
    ///
    /// `fd` must be open, and be deleted from this poller (see [`Shared::delete`]) before it
    /// is closed.
    pub(crate) unsafe fn add(&self, fd: RawFd, key: usize, mode: PollMode) -> io::Result<()> {
        // SAFETY: per this function's contract.
        unsafe { self.poller.add_with_mode(fd, Event::all(key), mode) }
    }

    /// Re-keys an fd already in this poller (one whose registration the fd's record lost track
    /// of: see `registrations`).
    pub(crate) fn modify(&self, fd: BorrowedFd<'_>, key: usize, mode: PollMode) -> io::Result<()> {
        self.poller.modify_with_mode(fd, Event::all(key), mode)
    }

    /// Deletes `fd` from this poller (while the number still names the registered file).
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) {
        if let Err(err) = self.poller.delete(fd) {
            log::debug!("tasklet: deleting an fd from its poller failed: {err}");
        }
    }

    /// Tells the reactor owning this poller that `fd` was deleted from it under `epoch` (from
    /// another thread: the reactor drops its entry the next time it polls).
    pub(crate) fn forget_remotely(&self, fd: RawFd, epoch: u32) {
        self.send(Remote::Forget(key(fd as usize, epoch)));
    }
}

/// A non-blocking socket whose blocking-style operations park the calling tasklet.
///
/// Owns the socket: on drop it leaves the fd's registrations (the last user deletes the fd
/// from every poller), then closes it. The fd is always non-blocking at the OS level; what the
/// *user* asked for (non-blocking mode, timeouts) is the caller's to pass to [`Source::io`]
/// (see `net::NetSocket`).
pub(crate) struct Source {
    socket: socket2::Socket,
    user: FdUser,
}

impl Source {
    /// Wraps a socket, making it non-blocking at the OS level.
    pub(crate) fn new(socket: socket2::Socket) -> io::Result<Source> {
        socket.set_nonblocking(true)?;
        Ok(Source::nonblocking(socket))
    }

    /// Wraps a socket that is non-blocking at the OS level already (one from `sys::accept`),
    /// without the `fcntl` of [`Source::new`]: one system call fewer per accepted connection.
    /// A blocking socket here would block the thread in its first read.
    pub(crate) fn nonblocking(socket: socket2::Socket) -> Source {
        let user = FdUser::join(socket.as_raw_fd());
        Source { socket, user }
    }

    pub(crate) fn socket(&self) -> &socket2::Socket {
        &self.socket
    }

    /// Gives the socket up (for `IntoRawFd` and conversions into std types): leaves its
    /// registrations, and makes it blocking again at the OS level unless `nonblocking`.
    pub(crate) fn into_socket(self, nonblocking: bool) -> io::Result<socket2::Socket> {
        let this = std::mem::ManuallyDrop::new(self);
        this.user.leave();
        // SAFETY: `this` is never used or dropped again; each field is moved out exactly once.
        let (socket, user) = unsafe { (std::ptr::read(&this.socket), std::ptr::read(&this.user)) };
        drop(user);
        socket.set_nonblocking(nonblocking)?;
        Ok(socket)
    }

    /// Runs `op` until it does not fail with `WouldBlock`, parking the current tasklet until
    /// the socket is ready in `dir` between attempts. With `nonblocking`, `WouldBlock` is
    /// returned as is. With a `timeout` (in nanoseconds; 0: none), an operation that stays
    /// blocked that long fails with `WouldBlock` (what std returns when
    /// `SO_RCVTIMEO`/`SO_SNDTIMEO` expire).
    pub(crate) fn io<R>(
        &self,
        dir: Direction,
        nonblocking: bool,
        timeout: u64,
        mut op: impl FnMut(&socket2::Socket) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut deadline = OpDeadline::after(timeout);
        loop {
            match op(&self.socket) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock && !nonblocking => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
            self.wait_for(dir, &mut deadline)?;
        }
    }

    /// [`Source::io`] for a raw system call that returns a count or -1 with `errno` set
    /// (`recv`, `send`, ...): `WouldBlock` and `Interrupted` are told apart by `errno`, with no
    /// `io::Error` built on the way (issue 14: one was built and dropped for every `EAGAIN`).
    ///
    /// With `stream_read = Some(len)` the call is a read of `len` bytes from a stream socket,
    /// which may skip the call that would fail with `EAGAIN` after a short read (see "Short
    /// reads" in the module comment): a read that returns less than `len` (and more than
    /// nothing) tells the reactor so, and the next one, if nothing came since, parks before
    /// trying.
    #[inline]
    pub(crate) fn io_raw(
        &self,
        dir: Direction,
        nonblocking: bool,
        timeout: u64,
        stream_read: Option<usize>,
        mut op: impl FnMut(RawFd) -> isize,
    ) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        let mut deadline = OpDeadline::after(timeout);
        let short_reads = stream_read.is_some_and(|len| len > 0) && !nonblocking;
        if short_reads {
            // Parks before trying if the last read was short and nothing came since.
            self.user.wait_for(dir, true, &mut deadline, None)?;
        }
        loop {
            let res = op(fd);
            if res >= 0 {
                let n = res as usize;
                if short_reads && n > 0 && stream_read.is_some_and(|len| n < len) {
                    self.user.read_was_short();
                }
                return Ok(n);
            }
            match crate::sys::errno() {
                libc::EINTR => continue,
                errno if crate::sys::would_block(errno) && !nonblocking => {}
                errno => return Err(io::Error::from_raw_os_error(errno)),
            }
            self.wait_for(dir, &mut deadline)?;
        }
    }

    /// One wait of an operation (see [`OpDeadline`] for its deadline).
    #[inline]
    fn wait_for(&self, dir: Direction, deadline: &mut OpDeadline) -> io::Result<()> {
        self.user.wait_for(dir, false, deadline, None)
    }

    /// Parks until the socket is ready in `dir` (see [`FdUser::wait`]).
    pub(crate) fn wait(&self, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        self.user.wait(dir, deadline, None)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.user.leave();
        // The socket itself closes after this, when the field drops.
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("fd", &self.socket.as_raw_fd()).finish_non_exhaustive()
    }
}

/// A tasklet's place among the interruptible waiters while it is parked (freed on drop, also
/// when a kill unwinds the wait).
pub(crate) struct Interruptible<'a> {
    reactor: &'a Reactor,
    index: usize,
}

impl<'a> Interruptible<'a> {
    pub(crate) fn begin(reactor: &'a Reactor, task: &Rc<Task>) -> Interruptible<'a> {
        Interruptible { reactor, index: reactor.begin_interruptible(task.clone()) }
    }
}

impl Drop for Interruptible<'_> {
    fn drop(&mut self) {
        self.reactor.end_interruptible(self.index);
    }
}

/// Sleeps the current tasklet until `until`, unless the thread is interrupted after interrupt
/// count `since` first (`Interrupted`), or the tasklet is killed while it defers kills (the
/// error of [`killed`]). On a thread without a scheduler, sleeps the thread (an interrupt
/// cannot end that sleep early, but one that came before is reported).
pub(crate) fn sleep_interruptible(until: Instant, since: u64) -> io::Result<()> {
    let Some(sched) = crate::scheduler::existing_scheduler() else {
        if since != interrupts() {
            return Err(interrupted());
        }
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        return Ok(());
    };
    let me = sched.current_rc();
    let alarm = crate::timer::Alarm::arm(&me, until);
    loop {
        if since != interrupts() {
            return Err(interrupted());
        }
        if alarm.fired() || Instant::now() >= until {
            return Ok(());
        }
        let slot = Interruptible::begin(sched.reactor(), &me);
        me.set_state(State::Blocked(BlockedOn::Sleep));
        let wake = sched.park();
        drop(slot);
        if wake == Wake::Never {
            return Err(killed());
        }
    }
}

/// The error of an interruptible wait ended by an interrupt (see `io::interrupt`).
pub(crate) fn interrupted() -> io::Error {
    io::Error::from(io::ErrorKind::Interrupted)
}

/// The error of a wait cut short by a kill that could not unwind (the tasklet was already
/// unwinding, or defers kills).
pub(crate) fn killed() -> io::Error {
    io::Error::other("the tasklet was killed")
}

/// The error of an operation whose timeout expired, as std reports it on Unix.
pub(crate) fn timed_out() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_fd_entry_stays_small() {
        // One per fd number of each range of 256 a thread has registered one in, on every thread.
        assert!(std::mem::size_of::<super::FdEntry>() <= 40, "{}", std::mem::size_of::<super::FdEntry>());
    }
}
