//! `tasklets::sync::channel`: semantics on plain threads, tasklets parking on scheduler threads,
//! the races a waker on one thread can have with a timeout or a kill on another, and stress
//! with many senders and receivers on several scheduler threads and plain threads, kills and
//! timeouts mixed in, counting every message exactly once.
//!
//! Every test is bounded: blocking waits in helpers have timeouts, and the loads are sized to
//! end within seconds on two busy cores. No wall-clock speed is asserted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tasklets::sync::{self, RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};
use tasklets::{JoinError, WaitingOn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A value that counts its drops in a shared table, to prove each is dropped exactly once.
struct Tracked {
    id: usize,
    drops: Arc<Vec<AtomicUsize>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops[self.id].fetch_add(1, Ordering::Relaxed);
    }
}

fn drop_table(n: usize) -> Arc<Vec<AtomicUsize>> {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

fn assert_each_dropped_once(drops: &[AtomicUsize]) {
    for (id, count) in drops.iter().enumerate() {
        assert_eq!(count.load(Ordering::Relaxed), 1, "value {id} dropped {count:?} times");
    }
}

#[test]
fn ends_are_clone_send_and_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<sync::Sender<String>>();
    check::<sync::Receiver<String>>();
    check::<tasklets::threads::Thread>();
    fn send<T: Send>() {}
    send::<tasklets::threads::JoinHandle<String>>();
}

#[test]
fn rendezvous_channel_hands_over_only_to_a_waiting_receiver() {
    let (tx, rx) = sync::channel(0);
    assert_eq!(tx.capacity(), 0);
    assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)), "nobody waits");
    assert_eq!(rx.try_receive(), Err(TryRecvError::Empty));
    let err = tx.send_timeout(2, ms(5)).unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.into_inner(), 2);
    assert_eq!(rx.receive_timeout(ms(5)), Err(RecvTimeoutError::Timeout));
    // A receiver waiting on another thread takes a try_send.
    let receiver = thread::spawn(move || rx.receive_timeout(Duration::from_secs(20)));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut value = 3;
    loop {
        match tx.try_send(value) {
            Ok(()) => break,
            Err(TrySendError::Full(v)) => value = v,
            Err(err) => panic!("{err}"),
        }
        assert!(Instant::now() < deadline, "the receiver never waited");
        thread::yield_now();
    }
    assert_eq!(receiver.join().unwrap(), Ok(3));
}

