//! The per-thread scheduler: the run queue, switching, parking, killing and teardown.
//!
//! # Model
//!
//! Each OS thread has at most one scheduler, created lazily on first use and torn down by a
//! thread-local destructor. The thread's own stack is the **main tasklet**; every other tasklet
//! runs on a pooled guarded stack (see [`crate::stack`]) as a `corosensei` coroutine.
//!
//! Corosensei coroutines are asymmetric (resume / suspend back to the resumer), so the main
//! stack doubles as the **dispatcher**: a tasklet that gives up the CPU suspends to the main
//! stack with a [`Switch`] request (requeue me at the back / at the front / not at all, and the
//! tasklet to run next, if any); the dispatch loop there carries it out with the `Rc` it already
//! holds and resumes the target, or the head of the run queue. When the loop picks the main
//! tasklet itself, it returns into main's code. A switch between two tasklets is therefore two
//! stack switches (suspend + resume, ~1 ns each), one queue push and one pop, and no reference
//! count traffic.
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
//!   Runnable ── returns, panics or is killed ──► Finished
//! ```
//!
//! Invariants (checked by the tests, relied upon everywhere):
//! - A `Runnable` tasklet is the current one, or in the run queue exactly once, or carried in a
//!   [`Switch`] during the instant between a suspend and the dispatcher picking it up.
//! - A `Blocked` tasklet is registered in exactly one wait list (a channel's waiters, a
//!   tasklet's joiners), and removes itself from it when it is woken in any other way (kill,
//!   deadlock), by a drop guard on its own stack.
//! - Every tasklet that has not finished is in `tasks`, which owns it: dropping every handle of
//!   a paused tasklet does not free it (it is killed at thread exit, like a leaked thread).
//! - No `RefCell` borrow of scheduler state is held across a switch.
//!
//! # Killing
//!
//! `kill()` sets the target's `kill_pending` flag and switches to it at once, with the caller
//! first in the run queue; the target's suspension point sees the flag and unwinds with the
//! [`TaskletExit`] payload (`resume_unwind`, so no panic hook runs), which the tasklet's root
//! catches. Destructors on its stack run, including the guards that take it out of wait lists.
//! Then the caller continues. A tasklet that never started is not switched to at all: its
//! closure is dropped in place.
//!
//! ## Deferred kills
//!
//! Code called through a C ABI frame (the `tasklet-shims` hooks, reached from std's
//! `extern "C"` call to `recv`) must not unwind: unwinding into a frame that was compiled as
//! a non-unwinding call aborts the process. Such code runs its waits inside
//! [`crate::io::with_kills_deferred`], which counts on the task (`defer_kills`). A kill that
//! finds the tasklet parked there makes the wait return [`Wake::Never`] (so the blocking call
//! fails with an error instead of unwinding) and stays pending; any later wait in the scope
//! fails at once without parking. The kill is delivered at the first switch point outside
//! the scope, or, if the tasklet returns first, by recording it as killed.
//!
//! # Deadlock
//!
//! When the dispatch loop finds nothing to run, it returns to main. If main was blocked (a
//! channel operation, a join, `schedule_remove`), nothing can ever wake it, so the operation
//! fails with a deadlock error instead of hanging. If main was in `run()`, `run()` returns and
//! the tasklets still blocked stay blocked.
//!
//! # Teardown
//!
//! When the thread exits, a thread-local destructor kills every remaining tasklet (running
//! their destructors), then unmaps the stacks. A tasklet that survives three kills (it catches
//! `TaskletExit` and blocks again) is leaked with its stack, with a warning.
//!
//! Rejected alternatives: a symmetric "switch to tasklet X" would save one stack switch per
//! hop but corosensei does not offer it, and the dispatcher is also what makes deadlock
//! detection and `run()` trivially correct. Moving tasklets between threads: unsound (TLS
//! addresses are cached by LLVM across calls), so every handle is `!Send`.

