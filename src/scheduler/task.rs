//! A tasklet's record, [`Task`]: its state, its saved context and stack, its closure until it
//! starts, its outcome once it ends; and the small types that describe them.
//!
//! The scheduler (the parent module) owns every transition; this module owns the record and
//! its layout (see the struct: the fields a spawn, a run and a finish touch come first, so a
//! burst of spawns misses the cache as little as it can), its reuse (`reset`) and what
//! becomes of an outcome nobody joins (`discard_outcome`).
//!
//! # States
//!
//! ```text
//!            spawn                 schedule_remove / remove()
//!   bind ──► Paused ──insert()──► Runnable ◄──────────────────► Paused
//!                                  │    ▲
//!              channel op / join   │    │ partner arrives / target finishes / kill
//!                                  ▼    │
//!                                 Blocked
//!   Runnable ── returns, panics or is killed ──► Finished ──(next switch)──► reaped
//! ```
//!
//! The invariants that the scheduler keeps around these states are in its module comment
//! ("Invariants").

use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::mem;
use std::panic::Location;
use std::ptr;
use std::rc::Rc;

use crate::context::{self, Context};
use crate::reactor::Direction;
use crate::runqueue::Priority;
use crate::stack::{OverflowInfo, Stack};
use crate::timer::{TaskTimer, TimerKey};

/// What a blocked tasklet waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockedOn {
    /// Sending on the channel with this id.
    Send(u64),
    /// Receiving on the channel with this id.
    Receive(u64),
    /// Waiting for the tasklet with this id to finish.
    Join(u64),
    /// Sleeping until a deadline.
    Sleep,
    /// Waiting for an fd to become ready.
    Io(std::os::fd::RawFd, Direction),
    /// Waiting for a function running on the `unblock` pool.
    Unblock,
}

/// Life-cycle state of a tasklet (see the module comment for the transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Runnable,
    Blocked(BlockedOn),
    Paused,
    Finished,
}

/// How a tasklet's closure ended.
pub(crate) enum Outcome {
    Returned(Box<dyn Any>),
    /// Returned a value of a zero-sized type without drop glue (`()` above all): nothing is
    /// kept but the function that makes the value again, boxed, for a join, so that the
    /// outcome of a tasklet nobody joins needs no drop (`Task::discard_outcome`).
    ReturnedZst(fn() -> Box<dyn Any>),
    Panicked(Box<dyn Any + Send>),
    Killed,
    /// The result was taken by a `join`.
    Taken,
}

/// A never-started tasklet's closure, stored in its `Task` (`closure`): the function that
/// drops it in place and the root that runs it.
#[derive(Clone, Copy)]
pub(super) struct Start {
    pub(super) drop: unsafe fn(*mut u8),
    pub(super) entry: context::Entry,
}

/// Closures larger than this (or aligned to more than [`MAX_INLINE_ALIGN`]) are boxed instead
/// of being stored in the tasklet's `Task` until it starts.
pub(super) const MAX_INLINE_CLOSURE: usize = 64;
pub(super) const MAX_INLINE_ALIGN: usize = 16;

/// Room for a never-started tasklet's closure (see "Lazy stacks" in the scheduler).
#[repr(C, align(16))]
pub(super) struct ClosureBuf(UnsafeCell<mem::MaybeUninit<[u8; MAX_INLINE_CLOSURE]>>);

impl ClosureBuf {
    pub(super) const fn new() -> ClosureBuf {
        ClosureBuf(UnsafeCell::new(mem::MaybeUninit::uninit()))
    }

    pub(super) fn ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }
}