#[test]
fn buffered_channel_holds_its_capacity_then_waits() {
    let (tx, rx) = sync::channel(3);
    for i in 0..3 {
        tx.send(i).unwrap();
    }
    assert_eq!((tx.len(), rx.len(), rx.capacity()), (3, 3, 3));
    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    // A sender blocked on the full buffer moves in when a receiver makes room, in order.
    let blocked = {
        let tx = tx.clone();
        thread::spawn(move || tx.send_timeout(3, Duration::from_secs(20)).map_err(|e| e.into_inner()))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < 4 {
        match rx.try_receive() {
            Ok(v) => got.push(v),
            Err(TryRecvError::Empty) => thread::yield_now(),
            Err(err) => panic!("{err}"),
        }
        assert!(Instant::now() < deadline);
    }
    assert_eq!(got, [0, 1, 2, 3]);
    assert_eq!(blocked.join().unwrap(), Ok(()));
    assert!(rx.is_empty());
}

#[test]
fn unbounded_capacity_never_waits() {
    let (tx, rx) = sync::channel(usize::MAX);
    for i in 0..10_000 {
        tx.try_send(i).unwrap();
    }
    drop(tx);
    assert_eq!(rx.iter().count(), 10_000);
}

#[test]
fn dropping_every_sender_closes_after_the_buffer_is_drained() {
    let (tx, rx) = sync::channel(2);
    let tx2 = tx.clone();
    tx.send("a").unwrap();
    tx2.send("b").unwrap();
    drop(tx);
    assert!(!rx.is_closed(), "one sender is left");
    drop(tx2);
    assert!(!rx.is_closed(), "values are left");
    assert_eq!(rx.receive(), Ok("a"));
    assert_eq!(rx.try_receive(), Ok("b"));
    assert!(rx.is_closed());
    assert_eq!(rx.receive(), Err(RecvError::Closed));
    assert_eq!(rx.try_receive(), Err(TryRecvError::Closed));
    assert_eq!(rx.receive_timeout(ms(1)), Err(RecvTimeoutError::Closed));
}

#[test]
fn dropping_every_receiver_fails_sends_with_the_value_and_drops_the_buffer() {
    let drops = drop_table(3);
    let (tx, rx) = sync::channel(1);
    tx.send(Tracked { id: 0, drops: drops.clone() }).unwrap();
    let rx2 = rx.clone();
    drop(rx);
    assert!(!tx.is_closed());
    drop(rx2);
    assert!(tx.is_closed());
    assert_eq!(drops[0].load(Ordering::Relaxed), 1, "the buffered value was dropped");
    let back = tx.send(Tracked { id: 1, drops: drops.clone() }).unwrap_err();
    assert!(matches!(back, SendError::Closed(_)));
    assert_eq!(back.into_inner().id, 1);
    let back = tx.try_send(Tracked { id: 2, drops: drops.clone() }).unwrap_err();
    assert!(matches!(back, TrySendError::Closed(_)));
    drop(back);
    assert_each_dropped_once(&drops);
}

#[test]
fn waiters_on_other_threads_are_woken_by_the_last_drop() {
    // A receiver waiting when the last sender goes gets `Closed`.
    let (tx, rx) = sync::channel::<u8>(0);
    let receiver = thread::spawn(move || rx.receive());
    thread::sleep(ms(20)); // most likely waiting by now; either way the outcome is the same
    drop(tx);
    assert_eq!(receiver.join().unwrap(), Err(RecvError::Closed));
    // A sender waiting when the last receiver goes gets its value back.
    let (tx, rx) = sync::channel(0);
    let sender = thread::spawn(move || tx.send(String::from("kept")).map_err(SendError::into_inner));
    thread::sleep(ms(20));
    drop(rx);
    assert_eq!(sender.join().unwrap(), Err(String::from("kept")));
}

#[test]
fn iterating_a_receiver_ends_when_closed_and_drained() {
    let (tx, rx) = sync::channel(0);
    let producer = thread::spawn(move || {
        for i in 0..100 {
            tx.send(i).unwrap();
        }
    });
    assert_eq!((&rx).into_iter().sum::<u32>(), 4950);
    producer.join().unwrap();
    let (tx, rx) = sync::channel(4);
    tx.send(1).unwrap();
    drop(tx);
    assert_eq!(rx.into_iter().collect::<Vec<_>>(), [1]);
}

/// On a scheduler thread, a tasklet waiting on a `sync` channel parks: the other tasklets of
/// the thread run, the snapshot shows it waiting, and a plain thread wakes it.
#[test]
fn a_waiting_tasklet_parks_while_the_others_run() {
    let (tx, rx) = sync::channel::<&str>(0);
    let (progress_tx, progress) = sync::channel::<(usize, String)>(1);
    let worker = thread::spawn(move || {
        let waiter = tasklets::spawn(move || rx.receive());
        let waiter_id = waiter.id();
        tasklets::spawn(move || {
            let mut turns = 0;
            while turns < 100 {
                tasklets::schedule();
                turns += 1;
            }
            let waiting = tasklets::snapshot()
                .tasklets
                .iter()
                .find(|t| t.id == waiter_id)
                .and_then(|t| t.waiting_on)
                .map(|w| w.to_string())
                .unwrap_or_default();
            progress_tx.send((turns, waiting)).unwrap();
        });
        tasklets::run(); // returns only once the waiter got its value
        waiter.join().unwrap()
    });
    let (turns, waiting) = progress.receive_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(turns, 100, "the other tasklet ran while the waiter was parked");
    assert!(waiting.starts_with("receive on channel"), "{waiting}");
    tx.send("woken across threads").unwrap();
    assert_eq!(worker.join().unwrap(), Ok("woken across threads"));
}

/// A scheduler thread whose only tasklet waits on a `sync` channel sleeps in its poller: it
/// does not poll while waiting, and `run()` does not return early.
#[test]
fn a_waiting_scheduler_thread_sleeps_in_its_poller() {
    let (tx, rx) = sync::channel::<u32>(0);
    let worker = thread::spawn(move || {
        let before = tasklets::snapshot().stats.polls;
        let waiter = tasklets::spawn(move || rx.receive());
        tasklets::run();
        let polls = tasklets::snapshot().stats.polls - before;
        (waiter.join().unwrap(), polls)
    });
    thread::sleep(ms(200));
    tx.send(7).unwrap();
    let (received, polls) = worker.join().unwrap();
    assert_eq!(received, Ok(7));
    assert!(polls <= 4, "{polls} polls while waiting 200 ms: the thread polled instead of sleeping");
}

/// Two tasklets of one thread can use a `sync` channel too (the wake is made without the
/// poller).
#[test]
fn tasklets_of_one_thread_talk_through_a_sync_channel() {
    let (tx, rx) = sync::channel(0);
    let consumer = tasklets::spawn(move || rx.iter().sum::<u64>());
    let producer = tasklets::spawn(move || {
        for i in 1..=1000 {
            tx.send(i).unwrap();
        }
    });
    tasklets::run();
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), 500_500);
}

/// The main tasklet of a thread with a scheduler parks too: its tasklets run meanwhile.
#[test]
fn the_main_tasklet_waits_while_its_tasklets_run() {
    let (tx, rx) = sync::channel(0);
    let ticks = tasklets::spawn(|| {
        for _ in 0..5 {
            tasklets::time::sleep(ms(2));
        }
        5
    });
    let sender = thread::spawn(move || {
        thread::sleep(ms(30));
        tx.send("late").unwrap();
    });
    assert_eq!(rx.receive(), Ok("late"));
    assert_eq!(ticks.join().unwrap(), 5);
    sender.join().unwrap();
}

