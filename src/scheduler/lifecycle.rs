//! A scheduler's life on its thread: created on first use (`scheduler()`, `init`), reached
//! through one thread-local pointer, torn down by a thread-local destructor; and the
//! process-unique tasklet ids, handed to each thread in blocks.
//!
//! # Lifetime
//!
//! `SCHED` holds null until the thread first needs a scheduler, then the pointer `init` leaked
//! from a `Box`, then `DEAD` once the thread's destructors ran `Teardown`: a use after that
//! panics with a message (`scheduler`) or gets `None` (`try_scheduler`, `existing_scheduler`).
//! The pointer is const-initialised and read without a lazy-init check, so the stack-overflow
//! handler may read it (`running_stack`, async-signal-safe).
//!
//! # Teardown
//!
//! When the thread exits, a thread-local destructor kills every remaining tasklet (running
//! their destructors), then unmaps the stacks. A tasklet that survives three kills (it catches
//! `TaskletExit` and blocks again) is leaked with its stack, with a warning.
//!
//! If the thread exits from inside a tasklet (`exit`, `pthread_exit`), its destructors run on
//! that tasklet's stack: killing it would unwind out of a destructor, so everything is leaked
//! instead.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::task::{ClosureBuf, State, Task, MAIN_SLOT};
use super::{Registry, Resume, Scheduler};
use crate::context::Context;
use crate::monitor;
use crate::reactor::Reactor;
use crate::runqueue::{Priority, RunQueue};
use crate::stack::{self, OverflowInfo, StackPool};
use crate::timer::{TaskTimer, Timers};

/// Process-unique tasklet ids, handed to each thread in blocks so that spawning touches no
/// shared cache line.
static NEXT_ID_BLOCK: AtomicU64 = AtomicU64::new(1);
const ID_BLOCK: u64 = 1024;

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
        // SAFETY: the live scheduler of this thread (see `scheduler`).
        let live = unsafe { &*sched };
        if !live.current().is_main() {
            // Off the main context: `exit` (or `pthread_exit`) called in a tasklet runs this
            // thread's thread-local destructors on the tasklet's stack. Killing the current
            // tasklet would unwind out of a thread-local destructor (an abort), and switching
            // away would never come back. The process (or thread) is ending: leak the
            // scheduler, its tasklets and their stacks, run nothing of theirs.
            SCHED.with(|s| s.set(DEAD));
            return;
        }
        // It stays published while the remaining tasklets are killed, so their destructors may
        // still use the runtime.
        live.teardown();
        SCHED.with(|s| s.set(DEAD));
        // SAFETY: the pointer came from `Box::into_raw` in `init` and is released once, here;
        // SCHED now holds DEAD, so no new reference to it can be made.
        drop(unsafe { Box::from_raw(sched as *mut Scheduler) });
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: `current` holds one strong count (see `Scheduler::current`); after teardown
        // the current task is main, and nothing reads `current` any more.
        drop(unsafe { Rc::from_raw(self.current.get()) });
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
    // live task (see `Scheduler::current`): a switch sets it to the next task before leaving
    // the previous one, which stays alive (registry, run queue, `main` or `zombie`).
    let task = unsafe { &*(*sched).current.get() };
    // SAFETY: a task's `overflow` is written only before its first switch (`give_stack`) and
    // at creation, never while it is current, which is when the handler reads it.
    Some(unsafe { &*task.overflow.as_ptr() })
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

/// The calling thread's scheduler, created on first use; `None` once the thread is exiting
/// (its scheduler was torn down).
pub(crate) fn try_scheduler() -> Option<&'static Scheduler> {
    (SCHED.with(Cell::get) != DEAD).then(scheduler)
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
    crate::debug::install_panic_hook();
    let altstack = stack::install_overflow_handler();
    let (first, end) = id_block();
    let main = Rc::new(Task {
        id: first,
        name: Some("main".into()),
        state: Cell::new(State::Runnable),
        kill_pending: Cell::new(false),
        defer_kills: Cell::new(0),
        unwinding: Cell::new(false),
        ctx: Context::new(),
        stack: Cell::new(None),
        stack_size: Cell::new(0),
        start: Cell::new(None),
        closure: ClosureBuf::new(),
        outcome: RefCell::new(None),
        joiners: RefCell::new(Vec::new()),
        has_joiners: Cell::new(false),
        slot: Cell::new(MAIN_SLOT),
        timer: TaskTimer::default(),
        overflow: Cell::new(OverflowInfo { guard: (0, 0), size: 0, id: first, name: (ptr::null(), 0) }),
        switches: Cell::new(0),
        cpu: Cell::new(0),
        last_ran: Cell::new(0),
        priority: Cell::new(Priority::Normal),
        spawned_at: Cell::new(None),
    });
    let sched = Box::new(Scheduler {
        current: Cell::new(Rc::into_raw(main.clone())),
        main,
        zombie: Cell::new(None),
        resume: Cell::new(Resume::Run),
        queue: UnsafeCell::new(RunQueue::new()),
        tasks: RefCell::new(Registry::default()),
        pool: RefCell::new(StackPool::default()),
        spare: RefCell::new(Vec::new()),
        created: Cell::new(0),
        epoch_start: Cell::new(Instant::now()),
        timers: RefCell::new(Timers::default()),
        since_busy_check: Cell::new(0),
        busy_fired: Cell::new(0),
        reactor: Reactor::new(),
        accounting: Cell::new(false),
        mark: Cell::new(0),
        charged: Cell::new(false),
        watchdog: Cell::new(u64::MAX),
        suspended_unwinding: Cell::new(0),
        caught: RefCell::new(None),
        wakeups: Cell::new(0),
        monitor: monitor::register(first),
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
    pub(super) fn next_id(&self) -> u64 {
        let (mut id, mut end) = self.ids.get();
        if id == end {
            (id, end) = id_block();
        }
        self.ids.set((id + 1, end));
        id
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
            let _ = self.run_others();
        }
        let left = self.tasks.borrow().all();
        if !left.is_empty() {
            log::warn!(
                "tasklet: {} tasklet(s) refused to die at thread exit; leaking them and their stacks",
                left.len()
            );
            // Suspended for good: their stacks are never released to the pool, and the pool is
            // leaked below (its regions stay mapped), so their frames are abandoned, not unwound.
            std::mem::forget(self.pool.replace(StackPool::default()));
        }
        while let Some(task) = self.pop_front() {
            drop(task);
        }
        if let Some(altstack) = self.altstack {
            stack::free_altstack(altstack);
        }
        self.monitor.unregister();
    }
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
