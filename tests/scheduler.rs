//! Integration tests of the per-thread scheduler: run queue order, `schedule`, `run`,
//! `schedule_remove`, `insert`/`remove`/`Tasklet::run`, the state flags, `Builder`, ids and
//! `join`.
//!
//! Every `#[test]` runs on its own thread and therefore has its own scheduler.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::rc::Rc;

use tasklets::{
    Builder, Channel, JoinError, StateError, Tasklet, DEFAULT_STACK_SIZE, MAX_STACK_SIZE, MIN_STACK_SIZE,
};

mod common;
use common::Log;

/// Spawns a tasklet that logs `name` and returns.
fn spawn_logger(log: &Log, name: &'static str) -> Tasklet<()> {
    let log = log.clone();
    tasklets::spawn(move || log.push(name))
}

// ---------------------------------------------------------------------------------------------
// Run queue order
// ---------------------------------------------------------------------------------------------

#[test]
fn spawned_tasklets_run_in_fifo_order() {
    let log = Log::new();
    for name in ["t0", "t1", "t2", "t3", "t4"] {
        spawn_logger(&log, name);
    }
    assert_eq!(log.len(), 0, "spawn does not run the tasklet");
    tasklets::run();
    assert_eq!(log.take(), ["t0", "t1", "t2", "t3", "t4"]);
}

#[test]
fn inserted_tasklets_run_in_insertion_order() {
    let log = Log::new();
    let a = Builder::new().bind({
        let log = log.clone();
        move || log.push("a")
    });
    let b = Builder::new().bind({
        let log = log.clone();
        move || log.push("b")
    });
    let c = Builder::new().bind({
        let log = log.clone();
        move || log.push("c")
    });
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    // Inserted in an order different from creation order: insertion order wins.
    c.insert().unwrap();
    a.insert().unwrap();
    spawn_logger(&log, "spawned");
    b.insert().unwrap();
    tasklets::run();
    assert_eq!(log.take(), ["c", "a", "spawned", "b"]);
}

#[test]
fn schedule_round_robin_listing_2() {
    let log = Log::new();
    for c in ["a", "b"] {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push(format!("{c} before"));
            tasklets::schedule();
            log.push(format!("{c} after"));
        });
    }
    tasklets::run();
    assert_eq!(log.take(), ["a before", "b before", "a after", "b after"]);
}

#[test]
fn schedule_round_robin_three_tasklets_many_rounds() {
    let log = Log::new();
    for name in ["x", "y", "z"] {
        let log = log.clone();
        tasklets::spawn(move || {
            for round in 0..3 {
                log.push(format!("{name}{round}"));
                tasklets::schedule();
            }
        });
    }
    tasklets::run();
    assert_eq!(log.take(), ["x0", "y0", "z0", "x1", "y1", "z1", "x2", "y2", "z2"]);
}

#[test]
fn schedule_in_main_runs_queued_tasklets_then_returns_to_main() {
    let log = Log::new();
    let t = {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("t before");
            tasklets::schedule();
            log.push("t after");
        })
    };
    log.push("main before");
    tasklets::schedule(); // main goes behind t; t runs until it schedules, then main again
    log.push("main after");
    assert!(t.is_alive() && t.is_scheduled());
    assert_eq!(tasklets::runcount(), 2);
    tasklets::run();
    assert_eq!(log.take(), ["main before", "t before", "main after", "t after"]);
}

#[test]
fn schedule_with_nothing_else_runnable_returns_at_once() {
    // In main.
    assert_eq!(tasklets::runcount(), 1);
    tasklets::schedule();
    assert!(tasklets::current().is_main());
    assert_eq!(tasklets::runcount(), 1);

    // In the only tasklet (main is paused inside run()).
    let log = Log::new();
    let t = {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("before");
            tasklets::schedule();
            log.push("after");
            tasklets::current().is_current()
        })
    };
    tasklets::run();
    assert_eq!(log.take(), ["before", "after"]);
    assert!(t.join().unwrap());
}

// ---------------------------------------------------------------------------------------------
// run()
// ---------------------------------------------------------------------------------------------

