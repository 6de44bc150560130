//! The monitor: schedulers watched from another thread through their shared counters and
//! the snapshots they publish on request (`tasklets::monitor`).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tasklets::monitor::{self, Activity, EventKind, SchedulerHandle, Watcher};
use tasklets::net::unix::UnixStream;
use tasklets::{Channel, TaskletState, WaitingOn};

/// Waits until `cond` holds, for 10 s at most.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// The handle of the scheduler of the thread named `name`.
fn handle_of(name: &str) -> SchedulerHandle {
    let mut found = None;
    eventually(&format!("the scheduler of thread {name}"), || {
        found = monitor::schedulers().into_iter().find(|s| s.thread_name() == Some(name));
        found.is_some()
    });
    found.unwrap()
}

/// Requests a snapshot and waits for the answer.
fn fresh_snapshot(handle: &SchedulerHandle) -> Arc<monitor::PublishedSnapshot> {
    let ticket = handle.request_snapshot();
    eventually("an answer", || handle.is_answered(ticket));
    let published = handle.latest_snapshot().expect("published");
    assert!(published.ticket >= ticket);
    published
}

/// What the owner thread tells the test: ids, the line of each spawn, the parked fd.
#[derive(Debug, Default)]
struct Truth {
    receiver: (u64, u32),
    joiner: (u64, u32),
    sleeper: (u64, u32),
    reader: (u64, u32, i32),
}

#[test]
fn an_idle_scheduler_answers_from_its_poller_with_what_each_tasklet_waits_on() {
    let (truth_tx, truth_rx) = mpsc::channel();
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let owner = thread::Builder::new()
        .name("idle-owner".into())
        .spawn(move || {
            let theirs = UnixStream::from(theirs);
            let ch = Channel::<u32>::new();
            let rx = ch.clone();
            let mut truth = Truth::default();
            let receiver = tasklets::Builder::new().name("receiver").spawn(move || rx.receive()).unwrap();
            truth.receiver = (receiver.id(), line!() - 1);
            let joiner =
                tasklets::Builder::new().name("joiner").spawn(move || receiver.join().is_ok()).unwrap();
            truth.joiner = (joiner.id(), line!() - 1);
            let sleeper = tasklets::spawn(|| tasklets::time::sleep(Duration::from_secs(3600)));
            truth.sleeper = (sleeper.id(), line!() - 1);
            let fd = theirs.as_raw_fd();
            let reader = tasklets::Builder::new()
                .name("reader")
                .spawn(move || {
                    let mut buf = [0u8; 1];
                    let _ = (&theirs).read(&mut buf); // EOF when the test drops its end
                    ch.close(); // the receiver and then the joiner end
                    sleeper.kill();
                })
                .unwrap();
            truth.reader = (reader.id(), line!() - 7, fd); // the line of `.spawn(`
            truth_tx.send(truth).unwrap();
            tasklets::run();
            joiner.join().unwrap()
        })
        .unwrap();
    let truth = truth_rx.recv().unwrap();
    let handle = handle_of("idle-owner");
    eventually("the owner to sleep in its poller", || handle.counters().idle);
    let published = fresh_snapshot(&handle);
    let tasklets = &published.snapshot.tasklets;
    let find = |id: u64| {
        tasklets.iter().find(|t| t.id == id).unwrap_or_else(|| panic!("tasklet {id} in {tasklets:?}"))
    };
    let main = &tasklets[0];
    assert!(main.is_main && main.spawned_at.is_none());
    assert_eq!(main.id, handle.main_tasklet());

    let receiver = find(truth.receiver.0);
    assert_eq!(receiver.name.as_deref(), Some("receiver"));
    assert_eq!(receiver.state, TaskletState::Blocked);
    assert!(matches!(receiver.waiting_on, Some(WaitingOn::Receive { .. })));
    let at = receiver.spawned_at.expect("a spawn location");
    assert_eq!((at.file(), at.line()), (file!(), truth.receiver.1));

    let joiner = find(truth.joiner.0);
    assert_eq!(joiner.waiting_on, Some(WaitingOn::Join { tasklet: truth.receiver.0 }));
    assert_eq!(joiner.spawned_at.unwrap().line(), truth.joiner.1);

    let sleeper = find(truth.sleeper.0);
    assert_eq!(sleeper.waiting_on, Some(WaitingOn::Sleep));
    let left = sleeper.deadline.expect("a deadline").saturating_duration_since(published.taken_at);
    assert!(left > Duration::from_secs(3000) && left <= Duration::from_secs(3600), "{left:?}");
    assert_eq!(sleeper.spawned_at.unwrap().line(), truth.sleeper.1);

    let reader = find(truth.reader.0);
    assert_eq!(reader.waiting_on, Some(WaitingOn::Io { fd: truth.reader.2, write: false }));
    assert_eq!(reader.spawned_at.unwrap().line(), truth.reader.1);

    let stats = published.snapshot.stats;
    assert_eq!((stats.alive, stats.parked_on_io, stats.timers), (5, 1, 1));
    assert!(published.thread_cpu.is_some());

    ours.flush_and_close();
    assert!(owner.join().unwrap(), "the joiner saw the receiver end");
    eventually("the scheduler to leave the registry", || !handle.is_alive());
    assert!(!monitor::schedulers().contains(&handle));
}

