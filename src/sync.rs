//! Channels between threads: [`channel`] makes a multi-producer, multi-consumer channel whose
//! ends are `Send` and `Sync`, rendezvous at capacity 0 and buffered above. In a tasklet a
//! waiting operation parks the tasklet (the other tasklets of its thread run); on a plain thread
//! it blocks the thread. So tasklets of different scheduler threads, and plain threads, talk
//! through the same channel.
//!
//! # Design
//!
//! One `Mutex` guards the channel's state: the buffer (at most `capacity` values), the queue of
//! waiting senders and the queue of waiting receivers, and whether every sender or every
//! receiver is gone. Every decision is made under that lock; the lock is never held while a
//! waiter is woken, while a value is dropped, or while anyone parks.
//!
//! A waiter is a *node* on the waiting frame's own stack (as in `channel`, and Go's `sudog`):
//! a sender's node holds the value it offers, a receiver's node is where a value is put. The
//! queue entry points at the node and carries the waiter's *waker*: for a tasklet, a
//! `RemoteWaker` of its scheduler's reactor (a slot in the reactor's remote table, woken by a
//! token pushed on the reactor's remote queue and `Poller::notify()` if that thread sleeps in
//! its poller, as the `unblock` pool does); for a plain thread, its `std::thread::Thread` (futex `park`/`unpark`). Nothing is
//! allocated per wait once the queues and the reactor's slot table have grown: a parked
//! cross-thread receiver costs its stack, a 24-byte queue entry and a 16-byte slot in its
//! reactor's table (`docs/benchmarks.md` measures it against a parked local receiver).
//!
//! Invariants (under the lock):
//! - A node is in its queue exactly while its status is `Waiting`. Whoever takes it out sets
//!   the status: a partner `Done` (for a receiver, after putting the value in the node; for a
//!   sender, after taking it), the last handle of the other side `Closed`, the waiter itself
//!   (timeout, kill) nothing: it simply leaves.
//! - Receivers wait only while the buffer is empty and no sender waits; senders wait only
//!   while no receiver waits and the buffer is full (always, at capacity 0). So a value goes
//!   to the longest-waiting receiver, else to the buffer, else its sender waits; a receiver
//!   takes the buffer's head (refilled from the longest-waiting sender), else a waiting
//!   sender's value. Each sender's values therefore leave the channel in the order it sent
//!   them (FIFO per sender), and every value leaves exactly once.
//!
//! # A waiter's states, and the race between threads
//!
//! ```text
//!              lock; nothing to take or no room: enqueue node + waker; unlock; park
//!   Waiting ──────────────────────────────────────────────────────────────────────┐
//!     │  partner on thread A, under the lock:        the waiter on thread B wakes  │
//!     │  dequeue, move the value, status = Done;     (its waker, its timer, a kill)│
//!     │  unlock; then wake the waiter                and reads its status (then    │
//!     ▼                                                locks if still Waiting):    │
//!   Done / Closed ─── the waiter returns the outcome   status Done/Closed → done   │
//!                                                      status Waiting → it leaves  │
//!                                                      the queue itself: timeout /  │
//!                                                      killed, nothing moved ◄──────┘
//! ```
//!
//! Thread A (a partner) and thread B (the waiter's timer firing, or a tasklet of B killing it)
//! can only meet under the lock, and whichever takes the node out of the queue first decides:
//! if the partner did, the exchange happened and the waiter reports it, even when its
//! deadline has passed meanwhile; if the waiter did, nobody can reach its node any more. The
//! partner copies the waker out of the entry and stores the node's status last (`Release`:
//! the value it moved is visible to a waiter that sees the status) and never touches the node
//! afterwards, so the waiter's frame may end at any moment after that store: a woken waiter
//! whose status is `Done` or `Closed` returns without taking the lock (one lock and unlock
//! fewer per wait, as crossbeam's zero-capacity `Packet`). A wake that
//! arrives after the wait ended is dropped: the reactor slot's generation no longer matches
//! (a thread's stray `unpark` only makes its next `park` return early, which std allows).
//!
//! **Kills.** A tasklet parks with kills deferred (`Task::deferring_kills`): a kill makes the
//! park return instead of unwinding in the middle of the exchange. If the node is `Done`, the
//! operation completes (a receiver returns its value to its caller) and the kill stays
//! pending: it is delivered at the tasklet's next switch point, or at the start of its next
//! blocking `sync` operation. Otherwise the waiter leaves the queue and unwinds at once. So a
//! killed receiver never swallows a value: either it did not get one, or its caller did.
//!
//! # Waking late at capacity 0
//!
//! A send at capacity 0 that hands its value to a receiver parked on another thread does not
//! wake it at once when the sender is a tasklet other than main: the wake is kept on the
//! sending thread (`LATE`) and sent when the sending tasklet stops running (parks on anything,
//! yields, finishes: the scheduler calls `send_late_wakes` on every switch) or completes its
//! next `sync` operation, whichever comes first. The value itself is handed over at once (the
//! sender never waits for the receiver's thread: no second hop). The first wake kept sits in a
//! slot of its own (`Late::first`; a queue behind a `RefCell` cost ~50 instructions a push),
//! and since it is for another thread by construction it goes straight to that thread's
//! queue when sent. The flag every switch checks (`LATE_PENDING`) is a thread-local of its own
//! without a destructor: the scheduler's teardown still switches while the thread's other
//! thread-locals are being destroyed.
//!
//! Why: a rendezvous sender usually waits next (for the answer), and waking the receiver's
//! thread before that wait is worse than useless. On a busy machine the kernel often runs the
//! woken thread on the waker's CPU at once (wake-up preemption); the receiver answers, finds
//! the sender not yet waiting, and must itself park, sleep and be woken back: measured with
//! `multicore --child roundtrip tasklets-sync0` on the shared 2-vCPU VM, where both threads
//! ran on one CPU (per round trip, from `perf stat`): 2.0 `eventfd` writes, 2.0 `epoll_wait`s
//! and 3.4 context switches woken at once, 1.0 write, 2.0 `epoll_wait`s (one returns at once)
//! and 2.0 context switches woken late; CPU 5.0 → 3.4 µs without `perf`
//! (`docs/benchmarks.md`, *Cross-thread round trip*). At capacity > 0 waking at once is
//! better (under `perf`: 1.16 writes and 3.6 µs against 1.0 write, 2.0 `epoll_wait`s and
//! 4.1 µs late): the answer goes into the buffer while the sender still runs, so that the
//! sender never waits.
//!
//! The cost: a tasklet that, right after such a send, blocks its whole thread without
//! switching (a std blocking call with the shims not installed: itself a stall of every
//! tasklet of the thread) delays the receiver until it switches or uses a `sync` channel. The
//! main tasklet never wakes late, since main code commonly blocks its thread next (joins).
//!
//! # Rejected alternatives
//!
//! - Putting a value back when its receiver is killed after the hand-off (the value goes to
//!   another receiver or to the buffer's head): a later value of the same sender may already
//!   have been received meanwhile, which breaks FIFO per sender.
//! - Waking a receiver without handing it the value (it takes one when it runs, and passes the
//!   wake on if it leaves without): safe against kills, but at capacity 0 a sender would wait
//!   for the receiver to run and wake it back, two cross-thread wake-ups per message instead
//!   of one (Go hands over directly too).
//! - Waking late at every capacity (measured above: worse at capacity > 0), or late wakes of
//!   senders by receivers (a receiver usually works on the value next, holding its sender up).
//! - A short spin before the thread sleeps in its poller (not tried): in the measurements
//!   above every switch was on one CPU, so a spinning thread would hold the CPU its partner
//!   needs to answer; on separate CPUs the partner is asleep itself and needs a wake-up of
//!   several µs before it can answer, longer than a spin that costs less than a sleep.
//! - A lock-free queue of values (crossbeam's array channel): it needs a separate waiter list
//!   and a protocol between the two anyway; what a message costs across threads is the
//!   wake-up (a system call), not the uncontended lock.
//! - Parking tasklets by polling the channel from the scheduler: the issue's rule is "never by
//!   polling", and it would cost every idle scheduler a check per channel.
//! - Using the reactor for plain threads too: a thread without tasklets would create a poller
//!   (two fds) and pay `epoll_wait` per wait, where `park`/`unpark` is one futex each.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::channel::next_channel_id;
pub use crate::channel::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::reactor::{RemoteWait, RemoteWaker};
use crate::scheduler::{existing_scheduler, BlockedOn, Scheduler, Wake};
use crate::timer::Alarm;

