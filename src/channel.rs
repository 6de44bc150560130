//! Stackless rendezvous channels.
//!
//! # Design
//!
//! A channel holds no values, only *waiters*: the tasklets blocked on it, all senders or all
//! receivers, in arrival order. `balance` counts them, positive for senders and negative for
//! receivers, so `balance == ±waiters.len()`.
//!
//! A waiter is a [`WaitNode`] on the blocked tasklet's own stack (Go's `sudog` idea): a sender's
//! node holds the value being sent, a receiver's node is where the value is put. The channel's
//! queue points at the node. This is sound because a node outlives its queue entry: the entry
//! is removed either by the partner that completes the exchange (it sets `done`), by `close`
//! (likewise), or by the [`Registration`] guard in the blocked frame when the wait ends any
//! other way (kill, deadlock, timeout), before the frame goes away. No allocation happens per
//! blocking operation and a wake-up costs no search.
//!
//! A waiter whose timeout fired is runnable again but stays listed until it runs and its
//! guard removes it. Partners and `close` serve only waiters that are still *blocked*, and drop
//! such stale entries: serving one would write into a frame that is about to move on and queue
//! its tasklet twice (a crash found by `tests/fuzz.rs`, pinned by
//! `timed_out_receiver_not_yet_run_is_not_served_or_queued_twice`).
//!
//! # Hand-off and inlining
//!
//! When the preference rule says the waiting receiver (or sender) runs now, the caller passes
//! it to the scheduler as the switch's *target*: the switch goes straight to the partner's
//! stack, which never passes through the run queue. The blocking path (`block`, `offer`,
//! `take`, `hand_over`, `send`, `receive`) is `#[inline(always)]`: a tasklet resumed by a
//! switch returns through the frames it suspended in, and each return into a frame that the
//! tasklet switched from did not have costs a return misprediction (~7 ns here); inlined, a
//! resumed channel operation returns through one frame instead of four
//! (`channel_round_trip/receiver` 67 → 55 ns). The scheduler's part of a block is inlined
//! too (`Scheduler::park_lent`): the waiter takes the count of the running tasklet that the
//! scheduler held, and the switch resumes the partner by an indirect jump straight into its
//! own inlined code, where the return from an out-of-line switch was mispredicted whenever
//! the two sides run different code (61 → 38 ns; see "Direct switches" in `context`).
//!
//! # The preference rule (Stackless's implementation, not its documentation)
//!
//! The caller's direction `d` is +1 for send and -1 for receive. When a caller finds a partner
//! waiting: if `preference == -d` (the waiting side is preferred) the partner runs at once and
//! the caller goes to the end of the run queue; otherwise (including `Neither`) the caller
//! continues and the partner is appended to the run queue. The default is `Receiver` (-1).
//!
//! # Closing
//!
//! ```text
//!   open ──close()──► closing ──balance reaches 0──► closed      (open() reopens)
//! ```
//!
//! `close()` sets *closing*. An operation that completes at once (a partner is waiting) still
//! succeeds; one that would block fails with `Closed`. Receivers blocked at the moment of
//! `close()` are woken with `Closed` (no sender can come any more), so the balance is never
//! negative on a closing channel; blocked senders stay and their values can still be drained
//! by receivers. `is_closed()` = closing and balance 0, which is when iteration ends.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, Instant};

use crate::scheduler::{scheduler, BlockedOn, State, Task, Wake};
use crate::timer::Alarm;

/// Which side of a channel runs first when an operation meets a waiting partner (Stackless
/// `preference`: -1, 0, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Preference {
    /// The receiver runs first (-1), the default: a send to a waiting receiver switches to it.
    #[default]
    Receiver = -1,
    /// Nobody is preferred (0): the caller continues, the partner is queued.
    Neither = 0,
    /// The sender runs first (1): a receive from a waiting sender switches to it.
    Sender = 1,
}

impl Preference {
    /// Stackless's integer for this preference (-1, 0 or 1).
    pub fn as_int(self) -> i8 {
        self as i8
    }

    /// The preference for a Stackless integer, clamped to -1..=1 as Stackless's setter does.
    pub fn from_int(value: i64) -> Preference {
        match value.signum() {
            -1 => Preference::Receiver,
            0 => Preference::Neither,
            _ => Preference::Sender,
        }
    }
}

