//! Integration tests of `Tasklet::kill`, of panics in tasklets, and of the teardown that kills
//! the remaining tasklets when their thread exits.
//!
//! Every `#[test]` runs on its own thread and therefore has its own scheduler.

use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tasklets::{Builder, Channel, JoinError, Preference, RecvError, SendError, Tasklet, TaskletExit};

mod common;
use common::Log;

/// Records `drop <name>` in the log when dropped.
struct Guard {
    name: String,
    log: Log,
}

impl Guard {
    fn new(log: &Log, name: impl Into<String>) -> Guard {
        Guard { name: name.into(), log: log.clone() }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.log.push(format!("drop {}", self.name));
    }
}

/// Asserts that `join` says the tasklet was killed.
fn assert_killed<T: ?Sized + tasklets::Joinable>(t: Tasklet<T>) {
    match t.join() {
        Err(JoinError::Killed) => {}
        Err(other) => panic!("expected Killed, got {other:?}"),
        Ok(_) => panic!("expected Killed, got a value"),
    }
}

// ---------------------------------------------------------------------------------------------
// Killing blocked tasklets
// ---------------------------------------------------------------------------------------------

#[test]
fn kill_blocked_receivers_removes_them_from_the_channel() {
    const N: usize = 5;
    let log = Log::new();
    let ch = Channel::<u32>::new();
    let receivers: Vec<Tasklet<u32>> = (0..N)
        .map(|k| {
            let (log, ch) = (log.clone(), ch.clone());
            tasklets::spawn(move || {
                let _guard = Guard::new(&log, format!("r{k}"));
                let v = ch.receive().unwrap();
                log.push(format!("r{k} got {v}"));
                v
            })
        })
        .collect();
    tasklets::run();
    assert_eq!(ch.balance(), -(N as isize));

    // Kill out of arrival order; each kill gives back one unit of balance.
    for (done, k) in [2, 0, 4, 1, 3].into_iter().enumerate() {
        receivers[k].kill();
        assert_eq!(ch.balance(), -((N - done - 1) as isize));
        assert!(!receivers[k].is_alive());
        assert!(log.contains(&format!("drop r{k}")), "its destructors ran during kill()");
    }
    assert_eq!(log.take(), ["drop r2", "drop r0", "drop r4", "drop r1", "drop r3"]);
    for t in receivers {
        assert_killed(t);
    }
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn kill_one_blocked_receiver_keeps_the_others_fifo() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    let receivers: Vec<Tasklet<()>> = (0..4)
        .map(|k| {
            let (log, ch) = (log.clone(), ch.clone());
            tasklets::spawn(move || log.push(format!("r{k} got {}", ch.receive().unwrap())))
        })
        .collect();
    tasklets::run();
    receivers[1].kill();
    assert_eq!(ch.balance(), -3);
    for v in 10..13 {
        ch.send(v).unwrap();
    }
    assert_eq!(log.take(), ["r0 got 10", "r2 got 11", "r3 got 12"]);
    assert_eq!(ch.balance(), 0);
}

#[test]
fn kill_blocked_senders_removes_them_and_drops_their_values() {
    const N: usize = 4;
    let log = Log::new();
    let ch = Channel::<Guard>::new();
    let senders: Vec<Tasklet<()>> = (0..N)
        .map(|k| {
            let (log, ch) = (log.clone(), ch.clone());
            tasklets::spawn(move || {
                let _guard = Guard::new(&log, format!("s{k}"));
                let value = Guard::new(&log, format!("value{k}"));
                if ch.send(value).is_ok() {
                    log.push(format!("s{k} sent"));
                }
            })
        })
        .collect();
    tasklets::run();
    assert_eq!(ch.balance(), N as isize);

    senders[3].kill();
    assert_eq!(ch.balance(), 3);
    senders[0].kill();
    assert_eq!(ch.balance(), 2);
    // The value a killed sender was sending is dropped with its stack, then its own guard.
    assert_eq!(log.take(), ["drop value3", "drop s3", "drop value0", "drop s0"]);

    // The survivors are served in order.
    let v = ch.receive().unwrap();
    assert_eq!(v.name, "value1");
    drop(v);
    senders[2].kill();
    assert_eq!(ch.balance(), 0);
    tasklets::run();
    assert_eq!(log.take(), ["drop value1", "drop value2", "drop s2", "s1 sent", "drop s1"]);
    assert!(senders[1].clone().join().is_ok());
    for k in [0, 2, 3] {
        assert_killed(senders[k].clone());
    }
}