#[test]
fn receive_timeout_in_a_tasklet_times_out_and_leaves_nothing_behind() {
    let (tx, rx) = sync::channel::<u32>(0);
    let waiter = tasklets::spawn(move || (rx.receive_timeout(ms(10)), rx));
    let (outcome, rx) = waiter.join().unwrap();
    assert_eq!(outcome, Err(RecvTimeoutError::Timeout));
    assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)), "the timed-out receiver left the queue");
    drop(rx);
}

/// A killed waiter leaves the queue: a later value goes to the next receiver, not into the
/// dead frame. A killed sender's value is dropped with it, never delivered.
#[test]
fn killed_waiters_leave_the_queue() {
    let drops = drop_table(2);
    let (tx, rx) = sync::channel(0);
    let victim = {
        let rx = rx.clone();
        tasklets::spawn(move || rx.receive())
    };
    tasklets::schedule(); // the victim parks
    victim.kill();
    assert!(matches!(victim.join(), Err(JoinError::Killed)));
    assert!(matches!(tx.try_send(Tracked { id: 0, drops: drops.clone() }), Err(TrySendError::Full(_))));
    assert_eq!(drops[0].load(Ordering::Relaxed), 1);
    let sender = {
        let (tx, drops) = (tx.clone(), drops.clone());
        tasklets::spawn(move || tx.send(Tracked { id: 1, drops }).map_err(|_| ()))
    };
    tasklets::schedule(); // the sender parks with its value
    sender.kill();
    assert!(matches!(sender.join(), Err(JoinError::Killed)));
    assert_eq!(rx.try_receive().map(|t| t.id), Err(TryRecvError::Empty), "the killed sender left");
    assert_each_dropped_once(&drops);
}

/// The race of a hand-off with a kill: the value was handed to a parked receiver, which is
/// killed before it runs. The receive completes (its caller gets the value) and the kill is
/// delivered at the tasklet's next blocking operation.
#[test]
fn a_receiver_killed_after_the_hand_off_still_gets_the_value() {
    let (tx, rx) = sync::channel(0);
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = {
        let got = got.clone();
        tasklets::spawn(move || loop {
            let value = rx.receive().unwrap();
            got.lock().unwrap().push(value);
        })
    };
    tasklets::schedule(); // the receiver parks
    tx.send(1).unwrap(); // handed over: the receiver is runnable, has not run
    receiver.kill();
    assert!(matches!(receiver.join(), Err(JoinError::Killed)));
    assert_eq!(*got.lock().unwrap(), [1], "the value reached the receiver's caller");
    assert!(tx.try_send(2).is_err(), "the receiver is gone");
}

/// The race of a hand-off with a timeout: the receiver's deadline passed, but a sender handed
/// it a value before it ran. It returns the value instead of a timeout.
#[test]
fn a_receiver_whose_timer_fired_after_the_hand_off_returns_the_value() {
    let (tx, rx) = sync::channel(0);
    let receiver = tasklets::spawn(move || rx.receive_timeout(ms(10)));
    let sender = tasklets::spawn(move || {
        tasklets::time::sleep(ms(5)); // deadline before the receiver's
        tx.try_send("just in time").map_err(|_| "no receiver waited")
    });
    // Hold the thread past both deadlines: both timers fire in one pass, the sender's first.
    tasklets::spawn(|| {
        tasklets::time::sleep(ms(1));
        let start = Instant::now();
        while start.elapsed() < ms(30) {}
    });
    tasklets::run();
    assert_eq!(sender.join().unwrap(), Ok(()));
    assert_eq!(receiver.join().unwrap(), Ok("just in time"));
}

/// A sender whose deadline passes while its value sits unclaimed gets it back; one whose
/// value was taken reports success.
#[test]
fn send_timeout_gives_the_value_back_only_when_nobody_took_it() {
    let (tx, rx) = sync::channel(0);
    let sender = thread::spawn(move || {
        let first = tx.send_timeout(1, ms(10)).map_err(|e| e.into_inner());
        let second = tx.send_timeout(2, Duration::from_secs(20)).map_err(|e| e.into_inner());
        (first, second)
    });
    thread::sleep(ms(50));
    assert_eq!(rx.receive_timeout(Duration::from_secs(20)), Ok(2));
    assert_eq!(sender.join().unwrap(), (Err(1), Ok(())));
}

/// What a stress participant saw: `(sender, seq)` in the order it received them.
type Log = Arc<Mutex<Vec<(usize, usize)>>>;

/// Checks that every message of `sent[s]` (the sequence numbers sender `s` sent successfully)
/// was received exactly once across `logs`, nothing else was, and each log holds each sender's
/// messages in increasing order (FIFO per sender).
fn check_exactly_once(sent: &[Vec<usize>], logs: &[Log]) {
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    for (r, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        let mut last: HashMap<usize, usize> = HashMap::new();
        for &(s, seq) in log.iter() {
            if let Some(&prev) = last.get(&s) {
                assert!(seq > prev, "receiver {r} got {s}/{seq} after {s}/{prev}");
            }
            last.insert(s, seq);
            *seen.entry((s, seq)).or_default() += 1;
        }
    }
    let total: usize = sent.iter().map(Vec::len).sum();
    for (s, seqs) in sent.iter().enumerate() {
        for &seq in seqs {
            assert_eq!(seen.get(&(s, seq)), Some(&1), "message {s}/{seq}");
        }
    }
    assert_eq!(seen.len(), total, "a message was received that was never sent successfully");
}

