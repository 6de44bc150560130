//! The per-thread scheduler: the run queue, switching, parking, killing and teardown.
//!
//! # Model
//!
//! Each OS thread has at most one scheduler, created lazily on first use and torn down by a
//! thread-local destructor. The thread's own stack is the **main tasklet**; every other tasklet
//! runs on a pooled guarded stack (see [`crate::stack`]) as a [`Context`] (see
//! [`crate::context`], the only stack-switching code).
//!
//! Switching is **symmetric**: a tasklet that gives up the CPU picks its successor itself
//! (the target it names, else the run queue's head) and switches straight to it, one stack
//! switch per hop, as Go's `gogo` does. The main tasklet is an ordinary context in that
//! respect; it is special only as the thread's **idler** (below). There is no dispatcher:
//! `switch` does what the old dispatch loop did, on the stack of the tasklet that switches,
//! in this order: end the slice (accounting, stall report, watchdog), put the current tasklet
//! where it asked (`Requeue`: back of the run queue, front, or nowhere), check timers and I/O
//! once per pass over the queue, pick the target or the head, switch.
//!
//! ## Who owns the running tasklet
//!
//! `current` holds one strong count of the running tasklet (`Rc::into_raw`). A switch moves
//! that count to where the tasklet waits (the run queue for `Back`/`Front`; for `No` it is
//! dropped, since the registry keeps every unfinished tasklet alive, and `Scheduler::main`
//! keeps main), and moves the successor's count out of the queue (or out of the `Rc` a waker
//! passed as target) into `current`: no reference-count traffic per hop.
//!
//! A tasklet that blocks on a channel **lends** that count to the channel's wait list
//! (`lend_current`, `park_lent`: `Requeue::Lent`) instead of cloning it for the list and
//! dropping the one `current` held; and its switch is the same code inlined into the channel
//! operation, ending in a direct switch (`switch_with::<true>`, `context::switch_direct`, see
//! "Direct switches" in `context`): the resumed tasklet lands in its own inlined code by an
//! indirect jump instead of a mispredicted return from `switch` (`channel_round_trip`
//! 61 → 38 ns). `schedule()` does the same (it is `#[inline]` down to the caller's loop:
//! `switch/two_tasklets` 10.3 → 8.4 ns, 164 → 133 instructions). Every other hop goes through
//! the one out-of-line `switch`.
//!
//! ## Finished tasklets and their stacks
//!
//! A tasklet's root (`entry`) runs its closure in `catch_unwind`, records the outcome, wakes
//! its joiners, and makes its last switch with [`context::exit_to`], which saves nothing. It
//! cannot free the stack it runs on, so it leaves itself in `zombie`; **whoever runs next
//! reaps it** right after its own switch returns (`resumed`, called after every switch and at
//! the start of every fresh tasklet): the stack goes back to the pool, the registry entry goes
//! away, an unshared `Task` is kept for reuse. Between the last switch and the reaping no code
//! runs, so nothing can take that stack from the pool while it is still in use.
//!
//! ## Idling and deadlock (the main stack as idler)
//!
//! When a tasklet gives up the CPU and nothing is runnable, it switches to main with
//! `Resume::Idle` (main is then neither current nor queued: it is suspended inside its own
//! `main_switch`). Main runs the idle path on its own stack: wait in the poller until the first
//! deadline, I/O event or cross-thread wake-up, fire what is due, and switch to the first
//! tasklet made runnable, or return to its own caller if that is main itself. When nothing
//! could ever make a tasklet runnable, main's pending operation returns [`Wake::Never`]: a
//! deadlock error for a blocking operation, the normal end of `run()`. Idling happens only
//! when the thread is about to sleep in a system call, so the extra hop to main costs nothing
//! measurable, and it keeps the poller, the timer heap and deadlock reporting on the large
//! thread stack instead of a 16 KiB tasklet stack.
//!
//! # Invariants
//!
//! The states of a tasklet and their transitions are drawn in [`task`] ("States"); killing,
//! deferred kills and per-tasklet unwinding are in [`kill`].
//!
//! Invariants (checked by the tests, relied upon everywhere):
//! - A `Runnable` tasklet is the current one, or in the run queue exactly once, or the
//!   target a switch is about to run.
//! - A `Blocked` tasklet is registered in exactly one wait list (a channel's waiters, a
//!   tasklet's joiners), and removes itself from it when it is woken in any other way (kill,
//!   deadlock), by a drop guard on its own stack.
//! - Every tasklet that has not finished is in `tasks`, which owns it: dropping every handle of
//!   a paused tasklet does not free it (it is killed at thread exit, like a leaked thread).
//!   The same registry keeps a suspended tasklet's [`Context`] alive while it is switched away.
//! - When main is not running, it is suspended inside `main_switch`, which is the only way
//!   main gives up the CPU; whoever switches to it says why in `resume` (`Run`: it was picked;
//!   `Idle`: nothing is runnable; `Stop`: the watchdog caught a tasklet).
//! - No `RefCell` borrow of scheduler state is held across a switch, and nothing unwinds
//!   across one: every tasklet body runs in `catch_unwind`, inside an `extern "C"` root.
//!
//! # Lazy stacks
//!
//! A tasklet that has not started has no stack: `create` stores its closure in the `Task`
//! (up to [`MAX_INLINE_CLOSURE`] bytes inline, larger ones boxed) and only *reserves* a slot
//! in the stack pool (see "Reservations" in `stack`), so spawning fails where it always did but
//! touches no stack page. The first switch to the tasklet (`hop_raw`, `exit`: a task whose
//! `start` is still set has never run) takes the reserved slot, which is the one the last
//! finished tasklet released, still warm, and builds the first frame there; the trampoline
//! then calls `entry`, which moves the closure onto the new stack. Reaping releases the stack,
//! or the reservation of a tasklet killed before it started. A burst of spawns that run to
//! completion one after the other thus cycles through two warm stacks instead of touching a
//! fresh stack per tasklet (`spawn_run_finish` in `docs/benchmarks.md`). Rejected: keeping the
//! closure at the top of the stack (the previous design; it needs the stack at spawn) and
//! boxing every closure (an allocation and a free per spawn, where the `Task` reused from
//! `spare` already has room).
//!
//! # Accounting, stalls and the watchdog
//!
//! Per-tasklet CPU accounting is off by default: a switch then reads no clock. It bumps the
//! shared switch counter and publishes the running tasklet's id (`monitor::Shared`), which is
//! all the built-in sysmon needs to report a stall while it happens (see `monitor`). With
//! accounting on (`set_accounting(true)`), every switch also reads the clock once and charges
//! the slice to the context leaving the CPU; the time main spends idle is charged to nobody.
//! Under `run_watchdog` (which turns accounting on for its duration), a tasklet whose slice
//! exceeds the budget when it yields is paused, recorded in `caught`, and the switch goes to
//! main with `Resume::Stop`, which makes `run()` return.
//!
//! Measured (`docs/benchmarks.md`, *Accounting on and off*): the clock read was a third of a
//! switch on this VM and more than half in others, which is why it is not the default any
//! more; the stall report, which needed it, moved to the sysmon.
//!
//! # Teardown
//!
//! See [`lifecycle`]: created on first use, torn down by a thread-local destructor.
//!
//! # Rejected alternatives
//!
//! - The main stack as dispatcher (the design before this one, forced by corosensei's
//!   asymmetric resume/suspend): every tasklet-to-tasklet hop was two stack switches plus
//!   dispatcher bookkeeping: 35 ns per `switch/two_tasklets` hop against 14 ns now, 9 ns
//!   with accounting off (`bench/benches/core.rs`).
//! - Idling on whichever stack is current: saves one hop when the thread goes to sleep
//!   anyway, but would run the poller and deadlock reports on small tasklet stacks.
//! - Releasing a finished tasklet's stack to the pool just before its last switch (correct
//!   only as long as nothing between the release and the switch could take a stack): the
//!   zombie slot costs one predictable branch per switch and leaves no such window.
//! - Moving tasklets between threads: unsound (TLS addresses are cached by LLVM across calls),
//!   so every handle is `!Send`.

