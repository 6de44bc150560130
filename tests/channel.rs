//! Integration tests of Stackless rendezvous channels: the preference rule (checked against the
//! trace table of the Stackless reference), balance, FIFO service, main as a waiter, deadlock
//! detection, closing, iteration and the non-blocking operations.
//!
//! Every `#[test]` runs on its own thread and therefore has its own scheduler.

use std::rc::Rc;

use tasklets::{Channel, Preference, RecvError, SendError, Tasklet, TryRecvError, TrySendError};

mod common;
use common::Log;

// ---------------------------------------------------------------------------------------------
// The preference table (stackless-reference.md)
// ---------------------------------------------------------------------------------------------

/// Runs the reference's three tasklets: R receiving ("R got"), S sending ("S after"), and X
/// ("X start", schedule(), "X end"), created R, S, X when `receiver_first`, else S, R, X.
fn preference_trace(preference: Preference, receiver_first: bool) -> Vec<String> {
    let log = Log::new();
    let ch = Channel::<&'static str>::new();
    ch.set_preference(preference);
    let spawn_r = || {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            assert_eq!(ch.receive(), Ok("payload"));
            log.push("R got");
        })
    };
    let spawn_s = || {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            ch.send("payload").unwrap();
            log.push("S after");
        })
    };
    let (first, second) = if receiver_first { (spawn_r(), spawn_s()) } else { (spawn_s(), spawn_r()) };
    let x = {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push("X start");
            tasklets::schedule();
            log.push("X end");
        })
    };
    tasklets::run();
    for t in [first, second, x] {
        assert!(!t.is_alive());
        t.join().unwrap();
    }
    assert_eq!(ch.balance(), 0);
    log.take()
}

const PARTNER_FIRST: [&str; 4] = ["R got", "X start", "S after", "X end"];
const CALLER_FIRST_SEND: [&str; 4] = ["S after", "X start", "R got", "X end"];

#[test]
fn preference_send_meets_blocked_receiver_pref_receiver() {
    assert_eq!(preference_trace(Preference::Receiver, true), PARTNER_FIRST);
}

#[test]
fn preference_send_meets_blocked_receiver_pref_neither() {
    assert_eq!(preference_trace(Preference::Neither, true), CALLER_FIRST_SEND);
}

#[test]
fn preference_send_meets_blocked_receiver_pref_sender() {
    assert_eq!(preference_trace(Preference::Sender, true), CALLER_FIRST_SEND);
}

#[test]
fn preference_receive_meets_blocked_sender_pref_receiver() {
    assert_eq!(preference_trace(Preference::Receiver, false), ["R got", "X start", "S after", "X end"]);
}

#[test]
fn preference_receive_meets_blocked_sender_pref_neither() {
    assert_eq!(preference_trace(Preference::Neither, false), ["R got", "X start", "S after", "X end"]);
}

#[test]
fn preference_receive_meets_blocked_sender_pref_sender() {
    assert_eq!(preference_trace(Preference::Sender, false), ["S after", "X start", "R got", "X end"]);
}

#[test]
fn default_preference_is_receiver() {
    let ch = Channel::<()>::new();
    assert_eq!(ch.preference(), Preference::Receiver);
    assert_eq!(Preference::default(), Preference::Receiver);
    ch.set_preference(Preference::Sender);
    assert_eq!(ch.preference(), Preference::Sender);
    assert_eq!(ch.clone().preference(), Preference::Sender, "clones share the channel");
}

#[test]
fn preference_from_int_clamps_and_as_int() {
    assert_eq!(Preference::from_int(-1), Preference::Receiver);
    assert_eq!(Preference::from_int(0), Preference::Neither);
    assert_eq!(Preference::from_int(1), Preference::Sender);
    assert_eq!(Preference::from_int(-42), Preference::Receiver);
    assert_eq!(Preference::from_int(i64::MIN), Preference::Receiver);
    assert_eq!(Preference::from_int(7), Preference::Sender);
    assert_eq!(Preference::from_int(i64::MAX), Preference::Sender);
    assert_eq!(Preference::Receiver.as_int(), -1);
    assert_eq!(Preference::Neither.as_int(), 0);
    assert_eq!(Preference::Sender.as_int(), 1);
    for p in [Preference::Receiver, Preference::Neither, Preference::Sender] {
        assert_eq!(Preference::from_int(p.as_int().into()), p);
    }
}