#[test]
fn run_with_nothing_runnable_returns() {
    tasklets::run();
    tasklets::run();
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn run_returns_when_nothing_is_runnable_and_leaves_blocked_tasklets_blocked() {
    let ch = Channel::<u32>::new();
    let log = Log::new();
    let blocked = {
        let (ch, log) = (ch.clone(), log.clone());
        tasklets::spawn(move || {
            log.push("receiver waits");
            let v = ch.receive().unwrap();
            log.push(format!("receiver got {v}"));
            v
        })
    };
    let done = spawn_logger(&log, "other done");
    tasklets::run();
    assert_eq!(log.take(), ["receiver waits", "other done"]);
    assert!(blocked.is_alive() && blocked.is_blocked());
    assert!(!done.is_alive());
    assert_eq!(ch.balance(), -1);
    assert_eq!(tasklets::runcount(), 1);

    // A second run() does not touch it either.
    tasklets::run();
    assert!(blocked.is_blocked());

    // Served, it finishes.
    ch.send(9).unwrap();
    tasklets::run();
    assert_eq!(log.take(), ["receiver got 9"]);
    assert_eq!(blocked.join().unwrap(), 9);
}

#[test]
#[should_panic(expected = "must be called from the main tasklet")]
fn run_from_a_tasklet_panics_in_that_tasklet() {
    let t = tasklets::spawn(tasklets::run);
    tasklets::run();
    // The tasklet panicked (not main): re-raise its payload here to check the message.
    std::panic::resume_unwind(t.join().unwrap_err().try_into_panic().unwrap());
}

#[test]
fn main_inserted_by_a_tasklet_makes_run_return_at_mains_turn() {
    // Observed and documented behaviour: while main is inside run() it is paused; a tasklet that
    // inserts it puts it at the end of the run queue, and run() returns when main's turn comes.
    // The tasklets queued behind main stay queued (runnable) and the next run() continues them.
    let log = Log::new();
    let main = tasklets::current();
    assert!(main.is_main());
    let a = {
        let (log, main) = (log.clone(), main.clone());
        tasklets::spawn(move || {
            log.push("a inserts main");
            assert!(main.is_paused(), "main is paused inside run()");
            main.insert().unwrap();
            assert!(main.is_scheduled() && !main.is_paused());
            tasklets::schedule(); // queue: b, main, a
            log.push("a after");
        })
    };
    let b = spawn_logger(&log, "b");
    tasklets::run();
    log.push("run returned");
    assert_eq!(log.take(), ["a inserts main", "b", "run returned"]);
    assert!(a.is_alive() && a.is_scheduled() && !a.is_blocked());
    assert!(!b.is_alive());
    assert_eq!(tasklets::runcount(), 2, "main and a are runnable");
    assert!(main.is_current() && !main.is_paused());

    tasklets::run();
    assert_eq!(log.take(), ["a after"]);
    assert!(!a.is_alive());
    assert_eq!(tasklets::runcount(), 1);
}

// ---------------------------------------------------------------------------------------------
// runcount()
// ---------------------------------------------------------------------------------------------

#[test]
fn runcount_counts_runnable_tasklets_including_current() {
    assert_eq!(tasklets::runcount(), 1, "just main");
    let counts = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..3 {
        let counts = counts.clone();
        tasklets::spawn(move || counts.borrow_mut().push(tasklets::runcount()));
    }
    assert_eq!(tasklets::runcount(), 4);
    tasklets::run();
    // Inside run() main is paused, not counted: the first tasklet sees itself + 2 queued.
    assert_eq!(*counts.borrow(), [3, 2, 1]);
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn runcount_ignores_blocked_and_paused_tasklets() {
    let ch = Channel::<()>::new();
    let rx = ch.clone();
    let _blocked = tasklets::spawn(move || rx.receive());
    let _paused = Builder::new().bind(|| ()).unwrap();
    let _runnable = tasklets::spawn(|| ());
    assert_eq!(tasklets::runcount(), 3, "main, blocked-to-be, runnable");
    tasklets::schedule(); // the receiver blocks, the other finishes
    assert_eq!(tasklets::runcount(), 1);
    assert_eq!(ch.balance(), -1);
}

// ---------------------------------------------------------------------------------------------
// current(), is_main, is_current
// ---------------------------------------------------------------------------------------------

#[test]
fn current_is_main_outside_tasklets() {
    let main = tasklets::current();
    assert!(main.is_main());
    assert!(main.is_current());
    assert!(main.is_alive());
    assert!(main.is_scheduled());
    assert!(!main.is_paused() && !main.is_blocked());
    assert_eq!(main.name(), Some("main"));
    assert_eq!(main, tasklets::current(), "handles compare by identity");
}

#[test]
fn current_inside_a_tasklet_is_that_tasklet() {
    let main = tasklets::current();
    let seen = Rc::new(RefCell::new(None::<Tasklet>));
    let t = {
        let (seen, main) = (seen.clone(), main.clone());
        tasklets::spawn(move || {
            let me = tasklets::current();
            assert!(!me.is_main());
            assert!(me.is_current());
            assert!(!main.is_current());
            assert!(main.is_paused(), "main is paused while it runs tasklets in run()");
            *seen.borrow_mut() = Some(me);
        })
    };
    tasklets::run();
    let seen = seen.borrow_mut().take().unwrap();
    assert_eq!(seen, t);
    assert_eq!(seen.id(), t.id());
    assert_ne!(seen, main);
    assert!(!t.is_current());
}

// ---------------------------------------------------------------------------------------------
// Builder::bind, insert, remove
// ---------------------------------------------------------------------------------------------

#[test]
fn bind_creates_a_paused_tasklet_that_insert_starts() {
    let log = Log::new();
    let t = Builder::new()
        .bind({
            let log = log.clone();
            move || {
                log.push("ran");
                7
            }
        })
        .unwrap();
    assert!(t.is_paused());
    assert!(t.is_alive());
    assert!(!t.is_scheduled());
    assert!(!t.is_blocked());
    assert!(!t.is_current());
    assert_eq!(tasklets::runcount(), 1);

    tasklets::run();
    assert_eq!(log.len(), 0, "a bound tasklet does not run");
    assert!(t.is_paused());

    t.insert().unwrap();
    assert!(t.is_scheduled() && !t.is_paused());
    assert_eq!(tasklets::runcount(), 2);
    tasklets::run();
    assert_eq!(log.take(), ["ran"]);
    assert_eq!(t.join().unwrap(), 7);
}

#[test]
fn remove_pauses_a_runnable_tasklet_and_insert_appends_it_at_the_end() {
    let log = Log::new();
    let a = spawn_logger(&log, "a");
    let b = spawn_logger(&log, "b");
    let c = spawn_logger(&log, "c");
    assert_eq!(tasklets::runcount(), 4);

    b.remove().unwrap();
    assert!(b.is_paused() && b.is_alive() && !b.is_scheduled());
    assert_eq!(tasklets::runcount(), 3);
    b.remove().unwrap(); // removing a paused tasklet does nothing
    assert!(b.is_paused());

    tasklets::run();
    assert_eq!(log.take(), ["a", "c"]);
    assert!(b.is_paused());

    // Re-inserted behind the ones queued now.
    let d = spawn_logger(&log, "d");
    b.insert().unwrap();
    let e = spawn_logger(&log, "e");
    tasklets::run();
    assert_eq!(log.take(), ["d", "b", "e"]);
    for t in [a, b, c, d, e] {
        assert!(!t.is_alive());
    }
}

#[test]
fn remove_of_a_started_runnable_tasklet_pauses_it_mid_way() {
    let log = Log::new();
    let t = {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("t1");
            tasklets::schedule();
            log.push("t2");
        })
    };
    tasklets::schedule(); // t runs to its schedule(), main runs again; t is queued
    assert_eq!(log.take(), ["t1"]);
    t.remove().unwrap();
    assert!(t.is_paused());
    tasklets::run();
    assert_eq!(log.len(), 0);
    t.insert().unwrap();
    tasklets::run();
    assert_eq!(log.take(), ["t2"]);
    assert!(!t.is_alive());
}