use std::any::Any;
use std::cell::{Cell, RefCell, RefMut, UnsafeCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::clock;
use crate::reactor::{Direction, Reactor};
use crate::stack::{self, OverflowInfo, Stack, StackPool};
use crate::timer::{TimerKey, Timers};

/// The panic payload that [`Tasklet::kill`](crate::Tasklet::kill) unwinds a tasklet with.
///
/// It is raised with [`std::panic::resume_unwind`], so the panic hook does not run and nothing
/// is printed; the tasklet's root catches it and the tasklet ends as *killed*. Code that catches
/// unwinds inside a tasklet (`catch_unwind`) can recognise it with `payload.is::<TaskletExit>()`
/// and should re-raise it with `resume_unwind`, as Python code re-raises `TaskletExit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskletExit;

impl fmt::Display for TaskletExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tasklet killed")
    }
}

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
    Panicked(Box<dyn Any + Send>),
    Killed,
    /// The result was taken by a `join`.
    Taken,
}

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

/// What a tasklet that suspends asks the dispatch loop to do (the coroutine's yield value).
pub(crate) struct Switch {
    requeue: Requeue,
    /// The tasklet to run next; `None` for the run queue's head.
    target: Option<Rc<Task>>,
}

/// Where the suspending tasklet goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Requeue {
    /// Nowhere: it registered itself in a wait list, or it is paused.
    No,
    /// To the end of the run queue.
    Back,
    /// To the front of the run queue (it runs right after the target).
    Front,
}

type Coro = Coroutine<(), Switch, (), Stack>;

/// One tasklet. Shared (`Rc`) by its handles, the scheduler's registry, the run queue and the
/// wait list it is blocked in.
pub(crate) struct Task {
    id: u64,
    name: Option<Box<str>>,
    state: Cell<State>,
    kill_pending: Cell<bool>,
    /// Depth of `with_kills_deferred` scopes: while non-zero a kill never unwinds (see
    /// "Deferred kills" in the module comment).
    defer_kills: Cell<u32>,
    /// The coroutine; `None` for the main tasklet and once finished.
    coro: UnsafeCell<Option<Coro>>,
    /// The coroutine's yielder, set by the tasklet's root before any user code runs.
    yielder: Cell<*const Yielder<(), Switch>>,
    outcome: RefCell<Option<Outcome>>,
    /// Tasklets blocked in `join` on this one, in arrival order.
    joiners: RefCell<Vec<Rc<Task>>>,
    /// Index in the scheduler's registry.
    slot: Cell<usize>,
    /// The timer armed for the tasklet's current wait, if any (see `timer`).
    timer: Cell<Option<TimerKey>>,
    /// For the stack overflow handler.
    overflow: OverflowInfo,
    /// Accounting (see `Scheduler::charge`): times it ran, clock ticks spent running, and the
    /// tick at which it last stopped running (0: never ran).
    switches: Cell<u64>,
    cpu: Cell<u64>,
    last_ran: Cell<u64>,
}

impl Task {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
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
        self.timer.get()
    }

    /// `(switches, cpu ticks, last_ran tick)`, for introspection.
    pub(crate) fn accounting(&self) -> (u64, u64, u64) {
        (self.switches.get(), self.cpu.get(), self.last_ran.get())
    }

    pub(crate) fn set_timer(&self, key: Option<TimerKey>) {
        self.timer.set(key);
    }

    /// Whether the closure has begun running (the main tasklet always has).
    fn started(&self) -> bool {
        // SAFETY: `coro` is only mutated by the dispatcher on the main stack, never while a
        // reference obtained here is alive (this reads a flag and returns).
        unsafe { (*self.coro.get()).as_ref().is_none_or(Coro::started) }
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
    }

    /// Removes `joiner` if it is still registered (its join was interrupted).
    pub(crate) fn remove_joiner(&self, joiner: &Task) {
        self.joiners.borrow_mut().retain(|j| !ptr::eq(&**j, joiner));
    }
}

