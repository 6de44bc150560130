//! Introspection: snapshots, accounting, stall reports, the watchdog and deadlock reports.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tasklets::net::UdpSocket;
use tasklets::{Channel, TaskletState, WaitingOn};

mod common;
use common::ms;

fn busy(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn info_of(snap: &tasklets::Snapshot, name: &str) -> tasklets::TaskletInfo {
    snap.tasklets
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .cloned()
        .unwrap_or_else(|| panic!("{name}"))
}

#[test]
fn snapshot_names_what_each_tasklet_waits_on() {
    tasklets::set_accounting(true); // for "since last ran"
    let ch = Channel::<u8>::new();
    let (rx, tx) = (ch.clone(), Channel::<u8>::new());
    let tx2 = tx.clone();
    let b = |name: &str| tasklets::Builder::new().name(name);
    let mut alive = vec![
        b("receiver").spawn(move || rx.receive()).unwrap().into_any(),
        b("sender").spawn(move || tx2.send(1)).unwrap().into_any(),
        b("sleeper").spawn(|| tasklets::time::sleep(Duration::from_secs(3600))).unwrap().into_any(),
    ];
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    alive.push(b("reader").spawn(move || socket.recv(&mut [0; 8])).unwrap().into_any());
    let target = b("target").bind(|| ()).unwrap();
    let t2 = target.clone();
    alive.push(b("joiner").spawn(move || t2.join()).unwrap().into_any());
    b("runnable").bind(|| ()).unwrap().insert().unwrap();
    tasklets::schedule(); // everyone runs once and blocks; "runnable" finishes
    let snap = tasklets::snapshot();
    println!("{snap}");

    let main = &snap.tasklets[0];
    assert!(main.is_main);
    assert_eq!(main.state, TaskletState::Running);
    assert_eq!(info_of(&snap, "receiver").waiting_on, Some(WaitingOn::Receive { channel: channel_id(&ch) }));
    assert_eq!(info_of(&snap, "sender").waiting_on, Some(WaitingOn::Send { channel: channel_id(&tx) }));
    let sleeper = info_of(&snap, "sleeper");
    assert_eq!(sleeper.waiting_on, Some(WaitingOn::Sleep));
    assert!(sleeper.deadline.is_some_and(|d| d > Instant::now() + Duration::from_secs(3000)));
    assert_eq!(info_of(&snap, "reader").waiting_on, Some(WaitingOn::Io { fd, write: false }));
    assert_eq!(info_of(&snap, "joiner").waiting_on, Some(WaitingOn::Join { tasklet: target.id() }));
    let paused = info_of(&snap, "target");
    assert_eq!((paused.state, paused.waiting_on, paused.switches), (TaskletState::Paused, None, 0));
    assert_eq!(paused.since_last_ran, None, "never ran");
    for t in &snap.tasklets {
        if t.state == TaskletState::Blocked {
            assert!(t.switches >= 1 && t.since_last_ran.is_some());
        }
    }
    let table = snap.to_string();
    for needle in
        ["TASKLET", "STATE", "WAITING ON", "receiver", "receive on channel", "sleep (for", "join of tasklet"]
    {
        assert!(table.contains(needle), "table lacks {needle:?}:\n{table}");
    }
    assert!(snap.stats.alive >= 7 && snap.stats.parked_on_io >= 1 && snap.stats.timers >= 1);
    for t in alive {
        t.kill();
    }
    target.kill();
}

/// The channel id as the snapshot reports it (from the channel's `Debug`).
fn channel_id<T>(ch: &Channel<T>) -> u64 {
    let debug = format!("{ch:?}");
    let start = debug.find("id: ").unwrap() + 4;
    debug[start..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn accounting_counts_switches_and_cpu_time_and_can_be_turned_off() {
    assert!(!tasklets::snapshot().accounting, "off by default");
    tasklets::set_accounting(true);
    let worker = tasklets::Builder::new()
        .name("worker")
        .spawn(|| {
            for _ in 0..5 {
                busy(ms(4));
                tasklets::schedule();
            }
        })
        .unwrap();
    tasklets::Builder::new()
        .name("idler")
        .spawn(|| {
            for _ in 0..5 {
                tasklets::schedule();
            }
        })
        .unwrap();
    for _ in 0..3 {
        tasklets::schedule();
    }
    let snap = tasklets::snapshot();
    let w = info_of(&snap, "worker");
    assert!(w.switches >= 3, "{w:?}");
    assert!(w.cpu_time >= ms(10), "ran ~12 ms: {w:?}");
    assert!(info_of(&snap, "idler").cpu_time < w.cpu_time);
    assert!(snap.stats.switches >= 6);

    assert!(snap.accounting);
    tasklets::set_accounting(false);
    tasklets::run();
    assert!(!worker.is_alive());
    let snap = tasklets::snapshot();
    assert!(!snap.accounting);
    assert!(snap.to_string().contains("CPU accounting off"), "{snap}");
}

#[test]
fn time_waiting_in_the_poller_is_charged_to_nobody() {
    tasklets::set_accounting(true);
    let sleeper = tasklets::Builder::new().name("sleeper").spawn(|| tasklets::time::sleep(ms(30))).unwrap();
    let ch = Channel::<()>::new();
    let rx = ch.clone();
    tasklets::Builder::new().name("waiter").spawn(move || rx.receive()).unwrap();
    tasklets::schedule();
    let before = info_of(&tasklets::snapshot(), "waiter").cpu_time;
    sleeper.join().unwrap(); // main waits ~30 ms in the poller
    let snap = tasklets::snapshot();
    assert_eq!(info_of(&snap, "waiter").cpu_time, before, "a blocked tasklet gains no CPU time");
    assert!(
        snap.tasklets[0].cpu_time < ms(25),
        "main did not run while the thread slept: {:?}",
        snap.tasklets[0]
    );
    ch.close();
    tasklets::run();
}

static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOGGED.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

fn capture_logs() {
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::LevelFilter::Warn);
}

fn logged(needle: &str) -> bool {
    LOGGED.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|l| l.contains(needle))
}

/// Computes for at least `min`, then until `needle` is logged (10 s at most): a stall that lasts
/// until the sysmon has reported it, however long its thread waits for a CPU.
fn busy_until_logged(needle: &str, min: Duration) {
    busy(min);
    let start = Instant::now();
    while !logged(needle) && start.elapsed() < Duration::from_secs(10) {
        std::hint::spin_loop();
    }
}

#[test]
fn a_tasklet_holding_the_thread_too_long_is_reported_by_name() {
    // Margins that hold on a loaded machine (it flaked with a polite tasklet busy 1 ms against
    // a 5 ms threshold): the polite tasklet gives up the CPU at once, the hog holds the thread
    // until the sysmon's report names it (its thread may wait for a CPU on a loaded machine).
    capture_logs();
    tasklets::set_stall_threshold(Some(ms(50)));
    tasklets::Builder::new()
        .name("hog-for-the-stall-test")
        .spawn(|| busy_until_logged("'hog-for-the-stall-test' held the thread for", ms(150)))
        .unwrap();
    tasklets::Builder::new().name("polite-for-the-stall-test").spawn(|| ()).unwrap();
    tasklets::run();
    tasklets::set_stall_threshold(Some(tasklets::DEFAULT_STALL_THRESHOLD));
    assert!(logged("'hog-for-the-stall-test' held the thread for"), "{:?}", LOGGED.lock().unwrap());
    assert!(!logged("polite-for-the-stall-test"));
}

/// Stall reports needed per-tasklet CPU accounting (a clock read per switch), which issue 14
/// turned off by default: the built-in sysmon now reports a stall from the switch counter,
/// with the defaults (accounting off, 100 ms threshold), while the tasklet still holds the
/// thread.
#[test]
fn a_stall_is_reported_while_it_happens_with_accounting_off_by_default() {
    capture_logs();
    let (seen_while_holding, hog, events) = std::thread::spawn(|| {
        assert!(!tasklets::snapshot().accounting, "accounting is off by default");
        let hog = tasklets::Builder::new()
            .name("hog-with-the-defaults")
            .spawn(|| {
                // Holds the thread until the report names it (10 s at most).
                let start = Instant::now();
                while !logged("'hog-with-the-defaults' held the thread for") {
                    if start.elapsed() > Duration::from_secs(10) {
                        return false;
                    }
                    std::hint::spin_loop();
                }
                true
            })
            .unwrap();
        tasklets::run();
        let events = tasklets::monitor::current().unwrap().events();
        let id = hog.id();
        (hog.join().unwrap(), id, events)
    })
    .join()
    .unwrap();
    assert!(
        seen_while_holding,
        "no stall report while the hog held the thread: {:?}",
        LOGGED.lock().unwrap()
    );
    let event = events.iter().find(|e| e.tasklet == Some(hog)).expect("the stall is kept as an event");
    assert_eq!(event.kind, tasklets::monitor::EventKind::Stall);
    assert!(event.message.contains("(stall threshold 100ms)"), "{}", event.message);
}

#[test]
fn watchdog_pauses_the_tasklet_that_overran_and_run_continues_the_rest() {
    let order = common::Log::new();
    let (o1, o2) = (order.clone(), order.clone());
    let hog = tasklets::Builder::new()
        .name("hog")
        .spawn(move || {
            o1.push("hog start");
            busy(ms(10));
            tasklets::schedule();
            o1.push("hog end");
        })
        .unwrap();
    let nice = tasklets::spawn(move || {
        for i in 0..3 {
            o2.push(format!("nice {i}"));
            tasklets::schedule();
        }
    });
    let caught = tasklets::run_watchdog(ms(2)).expect("the hog overran its budget");
    assert_eq!(caught, hog);
    assert!(hog.is_paused() && hog.is_alive());
    assert_eq!(order.take(), ["hog start"]);
    // The others are still queued: run continues them; the hog waits to be inserted. (A budget
    // the nice slices cannot overrun: under qemu-user the first run of their code, translated
    // then, took over 2 ms.)
    assert_eq!(tasklets::run_watchdog(ms(1000)), None);
    assert!(!nice.is_alive());
    assert_eq!(order.take(), ["nice 0", "nice 1", "nice 2"]);
    hog.insert().unwrap();
    tasklets::run();
    assert_eq!(order.take(), ["hog end"]);
}

#[test]
fn watchdog_sees_a_lone_tasklet_that_schedules() {
    let hog = tasklets::spawn(|| loop {
        busy(ms(3));
        tasklets::schedule();
    });
    assert_eq!(tasklets::run_watchdog(ms(1)), Some(hog.clone().into_any()));
    hog.kill();
}

#[test]
fn deadlock_error_names_the_blocked_tasklets() {
    let ch = Channel::<u8>::new();
    let rx = ch.clone();
    tasklets::Builder::new().name("stuck-receiver").spawn(move || rx.receive()).unwrap();
    tasklets::run();
    let err = tasklets::schedule_remove().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("deadlock"), "{msg}");
    assert!(msg.contains("'stuck-receiver' waits on receive on channel"), "{msg}");
    ch.close();
    tasklets::run();
}