const SEND: isize = 1;
const RECEIVE: isize = -1;

static NEXT_CHANNEL_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique channel id (shared with `sync` channels, so snapshots name either kind).
pub(crate) fn next_channel_id() -> u64 {
    NEXT_CHANNEL_ID.fetch_add(1, Ordering::Relaxed)
}

/// A Stackless rendezvous channel: [`send`](Channel::send) blocks until a receiver takes the
/// value, [`receive`](Channel::receive) until a sender brings one.
///
/// Handles are cheap to clone; all clones are the same channel. Channels belong to the thread
/// that made them and are neither `Send` nor `Sync`:
///
/// ```compile_fail
/// let ch = tasklets::Channel::<i32>::new();
/// std::thread::spawn(move || ch.send(1)); // error: `Rc<..>` cannot be sent between threads
/// ```
///
/// ```compile_fail
/// fn assert_sync<T: Sync>(_: &T) {}
/// assert_sync(&tasklets::Channel::<i32>::new()); // error: channels are not `Sync` either
/// ```
///
/// # Examples
///
/// The cooperative-multitasking example of the Stackless slides, with its exact output order:
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// let out = Rc::new(RefCell::new(Vec::<String>::new()));
/// let ch = tasklets::Channel::new();
/// let (o, c) = (out.clone(), ch.clone());
/// tasklets::spawn(move || {
///     o.borrow_mut().push("Receiving tasklet started".into());
///     let v: String = c.receive().unwrap();
///     o.borrow_mut().push(v);
///     o.borrow_mut().push("Receiving tasklet finished".into());
/// });
/// let (o, c) = (out.clone(), ch.clone());
/// tasklets::spawn(move || {
///     o.borrow_mut().push("Sending tasklet started".into());
///     c.send("send from sending_tasklet".to_string()).unwrap();
///     o.borrow_mut().push("sending tasklet finished".into());
/// });
/// let o = out.clone();
/// tasklets::spawn(move || o.borrow_mut().push("Just another tasklet in the scheduler".into()));
/// tasklets::run();
/// assert_eq!(*out.borrow(), [
///     "Receiving tasklet started",
///     "Sending tasklet started",
///     "send from sending_tasklet",
///     "Receiving tasklet finished",
///     "Just another tasklet in the scheduler",
///     "sending tasklet finished",
/// ]);
/// ```
pub struct Channel<T> {
    inner: Rc<Inner<T>>,
}

struct Inner<T> {
    id: u64,
    waiters: RefCell<VecDeque<Waiter<T>>>,
    /// > 0: that many blocked senders; < 0: blocked receivers.
    balance: Cell<isize>,
    preference: Cell<Preference>,
    closing: Cell<bool>,
}

/// A blocked tasklet and the node on its stack.
struct Waiter<T> {
    task: Rc<Task>,
    node: NonNull<WaitNode<T>>,
}

/// Lives on the blocked tasklet's stack for the duration of its wait.
struct WaitNode<T> {
    /// A sender's value until a receiver takes it; a receiver's value once a sender delivers.
    value: Cell<Option<T>>,
    /// Set by whoever removes the waiter from the queue (partner or `close`).
    done: Cell<bool>,
}

impl<T> Waiter<T> {
    /// The node of a waiter that is (or was just) in the queue.
    fn node(&self) -> &WaitNode<T> {
        // SAFETY: a node outlives its queue entry (module comment): the blocked frame removes
        // the entry, via `Registration`, before it can go away, and a waiter popped by a partner
        // is used only before the partner wakes it (the woken tasklet has not run yet).
        unsafe { self.node.as_ref() }
    }
}

/// Undoes a waiter's registration when its wait ends without a partner or `close` (kill,
/// deadlock), restoring the balance.
struct Registration<'a, T> {
    inner: &'a Inner<T>,
    node: &'a WaitNode<T>,
    direction: isize,
}

impl<T> Drop for Registration<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.node.done.get() {
            self.unregister();
        }
    }
}