use std::cell::{Cell, RefCell, RefMut, UnsafeCell};
use std::fmt;
use std::io;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod kill;
mod lifecycle;
mod task;

pub use kill::TaskletExit;
pub(crate) use lifecycle::{existing_scheduler, running_stack, scheduler, try_scheduler};
pub(crate) use task::{panic_message, BlockedOn, Describe, Outcome, State, Task};
use task::{zst_again, ClosureBuf, Start, MAX_INLINE_ALIGN, MAX_INLINE_CLOSURE};

use crate::clock;
use crate::context::{self, Context};
use crate::monitor;
use crate::reactor::Reactor;
use crate::runqueue::{Priority, RunQueue};
use crate::stack::{self, OverflowInfo, StackPool};
use crate::timer::{TaskTimer, Timers};

/// Why a parked tasklet runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Wake {
    /// Something woke it (it was made runnable again).
    Woken,
    /// Nothing can ever wake it: the main tasklet deadlocked, or a tasklet was killed while
    /// already unwinding or while deferring kills. The caller must undo its registration and
    /// fail.
    Never,
}

/// Where the current tasklet goes when it gives up the CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Requeue {
    /// Nowhere: it registered itself in a wait list, or it is paused.
    No,
    /// To the end of the run queue.
    Back,
    /// To the front of the run queue (it runs right after the target).
    Front,
    /// Nowhere, and the strong count `current` held was already lent to the wait list it
    /// registered in (`lend_current`, `park_lent`): the switch moves no count for it.
    Lent,
}

/// Why the main tasklet was switched to (see "Idling and deadlock" in the module comment).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Resume {
    /// It was picked to run: its pending operation returns [`Wake::Woken`].
    Run,
    /// Nothing is runnable: main idles, then runs what became runnable.
    Idle,
    /// The watchdog caught a tasklet: `run()` returns.
    Stop,
}

/// A tasklet that runs this long without giving up the CPU is logged as a stall.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(100);

/// Longest an epoch of the stack pool lasts while the thread keeps going idle without `run()`
/// returning (a server waiting on timers).
const EPOCH: Duration = Duration::from_secs(1);

/// While tasklets are runnable, timers and I/O are checked at least every this many switches
/// (and once per pass over a shorter run queue).
const BUSY_CHECK_EVERY: usize = 64;

/// The per-thread scheduler.
pub(crate) struct Scheduler {
    main: Rc<Task>,
    /// The running tasklet, holding one strong count of it (`Rc::into_raw`; see "Who owns
    /// the running tasklet"). Always points to a live task.
    current: Cell<*const Task>,
    /// A finished tasklet that made its last switch, reaped by whoever runs next (`resumed`).
    zombie: Cell<Option<Rc<Task>>>,
    /// Why main was switched to; read and reset by main (see `Resume`).
    resume: Cell<Resume>,
    /// Runnable tasklets other than the current one, in order. Only touched through the
    /// one-operation methods `push_back`, `push_front`, `pop_front`, `unqueue`, `queued`.
    queue: UnsafeCell<RunQueue<Rc<Task>>>,
    /// Every tasklet that has not finished (the main tasklet excluded), indexed by `Task::slot`.
    tasks: RefCell<Registry>,
    pool: RefCell<StackPool>,
    /// Finished tasks that no handle refers to, reinitialised by `create` instead of allocating.
    /// Trimmed like the stack pool: at the end of an epoch it keeps as many as were created
    /// during the epoch (at least `HOT_STACKS`).
    spare: RefCell<Vec<Rc<Task>>>,
    /// Tasks created in the current epoch.
    created: Cell<usize>,
    /// When the last epoch ended.
    epoch_start: Cell<Instant>,
    /// Armed timers.
    timers: RefCell<Timers>,
    /// Switches since the last check for timers and I/O while busy.
    since_busy_check: Cell<usize>,
    /// Tasklets that the last check while busy fired to the front of the run queue.
    busy_fired: Cell<usize>,
    /// The readiness poller and the tasklets parked on fds or on other threads.
    reactor: Reactor,
    /// Per-tasklet CPU accounting (one clock read per switch) is on; off by default.
    accounting: Cell<bool>,
    /// Clock tick of the last switch (when accounting).
    mark: Cell<u64>,
    /// Accounting was on at some time: tasks may hold CPU figures that `reset` must clear.
    charged: Cell<bool>,
    /// During `run_watchdog`: a slice longer than this many ticks pauses the tasklet.
    watchdog: Cell<u64>,
    /// How many switched-away tasks are marked `unwinding`: the thread's
    /// `std::thread::panicking()` counts their unwinds too.
    suspended_unwinding: Cell<u32>,
    /// The tasklet the watchdog caught.
    caught: RefCell<Option<Rc<Task>>>,
    /// Tasklets woken from a wait since the scheduler was created.
    wakeups: Cell<u64>,
    /// What other threads may see of this scheduler (see `monitor`); it also holds the switch
    /// counter (slices of tasklets other than main ended, see `end_slice`).
    monitor: Arc<monitor::Shared>,
    default_stack_size: Cell<usize>,
    /// Next id of this thread's block, and the block's end.
    ids: Cell<(u64, u64)>,
    /// An alternate signal stack this scheduler had to create.
    altstack: Option<(*mut u8, usize)>,
}

/// Slab of live tasklets.
#[derive(Default)]
struct Registry {
    slots: Vec<Option<Rc<Task>>>,
    free: Vec<usize>,
    live: usize,
}

impl Registry {
    #[inline(always)]
    fn insert(&mut self, task: &Rc<Task>) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(task.clone());
                slot
            }
            None => {
                self.slots.push(Some(task.clone()));
                self.slots.len() - 1
            }
        };
        task.slot.set(slot);
        self.live += 1;
    }

    #[inline]
    fn remove(&mut self, task: &Task) -> Option<Rc<Task>> {
        let slot = task.slot.get();
        let removed = self.slots.get_mut(slot)?.take();
        if removed.is_some() {
            self.free.push(slot);
            self.live -= 1;
        }
        removed
    }

    fn all(&self) -> Vec<Rc<Task>> {
        let mut all: Vec<Rc<Task>> = self.slots.iter().flatten().cloned().collect();
        all.sort_by_key(|t| t.id);
        all
    }
}

impl Scheduler {
    /// The running tasklet.
    #[inline]
    pub(crate) fn current(&self) -> &Task {
        // SAFETY: `current` always points to a live task: it holds a strong count of it, except
        // inside a switch between `requeue_current` and `hop`, where the count went to the run
        // queue, or was dropped while the registry (or `self.main`) keeps the task alive.
        // Tasks are freed only after they finish and are reaped, never while current.
        unsafe { &*self.current.get() }
    }

    /// A new reference to the running tasklet.
    #[inline]
    pub(crate) fn current_rc(&self) -> Rc<Task> {
        let ptr = self.current.get();
        // SAFETY: `ptr` came from `Rc::into_raw` of an `Rc<Task>` that is alive (see `current`);
        // incrementing first makes the `Rc` we build an additional owner.
        unsafe {
            Rc::increment_strong_count(ptr);
            Rc::from_raw(ptr)
        }
    }

    #[inline]
    pub(crate) fn is_current(&self, task: &Task) -> bool {
        ptr::eq(self.current.get(), task)
    }

    /// Runnable tasklets, the current one included.
    pub(crate) fn runcount(&self) -> usize {
        self.queued() + 1
    }

