//! The I/O bridge: each scheduler's readiness poller, the per-fd waiters, and cross-thread
//! wake-ups.
//!
//! # Design (after Go's netpoller)
//!
//! - **Try first.** A socket operation is attempted directly; only when it fails with
//!   `WouldBlock` does the tasklet park. A read that finds data costs one syscall and nothing
//!   else.
//! - **Register once, edge-triggered.** The first time a socket would block on a thread, its fd
//!   is added to that thread's poller with read and write interest in edge mode
//!   (`EPOLLET`), keyed by a slot of the reactor's fd table. It stays registered until the
//!   socket is dropped, when it is deleted from the poller *before* the fd is closed. Oneshot
//!   mode would need an `epoll_ctl(MOD)` before every park to re-arm; edge mode needs none
//!   (`TASKLET_POLL_MODE=oneshot` selects oneshot, to measure the difference; see
//!   `docs/io.md`).
//! - **Per-fd waiters.** A slot holds the tasklets parked for reading and for writing (FIFO),
//!   plus a *ready* flag per direction for an edge that arrived while nobody waited, so that a
//!   later waiter retries once instead of missing it (Go's `pdReady`). An event wakes every
//!   waiter of its direction; they retry in order, and those that find nothing park again. So
//!   two tasklets may read one socket at once: each byte goes to exactly one of them, in the
//!   order the kernel hands them out.
//! - **Stale events.** A slot's key carries a generation, bumped when the slot is freed, so an
//!   event still queued for a closed fd (whose number the kernel may already have reused) is
//!   recognised and dropped.
//! - **When the poller runs.** Never on a switch: `epoll_wait` costs about a microsecond
//!   (`polling` issues five syscalls per wait). The scheduler polls without blocking once per
//!   pass over the run queue (and at most every 50 µs) while tasklets are runnable, and blocks
//!   in the poller until the next timer when none is.
//! - **Cross-thread wake-ups.** Other threads (the `unblock` pool) cannot touch a scheduler;
//!   they push a token onto the reactor's lock-free queue (`crossbeam-queue`) and call
//!   `Poller::notify()`. The scheduler drains the queue whenever it polls. A token's slot
//!   carries a generation, so a wake that arrives after its wait ended (a timeout or a kill
//!   ended it first: `crate::sync`) is dropped. A wake made on the waiter's own thread skips
//!   the queue and the poller.
//!
//! # Sockets that move between threads
//!
//! Sockets are `Send` and `Sync`, like std's. A socket is registered with the poller of each
//! thread where it would block, once per thread (epoll lets one fd sit in several epoll
//! instances, and each gets the edges). So a listener moved to another thread works there, and
//! the common std pattern of several threads blocking in `accept` on one shared listener works
//! without any registration moving back and forth. All registrations are deleted before the fd
//! is closed. (Moving the single registration instead, the first design, made two threads
//! blocked on one socket steal it from each other in a loop: 120 ms of CPU per 300 ms idle.)

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use polling::{Event, Events, PollMode, Poller};

use crate::scheduler::{scheduler, BlockedOn, State, Task, Wake};
use crate::timer::Alarm;

/// Which readiness a tasklet waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// The part of a reactor other threads may hold: the poller and the queue of remote wake-ups.
pub(crate) struct Shared {
    poller: Poller,
    remote: SegQueue<Remote>,
}

impl Shared {
    /// Wakes the poller's owner if it sleeps in it, or makes its next wait return at once.
    pub(crate) fn notify(&self) {
        if let Err(err) = self.poller.notify() {
            log::warn!("tasklet: cannot notify a poller: {err}");
        }
    }
}

/// A message from another thread.
enum Remote {
    /// Wake the tasklet waiting with this token.
    Wake(usize),
    /// The socket registered under this fd key was dropped on another thread: free the slot.
    Forget(usize),
}

/// Readiness state of one registered fd.
#[derive(Default)]
struct FdSlot {
    generation: u32,
    in_use: bool,
    ready: [bool; 2],
    waiters: [VecDeque<Rc<Task>>; 2],
}

/// A tasklet waiting for another thread.
struct RemoteSlot {
    generation: u32,
    task: Option<Rc<Task>>,
    done: bool,
}