#[test]
fn kill_a_paused_tasklet() {
    let log = Log::new();
    let t = {
        let log = log.clone();
        tasklets::spawn(move || {
            let _guard = Guard::new(&log, "paused");
            tasklets::schedule_remove().unwrap();
            log.push("resumed");
        })
    };
    tasklets::run();
    assert!(t.is_paused());
    t.kill();
    assert!(!t.is_alive() && !t.is_paused());
    assert_eq!(log.take(), ["drop paused"]);
    assert_eq!(t.insert(), Err(tasklets::StateError::Dead));
    tasklets::run();
    assert_eq!(log.take(), Vec::<String>::new());
    assert_killed(t);
}

#[test]
fn kill_a_bound_tasklet_that_never_ran_drops_its_closure() {
    let log = Log::new();
    let t = {
        let log = log.clone();
        let captured = Guard::new(&log, "captured");
        Builder::new()
            .bind(move || {
                log.push("closure ran");
                drop(captured);
            })
            .unwrap()
    };
    assert!(t.is_paused());
    t.kill();
    assert!(!t.is_alive());
    assert_eq!(log.take(), ["drop captured"], "dropped without running");
    tasklets::run();
    assert_eq!(log.take(), Vec::<String>::new());
    assert_killed(t);
}

#[test]
fn kill_a_spawned_tasklet_that_never_ran_drops_its_closure() {
    let log = Log::new();
    let order = Log::new();
    spawn_marker(&order, "before");
    let t = {
        let log = log.clone();
        let captured = Guard::new(&log, "captured");
        tasklets::spawn(move || {
            log.push("closure ran");
            drop(captured);
        })
    };
    spawn_marker(&order, "after");
    assert_eq!(tasklets::runcount(), 4);
    t.kill();
    assert_eq!(tasklets::runcount(), 3, "taken out of the run queue");
    assert_eq!(log.take(), ["drop captured"]);
    tasklets::run();
    assert_eq!(log.take(), Vec::<String>::new());
    assert_eq!(order.take(), ["before", "after"]);
    assert_killed(t);
}

fn spawn_marker(log: &Log, name: &'static str) -> Tasklet<()> {
    let log = log.clone();
    tasklets::spawn(move || log.push(name))
}

#[test]
fn kill_a_dead_tasklet_is_a_noop() {
    let t = tasklets::spawn(|| 99);
    tasklets::run();
    t.kill();
    t.kill();
    assert!(!t.is_alive());
    assert_eq!(t.join().unwrap(), 99, "the result survives");

    let killed = tasklets::spawn(|| ());
    killed.kill();
    killed.kill(); // a second kill is a no-op too
    assert_killed(killed);
}

#[test]
fn kill_the_current_tasklet_ends_it() {
    let log = Log::new();
    let t = {
        let log = log.clone();
        tasklets::spawn(move || {
            let _guard = Guard::new(&log, "self");
            log.push("before kill");
            tasklets::current().kill();
            log.push("after kill"); // never runs
        })
    };
    let other = spawn_marker(&log, "other");
    tasklets::run();
    assert_eq!(log.take(), ["before kill", "drop self", "other"]);
    assert!(!other.is_alive());
    assert_killed(t);
}

#[test]
fn killing_main_panics() {
    let payload = panic::catch_unwind(|| tasklets::current().kill()).unwrap_err();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap();
    assert!(message.contains("main tasklet cannot be killed"), "{message}");
    // Main is unharmed and the scheduler still works.
    assert!(tasklets::current().is_main() && tasklets::current().is_alive());
    assert_eq!(tasklets::spawn(|| 1).join().unwrap(), 1);
}

#[test]
fn killing_main_from_a_tasklet_panics_that_tasklet() {
    let main = tasklets::current();
    let t = tasklets::spawn(move || main.kill());
    tasklets::run();
    let err = t.join().unwrap_err();
    assert!(err.is_panic());
    assert!(err.to_string().contains("main tasklet cannot be killed"), "{err}");
    assert!(tasklets::current().is_alive());
}

#[test]
fn kill_from_another_tasklet() {
    let log = Log::new();
    let ch = Channel::<()>::new();
    let victim = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            let _guard = Guard::new(&log, "victim");
            let _ = ch.receive();
            log.push("victim resumed");
        })
    };
    let killer = {
        let (log, victim) = (log.clone(), victim.clone());
        tasklets::spawn(move || {
            log.push("killer kills");
            victim.kill();
            log.push("killer continues");
        })
    };
    tasklets::run();
    assert_eq!(log.take(), ["killer kills", "drop victim", "killer continues"]);
    assert_eq!(ch.balance(), 0);
    assert!(killer.join().is_ok());
    assert_killed(victim);
}

#[test]
fn kill_of_a_tasklet_main_is_joining_wakes_main_with_killed() {
    let ch = Channel::<()>::new();
    let target = {
        let ch = ch.clone();
        tasklets::spawn(move || ch.receive())
    };
    {
        let target = target.clone();
        tasklets::spawn(move || {
            tasklets::schedule(); // let the target block first
            target.kill();
        });
    }
    assert!(matches!(target.join(), Err(JoinError::Killed)));
    assert_eq!(ch.balance(), 0);
}