// ---------------------------------------------------------------------------------------------
// The seed example
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_example_output_order() {
    let log = Log::new();
    let ch = Channel::new();
    {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            log.push("Receiving tasklet started");
            let v: String = ch.receive().unwrap();
            log.push(v);
            log.push("Receiving tasklet finished");
        });
    }
    {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            log.push("Sending tasklet started");
            ch.send("send from sending_tasklet".to_string()).unwrap();
            log.push("sending tasklet finished");
        });
    }
    {
        let log = log.clone();
        tasklets::spawn(move || log.push("Just another tasklet in the scheduler"));
    }
    tasklets::run();
    assert_eq!(
        log.take(),
        [
            "Receiving tasklet started",
            "Sending tasklet started",
            "send from sending_tasklet",
            "Receiving tasklet finished",
            "Just another tasklet in the scheduler",
            "sending tasklet finished",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Balance and FIFO service
// ---------------------------------------------------------------------------------------------

#[test]
fn balance_counts_blocked_senders() {
    const N: usize = 10;
    let ch = Channel::<usize>::new();
    assert_eq!(ch.balance(), 0);
    let senders: Vec<Tasklet<Result<(), SendError<usize>>>> = (0..N)
        .map(|i| {
            let ch = ch.clone();
            tasklets::spawn(move || ch.send(i))
        })
        .collect();
    tasklets::run();
    assert_eq!(ch.balance(), N as isize);
    assert!(senders.iter().all(Tasklet::is_blocked));
    // Blocked senders are served first come, first served.
    for i in 0..N {
        assert_eq!(ch.receive(), Ok(i));
        assert_eq!(ch.balance(), (N - i - 1) as isize);
    }
    tasklets::run();
    for t in senders {
        assert!(t.join().unwrap().is_ok());
    }
}

#[test]
fn balance_counts_blocked_receivers_and_serves_them_fifo() {
    const N: usize = 10;
    let ch = Channel::<usize>::new();
    let log = Log::new();
    let receivers: Vec<Tasklet<usize>> = (0..N)
        .map(|k| {
            let (ch, log) = (ch.clone(), log.clone());
            tasklets::spawn(move || {
                let v = ch.receive().unwrap();
                log.push(format!("r{k} got {v}"));
                v
            })
        })
        .collect();
    tasklets::run();
    assert_eq!(ch.balance(), -(N as isize));
    for (i, value) in (100..100 + N).enumerate() {
        ch.send(value).unwrap(); // receiver preferred: it runs before send returns
        assert_eq!(ch.balance(), -((N - i - 1) as isize));
    }
    let expected: Vec<String> = (0..N).map(|k| format!("r{k} got {}", 100 + k)).collect();
    assert_eq!(log.take(), expected);
    for (k, t) in receivers.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), 100 + k);
    }
}

#[test]
fn blocked_receivers_fifo_with_preference_neither() {
    let ch = Channel::<u32>::new();
    ch.set_preference(Preference::Neither);
    let log = Log::new();
    for k in 0..4 {
        let (ch, log) = (ch.clone(), log.clone());
        tasklets::spawn(move || log.push(format!("r{k} got {}", ch.receive().unwrap())));
    }
    tasklets::run();
    for v in 0..4 {
        ch.send(v).unwrap(); // main continues, receivers are queued in order
    }
    log.push("main sent all");
    tasklets::run();
    assert_eq!(log.take(), ["main sent all", "r0 got 0", "r1 got 1", "r2 got 2", "r3 got 3"]);
}

#[test]
fn blocked_senders_fifo_between_tasklets() {
    let ch = Channel::<String>::new();
    for name in ["a", "b", "c"] {
        let ch = ch.clone();
        tasklets::spawn(move || ch.send(name.to_string()).unwrap());
    }
    let consumer = {
        let ch = ch.clone();
        tasklets::spawn(move || (0..3).map(|_| ch.receive().unwrap()).collect::<Vec<_>>())
    };
    tasklets::run();
    assert_eq!(consumer.join().unwrap(), ["a", "b", "c"]);
    assert_eq!(ch.balance(), 0);
}