#[test]
fn remove_errors_for_current_blocked_and_dead() {
    // Current: main.
    assert_eq!(tasklets::current().remove(), Err(StateError::Current));

    // Current: inside a tasklet.
    let inner = tasklets::spawn(|| tasklets::current().remove());
    tasklets::run();
    assert_eq!(inner.join().unwrap(), Err(StateError::Current));

    // Blocked.
    let ch = Channel::<()>::new();
    let rx = ch.clone();
    let blocked = tasklets::spawn(move || rx.receive());
    tasklets::run();
    assert_eq!(blocked.remove(), Err(StateError::Blocked));
    assert!(blocked.is_blocked(), "a refused remove changes nothing");

    // Dead.
    let dead = tasklets::spawn(|| ());
    tasklets::run();
    assert_eq!(dead.remove(), Err(StateError::Dead));

    ch.send(()).unwrap();
    tasklets::run();
    assert!(!blocked.is_alive());
}

#[test]
fn insert_errors_for_blocked_and_dead() {
    let ch = Channel::<()>::new();
    let rx = ch.clone();
    let blocked = tasklets::spawn(move || rx.receive());
    let dead = tasklets::spawn(|| ());
    tasklets::run();
    assert_eq!(blocked.insert(), Err(StateError::Blocked));
    assert!(blocked.is_blocked());
    assert_eq!(ch.balance(), -1);
    assert_eq!(tasklets::runcount(), 1, "a refused insert does not queue");
    assert_eq!(dead.insert(), Err(StateError::Dead));
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn insert_of_a_runnable_tasklet_is_a_noop() {
    let log = Log::new();
    let a = spawn_logger(&log, "a");
    let b = spawn_logger(&log, "b");
    a.insert().unwrap(); // already queued: does not move to the end or get queued twice
    assert_eq!(tasklets::runcount(), 3);
    tasklets::current().insert().unwrap(); // the current tasklet is runnable too
    assert_eq!(tasklets::runcount(), 3);
    tasklets::run();
    assert_eq!(log.take(), ["a", "b"]);
    assert!(!a.is_alive() && !b.is_alive());
}

#[test]
fn state_errors_display() {
    assert_eq!(StateError::Blocked.to_string(), "the tasklet is blocked");
    assert_eq!(StateError::Dead.to_string(), "the tasklet has finished");
    assert_eq!(StateError::Current.to_string(), "the tasklet is the current one");
}

// ---------------------------------------------------------------------------------------------
// Tasklet::run()
// ---------------------------------------------------------------------------------------------

#[test]
fn tasklet_run_switches_now_and_caller_runs_before_earlier_queued() {
    let log = Log::new();
    spawn_logger(&log, "first in queue");
    let t = spawn_logger(&log, "run now");
    t.run().unwrap();
    log.push("caller");
    tasklets::run();
    assert_eq!(log.take(), ["run now", "caller", "first in queue"]);
}

#[test]
fn tasklet_run_from_inside_a_tasklet() {
    let log = Log::new();
    let b = Rc::new(RefCell::new(None::<Tasklet<()>>));
    {
        let (log, b) = (log.clone(), b.clone());
        tasklets::spawn(move || {
            log.push("a1");
            let b = b.borrow().clone().unwrap();
            b.run().unwrap();
            log.push("a2");
        });
    }
    spawn_logger(&log, "c");
    *b.borrow_mut() = Some({
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("b1");
            tasklets::schedule(); // a is first in the queue, then c
            log.push("b2");
        })
    });
    tasklets::run();
    assert_eq!(log.take(), ["a1", "b1", "a2", "c", "b2"]);
}