/// Creates a channel between threads holding up to `capacity` values: 0 makes a rendezvous
/// channel (a send waits for a receiver to take the value, as Stackless channels do), more a
/// buffered one (a send waits only while the buffer is full). `usize::MAX` is unbounded in
/// practice: the buffer grows as needed and never waits.
///
/// Both ends can be cloned and sent to other threads; every clone is the same channel, and
/// any number of senders and receivers may use it at once. Each value is received once, by
/// one receiver; the values of one sender are received in the order it sent them.
///
/// - **In a tasklet**, an operation that has to wait parks the tasklet, and the other tasklets
///   of its thread run meanwhile. The wake-up from another thread goes through the thread's
///   readiness poller (never by polling), so a scheduler thread sleeps while it has nothing to
///   do. [`run`](crate::run) does not return while a tasklet of the thread waits on a `sync`
///   channel: another thread may still complete the operation.
/// - **On a plain thread** (one that never used tasklets), it blocks the thread.
/// - **Closing.** When every [`Sender`] is dropped, receivers get what is left, then
///   `Closed` errors (and iteration ends). When every [`Receiver`] is dropped, sends fail with
///   `Closed`, giving the value back ([`SendError::into_inner`]), and the values still
///   buffered are dropped.
/// - **Timeouts and kills.** A timed-out or killed waiter never takes a value with it: if a
///   partner handed it a value before the timeout or the kill took effect, the operation
///   completes (a killed tasklet then unwinds at its next blocking operation), otherwise the
///   value stays with its sender.
///
/// Between tasklets of *one* thread, prefer [`Channel`](crate::Channel): it needs no lock,
/// switches to the partner directly, and keeps Stackless's exact ordering; a `sync` channel
/// between two tasklets of one thread makes the partner runnable (at the end of the run
/// queue) without switching to it.
///
/// # Examples
///
/// A tasklet on another scheduler thread answers the main thread:
///
/// ```
/// use tasklets::sync;
///
/// let (requests, incoming) = sync::channel::<u64>(0);
/// let (replies, answers) = sync::channel(0);
/// let server = std::thread::spawn(move || {
///     tasklets::spawn(move || {
///         for n in &incoming {                 // parks this tasklet, not the thread
///             replies.send(n * n).unwrap();
///         }
///     });
///     tasklets::run(); // returns once `incoming` is closed and the tasklet finished
/// });
/// for n in 1..=3 {
///     requests.send(n).unwrap();               // a plain thread blocks
///     assert_eq!(answers.receive(), Ok(n * n));
/// }
/// drop(requests); // closes the channel: the server's loop ends
/// server.join().unwrap();
/// ```
pub fn channel<T: Send>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        id: next_channel_id(),
        capacity,
        senders: AtomicUsize::new(1),
        receivers: AtomicUsize::new(1),
        state: Mutex::new(State {
            buffer: VecDeque::new(),
            waiting: [VecDeque::new(), VecDeque::new()],
            senders_gone: false,
            receivers_gone: false,
        }),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// The sending end of a [`channel`]. `Clone`, `Send` and `Sync`; the channel closes when the