#[test]
fn ping_pong_between_two_tasklets() {
    const ROUNDS: u32 = 1000;
    let (ping, pong) = (Channel::<u32>::new(), Channel::<u32>::new());
    let a = {
        let (ping, pong) = (ping.clone(), pong.clone());
        tasklets::spawn(move || {
            let mut last = 0;
            for i in 0..ROUNDS {
                ping.send(i).unwrap();
                last = pong.receive().unwrap();
                assert_eq!(last, i + 1);
            }
            last
        })
    };
    let b = tasklets::spawn(move || {
        let mut n = 0;
        for _ in 0..ROUNDS {
            let v = ping.receive().unwrap();
            pong.send(v + 1).unwrap();
            n += 1;
        }
        n
    });
    tasklets::run();
    assert_eq!(a.join().unwrap(), ROUNDS);
    assert_eq!(b.join().unwrap(), ROUNDS);
}

// ---------------------------------------------------------------------------------------------
// Main as a waiter
// ---------------------------------------------------------------------------------------------

#[test]
fn main_blocked_receiver_woken_by_a_tasklet() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    let t = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            log.push("t sends");
            ch.send(5).unwrap(); // main is a blocked receiver, preferred: main runs now
            log.push("t after");
        })
    };
    let v = ch.receive().unwrap();
    log.push(format!("main got {v}"));
    assert!(t.is_alive() && t.is_scheduled(), "t is queued, not finished");
    assert_eq!(ch.balance(), 0);
    tasklets::run();
    assert_eq!(log.take(), ["t sends", "main got 5", "t after"]);
}

#[test]
fn main_blocked_receiver_woken_by_a_tasklet_pref_neither() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    ch.set_preference(Preference::Neither);
    let t = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            ch.send(6).unwrap(); // the sender continues; main is queued
            log.push("t after");
        })
    };
    let v = ch.receive().unwrap();
    log.push(format!("main got {v}"));
    assert!(!t.is_alive());
    assert_eq!(log.take(), ["t after", "main got 6"]);
}

#[test]
fn main_blocked_sender_woken_by_a_tasklet() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    let t = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            let v = ch.receive().unwrap(); // receiver preferred: it continues, main is queued
            log.push(format!("t got {v}"));
            v
        })
    };
    ch.send(7).unwrap();
    log.push("main sent");
    assert!(!t.is_alive(), "the receiver finished before main resumed");
    assert_eq!(log.take(), ["t got 7", "main sent"]);
    assert_eq!(t.join().unwrap(), 7);
}

#[test]
fn main_blocked_sender_woken_by_a_tasklet_pref_sender() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    ch.set_preference(Preference::Sender);
    let t = {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            let v = ch.receive().unwrap(); // the sender (main) is preferred: it runs now
            log.push(format!("t got {v}"));
        })
    };
    ch.send(8).unwrap();
    log.push("main sent");
    assert!(t.is_alive() && t.is_scheduled());
    tasklets::run();
    assert_eq!(log.take(), ["main sent", "t got 8"]);
}

// ---------------------------------------------------------------------------------------------
// Deadlock
// ---------------------------------------------------------------------------------------------

#[test]
fn main_receive_with_nothing_runnable_is_a_deadlock() {
    let ch = Channel::<u32>::new();
    assert_eq!(ch.receive(), Err(RecvError::Deadlock));
    assert_eq!(ch.balance(), 0, "the failed wait is undone");
    assert!(!tasklets::current().is_blocked());
    // Again: still no waiter left behind.
    assert_eq!(ch.receive(), Err(RecvError::Deadlock));
    assert_eq!(ch.balance(), 0);
}

#[test]
fn main_send_with_nothing_runnable_is_a_deadlock_and_gives_the_value_back() {
    let ch = Channel::<Rc<String>>::new();
    let value = Rc::new(String::from("precious"));
    match ch.send(value.clone()) {
        Err(SendError::Deadlock(back)) => assert!(Rc::ptr_eq(&back, &value)),
        other => panic!("expected a deadlock, got {other:?}"),
    }
    assert_eq!(Rc::strong_count(&value), 1, "the channel kept no copy");
    assert_eq!(ch.balance(), 0);
    assert_eq!(ch.send(value.clone()).unwrap_err().into_inner(), value);
    assert_eq!(ch.balance(), 0);
}