// ---------------------------------------------------------------------------------------------
// Regressions: a killed tasklet must never be resumed (PyPy's emulation once left a killed
// tasklet queued on the channel and resumed it later)
// ---------------------------------------------------------------------------------------------

#[test]
fn killed_blocked_receiver_is_not_resurrected_by_a_later_send() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    let r = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            let v = ch.receive();
            log.push(format!("RESURRECTED with {v:?}"));
        })
    };
    tasklets::run();
    r.kill();
    assert_eq!(ch.balance(), 0);

    // Main's send finds nobody: a deadlock, not a hand-over to the dead receiver.
    assert!(matches!(ch.send(1), Err(SendError::Deadlock(1))));
    assert_eq!(ch.balance(), 0);

    // A tasklet's send blocks properly.
    let s = {
        let ch = ch.clone();
        tasklets::spawn(move || ch.send(2))
    };
    tasklets::run();
    assert!(s.is_blocked());
    assert_eq!(ch.balance(), 1);
    assert_eq!(ch.receive(), Ok(2));
    tasklets::run();
    assert!(s.join().unwrap().is_ok());
    assert_eq!(log.take(), Vec::<String>::new());
    assert_killed(r);
}

#[test]
fn killed_blocked_sender_is_not_resurrected_by_a_later_receive() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    let s = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            let r = ch.send(5);
            log.push(format!("RESURRECTED {r:?}"));
        })
    };
    tasklets::run();
    s.kill();
    assert_eq!(ch.balance(), 0);
    assert_eq!(ch.receive(), Err(RecvError::Deadlock), "the killed sender's value is gone");
    assert_eq!(ch.try_receive(), Err(tasklets::TryRecvError::Empty));
    tasklets::run();
    assert_eq!(log.take(), Vec::<String>::new());
    assert_killed(s);
}

#[test]
fn killed_queued_tasklet_never_runs_again() {
    let log = Log::new();
    let t = {
        let log = log.clone();
        tasklets::spawn(move || {
            let _guard = Guard::new(&log, "t");
            log.push("t start");
            tasklets::schedule();
            log.push("RESURRECTED");
        })
    };
    tasklets::schedule(); // t runs to its schedule() and is queued behind main
    assert!(t.is_scheduled() && !t.is_blocked());
    assert_eq!(tasklets::runcount(), 2);
    t.kill();
    assert_eq!(tasklets::runcount(), 1, "no longer queued");
    tasklets::run();
    tasklets::schedule();
    assert_eq!(log.take(), ["t start", "drop t"]);
    assert_killed(t);
}

#[test]
fn killed_receiver_woken_but_not_yet_run_never_runs_again() {
    // With preference Neither a send hands the value over and queues the receiver; killing it
    // before it runs must take it out of the run queue (and drop the delivered value).
    let log = Log::new();
    let ch = Channel::<Guard>::new();
    ch.set_preference(Preference::Neither);
    let r = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            let v = ch.receive().unwrap();
            log.push(format!("RESURRECTED with {}", v.name));
        })
    };
    tasklets::run();
    ch.send(Guard::new(&log, "value")).unwrap();
    assert!(r.is_scheduled() && !r.is_blocked());
    assert_eq!(tasklets::runcount(), 2);
    r.kill();
    assert_eq!(tasklets::runcount(), 1);
    assert_eq!(ch.balance(), 0);
    tasklets::run();
    assert_eq!(log.take(), ["drop value"]);
    assert_killed(r);
}

#[test]
fn killed_receiver_woken_by_close_never_runs_again() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    let r = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            let v = ch.receive();
            log.push(format!("RESURRECTED with {v:?}"));
        })
    };
    tasklets::run();
    ch.close();
    assert_eq!(tasklets::runcount(), 2);
    r.kill();
    assert_eq!(tasklets::runcount(), 1);
    tasklets::run();
    assert_eq!(log.take(), Vec::<String>::new());
    assert_killed(r);
}

// ---------------------------------------------------------------------------------------------
// TaskletExit
// ---------------------------------------------------------------------------------------------

#[test]
fn tasklet_can_catch_tasklet_exit_and_reraise_it() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    let t = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            let _outer = Guard::new(&log, "outer");
            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                let _inner = Guard::new(&log, "inner");
                ch.receive()
            }));
            match result {
                Ok(v) => log.push(format!("received {v:?}")),
                Err(payload) => {
                    log.push(format!("caught TaskletExit: {}", payload.is::<TaskletExit>()));
                    assert_eq!(ch.balance(), 0, "already out of the channel while unwinding");
                    panic::resume_unwind(payload);
                }
            }
            log.push("after");
        })
    };
    tasklets::run();
    t.kill();
    assert_eq!(log.take(), ["drop inner", "caught TaskletExit: true", "drop outer"]);
    assert_killed(t);
    assert_eq!(TaskletExit.to_string(), "tasklet killed");
}

