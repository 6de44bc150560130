//! The timer queue of a scheduler: deadlines at which blocked tasklets are woken.
//!
//! # Design
//!
//! Most deadlines are timeouts that never fire: a server's idle timeout is armed at every read
//! and cancelled by the data that arrives, and it only ever moves later. So arming and
//! cancelling must not touch a shared structure, and the queue is touched only by timers that
//! really come due (Go's and netty's lazy approach, on a binary heap).
//!
//! - Each tasklet keeps its armed timer in its task (`TaskTimer::armed`: deadline and arming
//!   sequence number). Cancelling clears that field and nothing else.
//! - The queue is a min-heap of entries `(key, task)`. An armed tasklet has at least one entry
//!   at or before its key; `TaskTimer::queued` remembers its earliest. Arming pushes an entry
//!   only when the tasklet has none at or before the new key, so a timeout re-armed later and
//!   later (the idle timeout) pushes once and then only updates its task: O(1), no allocation.
//! - When an entry comes due, the task says what it is: the armed key itself (the timer
//!   fires), an older key of a timer that was extended (it is pushed again at the armed key,
//!   even if that is due too, so that firing stays in key order), or stale (nothing armed, or
//!   the task has an earlier entry: dropped). When no timer is armed at all, every entry is
//!   stale and the queue is emptied at once (no task is kept alive by a stale entry then).
//! - Order: timers fire by deadline, equal deadlines in arming order (the key's sequence
//!   number), whatever entries were extended or re-pushed on the way.
//! - A timer never fires early: it fires when the scheduler sees `now >= deadline`.
//! - Keys are [`Nanos`], nanoseconds of `Instant`'s clock (`CLOCK_MONOTONIC` on Linux), not
//!   `Instant`s: a socket timeout's deadline is one `clock_gettime` and an integer add, and keys
//!   compare as integers (issue 14: `Instant::now()` + `checked_add` were ~55 instructions of
//!   the echo server's timed park, now ~15). The scheduler still speaks `Instant`
//!   (`next_deadline`, `pop_expired`); conversions go through one base pair read at first use,
//!   nanoseconds first, so a converted `now` is a few nanoseconds early and never fires a
//!   deadline before its time.
//!
//! The scheduler fires due timers when it goes idle and, while tasklets are runnable, every
//! [`BUSY_CHECK_EVERY`](crate::scheduler) switches at most. The idle wait rounds its wake-up
//! up to a grid of [`SLACK`] (500 µs, fixed per queue), so that all deadlines that fall in one
//! grid cell cost one wake-up of the thread (Linux's `timer_slack_ns`, coarser); lateness stays
//! under the slack plus the time to run what was woken first. The poller keeps the wait's
//! sub-millisecond part (`epoll_pwait2`, `src/poller.rs`); before it did, `epoll_wait` rounded
//! every idle wait up to whole milliseconds, so the grid was in effect 1 ms and sleepers woke
//! up to 1 ms late (p99 lateness 1.9–6.6 ms for 10,000 sleepers of 1–100 ms, issue 14 goal 3:
//! p99 ≤ 1 ms). The grid is a trade: each wake-up of an idle thread costs some 9–20 µs of CPU
//! on the 2-vCPU VM (more when other processes run in between and evict its caches), and
//! dense deadlines cost one wake-up per cell. Measured for 10,000 sleepers, second round, three
//! interleaved runs each (docs/benchmarks.md *Timers*): 250 µs: ~360 wake-ups per round,
//! 2.84–2.97 µs CPU per sleeper; 500 µs: ~180, 2.44–2.60 µs; 1 ms: ~95, 2.32–2.43 µs; with
//! p50 lateness ~150, ~300 and ~600 µs. 500 µs keeps p99 under 1 ms with room for the time to
//! run a cell's tasklets: 0.52–0.86 ms at 10,000 sleepers and 0.95–0.98 ms at 100,000 (first
//! round; tokio 2.0 and 25 ms) when the process has its CPU (`chrt -f`, docs/benchmarks.md).
//!
//! Rejected alternatives:
//! - An ordered map keyed by `(deadline, seq)` (the design before this one): an insert and a
//!   remove per timed park, and since deadlines only grow the rightmost leaf kept splitting:
//!   ~940 instructions per park of the echo server's idle timeout (issue 14).
//! - A hierarchical timer wheel (tokio: levels of 64 slots, O(1) insert and cancel): cancel
//!   still unlinks an entry on every park, firing order within a slot needs a sort to stay
//!   FIFO and exact, and deadlines beyond the top level need an overflow list. The lazy heap
//!   makes the common case (re-armed timeouts) cheaper than a wheel's unlink and relink, and
//!   sleepers pay O(log n) once each.
//!
//! Measured (callgrind, `examples/echo_server` with its 60 s idle timeout, docs/benchmarks.md
//! "Timers"): `Alarm::arm` + its drop went from ~205 instructions per message (B-tree insert
//! and remove) to ~9. Sleep lateness behind a spawn burst: see the same section.
use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::scheduler::{scheduler, Scheduler, Task};

