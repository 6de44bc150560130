//! Integration tests of timers: `tasklets::time::{sleep, sleep_until}` and the channel
//! operations with a timeout (`send_timeout`, `receive_timeout`).
//!
//! The timers are real: wall-clock bounds are only loose sanity bounds (at least the duration,
//! well under a few seconds), never speed assertions. What is asserted exactly (order of
//! wake-ups, outcomes, balances) is deterministic.
//!
//! Every `#[test]` runs on its own thread and therefore has its own scheduler.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklets::time::{sleep, sleep_until};
use tasklets::{Channel, Preference, RecvTimeoutError, SendTimeoutError};

mod common;
use common::Log;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// sleep / sleep_until
// ---------------------------------------------------------------------------------------------

#[test]
fn thousand_sleepers_sleep_together() {
    let done = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    for _ in 0..1000 {
        let done = done.clone();
        tasklets::spawn(move || {
            sleep(ms(100));
            done.set(done.get() + 1);
        });
    }
    tasklets::run();
    let elapsed = start.elapsed();
    println!("1000 tasklets sleeping 100 ms each: {elapsed:?}");
    assert_eq!(done.get(), 1000);
    assert!(elapsed >= ms(100), "woke too early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "the sleeps did not overlap: {elapsed:?}");
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn each_sleeper_sleeps_at_least_its_duration() {
    let start = Instant::now();
    let handles: Vec<_> = [30u64, 5, 15]
        .into_iter()
        .map(|n| {
            tasklets::spawn(move || {
                let t0 = Instant::now();
                sleep(ms(n));
                (n, t0.elapsed())
            })
        })
        .collect();
    tasklets::run();
    for handle in handles {
        let (n, slept) = handle.join().unwrap();
        assert!(slept >= ms(n), "{n} ms sleeper slept {slept:?}");
    }
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn sleepers_wake_in_deadline_order() {
    let log = Log::default();
    let base = Instant::now();
    // Spawned in an order unrelated to the deadlines.
    for n in [40u64, 10, 30, 0, 20, 50] {
        let log = log.clone();
        tasklets::spawn(move || {
            sleep_until(base + ms(n * 2));
            log.push(format!("{n}"));
        });
    }
    tasklets::run();
    assert_eq!(log.take(), ["0", "10", "20", "30", "40", "50"]);
}

#[test]
fn equal_deadlines_wake_in_arming_order() {
    let log = Log::default();
    let deadline = Instant::now() + ms(20);
    for i in 0..10 {
        let log = log.clone();
        tasklets::spawn(move || {
            sleep_until(deadline);
            log.push(format!("{i}"));
        });
    }
    tasklets::run();
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(log.take(), expected);
}

#[test]
fn equal_deadlines_armed_in_a_different_order_than_spawned() {
    // Tasklets spawned 0..5 but arming in the reverse order (each one yields i times first):
    // ties are broken by arming order, not by spawn order.
    let log = Log::default();
    let deadline = Instant::now() + ms(20);
    for i in 0..5 {
        let log = log.clone();
        tasklets::spawn(move || {
            for _ in 0..(5 - i) {
                tasklets::schedule();
            }
            log.push(format!("arm {i}"));
            sleep_until(deadline);
            log.push(format!("wake {i}"));
        });
    }
    tasklets::run();
    let log = log.take();
    let arms: Vec<&String> = log.iter().filter(|e| e.starts_with("arm")).collect();
    let wakes: Vec<String> = log.iter().filter(|e| e.starts_with("wake")).cloned().collect();
    let expected: Vec<String> = arms.iter().map(|e| e.replace("arm", "wake")).collect();
    assert_eq!(wakes, expected);
    assert_eq!(arms, ["arm 4", "arm 3", "arm 2", "arm 1", "arm 0"]);
}

#[test]
fn sleep_in_main_lets_others_run() {
    let log = Log::default();
    for name in ["a", "b"] {
        let log = log.clone();
        tasklets::spawn(move || {
            log.push(format!("{name} 1"));
            tasklets::schedule();
            log.push(format!("{name} 2"));
        });
    }
    let start = Instant::now();
    sleep(ms(20));
    let elapsed = start.elapsed();
    log.push("main woke");
    assert!(elapsed >= ms(20), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(log.take(), ["a 1", "b 1", "a 2", "b 2", "main woke"]);
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn run_waits_for_sleeping_tasklets() {
    let done = Rc::new(Cell::new(false));
    let t = {
        let done = done.clone();
        tasklets::spawn(move || {
            sleep(ms(30));
            done.set(true);
        })
    };
    let start = Instant::now();
    tasklets::run();
    let elapsed = start.elapsed();
    assert!(done.get(), "run returned before the sleeper finished");
    assert!(!t.is_alive());
    assert!(elapsed >= ms(30), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn zero_sleep_and_past_deadline_return_without_switching() {
    let ran = Rc::new(Cell::new(false));
    let past = Instant::now();
    let t = {
        let ran = ran.clone();
        tasklets::spawn(move || ran.set(true))
    };
    assert_eq!(tasklets::runcount(), 2);
    sleep(Duration::ZERO);
    assert!(!ran.get(), "sleep(ZERO) switched to another tasklet");
    sleep_until(past);
    assert!(!ran.get(), "sleep_until(past) switched to another tasklet");
    sleep_until(Instant::now());
    assert!(!ran.get(), "sleep_until(now) switched to another tasklet");
    assert_eq!(tasklets::runcount(), 2);

    // The same inside a tasklet.
    let other_ran = Rc::new(Cell::new(false));
    let inner = {
        let other_ran = other_ran.clone();
        tasklets::spawn(move || {
            sleep(Duration::ZERO);
            sleep_until(past);
            other_ran.get()
        })
    };
    {
        let other_ran = other_ran.clone();
        tasklets::spawn(move || other_ran.set(true));
    }
    tasklets::run();
    assert!(ran.get());
    assert!(t.join().is_ok());
    assert!(!inner.join().unwrap(), "a zero sleep in a tasklet switched");
}

#[test]
fn sleep_on_a_plain_thread_is_std_sleep() {
    let slept = std::thread::spawn(|| {
        let start = Instant::now();
        sleep(ms(30));
        let after_sleep = start.elapsed();
        let deadline = Instant::now() + ms(20);
        sleep_until(deadline);
        (after_sleep, Instant::now() >= deadline)
    })
    .join()
    .unwrap();
    assert!(slept.0 >= ms(30), "{:?}", slept.0);
    assert!(slept.0 < Duration::from_secs(5), "{:?}", slept.0);
    assert!(slept.1, "sleep_until returned before its deadline");
}

#[test]
fn main_receive_while_the_sender_sleeps_is_not_a_deadlock() {
    let ch = Channel::new();
    let tx = ch.clone();
    tasklets::spawn(move || {
        sleep(ms(20));
        tx.send(42).unwrap();
    });
    let start = Instant::now();
    assert_eq!(ch.receive(), Ok(42));
    assert!(start.elapsed() >= ms(20));
    tasklets::run();
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn main_send_while_the_receiver_sleeps_is_not_a_deadlock() {
    let ch = Channel::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || {
        sleep(ms(20));
        rx.receive().unwrap()
    });
    ch.send("hello").unwrap();
    assert_eq!(t.join().unwrap(), "hello");
}

#[test]
fn killed_sleeper_timer_is_cancelled() {
    let t = tasklets::spawn(|| sleep(Duration::from_secs(3600)));
    tasklets::schedule(); // t runs and goes to sleep
    assert!(t.is_blocked());
    assert!(t.is_alive());
    t.kill();
    assert!(!t.is_alive());
    let start = Instant::now();
    tasklets::run();
    let elapsed = start.elapsed();
    println!("run after killing a 1 hour sleeper: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "run waited for a killed sleeper: {elapsed:?}");
    assert!(t.join().unwrap_err().is_killed());
    assert_eq!(tasklets::runcount(), 1);
}

#[test]
fn killed_receive_timeout_timer_is_cancelled() {
    let ch = Channel::<i32>::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || rx.receive_timeout(Duration::from_secs(3600)));
    tasklets::schedule(); // t runs and blocks
    assert!(t.is_blocked());
    assert_eq!(ch.balance(), -1);
    t.kill();
    assert_eq!(ch.balance(), 0);
    let start = Instant::now();
    tasklets::run();
    let elapsed = start.elapsed();
    println!("run after killing a 1 hour receive_timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "run waited for a killed receiver: {elapsed:?}");
    assert!(t.join().unwrap_err().is_killed());
}

#[test]
fn killed_send_timeout_timer_is_cancelled() {
    let ch = Channel::<i32>::new();
    let tx = ch.clone();
    let t = tasklets::spawn(move || tx.send_timeout(1, Duration::from_secs(3600)).is_ok());
    tasklets::schedule();
    assert!(t.is_blocked());
    assert_eq!(ch.balance(), 1);
    t.kill();
    assert_eq!(ch.balance(), 0);
    let start = Instant::now();
    tasklets::run();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(t.join().unwrap_err().is_killed());
}

#[test]
fn completed_receive_timeout_cancels_its_timer() {
    // A receive with a 1 hour timeout served by a partner must not leave its timer armed
    // (run() would then wait an hour).
    let ch = Channel::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || rx.receive_timeout(Duration::from_secs(3600)));
    tasklets::schedule();
    ch.send(7).unwrap();
    let start = Instant::now();
    tasklets::run();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(t.join().unwrap(), Ok(7));
}

#[test]

fn busy_tasklet_does_not_starve_a_sleeper() {
    const BOUND: u64 = 50_000_000;
    let flag = Rc::new(Cell::new(false));
    let set_by_sleeper = Rc::new(Cell::new(false));
    let busy = {
        let flag = flag.clone();
        tasklets::spawn(move || {
            let mut iterations = 0u64;
            while !flag.get() && iterations < BOUND {
                tasklets::schedule();
                iterations += 1;
            }
            iterations
        })
    };
    {
        let flag = flag.clone();
        let set_by_sleeper = set_by_sleeper.clone();
        tasklets::spawn(move || {
            sleep(ms(10));
            set_by_sleeper.set(true);
            flag.set(true);
        });
    }
    let start = Instant::now();
    tasklets::run();
    let elapsed = start.elapsed();
    let iterations = busy.join().unwrap();
    println!("busy loop stopped after {iterations} schedule() calls, {elapsed:?}");
    assert!(set_by_sleeper.get(), "the sleeper never woke");
    assert!(iterations < BOUND, "the busy loop ran to its bound: the sleeper was starved");
    assert!(elapsed >= ms(10));
}

#[test]

fn busy_main_does_not_starve_a_sleeper() {
    // The main tasklet loops schedule() (it stays in the run queue) while a tasklet sleeps.
    const BOUND: u64 = 50_000_000;
    let flag = Rc::new(Cell::new(false));
    {
        let flag = flag.clone();
        tasklets::spawn(move || {
            sleep(ms(10));
            flag.set(true);
        });
    }
    let mut iterations = 0u64;
    while !flag.get() && iterations < BOUND {
        tasklets::schedule();
        iterations += 1;
    }
    println!("busy main stopped after {iterations} schedule() calls");
    assert!(flag.get(), "the sleeper never woke");
    assert!(iterations < BOUND);
}

#[test]
fn two_busy_tasklets_do_not_starve_a_sleeper() {
    // With another runnable tasklet, schedule() really switches and the switch checks
    // the timers once per pass over the run queue.
    const BOUND: u64 = 50_000_000;
    let flag = Rc::new(Cell::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let flag = flag.clone();
            tasklets::spawn(move || {
                let mut iterations = 0u64;
                while !flag.get() && iterations < BOUND {
                    tasklets::schedule();
                    iterations += 1;
                }
                iterations
            })
        })
        .collect();
    let woke = {
        let flag = flag.clone();
        tasklets::spawn(move || {
            sleep(ms(10));
            flag.set(true);
            true
        })
    };
    tasklets::run();
    assert!(woke.join().unwrap(), "the sleeper never woke");
    for t in busy {
        let iterations = t.join().unwrap();
        println!("one of two busy tasklets stopped after {iterations} schedule() calls");
        assert!(iterations < BOUND, "the busy loop ran to its bound: the sleeper was starved");
    }
}

#[test]
fn sleeping_tasklet_is_blocked_and_joinable() {
    let t = tasklets::spawn(|| {
        sleep(ms(20));
        "slept"
    });
    tasklets::schedule(); // t starts sleeping
    assert!(t.is_blocked());
    assert!(t.is_alive());
    assert!(!t.is_paused());
    assert_eq!(tasklets::runcount(), 1);
    let start = Instant::now();
    assert_eq!(t.join().unwrap(), "slept");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn main_sleep_returns_while_others_are_blocked_forever() {
    let ch = Channel::<i32>::new();
    let blocked: Vec<_> = (0..3)
        .map(|_| {
            let rx = ch.clone();
            tasklets::spawn(move || rx.receive())
        })
        .collect();
    let start = Instant::now();
    sleep(ms(20));
    let elapsed = start.elapsed();
    assert!(elapsed >= ms(20), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(ch.balance(), -3);
    for t in &blocked {
        assert!(t.is_blocked());
    }
    // Clean up: closing wakes the receivers.
    ch.close();
    tasklets::run();
    for t in blocked {
        assert!(t.join().unwrap().is_err());
    }
}

#[test]
fn thread_exit_with_sleeping_tasklets_runs_their_destructors() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    let dropped = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    {
        let dropped = dropped.clone();
        std::thread::spawn(move || {
            for _ in 0..10 {
                let guard = Guard(dropped.clone());
                tasklets::spawn(move || {
                    let _guard = guard;
                    sleep(Duration::from_secs(3600));
                });
            }
            let ch = Channel::<i32>::new();
            let rx = ch.clone();
            let guard = Guard(dropped.clone());
            tasklets::spawn(move || {
                let _guard = guard;
                let _ = rx.receive_timeout(Duration::from_secs(3600));
            });
            tasklets::schedule(); // all of them start waiting
            assert_eq!(tasklets::runcount(), 1);
            // The thread ends with 11 tasklets waiting for an hour.
        })
        .join()
        .unwrap();
    }
    let elapsed = start.elapsed();
    println!("thread exit with 11 sleeping tasklets: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(dropped.load(Ordering::SeqCst), 11);
}

// ---------------------------------------------------------------------------------------------
// receive_timeout / send_timeout
// ---------------------------------------------------------------------------------------------

#[test]
fn receive_timeout_times_out() {
    let ch = Channel::<i32>::new();
    let start = Instant::now();
    assert_eq!(ch.receive_timeout(ms(20)), Err(RecvTimeoutError::Timeout));
    let elapsed = start.elapsed();
    assert!(elapsed >= ms(20), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(ch.balance(), 0);
    // The channel still works afterwards.
    let tx = ch.clone();
    tasklets::spawn(move || tx.send(3).unwrap());
    assert_eq!(ch.receive(), Ok(3));
}

#[test]
fn receive_timeout_in_a_tasklet_times_out() {
    let ch = Channel::<i32>::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || rx.receive_timeout(ms(10)));
    tasklets::run();
    assert_eq!(t.join().unwrap(), Err(RecvTimeoutError::Timeout));
    assert_eq!(ch.balance(), 0);
}

#[test]
fn receive_timeout_succeeds_when_a_sender_comes_in_time() {
    let ch = Channel::new();
    let tx = ch.clone();
    tasklets::spawn(move || {
        sleep(ms(5));
        tx.send("in time").unwrap();
    });
    let start = Instant::now();
    assert_eq!(ch.receive_timeout(Duration::from_secs(10)), Ok("in time"));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(ch.balance(), 0);
    tasklets::run();
}

#[test]
fn receive_timeout_takes_a_waiting_sender_at_once() {
    let ch = Channel::new();
    let tx = ch.clone();
    tasklets::spawn(move || tx.send(9).unwrap());
    tasklets::schedule();
    assert_eq!(ch.balance(), 1);
    assert_eq!(ch.receive_timeout(Duration::ZERO), Ok(9));
    assert_eq!(ch.balance(), 0);
}

#[test]
fn receive_timeout_reports_close_during_the_wait() {
    let ch = Channel::<i32>::new();
    let closer = ch.clone();
    tasklets::spawn(move || {
        sleep(ms(5));
        closer.close();
    });
    let start = Instant::now();
    assert_eq!(ch.receive_timeout(Duration::from_secs(10)), Err(RecvTimeoutError::Closed));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(ch.balance(), 0);
    assert!(ch.is_closed());
    // A closed channel fails at once.
    assert_eq!(ch.receive_timeout(Duration::from_secs(10)), Err(RecvTimeoutError::Closed));
}

#[test]
fn send_timeout_times_out_and_gives_the_value_back() {
    let ch = Channel::new();
    let start = Instant::now();
    let err = ch.send_timeout(String::from("kept"), ms(20)).unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.is_timeout());
    assert!(matches!(err, SendTimeoutError::Timeout(_)));
    assert_eq!(err.into_inner(), "kept");
    assert!(elapsed >= ms(20), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(ch.balance(), 0);
}

#[test]
fn send_timeout_in_a_tasklet_times_out() {
    let ch = Channel::new();
    let tx = ch.clone();
    let t = tasklets::spawn(move || tx.send_timeout(5, ms(10)).map_err(|e| (e.is_timeout(), e.into_inner())));
    tasklets::run();
    assert_eq!(t.join().unwrap(), Err((true, 5)));
    assert_eq!(ch.balance(), 0);
}

#[test]
fn send_timeout_succeeds_when_a_receiver_comes_in_time() {
    let ch = Channel::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || {
        sleep(ms(5));
        rx.receive().unwrap()
    });
    let start = Instant::now();
    assert!(ch.send_timeout(11, Duration::from_secs(10)).is_ok());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(ch.balance(), 0);
    assert_eq!(t.join().unwrap(), 11);
}

#[test]
fn send_timeout_on_a_closed_channel_gives_the_value_back() {
    let ch = Channel::new();
    ch.close();
    let err = ch.send_timeout(1, Duration::from_secs(10)).unwrap_err();
    assert!(!err.is_timeout());
    assert!(matches!(err, SendTimeoutError::Closed(1)));
    assert_eq!(err.into_inner(), 1);
}

#[test]
fn delivery_just_before_the_deadline_wins_over_the_timeout_in_a_tasklet() {
    // R waits with a 20 ms timeout. S delivers (R becomes runnable but does not run: the
    // sender is preferred), then blocks the whole thread past R's deadline before yielding, so
    // that when R runs, its timer has expired too. R must get the value.
    let ch = Channel::new();
    ch.set_preference(Preference::Sender);
    let rx = ch.clone();
    let tx = ch.clone();
    let r = tasklets::spawn(move || rx.receive_timeout(ms(20)));
    let s = tasklets::spawn(move || {
        tx.send(99).unwrap();
        std::thread::sleep(ms(60)); // blocks the thread: R's deadline passes
        tasklets::schedule();
        "sent"
    });
    tasklets::run();
    assert_eq!(s.join().unwrap(), "sent");
    assert_eq!(r.join().unwrap(), Ok(99));
    assert_eq!(ch.balance(), 0);
}

#[test]
fn delivery_just_before_the_deadline_wins_over_the_timeout_in_main() {
    let ch = Channel::new();
    ch.set_preference(Preference::Sender);
    let tx = ch.clone();
    tasklets::spawn(move || {
        tx.send(5).unwrap();
        std::thread::sleep(ms(60));
        tasklets::schedule();
        std::thread::sleep(ms(1));
    });
    assert_eq!(ch.receive_timeout(ms(20)), Ok(5));
    assert_eq!(ch.balance(), 0);
    tasklets::run();
}

#[test]
fn taking_a_sender_just_before_its_deadline_wins_over_the_timeout() {
    // Symmetric: S waits in send_timeout; R takes the value, then blocks the thread past S's
    // deadline. S must report success.
    let ch = Channel::new();
    ch.set_preference(Preference::Receiver);
    let rx = ch.clone();
    let tx = ch.clone();
    let s = tasklets::spawn(move || tx.send_timeout(77, ms(20)).is_ok());
    let r = tasklets::spawn(move || {
        let value = rx.receive().unwrap();
        std::thread::sleep(ms(60));
        tasklets::schedule();
        value
    });
    tasklets::run();
    assert_eq!(r.join().unwrap(), 77);
    assert!(s.join().unwrap(), "a sender whose value was taken reported a timeout");
    assert_eq!(ch.balance(), 0);
}

#[test]
fn timeouts_fire_in_deadline_order() {
    let log = Log::default();
    let ch = Channel::<i32>::new();
    for n in [30u64, 10, 20] {
        let rx = ch.clone();
        let log = log.clone();
        tasklets::spawn(move || {
            let result = rx.receive_timeout(ms(n * 2));
            log.push(format!("{n} {result:?}"));
        });
    }
    tasklets::run();
    assert_eq!(log.take(), ["10 Err(Timeout)", "20 Err(Timeout)", "30 Err(Timeout)"]);
    assert_eq!(ch.balance(), 0);
}

/// Regression (found by tests/fuzz.rs): a receiver whose timeout fired is runnable but stays
/// listed on the channel until it runs. A sender arriving in between used to hand it the value
/// and wake it a second time, queueing it twice (the dispatcher then panicked on the finished
/// tasklet's second entry). Now the stale entry is dropped and the receiver times out.
#[test]
fn timed_out_receiver_not_yet_run_is_not_served_or_queued_twice() {
    let ch = Channel::<u32>::new();
    let rx = ch.clone();
    let receiver = tasklets::spawn(move || rx.receive_timeout(ms(1)));
    let tx = ch.clone();
    let sender = tasklets::spawn(move || {
        std::thread::sleep(ms(5)); // the receiver's deadline passes while nothing runs
        let mut offers = Vec::new();
        for i in 0..20 {
            tasklets::schedule(); // a pass completes: the timer fires, the receiver is queued
            offers.push(tx.try_send(i).is_ok());
        }
        offers
    });
    let other = tasklets::spawn(|| {
        for _ in 0..20 {
            tasklets::schedule();
        }
    });
    tasklets::run();
    assert_eq!(receiver.join().unwrap(), Err(RecvTimeoutError::Timeout));
    assert!(sender.join().unwrap().iter().all(|&ok| !ok), "nobody was left to take a value");
    other.join().unwrap();
    assert_eq!(ch.balance(), 0);
}

// ---------------------------------------------------------------------------------------------
// The lazy timer queue (src/timer.rs): timeouts extended in place, slack, bursts
// ---------------------------------------------------------------------------------------------

/// A timeout re-armed later and later (a server's idle timeout) keeps its first queue entry;
/// when that entry comes due the timer must not fire: it moves to the latest deadline.
#[test]
fn extended_timeout_does_not_fire_at_an_earlier_deadline() {
    let ch = Channel::<u32>::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || {
        // Served at once a thousand times: every arm after the first is an extension.
        for i in 0..1000 {
            assert_eq!(rx.receive_timeout(ms(20)), Ok(i));
        }
        // Past the first entry's deadline, still served before this timeout.
        std::thread::sleep(ms(25));
        let armed = Instant::now();
        let result = rx.receive_timeout(ms(30));
        (result, armed.elapsed())
    });
    for i in 0..1000 {
        ch.send(i).unwrap();
    }
    tasklets::run();
    let (result, waited) = t.join().unwrap();
    assert_eq!(result, Err(RecvTimeoutError::Timeout));
    assert!(waited >= ms(30), "fired early: after {waited:?} of 30 ms");
    assert!(waited < Duration::from_secs(5), "fired far too late: {waited:?}");
}

/// A short timeout after a cancelled long one: the long one's stale entry is later, so the
/// short one needs its own entry and fires on time (not an hour later).
#[test]
fn short_timeout_after_a_cancelled_long_one_fires() {
    let ch = Channel::<u32>::new();
    let rx = ch.clone();
    let t = tasklets::spawn(move || {
        assert_eq!(rx.receive_timeout(Duration::from_secs(3600)), Ok(1));
        let armed = Instant::now();
        (rx.receive_timeout(ms(10)), armed.elapsed())
    });
    tasklets::schedule();
    ch.send(1).unwrap();
    let start = Instant::now();
    tasklets::run();
    assert!(start.elapsed() < Duration::from_secs(5));
    let (result, waited) = t.join().unwrap();
    assert_eq!(result, Err(RecvTimeoutError::Timeout));
    assert!(waited >= ms(10), "fired early: after {waited:?} of 10 ms");
}

/// Equal deadlines wake in arming order even when one of them was armed by a tasklet whose
/// earlier (cancelled) timer left an entry in the queue before that deadline: the entry is
/// moved to the new key, behind the timer armed before it.
#[test]
fn equal_deadlines_keep_arming_order_when_one_timer_was_extended() {
    let log = Log::default();
    let ch = Channel::<u32>::new();
    let deadline = Instant::now() + ms(40);
    let rx = ch.clone();
    let a_log = log.clone();
    let a = tasklets::spawn(move || {
        assert_eq!(rx.receive_timeout(ms(10)), Ok(0)); // leaves an entry at +10 ms
        tasklets::schedule(); // b arms first
        sleep_until(deadline);
        a_log.push("a");
    });
    tasklets::schedule(); // a waits with its 10 ms timeout
    let b_log = log.clone();
    tasklets::spawn(move || {
        sleep_until(deadline);
        b_log.push("b");
    });
    ch.send(0).unwrap();
    tasklets::run();
    a.join().unwrap();
    assert_eq!(log.take(), ["b", "a"]);
}

/// Deadlines at the edge of what `Instant` and `Duration` hold: timeouts of `Duration::MAX`
/// (no deadline), a sleep of centuries, a deadline of hours: none overflows, none fires, and
/// each is cancelled by the partner or the kill that ends the wait.
#[test]
fn far_deadlines_neither_overflow_nor_fire() {
    let ch = Channel::<u32>::new();
    let (rx, tx) = (ch.clone(), ch.clone());
    let receiver = tasklets::spawn(move || rx.receive_timeout(Duration::MAX));
    let sender = tasklets::spawn(move || tx.send_timeout(5, Duration::from_secs(3 * 3600)));
    let centuries = Instant::now().checked_add(Duration::from_secs(500 * 365 * 86_400));
    let sleeper = tasklets::spawn(move || match centuries {
        Some(deadline) => sleep_until(deadline),
        None => sleep(Duration::MAX),
    });
    let killer = tasklets::spawn(move || {
        sleep(ms(20)); // the first deadline: the far ones are queued behind it
        sleeper.kill();
        assert!(!sleeper.is_alive());
    });
    let start = Instant::now();
    tasklets::run();
    assert!(start.elapsed() < Duration::from_secs(5));
    killer.join().unwrap();
    assert_eq!(receiver.join().unwrap(), Ok(5));
    assert!(sender.join().unwrap().is_ok());
    assert_eq!(tasklets::snapshot().stats.timers, 0);
}

/// Many sleepers with scattered deadlines (a fixed pseudo-random sequence): every one wakes
/// no earlier than its deadline, and those that armed their timer before it passed wake in
/// deadline order (ties in arming order), though the idle wait coalesces deadlines that fall
/// within its slack into one wake-up, and timers fired while others are runnable go first.
#[test]
fn ten_thousand_scattered_deadlines_wake_in_order_and_never_early() {
    const N: usize = 10_000;
    let start = Instant::now() + ms(100);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let deadlines: Vec<Instant> = (0..N)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            start + Duration::from_micros(x % 60_000)
        })
        .collect();
    let woke = Rc::new(std::cell::RefCell::new(Vec::with_capacity(N)));
    // Bumped whenever a sleeper starts or wakes up.
    let ran = Rc::new(std::cell::Cell::new(0u64));
    for (i, &deadline) in deadlines.iter().enumerate() {
        let (woke, ran) = (woke.clone(), ran.clone());
        tasklets::spawn(move || {
            // Under load the spawn burst may outlast a deadline: that sleep returns at once,
            // without arming a timer. Whether it armed one is whether it parked, i.e. whether
            // another sleeper ran meanwhile (the scheduler is cooperative). Not a clock check
            // before the call: `sleep_until` reads the clock again, and a deadline that passed
            // in between made the check say "armed" for a sleep that returned at once (seen on
            // riscv64 under qemu, where the burst overran 46% of the deadlines).
            ran.set(ran.get() + 1);
            let before = ran.get();
            sleep_until(deadline);
            let armed = ran.get() != before;
            ran.set(ran.get() + 1);
            let not_early = Instant::now() >= deadline;
            woke.borrow_mut().push((i, armed, not_early));
        });
    }
    tasklets::run();
    let woke = woke.take();
    assert_eq!(woke.len(), N);
    assert!(woke.iter().all(|w| w.2), "a sleeper woke before its deadline");
    let order: Vec<usize> = woke.iter().filter(|w| w.1).map(|w| w.0).collect();
    let mut expected = order.clone();
    expected.sort_by_key(|&i| (deadlines[i], i));
    println!("{} of {N} sleepers armed before their deadline", order.len());
    if let Some(at) = order.iter().zip(&expected).position(|(a, b)| a != b) {
        let show = |v: &[usize]| v[at.saturating_sub(2)..(at + 5).min(v.len())].to_vec();
        let dl = |v: Vec<usize>| v.iter().map(|&i| (i, deadlines[i] - start)).collect::<Vec<_>>();
        panic!("order differs at {at}: {:?} expected {:?}", dl(show(&order)), dl(show(&expected)));
    }
}

/// Regression (issue 14, sleep lateness of 10–120 ms at 30,000–100,000 sleepers): a timer that
/// came due while thousands of tasklets were runnable fired only after a whole pass over the
/// run queue, and its tasklet then queued behind all of them. Now due timers are checked every
/// few dozen switches and their tasklets run first: the sleeper wakes long before the burst
/// of busy tasklets (each ~200 µs, so the burst lasts at least 0.4 s) is over.
#[test]
fn sleeper_is_not_late_by_a_burst_of_runnable_tasklets() {
    const BURST: usize = 2_000;
    let ran = Rc::new(Cell::new(0usize));
    let woke_after = Rc::new(Cell::new(None));
    let (r, w) = (ran.clone(), woke_after.clone());
    tasklets::spawn(move || {
        sleep(ms(1));
        w.set(Some(r.get()));
    });
    for _ in 0..BURST {
        let ran = ran.clone();
        tasklets::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_micros(200) {
                std::hint::spin_loop();
            }
            ran.set(ran.get() + 1);
        });
    }
    tasklets::run();
    let after = woke_after.get().expect("the sleeper woke");
    println!("the 1 ms sleeper woke after {after} of {BURST} busy tasklets");
    assert!(after < BURST / 2, "the sleeper waited for {after} of {BURST} busy tasklets");
}