/// The thread-local half of a reactor, owned by the scheduler.
pub(crate) struct Reactor {
    shared: RefCell<Option<Arc<Shared>>>,
    fds: RefCell<Vec<FdSlot>>,
    free_fds: RefCell<Vec<usize>>,
    remotes: RefCell<Vec<RemoteSlot>>,
    free_remotes: RefCell<Vec<usize>>,
    /// Tasklets parked on fds or on other threads: while any is, the thread is not idle for good.
    parked: Cell<usize>,
    events: RefCell<Events>,
    last_poll: Cell<Option<Instant>>,
    mode: PollMode,
    /// Calls to the poller since the reactor was created.
    polls: Cell<u64>,
    /// Dump requests seen (see `debug::dump_on_signal`).
    dumps_seen: Cell<u64>,
    /// Whether the poller watches the dump-request eventfd.
    watches_dumps: Cell<bool>,
}

/// The key of the dump-request eventfd's events. `polling` reserves `usize::MAX`; no fd slot
/// has this key, as that would need a slot index of 2^32 - 2.
const DUMP_KEY: usize = usize::MAX - 1;

/// Minimum time between two non-blocking polls while tasklets are runnable.
const BUSY_POLL_INTERVAL: Duration = Duration::from_micros(50);

fn key(index: usize, generation: u32) -> usize {
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
            shared: RefCell::new(None),
            fds: RefCell::new(Vec::new()),
            free_fds: RefCell::new(Vec::new()),
            remotes: RefCell::new(Vec::new()),
            free_remotes: RefCell::new(Vec::new()),
            parked: Cell::new(0),
            events: RefCell::new(Events::new()),
            last_poll: Cell::new(None),
            mode,
            polls: Cell::new(0),
            dumps_seen: Cell::new(crate::debug::dump_requests()),
            watches_dumps: Cell::new(false),
        }
    }

    /// The shared half, creating the poller on first use.
    pub(crate) fn shared(&self) -> io::Result<Arc<Shared>> {
        if let Some(shared) = &*self.shared.borrow() {
            return Ok(shared.clone());
        }
        let shared = Arc::new(Shared { poller: Poller::new()?, remote: SegQueue::new() });
        *self.shared.borrow_mut() = Some(shared.clone());
        scheduler().monitor().set_notifier(shared.clone());
        Ok(shared)
    }

    /// Whether `shared` is this reactor's (without cloning the `Arc`).
    fn owns(&self, shared: &Arc<Shared>) -> bool {
        self.shared.borrow().as_ref().is_some_and(|own| Arc::ptr_eq(own, shared))
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

    /// Registers `fd` with this thread's poller and returns its key.
    fn register(&self, fd: RawFd) -> io::Result<(Arc<Shared>, usize)> {
        let shared = self.shared()?;
        let mut fds = self.fds.borrow_mut();
        let index = self.free_fds.borrow_mut().pop().unwrap_or_else(|| {
            fds.push(FdSlot::default());
            fds.len() - 1
        });
        let slot = &mut fds[index];
        slot.in_use = true;
        slot.ready = [false; 2];
        let key = key(index, slot.generation);
        // SAFETY: the fd belongs to a live socket, which deletes it from this poller (see
        // `Registration::drop`) before it is closed.
        let added = unsafe { shared.poller.add_with_mode(fd, Event::all(key), self.mode) };
        if let Err(err) = added {
            slot.in_use = false;
            slot.generation = slot.generation.wrapping_add(1);
            self.free_fds.borrow_mut().push(index);
            return Err(err);
        }
        Ok((shared.clone(), key))
    }

    /// Frees the slot of a deregistered fd, waking anyone still parked on it (they retry and
    /// see the error of a closed socket).
    fn forget(&self, key: usize) {
        let (index, generation) = split(key);
        let waiters: Vec<Rc<Task>> = {
            let mut fds = self.fds.borrow_mut();
            let Some(slot) = fds.get_mut(index) else { return };
            if !slot.in_use || slot.generation != generation {
                return;
            }
            slot.in_use = false;
            slot.generation = slot.generation.wrapping_add(1);
            let [r, w] = std::mem::take(&mut slot.waiters);
            r.into_iter().chain(w).collect()
        };
        self.free_fds.borrow_mut().push(index);
        for task in waiters {
            self.parked.set(self.parked.get() - 1);
            scheduler().wake(task);
        }
    }

    /// Consumes a readiness edge that arrived while nobody waited.
    fn take_ready(&self, key: usize, dir: Direction) -> bool {
        let (index, _) = split(key);
        let mut fds = self.fds.borrow_mut();
        std::mem::take(&mut fds[index].ready[dir as usize])
    }

    fn add_waiter(&self, key: usize, dir: Direction, task: Rc<Task>) {
        let (index, _) = split(key);
        self.fds.borrow_mut()[index].waiters[dir as usize].push_back(task);
        self.parked.set(self.parked.get() + 1);
    }

    /// Takes `task` out of the waiters of `key` if it is still there (woken another way).
    fn remove_waiter(&self, key: usize, dir: Direction, task: &Task) {
        let (index, generation) = split(key);
        let removed = {
            let mut fds = self.fds.borrow_mut();
            let Some(slot) = fds.get_mut(index).filter(|s| s.generation == generation) else { return };
            let waiters = &mut slot.waiters[dir as usize];
            let pos = waiters.iter().position(|t| std::ptr::eq(&**t, task));
            pos.and_then(|pos| waiters.remove(pos))
        };
        if removed.is_some() {
            self.parked.set(self.parked.get() - 1);
        }
    }

    /// Re-arms a oneshot registration for the directions that have waiters.
    fn rearm(&self, fd: RawFd, key: usize) -> io::Result<()> {
        if self.mode != PollMode::Oneshot {
            return Ok(());
        }
        let shared = self.shared()?;
        let (index, _) = split(key);
        let (r, w) = {
            let fds = self.fds.borrow();
            (!fds[index].waiters[0].is_empty(), !fds[index].waiters[1].is_empty())
        };
        // SAFETY: the fd is registered with this poller and still open (its socket is alive).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        shared.poller.modify_with_mode(fd, Event::new(key, r, w), PollMode::Oneshot)
    }

    /// Makes a remote token for the current tasklet, which will park until another thread
    /// calls [`RemoteWaker::wake`] with it.
    pub(crate) fn remote_waker(&self) -> io::Result<RemoteWaker> {
        let shared = self.shared()?;
        let mut remotes = self.remotes.borrow_mut();
        let index = self.free_remotes.borrow_mut().pop().unwrap_or_else(|| {
            remotes.push(RemoteSlot { generation: 0, task: None, done: false });
            remotes.len() - 1
        });
        let slot = &mut remotes[index];
        slot.done = false;
        slot.task = None;
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
    pub(crate) fn remote_wait(&self) -> io::Result<(RemoteWait<'_>, RemoteWaker)> {
        let waker = self.remote_waker()?;
        let (index, _) = split(waker.token);
        Ok((RemoteWait { reactor: self, index }, waker))
    }

    /// Polls for I/O events, waiting at most `timeout` (`None`: until something happens), and
    /// wakes the tasklets they concern. Returns whether it could poll.
    pub(crate) fn poll(&self, timeout: Option<Duration>) -> bool {
        let shared = match self.shared() {
            Ok(shared) => shared,
            Err(err) => {
                log::warn!("tasklet: cannot create a poller: {err}");
                return false;
            }
        };
        self.last_poll.set(Some(Instant::now()));
        self.polls.set(self.polls.get() + 1);
        if !self.watches_dumps.get() {
            if let Some(fd) = crate::debug::dump_eventfd() {
                // SAFETY: the dump eventfd is never closed.
                match unsafe { shared.poller.add_with_mode(fd, Event::readable(DUMP_KEY), PollMode::Edge) } {
                    Ok(()) => self.watches_dumps.set(true),
                    Err(err) => log::warn!("tasklet: cannot watch for dump requests: {err}"),
                }
            }
        }
        let mut events = self.events.borrow_mut();
        events.clear();
        if let Err(err) = shared.poller.wait(&mut events, timeout) {
            if err.kind() != io::ErrorKind::Interrupted {
                log::warn!("tasklet: polling failed: {err}");
                return false;
            }
        }
        // Before waking anyone: the dump shows what the tasklets waited on when it was asked for.
        crate::debug::dump_if_requested(&self.dumps_seen);
        scheduler().monitor().polled(self.polls.get());
        let mut fds = self.fds.borrow_mut();
        for event in events.iter() {
            if event.key == DUMP_KEY {
                continue; // the counter says whether to dump, below
            }
            let (index, generation) = split(event.key);
            let Some(slot) = fds.get_mut(index) else { continue };
            if !slot.in_use || slot.generation != generation {
                continue; // stale: the fd was deregistered since
            }
            for (dir, ready) in [(0, event.readable), (1, event.writable)] {
                if !ready {
                    continue;
                }
                if slot.waiters[dir].is_empty() {
                    slot.ready[dir] = true;
                }
                // Waking only touches the scheduler's run queue, never the fd table.
                while let Some(task) = slot.waiters[dir].pop_front() {
                    self.parked.set(self.parked.get() - 1);
                    scheduler().wake(task);
                }
            }
        }
        drop(fds);
        drop(events);
        while let Some(message) = shared.remote.pop() {
            match message {
                Remote::Wake(token) => self.wake_remote(token),
                Remote::Forget(key) => self.forget(key),
            }
        }
        true
    }

    fn wake_remote(&self, token: usize) {
        let (index, generation) = split(token);
        let task = {
            let mut remotes = self.remotes.borrow_mut();
            let Some(slot) = remotes.get_mut(index).filter(|s| s.generation == generation) else { return };
            slot.done = true;
            slot.task.take()
        };
        if let Some(task) = task {
            self.parked.set(self.parked.get() - 1);
            scheduler().wake(task);
        }
    }

    /// Polls without blocking if tasklets wait on I/O and the last poll is old enough.
    pub(crate) fn poll_while_busy(&self) {
        crate::debug::dump_if_requested(&self.dumps_seen);
        scheduler().monitor().answer_if_requested();
        if self.parked.get() == 0 {
            return;
        }
        let now = Instant::now();
        if self.last_poll.get().is_some_and(|last| now.duration_since(last) < BUSY_POLL_INTERVAL) {
            return;
        }
        self.poll(Some(Duration::ZERO));
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
        self.reactor.remotes.borrow()[self.index].done
    }

    /// Parks the current tasklet as `blocked_on` until the waker is woken or something else
    /// makes it runnable (its timer, a kill: then [`Wake::Never`] as from any park); returns
    /// at once if the waker was woken already. The wait stays open: a wake that comes later
    /// still counts, until the guard is dropped.
    pub(crate) fn park(&self, blocked_on: BlockedOn) -> Wake {
        let sched = scheduler();
        {
            let mut remotes = self.reactor.remotes.borrow_mut();
            let slot = &mut remotes[self.index];
            if slot.done {
                return Wake::Woken;
            }
            if slot.task.is_none() {
                slot.task = Some(sched.current_rc());
                self.reactor.parked.set(self.reactor.parked.get() + 1);
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
            let slot = &mut remotes[self.index];
            slot.generation = slot.generation.wrapping_add(1);
            slot.done = false;
            slot.task.take()
        };
        if task.is_some() {
            self.reactor.parked.set(self.reactor.parked.get() - 1);
        }
        self.reactor.free_remotes.borrow_mut().push(self.index);
    }
}

/// A `Send` handle that wakes one tasklet of another thread (see [`Reactor::remote_waker`]).
#[derive(Clone)]
pub(crate) struct RemoteWaker {
    shared: Arc<Shared>,
    token: usize,
}

impl RemoteWaker {
    /// Wakes the tasklet (from any thread). Waking a tasklet that stopped waiting is harmless.
    /// On the tasklet's own thread the wake is made at once, without the queue and the poller.
    pub(crate) fn wake(&self) {
        if let Some(sched) = crate::scheduler::existing_scheduler() {
            if sched.reactor().owns(&self.shared) {
                sched.reactor().wake_remote(self.token);
                return;
            }
        }
        self.shared.remote.push(Remote::Wake(self.token));
        if let Err(err) = self.shared.poller.notify() {
            log::warn!("tasklet: cannot notify a poller: {err}");
        }
    }
}

/// An fd's registration with one thread's poller.
struct Registration {
    shared: Arc<Shared>,
    key: usize,
}

/// The registrations of one fd with the pollers of the threads that waited on it (usually
/// one), and the parking on them. Does not own the fd: its owner calls [`release_all`]
/// before closing it.
///
/// [`release_all`]: Registrations::release_all
#[derive(Default)]
pub(crate) struct Registrations {
    list: Mutex<Vec<Registration>>,
}

impl Registrations {
    /// Parks until `fd` is ready in `dir` (or may be: wake-ups can be spurious), or `deadline`
    /// passes (`WouldBlock`). Registers the fd with this thread's poller on first use here.
    pub(crate) fn wait(&self, fd: RawFd, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        let sched = scheduler();
        let reactor = sched.reactor();
        let key = self.registered(fd, reactor)?;
        if reactor.take_ready(key, dir) {
            return Ok(());
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(timed_out());
        }
        let me = sched.current_rc();
        reactor.add_waiter(key, dir, me.clone());
        let waiting = IoWait { reactor, key, dir, task: &me };
        reactor.rearm(fd, key)?;
        me.set_state(State::Blocked(BlockedOn::Io(fd, dir)));
        let alarm = deadline.map(|d| Alarm::arm(&me, d));
        let wake = sched.park();
        let timed_out_now = alarm.as_ref().is_some_and(Alarm::fired);
        drop(alarm);
        drop(waiting);
        if timed_out_now {
            return Err(timed_out());
        }
        if wake == Wake::Never {
            return Err(killed());
        }
        Ok(())
    }

    /// The key of this thread's registration of `fd`, made on first use here.
    fn registered(&self, fd: RawFd, reactor: &Reactor) -> io::Result<usize> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reg) = list.iter().find(|reg| reactor.owns(&reg.shared)) {
            return Ok(reg.key);
        }
        let (shared, key) = reactor.register(fd)?;
        list.push(Registration { shared, key });
        Ok(key)
    }

    /// Deletes `fd` from every poller it was added to. Call before closing it.
    pub(crate) fn release_all(&mut self, fd: BorrowedFd<'_>) {
        let list = std::mem::take(self.list.get_mut().unwrap_or_else(|e| e.into_inner()));
        for registration in list {
            registration.release(fd);
        }
    }
}