/// last `Sender` is dropped.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving end of a [`channel`]. `Clone`, `Send` and `Sync`; iterating over `&Receiver`
/// receives until the channel is closed and drained.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

struct Chan<T> {
    id: u64,
    capacity: usize,
    /// Live [`Sender`] and [`Receiver`] handles.
    senders: AtomicUsize,
    receivers: AtomicUsize,
    state: Mutex<State<T>>,
}

/// Which queue a waiter is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Send = 0,
    Receive = 1,
}

/// What the lock guards.
struct State<T> {
    buffer: VecDeque<T>,
    /// Waiting senders and receivers, indexed by [`Side`], in arrival order.
    waiting: [VecDeque<Entry<T>>; 2],
    /// Every [`Sender`] is gone: nothing more will be sent.
    senders_gone: bool,
    /// Every [`Receiver`] is gone: sends fail.
    receivers_gone: bool,
}

/// A waiter in a queue: its node and how to wake it.
struct Entry<T> {
    node: NonNull<Node<T>>,
    waker: Waker,
}

// SAFETY: an entry is a pointer to a node on a waiting frame (see `Entry::node` for why it is
// alive) and a waker, which is `Send`. The node is only written under the channel's lock, by
// whichever thread holds it (its owner reads its atomic status without the lock, see `Node`),
// and holds at most a `T`, which is `Send`.
unsafe impl<T: Send> Send for Entry<T> {}