impl<T> Registration<'_, T> {
    /// The wait ended without a partner or `close`: take the node out of the queue.
    #[cold]
    fn unregister(&self) {
        let mut waiters = self.inner.waiters.borrow_mut();
        if let Some(pos) = waiters.iter().position(|w| std::ptr::eq(w.node.as_ptr(), self.node)) {
            waiters.remove(pos);
            self.inner.balance.set(self.inner.balance.get() - self.direction);
        }
    }
}

impl<T> Inner<T> {
    /// Takes the longest-waiting partner that still waits out of the queue.
    ///
    /// A waiter whose timeout fired is runnable but stays listed until it runs and its
    /// `Registration` removes it; such stale entries are dropped here (without `done`, so the
    /// waiter reports its timeout), never served: waking it again would queue it twice.
    #[inline(always)]
    fn pop_waiter(&self, direction_of_waiters: isize) -> Option<Waiter<T>> {
        loop {
            let waiter = self.waiters.borrow_mut().pop_front()?;
            self.balance.set(self.balance.get() - direction_of_waiters);
            if matches!(waiter.task.state(), State::Blocked(_)) {
                waiter.node().done.set(true);
                return Some(waiter);
            }
        }
    }

    /// Gives `value` to a waiting receiver, if there is one (the rendezvous of a send that
    /// does not block); otherwise gives it back.
    #[inline(always)]
    fn offer(&self, value: T) -> Result<(), T> {
        if self.balance.get() >= 0 {
            return Err(value);
        }
        match self.pop_waiter(RECEIVE) {
            Some(receiver) => {
                receiver.node().value.set(Some(value));
                self.hand_over(receiver.task, SEND);
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Takes the value of a waiting sender, if there is one (the rendezvous of a receive that
    /// does not block).
    #[inline(always)]
    fn take(&self) -> Option<T> {
        if self.balance.get() <= 0 {
            return None;
        }
        let sender = self.pop_waiter(SEND)?;
        let value = sender.node().value.take().expect("a blocked sender holds its value");
        self.hand_over(sender.task, RECEIVE);
        Some(value)
    }

    /// Completes a rendezvous with `partner` by the preference rule.
    #[inline(always)]
    fn hand_over(&self, partner: Rc<Task>, direction: isize) {
        let sched = scheduler();
        if self.preference.get() as isize == -direction {
            sched.yield_to(partner);
        } else {
            sched.wake_blocked(partner); // `pop_waiter` serves blocked waiters only
        }
    }

    /// Blocks the current tasklet on this channel with `node` until a partner or `close`
    /// completes the wait (`node.done`), the deadline passes, or nothing can complete it.
    /// Returns why the wait ended when the node is not done.
    #[inline(always)]
    fn block(&self, node: &WaitNode<T>, direction: isize, deadline: Option<Instant>) -> Failure {
        let sched = scheduler();
        sched.current().set_state(State::Blocked(if direction == SEND {
            BlockedOn::Send(self.id)
        } else {
            BlockedOn::Receive(self.id)
        }));
        // A timed wait's alarm holds a count of its own.
        let timed = deadline.map(|deadline| (sched.current_rc(), deadline));
        let alarm = timed.as_ref().map(|(me, deadline)| Alarm::arm(me, *deadline));
        let mut waiters = self.waiters.borrow_mut();
        waiters.reserve(1);
        // SAFETY: `park_lent` follows; between the two only the push (its room is reserved:
        // it cannot fail) and plain cell writes, which neither switch nor panic.
        let task = unsafe { sched.lend_current() };
        waiters.push_back(Waiter { task, node: NonNull::from(node) });
        drop(waiters);
        self.balance.set(self.balance.get() + direction);
        let registration = Registration { inner: self, node, direction };
        let wake = sched.park_lent();
        let timed_out = alarm.as_ref().is_some_and(Alarm::fired);
        drop(alarm);
        drop(registration);
        match wake {
            _ if node.done.get() => Failure::Closed,
            Wake::Woken if timed_out => Failure::Timeout,
            Wake::Woken => Failure::Closed,
            Wake::Never => Failure::Deadlock,
        }
    }

    /// A send that blocks until `deadline` at most.
    #[inline(always)]
    fn send(&self, value: T, deadline: Option<Instant>) -> Result<(), (Failure, T)> {
        let value = match self.offer(value) {
            Ok(()) => return Ok(()),
            Err(value) => value,
        };
        if self.closing.get() {
            return Err((Failure::Closed, value));
        }
        let node = WaitNode { value: Cell::new(Some(value)), done: Cell::new(false) };
        let failure = self.block(&node, SEND, deadline);
        match node.value.take() {
            None => Ok(()),
            Some(value) => Err((failure, value)),
        }
    }

    /// A receive that blocks until `deadline` at most.
    #[inline(always)]
    fn receive(&self, deadline: Option<Instant>) -> Result<T, Failure> {
        if let Some(value) = self.take() {
            return Ok(value);
        }
        if self.closing.get() {
            return Err(Failure::Closed);
        }
        let node = WaitNode { value: Cell::new(None), done: Cell::new(false) };
        let failure = self.block(&node, RECEIVE, deadline);
        node.value.take().ok_or(failure)
    }
}

/// Why a blocking channel operation did not complete.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    Closed,
    Deadlock,
    Timeout,
}

/// The deadline `timeout` from now; `None` (wait forever) when it cannot be represented.
fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl<T> Channel<T> {
    /// Creates an open channel with balance 0 and preference [`Preference::Receiver`].
    pub fn new() -> Channel<T> {
        Channel {
            inner: Rc::new(Inner {
                id: next_channel_id(),
                waiters: RefCell::new(VecDeque::new()),
                balance: Cell::new(0),
                preference: Cell::new(Preference::Receiver),
                closing: Cell::new(false),
            }),
        }
    }

    /// Sends `value`, blocking until a receiver takes it. If a receiver is already waiting, the
    /// exchange happens at once and the preference decides who runs first.
    ///
    /// # Errors
    /// [`SendError::Closed`] if the channel is closing and no receiver is waiting;
    /// [`SendError::Deadlock`] if the main tasklet would block with nothing else runnable.
    /// Both give the value back.
    #[inline(always)]
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.inner.send(value, None).map_err(|(failure, value)| match failure {
            Failure::Deadlock => SendError::Deadlock(value),
            Failure::Closed | Failure::Timeout => SendError::Closed(value),
        })
    }

    /// Sends `value`, waiting at most `timeout` for a receiver; the other tasklets run
    /// meanwhile.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] when no receiver took the value in time,
    /// [`SendTimeoutError::Closed`] as for [`send`](Channel::send); both give the value back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let ch = tasklets::Channel::new();
    /// let err = ch.send_timeout(5, Duration::from_millis(10)).unwrap_err();
    /// assert!(err.is_timeout());
    /// assert_eq!(err.into_inner(), 5);
    /// assert_eq!(ch.balance(), 0);
    /// ```
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.inner.send(value, deadline_after(timeout)).map_err(|(failure, value)| match failure {
            Failure::Closed => SendTimeoutError::Closed(value),
            Failure::Timeout | Failure::Deadlock => SendTimeoutError::Timeout(value),
        })
    }

    /// Receives a value, blocking until a sender brings one. If a sender is already waiting,
    /// the exchange happens at once and the preference decides who runs first.
    ///
    /// # Errors
    /// [`RecvError::Closed`] if the channel is closing and no sender is waiting, or it was
    /// closed while this receiver waited; [`RecvError::Deadlock`] if the main tasklet would block
    /// with nothing else runnable.
    #[inline(always)]
    pub fn receive(&self) -> Result<T, RecvError> {
        self.inner.receive(None).map_err(|failure| match failure {
            Failure::Deadlock => RecvError::Deadlock,
            Failure::Closed | Failure::Timeout => RecvError::Closed,
        })
    }

    /// Receives a value, waiting at most `timeout` for a sender; the other tasklets run
    /// meanwhile.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when no sender came in time, [`RecvTimeoutError::Closed`]
    /// as for [`receive`](Channel::receive).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasklets::{Channel, RecvTimeoutError};
    /// let ch = Channel::new();
    /// let tx = ch.clone();
    /// tasklets::spawn(move || {
    ///     tasklets::time::sleep(Duration::from_millis(5));
    ///     tx.send("late but in time").unwrap();
    /// });
    /// assert_eq!(ch.receive_timeout(Duration::from_secs(10)), Ok("late but in time"));
    /// assert_eq!(ch.receive_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
    /// ```
    pub fn receive_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.inner.receive(deadline_after(timeout)).map_err(|failure| match failure {
            Failure::Closed => RecvTimeoutError::Closed,
            Failure::Timeout | Failure::Deadlock => RecvTimeoutError::Timeout,
        })
    }