    pub(crate) fn default_stack_size(&self) -> usize {
        self.default_stack_size.get()
    }

    pub(crate) fn set_default_stack_size(&self, size: usize) {
        self.default_stack_size.set(size);
    }

    /// Creates a tasklet running `f` on a stack of `stack_size` usable bytes (already rounded),
    /// paused; the caller inserts it.
    #[inline(always)]
    pub(crate) fn create<F, T>(&self, f: F, name: Option<String>, stack_size: usize) -> io::Result<Rc<Task>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        if mem::size_of::<F>() > MAX_INLINE_CLOSURE || mem::align_of::<F>() > MAX_INLINE_ALIGN {
            let boxed = Box::new(f);
            return self.create_inline(move || (*boxed)(), name, stack_size);
        }
        self.create_inline(f, name, stack_size)
    }

    /// `create` for a closure small enough to live in the `Task` until the tasklet starts.
    fn create_inline<F, T>(&self, f: F, name: Option<String>, stack_size: usize) -> io::Result<Rc<Task>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        // Constant per `F`: folded away (`create` boxes the closures that do not fit).
        assert!(mem::size_of::<F>() <= MAX_INLINE_CLOSURE && mem::align_of::<F>() <= MAX_INLINE_ALIGN);
        self.pool.borrow_mut().reserve(stack_size)?;
        let id = self.next_id();
        let name: Option<Box<str>> = name.map(String::into_boxed_str);
        let start = Start { drop: drop_closure::<F>, entry: entry::<F, T> };
        self.created.set(self.created.get() + 1);
        let spare = self.spare.borrow_mut().pop();
        let task = match spare {
            Some(mut task) => {
                // Reset in place: building a fresh `Task` and moving it in cost a `memcpy` of
                // the whole struct, the largest single item of a spawn (callgrind).
                Rc::get_mut(&mut task).expect("spare tasks are unshared").reset(
                    id,
                    name,
                    stack_size,
                    start,
                    self.charged.get(),
                );
                task
            }
            None => Rc::new(Task {
                id,
                name,
                state: Cell::new(State::Paused),
                kill_pending: Cell::new(false),
                defer_kills: Cell::new(0),
                unwinding: Cell::new(false),
                ctx: Context::new(),
                stack: Cell::new(None),
                stack_size: Cell::new(stack_size),
                start: Cell::new(Some(start)),
                closure: ClosureBuf::new(),
                outcome: RefCell::new(None),
                joiners: RefCell::new(Vec::new()),
                has_joiners: Cell::new(false),
                slot: Cell::new(0),
                timer: TaskTimer::default(),
                // Written when the stack is taken, at the first switch (`give_stack`).
                overflow: Cell::new(OverflowInfo { guard: (0, 0), size: 0, id, name: (ptr::null(), 0) }),
                switches: Cell::new(0),
                cpu: Cell::new(0),
                last_ran: Cell::new(0),
                priority: Cell::new(Priority::Normal),
                spawned_at: Cell::new(None),
            }),
        };
        // SAFETY: the buffer is MAX_INLINE_CLOSURE bytes aligned to MAX_INLINE_ALIGN, enough for
        // an F (checked above); a fresh or reset task holds no closure there (`start` was
        // `None`: it started, or was killed before, and gave up the previous one).
        unsafe { ptr::write(task.closure.ptr().cast::<F>(), f) };
        if let Some(name) = task.name() {
            self.monitor.add_name(task.id, name);
        }
        self.tasks.borrow_mut().insert(&task);
        Ok(task)
    }

    /// The run queue, for exactly one operation.
    ///
    /// # Safety
    /// The returned reference must die before anything else can reach the queue: use it for a
    /// single `RunQueue` call and return any removed `Rc` to the caller before dropping it (a
    /// `Task`'s drop may log, and a logger could call back into the runtime).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn queue(&self) -> &mut RunQueue<Rc<Task>> {
        // SAFETY: the scheduler is confined to its thread (it is neither Send nor Sync), and per
        // this function's contract no other reference to the queue is alive.
        unsafe { &mut *self.queue.get() }
    }

    /// Appends a runnable tasklet to the back of its level of the run queue.
    #[inline]
    pub(crate) fn push_back(&self, task: Rc<Task>) {
        task.state.set(State::Runnable);
        let priority = task.priority.get();
        // SAFETY: one queue operation (see `queue`).
        unsafe { self.queue() }.push_back(task, priority);
    }

    /// Puts a runnable tasklet first in its level of the run queue.
    fn push_front(&self, task: Rc<Task>) {
        task.state.set(State::Runnable);
        let priority = task.priority.get();
        // SAFETY: one queue operation (see `queue`).
        unsafe { self.queue() }.push_front(task, priority);
    }

    /// The next tasklet to run (see `runqueue` for the rule across priority levels).
    #[inline]
    fn pop_front(&self) -> Option<Rc<Task>> {
        // SAFETY: one queue operation (see `queue`); the popped `Rc` goes to the caller.
        unsafe { self.queue() }.pop_front()
    }

    /// Runnable tasklets in the queue (the current one excluded).
    #[inline]
    fn queued(&self) -> usize {
        // SAFETY: one queue operation (see `queue`).
        unsafe { self.queue() }.len()
    }

    /// Takes a runnable tasklet out of the run queue; returns it if it was there.
    fn unqueue(&self, task: &Task) -> Option<Rc<Task>> {
        // SAFETY: one queue operation (see `queue`): the search and the removal touch only the
        // queue, and the removed `Rc` is returned to the caller.
        unsafe { self.queue() }.remove_first(|t| ptr::eq(&**t, task))
    }

    /// Sets a tasklet's priority. A tasklet waiting in the run queue moves to the back of its
    /// new level; the running one and blocked or paused ones only keep it for later.
    pub(crate) fn set_priority(&self, task: &Task, priority: Priority) {
        if task.priority.replace(priority) == priority {
            return;
        }
        // Only a runnable tasklet other than the current one is in the queue: skip the search
        // for the others (a tasklet spawned with a priority is still paused here).
        if task.state.get() != State::Runnable || self.is_current(task) {
            return;
        }
        if let Some(queued) = self.unqueue(task) {
            self.push_back(queued);
        }
    }

    /// [`wake`](Scheduler::wake) for a tasklet the caller has just seen blocked (a channel's
    /// partner taken from its wait list), without checking again.
    #[inline(always)]
    pub(crate) fn wake_blocked(&self, task: Rc<Task>) {
        debug_assert!(matches!(task.state.get(), State::Blocked(_)), "only a blocked tasklet is woken");
        self.wakeups.set(self.wakeups.get() + 1);
        self.push_back(task);
    }

    /// Wakes a blocked tasklet: it becomes runnable at the end of the run queue.
    ///
    /// A tasklet that is no longer blocked is left alone: one whose timeout fired, or that is
    /// being killed, is runnable (or running) while still listed as a waiter until it runs and
    /// its guard removes it, and waking it again would queue it twice. Every waker (timers,
    /// the reactor, joins, channels) relies on this one check.
    #[inline]
    pub(crate) fn wake(&self, task: Rc<Task>) {
        if matches!(task.state.get(), State::Blocked(_)) {
            self.wakeups.set(self.wakeups.get() + 1);
            self.push_back(task);
        }
    }

    /// `schedule()`: the current tasklet goes to the end of the run queue, the head runs.
    #[inline(always)]
    pub(crate) fn schedule(&self) {
        // Alone, there is nobody to switch to; but a watchdog must see the slice end.
        if self.queued() == 0 && !self.wake_due_while_alone() && self.watchdog.get() == u64::MAX {
            crate::sync::send_late_wakes(); // as if it switched
            if self.current().kill_pending.get() {
                let _ = self.deferred_kill(self.current(), Requeue::Back);
            }
            return;
        }
        let _ = self.switch_with::<true>(Requeue::Back, None);
    }

    /// The current tasklet is the only runnable one and gives up the CPU: a pass over the run
    /// queue is complete, so fire due timers and poll for I/O as `check_while_busy` does, lest
    /// a tasklet looping on `schedule()` starve them. Returns whether a tasklet became runnable.
    #[cold]
    fn wake_due_while_alone(&self) -> bool {
        if self.timers.borrow().len() == 0 && !self.reactor.has_waiters() {
            return false;
        }
        let now = self.reactor.poll_while_busy(); // one clock read for the poll and the timers
        self.fire_expired(now);
        self.queued() > 0
    }

    /// The current tasklet hands the CPU to `partner` now and goes to the end of the run queue
    /// (the channel rule "the partner runs immediately").
    pub(crate) fn yield_to(&self, partner: Rc<Task>) {
        partner.state.set(State::Runnable);
        let _ = self.switch(Requeue::Back, Some(partner));
    }

    /// Parks the current tasklet, which the caller has already registered in a wait list and
    /// marked `Blocked` (or `Paused`). Returns when it is made runnable again, or with
    /// [`Wake::Never`] when nothing can wake it (the caller then undoes its registration).
    /// When main gets [`Wake::Never`] (a deadlock), logs what it and every other tasklet wait
    /// on.
    #[inline]
    pub(crate) fn park(&self) -> Wake {
        let wake = self.switch(Requeue::No, None);
        if wake == Wake::Never && self.current().is_main() {
            self.main_deadlocked();
        }
        wake
    }

    /// [`park`](Scheduler::park) for a tasklet that registered itself in its wait list with
    /// the count [`lend_current`](Scheduler::lend_current) lent it: no reference-count
    /// traffic for the running tasklet on the way out (the channels' blocking path).
    #[inline(always)]
    pub(crate) fn park_lent(&self) -> Wake {
        let wake = self.switch_with::<true>(Requeue::Lent, None);
        if wake == Wake::Never && self.current().is_main() {
            self.main_deadlocked();
        }
        wake
    }

    /// The strong count of the running tasklet that `current` holds, lent to the wait list
    /// the tasklet registers in right before it parks with [`park_lent`](Scheduler::park_lent),
    /// instead of a new count (`current_rc`) that the park then drops.
    ///
    /// # Safety
    /// The caller must call `park_lent` next, and nothing in between may switch, read
    /// `current`'s count or panic: until the park, `current` holds no count of its own (the
    /// task stays alive: the registry, or `self.main`, keeps it).
    #[inline(always)]
    pub(crate) unsafe fn lend_current(&self) -> Rc<Task> {
        // SAFETY: `current` holds one strong count of the running task (see `current`); per
        // this function's contract, `park_lent` takes it as given to the wait list
        // (`Requeue::Lent`) without touching it.
        unsafe { Rc::from_raw(self.current.get()) }
    }

    /// Main's wait failed because nothing could ever wake it: logs what it and every other
    /// tasklet wait on, and makes it runnable again.
    #[cold]
    fn main_deadlocked(&self) {
        self.report_deadlock(self.main.state.get());
        self.main.state.set(State::Runnable);
    }

    /// Switches away from the current tasklet, which goes where `requeue` says, to `target` or
    /// the run queue's head. Whatever woke it, the tasklet is `Runnable` when this returns,
    /// except main on [`Wake::Never`], left in the state it waited in for its caller (`park`
    /// reports it, `run` restores it).
    ///
    /// Main and the other tasklets take the same path, and every ordinary hop is made from the
    /// same call site in this one function (the channels' blocks and `schedule()` inline its
    /// body instead, see `switch_with`): the `ret` that ends a switch then returns to the
    /// address the CPU's return-stack predictor expects, whichever tasklet it resumes. (With a
    /// separate path for main, each main ↔ tasklet hop mispredicted a chain of returns: 22 ns
    /// per hop instead of 16, accounting off.)
    #[inline(never)]
    fn switch(&self, requeue: Requeue, target: Option<Rc<Task>>) -> Wake {
        self.switch_with::<false>(requeue, target)
    }

    /// The body of [`switch`](Scheduler::switch); with `DIRECT`, inlined into its caller and
    /// switching with [`context::switch_direct`] (see "Direct switches" in `context`). Only
    /// for callers inlined into the code that resumes (`park_lent`, `schedule`): a resumed
    /// tasklet that returns before it switches again mispredicts that return.
    #[inline(always)]
    fn switch_with<const DIRECT: bool>(&self, requeue: Requeue, target: Option<Rc<Task>>) -> Wake {
        // The tasklet stops running: the cross-thread wakes it made late go now.
        crate::sync::send_late_wakes();
        let me = self.current();
        if me.kill_pending.get() {
            return self.deferred_kill(me, requeue);
        }
        let slice = self.end_slice(me);
        if slice > self.watchdog.get() && matches!(requeue, Requeue::Back | Requeue::Front) && !me.is_main() {
            return self.caught_by_watchdog(me, target);
        }
        let unwinding = self.note_unwinding(me);
        self.requeue_current(requeue);
        let wake = match self.next(target) {
            Some(next) if ptr::eq(&*next, me) => {
                // Alone in the run queue (with the watchdog on): go on without switching.
                self.current.set(Rc::into_raw(next));
                Wake::Woken
            }
            Some(next) => self.hop::<DIRECT>(me, next),
            None => self.nothing_runnable(me),
        };
        if unwinding {
            self.suspended_unwinding.set(self.suspended_unwinding.get() - 1);
        }
        if me.is_main() {
            // On `Never` the caller (`park`, `run`) still needs the state main waited in.
            if wake == Wake::Woken {
                me.state.set(State::Runnable);
            }
            return wake;
        }
        if me.kill_pending.get() {
            self.killed(me)
        } else {
            Wake::Woken
        }
    }

    /// Ends the current task's slice: counts it, and charges it when accounting. Returns the
    /// slice's length in ticks (0 without accounting). Stalls are the sysmon's business (see
    /// `monitor`): nothing here reads a clock unless accounting is on.
    #[inline(always)]
    fn end_slice(&self, me: &Task) -> u64 {
        let switches = self.monitor.count_switch(!me.is_main());
        if switches.is_multiple_of(monitor::CHECK_EVERY) {
            // A thread that never polls still answers snapshot requests (see `monitor`).
            self.monitor.answer_if_requested();
        }
        me.switches.set(me.switches.get() + 1);
        if !self.accounting.get() {
            return 0;
        }
        self.charge(me)
    }

    /// Moves the strong count `current` holds to where `requeue` says. `current` keeps pointing
    /// at the task (alive: see `current`) until `hop` or the caller replaces it.
    #[inline(always)]
    fn requeue_current(&self, requeue: Requeue) {
        // SAFETY: `current` holds one strong count of the running task (see `current`); this
        // takes it over, and each arm below hands it on or drops it while the registry (or
        // `self.main`, for main) keeps the task alive. With `Lent` the wait list holds it.
        let me = || unsafe { Rc::from_raw(self.current.get()) };
        match requeue {
            Requeue::Lent => {}
            Requeue::No => drop(me()),
            Requeue::Back => self.push_back(me()),
            Requeue::Front => self.push_front(me()),
        }
    }

    /// The task to run next: `target`, else the run queue's head (`None`: nothing is runnable).
    /// Checks timers and I/O first, once per pass over the run queue.
    #[inline(always)]
    fn next(&self, target: Option<Rc<Task>>) -> Option<Rc<Task>> {
        if self.watching() {
            if target.is_some() || self.queued() > 0 {
                self.check_while_busy();
            } else {
                // Nothing is runnable: the idle path polls and fires timers next, so only
                // what needs no poll is done here (checking fully would cost clock reads per
                // wait for nothing).
                self.reactor.answer_requests();
            }
        }
        match target {
            Some(task) => Some(task),
            None => self.pop_front(),
        }
    }

    /// Makes `next` current and switches to it from `me`, the task that was current (whose
    /// count `requeue_current` already moved). Returns when something switches back to `me`:
    /// [`Wake::Woken`], or for main what it was resumed for (see `Resume`).
    #[inline(always)]
    fn hop<const DIRECT: bool>(&self, me: &Task, next: Rc<Task>) -> Wake {
        self.hop_raw::<DIRECT>(me, next);
        match self.resume.get() {
            Resume::Run => Wake::Woken,
            why => self.main_resumed(why),
        }
    }

    /// `hop` without looking at why it was resumed.
    #[inline(always)]
    fn hop_raw<const DIRECT: bool>(&self, me: &Task, next: Rc<Task>) {
        if next.start.get().is_some() {
            self.give_stack(&next);
        }
        self.monitor.set_running(next.id);
        let next = Rc::into_raw(next);
        self.current.set(next);
        // SAFETY: `next` is a live task (its count is now `current`'s) other than `me`, whose
        // context was saved by its last switch or made by `create`, on a stack that stays
        // mapped until it is reaped; it runs on this thread (tasks never leave it). `me` stays
        // alive while switched away (registry, run queue or `self.main`), so its context can be
        // written now and read when it is resumed. No `RefCell` borrow is held here.
        unsafe {
            if DIRECT {
                context::switch_direct(&me.ctx, &(*next).ctx)
            } else {
                context::switch(&me.ctx, &(*next).ctx)
            }
        };
        self.resumed();
    }

    /// Whether timers are armed or tasklets wait on I/O (then a switch may have to check them).
    #[inline(always)]
    fn watching(&self) -> bool {
        // SAFETY: the length is read at once and no reference outlives this expression; the
        // scheduler is confined to its thread, so no `borrow_mut` can be live during it except
        // one on this thread's stack below us, which never calls a switch with timers borrowed
        // (no `RefCell` borrow is held across a switch, see the module comment).
        let armed = unsafe { self.timers.try_borrow_unguarded() }.map_or(true, |t| t.len() > 0);
        armed || self.reactor.has_waiters()
    }

    /// Gives a tasklet that has never run the stack it reserved, and its first frame there (see
    /// "Lazy stacks"). Called right before the first switch to it; out of line in the switch.
    #[inline(never)]
    fn give_stack(&self, task: &Task) {
        self.give_stack_inline(task);
    }

    /// `give_stack`, inlined where a tasklet finishes (`exit`): in a burst of spawns, that is
    /// where every tasklet but the first is started.
    #[inline(always)]
    fn give_stack_inline(&self, task: &Task) {
        let start = task.start.get().expect("only a tasklet that never ran gets a stack");
        let stack = self.pool.borrow_mut().take_reserved(task.stack_size.get());
        let name = task.name.as_deref().map_or((ptr::null(), 0), |n| (n.as_ptr(), n.len()));
        let overflow = OverflowInfo { guard: stack.guard(), size: stack.size(), id: task.id, name };
        // SAFETY: nothing else refers to the task's overflow info now: the signal handler reads
        // the current task's only, and this one is not current yet.
        unsafe { task.overflow.as_ptr().write(overflow) };
        // SAFETY: the stack's top is page aligned and the INIT_FRAME bytes below it are unused
        // memory of a stack the task now owns, mapped until it is reaped after its last switch;
        // `start.entry` is `entry::<F, T>` for the F that `create_inline` wrote in `closure`,
        // which stays there (in the task, alive while it runs) until `entry` moves it out.
        unsafe { task.ctx.init(stack.top(), start.entry, task.closure.ptr()) };
        task.stack.set(Some(stack));
    }

    /// Runs after every switch, on the stack switched to (and first thing in a fresh tasklet):
    /// reaps the tasklet that finished by switching here, if any.
    #[inline(always)]
    fn resumed(&self) {
        if let Some(finished) = self.zombie.take() {
            self.reap(finished);
        }
    }

    /// The current task gave up the CPU and nothing is runnable: main idles right here; any
    /// other tasklet switches to main to idle (see "Idling and deadlock").
    #[cold]
    fn nothing_runnable(&self, me: &Task) -> Wake {
        if me.is_main() {
            // `requeue_current` already moved the count `current` held; take a new one for
            // `main_idle` to give up, as if an idler had switched here.
            self.current.set(Rc::into_raw(self.main.clone()));
            return self.main_idle();
        }
        self.resume.set(Resume::Idle);
        self.hop_raw::<false>(me, self.main.clone());
        Wake::Woken
    }

    /// Main was switched to for a reason other than being picked (`why` is not `Run`).
    #[cold]
    fn main_resumed(&self, why: Resume) -> Wake {
        debug_assert!(self.current().is_main(), "only main is resumed to idle or stop");
        self.resume.set(Resume::Run);
        match why {
            Resume::Run | Resume::Stop => Wake::Never,
            Resume::Idle => self.main_idle(),
        }
    }

    /// The idle path, on main's stack, with `current` = main holding a count that main, still
    /// waiting (not queued), gives up. Runs tasklets as they become runnable until main itself
    /// is picked ([`Wake::Woken`]) or nothing could ever make a tasklet runnable, or the
    /// watchdog stops `run()` ([`Wake::Never`]).
    #[cold]
    fn main_idle(&self) -> Wake {
        let main = &*self.main;
        loop {
            self.requeue_current(Requeue::No);
            let Some(task) = self.idle() else {
                self.current.set(Rc::into_raw(self.main.clone()));
                return Wake::Never;
            };
            if self.accounting.get() {
                self.mark.set(clock::now()); // waiting is not running
            }
            if ptr::eq(&*task, main) {
                self.current.set(Rc::into_raw(task));
                return Wake::Woken;
            }
            self.hop_raw::<false>(main, task);
            match self.resume.replace(Resume::Run) {
                Resume::Run => return Wake::Woken,
                Resume::Stop => return Wake::Never,
                Resume::Idle => {}
            }
        }
    }

    /// The watchdog caught `me` (the current tasklet) overrunning its budget: it is paused and
    /// main resumes with `Resume::Stop`, so that `run()` returns it. A partner it handed the
    /// CPU to keeps its turn. Returns when `me` is inserted and runs again.
    #[cold]
    fn caught_by_watchdog(&self, me: &Task, target: Option<Rc<Task>>) -> Wake {
        me.state.set(State::Paused);
        if let Some(next) = target {
            self.push_front(next);
        }
        *self.caught.borrow_mut() = Some(self.current_rc());
        if self.main.state.get() == State::Runnable {
            // Inserted meanwhile: `run()` returns now, so main must not stay queued.
            drop(self.unqueue(&self.main));
        }
        self.requeue_current(Requeue::No);
        self.resume.set(Resume::Stop);
        self.hop_raw::<false>(me, self.main.clone());
        if me.kill_pending.get() {
            self.killed(me)
        } else {
            Wake::Woken
        }
    }

    /// The last switch of the current tasklet, which has finished (its outcome is recorded):
    /// it leaves itself in `zombie`, for whoever runs next to reap, and switches away for good.
    fn exit(&self) -> ! {
        crate::sync::send_late_wakes();
        let me = self.current();
        self.end_slice(me);
        // SAFETY: `current` holds one strong count of the running task (see `current`); it
        // moves to `zombie`, which keeps the task alive until it is reaped.
        self.zombie.set(Some(unsafe { Rc::from_raw(self.current.get()) }));
        let next = self.next(None).unwrap_or_else(|| {
            self.resume.set(Resume::Idle);
            self.main.clone()
        });
        if next.start.get().is_some() {
            self.give_stack_inline(&next);
        }
        self.monitor.set_running(next.id);
        let next = Rc::into_raw(next);
        self.current.set(next);
        // SAFETY: as in `hop_raw`, for `next`. Nothing on this stack needs dropping: `entry`
        // dropped everything before calling us, and `me` is a plain reference. The stack stays
        // mapped: it is released to the pool by `resumed` on the next task's side, after this
        // switch.
        unsafe { context::exit_to(&(*next).ctx) }
    }

    /// Charges the ticks since the last switch to `task`, which just stopped running; returns
    /// the length of its slice.
    #[inline]
    fn charge(&self, task: &Task) -> u64 {
        let now = clock::now();
        let slice = now.wrapping_sub(self.mark.get());
        self.mark.set(now);
        task.cpu.set(task.cpu.get() + slice);
        task.last_ran.set(now);
        slice
    }

    /// Logs what the main tasklet waited for and what every other tasklet waits on, when the
    /// main tasklet's blocking operation is about to fail with a deadlock error.
    #[cold]
    fn report_deadlock(&self, main_state: State) {
        let main = match main_state {
            State::Blocked(on) => format!("blocked in {on:?}"),
            _ => "paused".to_owned(),
        };
        let message = format!(
            "deadlock: the main tasklet is {main} and nothing can wake it; {}",
            crate::debug::deadlock_report()
        );
        crate::debug::warn(crate::debug::Report::Deadlock, &message);
        self.monitor.record(monitor::EventKind::Deadlock, None, message);
    }

    /// What other threads may see of this scheduler.
    pub(crate) fn monitor(&self) -> &Arc<monitor::Shared> {
        &self.monitor
    }

    /// Turns per-tasklet CPU accounting on or off (off by default).
    pub(crate) fn set_accounting(&self, on: bool) {
        if on && !self.accounting.get() {
            self.mark.set(clock::now());
            self.charged.set(true);
        }
        self.accounting.set(on);
    }

    pub(crate) fn accounting_on(&self) -> bool {
        self.accounting.get()
    }

    pub(crate) fn set_stall_threshold(&self, threshold: Option<Duration>) {
        self.monitor.set_stall_threshold(threshold);
    }

    /// `(switches, wakeups, polls)` since the scheduler was created.
    pub(crate) fn counters(&self) -> (u64, u64, u64) {
        (self.monitor.switches.load(Ordering::Relaxed), self.wakeups.get(), self.reactor.polls())
    }

    /// Every live tasklet, main first, then by id.
    pub(crate) fn all_tasks(&self) -> Vec<Rc<Task>> {
        let mut all = vec![self.main.clone()];
        all.extend(self.tasks.borrow().all());
        all
    }

    /// `run_watchdog(budget)`: as `run`, but a tasklet whose slice exceeds `budget` (measured
    /// when it gives up the CPU) is paused and returned.
    #[track_caller]
    pub(crate) fn run_watchdog(&self, budget: Duration) -> Option<Rc<Task>> {
        let was_accounting = self.accounting.get();
        self.set_accounting(true);
        self.watchdog.set(clock::to_ticks(budget));
        self.run();
        self.watchdog.set(u64::MAX);
        self.accounting.set(was_accounting);
        self.caught.borrow_mut().take()
    }

    /// While tasklets are runnable, fires expired timers and polls for I/O (without blocking,
    /// and at most every 50 µs) once per pass over the run queue or every
    /// [`BUSY_CHECK_EVERY`] switches, whichever comes first, so that a busy thread does not
    /// starve them. Costs one clock read per check. Tasklets whose timer fired here run before
    /// the others in the queue (in deadline order): behind a burst of thousands of runnable
    /// tasklets, a deadline would otherwise be as late as the burst is long.
    fn check_while_busy(&self) {
        let n = self.since_busy_check.get() + 1;
        // Not before the tasklets fired by the last check have had their turn, so that a later
        // batch does not overtake an earlier one.
        if n <= self.queued().min(BUSY_CHECK_EVERY).max(self.busy_fired.get()) {
            self.since_busy_check.set(n);
            return;
        }
        self.since_busy_check.set(0);
        let now = self.reactor.poll_while_busy(); // one clock read for the poll and the timers
        self.fire_expired(now);
    }

    /// Wakes the tasklets whose deadline is not after `now`: they go first in the run queue,
    /// in deadline order (ties in arming order). The next check while busy waits until they
    /// all had their turn, so that a later batch never overtakes an earlier one.
    fn fire_expired(&self, now: Instant) {
        let mut woken = Vec::new();
        loop {
            let expired = self.timers.borrow_mut().pop_expired(now);
            let Some(task) = expired else { break };
            if matches!(task.state.get(), State::Blocked(_)) {
                woken.push(task);
            }
        }
        // Their stacks and tasks are cold: start loading the registers each resume pops first
        // and the task's fields, so that the misses overlap (see "Prefetching" in `stack`).
        for task in &woken {
            prefetch_resume(task);
            let at = Rc::as_ptr(task) as usize;
            for line in (0..size_of::<Task>()).step_by(64) {
                crate::timer::prefetch(at + line);
            }
        }
        self.wakeups.set(self.wakeups.get() + woken.len() as u64);
        self.busy_fired.set(woken.len());
        self.since_busy_check.set(0);
        for task in woken.into_iter().rev() {
            self.push_front(task);
        }
    }

    /// Nothing is runnable: waits for the first deadline and returns the first tasklet made
    /// runnable, or `None` when nothing could ever make one runnable.
    #[cold]
    fn idle(&self) -> Option<Rc<Task>> {
        loop {
            let deadline = self.timers.borrow().next_deadline();
            if deadline.is_none() && !self.reactor.has_waiters() {
                return None; // nothing could ever make a tasklet runnable
            }
            // Without a timer the clock matters only for the epoch: the last poll's reading
            // will do (a poll that skips its system call reads none; see `Reactor::poll`).
            let now = if deadline.is_some() { Instant::now() } else { self.reactor.polled_at() };
            if now.saturating_duration_since(self.epoch_start.get()) >= EPOCH {
                self.epoch_start.set(now);
                self.end_epoch();
            }
            // Rounded up to the slack grid: deadlines within one cell cost one wake-up.
            let timeout = deadline.map(|d| self.timers.borrow().wake_at(d).saturating_duration_since(now));
            self.monitor.set_idle(true);
            let polled = self.reactor.poll(timeout);
            if !polled {
                // No poller: timers still work by sleeping; I/O waits cannot.
                match timeout {
                    Some(timeout) => std::thread::sleep(timeout),
                    None => {
                        self.monitor.set_idle(false);
                        return None;
                    }
                }
            }
            self.monitor.set_idle(false);
            if deadline.is_some() {
                // The reactor's clock read after its wait, not another one.
                self.fire_expired(if polled { self.reactor.polled_at() } else { Instant::now() });
            } else {
                // No timer was armed and a poll arms none: nothing to fire.
                self.busy_fired.set(0);
                self.since_busy_check.set(0);
            }
            if let Some(task) = self.pop_front() {
                return Some(task);
            }
        }
    }

    /// The reactor (poller, fd waiters, cross-thread wake-ups).
    pub(crate) fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// The armed timers.
    pub(crate) fn timers(&self) -> RefMut<'_, Timers> {
        self.timers.borrow_mut()
    }

    /// Frees what a finished tasklet held: its stack goes back to the pool, its registry entry
    /// goes away (the `Task` itself lives on while handles exist).
    /// A task no handle refers to any more is kept for reuse, which saves an allocation and a
    /// free per spawn (the allocator's slow paths dominated spawn+finish in profiles).
    /// Runs after the tasklet's last switch (or for a tasklet that never started), never on
    /// its own stack.
    #[inline(never)]
    fn reap(&self, task: Rc<Task>) {
        self.reap_inline(task);
    }

    /// `reap`, inlined where a fresh tasklet starts (`entry`): in a burst of spawns, each
    /// tasklet reaps the one before it there.
    #[inline(always)]
    fn reap_inline(&self, task: Rc<Task>) {
        match task.stack.take() {
            Some(stack) => self.pool.borrow_mut().release(stack),
            // Killed before it ever ran: it only reserved one.
            None => self.pool.borrow_mut().unreserve(task.stack_size.get()),
        }
        let registered = self.tasks.borrow_mut().remove(&task);
        drop(registered);
        if task.name.is_some() {
            self.monitor.remove_name(task.id);
        }
        if Rc::strong_count(&task) == 1 && Rc::weak_count(&task) == 0 {
            task.discard_outcome();
            self.spare.borrow_mut().push(task);
        }
    }

    /// Records a finished tasklet's outcome and wakes its joiners. Runs on the tasklet's stack
    /// (or, for a tasklet killed before it started, on the killer's).
    #[inline]
    fn finish(&self, task: &Task, outcome: Outcome) {
        *task.outcome.borrow_mut() = Some(outcome);
        task.state.set(State::Finished);
        if task.has_joiners.get() {
            self.wake_joiners(task);
        }
    }

    #[cold]
    fn wake_joiners(&self, task: &Task) {
        let joiners = std::mem::take(&mut *task.joiners.borrow_mut());
        task.has_joiners.set(false);
        for joiner in joiners {
            self.wake(joiner);
        }
    }

    /// `run()`: the main tasklet leaves the run queue; tasklets run until none is runnable, or
    /// until main is inserted again.
    #[track_caller]
    pub(crate) fn run(&self) {
        assert!(
            self.current().is_main(),
            "tasklets::run must be called from the main tasklet (tasklets use schedule())"
        );
        self.main.state.set(State::Paused);
        let _ = self.run_others();
        self.main.state.set(State::Runnable);
        self.end_epoch();
    }

    /// Main runs the other tasklets until it is inserted again or none is runnable (or the
    /// watchdog stops it), without the deadlock report of a blocking operation.
    fn run_others(&self) -> Wake {
        self.switch(Requeue::No, None)
    }

    /// Ends an epoch of the stack pool and of the spare tasks (the thread is idle): memory the
    /// epoch did not need goes back.
    /// (`idle` also starts a new epoch every [`EPOCH`] while the thread keeps going idle without
    /// `run()` returning; `run()` itself reads no clock.)
    fn end_epoch(&self) {
        self.pool.borrow_mut().trim();
        let keep = self.created.replace(0).max(stack::HOT_STACKS);
        let excess: Vec<Rc<Task>> = {
            let mut spare = self.spare.borrow_mut();
            let at = keep.min(spare.len());
            spare.split_off(at)
        };
        drop(excess);
    }

    /// `schedule_remove()`: the current tasklet is paused and the next one runs.
    pub(crate) fn schedule_remove(&self) -> Wake {
        self.current().state.set(State::Paused);
        self.park()
    }

    /// `insert()`: a paused tasklet goes to the end of the run queue.
    pub(crate) fn insert(&self, task: &Rc<Task>) -> Result<(), crate::StateError> {
        match task.state.get() {
            State::Paused => {
                self.push_back(task.clone());
                Ok(())
            }
            State::Runnable => Ok(()),
            State::Blocked(_) => Err(crate::StateError::Blocked),
            State::Finished => Err(crate::StateError::Dead),
        }
    }

    /// `remove()`: a runnable tasklet leaves the run queue and is paused.
    pub(crate) fn remove(&self, task: &Task) -> Result<(), crate::StateError> {
        match task.state.get() {
            _ if self.is_current(task) => Err(crate::StateError::Current),
            State::Runnable => {
                let queued = self.unqueue(task);
                debug_assert!(queued.is_some(), "a runnable tasklet that is not current is queued");
                task.state.set(State::Paused);
                Ok(())
            }
            State::Paused => Ok(()),
            State::Blocked(_) => Err(crate::StateError::Blocked),
            State::Finished => Err(crate::StateError::Dead),
        }
    }

    /// `t.run()`: switch to `task` now; the caller stays runnable, first in line.
    pub(crate) fn run_task(&self, task: &Rc<Task>) -> Result<(), crate::StateError> {
        if self.is_current(task) {
            return Ok(());
        }
        match task.state.get() {
            State::Runnable => {
                self.unqueue(task);
            }
            State::Paused => {}
            State::Blocked(_) => return Err(crate::StateError::Blocked),
            State::Finished => return Err(crate::StateError::Dead),
        }
        self.switch_now(task.clone());
        Ok(())
    }

    /// Runs `task` immediately; the current tasklet is put first in the run queue, so it runs
    /// as soon as `task` gives up the CPU.
    fn switch_now(&self, task: Rc<Task>) {
        task.state.set(State::Runnable);
        let _ = self.switch(Requeue::Front, Some(task));
    }
}