/// What a waiter waits in, on its own stack. Both fields are only written under the channel's
/// lock while the node can be reached from a queue (the `State` borrow each accessor asks for
/// is the proof), and accessed by its owner alone once it cannot. The status is atomic so that
/// a woken owner can see that its wait ended without taking the lock: whoever ends the wait
/// writes the value first and the status last (`Release`), and never touches the node again.
struct Node<T> {
    value: UnsafeCell<Option<T>>,
    status: AtomicU8,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Status {
    /// In its queue.
    Waiting,
    /// A partner completed the exchange.
    Done,
    /// The other side is gone (every sender, or every receiver).
    Closed,
}

/// How a waiter is woken.
enum Waker {
    /// A tasklet, through its scheduler's reactor.
    Tasklet(RemoteWaker),
    /// A plain thread.
    Thread(Thread),
}

impl Waker {
    fn wake(self) {
        match self {
            Waker::Tasklet(waker) => waker.wake(),
            Waker::Thread(thread) => thread.unpark(),
        }
    }
}

/// Wakes of tasklets on other threads that the tasklet running on this thread made late
/// (see "Waking late at capacity 0"), in the order it made them: the first in a slot of its
/// own (almost always the only one: a send then a wait), the others in a queue.
struct Late {
    first: Cell<Option<RemoteWaker>>,
    more: RefCell<VecDeque<RemoteWaker>>,
}

thread_local! {
    static LATE: Late = const { Late { first: Cell::new(None), more: RefCell::new(VecDeque::new()) } };
    /// Whether `LATE` holds any: the check every switch makes. Apart from `LATE` because it
    /// needs no destructor, so that it can be read while the thread's destructors run (the
    /// scheduler's teardown switches).
    static LATE_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Sends the wakes the running tasklet made late. The scheduler calls it whenever a tasklet
/// stops running (parks, yields, finishes), and every operation on a `sync` channel first.
#[inline]
pub(crate) fn send_late_wakes() {
    if LATE_PENDING.with(Cell::get) {
        send_late_wakes_now();
    }
}

#[cold]
#[inline(never)]
fn send_late_wakes_now() {
    LATE_PENDING.with(|pending| pending.set(false));
    // Made late only for another thread's tasklet: straight to that thread's queue. (Once
    // `LATE` is destroyed, at thread exit, its wakers were dropped with it.)
    if let Some(waker) = LATE.try_with(|late| late.first.take()).ok().flatten() {
        waker.wake_other_thread();
    }
    // One at a time: a wake never makes another late, but keep no borrow across it anyway.
    while let Some(waker) = LATE.try_with(|late| late.more.borrow_mut().pop_front()).ok().flatten() {
        waker.wake_other_thread();
    }
}

/// Keeps `waker` (of a tasklet on another thread) until the running tasklet stops running.
fn keep_late(waker: RemoteWaker) {
    let more = LATE_PENDING.with(|pending| pending.replace(true));
    LATE.with(|late| {
        if more {
            late.more.borrow_mut().push_back(waker);
        } else {
            late.first.set(Some(waker));
        }
    });
}

/// Wakes the receiver a send handed its value to: at capacity 0, when the receiver is a
/// tasklet of another thread and the sender a tasklet other than main, late (see "Waking late
/// at capacity 0"); otherwise now.
fn wake_receiver(waker: Option<Waker>, capacity: usize) {
    match waker {
        Some(Waker::Tasklet(waker))
            if capacity == 0
                && existing_scheduler()
                    .is_some_and(|sched| !sched.current().is_main() && !waker.is_for(sched.reactor())) =>
        {
            keep_late(waker)
        }
        waker => wake_all(waker),
    }
}

/// Wakes the waiters a locked operation took out of the queues; called after unlocking.
fn wake_all(wakers: impl IntoIterator<Item = Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

impl<T> Entry<T> {
    /// The waiter's node.
    fn node(&self) -> &Node<T> {
        // SAFETY: the node lives on the frame of a waiter that is parked (or about to park,
        // or just woken) in `Chan::wait`; that frame does not end before the node has left
        // the queue, under the lock: taken out by a partner, by `close`, or by the waiter
        // itself on timeout or kill (before it unwinds). Whoever holds an entry got it from a
        // queue under the lock it still holds, so the frame is alive.
        unsafe { self.node.as_ref() }
    }
}

impl Status {
    fn from_u8(status: u8) -> Status {
        match status {
            0 => Status::Waiting,
            1 => Status::Done,
            _ => Status::Closed,
        }
    }
}

impl<T> Node<T> {
    fn new(value: Option<T>) -> Node<T> {
        Node { value: UnsafeCell::new(value), status: AtomicU8::new(Status::Waiting as u8) }
    }

    /// The node's status; `_locked` shows that the caller holds the channel's lock.
    fn status(&self, _locked: &State<T>) -> Status {
        Status::from_u8(self.status.load(Ordering::Relaxed))
    }

    /// For the node's owner, without the lock: how its wait ended, if it did (then the node is
    /// out of its queue for good and the value, if any, is in it).
    fn ended(&self) -> Option<Status> {
        // Pairs with the `Release` store in `complete`: the value written before it is visible.
        match Status::from_u8(self.status.load(Ordering::Acquire)) {
            Status::Waiting => None,
            ended => Some(ended),
        }
    }

    /// Ends the node's wait with `status`, putting `value` in it (a receiver's) or taking its
    /// value out (a sender's, when `Done`). Only called by whoever took it out of its queue.
    /// Once the status is stored the owner may return and end the node's frame: nothing
    /// touches the node after that store.
    fn complete(&self, _locked: &mut State<T>, status: Status, value: Option<T>) -> Option<T> {
        // SAFETY: see `Node`: the caller holds the lock and took the node out of its queue; its
        // owner reads the value only after seeing the status stored below.
        let kept = unsafe {
            match value {
                Some(value) => (*self.value.get()).replace(value),
                None if status == Status::Done => (*self.value.get()).take(),
                None => None,
            }
        };
        self.status.store(status as u8, Ordering::Release);
        kept
    }

    /// The value, once the node can no longer be reached from a queue.
    fn into_value(self) -> Option<T> {
        self.value.into_inner()
    }
}

impl<T> State<T> {
    /// Gives `value` to the longest-waiting receiver, or puts it in the buffer if there is
    /// room; gives it back otherwise.
    fn offer(&mut self, capacity: usize, value: T) -> Result<Option<Waker>, T> {
        if let Some(receiver) = self.waiting[Side::Receive as usize].pop_front() {
            receiver.node().complete(self, Status::Done, Some(value));
            return Ok(Some(receiver.waker));
        }
        if self.buffer.len() < capacity {
            self.buffer.push_back(value);
            return Ok(None);
        }
        Err(value)
    }

    /// Takes the next value: the buffer's head (the longest-waiting sender's value moving into
    /// the buffer), else the longest-waiting sender's value. Returns the sender to wake.
    fn take(&mut self) -> Option<(T, Option<Waker>)> {
        let sender = self.waiting[Side::Send as usize].pop_front();
        let sent = sender.as_ref().map(|sender| {
            sender.node().complete(self, Status::Done, None).expect("a waiting sender holds its value")
        });
        let value = match self.buffer.pop_front() {
            Some(head) => {
                self.buffer.extend(sent);
                head
            }
            None => sent?,
        };
        Some((value, sender.map(|sender| sender.waker)))
    }

    /// Takes a waiter that leaves by itself (timeout, kill) out of its queue.
    fn remove(&mut self, side: Side, node: &Node<T>) {
        let queue = &mut self.waiting[side as usize];
        let pos = queue.iter().position(|entry| std::ptr::eq(entry.node.as_ptr(), node));
        debug_assert!(pos.is_some(), "a waiting node is in its queue");
        if let Some(pos) = pos {
            queue.remove(pos);
        }
    }

    /// Ends the waits of everyone waiting on `side` with `Closed`; returns their wakers.
    fn close_side(&mut self, side: Side) -> Vec<Waker> {
        let queue = std::mem::take(&mut self.waiting[side as usize]);
        queue
            .into_iter()
            .map(|entry| {
                let kept = entry.node().complete(self, Status::Closed, None);
                debug_assert!(kept.is_none());
                entry.waker
            })
            .collect()
    }
}

/// How a wait ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    /// The exchange happened.
    Done,
    /// The other side is gone.
    Closed,
    /// The deadline passed first.
    Timeout,
    /// The tasklet was killed while already unwinding (or inside `with_kills_deferred`), so
    /// it could not unwind from here: the operation fails (crate-wide, a `Deadlock` error).
    Killed,
}

/// The channel's state, locked.
type Locked<'a, T> = MutexGuard<'a, State<T>>;

impl<T> Chan<T> {
    fn lock(&self) -> Locked<'_, T> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The part of a send that never waits: `Ok` when the value went to a waiting receiver or
    /// into the buffer; otherwise the value back, with the state still locked, or without it
    /// when every receiver is gone.
    fn send_now(&self, value: T) -> Result<(), (Option<Locked<'_, T>>, T)> {
        let mut state = self.lock();
        if state.receivers_gone {
            return Err((None, value));
        }
        match state.offer(self.capacity, value) {
            Ok(waker) => {
                drop(state);
                send_late_wakes(); // the earlier ones; a wait sends them when it parks
                wake_receiver(waker, self.capacity);
                Ok(())
            }
            Err(value) => Err((Some(state), value)),
        }
    }

    fn send(&self, value: T, deadline: Option<Instant>) -> Result<(), (Outcome, T)> {
        if pending_kill_fails() {
            return Err((Outcome::Killed, value));
        }
        let (state, value) = match self.send_now(value) {
            Ok(()) => return Ok(()),
            Err((None, value)) => return Err((Outcome::Closed, value)),
            Err((Some(state), value)) => (state, value),
        };
        if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
            return Err((Outcome::Timeout, value));
        }
        let node = Node::new(Some(value));
        match self.wait(state, &node, Side::Send, deadline) {
            Outcome::Done => Ok(()),
            failure => Err((failure, node.into_value().expect("an unsent value stays with its sender"))),
        }
    }

    fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let sent = self.send_now(value).map_err(|(state, value)| match state {
            Some(_) => TrySendError::Full(value),
            None => TrySendError::Closed(value),
        });
        if sent.is_err() {
            send_late_wakes(); // (unlocked now) as a successful operation does
        }
        sent
    }