#[test]
fn tasklet_run_of_a_paused_tasklet_starts_it() {
    let log = Log::new();
    spawn_logger(&log, "queued");
    let t = Builder::new()
        .bind({
            let log = log.clone();
            move || log.push("bound")
        })
        .unwrap();
    t.run().unwrap();
    log.push("main");
    tasklets::run();
    assert_eq!(log.take(), ["bound", "main", "queued"]);
}

#[test]
fn tasklet_run_errors_and_noop_on_current() {
    assert_eq!(tasklets::current().run(), Ok(()), "running the current tasklet does nothing");
    let ch = Channel::<()>::new();
    let rx = ch.clone();
    let blocked = tasklets::spawn(move || rx.receive());
    let dead = tasklets::spawn(|| ());
    tasklets::run();
    assert_eq!(blocked.run(), Err(StateError::Blocked));
    assert!(blocked.is_blocked());
    assert_eq!(dead.run(), Err(StateError::Dead));
    let me = tasklets::spawn(|| tasklets::current().run());
    tasklets::run();
    assert_eq!(me.join().unwrap(), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// schedule_remove()
// ---------------------------------------------------------------------------------------------

#[test]
fn schedule_remove_in_a_tasklet_pauses_it_until_insert() {
    let log = Log::new();
    let t = {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("t before");
            tasklets::schedule_remove().unwrap();
            log.push("t after");
            5
        })
    };
    spawn_logger(&log, "other");
    tasklets::run();
    assert_eq!(log.take(), ["t before", "other"]);
    assert!(t.is_paused() && t.is_alive() && !t.is_scheduled() && !t.is_blocked());
    tasklets::run();
    assert_eq!(log.len(), 0, "a paused tasklet stays paused");

    t.insert().unwrap();
    tasklets::run();
    assert_eq!(log.take(), ["t after"]);
    assert_eq!(t.join().unwrap(), 5);
}