/// Many senders and receivers: tasklets on three scheduler threads and plain threads, on a
/// rendezvous and on a buffered channel; every message is received exactly once, in order per
/// sender.
#[test]
fn many_senders_and_receivers_across_threads_receive_every_message_once() {
    for capacity in [0, 4] {
        const SCHED_THREADS: usize = 3;
        const PER_THREAD: usize = 4;
        const PLAIN: usize = 2;
        const MESSAGES: usize = 400;
        let senders = SCHED_THREADS * PER_THREAD + PLAIN;
        let (tx, rx) = sync::channel::<(usize, usize)>(capacity);
        let logs: Vec<Log> = (0..senders).map(|_| Log::default()).collect();
        let sent: Vec<Vec<usize>> = (0..senders).map(|_| (0..MESSAGES).collect()).collect();
        let threads = {
            let (tx, rx, logs) = (tx.clone(), rx.clone(), logs.clone());
            tasklets::threads::spawn(SCHED_THREADS, move |t| {
                // The root returns once its senders are done (the closure, and the channel
                // ends it holds, go when the last root returns); the receivers run on until
                // the channel is closed, and `join` waits for them.
                let mut senders = Vec::new();
                for k in 0..PER_THREAD {
                    let id = t * PER_THREAD + k;
                    let (tx, rx, log) = (tx.clone(), rx.clone(), logs[id].clone());
                    senders.push(tasklets::spawn(move || {
                        for seq in 0..MESSAGES {
                            tx.send((id, seq)).unwrap();
                        }
                    }));
                    tasklets::spawn(move || {
                        for message in &rx {
                            log.lock().unwrap().push(message);
                        }
                    });
                }
                senders.into_iter().all(|t| t.join().is_ok())
            })
            .unwrap()
        };
        let plain: Vec<_> = (0..PLAIN)
            .map(|p| {
                let id = SCHED_THREADS * PER_THREAD + p;
                let (tx, rx, log) = (tx.clone(), rx.clone(), logs[id].clone());
                let sender = thread::spawn(move || {
                    for seq in 0..MESSAGES {
                        tx.send((id, seq)).unwrap();
                    }
                });
                let receiver = thread::spawn(move || {
                    for message in &rx {
                        log.lock().unwrap().push(message);
                    }
                });
                (sender, receiver)
            })
            .collect();
        drop((tx, rx));
        for (sender, receiver) in plain {
            sender.join().unwrap();
            receiver.join().unwrap();
        }
        assert!(threads.join().into_iter().all(|ok| ok.unwrap()));
        check_exactly_once(&sent, &logs);
    }
}

/// A small deterministic generator (xorshift), one per participant, seeded from a fixed seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A message that records its drops: the stress below proves that nothing is lost,
/// duplicated or dropped by the channel.
struct Message {
    sender: usize,
    seq: usize,
    drops: Arc<Vec<AtomicUsize>>,
}

impl Drop for Message {
    fn drop(&mut self) {
        self.drops[self.sender * MAX_SEQ + self.seq].fetch_add(1, Ordering::Relaxed);
    }
}

const MAX_SEQ: usize = 1000;

/// Sends `MAX_SEQ`-bounded sequence numbers with a seeded mix of `send`, `try_send` and
/// `send_timeout` (a value that comes back is sent again, so order is kept); records what was
/// sent successfully. Stops early when killed (its in-flight value is dropped with it) or when
/// `stop` is set.
fn stress_sender(
    id: usize,
    tx: &sync::Sender<Message>,
    count: usize,
    seed: u64,
    sent: &Mutex<Vec<usize>>,
    drops: &Arc<Vec<AtomicUsize>>,
) {
    let mut rng = Rng::new(seed);
    for seq in 0..count {
        let mut message = Message { sender: id, seq, drops: drops.clone() };
        loop {
            let outcome = match rng.below(4) {
                0 => tx.send(message).map_err(|e| e.into_inner()),
                1 => tx.try_send(message).map_err(|e| e.into_inner()),
                _ => tx
                    .send_timeout(message, Duration::from_micros(rng.below(2000)))
                    .map_err(|e| e.into_inner()),
            };
            match outcome {
                Ok(()) => break,
                Err(back) => message = back,
            }
            if tasklets::threads::current().is_none() {
                thread::yield_now();
            } else {
                tasklets::schedule();
            }
        }
        sent.lock().unwrap().push(seq);
    }
}