    /// The part of a receive that never waits: the next value if there is one; otherwise the
    /// state still locked, or nothing when every sender is gone.
    fn receive_now(&self) -> Result<T, Option<Locked<'_, T>>> {
        let mut state = self.lock();
        match state.take() {
            Some((value, waker)) => {
                drop(state);
                send_late_wakes(); // a wait sends them when it parks
                wake_all(waker);
                Ok(value)
            }
            None if state.senders_gone => Err(None),
            None => Err(Some(state)),
        }
    }

    fn receive(&self, deadline: Option<Instant>) -> Result<T, Outcome> {
        if pending_kill_fails() {
            return Err(Outcome::Killed);
        }
        let state = match self.receive_now() {
            Ok(value) => return Ok(value),
            Err(None) => return Err(Outcome::Closed),
            Err(Some(state)) => state,
        };
        if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
            return Err(Outcome::Timeout);
        }
        let node = Node::new(None);
        match self.wait(state, &node, Side::Receive, deadline) {
            Outcome::Done => Ok(node.into_value().expect("a completed receive holds its value")),
            failure => Err(failure),
        }
    }

    fn try_receive(&self) -> Result<T, TryRecvError> {
        let received = self.receive_now().map_err(|state| match state {
            Some(_) => TryRecvError::Empty,
            None => TryRecvError::Closed,
        });
        if received.is_err() {
            send_late_wakes(); // (unlocked now) as a successful operation does
        }
        received
    }

    /// Enqueues `node` on `side` (the caller found nothing to do under `state`) and waits until
    /// its wait ends: as a parked tasklet if the thread has a scheduler, else by blocking the
    /// thread.
    fn wait(
        &self,
        mut state: MutexGuard<'_, State<T>>,
        node: &Node<T>,
        side: Side,
        deadline: Option<Instant>,
    ) -> Outcome {
        if let Some(sched) = existing_scheduler() {
            match sched.reactor().remote_wait() {
                Ok((wait, waker)) => {
                    state.waiting[side as usize]
                        .push_back(Entry { node: NonNull::from(node), waker: Waker::Tasklet(waker) });
                    drop(state);
                    return self.wait_tasklet(sched, wait, node, side, deadline);
                }
                Err(err) => {
                    log::warn!("tasklets::sync: cannot park cooperatively ({err}); blocking the thread")
                }
            }
        }
        state.waiting[side as usize]
            .push_back(Entry { node: NonNull::from(node), waker: Waker::Thread(thread::current()) });
        drop(state);
        self.wait_thread(node, side, deadline)
    }

    /// `wait` for a tasklet: parks (kills deferred, see "Kills") until its node's wait ends,
    /// its timer fires or it is killed.
    fn wait_tasklet(
        &self,
        sched: &Scheduler,
        wait: RemoteWait<'_>,
        node: &Node<T>,
        side: Side,
        deadline: Option<Instant>,
    ) -> Outcome {
        let blocked_on = match side {
            Side::Send => BlockedOn::Send(self.id),
            Side::Receive => BlockedOn::Receive(self.id),
        };
        // A new reference to the tasklet only for its timer (the common wait has none).
        let me = deadline.map(|deadline| (sched.current_rc(), deadline));
        let alarm = me.as_ref().map(|(me, deadline)| Alarm::arm(me, *deadline));
        let outcome = loop {
            let wake = sched.current().deferring_kills(|| wait.park(blocked_on));
            match node.ended() {
                Some(Status::Done) => break Outcome::Done,
                Some(_) => break Outcome::Closed,
                None => {}
            }
            let timed_out = alarm.as_ref().is_some_and(Alarm::fired);
            let mut state = self.lock();
            match node.status(&state) {
                Status::Done => break Outcome::Done,
                Status::Closed => break Outcome::Closed,
                Status::Waiting if wake == Wake::Never || timed_out => {
                    state.remove(side, node);
                    break if wake == Wake::Never { Outcome::Killed } else { Outcome::Timeout };
                }
                Status::Waiting => {} // woken for nothing: wait on
            }
        };
        drop(alarm);
        drop(wait);
        if outcome == Outcome::Killed {
            // Unwinds now, unless the tasklet is already unwinding or defers kills.
            let _ = sched.deliver_pending_kill();
        }
        outcome
    }

    /// `wait` for a plain thread.
    fn wait_thread(&self, node: &Node<T>, side: Side, deadline: Option<Instant>) -> Outcome {
        loop {
            match node.ended() {
                Some(Status::Done) => return Outcome::Done,
                Some(_) => return Outcome::Closed,
                None => {}
            }
            {
                let mut state = self.lock();
                match node.status(&state) {
                    Status::Done => return Outcome::Done,
                    Status::Closed => return Outcome::Closed,
                    Status::Waiting => {}
                }
                if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
                    state.remove(side, node);
                    return Outcome::Timeout;
                }
            }
            match deadline {
                Some(deadline) => thread::park_timeout(deadline.saturating_duration_since(Instant::now())),
                None => thread::park(),
            }
        }
    }

    /// The last sender is gone: waiting receivers (the buffer is empty, or they would not
    /// wait) are woken with `Closed`.
    fn disconnect_senders(&self) {
        let mut state = self.lock();
        state.senders_gone = true;
        let wakers = state.close_side(Side::Receive);
        drop(state);
        wake_all(wakers);
    }

    /// The last receiver is gone: waiting senders are woken with `Closed` (keeping their
    /// values) and the buffered values are dropped.
    fn disconnect_receivers(&self) {
        let mut state = self.lock();
        state.receivers_gone = true;
        let wakers = state.close_side(Side::Send);
        let buffered = std::mem::take(&mut state.buffer);
        drop(state);
        wake_all(wakers);
        drop(buffered);
    }
}