#[test]
fn tasklet_that_swallows_tasklet_exit_finishes_normally() {
    // Observed behaviour: like Python code that catches TaskletExit, a tasklet that does not
    // re-raise it goes on running; here it returns a value, so join succeeds.
    let ch = Channel::<u32>::new();
    let t = {
        let ch = ch.clone();
        tasklets::spawn(move || {
            let caught = panic::catch_unwind(AssertUnwindSafe(|| ch.receive())).is_err();
            if caught {
                "swallowed"
            } else {
                "received"
            }
        })
    };
    tasklets::run();
    t.kill();
    assert!(!t.is_alive());
    assert_eq!(t.join().unwrap(), "swallowed");
    assert_eq!(ch.balance(), 0);
}

#[test]
fn killing_a_joining_tasklet_removes_it_from_the_joiners() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    let target = {
        let ch = ch.clone();
        tasklets::spawn(move || ch.receive().unwrap() + 1)
    };
    let joiners: Vec<Tasklet<()>> = (0..3)
        .map(|k| {
            let (log, target) = (log.clone(), target.clone());
            tasklets::spawn(move || {
                let _guard = Guard::new(&log, format!("j{k}"));
                let r = target.join();
                log.push(format!("j{k} joined {:?}", r.ok()));
            })
        })
        .collect();
    tasklets::run();
    assert!(joiners.iter().all(Tasklet::is_blocked));
    joiners[1].kill();
    assert_eq!(log.take(), ["drop j1"]);

    // The target finishes: only the live joiners are woken; the killed one is not resumed
    // (resuming a finished tasklet would be a crash, queuing it would inflate runcount).
    ch.send(1).unwrap();
    assert_eq!(tasklets::runcount(), 3, "main + the two live joiners");
    tasklets::run();
    assert_eq!(log.take(), ["j0 joined Some(2)", "drop j0", "j2 joined None", "drop j2"]);
    assert_killed(joiners[1].clone());
    assert!(!target.is_alive());
}

// ---------------------------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------------------------

#[test]
fn panicking_tasklet_ends_only_itself() {
    let log = Log::new();
    let a = {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("a before");
            tasklets::schedule();
            log.push("a after");
            "a"
        })
    };
    let bad = {
        let log = log.clone();
        tasklets::spawn(move || {
            let _guard = Guard::new(&log, "bad");
            log.push("bad panics");
            if log.contains("bad panics") {
                panic!("boom");
            }
            "unreachable"
        })
    };
    let c = {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("c before");
            tasklets::schedule();
            log.push("c after");
            "c"
        })
    };
    tasklets::run(); // returns normally
    assert_eq!(log.take(), ["a before", "bad panics", "drop bad", "c before", "a after", "c after"]);
    assert_eq!(a.join().unwrap(), "a");
    assert_eq!(c.join().unwrap(), "c");

    let err = bad.join().unwrap_err();
    assert!(err.is_panic());
    assert!(!err.is_killed());
    assert_eq!(err.to_string(), "tasklet panicked: boom");
    assert_eq!(format!("{err:?}"), "Panicked(\"boom\")");
    let payload = err.try_into_panic().unwrap();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
}

#[test]
fn panic_payloads_string_and_other() {
    let code = std::hint::black_box(42); // a runtime value: the payload is a String
    let formatted = tasklets::spawn(move || -> u8 { panic!("code {code}") });
    let custom = tasklets::spawn(|| -> u8 { panic::panic_any(7i32) });
    tasklets::run();
    let err = formatted.join().unwrap_err();
    assert_eq!(err.to_string(), "tasklet panicked: code 42");
    assert_eq!(err.try_into_panic().unwrap().downcast_ref::<String>().map(String::as_str), Some("code 42"));
    let err = custom.join().unwrap_err();
    assert!(err.is_panic());
    assert_eq!(*err.try_into_panic().unwrap().downcast::<i32>().unwrap(), 7);
}

#[test]
fn try_into_panic_gives_other_errors_back() {
    let t = tasklets::spawn(|| ());
    t.kill();
    let err = t.join().unwrap_err();
    assert!(err.is_killed() && !err.is_panic());
    assert_eq!(err.to_string(), "tasklet was killed");
    assert!(matches!(err.try_into_panic(), Err(JoinError::Killed)));
}

#[test]
fn panic_can_be_rethrown_in_main_with_resume_unwind() {
    let t = tasklets::spawn(|| panic!("propagate me"));
    let payload = t.join().unwrap_err().try_into_panic().unwrap();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| panic::resume_unwind(payload))).unwrap_err();
    assert_eq!(caught.downcast_ref::<&str>(), Some(&"propagate me"));
}