/// A non-blocking socket whose blocking-style operations park the calling tasklet.
///
/// Owns the socket: on drop the fd is deleted from every poller it was added to, then closed.
/// The fd is always non-blocking at the OS level; what the *user* asked for (non-blocking mode,
/// timeouts) is the caller's to pass to [`Source::io`] (see `net::NetSocket`).
pub(crate) struct Source {
    socket: socket2::Socket,
    registrations: Registrations,
}

impl Source {
    /// Wraps a socket, making it non-blocking at the OS level.
    pub(crate) fn new(socket: socket2::Socket) -> io::Result<Source> {
        socket.set_nonblocking(true)?;
        Ok(Source { socket, registrations: Registrations::default() })
    }

    pub(crate) fn socket(&self) -> &socket2::Socket {
        &self.socket
    }

    /// Gives the socket up (for `IntoRawFd` and conversions into std types): deleted from the
    /// pollers, and blocking again at the OS level unless `nonblocking`.
    pub(crate) fn into_socket(self, nonblocking: bool) -> io::Result<socket2::Socket> {
        let mut this = std::mem::ManuallyDrop::new(self);
        let Source { socket, registrations } = &mut *this;
        registrations.release_all(socket.as_fd());
        // SAFETY: `this` is never used or dropped again; each field is moved out exactly once.
        let (socket, registrations) =
            unsafe { (std::ptr::read(&this.socket), std::ptr::read(&this.registrations)) };
        drop(registrations);
        socket.set_nonblocking(nonblocking)?;
        Ok(socket)
    }

