//! `fork()` used to break the parent when the child exited normally: the child's scheduler
//! teardown sent `EPOLL_CTL_DEL` for the parent's sockets (and the notifier) on the epoll
//! instance they share, so the parent's parked readers never woke, and a child that waited in
//! the poller took the parent's events. A child now never touches the inherited poller: its
//! waits only sleep, its deletes are skipped, its I/O waits fail with an error naming fork, and
//! a thread it starts gets a poller of its own.
//!
//! Each scenario forks inside a child test process (this binary again, one test, one thread),
//! so the other tests' threads are not copied.

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use tasklets::net::unix::UnixStream;

mod common;

const CHILD: &str = "fork_child_that_exits_normally_leaves_the_parents_readers_working_child";

#[test]
fn fork_child_that_exits_normally_leaves_the_parents_readers_working_child() {
    if !common::in_child(CHILD) {
        return;
    }
    // The parent's reader parks in the poller (its fd registered) before the fork.
    let (mut reader, mut writer) = UnixStream::pair().unwrap();
    reader.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let parked = tasklets::spawn(move || {
        let mut buf = [0u8; 4];
        reader.read_exact(&mut buf).map(|()| buf)
    });
    tasklets::schedule();
    assert!(parked.is_blocked());

    // SAFETY: this process runs one thread (the child test); the child below only uses the
    // runtime and std, then exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // The child: its scheduler waits (a sleep) without taking the parent's events...
        tasklets::time::sleep(Duration::from_millis(50));
        // ...an I/O wait on an inherited socket fails, saying why, instead of registering it
        // with the parent's epoll instance...
        let (mut a, _b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(1))).unwrap(); // bounds the test without the fix
        let err = a.read(&mut [0u8; 1]).unwrap_err();
        let code = if err.to_string().contains("fork") { 0 } else { 3 };
        // ...a new thread has a poller of its own, so I/O works there...
        let fresh = std::thread::spawn(|| {
            let (mut a, mut b) = UnixStream::pair().unwrap();
            let t = tasklets::spawn(move || {
                let mut buf = [0u8; 2];
                a.read_exact(&mut buf).map(|()| buf)
            });
            tasklets::schedule();
            b.write_all(b"ok").unwrap();
            t.join().unwrap().unwrap()
        })
        .join()
        .unwrap();
        let code = if &fresh == b"ok" { code } else { 4 };
        // ...and exits normally: the thread's teardown runs and must leave the parent alone.
        std::process::exit(7 + code);
    }
    let mut status = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // SAFETY: waits for our own child, without blocking.
    while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
        if std::time::Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(libc::WIFEXITED(status), "the child did not exit normally: status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 7, "7: ok; 10: no fork error; 11: no I/O on a new thread");

    // The parent's reader still wakes on its data.
    writer.write_all(b"ping").unwrap();
    match parked.join().unwrap() {
        Ok(buf) => assert_eq!(&buf, b"ping"),
        Err(err) if err.kind() == ErrorKind::WouldBlock || err.kind() == ErrorKind::TimedOut => {
            panic!("the parent's reader never woke after the child exited")
        }
        Err(err) => panic!("the parent's read failed: {err}"),
    }
    // And its poller still works for new registrations.
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let t = tasklets::spawn(move || {
        let mut buf = [0u8; 1];
        a.read_exact(&mut buf).map(|()| buf[0])
    });
    tasklets::schedule();
    b.write_all(&[9]).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), 9);
}

#[test]
fn fork_child_that_exits_normally_leaves_the_parents_readers_working() {
    common::run_in_child(CHILD);
}

const UNDER_SYSMON: &str = "fork_while_the_sysmon_holds_the_scheduler_registry_leaves_the_child_usable_child";

/// A child forked while another thread held the registry of schedulers (the sysmon samples it
/// every few milliseconds) inherited the lock held by a thread that does not exist there: the
/// child's first new scheduler waited for it forever in `monitor::register`. Here a thread
/// takes that lock in a loop (listing the schedulers, as a console does) while main forks
/// again and again; each child starts a scheduler on a new thread, lists the schedulers it
/// sees (its own two, none of the parent's other threads) and exits.
#[test]
fn fork_while_the_sysmon_holds_the_scheduler_registry_leaves_the_child_usable_child() {
    if !common::in_child(UNDER_SYSMON) {
        return;
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const FORKS: usize = 100;
    // The sysmon at its fastest period, on a scheduler of main's own.
    tasklets::set_stall_threshold(Some(Duration::from_millis(1)));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let lister = std::thread::spawn({
        let stop = stop.clone();
        move || {
            tasklets::spawn(|| ()).join().unwrap(); // this thread has a scheduler too
            ready_tx.send(()).unwrap();
            let mut listed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                listed += tasklets::monitor::schedulers().len() as u64;
            }
            listed
        }
    });
    ready_rx.recv().unwrap();
    for round in 0..FORKS {
        // SAFETY: the child only starts a thread, uses the runtime and std, and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let seen = std::thread::spawn(|| {
                assert_eq!(tasklets::spawn(|| 5).join().unwrap(), 5);
                tasklets::monitor::schedulers().len()
            })
            .join()
            .unwrap_or(0);
            // SAFETY: ends the child at once, without the parent's atexit handlers.
            unsafe { libc::_exit(if seen == 2 { 0 } else { 10 + seen.min(100) as i32 }) };
        }
        let mut status = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // SAFETY: waits for our own child, without blocking.
        while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
            if std::time::Instant::now() > deadline {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                stop.store(true, Ordering::Relaxed);
                panic!("fork {round}: the child did not exit within 10 s (a lock held at the fork)");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(libc::WIFEXITED(status), "fork {round}: status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "fork {round}: the child saw {} schedulers, not its own 2",
            libc::WEXITSTATUS(status) - 10
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(lister.join().unwrap() > 0);
    println!("{FORKS} forks under a busy registry: every child exited");
}

#[test]
fn fork_while_the_sysmon_holds_the_scheduler_registry_leaves_the_child_usable() {
    common::run_in_child(UNDER_SYSMON);
}