#[test]
fn schedule_remove_in_a_tasklet_resumed_by_another_tasklet() {
    let log = Log::new();
    let sleeper = {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("sleeper pauses");
            tasklets::schedule_remove().unwrap();
            log.push("sleeper resumed");
        })
    };
    {
        let (log, sleeper) = (log.clone(), sleeper.clone());
        tasklets::spawn(move || {
            log.push("waker");
            assert!(sleeper.is_paused());
            sleeper.insert().unwrap();
            tasklets::schedule();
            log.push("waker after");
        });
    }
    tasklets::run();
    assert_eq!(log.take(), ["sleeper pauses", "waker", "sleeper resumed", "waker after"]);
}

#[test]
fn schedule_remove_in_main_with_nothing_runnable_is_a_deadlock() {
    let err = tasklets::schedule_remove().unwrap_err();
    assert!(err.to_string().contains("deadlock"), "{err}");
    assert!(err.to_string().contains("schedule_remove"), "{err}");
    let main = tasklets::current();
    assert!(main.is_current() && !main.is_paused(), "main runs on after the error");
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn schedule_remove_in_main_when_tasklets_finish_without_inserting_it_is_a_deadlock() {
    let log = Log::new();
    spawn_logger(&log, "a");
    spawn_logger(&log, "b");
    assert!(tasklets::schedule_remove().is_err());
    assert_eq!(log.take(), ["a", "b"], "the others ran first");
    assert!(!tasklets::current().is_paused());
}

#[test]
fn schedule_remove_in_main_returns_when_a_tasklet_inserts_main() {
    let log = Log::new();
    let main = tasklets::current();
    {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("tasklet");
            assert!(main.is_paused());
            main.insert().unwrap();
            log.push("tasklet after insert");
        });
    }
    tasklets::schedule_remove().unwrap();
    log.push("main back");
    assert_eq!(log.take(), ["tasklet", "tasklet after insert", "main back"]);
    assert!(tasklets::schedule_remove().is_err(), "now nobody would insert main");
}

// ---------------------------------------------------------------------------------------------
// State flags
// ---------------------------------------------------------------------------------------------

/// (alive, blocked, scheduled, paused, current)
fn flags<T: ?Sized>(t: &Tasklet<T>) -> (bool, bool, bool, bool, bool) {
    (t.is_alive(), t.is_blocked(), t.is_scheduled(), t.is_paused(), t.is_current())
}

#[test]
fn state_flags_in_each_state() {
    let ch = Channel::<u8>::new();
    let seen_inside = Rc::new(RefCell::new(None));
    let t = {
        let (ch, seen_inside) = (ch.clone(), seen_inside.clone());
        tasklets::spawn(move || {
            *seen_inside.borrow_mut() = Some(flags(&tasklets::current()));
            ch.receive().unwrap(); // blocked
            tasklets::schedule_remove().unwrap(); // paused
        })
    };
    // Runnable (queued).
    assert_eq!(flags(&t), (true, false, true, false, false));
    tasklets::run();
    // Current (seen from inside).
    assert_eq!(seen_inside.borrow_mut().take(), Some((true, false, true, false, true)));
    // Blocked.
    assert_eq!(flags(&t), (true, true, true, false, false));
    ch.send(1).unwrap(); // receiver preferred: it runs now and pauses itself
                         // Paused.
    assert_eq!(flags(&t), (true, false, false, true, false));
    t.insert().unwrap();
    tasklets::run();
    // Finished.
    assert_eq!(flags(&t), (false, false, false, false, false));
    assert!(!t.is_main());
}

#[test]
fn debug_shows_state() {
    let t = Builder::new().name("dbg").bind(|| ()).unwrap();
    let paused = format!("{t:?}");
    assert!(paused.contains("Paused"), "{paused}");
    assert!(paused.contains("\"dbg\""), "{paused}");
    t.insert().unwrap();
    assert!(format!("{t:?}").contains("Runnable"), "{t:?}");
    tasklets::run();
    assert!(format!("{t:?}").contains("Finished"), "{t:?}");
}

// ---------------------------------------------------------------------------------------------
// Builder: name, stack size
// ---------------------------------------------------------------------------------------------