/// Starts loading what resuming `task` reads first: the registers saved on its stack and the
/// line just above them, where the resumed code's own frame continues. A tasklet woken after
/// a while resumes on a cold stack page (a TLB and cache miss), and the wakers that wake many
/// at once (due timers, a poll's events) prefetch them all so that the misses overlap (see
/// "Prefetching" in `stack`).
#[inline]
pub(crate) fn prefetch_resume(task: &Task) {
    let sp = task.ctx.saved_sp();
    crate::timer::prefetch(sp);
    crate::timer::prefetch(sp.wrapping_add(crate::context::INIT_FRAME));
}

/// Returned when the main tasklet would wait for something that can never happen: nothing else
/// is runnable, so nothing could ever wake it.
///
/// Its message names every other tasklet and what it waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlockError {
    what: &'static str,
    report: String,
}

impl DeadlockError {
    pub(crate) fn new(what: &'static str) -> Self {
        DeadlockError { what, report: crate::debug::deadlock_report() }
    }
}

impl fmt::Display for DeadlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deadlock: the main tasklet would block in {} with no other tasklet runnable ({})",
            self.what, self.report
        )
    }
}

impl std::error::Error for DeadlockError {}

/// Gives up the CPU: the current tasklet goes to the end of the run queue and the head of the
/// queue runs (Stackless `schedule`). Returns at once when nothing else is runnable.
///
/// # Examples
///
/// Listing 2 of the Stackless article: two tasklets interleave at each `schedule()`.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// let out = Rc::new(RefCell::new(Vec::new()));
/// for c in ["a", "b"] {
///     let out = out.clone();
///     tasklets::spawn(move || {
///         out.borrow_mut().push(format!("{c} before"));
///         tasklets::schedule();
///         out.borrow_mut().push(format!("{c} after"));
///     });
/// }
/// tasklets::run();
/// assert_eq!(*out.borrow(), ["a before", "b before", "a after", "b after"]);
/// ```
#[inline]
pub fn schedule() {
    scheduler().schedule()
}