#[test]
fn scheduler_stays_usable_after_a_panic() {
    let first = tasklets::spawn(|| panic!("first"));
    tasklets::run();
    assert!(first.join().unwrap_err().is_panic());

    let ch = Channel::new();
    let handles: Vec<Tasklet<u32>> = (0..10)
        .map(|i| {
            let ch = ch.clone();
            tasklets::spawn(move || {
                tasklets::schedule();
                ch.send(i).unwrap();
                i
            })
        })
        .collect();
    let got: Vec<u32> = (0..10).map(|_| ch.receive().unwrap()).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    tasklets::run();
    for (i, t) in handles.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), i as u32);
    }
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn panic_after_a_rendezvous_does_not_disturb_the_partner() {
    let ch = Channel::<u32>::new();
    let rx = ch.clone();
    let receiver = tasklets::spawn(move || -> u32 {
        let v = rx.receive().unwrap();
        panic!("got {v} and panicked");
    });
    let tx = ch.clone();
    let sender = tasklets::spawn(move || {
        tx.send(3).unwrap(); // the receiver runs (and panics) now
        "sender fine"
    });
    tasklets::run();
    assert_eq!(sender.join().unwrap(), "sender fine");
    assert_eq!(receiver.join().unwrap_err().to_string(), "tasklet panicked: got 3 and panicked");
    assert_eq!(ch.balance(), 0);
}

#[test]
fn main_blocked_on_a_tasklet_that_panics_gets_deadlock_not_the_panic() {
    let ch = Channel::<u32>::new();
    let t = tasklets::spawn(|| -> u32 { panic!("the only hope died") });
    assert_eq!(ch.receive(), Err(RecvError::Deadlock));
    assert!(t.join().unwrap_err().is_panic());
}

#[test]
fn panicking_joined_tasklet_wakes_its_joiner() {
    let target = tasklets::spawn(|| -> u32 {
        tasklets::schedule();
        panic!("target failed")
    });
    let joiner = {
        let target = target.clone();
        tasklets::spawn(move || match target.join() {
            Err(e) => e.to_string(),
            Ok(v) => format!("value {v}"),
        })
    };
    tasklets::run();
    assert_eq!(joiner.join().unwrap(), "tasklet panicked: target failed");
    assert!(matches!(target.join(), Err(JoinError::Taken)));
}

// ---------------------------------------------------------------------------------------------
// Thread exit
// ---------------------------------------------------------------------------------------------

/// Increments the counter when dropped.
struct CountOnDrop(Arc<AtomicUsize>);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn thread_exit_kills_remaining_tasklets_and_runs_their_destructors() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let resurrected = Arc::new(AtomicUsize::new(0));
    let (d, res) = (dropped.clone(), resurrected.clone());
    let expected = std::thread::spawn(move || {
        let guard = || CountOnDrop(d.clone());
        let mut guards = 0;
        let ch = Channel::<CountOnDrop>::new();

        // Blocked receivers.
        let mut receivers = Vec::new();
        for _ in 0..3 {
            let (g, ch, res) = (guard(), ch.clone(), res.clone());
            receivers.push(tasklets::spawn(move || {
                let _g = g;
                let _ = ch.receive();
                res.fetch_add(1, Ordering::SeqCst);
            }));
            guards += 1;
        }
        // A blocked sender on another channel, holding a guard and sending one.
        let other = Channel::<CountOnDrop>::new();
        {
            let (g, v, other, res) = (guard(), guard(), other.clone(), res.clone());
            tasklets::spawn(move || {
                let _g = g;
                let _ = other.send(v);
                res.fetch_add(1, Ordering::SeqCst);
            });
            guards += 2;
        }
        // A tasklet blocked joining a blocked receiver.
        {
            let (g, target, res) = (guard(), receivers[0].clone(), res.clone());
            tasklets::spawn(move || {
                let _g = g;
                let _ = target.join();
                res.fetch_add(1, Ordering::SeqCst);
            });
            guards += 1;
        }
        // Paused by schedule_remove.
        {
            let (g, res) = (guard(), res.clone());
            tasklets::spawn(move || {
                let _g = g;
                let _ = tasklets::schedule_remove();
                res.fetch_add(1, Ordering::SeqCst);
            });
            guards += 1;
        }
        // One that catches TaskletExit and re-raises it.
        {
            let (g, ch, res) = (guard(), ch.clone(), res.clone());
            tasklets::spawn(move || {
                let _g = g;
                if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| ch.receive())) {
                    assert!(payload.is::<TaskletExit>());
                    panic::resume_unwind(payload);
                }
                res.fetch_add(1, Ordering::SeqCst);
            });
            guards += 1;
        }
        tasklets::run();
        assert_eq!(ch.balance(), -4);
        assert_eq!(other.balance(), 1);

        // Runnable and started (queued behind main after its first schedule()).
        {
            let (g, res) = (guard(), res.clone());
            tasklets::spawn(move || {
                let _g = g;
                tasklets::schedule();
                res.fetch_add(1, Ordering::SeqCst);
            });
            guards += 1;
        }
        tasklets::schedule();
        // Bound, never run: the guard is captured by the closure.
        {
            let (g, res) = (guard(), res.clone());
            let _bound = Builder::new().bind(move || {
                drop(g);
                res.fetch_add(1, Ordering::SeqCst);
            });
            guards += 1;
        }
        // Spawned, never run.
        {
            let (g, res) = (guard(), res.clone());
            tasklets::spawn(move || {
                drop(g);
                res.fetch_add(1, Ordering::SeqCst);
            });
            guards += 1;
        }
        // All handles dropped here; the scheduler still owns the tasklets.
        assert_eq!(d.load(Ordering::SeqCst), 0, "nothing dropped before the thread exits");
        guards
    })
    .join()
    .expect("the thread exits cleanly");
    assert_eq!(expected, 11);
    assert_eq!(dropped.load(Ordering::SeqCst), expected, "every destructor ran at thread exit");
    assert_eq!(resurrected.load(Ordering::SeqCst), 0, "no killed tasklet went on running");
}