impl Task {
    /// Drops the outcome nobody can join any more, logging a panic that was never seen.
    fn discard_outcome(&self) {
        if let Some(Outcome::Panicked(payload)) = self.outcome.borrow_mut().take() {
            log::error!(
                "tasklet {} panicked and was never joined: {}",
                Describe(self.id, self.name.as_deref()),
                panic_message(&*payload)
            );
        }
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

const MAIN_SLOT: usize = usize::MAX;

/// A tasklet that runs this long without giving up the CPU is logged as a stall.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(100);

/// Longest an epoch of the stack pool lasts while the thread keeps going idle without `run()`
/// returning (a server waiting on timers).
const EPOCH: Duration = Duration::from_secs(1);

/// Process-unique tasklet ids, handed to each thread in blocks so that spawning touches no
/// shared cache line.
static NEXT_ID_BLOCK: AtomicU64 = AtomicU64::new(1);
const ID_BLOCK: u64 = 1024;

/// The per-thread scheduler.
pub(crate) struct Scheduler {
    main: Rc<Task>,
    /// The running tasklet. Owned by `main` or by the dispatch loop's local `Rc` while it runs.
    current: Cell<*const Task>,
    /// Runnable tasklets other than the current one, in order. Only touched through the
    /// one-operation methods `push_back`, `push_front`, `pop_front`, `unqueue`, `queued`.
    queue: UnsafeCell<VecDeque<Rc<Task>>>,
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
    /// The readiness poller and the tasklets parked on fds or on other threads.
    reactor: Reactor,
    /// Per-tasklet CPU accounting (one clock read per switch) is on.
    accounting: Cell<bool>,
    /// Clock tick of the last switch (when accounting).
    mark: Cell<u64>,
    /// A slice longer than this many ticks is logged as a stall (`u64::MAX`: never).
    stall: Cell<u64>,
    /// During `run_watchdog`: a slice longer than this many ticks pauses the tasklet.
    watchdog: Cell<u64>,
    /// The tasklet the watchdog caught.
    caught: RefCell<Option<Rc<Task>>>,
    /// Tasklets resumed, and tasklets woken from a wait, since the scheduler was created.
    switches: Cell<u64>,
    wakeups: Cell<u64>,
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

thread_local! {
    /// This thread's scheduler: null until first use, `DEAD` after teardown.
    static SCHED: Cell<*const Scheduler> = const { Cell::new(ptr::null()) };
    /// Owns the scheduler and tears it down when the thread exits.
    static TEARDOWN: Teardown = const { Teardown };
}

const DEAD: *const Scheduler = ptr::dangling();

struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        let sched = SCHED.with(Cell::get);
        if sched.is_null() || sched == DEAD {
            return;
        }
        // SAFETY: the live scheduler of this thread (see `scheduler`). It stays published while
        // the remaining tasklets are killed, so their destructors may still use the runtime.
        unsafe { &*sched }.teardown();
        SCHED.with(|s| s.set(DEAD));
        // SAFETY: the pointer came from `Box::into_raw` in `init` and is released once, here;
        // SCHED now holds DEAD, so no new reference to it can be made.
        drop(unsafe { Box::from_raw(sched as *mut Scheduler) });
    }
}

/// The stack of the tasklet running on this thread, for the stack overflow handler: `None` on
/// threads without a scheduler. Async-signal-safe: reads a const thread-local and two pointers.
pub(crate) fn running_stack() -> Option<&'static OverflowInfo> {
    let sched = SCHED.with(Cell::get);
    if sched.is_null() || sched == DEAD {
        return None;
    }
    // SAFETY: the live scheduler of this thread (see `scheduler`); `current` always points to a
    // live task (see `Scheduler::current`): the dispatch loop resets it to main right after
    // `resume` returns, before it can drop the tasklet it ran.
    let task = unsafe { &*(*sched).current.get() };
    Some(&task.overflow)
}

/// The calling thread's scheduler if it has one (it never made a tasklet, channel wait or
/// handle otherwise).
pub(crate) fn existing_scheduler() -> Option<&'static Scheduler> {
    let sched = SCHED.with(Cell::get);
    if sched.is_null() || sched == DEAD {
        return None;
    }
    // SAFETY: see `scheduler`.
    Some(unsafe { &*sched })
}

/// The calling thread's scheduler, created on first use.
///
/// The reference is valid for the rest of the thread's life: the scheduler is freed only by the
/// thread-local destructor. It must never be sent to another thread (it is not `Send`).
#[inline]
pub(crate) fn scheduler() -> &'static Scheduler {
    let sched = SCHED.with(Cell::get);
    if sched.is_null() || sched == DEAD {
        return init(sched);
    }
    // SAFETY: a non-null, non-DEAD pointer is the live scheduler of this thread (see `init`),
    // freed only by the thread-local destructor after which SCHED holds DEAD.
    unsafe { &*sched }
}