/// Gives up the CPU and leaves the current tasklet paused (alive, not in the run queue) until
/// another tasklet calls [`insert`](crate::Tasklet::insert) or [`run`](crate::Tasklet::run) on
/// it (Stackless `schedule_remove`).
///
/// # Errors
/// In the main tasklet, [`DeadlockError`] when no other tasklet is runnable, or all of them
/// finish or block without inserting main again. A tasklet never gets an error: it stays
/// paused until inserted.
///
/// # Examples
///
/// ```
/// let main = tasklets::current();
/// tasklets::spawn(move || main.insert().unwrap());
/// tasklets::schedule_remove().unwrap(); // the tasklet inserts main again
/// assert!(tasklets::schedule_remove().is_err()); // now nobody would
/// ```
pub fn schedule_remove() -> Result<(), DeadlockError> {
    match scheduler().schedule_remove() {
        Wake::Woken => Ok(()),
        Wake::Never => Err(DeadlockError::new("schedule_remove")),
    }
}

/// Runs the tasklets of the calling thread until none is runnable, then returns (Stackless
/// `run`). While the only tasklets left wait for a deadline, for I/O or for a function running
/// on another thread, the thread sleeps in its poller until one of them can go on: `run`
/// returns when no tasklet is runnable and none waits for any of these. The main
/// tasklet leaves the run queue while it runs them; tasklets still blocked on channels
/// afterwards stay blocked. If a tasklet inserts the main tasklet again, `run` returns when the
/// main tasklet's turn comes.
///
/// A panic in a tasklet ends that tasklet only: `run` does not re-raise it (unlike Stackless,
/// and like `std::thread`); [`Tasklet::join`](crate::Tasklet::join) returns it, and it is
/// logged if the tasklet is dropped without being joined.
///
/// # Panics
/// Panics when called from a tasklet other than the main one (they use [`schedule`]).
///
/// # Examples
///
/// ```
/// let t = tasklets::spawn(|| tasklets::schedule());
/// tasklets::run();
/// assert!(!t.is_alive());
/// assert_eq!(tasklets::runcount(), 1);
/// ```
#[track_caller]
pub fn run() {
    scheduler().run()
}