    /// Sends `value` only if a receiver is waiting (then as [`send`](Channel::send), preference
    /// included); never blocks.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when no receiver waits, [`TrySendError::Closed`] when none waits
    /// and the channel is closing; both give the value back.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let value = match self.inner.offer(value) {
            Ok(()) => return Ok(()),
            Err(value) => value,
        };
        if self.inner.closing.get() {
            Err(TrySendError::Closed(value))
        } else {
            Err(TrySendError::Full(value))
        }
    }

    /// Receives a value only if a sender is waiting (then as [`receive`](Channel::receive),
    /// preference included); never blocks.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when no sender waits, [`TryRecvError::Closed`] when none waits
    /// and the channel is closing.
    pub fn try_receive(&self) -> Result<T, TryRecvError> {
        if let Some(value) = self.inner.take() {
            return Ok(value);
        }
        if self.inner.closing.get() {
            Err(TryRecvError::Closed)
        } else {
            Err(TryRecvError::Empty)
        }
    }

    /// Sends every item of `items` in turn (Stackless `send_sequence`); returns how many were
    /// sent.
    ///
    /// # Errors
    /// The first failed [`send`](Channel::send); the items after it are not consumed.
    pub fn send_sequence<I: IntoIterator<Item = T>>(&self, items: I) -> Result<usize, SendError<T>> {
        let mut sent = 0;
        for item in items {
            self.send(item)?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Blocked senders (> 0) or receivers (< 0).
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = tasklets::Channel::new();
    /// for i in 0..3 {
    ///     let ch = ch.clone();
    ///     tasklets::spawn(move || ch.send(i));
    /// }
    /// tasklets::run();
    /// assert_eq!(ch.balance(), 3);
    /// assert_eq!(ch.receive(), Ok(0)); // blocked senders are served first come, first served
    /// assert_eq!(ch.balance(), 2);
    /// ```
    pub fn balance(&self) -> isize {
        self.inner.balance.get()
    }

    /// Which side runs first at a rendezvous.
    pub fn preference(&self) -> Preference {
        self.inner.preference.get()
    }

    /// Sets which side runs first at a rendezvous.
    pub fn set_preference(&self, preference: Preference) {
        self.inner.preference.set(preference);
    }

    /// Starts closing the channel: operations that would block fail from now on; receivers
    /// blocked now are woken with [`RecvError::Closed`]; blocked senders can still be drained.
    pub fn close(&self) {
        let inner = &*self.inner;
        inner.closing.set(true);
        if inner.balance.get() < 0 {
            let sched = scheduler();
            while let Some(receiver) = inner.pop_waiter(RECEIVE) {
                sched.wake(receiver.task);
            }
        }
    }

    /// Reopens a closing or closed channel.
    pub fn open(&self) {
        self.inner.closing.set(false);
    }

    /// Whether [`close`](Channel::close) was called (and not undone by [`open`](Channel::open)).
    pub fn is_closing(&self) -> bool {
        self.inner.closing.get()
    }

    /// Whether the channel is closing and no tasklet is blocked on it: nothing can ever be
    /// received from it again.
    pub fn is_closed(&self) -> bool {
        self.inner.closing.get() && self.inner.balance.get() == 0
    }

    /// An iterator of received values that ends when the channel is closed and drained, or when
    /// nothing could ever send again (the main tasklet's receive would deadlock: every other
    /// tasklet has finished or is blocked), like an `mpsc` receiver whose senders are gone.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = tasklets::Channel::new();
    /// let tx = ch.clone();
    /// tasklets::spawn(move || {
    ///     tx.send_sequence(1..=3).unwrap();
    ///     tx.close();
    /// });
    /// assert_eq!(ch.iter().collect::<Vec<i32>>(), [1, 2, 3]);
    /// assert!(ch.is_closed());
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { channel: self }
    }
}