/// Identifies an armed timer: its deadline, then the order in which it was armed.
pub(crate) type TimerKey = (Instant, u64);

/// A point in time in nanoseconds of the monotonic clock (`Instant`'s clock): the unit of the
/// queue's keys. A socket timeout computes its deadline from [`now_nanos`] (one
/// `clock_gettime` and an add) instead of `Instant::now()` and `Instant::checked_add` (~55
/// instructions per timed park in the echo server's profile, against ~15).
pub(crate) type Nanos = u64;

/// The queue's own key: [`TimerKey`] in [`Nanos`].
type Key = (Nanos, u64);

/// The same moment as an `Instant` and in [`Nanos`], for converting between the two. The
/// nanoseconds are read *before* the `Instant`, so an `Instant` converted to `Nanos` comes out
/// a few nanoseconds early, never late: `now` passed in as an `Instant` never makes a
/// deadline read from [`now_nanos`] fire before its time.
struct Base {
    instant: Instant,
    nanos: Nanos,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        #[cfg(target_os = "linux")]
        let nanos = crate::sys::monotonic_nanos();
        #[cfg(not(target_os = "linux"))]
        let nanos = 1; // elsewhere `now_nanos` counts from `instant`
        Base { instant: Instant::now(), nanos }
    })
}

/// The monotonic clock, in [`Nanos`]. On Linux one `clock_gettime(CLOCK_MONOTONIC)` (the
/// clock of `Instant`); elsewhere the time since the first call, through `Instant`.
#[inline]
pub(crate) fn now_nanos() -> Nanos {
    #[cfg(target_os = "linux")]
    return crate::sys::monotonic_nanos();
    #[cfg(not(target_os = "linux"))]
    {
        let base = base();
        base.nanos.saturating_add(u64::try_from(base.instant.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// `instant` in [`Nanos`] (saturating).
pub(crate) fn to_nanos(instant: Instant) -> Nanos {
    let base = base();
    match instant.checked_duration_since(base.instant) {
        Some(after) => base.nanos.saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX)),
        None => {
            let before = base.instant.duration_since(instant);
            base.nanos.saturating_sub(u64::try_from(before.as_nanos()).unwrap_or(u64::MAX))
        }
    }
}

/// [`Nanos`] as an `Instant` (saturating at the far future).
pub(crate) fn to_instant(nanos: Nanos) -> Instant {
    let base = base();
    if nanos >= base.nanos {
        let after = Duration::from_nanos(nanos - base.nanos);
        base.instant
            .checked_add(after)
            .unwrap_or_else(|| base.instant + Duration::from_secs(86_400 * 365 * 30))
    } else {
        base.instant.checked_sub(Duration::from_nanos(base.nanos - nanos)).unwrap_or(base.instant)
    }
}

/// `now_nanos() + timeout` for a timeout in nanoseconds (0: none); `None` when there is no
/// timeout or the deadline is too far to represent (then there is none either, as far as
/// anyone alive can tell).
#[inline]
pub(crate) fn deadline_after(timeout_nanos: u64) -> Option<Nanos> {
    if timeout_nanos == 0 {
        return None;
    }
    now_nanos().checked_add(timeout_nanos)
}

/// How far the idle wait may round the first deadline up, so that deadlines that fall within
/// it cost one wake-up (see the module comment).
pub(crate) const SLACK: Duration = Duration::from_micros(500);

/// Asks the CPU to start loading the cache line at `addr` (no effect elsewhere than x86_64;
/// never faults, whatever the address).
#[inline(always)]
pub(crate) fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing architecturally and never faults.
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// A tasklet's timer state, kept in its `Task`.
#[derive(Default)]
pub(crate) struct TaskTimer {
    /// The timer armed for the tasklet's current wait (`None`: none, or it fired).
    armed: Cell<Option<Key>>,
    /// The key of the tasklet's earliest entry in the queue, if it has one there. It is never
    /// later than `armed` while a timer is armed.
    queued: Cell<Option<Key>>,
}

impl TaskTimer {
    /// The armed timer, if any.
    pub(crate) fn armed(&self) -> Option<TimerKey> {
        self.armed.get().map(|(deadline, seq)| (to_instant(deadline), seq))
    }

    /// Whether a timer is armed.
    #[inline]
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.get().is_some()
    }

    /// For a reused task: nothing is armed, and no queue entry refers to it (else it would not
    /// be reused).
    pub(crate) fn reset(&self) {
        debug_assert!(self.queued.get().is_none(), "a reused task has a timer entry");
        self.armed.set(None);
        self.queued.set(None);
    }
}

/// One entry of the queue: `task`'s timer at `key`, or a stale one (see the module comment).
struct Entry {
    key: Key,
    task: Rc<Task>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap, the queue wants the earliest key on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.cmp(&self.key)
    }
}