trait Close {
    fn flush_and_close(&mut self);
}

impl Close for std::os::unix::net::UnixStream {
    fn flush_and_close(&mut self) {
        self.shutdown(std::net::Shutdown::Both).unwrap();
    }
}

#[test]
fn a_busy_scheduler_that_never_polls_answers_within_a_few_hundred_switches() {
    let stop = Arc::new(AtomicBool::new(false));
    let owner = {
        let stop = stop.clone();
        thread::Builder::new()
            .name("busy-owner".into())
            .spawn(move || {
                for name in ["ping", "pong"] {
                    let stop = stop.clone();
                    tasklets::Builder::new()
                        .name(name)
                        .spawn(move || {
                            while !stop.load(Ordering::Relaxed) {
                                tasklets::schedule();
                            }
                        })
                        .unwrap();
                }
                tasklets::run();
            })
            .unwrap()
    };
    let handle = handle_of("busy-owner");
    let published = fresh_snapshot(&handle);
    let names: Vec<_> =
        published.snapshot.tasklets.iter().map(|t| t.name.clone().unwrap_or_default()).collect();
    assert_eq!(names, ["main", "ping", "pong"]);
    assert_eq!(handle.counters().polls, 0, "it never polled: the switch-count check answered");
    let running = published.snapshot.tasklets.iter().filter(|t| t.state == TaskletState::Running).count();
    assert_eq!(running, 1);
    stop.store(true, Ordering::Relaxed);
    owner.join().unwrap();
}

#[test]
fn a_stalled_scheduler_is_seen_from_its_counters_and_keeps_its_last_snapshot() {
    let (id_tx, id_rx) = mpsc::channel();
    let owner = thread::Builder::new()
        .name("stalled-owner".into())
        .spawn(move || {
            let hog = tasklets::Builder::new()
                .name("hog")
                .spawn(|| {
                    tasklets::time::sleep(Duration::from_millis(300)); // idle: answers
                    thread::sleep(Duration::from_millis(1200)); // native code: stalled
                })
                .unwrap();
            id_tx.send(hog.id()).unwrap();
            tasklets::run();
            thread::sleep(Duration::from_millis(800)); // main outside the scheduler
        })
        .unwrap();
    let hog = id_rx.recv().unwrap();
    let handle = handle_of("stalled-owner");
    eventually("the owner to sleep in its poller", || handle.counters().idle);
    let before = fresh_snapshot(&handle);
    let mut watcher = Watcher::new(Duration::from_millis(100));
    let mut activity = Activity::Idle;
    eventually("a stall", || {
        activity = watcher.observe(&handle, Instant::now());
        matches!(activity, Activity::Stalled { .. })
    });
    let Activity::Stalled { tasklet, for_at_least } = activity else { unreachable!() };
    assert_eq!(tasklet, hog);
    assert!(for_at_least >= Duration::from_millis(100));
    // It cannot answer while stalled: the last snapshot stays, the request stays pending.
    let ticket = handle.request_snapshot();
    thread::sleep(Duration::from_millis(100));
    if !handle.is_answered(ticket) {
        assert_eq!(handle.latest_snapshot().unwrap().ticket, before.ticket);
        assert!(matches!(watcher.observe(&handle, Instant::now()), Activity::Stalled { .. }));
    }
    eventually("main to run its own code", || {
        matches!(watcher.observe(&handle, Instant::now()), Activity::MainBusy { .. })
    });
    owner.join().unwrap();
    assert!(!handle.is_alive());
    assert_eq!(watcher.observe(&handle, Instant::now()), Activity::Idle);
}

#[test]
fn deadlocks_and_stalls_are_kept_as_events() {
    let events = thread::spawn(|| {
        let ch = Channel::<u8>::new();
        assert!(ch.receive().is_err()); // the main tasklet deadlocks
        tasklets::set_stall_threshold(Some(Duration::from_millis(5)));
        // Holds the thread (in native code) until the sysmon has reported it, 10 s at most: its
        // thread may wait for a CPU on a loaded machine.
        let me = monitor::current().unwrap();
        let hog = tasklets::spawn(move || {
            let start = std::time::Instant::now();
            thread::sleep(Duration::from_millis(20));
            while !me.events().iter().any(|e| e.kind == EventKind::Stall)
                && start.elapsed() < Duration::from_secs(10)
            {
                thread::sleep(Duration::from_millis(5));
            }
        });
        let id = hog.id();
        tasklets::run();
        (monitor::current().unwrap().events(), id)
    });
    let (events, hog) = events.join().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].kind, EventKind::Deadlock);
    assert!(events[0].message.contains("deadlock"), "{}", events[0].message);
    assert_eq!((events[1].kind, events[1].tasklet, events[1].seq), (EventKind::Stall, Some(hog), 2));
}

#[test]
fn counters_count_switches_and_name_the_running_tasklet() {
    let here = monitor::current().unwrap();
    let before = here.counters().switches;
    let t = tasklets::spawn(|| {
        let me = tasklets::current().id();
        (me, monitor::current().unwrap().counters().running)
    });
    tasklets::run();
    let (me, running) = t.join().unwrap();
    assert_eq!(me, running);
    assert_eq!(here.counters().switches, before + 1);
    assert_eq!(here.counters().running, here.main_tasklet());
    assert_eq!(here.thread_id(), thread::current().id());
}