    /// Runs `op` until it does not fail with `WouldBlock`, parking the current tasklet until
    /// the socket is ready in `dir` between attempts. With `nonblocking`, `WouldBlock` is
    /// returned as is. With a `timeout`, an operation that stays blocked that long fails with
    /// `WouldBlock` (what std returns when `SO_RCVTIMEO`/`SO_SNDTIMEO` expire).
    pub(crate) fn io<R>(
        &self,
        dir: Direction,
        nonblocking: bool,
        timeout: Option<Duration>,
        mut op: impl FnMut(&socket2::Socket) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut deadline = None;
        loop {
            match op(&self.socket) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock && !nonblocking => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
            if deadline.is_none() {
                deadline = timeout.map(|t| Instant::now().checked_add(t));
            }
            self.wait(dir, deadline.flatten())?;
        }
    }

    /// Parks until the socket is ready in `dir` (see [`Registrations::wait`]).
    pub(crate) fn wait(&self, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        self.registrations.wait(self.socket.as_raw_fd(), dir, deadline)
    }
}

impl Registration {
    /// Deletes the fd from the poller and frees its slot (directly on the owning thread, by a
    /// message otherwise).
    fn release(self, fd: BorrowedFd<'_>) {
        if let Err(err) = self.shared.poller.delete(fd) {
            log::debug!("tasklet: deleting an fd from its poller failed: {err}");
        }
        let local = crate::scheduler::existing_scheduler().is_some_and(|s| s.reactor().owns(&self.shared));
        if local {
            scheduler().reactor().forget(self.key);
        } else {
            self.shared.remote.push(Remote::Forget(self.key));
            let _ = self.shared.poller.notify();
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let Source { socket, registrations } = self;
        registrations.release_all(socket.as_fd());
        // The socket itself closes after this, when the field drops.
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("fd", &self.socket.as_raw_fd()).finish_non_exhaustive()
    }
}

/// Takes a parked tasklet out of its fd's waiters when the wait ends another way.
struct IoWait<'a> {
    reactor: &'a Reactor,
    key: usize,
    dir: Direction,
    task: &'a Task,
}

impl Drop for IoWait<'_> {
    fn drop(&mut self) {
        self.reactor.remove_waiter(self.key, self.dir, self.task);
    }
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