/// Receives with a seeded mix of `receive`, `try_receive` and `receive_timeout` until the
/// channel is closed; logs each message before dropping it.
fn stress_receiver(rx: &sync::Receiver<Message>, seed: u64, log: &Log) {
    let mut rng = Rng::new(seed);
    loop {
        let outcome = match rng.below(4) {
            0 => rx.receive().map_err(|_| true),
            1 => rx.try_receive().map_err(|e| e == TryRecvError::Closed),
            _ => rx
                .receive_timeout(Duration::from_micros(rng.below(2000)))
                .map_err(|e| e == RecvTimeoutError::Closed),
        };
        match outcome {
            Ok(message) => log.lock().unwrap().push((message.sender, message.seq)),
            Err(true) => return,
            Err(false) => {
                if tasklets::threads::current().is_none() {
                    thread::yield_now();
                } else {
                    tasklets::schedule();
                }
            }
        }
    }
}

/// Senders and receivers on two scheduler threads and on plain threads, with seeded programs
/// of every operation, timeouts of 0 to 2 ms, and a killer tasklet per scheduler thread that
/// kills some of its thread's senders and receivers at seeded moments. Every message whose
/// send succeeded is received exactly once (a receiver killed right after a hand-off logs its
/// message before it dies), FIFO per sender and receiver, and every message ever made is
/// dropped exactly once: the channel neither loses nor duplicates one, whatever the
/// interleaving.
#[test]
fn kills_and_timeouts_mixed_in_never_lose_or_duplicate_a_message() {
    const SEEDS: [u64; 3] = [0x5eed_2026, 7, 1 << 40];
    const SCHED_THREADS: usize = 2;
    const PER_THREAD: usize = 4; // senders and as many receivers per scheduler thread
    const PLAIN: usize = 2;
    const COUNT: usize = 600;
    for (capacity, seed) in [0, 2].into_iter().flat_map(|c| SEEDS.map(|s| (c, s))) {
        let senders = SCHED_THREADS * PER_THREAD + PLAIN;
        let drops = drop_table(senders * MAX_SEQ);
        let (tx, rx) = sync::channel::<Message>(capacity);
        let sent: Vec<Arc<Mutex<Vec<usize>>>> = (0..senders).map(|_| Arc::default()).collect();
        let logs: Vec<Log> = (0..senders).map(|_| Log::default()).collect();
        let kills = Arc::new(AtomicUsize::new(0));
        let threads = {
            let (tx, rx, sent, logs, drops, kills) =
                (tx.clone(), rx.clone(), sent.clone(), logs.clone(), drops.clone(), kills.clone());
            tasklets::threads::spawn(SCHED_THREADS, move |t| {
                let mut victims = Vec::new();
                let mut senders = Vec::new();
                for k in 0..PER_THREAD {
                    let id = t * PER_THREAD + k;
                    let seed = seed ^ (id as u64 * 7919);
                    let (tx, sent, drops) = (tx.clone(), sent[id].clone(), drops.clone());
                    let sender = tasklets::spawn(move || stress_sender(id, &tx, COUNT, seed, &sent, &drops));
                    let (rx, log) = (rx.clone(), logs[id].clone());
                    let receiver = tasklets::spawn(move || stress_receiver(&rx, seed ^ 1, &log));
                    victims.push(sender.clone().into_any());
                    victims.push(receiver.into_any());
                    senders.push(sender);
                }
                // The killer: at seeded moments, kills one of this thread's tasklets. It never
                // kills every receiver of the process (the plain threads' receivers stay).
                let mut rng = Rng::new(seed ^ t as u64);
                let killer = {
                    let kills = kills.clone();
                    tasklets::spawn(move || {
                        for _ in 0..6 {
                            tasklets::time::sleep(Duration::from_micros(50 + rng.below(1_000)));
                            let victim = &victims[rng.below(victims.len() as u64) as usize];
                            if victim.is_alive() {
                                victim.kill();
                                kills.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                };
                for sender in senders {
                    let _ = sender.join(); // finished or killed
                }
                killer.join().unwrap();
            })
            .unwrap()
        };
        let plain: Vec<_> = (0..PLAIN)
            .map(|p| {
                let id = SCHED_THREADS * PER_THREAD + p;
                let seed = seed ^ (id as u64 * 7919);
                let (tx, sent, drops) = (tx.clone(), sent[id].clone(), drops.clone());
                let sender = thread::spawn(move || stress_sender(id, &tx, COUNT, seed, &sent, &drops));
                let (rx, log) = (rx.clone(), logs[id].clone());
                let receiver = thread::spawn(move || stress_receiver(&rx, seed ^ 1, &log));
                (sender, receiver)
            })
            .collect();
        drop((tx, rx));
        let mut receivers = Vec::new();
        for (sender, receiver) in plain {
            sender.join().unwrap();
            receivers.push(receiver);
        }
        for result in threads.join() {
            result.unwrap();
        }
        // Every sender is gone now (finished or killed): the receivers drain and end.
        for receiver in receivers {
            receiver.join().unwrap();
        }
        let sent: Vec<Vec<usize>> = sent.iter().map(|s| s.lock().unwrap().clone()).collect();
        check_exactly_once(&sent, &logs);
        // Made messages: each sender's successful ones, plus at most one in flight when it was
        // killed. Each of them was dropped exactly once; none was dropped twice.
        for (s, seqs) in sent.iter().enumerate() {
            let made = (seqs.len() + 1).min(COUNT);
            for seq in 0..MAX_SEQ {
                let count = drops[s * MAX_SEQ + seq].load(Ordering::Relaxed);
                let expected = usize::from(seq < made);
                assert!(
                    count == expected || (seq == seqs.len() && count == 0),
                    "message {s}/{seq} dropped {count} times"
                );
            }
        }
        assert!(kills.load(Ordering::Relaxed) > 0, "the killers killed nobody (capacity {capacity})");
    }
}

/// At thread exit, a tasklet parked on a `sync` channel is killed and leaves the queue: a
/// later send does not reach its dead frame.
#[test]
fn thread_exit_removes_parked_waiters() {
    let (tx, rx) = sync::channel::<u32>(0);
    let parked = Arc::new(AtomicBool::new(false));
    let worker = {
        let parked = parked.clone();
        thread::spawn(move || {
            tasklets::spawn(move || {
                parked.store(true, Ordering::SeqCst);
                let _ = rx.receive();
                unreachable!("nobody sends");
            });
            tasklets::schedule(); // the tasklet parks; the thread then exits without run()
        })
    };
    worker.join().unwrap();
    assert!(parked.load(Ordering::SeqCst));
    assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)), "the receiver died with its thread");
}

/// A snapshot names a tasklet waiting on a `sync` channel like one waiting on a local channel.
#[test]
fn snapshots_show_sync_waits() {
    let (tx, rx) = sync::channel::<u8>(0);
    let t = tasklets::spawn(move || tx.send(1));
    tasklets::schedule();
    let info = tasklets::snapshot().tasklets.into_iter().find(|i| i.id == t.id()).unwrap();
    assert!(matches!(info.waiting_on, Some(WaitingOn::Send { .. })), "{:?}", info.waiting_on);
    assert_eq!(rx.receive(), Ok(1));
    assert_eq!(t.join().unwrap(), Ok(()));
}

/// Regression guard for skipping the poller's eventfd write when the target scheduler is not
/// asleep in its poller: a wake pushed while the target was deciding to sleep must still wake
/// it. Many round trips between a scheduler thread (sometimes busy with a yielding tasklet,
/// sometimes asleep in its poller) and a plain thread; every wait has a timeout far above a
/// round trip, so a lost wake fails the test instead of hanging it.
#[test]
fn a_cross_thread_wake_is_never_lost_when_the_notify_is_skipped() {
    const ROUNDS: u32 = 20_000;
    const LOST: Duration = Duration::from_secs(10);
    let (ping_tx, ping_rx) = sync::channel::<u32>(0);
    let (pong_tx, pong_rx) = sync::channel::<u32>(1);
    let worker = thread::spawn(move || {
        let busy = Arc::new(AtomicBool::new(true));
        let spinning = busy.clone();
        // Keeps the scheduler awake (polling without blocking) for the first half.
        tasklets::spawn(move || {
            while spinning.load(Ordering::Relaxed) {
                tasklets::schedule();
            }
        });
        let echo = tasklets::spawn(move || {
            for round in 0..ROUNDS {
                let ping = ping_rx.receive_timeout(LOST).expect("a wake of the worker was lost");
                assert_eq!(ping, round);
                if round == ROUNDS / 2 {
                    busy.store(false, Ordering::Relaxed);
                }
                pong_tx.send(ping).unwrap();
            }
        });
        tasklets::run();
        echo.join().unwrap();
    });
    for round in 0..ROUNDS {
        ping_tx.send_timeout(round, LOST).expect("the worker never took a ping");
        assert_eq!(pong_rx.receive_timeout(LOST), Ok(round), "a wake of the plain thread was lost");
    }
    worker.join().unwrap();
}

/// Starts a scheduler thread whose only tasklet receives one value from `rx` (parking until it
/// comes) and reports it on a std channel. Returns once the tasklet is parked, with the report
/// channel and the thread.
fn parked_remote_receiver(
    rx: sync::Receiver<u32>,
) -> (std::sync::mpsc::Receiver<Result<u32, RecvError>>, thread::JoinHandle<()>) {
    let (report, reports) = std::sync::mpsc::channel();
    let (parked_tx, parked) = std::sync::mpsc::channel();
    let worker = thread::spawn(move || {
        tasklets::spawn(move || report.send(rx.receive()).unwrap());
        tasklets::spawn(move || parked_tx.send(()).unwrap()); // runs once the receiver parked
        tasklets::run();
    });
    parked.recv_timeout(Duration::from_secs(20)).expect("the receiver's thread started");
    (reports, worker)
}

/// Starts a scheduler thread with a tasklet parked receiving from `rx` and another that then
/// blocks the whole thread (no poll, no switch) until the returned sender is used or dropped.
/// Returns once the thread is blocked; the thread returns what the receiver got.
fn blocked_receiver_thread(
    rx: sync::Receiver<u32>,
) -> (std::sync::mpsc::Sender<()>, thread::JoinHandle<Result<u32, RecvError>>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (blocked_tx, blocked) = std::sync::mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        let receiver = tasklets::spawn(move || rx.receive());
        tasklets::spawn(move || {
            blocked_tx.send(()).unwrap();
            let _ = released.recv();
        });
        tasklets::run();
        receiver.join().unwrap()
    });
    blocked.recv_timeout(Duration::from_secs(20)).expect("the receiver's thread started");
    (release, worker)
}