#[test]
fn main_blocked_while_tasklets_block_elsewhere_is_a_deadlock() {
    let ch = Channel::<u32>::new();
    let other = Channel::<u32>::new();
    let log = Log::new();
    let blockers: Vec<Tasklet<()>> = (0..3)
        .map(|k| {
            let (other, log) = (other.clone(), log.clone());
            tasklets::spawn(move || {
                log.push(format!("b{k}"));
                let _ = other.receive();
            })
        })
        .collect();
    assert_eq!(ch.receive(), Err(RecvError::Deadlock));
    assert_eq!(log.take(), ["b0", "b1", "b2"], "they ran before main gave up");
    assert_eq!(ch.balance(), 0);
    assert_eq!(other.balance(), -3);
    assert!(blockers.iter().all(Tasklet::is_blocked));

    assert!(matches!(ch.send(1), Err(SendError::Deadlock(1))));
    assert_eq!(ch.balance(), 0);
}

#[test]
fn main_blocked_when_its_only_hope_finishes_without_serving_is_a_deadlock() {
    let ch = Channel::<u32>::new();
    let t = {
        let ch = ch.clone();
        tasklets::spawn(move || {
            tasklets::schedule();
            ch.balance() // sees main waiting, then finishes without serving it
        })
    };
    assert_eq!(ch.receive(), Err(RecvError::Deadlock));
    assert_eq!(t.join().unwrap(), -1);
    assert_eq!(ch.balance(), 0);
}

#[test]
fn main_send_sequence_deadlocks_when_the_receiver_stops() {
    let ch = Channel::<u32>::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || (rx.receive().unwrap(), rx.receive().unwrap()));
    let err = ch.send_sequence(1..=5).unwrap_err();
    assert!(matches!(err, SendError::Deadlock(3)), "{err:?}");
    assert_eq!(t.join().unwrap(), (1, 2));
    assert_eq!(ch.balance(), 0);
}

#[test]
fn deadlock_errors_mention_deadlock() {
    assert!(RecvError::Deadlock.to_string().to_lowercase().contains("deadlock"));
    assert!(SendError::Deadlock(()).to_string().to_lowercase().contains("deadlock"));
    assert!(RecvError::Deadlock.to_string().contains("without a sender available"));
    assert!(SendError::Deadlock(0).to_string().contains("without a receiver available"));
    let err = Channel::<u8>::new().receive().unwrap_err();
    assert!(err.to_string().contains("deadlock"), "{err}");
    let err = Channel::<u8>::new().send(1).unwrap_err();
    assert!(err.to_string().contains("deadlock"), "{err}");
    // The closed errors say so.
    assert!(RecvError::Closed.to_string().contains("closed"));
    assert!(SendError::Closed(()).to_string().contains("closed"));
    assert!(TrySendError::Closed(()).to_string().contains("closed"));
    assert!(TryRecvError::Closed.to_string().contains("closed"));
    assert!(!TrySendError::Full(()).to_string().is_empty());
    assert!(!TryRecvError::Empty.to_string().is_empty());
    // Debug of value-carrying errors does not require T: Debug and hides the value.
    struct Opaque;
    assert_eq!(format!("{:?}", SendError::Deadlock(Opaque)), "Deadlock(..)");
    assert_eq!(format!("{:?}", SendError::Closed(Opaque)), "Closed(..)");
    assert_eq!(format!("{:?}", TrySendError::Full(Opaque)), "Full(..)");
    assert_eq!(format!("{:?}", TrySendError::Closed(Opaque)), "Closed(..)");
}

// ---------------------------------------------------------------------------------------------
// close / open
// ---------------------------------------------------------------------------------------------