/// Runs the tasklets like [`run`], but a tasklet that holds the CPU longer than `budget` before
/// giving it up is paused and returned, as Stackless's `run(timeout)` does; the others stay
/// queued, and calling it (or `run`) again continues them. Returns `None` when no tasklet
/// overran.
///
/// The check happens when the tasklet gives up the CPU by `schedule()` or `Tasklet::run`;
/// native code cannot be preempted, so an overrun is seen only afterwards. A tasklet that
/// overran and then blocks (on a channel, I/O) stays blocked and is not returned; the stall
/// report ([`set_stall_threshold`](crate::set_stall_threshold)) names it.
///
/// # Panics
/// As [`run`]: when called from a tasklet other than the main one.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// let hog = tasklets::spawn(|| loop {
///     let start = Instant::now();
///     while start.elapsed() < Duration::from_millis(5) {} // computes without yielding
///     tasklets::schedule();
/// });
/// let caught = tasklets::run_watchdog(Duration::from_millis(1)).expect("the hog overran");
/// assert_eq!(caught, hog);
/// assert!(hog.is_paused());
/// hog.kill();
/// ```
#[track_caller]
pub fn run_watchdog(budget: Duration) -> Option<crate::Tasklet> {
    scheduler().run_watchdog(budget).map(crate::Tasklet::from_task)
}

