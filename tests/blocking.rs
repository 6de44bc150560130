//! `tasklets::unblock`: truly blocking calls on the worker pool while the tasklet is parked.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tasklets::Channel;

#[test]
fn unblock_returns_the_value_computed_on_another_thread() {
    let here = thread::current().id();
    let t = tasklets::spawn(move || tasklets::unblock(move || (thread::current().id() != here, 6 * 7)));
    tasklets::run();
    assert_eq!(t.join().unwrap(), (true, 42));
}

#[test]
fn other_tasklets_run_while_one_waits_for_the_pool() {
    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(false));
    let (d, t2) = (done.clone(), ticks.clone());
    tasklets::spawn(move || {
        tasklets::unblock(|| thread::sleep(Duration::from_millis(50)));
        d.set(true);
    });
    tasklets::spawn(move || {
        while !done.get() {
            t2.set(t2.get() + 1);
            tasklets::time::sleep(Duration::from_millis(1));
        }
    });
    tasklets::run();
    println!("the other tasklet ticked {} times during a 50 ms blocking call", ticks.get());
    assert!(ticks.get() >= 5, "ticked only {} times", ticks.get());
}

#[test]
fn a_panic_in_the_pool_is_resumed_in_the_caller() {
    let t = tasklets::spawn(|| {
        let caught =
            panic::catch_unwind(AssertUnwindSafe(|| tasklets::unblock(|| -> u8 { panic!("pool boom") })));
        let payload = caught.unwrap_err();
        payload.downcast_ref::<&str>().copied().unwrap_or_default().to_owned()
    });
    tasklets::run();
    assert_eq!(t.join().unwrap(), "pool boom");
}

#[test]
fn main_tasklet_can_unblock_while_tasklets_run() {
    let counter = Rc::new(Cell::new(0));
    let c = counter.clone();
    tasklets::spawn(move || {
        for _ in 0..5 {
            c.set(c.get() + 1);
            tasklets::time::sleep(Duration::from_millis(2));
        }
    });
    let v = tasklets::unblock(|| {
        thread::sleep(Duration::from_millis(40));
        "done"
    });
    assert_eq!(v, "done");
    assert!(counter.get() >= 1, "the tasklet ran while main waited");
    tasklets::run();
    assert_eq!(counter.get(), 5);
}

#[test]
fn unblock_on_a_plain_thread_behaves_like_a_call() {
    let v = thread::spawn(|| tasklets::unblock(|| 7 + 8)).join().unwrap();
    assert_eq!(v, 15);
}

#[test]
fn many_tasklets_unblock_at_once_beyond_the_pool_size() {
    const N: usize = 200;
    let started = Instant::now();
    let ts: Vec<_> = (0..N)
        .map(|i| {
            tasklets::spawn(move || {
                tasklets::unblock(move || {
                    thread::sleep(Duration::from_millis(10));
                    i * 2
                })
            })
        })
        .collect();
    tasklets::run();
    let sum: usize = ts.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(sum, N * (N - 1));
    println!(
        "{N} blocking calls of 10 ms through a pool of {} threads: {:?}",
        tasklets::MAX_THREADS,
        started.elapsed()
    );
}

#[test]
fn run_waits_for_a_pending_unblock() {
    let t = tasklets::spawn(|| tasklets::unblock(|| thread::sleep(Duration::from_millis(30))));
    let started = Instant::now();
    tasklets::run();
    assert!(!t.is_alive(), "run() returned before the unblock finished");
    assert!(started.elapsed() >= Duration::from_millis(30));
}

#[test]
fn main_receive_while_the_sender_waits_for_the_pool_is_not_a_deadlock() {
    let ch = Channel::new();
    let tx = ch.clone();
    tasklets::spawn(move || {
        let v = tasklets::unblock(|| {
            thread::sleep(Duration::from_millis(10));
            99
        });
        tx.send(v).unwrap();
    });
    assert_eq!(ch.receive(), Ok(99));
}

#[test]
fn killing_a_tasklet_waiting_for_the_pool_lets_the_job_finish_and_drops_its_result() {
    #[derive(Debug)]
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(2));
    let (d, b) = (dropped.clone(), barrier.clone());
    let t = tasklets::spawn(move || {
        tasklets::unblock(move || {
            b.wait(); // the job runs until the test lets it finish
            Counted(d)
        })
    });
    tasklets::schedule(); // t submits its job and parks
    assert!(t.is_blocked());
    // Let the job finish shortly after the kill: the kill does not wait for it (the job owns
    // what it touches); the pool thread drops the result.
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        barrier.wait();
    });
    t.kill();
    releaser.join().unwrap();
    assert!(!t.is_alive());
    assert!(t.join().unwrap_err().is_killed());
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the job's result was never dropped");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the job's result was dropped exactly once");
    tasklets::run(); // nothing left pending
}

#[test]
fn pool_threads_run_jobs_concurrently() {
    // Two jobs that wait for each other can only finish if they run on two threads at once.
    let barrier = Arc::new(Barrier::new(2));
    let ts: Vec<_> = (0..2)
        .map(|_| {
            let b = barrier.clone();
            tasklets::spawn(move || tasklets::unblock(move || b.wait().is_leader()))
        })
        .collect();
    tasklets::run();
    let leaders = ts.into_iter().map(|t| t.join().unwrap()).filter(|&l| l).count();
    assert_eq!(leaders, 1);
}

/// Killing a tasklet that waited in `unblock` used to block its thread until the pool job
/// ended, and forever when the job waited for another tasklet of the same thread (which could
/// then never run). The kill now returns at once and the job finishes in the background.
#[test]
fn kill_during_unblock_returns_at_once_even_if_the_job_waits_for_a_tasklet() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // On its own thread, so that the old hang shows as a timeout rather than a stuck suite.
    thread::spawn(move || {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let job_ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ended = job_ended.clone();
        let waiter = tasklets::spawn(move || {
            tasklets::unblock(move || {
                let got = rx.recv_timeout(Duration::from_secs(20));
                ended.store(true, Ordering::SeqCst);
                got
            })
        });
        tasklets::schedule();
        assert!(waiter.is_blocked());
        waiter.kill();
        assert!(matches!(waiter.join(), Err(tasklets::JoinError::Killed)));
        // The tasklet the job waits for still runs on this thread.
        let sender = tasklets::spawn(move || tx.send(7).unwrap());
        sender.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !job_ended.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the job never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("kill() of a tasklet waiting in unblock froze its thread");
}