/// One tasklet. Shared (`Rc`) by its handles, the scheduler's registry, the run queue and the
/// wait list it is blocked in.
#[repr(C)]
pub(crate) struct Task {
    // Hot: what every spawn, run and finish touches comes first, in the order it is used, and
    // without gaps (`repr(C)` keeps this order). A batch of 1,000 spawns touches each `Task`
    // at the spawn and again when it runs, long after it left the L1 cache, so every cache
    // line that a spawn, a run or a finish touches is a miss (callgrind's cache simulation):
    // the fields that only some tasklets use (accounting, timers) come last, and `reset`
    // leaves them alone. The first line holds, after the `Rc` counts, what a switch reads.
    pub(super) state: Cell<State>,
    pub(super) kill_pending: Cell<bool>,
    /// Whether the tasklet was unwinding (a panic or a kill in flight on its stack) when it last
    /// switched away (see "Unwinding is per tasklet" in `kill`).
    pub(super) unwinding: Cell<bool>,
    /// Its level in the run queue (see `runqueue`).
    pub(super) priority: Cell<Priority>,
    /// Whether `joiners` holds any (so that a finish reads only this line).
    pub(super) has_joiners: Cell<bool>,
    /// Depth of `with_kills_deferred` scopes: while non-zero a kill never unwinds (see
    /// "Deferred kills" in `kill`).
    pub(super) defer_kills: Cell<u32>,
    pub(super) id: u64,
    /// The saved context while the tasklet is switched away; made at the first switch to it.
    pub(super) ctx: Context,
    /// Index in the scheduler's registry.
    pub(super) slot: Cell<usize>,
    /// How to run and drop the closure until the tasklet starts; `None` for main and once
    /// started (the first switch to a task whose `start` is set gives it its stack).
    pub(super) start: Cell<Option<Start>>,
    /// The tasklet's stack; `None` for the main tasklet, until it first runs, and once reaped.
    pub(super) stack: Cell<Option<Stack>>,
    /// The usable size of its stack, reserved in the pool until it first runs (0 for main).
    pub(super) stack_size: Cell<usize>,
    /// Times it gave up the CPU (see `Scheduler::end_slice`).
    pub(super) switches: Cell<u64>,
    /// Where it was spawned (`None` for main).
    pub(super) spawned_at: Cell<Option<&'static Location<'static>>>,
    pub(super) name: Option<Box<str>>,
    /// For the stack overflow handler; written when the stack is taken (`give_stack`), right
    /// before the tasklet first runs.
    pub(super) overflow: Cell<OverflowInfo>,
    pub(super) outcome: RefCell<Option<Outcome>>,
    /// The closure until the tasklet starts (only as many bytes as the closure has are
    /// touched: none for a closure that captures nothing).
    pub(super) closure: ClosureBuf,
    // Cold: only with accounting on, for joins and for timed waits.
    /// Tasklets blocked in `join` on this one, in arrival order (empty once it finished).
    pub(super) joiners: RefCell<Vec<Rc<Task>>>,
    /// Accounting (see `Scheduler::charge`): clock ticks spent running, and the tick at which
    /// it last stopped running (0: never ran). Written only while accounting is on; `reset`
    /// clears them only if accounting was ever on (`Scheduler::charged`).
    pub(super) cpu: Cell<u64>,
    pub(super) last_ran: Cell<u64>,
    /// The timer armed for the tasklet's current wait, if any (see `timer`); disarmed whenever
    /// no wait of the tasklet is in progress (the wait's `Alarm` cancels it).
    pub(super) timer: TaskTimer,
}

impl Task {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn priority(&self) -> Priority {
        self.priority.get()
    }

    pub(crate) fn state(&self) -> State {
        self.state.get()
    }

    pub(crate) fn set_state(&self, state: State) {
        self.state.set(state);
    }

    pub(crate) fn is_main(&self) -> bool {
        self.slot.get() == MAIN_SLOT
    }

    /// Runs `f` with this tasklet's kills deferred (see "Deferred kills").
    pub(crate) fn deferring_kills<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Leave<'a>(&'a Cell<u32>);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        self.defer_kills.set(self.defer_kills.get() + 1);
        let _leave = Leave(&self.defer_kills);
        f()
    }

    pub(crate) fn timer(&self) -> Option<TimerKey> {
        self.timer.armed()
    }

    /// Its timer state (see `timer`).
    pub(crate) fn timer_state(&self) -> &TaskTimer {
        &self.timer
    }

    /// Where it was spawned (`None` for main).
    pub(crate) fn spawned_at(&self) -> Option<&'static Location<'static>> {
        self.spawned_at.get()
    }

    pub(crate) fn set_spawned_at(&self, location: &'static Location<'static>) {
        self.spawned_at.set(Some(location));
    }

    /// `(switches, cpu ticks, last_ran tick)`, for introspection.
    pub(crate) fn accounting(&self) -> (u64, u64, u64) {
        (self.switches.get(), self.cpu.get(), self.last_ran.get())
    }

    /// Takes the outcome for a join.
    /// `None` while the tasklet has not finished; afterwards the outcome, once, then `Taken`.
    pub(crate) fn take_outcome(&self) -> Option<Outcome> {
        let mut outcome = self.outcome.borrow_mut();
        outcome.as_mut().map(|o| std::mem::replace(o, Outcome::Taken))
    }

    /// Registers `joiner` to be woken when this tasklet finishes.
    pub(crate) fn add_joiner(&self, joiner: Rc<Task>) {
        self.joiners.borrow_mut().push(joiner);
        self.has_joiners.set(true);
    }

    /// Removes `joiner` if it is still registered (its join was interrupted).
    pub(crate) fn remove_joiner(&self, joiner: &Task) {
        let mut joiners = self.joiners.borrow_mut();
        joiners.retain(|j| !ptr::eq(&**j, joiner));
        self.has_joiners.set(!joiners.is_empty());
    }
}