#[test]
fn thread_exit_with_no_tasklets_left_is_clean() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let t = tasklets::spawn(move || CountOnDrop(c));
        tasklets::run();
        drop(t.join().unwrap());
    })
    .join()
    .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn thread_exit_destructors_may_use_the_runtime() {
    // The scheduler stays usable while the remaining tasklets are killed at thread exit: a
    // destructor can ask for the current tasklet and even spawn a tasklet, which gets to run.
    struct SpawnOnDrop {
        dropped_on_main: Arc<AtomicUsize>,
        ran: Arc<AtomicUsize>,
    }
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            if tasklets::current().is_main() {
                self.dropped_on_main.fetch_add(1, Ordering::SeqCst);
            }
            let ran = self.ran.clone();
            tasklets::spawn(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
    let dropped_on_main = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let (m, r) = (dropped_on_main.clone(), ran.clone());
    std::thread::spawn(move || {
        let ch = Channel::<()>::new();
        // Started and blocked: its guard drops on its own stack while it unwinds.
        let guard = SpawnOnDrop { dropped_on_main: m.clone(), ran: r.clone() };
        tasklets::spawn(move || {
            let _guard = guard;
            let _ = ch.receive();
        });
        tasklets::run();
        // Never started: its closure (and the guard in it) is dropped in place, on main's stack.
        let guard = SpawnOnDrop { dropped_on_main: m, ran: r };
        tasklets::spawn(move || drop(guard));
    })
    .join()
    .expect("the thread exits cleanly");
    assert_eq!(dropped_on_main.load(Ordering::SeqCst), 1, "only the never-started closure drops on main");
    assert_eq!(ran.load(Ordering::SeqCst), 2, "tasklets spawned during teardown ran");
}

#[test]
fn thread_exit_leaks_a_tasklet_that_refuses_to_die_and_still_exits() {
    // A tasklet that swallows every TaskletExit and blocks again survives the three kills of the
    // teardown; it is leaked (with a warning) and the thread still exits.
    let kills_caught = Arc::new(AtomicUsize::new(0));
    let caught = kills_caught.clone();
    std::thread::spawn(move || {
        let ch = Channel::<()>::new();
        tasklets::spawn(move || loop {
            if panic::catch_unwind(AssertUnwindSafe(|| ch.receive())).is_err() {
                caught.fetch_add(1, Ordering::SeqCst);
            }
        });
        tasklets::run();
    })
    .join()
    .expect("the thread exits cleanly");
    assert_eq!(kills_caught.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------------------
// Kill while the killed tasklet's destructors block
// ---------------------------------------------------------------------------------------------

/// Receives on its channel when dropped, logging what it got.
struct BlockingDrop {
    ch: Channel<u32>,
    log: Log,
}

impl Drop for BlockingDrop {
    fn drop(&mut self) {
        let r = self.ch.receive();
        self.log.push(format!("drop received {r:?}"));
    }
}

#[test]
fn kill_returns_when_the_killed_tasklet_blocks_in_a_destructor() {
    // Observed behaviour: kill() switches to the target and the caller continues as soon as the
    // target gives up the CPU. If a destructor blocks during the unwind, kill() returns with the
    // target still alive and blocked; the unwind completes once the destructor is served.
    let log = Log::new();
    let (main_ch, side) = (Channel::<u32>::new(), Channel::<u32>::new());
    let t = {
        let (log, main_ch, side) = (log.clone(), main_ch.clone(), side.clone());
        tasklets::spawn(move || {
            let _blocking = BlockingDrop { ch: side, log: log.clone() };
            let _ = main_ch.receive();
            log.push("RESURRECTED");
        })
    };
    tasklets::run();
    t.kill();
    assert!(t.is_alive() && t.is_blocked(), "unwinding, blocked in a destructor");
    assert_eq!(main_ch.balance(), 0, "already out of the first channel");
    assert_eq!(side.balance(), -1);
    side.send(1).unwrap();
    assert!(!t.is_alive());
    assert_eq!(log.take(), ["drop received Ok(1)"]);
    assert_killed(t);
}

#[test]
fn second_kill_while_a_destructor_blocks_fails_that_operation_instead_of_aborting() {
    // A second unwind cannot start while one is in progress (that would abort the process): the
    // blocking operation in the destructor fails instead, and the first unwind completes.
    let log = Log::new();
    let (main_ch, side) = (Channel::<u32>::new(), Channel::<u32>::new());
    let t = {
        let (log, main_ch, side) = (log.clone(), main_ch.clone(), side.clone());
        tasklets::spawn(move || {
            let _blocking = BlockingDrop { ch: side, log: log.clone() };
            let _ = main_ch.receive();
        })
    };
    tasklets::run();
    t.kill();
    assert!(t.is_blocked());
    t.kill();
    assert!(!t.is_alive());
    assert_eq!(side.balance(), 0, "the failed receive left the channel");
    let entries = log.take();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].starts_with("drop received Err("), "{entries:?}");
    assert_killed(t);
}

// ---------------------------------------------------------------------------------------------
// Stack overflow (fatal: checked in a child process)
// ---------------------------------------------------------------------------------------------

const OVERFLOW_CHILD_ENV: &str = "TASKLET_TEST_OVERFLOW_CHILD";

/// SIGABRT (6 on every Linux architecture); std has no constant for it and libc is no
/// dev-dependency.
const SIGABRT: i32 = 6;

/// Recurses until the stack overflows.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let buf = [n as u8; 256];
    if std::hint::black_box(n) == u64::MAX {
        return 0;
    }
    recurse(n + 1) + u64::from(std::hint::black_box(buf)[0])
}