/// A send at capacity 0 to a receiver parked on another thread hands the value over and
/// returns without that thread's help (no second cross-thread hop): here the receiver's
/// thread is blocked outright, not even polling, while the send completes. From a plain
/// thread, and from a tasklet.
#[test]
fn a_rendezvous_send_to_a_parked_receiver_needs_no_answer_from_its_thread() {
    let (tx, rx) = sync::channel::<u32>(0);
    let (release, worker) = blocked_receiver_thread(rx);
    tx.send_timeout(1, Duration::from_secs(20)).expect("the send waited for the receiver's thread");
    release.send(()).unwrap();
    assert_eq!(worker.join().unwrap(), Ok(1));

    let (tx, rx) = sync::channel::<u32>(0);
    let (release, worker) = blocked_receiver_thread(rx);
    let sender = thread::spawn(move || {
        let send = tasklets::spawn(move || tx.send_timeout(2, Duration::from_secs(20)));
        tasklets::run();
        send.join().unwrap()
    });
    assert_eq!(sender.join().unwrap(), Ok(()), "the send waited for the receiver's thread");
    release.send(()).unwrap();
    assert_eq!(worker.join().unwrap(), Ok(2));
}

/// A hand-off at capacity 0 from a tasklet wakes the receiver late, when the sending tasklet
/// stops running: here it parks on a local `Channel` (not a `sync` operation) that only the
/// receiver's answer fills. Sent at the park, the wake arrives; kept, both would wait forever.
#[test]
fn a_late_wake_is_sent_when_the_sender_parks_on_something_else() {
    let (tx, rx) = sync::channel::<u32>(0);
    let (answer_tx, answer_rx) = sync::channel::<u32>(1);
    let (reports, remote) = parked_remote_receiver(rx);
    let answering = thread::spawn(move || {
        let got = reports.recv_timeout(Duration::from_secs(20)).expect("the receiver was never woken");
        answer_tx.send(got.unwrap() + 1).unwrap();
    });
    let local = tasklets::Channel::<u32>::new();
    let feed = local.clone();
    let sender = tasklets::spawn(move || {
        tx.send(41).unwrap();
        local.receive().unwrap() // parks: the late wake goes now
    });
    tasklets::spawn(move || {
        let answer = answer_rx.receive_timeout(Duration::from_secs(20)).expect("no answer");
        feed.send(answer).unwrap();
    });
    tasklets::run();
    assert_eq!(sender.join().unwrap(), 42);
    answering.join().unwrap();
    remote.join().unwrap();
}