#[test]
fn channel_deadlock_is_logged_with_the_report() {
    capture_logs();
    let other = Channel::<u8>::new();
    let rx = other.clone();
    tasklets::Builder::new().name("blocked-elsewhere").spawn(move || rx.receive()).unwrap();
    tasklets::run();
    let ch = Channel::<u8>::new();
    assert_eq!(ch.receive(), Err(tasklets::RecvError::Deadlock));
    assert!(logged("'blocked-elsewhere' waits on receive on channel"), "{:?}", LOGGED.lock().unwrap());
    other.close();
    tasklets::run();
}

#[test]
fn dump_on_signal_refuses_fault_signals() {
    for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
        let err = tasklets::dump_on_signal(signal).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{signal}: {err}");
    }
}

/// A signal makes every scheduler thread print its tasklets, whether it sleeps in its poller
/// or is about to; the process goes on. Runs in a child: the handler is process-wide, and the
/// child reads its own stderr through a pipe to see both dumps before it lets the readers go,
/// so each thread must have been woken by the request itself.
#[test]
fn signal_dumps_every_scheduler_thread() {
    const NAME: &str = "signal_dumps_every_scheduler_thread";
    if common::in_child(NAME) {
        use std::io::{BufRead, Read, Write};
        use std::os::fd::FromRawFd;
        use tasklets::net::unix::UnixStream;
        tasklets::dump_on_signal(libc::SIGUSR1).unwrap();
        assert_eq!(tasklets::dump_on_signal(1 << 20).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        let (a1, mut a2) = UnixStream::pair().unwrap();
        let (b1, mut b2) = UnixStream::pair().unwrap();
        // Each thread announces from a second tasklet, which runs once its reader has parked.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = |name: &str, mut stream: UnixStream, ready: std::sync::mpsc::Sender<()>| {
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap(); // bounds a failure
            let reader = tasklets::Builder::new()
                .name(name)
                .spawn(move || {
                    let mut buf = [0; 1];
                    stream.read(&mut buf).unwrap()
                })
                .unwrap();
            tasklets::spawn(move || ready.send(()).unwrap());
            reader
        };
        // stderr goes to a pipe until both dumps were read from it.
        let mut pipe = [0; 2];
        // SAFETY: pipe/dup/dup2 on fds this process owns; fd 2 is restored below.
        let saved_stderr = unsafe {
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            let saved = libc::dup(2);
            assert_eq!(libc::dup2(pipe[1], 2), 2);
            libc::close(pipe[1]);
            saved
        };
        // SAFETY: the read end is ours alone.
        let captured = std::io::BufReader::new(unsafe { std::fs::File::from_raw_fd(pipe[0]) });
        let second_ready = ready_tx.clone();
        let second = std::thread::Builder::new()
            .name("second".into())
            .spawn(move || reader("second-reader", b1, second_ready).join().unwrap())
            .unwrap();
        let first = reader("first-reader", a1, ready_tx);
        let signaller = std::thread::spawn(move || {
            ready_rx.recv().unwrap();
            ready_rx.recv().unwrap();
            // SAFETY: raise(3) of a signal that has a handler.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
            let mut text = String::new();
            let mut lines = captured.lines();
            while text.matches("tasklet dump of thread").count() < 2 || !text.ends_with("\n\n") {
                text.push_str(&lines.next().expect("stderr is open").unwrap());
                text.push('\n');
            }
            // SAFETY: puts the real stderr back.
            unsafe { libc::dup2(saved_stderr, 2) };
            eprint!("{text}");
            a2.write_all(b"x").unwrap();
            b2.write_all(b"y").unwrap();
        });
        assert_eq!(first.join().unwrap(), 1);
        assert_eq!(second.join().unwrap(), 1);
        signaller.join().unwrap();
        return;
    }
    let out = common::run_child(NAME, &[]);
    common::assert_child_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stderr}");
    let second = stderr.find("tasklet dump of thread 'second'").expect("the second thread dumped");
    assert!(stderr[second..].contains("'second-reader'  blocked  read on fd"), "{stderr}");
    assert!(stderr.contains("'first-reader'  blocked  read on fd"), "the first thread dumped too:\n{stderr}");
}