#[cold]
fn init(sched: *const Scheduler) -> &'static Scheduler {
    assert!(
        sched != DEAD,
        "tasklet: the scheduler was used after its thread began exiting (from a thread-local destructor)"
    );
    // Register the teardown destructor first, so that it runs however the thread exits.
    TEARDOWN.with(|_| {});
    let altstack = stack::install_overflow_handler();
    let (first, end) = id_block();
    let main = Rc::new(Task {
        id: first,
        name: Some("main".into()),
        state: Cell::new(State::Runnable),
        kill_pending: Cell::new(false),
        defer_kills: Cell::new(0),
        coro: UnsafeCell::new(None),
        yielder: Cell::new(ptr::null()),
        outcome: RefCell::new(None),
        joiners: RefCell::new(Vec::new()),
        slot: Cell::new(MAIN_SLOT),
        timer: Cell::new(None),
        overflow: OverflowInfo { guard: (0, 0), size: 0, id: first, name: (ptr::null(), 0) },
        switches: Cell::new(0),
        cpu: Cell::new(0),
        last_ran: Cell::new(0),
    });
    let sched = Box::new(Scheduler {
        current: Cell::new(Rc::as_ptr(&main)),
        main,
        queue: UnsafeCell::new(VecDeque::new()),
        tasks: RefCell::new(Registry::default()),
        pool: RefCell::new(StackPool::default()),
        spare: RefCell::new(Vec::new()),
        created: Cell::new(0),
        epoch_start: Cell::new(Instant::now()),
        timers: RefCell::new(Timers::default()),
        since_busy_check: Cell::new(0),
        reactor: Reactor::new(),
        accounting: Cell::new(true),
        mark: Cell::new(clock::now()),
        stall: Cell::new(clock::to_ticks(DEFAULT_STALL_THRESHOLD)),
        watchdog: Cell::new(u64::MAX),
        caught: RefCell::new(None),
        switches: Cell::new(0),
        wakeups: Cell::new(0),
        default_stack_size: Cell::new(stack::DEFAULT_STACK_SIZE),
        ids: Cell::new((first + 1, end)),
        altstack,
    });
    let sched = Box::into_raw(sched);
    SCHED.with(|s| s.set(sched));
    // SAFETY: just allocated and published; see `scheduler`.
    unsafe { &*sched }
}

fn id_block() -> (u64, u64) {
    let first = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
    (first, first + ID_BLOCK)
}

impl Scheduler {
    fn next_id(&self) -> u64 {
        let (mut id, mut end) = self.ids.get();
        if id == end {
            (id, end) = id_block();
        }
        self.ids.set((id + 1, end));
        id
    }

    /// The running tasklet.
    #[inline]
    pub(crate) fn current(&self) -> &Task {
        // SAFETY: `current` always points to a live task: main (owned by `self.main`) or the
        // tasklet the dispatch loop is running (owned by the loop's local `Rc` until it returns).
        unsafe { &*self.current.get() }
    }

    /// A new reference to the running tasklet.
    #[inline]
    pub(crate) fn current_rc(&self) -> Rc<Task> {
        let ptr = self.current.get();
        // SAFETY: `ptr` came from `Rc::as_ptr` of an `Rc<Task>` that is alive (see `current`);
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
    pub(crate) fn create<F, T>(&self, f: F, name: Option<String>, stack_size: usize) -> io::Result<Rc<Task>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let stack = self.pool.borrow_mut().take(stack_size)?;
        let id = self.next_id();
        let name: Option<Box<str>> = name.map(String::into_boxed_str);
        let overflow = OverflowInfo {
            guard: stack.guard(),
            size: stack.size(),
            id,
            name: name.as_deref().map_or((ptr::null(), 0), |n| (n.as_ptr(), n.len())),
        };
        let coro = Coroutine::with_stack(stack, move |yielder: &Yielder<(), Switch>, ()| {
            tasklet_root(yielder, f);
        });
        let fresh = Task {
            id,
            name,
            state: Cell::new(State::Paused),
            kill_pending: Cell::new(false),
            defer_kills: Cell::new(0),
            coro: UnsafeCell::new(Some(coro)),
            yielder: Cell::new(ptr::null()),
            outcome: RefCell::new(None),
            joiners: RefCell::new(Vec::new()),
            slot: Cell::new(0),
            timer: Cell::new(None),
            overflow,
            switches: Cell::new(0),
            cpu: Cell::new(0),
            last_ran: Cell::new(0),
        };
        self.created.set(self.created.get() + 1);
        let spare = self.spare.borrow_mut().pop();
        let task = match spare {
            Some(mut task) => {
                *Rc::get_mut(&mut task).expect("spare tasks are unshared") = fresh;
                task
            }
            None => Rc::new(fresh),
        };
        self.tasks.borrow_mut().insert(&task);
        Ok(task)
    }