/// Armed timers of one scheduler.
pub(crate) struct Timers {
    /// Entries by key, earliest on top; at least one per armed timer, at or before its key.
    queue: BinaryHeap<Entry>,
    /// Timers armed and neither fired nor cancelled.
    armed: usize,
    seq: u64,
    /// The origin of the slack grid.
    origin: Instant,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers { queue: BinaryHeap::new(), armed: 0, seq: 0, origin: Instant::now() }
    }
}

impl Timers {
    /// Arms a timer for `task` at `deadline`. Touches the queue only when the task has no
    /// entry there at or before `deadline`.
    pub(crate) fn arm(&mut self, task: &Rc<Task>, deadline: Instant) {
        self.arm_with(task, to_nanos(deadline), || task.clone());
    }

    /// [`Timers::arm`] for a task borrowed as `&Task`: `rc` makes the queue's reference to it,
    /// only when an entry is pushed (a re-armed timeout pushes none).
    #[inline]
    pub(crate) fn arm_with(&mut self, task: &Task, deadline: Nanos, rc: impl FnOnce() -> Rc<Task>) {
        self.seq += 1;
        let key = (deadline, self.seq);
        let state = task.timer_state();
        debug_assert!(state.armed.get().is_none(), "a tasklet arms one timer at a time");
        state.armed.set(Some(key));
        self.armed += 1;
        // `queued > key` with the sequence numbers left out: an entry queued earlier has a
        // smaller one, so it is after `key` exactly when its deadline is.
        if state.queued.get().is_none_or(|queued| queued.0 > deadline) {
            state.queued.set(Some(key));
            self.queue.push(Entry { key, task: rc() });
        }
    }

    /// Cancels `task`'s armed timer, if any; its queue entry stays (see the module comment).
    #[inline]
    pub(crate) fn cancel(&mut self, task: &Task) {
        if task.timer_state().armed.take().is_some() {
            self.disarmed();
        }
    }