/// ... when it yields, alone on its thread (`schedule()` then does not switch) and then spins
/// on an atomic only the receiver's thread sets.
#[test]
fn a_late_wake_is_sent_when_the_sender_yields() {
    let (tx, rx) = sync::channel::<u32>(0);
    let (reports, remote) = parked_remote_receiver(rx);
    let woken = Arc::new(AtomicBool::new(false));
    let flag = woken.clone();
    let answering = thread::spawn(move || {
        let got = reports.recv_timeout(Duration::from_secs(20));
        flag.store(true, Ordering::SeqCst);
        got
    });
    let spinner = thread::spawn(move || {
        let sender = tasklets::spawn(move || {
            tx.send(7).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !woken.load(Ordering::SeqCst) && Instant::now() < deadline {
                tasklets::schedule();
            }
            woken.load(Ordering::SeqCst)
        });
        tasklets::run();
        sender.join().unwrap()
    });
    assert!(spinner.join().unwrap(), "the receiver was not woken while the sender yielded");
    assert_eq!(answering.join().unwrap(), Ok(Ok(7)));
    remote.join().unwrap();
}

/// ... when it finishes.
#[test]
fn a_late_wake_is_sent_when_the_sender_finishes() {
    let (tx, rx) = sync::channel::<u32>(0);
    let (reports, remote) = parked_remote_receiver(rx);
    let sending = thread::spawn(move || {
        tasklets::spawn(move || tx.send(3).unwrap());
        tasklets::run();
    });
    assert_eq!(reports.recv_timeout(Duration::from_secs(20)), Ok(Ok(3)), "never woken");
    sending.join().unwrap();
    remote.join().unwrap();
}

/// ... when its next `sync` operation completes without waiting, even if it never switches:
/// it polls for the answer with `try_receive`.
#[test]
fn a_late_wake_is_sent_by_the_senders_next_sync_operation() {
    let (tx, rx) = sync::channel::<u32>(0);
    let (answer_tx, answer_rx) = sync::channel::<u32>(1);
    let (reports, remote) = parked_remote_receiver(rx);
    let answering = thread::spawn(move || {
        let got = reports.recv_timeout(Duration::from_secs(20)).expect("never woken");
        answer_tx.send(got.unwrap() * 2).unwrap();
    });
    let polling = thread::spawn(move || {
        let sender = tasklets::spawn(move || {
            tx.send(5).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match answer_rx.try_receive() {
                    Ok(answer) => return Some(answer),
                    Err(_) if Instant::now() > deadline => return None,
                    Err(_) => std::hint::spin_loop(),
                }
            }
        });
        tasklets::run();
        sender.join().unwrap()
    });
    assert_eq!(polling.join().unwrap(), Some(10));
    answering.join().unwrap();
    remote.join().unwrap();
}