#[test]
fn close_empty_channel_is_closed_and_blocking_ops_fail() {
    let ch = Channel::<u32>::new();
    assert!(!ch.is_closing() && !ch.is_closed());
    ch.close();
    assert!(ch.is_closing());
    assert!(ch.is_closed());
    assert_eq!(ch.receive(), Err(RecvError::Closed));
    assert!(matches!(ch.send(3), Err(SendError::Closed(3))));
    assert_eq!(ch.balance(), 0);

    // The same from inside a tasklet: fails at once, does not block.
    let t = {
        let ch = ch.clone();
        tasklets::spawn(move || (ch.receive(), ch.send(4).map_err(SendError::into_inner)))
    };
    tasklets::run();
    assert_eq!(t.join().unwrap(), (Err(RecvError::Closed), Err(4)));
}

#[test]
fn close_with_blocked_senders_lets_them_be_drained() {
    let ch = Channel::<u32>::new();
    let senders: Vec<Tasklet<Result<(), SendError<u32>>>> = (0..3)
        .map(|i| {
            let ch = ch.clone();
            tasklets::spawn(move || ch.send(i))
        })
        .collect();
    tasklets::run();
    assert_eq!(ch.balance(), 3);
    ch.close();
    assert!(ch.is_closing());
    assert!(!ch.is_closed(), "senders still wait");
    assert_eq!(ch.balance(), 3, "close leaves blocked senders in place");
    assert!(senders.iter().all(Tasklet::is_blocked));

    // Operations that complete at once still succeed on a closing channel.
    assert_eq!(ch.receive(), Ok(0));
    assert_eq!(ch.try_receive(), Ok(1));
    assert!(!ch.is_closed());
    assert_eq!(ch.receive(), Ok(2));
    assert!(ch.is_closed());
    assert_eq!(ch.receive(), Err(RecvError::Closed));
    assert_eq!(ch.try_receive(), Err(TryRecvError::Closed));

    tasklets::run();
    for t in senders {
        assert!(t.join().unwrap().is_ok(), "the drained senders' sends succeeded");
    }
}

#[test]
fn close_wakes_blocked_receivers_with_closed() {
    let ch = Channel::<u32>::new();
    let log = Log::new();
    let receivers: Vec<Tasklet<Result<u32, RecvError>>> = (0..3)
        .map(|k| {
            let (ch, log) = (ch.clone(), log.clone());
            tasklets::spawn(move || {
                let r = ch.receive();
                log.push(format!("r{k} {r:?}"));
                r
            })
        })
        .collect();
    tasklets::run();
    assert_eq!(ch.balance(), -3);
    ch.close();
    assert_eq!(ch.balance(), 0, "no receiver stays blocked on a closing channel");
    assert!(ch.is_closed());
    assert!(receivers.iter().all(|t| t.is_alive() && !t.is_blocked()));
    assert_eq!(tasklets::runcount(), 4, "the woken receivers are queued");
    assert_eq!(log.take(), Vec::<String>::new(), "close itself does not switch");
    tasklets::run();
    assert_eq!(log.take(), ["r0 Err(Closed)", "r1 Err(Closed)", "r2 Err(Closed)"]);
    for t in receivers {
        assert_eq!(t.join().unwrap(), Err(RecvError::Closed));
    }
}

#[test]
fn close_from_a_tasklet_wakes_main_blocked_receiving() {
    let ch = Channel::<u32>::new();
    let closer = {
        let ch = ch.clone();
        tasklets::spawn(move || ch.close())
    };
    assert_eq!(ch.receive(), Err(RecvError::Closed), "woken by close, not a deadlock");
    assert!(!closer.is_alive());
    assert!(ch.is_closed());
}

#[test]
fn close_from_a_tasklet_fails_main_blocked_sending_only_if_never_drained() {
    // A sender blocked at close time stays, so main's send is not failed by close; with nobody
    // left to drain it, it ends as a deadlock with the value back.
    let ch = Channel::<u32>::new();
    let closer = {
        let ch = ch.clone();
        tasklets::spawn(move || {
            ch.close();
            ch.balance()
        })
    };
    assert!(matches!(ch.send(10), Err(SendError::Deadlock(10))));
    assert_eq!(closer.join().unwrap(), 1, "main was a blocked sender when closed");
    assert_eq!(ch.balance(), 0);
    assert!(ch.is_closed());
}