/// The number of runnable tasklets of the calling thread, the current one included (Stackless
/// `getruncount`; at least 1).
pub fn runcount() -> usize {
    scheduler().runcount()
}

/// Sets the stack size used by tasklets created afterwards on the calling thread without an
/// explicit [`Builder::stack_size`](crate::Builder::stack_size).
///
/// # Errors
/// `InvalidInput` when `size` exceeds [`MAX_STACK_SIZE`](crate::MAX_STACK_SIZE).
pub fn set_default_stack_size(size: usize) -> io::Result<()> {
    let size = stack::usable_size(size)?;
    scheduler().set_default_stack_size(size);
    Ok(())
}

/// The root of every tasklet, called by the context trampoline on the tasklet's fresh stack
/// with the address of its closure in its `Task` (see `create_inline`, `give_stack`). Moves the
/// closure onto the stack, runs it and makes the tasklet's last switch.
///
/// `extern "C"`: an unwind cannot leave it (it would abort rather than cross the trampoline),
/// and none does: the closure runs in `catch_unwind`.
///
/// # Safety
/// Only entered through a context made by `give_stack`, with `closure` pointing at an `F` that
/// `create_inline` wrote, which nothing else reads or drops once the task's `start` is taken.
unsafe extern "C" fn entry<F, T>(closure: *mut u8) -> !
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let sched = scheduler();
    // As `resumed`, with the reaping inlined (see `reap_inline`).
    if let Some(finished) = sched.zombie.take() {
        sched.reap_inline(finished);
    }
    {
        let me = sched.current();
        me.start.set(None);
        // SAFETY: per this function's contract an `F` lives at `closure`; `start` is now
        // `None`, so `kill` will not drop it: we own it from here.
        let f = unsafe { ptr::read(closure.cast::<F>()) };
        let outcome = match panic::catch_unwind(AssertUnwindSafe(f)) {
            // Killed inside `with_kills_deferred` and returned before reaching a switch point.
            Ok(_) if me.kill_pending.replace(false) => Outcome::Killed,
            Ok(value) if mem::size_of::<T>() == 0 && !mem::needs_drop::<T>() => {
                mem::forget(value); // nothing to drop, nothing to keep: `zst_again` makes it
                Outcome::ReturnedZst(zst_again::<T>)
            }
            Ok(value) => Outcome::Returned(Box::new(value)),
            Err(payload) if payload.is::<TaskletExit>() => Outcome::Killed,
            Err(payload) => Outcome::Panicked(payload),
        };
        sched.finish(me, outcome);
    }
    sched.exit()
}