    /// The run queue, for exactly one operation.
    ///
    /// # Safety
    /// The returned reference must die before anything else can reach the queue: use it for a
    /// single `VecDeque` call and return any removed `Rc` to the caller before dropping it (a
    /// `Task`'s drop may log, and a logger could call back into the runtime).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn queue(&self) -> &mut VecDeque<Rc<Task>> {
        // SAFETY: the scheduler is confined to its thread (it is neither Send nor Sync), and per
        // this function's contract no other reference to the queue is alive.
        unsafe { &mut *self.queue.get() }
    }

    /// Appends a runnable tasklet to the run queue.
    #[inline]
    pub(crate) fn push_back(&self, task: Rc<Task>) {
        task.state.set(State::Runnable);
        // SAFETY: one queue operation (see `queue`).
        unsafe { self.queue() }.push_back(task);
    }

    /// Puts a runnable tasklet first in the run queue.
    fn push_front(&self, task: Rc<Task>) {
        task.state.set(State::Runnable);
        // SAFETY: one queue operation (see `queue`).
        unsafe { self.queue() }.push_front(task);
    }

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
        let queue = unsafe { self.queue() };
        let pos = queue.iter().position(|t| ptr::eq(&**t, task))?;
        queue.remove(pos)
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
    #[inline]
    pub(crate) fn schedule(&self) {
        // Alone, there is nobody to switch to; but a watchdog must see the slice end.
        if self.queued() == 0 && !self.wake_due_while_alone() && self.watchdog.get() == u64::MAX {
            if self.current().kill_pending.get() {
                let _ = self.deferred_kill(self.current(), Requeue::Back);
            }
            return;
        }
        let _ = self.switch(Requeue::Back, None);
    }

    /// The current tasklet is the only runnable one and gives up the CPU: a pass over the run
    /// queue is complete, so fire due timers and poll for I/O as `check_while_busy` does, lest
    /// a tasklet looping on `schedule()` starve them. Returns whether a tasklet became runnable.
    #[cold]
    fn wake_due_while_alone(&self) -> bool {
        if self.timers.borrow().len() == 0 && !self.reactor.has_waiters() {
            return false;
        }
        self.reactor.poll_while_busy();
        self.fire_expired(Instant::now());
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
    #[inline]
    pub(crate) fn park(&self) -> Wake {
        self.switch(Requeue::No, None)
    }

    /// Switches away from the current tasklet, which goes where `requeue` says, to `target` or
    /// the run queue's head. Whatever woke it, the tasklet is `Runnable` when this returns.
    #[inline]
    fn switch(&self, requeue: Requeue, target: Option<Rc<Task>>) -> Wake {
        let me = self.current();
        if me.is_main() {
            match requeue {
                Requeue::No => {}
                Requeue::Back => self.push_back(self.main.clone()),
                Requeue::Front => self.push_front(self.main.clone()),
            }
            let wake = self.dispatch(target);
            if wake == Wake::Never && requeue == Requeue::No {
                self.report_deadlock(me.state.get());
            }
            me.state.set(State::Runnable);
            return wake;
        }
        if me.kill_pending.get() {
            return self.deferred_kill(me, requeue);
        }
        let yielder = me.yielder.get();
        // SAFETY: the yielder lives in the root frame of this tasklet's coroutine, set before
        // any user code ran; the root frame outlives every suspension of the tasklet.
        unsafe { (*yielder).suspend(Switch { requeue, target }) };
        // Resumed by the dispatch loop.
        if me.kill_pending.get() {
            self.killed(me)
        } else {
            Wake::Woken
        }
    }

    /// The current tasklet reaches a switch point with a deferred kill pending: deliver it if
    /// kills are no longer deferred; otherwise fail a wait at once (blocking could only delay
    /// the kill) and let a yield go ahead.
    #[cold]
    fn deferred_kill(&self, me: &Task, requeue: Requeue) -> Wake {
        if me.defer_kills.get() == 0 {
            return self.killed(me);
        }
        me.state.set(State::Runnable);
        if requeue == Requeue::No {
            return Wake::Never;
        }
        me.kill_pending.set(false);
        let wake = self.switch(requeue, None);
        me.kill_pending.set(true);
        wake
    }

    /// The current tasklet was resumed to be killed: unwind it, unless it is already unwinding.
    #[cold]
    fn killed(&self, me: &Task) -> Wake {
        if me.defer_kills.get() > 0 {
            // Inside `with_kills_deferred`: fail the wait, keep the kill for later.
            me.state.set(State::Runnable);
            return Wake::Never;
        }
        me.kill_pending.set(false);
        if std::thread::panicking() {
            // Killed again while unwinding (a destructor blocked): do not start a second
            // unwind, which would abort; let the blocking operation fail instead.
            me.state.set(State::Runnable);
            return Wake::Never;
        }
        panic::resume_unwind(Box::new(TaskletExit));
    }

    /// The dispatch loop, run by the main tasklet when it gives up the CPU. Resumes tasklets
    /// until main is picked again ([`Wake::Woken`]) or nothing is runnable ([`Wake::Never`]).
    fn dispatch(&self, target: Option<Rc<Task>>) -> Wake {
        let timing = self.accounting.get();
        if timing {
            self.charge(&self.main);
        }
        let wake = self.dispatch_loop(target, timing);
        if timing {
            self.mark.set(clock::now());
        }
        wake
    }

    /// Charges the ticks since the last switch to `task`, which just stopped running; returns
    /// the length of its slice.
    #[inline]
    fn charge(&self, task: &Task) -> u64 {
        let now = clock::now();
        let slice = now.wrapping_sub(self.mark.get());
        self.mark.set(now);
        task.cpu.set(task.cpu.get() + slice);
        task.switches.set(task.switches.get() + 1);
        task.last_ran.set(now);
        slice
    }

    fn dispatch_loop(&self, mut target: Option<Rc<Task>>, timing: bool) -> Wake {
        loop {
            if self.timers.borrow().len() > 0 || self.reactor.has_waiters() {
                self.check_while_busy();
            }
            let task = match target.take() {
                Some(task) => task,
                None => match self.pop_front() {
                    Some(task) => task,
                    None => match self.idle() {
                        Some(task) => {
                            if timing {
                                self.mark.set(clock::now()); // waiting is not running
                            }
                            task
                        }
                        None => return Wake::Never,
                    },
                },
            };
            if task.is_main() {
                return Wake::Woken;
            }
            self.current.set(Rc::as_ptr(&task));
            // SAFETY: only the dispatch loop touches `coro` while the tasklet is suspended, and
            // the tasklet does not touch its own `coro` while it runs.
            let coro = unsafe { (*task.coro.get()).as_mut() }.expect("a runnable tasklet has a coroutine");
            let result = coro.resume(());
            self.current.set(Rc::as_ptr(&self.main));
            self.switches.set(self.switches.get() + 1);
            let slice = if timing { self.charge(&task) } else { 0 };
            if slice > self.stall.get() {
                self.stalled(&task, slice);
            }
            match result {
                CoroutineResult::Yield(Switch { requeue, target: next }) => {
                    if slice > self.watchdog.get() && requeue != Requeue::No {
                        // The watchdog pauses it (`run_watchdog` returns it); a partner it
                        // handed the CPU to keeps its turn.
                        task.state.set(State::Paused);
                        if let Some(next) = next {
                            self.push_front(next);
                        }
                        *self.caught.borrow_mut() = Some(task);
                        return Wake::Never;
                    }
                    match requeue {
                        Requeue::No => {}
                        Requeue::Back => self.push_back(task),
                        Requeue::Front => self.push_front(task),
                    }
                    target = next;
                }
                CoroutineResult::Return(()) => self.reap(task),
            }
        }
    }

    /// Logs what the main tasklet waited for and what every other tasklet waits on, when the
    /// main tasklet's blocking operation is about to fail with a deadlock error.
    #[cold]
    fn report_deadlock(&self, main_state: State) {
        let main = match main_state {
            State::Blocked(on) => format!("blocked in {on:?}"),
            _ => "paused".to_owned(),
        };
        log::warn!(
            "deadlock: the main tasklet is {main} and nothing can wake it; {}",
            crate::debug::deadlock_report()
        );
    }

    #[cold]
    fn stalled(&self, task: &Task, slice: u64) {
        log::warn!(
            "tasklet {} held the thread for {:?} without giving up the CPU (stall threshold {:?})",
            Describe(task.id, task.name()),
            clock::to_duration(slice),
            clock::to_duration(self.stall.get()),
        );
    }

    /// Turns per-tasklet CPU accounting on or off.
    pub(crate) fn set_accounting(&self, on: bool) {
        if on && !self.accounting.get() {
            self.mark.set(clock::now());
        }
        self.accounting.set(on);
    }

    pub(crate) fn accounting_on(&self) -> bool {
        self.accounting.get()
    }

    pub(crate) fn set_stall_threshold(&self, threshold: Option<Duration>) {
        self.stall.set(threshold.map_or(u64::MAX, clock::to_ticks));
    }

    /// `(switches, wakeups, polls)` since the scheduler was created.
    pub(crate) fn counters(&self) -> (u64, u64, u64) {
        (self.switches.get(), self.wakeups.get(), self.reactor.polls())
    }

    /// Every live tasklet, main first, then by id.
    pub(crate) fn all_tasks(&self) -> Vec<Rc<Task>> {
        let mut all = vec![self.main.clone()];
        all.extend(self.tasks.borrow().all());
        all
    }

    /// `run_watchdog(budget)`: as `run`, but a tasklet whose slice exceeds `budget` (measured
    /// when it gives up the CPU) is paused and returned.
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
    /// and at most every 50 µs) once per pass over the run queue, so that a busy thread does
    /// not starve them. Costs one clock read per pass.
    fn check_while_busy(&self) {
        let n = self.since_busy_check.get() + 1;
        if n <= self.queued() {
            self.since_busy_check.set(n);
            return;
        }
        self.since_busy_check.set(0);
        self.reactor.poll_while_busy();
        self.fire_expired(Instant::now());
    }

    /// Wakes the tasklets whose deadline is not after `now`, in deadline order.
    fn fire_expired(&self, now: Instant) {
        loop {
            let expired = self.timers.borrow_mut().pop_expired(now);
            let Some(task) = expired else { break };
            task.timer.set(None);
            self.wake(task);
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
            let now = Instant::now();
            if now.duration_since(self.epoch_start.get()) >= EPOCH {
                self.epoch_start.set(now);
                self.end_epoch();
            }
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            if !self.reactor.poll(timeout) {
                // No poller: timers still work by sleeping; I/O waits cannot.
                match timeout {
                    Some(timeout) => std::thread::sleep(timeout),
                    None => return None,
                }
            }
            self.fire_expired(Instant::now());
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
    fn reap(&self, task: Rc<Task>) {
        // SAFETY: the coroutine has returned; nothing else refers to it.
        let coro = unsafe { (*task.coro.get()).take() }.expect("a finished tasklet had a coroutine");
        self.pool.borrow_mut().release(coro.into_stack());
        let registered = self.tasks.borrow_mut().remove(&task);
        drop(registered);
        if Rc::strong_count(&task) == 1 && Rc::weak_count(&task) == 0 {
            task.discard_outcome();
            self.spare.borrow_mut().push(task);
        }
    }

    /// Records a finished tasklet's outcome and wakes its joiners. Runs on the tasklet's stack.
    fn finish(&self, task: &Task, outcome: Outcome) {
        *task.outcome.borrow_mut() = Some(outcome);
        task.state.set(State::Finished);
        let joiners = std::mem::take(&mut *task.joiners.borrow_mut());
        for joiner in joiners {
            self.wake(joiner);
        }
    }

    /// `run()`: the main tasklet leaves the run queue; tasklets run until none is runnable, or
    /// until main is inserted again.
    pub(crate) fn run(&self) {
        assert!(
            self.current().is_main(),
            "tasklet::run must be called from the main tasklet (tasklets use schedule())"
        );
        self.main.state.set(State::Paused);
        let _ = self.dispatch(None);
        self.main.state.set(State::Runnable);
        self.end_epoch();
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
        self.switch(Requeue::No, None)
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

    /// `kill()`: unwinds `task` now (see the module comment).
    pub(crate) fn kill(&self, task: &Rc<Task>) {
        if task.state.get() == State::Finished {
            return;
        }
        assert!(!task.is_main(), "tasklet::Tasklet::kill: the main tasklet cannot be killed");
        if self.is_current(task) {
            panic::resume_unwind(Box::new(TaskletExit));
        }
        if task.state.get() == State::Runnable {
            self.unqueue(task);
        }
        if !task.started() {
            // Never ran: drop the closure in place, nothing to unwind.
            // SAFETY: the tasklet is suspended before its first instruction and not queued;
            // only the code here touches its coroutine.
            if let Some(coro) = unsafe { (*task.coro.get()).as_mut() } {
                coro.force_unwind();
            }
            self.finish(task, Outcome::Killed);
            self.reap(task.clone());
            return;
        }
        task.kill_pending.set(true);
        self.switch_now(task.clone());
    }

    /// Kills every remaining tasklet and frees the stacks. Runs on the main stack from the
    /// thread-local destructor.
    fn teardown(&self) {
        for round in 0..3 {
            let all = self.tasks.borrow().all();
            if all.is_empty() {
                break;
            }
            if round > 0 {
                log::warn!(
                    "tasklet: {} tasklet(s) survived being killed at thread exit; killing again",
                    all.len()
                );
            }
            for task in all {
                self.kill(&task);
            }
            // Tasklets that caught the kill and went on running get their turn to end.
            let _ = self.dispatch(None);
        }
        let left = self.tasks.borrow().all();
        if !left.is_empty() {
            log::warn!(
                "tasklet: {} tasklet(s) refused to die at thread exit; leaking them and their stacks",
                left.len()
            );
            for task in &left {
                // SAFETY: the coroutine is suspended and will never be resumed; forgetting it
                // leaks its stack (we also leak the pool below) instead of unwinding it here.
                std::mem::forget(unsafe { (*task.coro.get()).take() });
            }
            std::mem::forget(self.pool.replace(StackPool::default()));
        }
        while let Some(task) = self.pop_front() {
            drop(task);
        }
        if let Some(altstack) = self.altstack {
            stack::free_altstack(altstack);
        }
    }
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
///     tasklet::spawn(move || {
///         out.borrow_mut().push(format!("{c} before"));
///         tasklet::schedule();
///         out.borrow_mut().push(format!("{c} after"));
///     });
/// }
/// tasklet::run();
/// assert_eq!(*out.borrow(), ["a before", "b before", "a after", "b after"]);
/// ```
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
/// let main = tasklet::current();
/// tasklet::spawn(move || main.insert().unwrap());
/// tasklet::schedule_remove().unwrap(); // the tasklet inserts main again
/// assert!(tasklet::schedule_remove().is_err()); // now nobody would
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
/// let t = tasklet::spawn(|| tasklet::schedule());
/// tasklet::run();
/// assert!(!t.is_alive());
/// assert_eq!(tasklet::runcount(), 1);
/// ```
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
/// let hog = tasklet::spawn(|| loop {
///     let start = Instant::now();
///     while start.elapsed() < Duration::from_millis(5) {} // computes without yielding
///     tasklet::schedule();
/// });
/// let caught = tasklet::run_watchdog(Duration::from_millis(1)).expect("the hog overran");
/// assert_eq!(caught, hog);
/// assert!(hog.is_paused());
/// hog.kill();
/// ```
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

/// The bottom frame of every tasklet's stack.
fn tasklet_root<F, T>(yielder: &Yielder<(), Switch>, f: F)
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let sched = scheduler();
    let me = sched.current_rc();
    me.yielder.set(yielder);
    let outcome = match panic::catch_unwind(AssertUnwindSafe(f)) {
        // Killed inside `with_kills_deferred` and returned before reaching a switch point.
        Ok(_) if me.kill_pending.replace(false) => Outcome::Killed,
        Ok(value) => Outcome::Returned(Box::new(value)),
        Err(payload) if payload.is::<TaskletExit>() => Outcome::Killed,
        Err(payload) => Outcome::Panicked(payload),
    };
    sched.finish(&me, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_threads() {
        let here: Vec<u64> = (0..3).map(|_| scheduler().next_id()).collect();
        let there =
            std::thread::spawn(|| (0..3).map(|_| scheduler().next_id()).collect::<Vec<_>>()).join().unwrap();
        for id in &here {
            assert!(!there.contains(id));
        }
    }
}