impl Task {
    /// Drops the outcome nobody can join any more, logging a panic that was never seen.
    /// Makes a finished, unshared task (kept for reuse by `reap`) a fresh paused one. Every
    /// field is named, so a new field cannot be forgotten here.
    #[inline(always)]
    pub(super) fn reset(
        &mut self,
        id: u64,
        name: Option<Box<str>>,
        stack_size: usize,
        start: Start,
        charged: bool,
    ) {
        let Task {
            id: old_id,
            name: old_name,
            state,
            kill_pending,
            defer_kills,
            unwinding,
            ctx: _, // made at the first switch to the tasklet
            stack: old_stack,
            stack_size: old_stack_size,
            start: old_start,
            closure: _, // written by the caller
            outcome,
            joiners,
            has_joiners,
            slot,
            timer,
            overflow: _, // written at the first switch to the tasklet
            switches,
            cpu,
            last_ran,
            priority,
            spawned_at,
        } = self;
        *old_id = id;
        *old_name = name;
        state.set(State::Paused);
        kill_pending.set(false);
        unwinding.set(false);
        defer_kills.set(0);
        debug_assert!(old_stack.get_mut().is_none(), "a reused task's stack was released");
        old_stack_size.set(stack_size);
        old_start.set(Some(start));
        debug_assert!(outcome.get_mut().is_none(), "a reused task's outcome was discarded");
        // `finish` took the joiners, and the wait that armed a timer disarmed it: the cold
        // lines stay untouched (see the struct).
        debug_assert!(joiners.get_mut().is_empty(), "a finished task's joiners were woken");
        debug_assert!(!has_joiners.get(), "a finished task's joiners were woken");
        debug_assert!(timer.armed().is_none(), "a finished task's timer was disarmed");
        if cfg!(debug_assertions) {
            timer.reset(); // checks that no queue entry refers to it
        }
        slot.set(0);
        switches.set(0);
        if charged {
            // Only `charge` writes these, and only while accounting is on.
            cpu.set(0);
            last_ran.set(0);
        }
        priority.set(Priority::Normal);
        spawned_at.set(None);
    }

    #[inline]
    pub(super) fn discard_outcome(&self) {
        let outcome = self.outcome.borrow_mut().take();
        match outcome {
            None | Some(Outcome::ReturnedZst(_) | Outcome::Killed | Outcome::Taken) => {}
            Some(Outcome::Panicked(payload)) => self.unjoined_panic(payload),
            Some(returned) => drop(returned),
        }
    }

    #[cold]
    fn unjoined_panic(&self, payload: Box<dyn Any + Send>) {
        log::error!(
            "tasklet {} panicked and was never joined: {}",
            Describe(self.id, self.name.as_deref()),
            panic_message(&*payload)
        );
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.discard_outcome();
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("state", &self.state.get())
            .finish_non_exhaustive()
    }
}

/// `7 'worker'` or `7`: how log lines and errors name a tasklet.
pub(crate) struct Describe<'a>(pub(crate) u64, pub(crate) Option<&'a str>);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(name) => write!(f, "{} '{}'", self.0, name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// The text of a panic payload (`&str` or `String`), as std prints it.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any>"
    }
}

/// `Task::slot` of the main tasklet, which is not in the registry.
pub(super) const MAIN_SLOT: usize = usize::MAX;

/// The value of the zero-sized `T` that a tasklet returned and `entry` forgot
/// (`Outcome::ReturnedZst`), boxed for the join that takes it.
pub(super) fn zst_again<T: 'static>() -> Box<dyn Any> {
    debug_assert!(mem::size_of::<T>() == 0 && !mem::needs_drop::<T>());
    // SAFETY: `T` is zero-sized, so any aligned non-null pointer is valid to read one from,
    // and a value of it exists: the tasklet returned one, which `entry` forgot in exchange
    // for this call (an outcome is taken once, then `Taken`). Without drop glue, forgetting
    // and making it again is a move.
    Box::new(unsafe { ptr::read(ptr::NonNull::<T>::dangling().as_ptr()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run;

    /// A zero-sized result without drop glue is kept as a function that makes it again
    /// (`Outcome::ReturnedZst`): joins, typed or erased, still get the value; one with drop
    /// glue is boxed as before and dropped exactly once.
    #[test]
    fn zero_sized_results_are_joined_like_any_other() {
        #[derive(Debug, PartialEq)]
        struct Token;
        struct Counted(Rc<Cell<u32>>);
        struct DropZst;
        thread_local!(static DROPS: Cell<u32> = const { Cell::new(0) });
        impl Drop for DropZst {
            fn drop(&mut self) {
                DROPS.with(|d| d.set(d.get() + 1));
            }
        }
        let counted = Rc::new(Cell::new(0));
        let unit = crate::spawn(|| {});
        let token = crate::spawn(|| Token);
        let erased = crate::spawn(|| Token).into_any();
        let dropping = crate::spawn(|| DropZst);
        let unjoined = crate::spawn(|| DropZst);
        let c = counted.clone();
        let sized = crate::spawn(move || Counted(c));
        run();
        unit.join().unwrap();
        assert_eq!(token.join().unwrap(), Token);
        assert!(erased.join().unwrap().downcast::<Token>().is_ok());
        drop(dropping.join().unwrap());
        assert_eq!(DROPS.with(Cell::get), 1);
        drop(unjoined); // the last handle: the outcome nobody joined is discarded
        assert_eq!(DROPS.with(Cell::get), 2);
        sized.join().unwrap().0.set(7);
        assert_eq!(counted.get(), 7);
    }
}