/// Delivers a kill that a completed wait let through (see "Kills" in the module comment);
/// returns whether the operation must fail because the tasklet is already unwinding.
fn pending_kill_fails() -> bool {
    existing_scheduler().is_some_and(|sched| sched.deliver_pending_kill() == Wake::Never)
}

/// `timeout` from now; `None` (no deadline) when that cannot be represented.
fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl<T> Sender<T> {
    /// Sends `value`, waiting while the channel has no room: at capacity 0 until a receiver
    /// takes it, above until the buffer has room. A tasklet parks meanwhile; a plain thread
    /// blocks.
    ///
    /// At capacity 0, a tasklet (other than main) that hands its value to a receiver parked on
    /// another thread wakes it when it next parks, yields, finishes or completes another
    /// operation on a `sync` channel, normally at once (a sender usually waits for the answer
    /// next): see "Waking late at capacity 0" in the [module documentation](crate::sync). Do
    /// not block the thread outright after such a send.
    ///
    /// # Errors
    /// [`SendError::Closed`] when every [`Receiver`] is gone (before or while it waits);
    /// [`SendError::Deadlock`] only when a tasklet that is already unwinding (a destructor
    /// sending) is killed again while it waits. Both give the value back.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = tasklets::sync::channel(1);
    /// tx.send("buffered").unwrap(); // room in the buffer: returns at once
    /// drop(rx);
    /// assert_eq!(tx.send("lost?").unwrap_err().into_inner(), "lost?"); // no: it comes back
    /// ```
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.chan.send(value, None).map_err(|(outcome, value)| match outcome {
            Outcome::Killed => SendError::Deadlock(value),
            _ => SendError::Closed(value),
        })
    }

    /// Sends `value` if that needs no waiting: a receiver is waiting, or the buffer has room.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when it would have to wait, [`TrySendError::Closed`] when every
    /// [`Receiver`] is gone; both give the value back.
    ///
    /// # Examples
    ///
    /// ```
    /// use tasklets::sync::{self, TrySendError};
    /// let (tx, _rx) = sync::channel(1);
    /// assert_eq!(tx.try_send(1), Ok(()));
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// ```
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(value)
    }

    /// Sends `value`, waiting at most `timeout` for room (see [`send`](Sender::send)).
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] when there was no room in time, [`SendTimeoutError::Closed`]
    /// when every [`Receiver`] is gone; both give the value back. A send whose value was taken
    /// just as the timeout expired succeeds.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let (tx, _rx) = tasklets::sync::channel(0);
    /// let err = tx.send_timeout(7, Duration::from_millis(5)).unwrap_err(); // nobody receives
    /// assert!(err.is_timeout());
    /// assert_eq!(err.into_inner(), 7);
    /// ```
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.chan.send(value, deadline_after(timeout)).map_err(|(outcome, value)| match outcome {
            Outcome::Closed => SendTimeoutError::Closed(value),
            _ => SendTimeoutError::Timeout(value),
        })
    }

    /// The most values the channel buffers (0: a rendezvous channel).
    pub fn capacity(&self) -> usize {
        self.chan.capacity
    }

    /// Values in the buffer now (values that waiting senders still hold are not counted).
    pub fn len(&self) -> usize {
        self.chan.lock().buffer.len()
    }

    /// Whether the buffer is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every [`Receiver`] is gone: sends fail from now on.
    pub fn is_closed(&self) -> bool {
        self.chan.lock().receivers_gone
    }

    /// Whether `self` and `other` send on the same channel.
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }
}