#[test]
fn open_reopens_a_closed_channel() {
    let ch = Channel::<u32>::new();
    ch.close();
    assert!(ch.is_closed());
    ch.open();
    assert!(!ch.is_closing() && !ch.is_closed());
    let rx = ch.clone();
    let t = tasklets::spawn(move || rx.receive());
    tasklets::run();
    assert_eq!(ch.balance(), -1, "receive blocks again");
    ch.send(12).unwrap();
    assert_eq!(t.join().unwrap(), Ok(12));

    // Reopening a closing channel that still has senders keeps them.
    let tx = ch.clone();
    let s = tasklets::spawn(move || tx.send(13));
    tasklets::run();
    ch.close();
    ch.open();
    assert_eq!(ch.balance(), 1);
    assert_eq!(ch.receive(), Ok(13));
    assert!(s.join().unwrap().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Iteration
// ---------------------------------------------------------------------------------------------

#[test]
fn iter_ends_when_closed_and_drained() {
    let ch = Channel::new();
    let tx = ch.clone();
    let producer = tasklets::spawn(move || {
        let n = tx.send_sequence(1..=5).unwrap();
        tx.close();
        n
    });
    let mut got = Vec::new();
    for x in &ch {
        got.push(x);
    }
    assert_eq!(got, [1, 2, 3, 4, 5]);
    assert!(ch.is_closed());
    assert_eq!(producer.join().unwrap(), 5);
}

#[test]
fn iter_drains_senders_blocked_at_close() {
    let ch = Channel::new();
    for i in 0..4 {
        let ch = ch.clone();
        tasklets::spawn(move || ch.send(i).unwrap());
    }
    tasklets::run();
    ch.close();
    assert_eq!(ch.iter().collect::<Vec<i32>>(), [0, 1, 2, 3]);
    assert!(ch.is_closed());
}

#[test]
fn into_iter_in_a_consumer_tasklet() {
    let ch = Channel::<u64>::new();
    let consumer = {
        let ch = ch.clone();
        tasklets::spawn(move || ch.into_iter().map(|x| x * 10).collect::<Vec<_>>())
    };
    assert_eq!(ch.send_sequence(1..=4).unwrap(), 4);
    ch.close(); // the consumer, blocked in its next receive, is woken with Closed
    assert_eq!(consumer.join().unwrap(), [10, 20, 30, 40]);
}

#[test]
fn iter_in_main_ends_on_deadlock() {
    let ch = Channel::new();
    let tx = ch.clone();
    tasklets::spawn(move || tx.send_sequence(["a", "b"]).unwrap());
    // Not closed: the third receive finds nothing runnable and fails, ending the iteration.
    assert_eq!(ch.iter().collect::<Vec<_>>(), ["a", "b"]);
    assert!(!ch.is_closing());
    assert_eq!(ch.balance(), 0);
}

// ---------------------------------------------------------------------------------------------
// try_send / try_receive / send_sequence
// ---------------------------------------------------------------------------------------------

#[test]
fn try_send_full_and_closed_give_the_value_back() {
    let ch = Channel::<String>::new();
    match ch.try_send("x".into()) {
        Err(TrySendError::Full(v)) => assert_eq!(v, "x"),
        other => panic!("{other:?}"),
    }
    // A blocked sender does not make room either.
    let tx = ch.clone();
    tasklets::spawn(move || tx.send("blocked".into()).unwrap());
    tasklets::run();
    assert_eq!(ch.balance(), 1);
    assert_eq!(ch.try_send("y".into()).unwrap_err().into_inner(), "y");
    assert_eq!(ch.balance(), 1);
    ch.close();
    match ch.try_send("z".into()) {
        Err(TrySendError::Closed(v)) => assert_eq!(v, "z"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ch.receive().unwrap(), "blocked");
}

#[test]
fn try_send_to_a_waiting_receiver_pref_receiver_switches_to_it() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || log.push(format!("r got {}", ch.receive().unwrap())));
    }
    tasklets::run();
    ch.try_send(5).unwrap();
    log.push("main after");
    assert_eq!(log.take(), ["r got 5", "main after"]);
    assert_eq!(ch.balance(), 0);
}