    /// One timer fewer is armed; when none is left, every entry is stale: drop them all.
    #[inline]
    fn disarmed(&mut self) {
        self.armed -= 1;
        if self.armed == 0 && !self.queue.is_empty() {
            self.drop_stale();
        }
    }

    #[cold]
    fn drop_stale(&mut self) {
        for entry in self.queue.drain() {
            entry.task.timer_state().queued.set(None);
        }
    }

    /// The earliest deadline of an armed timer, or an earlier one (a stale entry's, whose
    /// expiry costs a pop and a push): never later than the earliest armed deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.armed == 0 {
            return None;
        }
        self.queue.peek().map(|entry| to_instant(entry.key.0))
    }

    /// When the idle wait for `deadline` should end: `deadline` rounded up to the slack grid
    /// (never earlier than `deadline`).
    pub(crate) fn wake_at(&self, deadline: Instant) -> Instant {
        let Some(since) = deadline.checked_duration_since(self.origin) else {
            return deadline;
        };
        let slack = SLACK.as_nanos();
        let cells = since.as_nanos().div_ceil(slack);
        let rounded = Duration::from_nanos(u64::try_from(cells * slack).unwrap_or(u64::MAX));
        self.origin.checked_add(rounded).filter(|&at| at >= deadline).unwrap_or(deadline)
    }

    /// Takes the earliest armed timer if its deadline is not after `now`, disarmed: its task
    /// is returned. Timers fire in key order: by deadline, equal deadlines in arming order.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Rc<Task>> {
        if self.queue.is_empty() {
            return None;
        }
        let now = to_nanos(now);
        loop {
            if self.queue.peek()?.key.0 > now {
                return None;
            }
            let Entry { key, task } = self.queue.pop()?;
            if let Some(next) = self.queue.peek() {
                prefetch(std::ptr::from_ref(next.task.timer_state()) as usize);
            }
            let state = task.timer_state();
            if state.queued.get() == Some(key) {
                state.queued.set(None);
            }
            match state.armed.get() {
                Some(armed) if armed == key => {
                    state.armed.set(None);
                    self.disarmed();
                    return Some(task);
                }
                // Armed later than this entry (extended in place): queue it where it belongs,
                // unless an entry at or before that key is still queued.
                Some(armed) if state.queued.get().is_none_or(|queued| queued > armed) => {
                    state.queued.set(Some(armed));
                    self.queue.push(Entry { key: armed, task });
                }
                // Stale: nothing armed, or an earlier entry of the same tasklet is queued.
                Some(_) | None => {}
            }
        }
    }

    /// Timers armed.
    pub(crate) fn len(&self) -> usize {
        self.armed
    }

    /// Entries in the queue, stale ones included (for the tests).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.queue.len()
    }
}

/// A timer armed for the current tasklet, cancelled when dropped (unless it fired).
pub(crate) struct Alarm<'a> {
    task: &'a Task,
    sched: &'a Scheduler,
}