/// The main tasklet never wakes late: main code often blocks its thread outright next (here
/// on a std channel that only the woken receiver's report fills), which would wait forever.
#[test]
fn the_main_tasklet_wakes_a_remote_receiver_at_once() {
    let (tx, rx) = sync::channel::<u32>(0);
    let (reports, remote) = parked_remote_receiver(rx);
    let main = thread::spawn(move || {
        tasklets::spawn(|| ()).join().unwrap(); // this thread has a scheduler now
        tx.send(9).unwrap();
        reports.recv_timeout(Duration::from_secs(20)) // blocks the thread, no switch
    });
    assert_eq!(main.join().unwrap(), Ok(Ok(9)), "the main tasklet's wake was kept");
    remote.join().unwrap();
}

/// A poll that finds a cross-thread wake already queued does not sleep, and skips its
/// `epoll_wait` altogether when no tasklet of the thread waits on an fd; with a tasklet parked
/// on a socket it must still make it, or that reader misses the data. Here the thread is
/// blocked (a std sleep in a tasklet) while the reader's data arrives and then a plain thread's
/// send queues the wake of a second tasklet; the poll after the sleep must wake both, the
/// reader first (events before the remote queue), so the second tasklet sees the data read.
/// (A machine so loaded that the plain thread is slower than the sleep only makes the reader
/// wake alone first: the test then passes without proving anything, it never fails.)
#[test]
fn a_poll_that_finds_a_cross_thread_wake_queued_still_wakes_socket_readers() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = sync::channel::<u32>(0);
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let plain = thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        go_rx.recv_timeout(Duration::from_secs(20)).expect("the scheduler thread blocked");
        peer.write_all(b"x").unwrap(); // the reader's edge, while its thread cannot poll
        thread::sleep(ms(20));
        tx.send(1).unwrap(); // queues the receiver's wake: the thread is not in its poller
        peer
    });
    let worker = thread::spawn(move || {
        let read = Arc::new(AtomicBool::new(false));
        let reader = {
            let read = read.clone();
            tasklets::spawn(move || {
                let mut stream = tasklets::net::TcpStream::connect(addr).unwrap();
                let mut buf = [0u8; 8];
                let n = stream.read(&mut buf).unwrap(); // parks on the socket
                read.store(true, Ordering::Relaxed);
                buf[..n].to_vec()
            })
        };
        let receiver = tasklets::spawn(move || (rx.receive(), read.load(Ordering::Relaxed)));
        tasklets::spawn(move || {
            go_tx.send(()).unwrap();
            thread::sleep(ms(300)); // blocks the thread: no poll, no switch
        });
        tasklets::run();
        (reader.join().unwrap(), receiver.join().unwrap())
    });
    let (got, (received, read_first)) = worker.join().unwrap();
    assert_eq!(got, b"x");
    assert_eq!(received, Ok(1));
    assert!(read_first, "the poll that woke the receiver left the socket reader parked");
    drop(plain.join().unwrap());
}

/// A poll that skips its system call (no fd waiter, a cross-thread wake queued) reads the
/// clock only when a timer is armed: a sleeper on a thread that ping-pongs with another
/// thread without pause must still wake on time, not only once the ping-pong stops.
#[test]
fn a_timer_fires_on_a_thread_whose_polls_skip_the_poller_for_cross_thread_wakes() {
    const GIVE_UP: Duration = Duration::from_secs(10);
    let (ping_tx, ping_rx) = sync::channel::<u64>(0);
    let (pong_tx, pong_rx) = sync::channel::<u64>(0);
    let echo = thread::spawn(move || {
        tasklets::spawn(move || {
            for v in &ping_rx {
                pong_tx.send(v).unwrap();
            }
        });
        tasklets::run();
    });
    let worker = thread::spawn(move || {
        let slept = Arc::new(AtomicBool::new(false));
        let woke = slept.clone();
        tasklets::spawn(move || {
            tasklets::time::sleep(ms(30));
            woke.store(true, Ordering::Relaxed);
        });
        let pinger = tasklets::spawn(move || {
            let start = Instant::now();
            let mut round = 0u64;
            // Ping-pongs until the sleeper woke (or, if its timer never fires, gives up).
            while !slept.load(Ordering::Relaxed) && start.elapsed() < GIVE_UP {
                ping_tx.send(round).unwrap();
                assert_eq!(pong_rx.receive(), Ok(round));
                round += 1;
            }
            slept.load(Ordering::Relaxed)
        });
        tasklets::run();
        pinger.join().unwrap()
    });
    assert!(worker.join().unwrap(), "the sleeper's timer never fired while the thread ping-ponged");
    echo.join().unwrap();
}