/// The stall message printed "(stall threshold 99.999999ms)" for the 100 ms default (the
/// threshold round-trips through clock ticks).
#[test]
fn stall_threshold_of_100ms_prints_as_100ms_not_99_999999ms() {
    capture_logs();
    tasklets::set_stall_threshold(Some(tasklets::DEFAULT_STALL_THRESHOLD));
    tasklets::Builder::new()
        .name("hog-for-the-threshold-format")
        .spawn(|| busy_until_logged("'hog-for-the-threshold-format' held", ms(150)))
        .unwrap();
    tasklets::run();
    let logs = LOGGED.lock().unwrap().clone();
    let line =
        logs.iter().find(|l| l.contains("hog-for-the-threshold-format")).expect("the stall is reported");
    assert!(line.contains("(stall threshold 100ms)"), "{line}");
}

/// The child of [`stall_and_deadlock_reach_stderr_without_a_logger`]: no logger is installed.
#[test]
fn stall_and_deadlock_reach_stderr_without_a_logger_child() {
    if !common::in_child("stall_and_deadlock_reach_stderr_without_a_logger_child") {
        return;
    }
    tasklets::set_stall_threshold(Some(ms(20)));
    for _ in 0..2 {
        // Ten times the threshold: the sysmon thread may wait for a CPU on a loaded machine.
        tasklets::Builder::new().name("hog-without-a-logger").spawn(|| busy(ms(200))).unwrap();
        tasklets::run();
    }
    let ch = tasklets::Channel::<i32>::new();
    assert!(ch.receive().is_err());
}

/// Stall and deadlock reports went only through `log`: with no logger installed nothing was
/// printed. Now the first stall and each deadlock (rate-limited) reach stderr.
#[test]
fn stall_and_deadlock_reach_stderr_without_a_logger() {
    let out = common::run_child("stall_and_deadlock_reach_stderr_without_a_logger_child", &[]);
    common::assert_child_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("'hog-without-a-logger'").count(), 1, "the first stall only:\n{stderr}");
    assert!(stderr.contains("held the thread for"), "{stderr}");
    assert!(stderr.contains("tasklets: deadlock: the main tasklet"), "{stderr}");
}