impl<'a> Alarm<'a> {
    /// Arms a timer that wakes `task` (the current tasklet) at `deadline`.
    pub(crate) fn arm(task: &'a Rc<Task>, deadline: Instant) -> Alarm<'a> {
        let sched = scheduler();
        sched.timers().arm(task, deadline);
        Alarm { task, sched }
    }

    /// Arms a timer that wakes the current tasklet of `sched` at `deadline`.
    #[inline]
    pub(crate) fn arm_current(sched: &'a Scheduler, deadline: Nanos) -> Alarm<'a> {
        let task = sched.current();
        sched.timers().arm_with(task, deadline, || sched.current_rc());
        Alarm { task, sched }
    }

    /// Whether the deadline passed (the timer fired).
    pub(crate) fn fired(&self) -> bool {
        !self.task.timer_state().is_armed()
    }
}

impl Drop for Alarm<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.task.timer_state().is_armed() {
            self.sched.timers().cancel(self.task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Channel;

    /// A timeout armed 100,000 times and served each time (a connection's idle timeout) pushes
    /// one queue entry, not one per arm; a cancelled long timeout followed by a short one
    /// needs a second entry, and both go when nothing is armed any more.
    #[test]
    fn rearmed_timeouts_keep_the_queue_bounded() {
        const ARMS: u32 = 100_000;
        let ch = Channel::<u32>::new();
        let rx = ch.clone();
        let sleeper = crate::spawn(|| crate::time::sleep(Duration::from_secs(3600)));
        let receiver = crate::spawn(move || {
            for i in 0..ARMS {
                assert_eq!(rx.receive_timeout(Duration::from_secs(60)), Ok(i));
            }
            assert_eq!(rx.receive_timeout(Duration::from_millis(1)), Err(crate::RecvTimeoutError::Timeout));
        });
        crate::schedule(); // both wait: the sleeper's entry and the receiver's
        let mut most = 0;
        for i in 0..ARMS {
            ch.send(i).unwrap();
            most = most.max(scheduler().timers().entries());
        }
        assert!(most <= 3, "{most} queue entries for two armed timers");
        sleeper.kill();
        crate::run();
        receiver.join().unwrap();
        assert_eq!(scheduler().timers().len(), 0);
        assert_eq!(scheduler().timers().entries(), 0, "stale entries outlived every timer");
    }

    /// A prefetch is only a hint: any address, mapped or not, a guard page or null, is fine.
    #[test]
    fn prefetching_any_address_never_faults() {
        let mut pool = crate::stack::StackPool::default();
        let stack = pool.take(crate::stack::usable_size(crate::stack::MIN_STACK_SIZE).unwrap()).unwrap();
        for addr in [0, 1, usize::MAX, usize::MAX - 63, stack.guard().0, stack.top() - 64, stack.top()] {
            prefetch(addr);
        }
        pool.release(stack);
    }

    /// The nanosecond clock of socket timeouts is `Instant`'s: an `Instant` converts to a
    /// time no later than the clock's reading after it (so a `now` given as an `Instant` never
    /// fires a deadline read from the clock early), and back within a microsecond.
    #[test]
    fn the_nanosecond_clock_agrees_with_instant() {
        for _ in 0..1000 {
            let before = now_nanos();
            let instant = Instant::now();
            let after = now_nanos();
            let converted = to_nanos(instant);
            assert!(converted <= after, "an Instant converted {} ns late", converted - after);
            assert!(converted + 1_000_000 >= before, "an Instant converted {} ns early", before - converted);
            let back = to_instant(converted);
            let off = if back > instant { back - instant } else { instant - back };
            assert!(off < Duration::from_micros(1), "round trip off by {off:?}");
        }
        assert_eq!(deadline_after(0), None, "0 is no timeout");
        assert_eq!(deadline_after(u64::MAX), None, "a deadline past the clock's range is none");
        let d = deadline_after(5_000_000).unwrap();
        assert!(to_instant(d) >= Instant::now() + Duration::from_millis(4));
    }

    /// The idle wait's wake-up is the deadline rounded up to the slack grid: never before the
    /// deadline, less than one slack after it, and no overflow for deadlines centuries away or
    /// before the grid's origin.
    #[test]
    fn wake_at_is_never_early_and_within_the_slack() {
        let timers = Timers::default();
        let origin = timers.origin;
        let mut deadlines =
            vec![origin, origin + Duration::from_nanos(1), origin + SLACK, origin + SLACK * 7 / 3];
        deadlines.push(origin + Duration::from_secs(5 * 3600));
        deadlines.extend(origin.checked_add(Duration::from_secs(500 * 365 * 86_400)));
        deadlines.extend(origin.checked_sub(Duration::from_secs(1)));
        for deadline in deadlines {
            let at = timers.wake_at(deadline);
            assert!(at >= deadline, "wake-up before the deadline");
            assert!(at - deadline < SLACK, "wake-up {:?} after the deadline", at - deadline);
        }
        assert_eq!(timers.wake_at(origin + SLACK), origin + SLACK, "on the grid: unchanged");
    }
}