#[test]
fn try_send_to_a_waiting_receiver_pref_neither_continues() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    ch.set_preference(Preference::Neither);
    {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || log.push(format!("r got {}", ch.receive().unwrap())));
    }
    tasklets::run();
    ch.try_send(5).unwrap();
    log.push("main after");
    tasklets::run();
    assert_eq!(log.take(), ["main after", "r got 5"]);
}

#[test]
fn try_receive_empty_closed_and_success() {
    let ch = Channel::<u32>::new();
    assert_eq!(ch.try_receive(), Err(TryRecvError::Empty));
    // A blocked receiver is no sender.
    let rx = ch.clone();
    let r = tasklets::spawn(move || rx.receive());
    tasklets::run();
    assert_eq!(ch.try_receive(), Err(TryRecvError::Empty));
    assert_eq!(ch.balance(), -1);
    ch.send(1).unwrap();
    assert_eq!(r.join().unwrap(), Ok(1));

    let log = Log::new();
    {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            ch.send(2).unwrap();
            log.push("s after");
        });
    }
    tasklets::run();
    assert_eq!(ch.try_receive(), Ok(2)); // default preference: main continues
    log.push("main got 2");
    tasklets::run();
    assert_eq!(log.take(), ["main got 2", "s after"]);

    ch.close();
    assert_eq!(ch.try_receive(), Err(TryRecvError::Closed));
}

#[test]
fn try_receive_from_a_waiting_sender_pref_sender_switches_to_it() {
    let log = Log::new();
    let ch = Channel::<u32>::new();
    ch.set_preference(Preference::Sender);
    {
        let (log, ch) = (log.clone(), ch.clone());
        tasklets::spawn(move || {
            ch.send(3).unwrap();
            log.push("s after");
        });
    }
    tasklets::run();
    let v = ch.try_receive().unwrap();
    log.push(format!("main got {v}"));
    assert_eq!(log.take(), ["s after", "main got 3"]);
}

#[test]
fn send_sequence_returns_the_count() {
    let ch = Channel::<char>::new();
    let rx = ch.clone();
    let consumer = tasklets::spawn(move || rx.iter().collect::<String>());
    assert_eq!(ch.send_sequence("hello".chars()).unwrap(), 5);
    assert_eq!(ch.send_sequence(std::iter::empty()).unwrap(), 0);
    ch.close();
    assert_eq!(consumer.join().unwrap(), "hello");
}

#[test]
fn send_sequence_on_closing_channel_stops_at_the_first_item() {
    let ch = Channel::<u32>::new();
    ch.close();
    let mut items = 1..=5;
    let err = ch.send_sequence(&mut items).unwrap_err();
    assert!(matches!(err, SendError::Closed(1)), "{err:?}");
    assert_eq!(items.next(), Some(2), "the items after the failed one are not consumed");
}

// ---------------------------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------------------------

#[test]
fn channel_debug_and_identity() {
    let ch = Channel::<u8>::default();
    let debug = format!("{ch:?}");
    assert!(debug.starts_with("Channel {"), "{debug}");
    assert!(debug.contains("balance: 0"), "{debug}");
    assert!(debug.contains("preference: Receiver"), "{debug}");
    assert!(debug.contains("closing: false"), "{debug}");
    ch.set_preference(Preference::Neither);
    ch.close();
    let debug = format!("{ch:?}");
    assert!(debug.contains("preference: Neither") && debug.contains("closing: true"), "{debug}");
    let rx = ch.clone();
    ch.open();
    tasklets::spawn(move || rx.receive());
    tasklets::run();
    assert!(format!("{ch:?}").contains("balance: -1"), "{ch:?}");

    assert_eq!(ch, ch.clone());
    assert_ne!(ch, Channel::new());
    let other = Channel::<u8>::new();
    assert_ne!(format!("{other:?}"), format!("{:?}", Channel::<u8>::new()), "ids differ");
}

#[test]
fn values_are_moved_not_copied_through_the_channel() {
    let ch = Channel::<Box<Vec<u8>>>::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || {
        let b = rx.receive().unwrap();
        (b.as_ptr() as usize, b.len())
    });
    let payload = Box::new(vec![7u8; 1000]);
    let addr = payload.as_ptr() as usize;
    ch.send(payload).unwrap();
    assert_eq!(t.join().unwrap(), (addr, 1000));
}
