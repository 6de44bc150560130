//! `tasklets::threads`: scheduler threads, their roots, spawning onto a chosen thread from
//! anywhere, join and shutdown with results and panics, pinning, idleness.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tasklets::threads::{self, Builder};
use tasklets::JoinError;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn panic_text(err: JoinError) -> String {
    let payload = err.try_into_panic().expect("a panic");
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
fn roots_run_on_their_own_named_threads_and_join_returns_them_in_order() {
    let threads = Builder::new(3)
        .name("pool")
        .spawn(|index| (index, thread::current().name().unwrap().to_owned(), thread::current().id()))
        .unwrap();
    assert_eq!(threads.len(), 3);
    assert_eq!(threads.iter().map(|t| t.index()).collect::<Vec<_>>(), [0, 1, 2]);
    let roots: Vec<_> = threads.join().into_iter().map(Result::unwrap).collect();
    for (i, (index, name, _)) in roots.iter().enumerate() {
        assert_eq!((*index, name.as_str()), (i, format!("pool-{i}").as_str()));
    }
    assert!(roots[0].2 != roots[1].2 && roots[1].2 != roots[2].2 && roots[0].2 != thread::current().id());
}

#[test]
fn zero_threads_is_an_error() {
    let err = threads::spawn(0, |_| ()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// Spawning onto a chosen thread from the main thread, from a plain thread and from a tasklet
/// of another scheduler thread (whose join parks it): each closure runs on its target.
#[test]
fn tasklets_spawn_onto_a_chosen_thread_from_anywhere() {
    let threads = threads::spawn(2, |_| ()).unwrap();
    let where_am_i = || threads::current().map(|t| t.index());
    let here = threads.thread(1).spawn(where_am_i);
    assert_eq!(here.join().unwrap(), Some(1));
    let target = threads.thread(0).clone();
    let from_plain = thread::spawn(move || target.spawn(where_am_i).join().unwrap()).join().unwrap();
    assert_eq!(from_plain, Some(0));
    // A tasklet on thread 0 spawns onto thread 1 and waits, parked; thread 0 runs a ticker
    // meanwhile.
    let target = threads.thread(1).clone();
    let relay = threads.thread(0).spawn(move || {
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tasklets::spawn(move || loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tasklets::time::sleep(ms(1));
            })
        };
        let far = target.spawn(move || {
            thread::sleep(ms(30)); // blocks thread 1, not thread 0
            where_am_i()
        });
        let answer = far.join().unwrap();
        ticker.kill();
        (where_am_i(), answer, ticks.load(Ordering::Relaxed))
    });
    let (relay_at, answer, ticks) = relay.join().unwrap();
    assert_eq!((relay_at, answer), (Some(0), Some(1)));
    assert!(ticks > 1, "thread 0 ran its ticker while the relay waited ({ticks} ticks)");
    assert!(threads.join().into_iter().all(|r| r.is_ok()));
}

#[test]
fn panics_come_back_through_join() {
    let threads = threads::spawn(2, |index| {
        if index == 1 {
            panic!("root 1 failed");
        }
        index
    })
    .unwrap();
    let spawned = threads.thread(0).spawn(|| -> u32 { panic!("spawned failed") });
    assert_eq!(panic_text(spawned.join().unwrap_err()), "spawned failed");
    let mut results = threads.join().into_iter();
    assert_eq!(results.next().unwrap().unwrap(), 0);
    assert_eq!(panic_text(results.next().unwrap().unwrap_err()), "root 1 failed");
}

/// `join` lets every tasklet spawned before it finish; a spawn after it never runs.
#[test]
fn join_waits_for_every_tasklet_and_later_spawns_report_killed() {
    let done = Arc::new(AtomicUsize::new(0));
    let threads = threads::spawn(2, |_| ()).unwrap();
    let target = threads.thread(1).clone();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let done = done.clone();
            threads.thread(i % 2).spawn(move || {
                tasklets::time::sleep(ms(10 + i as u64));
                done.fetch_add(1, Ordering::SeqCst);
                i
            })
        })
        .collect();
    for result in threads.join() {
        result.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 20, "join returned before every tasklet finished");
    assert!(handles.iter().all(|h| h.is_finished()));
    let sum: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, (0..20).sum());
    let late = target.spawn(|| unreachable!("the thread stopped"));
    assert!(late.is_finished());
    assert!(late.join().unwrap_err().is_killed());
}