impl<T> Receiver<T> {
    /// Receives a value, waiting until there is one: a tasklet parks meanwhile, a plain thread
    /// blocks.
    ///
    /// # Errors
    /// [`RecvError::Closed`] when every [`Sender`] is gone and nothing is left to receive;
    /// [`RecvError::Deadlock`] only when a tasklet that is already unwinding (a destructor
    /// receiving) is killed again while it waits.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = tasklets::sync::channel(0);
    /// let sender = std::thread::spawn(move || tx.send("across").unwrap());
    /// assert_eq!(rx.receive(), Ok("across"));
    /// sender.join().unwrap();
    /// assert_eq!(rx.receive(), Err(tasklets::sync::RecvError::Closed)); // the sender is gone
    /// ```
    pub fn receive(&self) -> Result<T, RecvError> {
        self.chan.receive(None).map_err(|outcome| match outcome {
            Outcome::Killed => RecvError::Deadlock,
            _ => RecvError::Closed,
        })
    }

    /// Receives a value if one is there: in the buffer, or offered by a waiting sender.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when it would have to wait, [`TryRecvError::Closed`] when every
    /// [`Sender`] is gone and nothing is left.
    pub fn try_receive(&self) -> Result<T, TryRecvError> {
        self.chan.try_receive()
    }