impl<T> Default for Channel<T> {
    fn default() -> Self {
        Channel::new()
    }
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Channel { inner: self.inner.clone() }
    }
}

impl<T> PartialEq for Channel<T> {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<T> Eq for Channel<T> {}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.inner.id)
            .field("balance", &self.inner.balance.get())
            .field("preference", &self.inner.preference.get())
            .field("closing", &self.inner.closing.get())
            .finish()
    }
}

/// Borrowing iterator over received values; see [`Channel::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    channel: &'a Channel<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        self.channel.receive().ok()
    }
}

/// Owning iterator over received values; see [`Channel::iter`].
#[derive(Debug)]
pub struct IntoIter<T> {
    channel: Channel<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        self.channel.receive().ok()
    }
}

impl<'a, T> IntoIterator for &'a Channel<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Channel<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter { channel: self }
    }
}

/// Why [`Channel::send`] failed; carries the value back.
#[derive(Clone, PartialEq, Eq)]
pub enum SendError<T> {
    /// The channel is closing and no receiver was waiting.
    Closed(T),
    /// The main tasklet would have blocked with nothing else runnable (or a tasklet was killed
    /// again while a destructor of its unwind waited here).
    Deadlock(T),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(value) | SendError::Deadlock(value) => value,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed(_) => "Closed(..)",
            SendError::Deadlock(_) => "Deadlock(..)",
        })
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed(_) => "sending on a closed channel",
            SendError::Deadlock(_) => {
                "deadlock: the main tasklet would block sending with no other tasklet runnable (sending without a receiver available)"
            }
        })
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why [`Channel::receive`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The channel is closing and no sender was waiting, or it was closed during the wait.
    Closed,
    /// The main tasklet would have blocked with nothing else runnable (or a tasklet was killed
    /// again while a destructor of its unwind waited here).
    Deadlock,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvError::Closed => "receiving on a closed channel",
            RecvError::Deadlock => {
                "deadlock: the main tasklet would block receiving with no other tasklet runnable (receiving without a sender available)"
            }
        })
    }
}