#[test]
fn stack_overflow_in_a_tasklet_aborts_naming_the_tasklet() {
    if std::env::var_os(OVERFLOW_CHILD_ENV).is_some() {
        let t =
            Builder::new().name("deep-recursion").stack_size(tasklets::MIN_STACK_SIZE).spawn(|| recurse(0));
        tasklets::run();
        unreachable!("the overflow aborts the process: {:?}", t.map(|t| t.join().is_ok()));
    }
    // Both guard page mechanisms: the default (MADV_GUARD_INSTALL where the kernel has it) and
    // the mprotect fallback.
    for guard in [None, Some("mprotect")] {
        let exe = std::env::current_exe().expect("the test binary");
        let mut cmd = common::target_command(exe);
        cmd.args(["--exact", "stack_overflow_in_a_tasklet_aborts_naming_the_tasklet", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(OVERFLOW_CHILD_ENV, "1");
        if let Some(guard) = guard {
            cmd.env("TASKLET_STACK_GUARD", guard);
        }
        let output = cmd.output().expect("spawn the child test process");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "guard {guard:?}: the child must not survive: {stderr}");
        assert_eq!(output.status.signal(), Some(SIGABRT), "guard {guard:?}: aborted: {stderr}");
        assert!(stderr.contains("deep-recursion"), "guard {guard:?}: names the tasklet: {stderr}");
        assert!(stderr.contains("overflow"), "guard {guard:?}: says what happened: {stderr}");
    }
}

/// A kill used to be lost while another tasklet of the thread was suspended mid-unwind: the
/// kill path asked `std::thread::panicking()`, which is per OS thread, so the killed tasklet
/// looked like it was unwinding too, its wait just failed and it ran on (`join` gave `Ok`).
#[test]
fn kill_is_not_lost_while_another_tasklet_is_suspended_mid_unwind() {
    struct ParkOnDrop(Channel<u32>);
    impl Drop for ParkOnDrop {
        fn drop(&mut self) {
            // Parks while unwinding.
            let _ = self.0.receive();
        }
    }
    let release = Channel::<u32>::new();
    let park = release.clone();
    let b = tasklets::spawn(move || {
        let _guard = ParkOnDrop(park);
        panic!("b unwinds and parks in a destructor");
    });
    tasklets::schedule();
    assert!(b.is_alive() && b.is_blocked(), "b is parked mid-unwind");
    let ch = Channel::<u32>::new();
    let rx = ch.clone();
    let a = tasklets::spawn(move || {
        let _ = rx.receive_timeout(std::time::Duration::from_secs(30));
        "a ran on after its kill"
    });
    tasklets::schedule();
    assert!(a.is_blocked());
    a.kill();
    assert!(!a.is_alive());
    assert_killed(a);
    release.send(1).unwrap();
    assert!(b.join().unwrap_err().is_panic());
}

/// The child of [`panic_backtrace_in_a_minimum_size_tasklet_fits_its_stack`]: a tasklet on the
/// smallest stack panics while `RUST_BACKTRACE` asks for a backtrace.
#[test]
fn panic_backtrace_in_a_minimum_size_tasklet_child() {
    if !common::in_child("panic_backtrace_in_a_minimum_size_tasklet_child") {
        return;
    }
    let t = Builder::new()
        .name("tiny")
        .stack_size(tasklets::MIN_STACK_SIZE)
        .spawn(|| -> () { panic!("tiny stack panic") })
        .unwrap();
    assert!(t.join().unwrap_err().is_panic());
}

/// A panic with `RUST_BACKTRACE=1` (or `full`) in a tasklet with `MIN_STACK_SIZE` overflowed
/// the stack while std printed the backtrace (16 KiB): the report must fit.
#[test]
fn panic_backtrace_in_a_minimum_size_tasklet_fits_its_stack() {
    for backtrace in ["1", "full"] {
        let out = common::run_child(
            "panic_backtrace_in_a_minimum_size_tasklet_child",
            &[("RUST_BACKTRACE", backtrace)],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "RUST_BACKTRACE={backtrace}: child failed ({:?}):\n{stderr}",
            out.status
        );
        assert!(stderr.contains("tiny stack panic"), "RUST_BACKTRACE={backtrace}: panic printed:\n{stderr}");
        assert!(
            stderr.contains("stack backtrace"),
            "RUST_BACKTRACE={backtrace}: backtrace printed:\n{stderr}"
        );
    }
}

/// The child of [`misuse_panics_report_the_callers_location`].
#[test]
fn misuse_panics_report_the_callers_location_child() {
    if !common::in_child("misuse_panics_report_the_callers_location_child") {
        return;
    }
    let files = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = files.clone();
    panic::set_hook(Box::new(move |info| {
        seen.lock().unwrap().push(info.location().map(|l| l.file().to_string()).unwrap_or_default());
    }));
    let main = tasklets::current();
    let misuses: Vec<Box<dyn FnOnce()>> = vec![
        Box::new(|| tasklets::run()),
        Box::new(|| {
            tasklets::run_watchdog(std::time::Duration::from_secs(1));
        }),
        Box::new(move || main.kill()),
    ];
    for misuse in misuses {
        let t = tasklets::spawn(misuse);
        assert!(t.join().unwrap_err().is_panic());
    }
    assert!(panic::catch_unwind(|| tasklets::current().kill()).is_err());
    let _ = panic::take_hook();
    let files = files.lock().unwrap();
    assert_eq!(files.len(), 4, "{files:?}");
    for file in files.iter() {
        assert!(file.ends_with("kill_and_panic.rs"), "a misuse panic reported {file}, not the caller's file");
    }
}

/// `run()` / `run_watchdog()` from a tasklet and `kill()` of main reported the library's
/// source location (src/scheduler.rs) instead of the caller's: `#[track_caller]`.
#[test]
fn misuse_panics_report_the_callers_location() {
    common::run_in_child("misuse_panics_report_the_callers_location_child");
}

/// The child of [`panic_in_a_named_tasklet_names_it`]: `USER_HOOK` set installs a hook of the
/// user's before the first tasklet.
#[test]
fn panic_in_a_named_tasklet_names_it_child() {
    if !common::in_child("panic_in_a_named_tasklet_names_it_child") {
        return;
    }
    if std::env::var_os("USER_HOOK").is_some() {
        let std_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            eprintln!("user hook saw a panic");
            std_hook(info);
        }));
    }
    let t = Builder::new().name("boom").spawn(|| -> () { panic!("kaboom") }).unwrap();
    assert!(t.join().unwrap_err().is_panic());
}

/// A panic in a tasklet named 'boom' printed only `thread 'main' panicked at ..`: the tasklet's
/// name and id appear, and a user's own hook (set before) still runs.
#[test]
fn panic_in_a_named_tasklet_names_it() {
    for user_hook in [false, true] {
        let envs: &[(&str, &str)] = if user_hook { &[("USER_HOOK", "1")] } else { &[] };
        let out = common::run_child("panic_in_a_named_tasklet_names_it_child", envs);
        common::assert_child_ok(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("tasklet 'boom' (id "),
            "user hook {user_hook}: names the tasklet:\n{stderr}"
        );
        assert!(
            stderr.contains("panicked at") && stderr.contains("kaboom"),
            "std's message follows:\n{stderr}"
        );
        assert_eq!(stderr.contains("user hook saw a panic"), user_hook, "the user's hook runs:\n{stderr}");
    }
}