#[test]
fn builder_name_shows_in_name_debug_and_display() {
    let t = Builder::new().name("worker").spawn(|| tasklets::current().name().map(str::to_owned)).unwrap();
    assert_eq!(t.name(), Some("worker"));
    let debug = format!("{t:?}");
    assert!(debug.starts_with("Tasklet"), "{debug}");
    assert!(debug.contains("name: Some(\"worker\")"), "{debug}");
    assert!(debug.contains(&format!("id: {}", t.id())), "{debug}");
    assert_eq!(t.to_string(), format!("tasklet {} 'worker'", t.id()));

    let anonymous = tasklets::spawn(|| ());
    assert_eq!(anonymous.name(), None);
    assert_eq!(anonymous.to_string(), format!("tasklet {}", anonymous.id()));
    assert!(format!("{anonymous:?}").contains("name: None"));

    let main = tasklets::current();
    assert_eq!(main.to_string(), format!("tasklet {} 'main'", main.id()));

    tasklets::run();
    assert_eq!(t.join().unwrap().as_deref(), Some("worker"), "the name is visible from inside");
}

#[test]
fn builder_stack_size_over_max_is_invalid_input() {
    let err = Builder::new().stack_size(MAX_STACK_SIZE + 1).spawn(|| ()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let err = Builder::new().stack_size(usize::MAX).bind(|| ()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(tasklets::runcount(), 1, "nothing was queued");
}

#[test]
fn builder_stack_sizes_within_bounds_work() {
    let sizes = [0, 1, MIN_STACK_SIZE, MIN_STACK_SIZE + 1, DEFAULT_STACK_SIZE, 4 * DEFAULT_STACK_SIZE];
    let handles: Vec<Tasklet<usize>> = sizes
        .iter()
        .map(|&size| {
            Builder::new()
                .stack_size(size)
                .spawn(move || {
                    // Use some of the stack: a recursive sum with a buffer in each frame.
                    fn depth(n: usize) -> usize {
                        let buf = [n as u8; 64];
                        if n == 0 {
                            0
                        } else {
                            usize::from(std::hint::black_box(buf)[63]) + depth(n - 1)
                        }
                    }
                    depth(20) + size
                })
                .unwrap()
        })
        .collect();
    tasklets::run();
    for (t, size) in handles.into_iter().zip(sizes) {
        assert_eq!(t.join().unwrap(), 210 + size);
    }
}

#[test]
fn set_default_stack_size_rejects_over_max_and_accepts_small() {
    let err = tasklets::set_default_stack_size(MAX_STACK_SIZE + 1).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    tasklets::set_default_stack_size(MIN_STACK_SIZE).unwrap();
    let handles: Vec<_> = (0..100).map(|i| tasklets::spawn(move || i * 3)).collect();
    tasklets::run();
    for (i, t) in handles.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), i * 3);
    }
    tasklets::set_default_stack_size(DEFAULT_STACK_SIZE).unwrap();
    assert_eq!(tasklets::spawn(|| 1).join().unwrap(), 1);
}

#[test]
fn set_default_stack_size_is_per_thread() {
    // Another thread's setting does not leak here: both threads can spawn after changing theirs.
    std::thread::spawn(|| {
        tasklets::set_default_stack_size(MIN_STACK_SIZE).unwrap();
        assert_eq!(tasklets::spawn(|| 2).join().unwrap(), 2);
    })
    .join()
    .unwrap();
    assert_eq!(tasklets::spawn(|| 3).join().unwrap(), 3);
}

// ---------------------------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------------------------

#[test]
fn ids_are_unique() {
    let main_id = tasklets::current().id();
    let handles: Vec<Tasklet<u64>> =
        (0..2000).map(|_| tasklets::spawn(|| tasklets::current().id())).collect();
    let mut ids = HashSet::new();
    assert!(ids.insert(main_id));
    for t in &handles {
        assert!(ids.insert(t.id()), "duplicate id {}", t.id());
    }
    tasklets::run();
    for t in handles {
        let id = t.id();
        assert_eq!(t.join().unwrap(), id, "current().id() inside matches the handle");
    }
    // Other threads get ids of their own.
    let theirs: Vec<u64> = std::thread::spawn(|| {
        let mut v = vec![tasklets::current().id()];
        v.extend((0..2000).map(|_| tasklets::spawn(|| ()).id()));
        tasklets::run();
        v
    })
    .join()
    .unwrap();
    for id in theirs {
        assert!(ids.insert(id), "id {id} reused across threads");
    }
}

// ---------------------------------------------------------------------------------------------
// join
// ---------------------------------------------------------------------------------------------