    /// Receives a value, waiting at most `timeout` (see [`receive`](Receiver::receive)).
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when no value came in time, [`RecvTimeoutError::Closed`]
    /// as for [`receive`](Receiver::receive). A value handed over just as the timeout expired is
    /// returned.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasklets::sync::{self, RecvTimeoutError};
    /// let (tx, rx) = sync::channel::<i32>(0);
    /// // In a tasklet the wait parks it; the other tasklets of the thread run meanwhile.
    /// let waiter = tasklets::spawn(move || rx.receive_timeout(Duration::from_millis(5)));
    /// let ticker = tasklets::spawn(|| (0..3).map(|_| tasklets::schedule()).count());
    /// assert_eq!(waiter.join().unwrap(), Err(RecvTimeoutError::Timeout));
    /// assert_eq!(ticker.join().unwrap(), 3);
    /// drop(tx);
    /// ```
    pub fn receive_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.chan.receive(deadline_after(timeout)).map_err(|outcome| match outcome {
            Outcome::Closed => RecvTimeoutError::Closed,
            _ => RecvTimeoutError::Timeout,
        })
    }

    /// An iterator that receives until the channel is closed and drained.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { receiver: self }
    }

    /// The most values the channel buffers (0: a rendezvous channel).
    pub fn capacity(&self) -> usize {
        self.chan.capacity
    }

    /// Values in the buffer now (values that waiting senders still hold are not counted).
    pub fn len(&self) -> usize {
        self.chan.lock().buffer.len()
    }

    /// Whether the buffer is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every [`Sender`] is gone and nothing is left to receive: receives fail from
    /// now on.
    pub fn is_closed(&self) -> bool {
        let state = self.chan.lock();
        state.senders_gone && state.buffer.is_empty()
    }

    /// Whether `self` and `other` receive from the same channel.
    pub fn same_channel(&self, other: &Receiver<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.senders.fetch_add(1, Ordering::Relaxed);
        Sender { chan: self.chan.clone() }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.chan.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.chan.disconnect_senders();
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.chan.receivers.fetch_add(1, Ordering::Relaxed);
        Receiver { chan: self.chan.clone() }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.chan.receivers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.chan.disconnect_receivers();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("id", &self.chan.id).field("capacity", &self.chan.capacity).finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("id", &self.chan.id).field("capacity", &self.chan.capacity).finish()
    }
}

/// Receives until the channel is closed and drained; see [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    receiver: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.receiver.receive().ok()
    }
}

/// Owning version of [`Iter`].
#[derive(Debug)]
pub struct IntoIter<T> {
    receiver: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.receiver.receive().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter { receiver: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parked cross-thread waiter adds to a local one (see the module comment): its
    /// queue entry (a pointer to its node and its waker).
    #[test]
    fn a_queue_entry_is_three_words() {
        assert_eq!(std::mem::size_of::<Entry<u64>>(), 3 * std::mem::size_of::<usize>());
    }
}