/// `shutdown` kills the tasklets still alive (their destructors run) and the roots that still
/// ran report `Killed`; dropping `Threads` does the same.
#[test]
fn shutdown_and_drop_kill_what_still_runs() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    for by_drop in [false, true] {
        let dropped = Arc::new(AtomicUsize::new(0));
        let (started, starts) = tasklets::sync::channel(2);
        let threads = {
            let dropped = dropped.clone();
            threads::spawn(2, move |_| {
                let _guard = Guard(dropped.clone());
                started.send(()).unwrap();
                tasklets::time::sleep(Duration::from_secs(3600));
            })
            .unwrap()
        };
        // (A root that never started would be killed before it made its guard.)
        starts.iter().take(2).for_each(drop);
        let sleepers: Vec<_> = (0..6)
            .map(|i| {
                let guard = Guard(dropped.clone());
                threads.thread(i % 2).spawn(move || {
                    let _guard = guard;
                    tasklets::time::sleep(Duration::from_secs(3600));
                })
            })
            .collect();
        if by_drop {
            drop(threads);
        } else {
            for root in threads.shutdown() {
                assert!(root.unwrap_err().is_killed());
            }
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 2 + 6, "every destructor ran");
        assert!(sleepers.into_iter().all(|s| s.join().unwrap_err().is_killed()));
    }
}

/// Joining the threads from one of them would wait for itself: it panics instead, and the
/// `Threads` dropped by that panic does not wait for its own thread either.
#[test]
fn joining_from_one_of_the_threads_panics() {
    let threads = threads::spawn(2, |_| ()).unwrap();
    let first = threads.thread(0).clone();
    let joiner = first.spawn(move || threads.join().len());
    let err = joiner.join().unwrap_err();
    assert!(panic_text(err).contains("cannot join the threads it belongs to"));
}

/// Pinned threads run on one CPU each, the `i`-th of those the process may use.
#[test]
fn pinned_threads_run_on_their_cpu() {
    let threads = Builder::new(2)
        .pin_to_cpus(true)
        .spawn(|_| {
            // SAFETY: an all-zero cpu_set_t is valid; sched_getaffinity fills it.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: `set` is a writable cpu_set_t of the size passed.
            let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
            assert_eq!(rc, 0);
            // SAFETY: CPU_ISSET reads the set for indexes below CPU_SETSIZE.
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect::<Vec<_>>()
        })
        .unwrap();
    let cpus: Vec<Option<usize>> = threads.iter().map(|t| t.cpu()).collect();
    for (allowed, cpu) in threads.join().into_iter().zip(cpus) {
        assert_eq!(allowed.unwrap(), [cpu.expect("pinned")]);
    }
}

/// An idle scheduler thread sleeps in its poller: a spawn wakes it, and between spawns it
/// does not poll.
#[test]
fn idle_threads_sleep_until_something_is_spawned() {
    let threads = threads::spawn(1, |_| ()).unwrap();
    let polls = || threads.thread(0).spawn(|| tasklets::snapshot().stats.polls).join().unwrap();
    let before = polls();
    thread::sleep(ms(200));
    let after = polls();
    assert!(after - before <= 4, "{} polls for one spawn over 200 ms idle", after - before);
    threads.join();
}

/// A hub on one scheduler thread serves clients that are tasklets on other scheduler threads
/// and a plain thread; each request carries the channel for its answer.
#[test]
fn a_hub_serves_clients_on_other_threads() {
    type Request = (u64, tasklets::sync::Sender<u64>);
    let (requests, inbox) = tasklets::sync::channel::<Request>(0);
    let threads = threads::spawn(3, |_| ()).unwrap();
    let hub = threads.thread(0).spawn(move || {
        let mut served = 0;
        for (n, reply) in &inbox {
            reply.send(n * 2).unwrap();
            served += 1;
        }
        served
    });
    let client = |requests: tasklets::sync::Sender<Request>, base: u64| {
        move || {
            let (reply, answers) = tasklets::sync::channel(1);
            (base..base + 100).all(|n| {
                requests.send((n, reply.clone())).unwrap();
                answers.receive() == Ok(n * 2)
            })
        }
    };
    let results = Mutex::new(Vec::new());
    let remote: Vec<_> =
        (1..3).map(|t| threads.thread(t).spawn(client(requests.clone(), t as u64 * 1000))).collect();
    let plain = thread::spawn(client(requests.clone(), 5000));
    drop(requests);
    for handle in remote {
        results.lock().unwrap().push(handle.join().unwrap());
    }
    results.lock().unwrap().push(plain.join().unwrap());
    assert_eq!(*results.lock().unwrap(), [true, true, true]);
    assert_eq!(hub.join().unwrap(), 300);
    threads.join();
}