#[test]
fn join_returns_the_value_and_runs_the_others_meanwhile() {
    let log = Log::new();
    let before = spawn_logger(&log, "before");
    let t = {
        let log = log.clone();
        tasklets::spawn(move || {
            tasklets::schedule();
            log.push("t");
            String::from("result")
        })
    };
    assert_eq!(t.join().unwrap(), "result");
    assert_eq!(log.take(), ["before", "t"]);
    assert!(!before.is_alive());
}

#[test]
fn join_of_a_finished_tasklet() {
    let t = tasklets::spawn(|| vec![1, 2, 3]);
    tasklets::run();
    assert!(!t.is_alive());
    assert_eq!(t.join().unwrap(), [1, 2, 3]);
}

#[test]
fn join_of_a_bound_tasklet_is_a_deadlock() {
    let t = Builder::new().bind(|| 1).unwrap();
    assert!(matches!(t.clone().join(), Err(JoinError::Deadlock)));
    assert!(t.is_paused(), "the failed join leaves it paused");
    t.insert().unwrap();
    assert_eq!(t.join().unwrap(), 1);
}

#[test]
fn second_handle_join_gets_taken() {
    let t = tasklets::spawn(|| 11);
    let t2 = t.clone();
    assert_eq!(t, t2);
    assert_eq!(t.join().unwrap(), 11);
    let err = t2.clone().join().unwrap_err();
    assert!(matches!(err, JoinError::Taken), "{err:?}");
    assert!(err.to_string().contains("already taken"), "{err}");
    assert!(matches!(t2.join(), Err(JoinError::Taken)), "and again");
}

#[test]
fn join_from_a_tasklet_blocks_until_target_finishes() {
    let ch = Channel::<u32>::new();
    let log = Log::new();
    let target = {
        let (ch, log) = (ch.clone(), log.clone());
        tasklets::spawn(move || {
            let v = ch.receive().unwrap();
            log.push("target done");
            v * 2
        })
    };
    let joiner = {
        let (target, log) = (target.clone(), log.clone());
        tasklets::spawn(move || {
            log.push("joiner waits");
            let v = target.join().unwrap();
            log.push(format!("joiner got {v}"));
            v + 1
        })
    };
    tasklets::run();
    assert_eq!(log.take(), ["joiner waits"]);
    assert!(joiner.is_blocked() && joiner.is_alive() && joiner.is_scheduled());
    assert!(target.is_blocked());
    assert_eq!(tasklets::runcount(), 1);

    ch.send(21).unwrap(); // target runs now (receiver preferred), finishes, wakes the joiner
    assert_eq!(log.take(), ["target done"]);
    assert!(!target.is_alive());
    assert!(!joiner.is_blocked() && joiner.is_scheduled(), "woken: runnable");
    tasklets::run();
    assert_eq!(log.take(), ["joiner got 42"]);
    assert_eq!(joiner.join().unwrap(), 43);
}

#[test]
fn several_joiners_are_woken_in_arrival_order() {
    let log = Log::new();
    let target = tasklets::spawn(|| {
        tasklets::schedule_remove().unwrap();
        "v"
    });
    for name in ["j1", "j2", "j3"] {
        let (target, log) = (target.clone(), log.clone());
        tasklets::spawn(move || {
            let r = target.join();
            log.push(format!("{name} {}", if r.is_ok() { "ok" } else { "taken" }));
        });
    }
    tasklets::run();
    assert_eq!(log.len(), 0);
    target.insert().unwrap();
    tasklets::run();
    assert_eq!(log.take(), ["j1 ok", "j2 taken", "j3 taken"]);
}

#[test]
fn joining_self_or_main_from_a_tasklet_is_a_deadlock() {
    let main = tasklets::current();
    let t = tasklets::spawn(move || {
        let own = tasklets::current().join();
        let of_main = main.join();
        (matches!(own, Err(JoinError::Deadlock)), matches!(of_main, Err(JoinError::Deadlock)))
    });
    tasklets::run();
    assert_eq!(t.join().unwrap(), (true, true));
    // Main joining itself.
    let err = tasklets::current().join().unwrap_err();
    assert!(matches!(err, JoinError::Deadlock));
    assert!(err.to_string().contains("deadlock"), "{err}");
}