impl std::error::Error for RecvError {}

/// Why [`Channel::try_send`] failed; carries the value back.
#[derive(Clone, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// No receiver was waiting.
    Full(T),
    /// No receiver was waiting and the channel is closing.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(value) | TrySendError::Closed(value) => value,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Closed(_) => "Closed(..)",
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "no receiver is waiting on the channel",
            TrySendError::Closed(_) => "sending on a closed channel",
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why [`Channel::try_receive`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// No sender was waiting.
    Empty,
    /// No sender was waiting and the channel is closing.
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "no sender is waiting on the channel",
            TryRecvError::Closed => "receiving on a closed channel",
        })
    }
}

impl std::error::Error for TryRecvError {}

/// Why [`Channel::send_timeout`] failed; carries the value back.
#[derive(Clone, PartialEq, Eq)]
pub enum SendTimeoutError<T> {
    /// No receiver took the value before the timeout.
    Timeout(T),
    /// The channel is closing and no receiver was waiting.
    Closed(T),
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(value) | SendTimeoutError::Closed(value) => value,
        }
    }

    /// Whether the operation timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendTimeoutError::Timeout(_))
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendTimeoutError::Timeout(_) => "Timeout(..)",
            SendTimeoutError::Closed(_) => "Closed(..)",
        })
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendTimeoutError::Timeout(_) => "timed out waiting for a receiver on the channel",
            SendTimeoutError::Closed(_) => "sending on a closed channel",
        })
    }
}

impl<T> std::error::Error for SendTimeoutError<T> {}

/// Why [`Channel::receive_timeout`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// No sender came before the timeout.
    Timeout,
    /// The channel is closing and no sender was waiting, or it was closed during the wait.
    Closed,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvTimeoutError::Timeout => "timed out waiting for a sender on the channel",
            RecvTimeoutError::Closed => "receiving on a closed channel",
        })
    }
}

impl std::error::Error for RecvTimeoutError {}