/// Drops a never-started tasklet's closure in place.
///
/// # Safety
/// `closure` points at a live `F` that nothing uses afterwards.
unsafe fn drop_closure<F>(closure: *mut u8) {
    // SAFETY: per this function's contract.
    unsafe { ptr::drop_in_place(closure.cast::<F>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tasklet's backtrace ends at the context trampoline (its CFI marks the outermost
    /// frame), right below the tasklet's root: nothing above the stack top is walked.
    #[test]
    fn backtrace_in_a_tasklet_stops_at_the_trampoline() {
        let text = Rc::new(RefCell::new(String::new()));
        let out = text.clone();
        let sched = scheduler();
        let task = sched
            .create(
                move || *out.borrow_mut() = std::backtrace::Backtrace::force_capture().to_string(),
                None,
                stack::DEFAULT_STACK_SIZE,
            )
            .unwrap();
        sched.push_back(task);
        sched.run();
        let text = text.borrow();
        let frames: Vec<&str> = text
            .lines()
            .map(str::trim_start)
            .filter(|l| l.split(':').next().is_some_and(|n| n.parse::<u32>().is_ok()))
            .collect();
        assert!(
            frames.last().is_some_and(|f| f.contains("context::") && f.contains("::trampoline")),
            "{text}"
        );
        assert!(frames.iter().rev().nth(1).is_some_and(|f| f.contains("scheduler::entry")), "{text}");
    }

    /// Closures live at the top of the tasklet's stack, or boxed when large or over-aligned.
    #[test]
    fn large_and_over_aligned_closures_run() {
        #[repr(align(32))]
        struct A32([u8; 32]);
        #[repr(align(128))]
        struct A128([u8; 128]);
        let big = [7u8; 4 * MAX_INLINE_CLOSURE];
        let (a32, a128) = (A32([1; 32]), A128([2; 128]));
        let t1 = crate::spawn(move || big.iter().map(|&b| u32::from(b)).sum::<u32>());
        let t2 = crate::spawn(move || (&a32 as *const A32 as usize % 32, a32.0[31]));
        let t3 = crate::spawn(move || (&a128 as *const A128 as usize % 128, a128.0[127]));
        run();
        assert_eq!(t1.join().unwrap(), 7 * 4 * MAX_INLINE_CLOSURE as u32);
        assert_eq!(t2.join().unwrap(), (0, 1));
        assert_eq!(t3.join().unwrap(), (0, 2));
    }
}