#[test]
fn main_joining_a_tasklet_blocked_forever_is_a_deadlock() {
    let ch = Channel::<i32>::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || rx.receive().unwrap());
    let other = tasklets::spawn(tasklets::schedule);
    let err = t.clone().join().unwrap_err();
    assert!(matches!(err, JoinError::Deadlock), "{err:?}");
    assert!(!other.is_alive(), "the runnable ones ran first");
    assert!(t.is_blocked(), "the target stays blocked");
    assert!(!tasklets::current().is_blocked());
    assert_eq!(tasklets::runcount(), 1);

    // Main is no longer registered as a joiner: finishing the target does not wake it.
    ch.send(4).unwrap();
    assert!(!t.is_alive());
    assert_eq!(tasklets::runcount(), 1, "main was not queued by the target's finish");
    assert_eq!(t.join().unwrap(), 4);
}

#[test]
fn current_handle_joins_to_box_dyn_any() {
    let slot = Rc::new(RefCell::new(None::<Tasklet>));
    {
        let slot = slot.clone();
        tasklets::spawn(move || {
            *slot.borrow_mut() = Some(tasklets::current());
            tasklets::schedule();
            42u32
        });
    }
    tasklets::schedule(); // let it record its handle
    let erased: Tasklet<dyn Any> = slot.borrow_mut().take().unwrap();
    assert!(erased.is_alive());
    let value: Box<dyn Any> = erased.join().unwrap();
    assert_eq!(value.downcast_ref::<u32>(), Some(&42));
}

#[test]
fn into_any_erases_the_result_type() {
    let typed = tasklets::spawn(|| String::from("erased"));
    let id = typed.id();
    let erased: Tasklet = typed.clone().into_any();
    assert_eq!(erased.id(), id);
    assert_eq!(erased, typed);
    let handles: Vec<Tasklet> = vec![erased, tasklets::spawn(|| 5i64).into_any()];
    tasklets::run();
    let values: Vec<Box<dyn Any>> = handles.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(values[0].downcast_ref::<String>().map(String::as_str), Some("erased"));
    assert_eq!(values[1].downcast_ref::<i64>(), Some(&5));
    assert!(matches!(typed.join(), Err(JoinError::Taken)));
}

// ---------------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------------

/// A program mixing spawn, schedule, channels with every preference, joins, remove/insert and
/// Tasklet::run; returns its trace.
fn busy_program() -> Vec<String> {
    let log = Log::new();
    let chans: Vec<Channel<u32>> = (0..3).map(|_| Channel::new()).collect();
    chans[1].set_preference(tasklets::Preference::Neither);
    chans[2].set_preference(tasklets::Preference::Sender);
    let mut handles = Vec::new();
    for w in 0..6u32 {
        let (log, chans) = (log.clone(), chans.clone());
        handles.push(tasklets::spawn(move || {
            for i in 0..5u32 {
                let ch = &chans[((w + i) % 3) as usize];
                if (w + i).is_multiple_of(2) {
                    ch.send(w * 100 + i).unwrap();
                    log.push(format!("w{w} sent {i}"));
                } else {
                    let v = ch.receive().unwrap();
                    log.push(format!("w{w} got {v}"));
                }
                if i % 2 == 1 {
                    tasklets::schedule();
                }
            }
            w
        }));
    }
    let paused = {
        let log = log.clone();
        Builder::new().name("late").bind(move || log.push("late runs")).unwrap()
    };
    {
        let (log, paused, first) = (log.clone(), paused.clone(), handles[0].clone());
        tasklets::spawn(move || {
            log.push("helper starts");
            paused.run().unwrap();
            log.push(format!("helper joined {:?}", first.join().ok()));
        });
    }
    handles[3].remove().unwrap();
    tasklets::schedule();
    handles[3].insert().unwrap();
    tasklets::run();
    for ch in &chans {
        log.push(format!("balance {}", ch.balance()));
    }
    // Unblock whatever is left, deterministically.
    for ch in &chans {
        while ch.balance() > 0 {
            log.push(format!("drain {}", ch.receive().unwrap()));
        }
        while ch.balance() < 0 {
            ch.send(999).unwrap();
            log.push("fed");
        }
    }
    tasklets::run();
    for t in handles {
        log.push(format!("{:?}", t.join().ok()));
    }
    log.take()
}

#[test]
fn same_program_gives_identical_trace() {
    let first = busy_program();
    let second = busy_program();
    assert!(first.len() > 30, "the program does something: {first:?}");
    assert_eq!(first, second);
    let on_another_thread = std::thread::spawn(busy_program).join().unwrap();
    assert_eq!(first, on_another_thread);
}
