//! Integration tests of `tasklets::io`: parking on raw fds, deadlines, kills (unwinding and
//! deferred), registrations on several threads, and fds that epoll refuses.
//!
//! Every `#[test]` runs on its own thread and therefore has its own scheduler. Pipes and
//! socket pairs only; timing bounds are loose sanity bounds, never speed assertions.

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklets::io::{is_cooperative, with_kills_deferred, Interest, Registration};
use tasklets::JoinError;

mod common;
use common::{fd_count, in_child, ms, run_in_child};

/// A non-blocking socket pair.
fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// A non-blocking pipe (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn waits_on_a_pipe_until_the_writer_writes() {
    let (r, w) = pipe();
    let log = Rc::new(Cell::new(0));
    let seen = log.clone();
    let reader = tasklets::spawn(move || {
        // SAFETY: `r` outlives the registration (locals drop before captures).
        let registration = unsafe { Registration::new(r.as_raw_fd()) };
        let mut file = std::fs::File::from(r.try_clone().unwrap());
        let mut buf = [0; 8];
        let n = registration.io(Interest::Readable, None, || file.read(&mut buf)).unwrap();
        seen.set(1);
        buf[..n].to_vec()
    });
    tasklets::spawn(move || {
        tasklets::schedule(); // the reader parks first
        assert_eq!(log.get(), 0, "the reader must not return before anything was written");
        std::fs::File::from(w).write_all(b"pipe").unwrap();
    });
    assert_eq!(reader.join().unwrap(), b"pipe");
}

#[test]
fn a_deadline_ends_the_wait_with_timed_out() {
    let (a, _b) = pair();
    let t = tasklets::spawn(move || {
        // SAFETY: `a` outlives the registration.
        let registration = unsafe { Registration::new(a.as_raw_fd()) };
        let start = Instant::now();
        let err = registration.wait(Interest::Readable, Some(start + ms(30))).unwrap_err();
        (err.kind(), start.elapsed())
    });
    let (kind, waited) = t.join().unwrap();
    assert_eq!(kind, ErrorKind::TimedOut);
    assert!(waited >= ms(30) && waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn a_writable_socket_wakes_at_once() {
    let (a, _b) = pair();
    // SAFETY: `a` outlives the registration.
    let registration = unsafe { Registration::new(a.as_raw_fd()) };
    // The main tasklet waits too (main idles in the poller for it).
    registration.wait(Interest::Writable, Some(Instant::now() + Duration::from_secs(5))).unwrap();
}

#[test]
fn killing_a_tasklet_parked_on_an_fd_unwinds_it_and_leaves_no_waiter() {
    let (a, _b) = pair();
    let a = Rc::new(a);
    let fd = a.as_raw_fd();
    let dropped = Rc::new(Cell::new(false));
    let flag = dropped.clone();
    let t = tasklets::spawn(move || {
        struct OnDrop(Rc<Cell<bool>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let _guard = OnDrop(flag);
        // SAFETY: `a` (kept alive by the test too) outlives the registration.
        let registration = unsafe { Registration::new(fd) };
        registration.wait(Interest::Readable, None).unwrap();
        unreachable!("nothing is ever written");
    });
    tasklets::schedule();
    assert_eq!(tasklets::snapshot().stats.parked_on_io, 1);
    t.kill();
    assert!(matches!(t.join(), Err(JoinError::Killed)));
    assert!(dropped.get());
    assert_eq!(tasklets::snapshot().stats.parked_on_io, 0);
    drop(a);
}

#[test]
fn a_deferred_kill_fails_the_wait_and_is_delivered_at_the_next_switch_point() {
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    let steps = Rc::new(Cell::new(0));
    let seen = steps.clone();
    let t = tasklets::spawn(move || {
        let _keep = &a;
        // SAFETY: `a` outlives the registration.
        let registration = unsafe { Registration::new(fd) };
        with_kills_deferred(|| {
            let err = registration.wait(Interest::Readable, None).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Other);
            seen.set(1);
            // The kill is still pending: a second wait fails at once instead of parking.
            let again = registration.wait(Interest::Readable, None).unwrap_err();
            assert_eq!(again.kind(), ErrorKind::Other);
            // So does a sleep, which returns early.
            let start = Instant::now();
            tasklets::time::sleep(Duration::from_secs(3600));
            assert!(start.elapsed() < Duration::from_secs(60));
            seen.set(2);
        });
        seen.set(3);
        tasklets::schedule(); // the first switch point outside the scope
        seen.set(4);
    });
    tasklets::schedule();
    t.kill();
    assert!(matches!(t.join(), Err(JoinError::Killed)));
    assert_eq!(steps.get(), 3);
}

#[test]
fn a_tasklet_that_returns_with_a_deferred_kill_pending_ends_killed() {
    let t = tasklets::spawn(|| {
        with_kills_deferred(|| tasklets::time::sleep(Duration::from_secs(3600)));
        42
    });
    tasklets::schedule();
    t.kill();
    assert!(matches!(t.join(), Err(JoinError::Killed)));
}

#[test]
fn deferral_scopes_nest() {
    let t = tasklets::spawn(|| {
        with_kills_deferred(|| {
            with_kills_deferred(|| tasklets::time::sleep(Duration::from_secs(3600)));
            // Still inside the outer scope: a yield goes ahead without unwinding.
            tasklets::schedule();
            "outer scope survived"
        })
    });
    tasklets::schedule();
    t.kill();
    // The tasklet returned before any switch point outside both scopes.
    assert!(matches!(t.join(), Err(JoinError::Killed)));
}

/// A tasklet on each of two new threads waits for `registration` to be readable; the handles
/// give the results.
fn wait_on_two_threads(
    registration: &Arc<Registration>,
) -> Vec<std::thread::JoinHandle<std::io::Result<()>>> {
    (0..2)
        .map(|_| {
            let registration = registration.clone();
            std::thread::spawn(move || {
                let t = tasklets::spawn(move || registration.wait(Interest::Readable, None));
                t.join().unwrap()
            })
        })
        .collect()
}

#[test]
fn tasklets_of_two_threads_wait_on_one_fd() {
    let (a, b) = pair();
    let a = Arc::new(a);
    // SAFETY: `a` outlives the registration: both threads are joined before `a` drops.
    let registration = Arc::new(unsafe { Registration::new(a.as_raw_fd()) });
    let waiters = wait_on_two_threads(&registration);
    std::thread::sleep(ms(50));
    (&b).write_all(b"x").unwrap();
    for waiter in waiters {
        waiter.join().unwrap().unwrap();
    }
    drop(registration);
    drop(a);
}

#[test]
fn a_regular_file_is_refused_with_the_pollers_error() {
    let file = std::fs::File::open("/proc/self/status").unwrap();
    // SAFETY: `file` outlives the registration.
    let registration = unsafe { Registration::new(file.as_raw_fd()) };
    let err =
        tasklets::spawn(move || registration.wait(Interest::Readable, None)).join().unwrap().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(1), "epoll refuses regular files with EPERM: {err}");
}

#[test]
fn is_cooperative_once_the_thread_has_a_scheduler() {
    std::thread::spawn(|| {
        assert!(!is_cooperative());
        // Outside the runtime, deferring kills just calls the closure.
        assert_eq!(with_kills_deferred(|| 7), 7);
        tasklets::spawn(|| assert!(is_cooperative())).join().unwrap();
        assert!(is_cooperative());
    })
    .join()
    .unwrap();
}

#[test]
fn registrations_leave_no_fd_behind() {
    if !in_child("registrations_leave_no_fd_behind") {
        return run_in_child("registrations_leave_no_fd_behind");
    }
    // Create the poller first so that it is not counted as a leak.
    let (a, b) = pair();
    // SAFETY: `a` outlives the registration.
    let warm = unsafe { Registration::new(a.as_raw_fd()) };
    (&b).write_all(b"x").unwrap();
    warm.wait(Interest::Readable, None).unwrap();
    drop(warm);
    let before = fd_count();
    for _ in 0..200 {
        let (a, b) = pair();
        let t = tasklets::spawn(move || {
            // SAFETY: `a` outlives the registration.
            let registration = unsafe { Registration::new(a.as_raw_fd()) };
            let mut buf = [0; 1];
            registration.io(Interest::Readable, None, || (&a).read(&mut buf)).unwrap()
        });
        tasklets::spawn(move || (&b).write_all(b"y").unwrap());
        assert_eq!(t.join().unwrap(), 1);
    }
    assert_eq!(fd_count(), before);
}

#[test]
fn two_registrations_of_one_fd_share_the_pollers_registration() {
    let (a, b) = pair();
    let fd = a.as_raw_fd();
    // SAFETY: `a` outlives both registrations (dropped before it, below).
    let first = Rc::new(unsafe { Registration::new(fd) });
    // SAFETY: as above.
    let second = Rc::new(unsafe { Registration::new(fd) });
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiters: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|registration| tasklets::spawn(move || registration.wait(Interest::Readable, Some(deadline))))
        .collect();
    let write_later = |b: UnixStream| {
        tasklets::spawn(move || {
            tasklets::time::sleep(ms(20));
            (&b).write_all(b"x").unwrap();
            b
        })
    };
    let writer = write_later(b);
    for waiter in waiters {
        waiter.join().unwrap().unwrap();
    }
    let b = writer.join().unwrap();
    // Dropping one leaves the fd registered for the other, which still wakes.
    drop(second);
    let mut buf = [0; 1];
    (&a).read_exact(&mut buf).unwrap();
    let writer = write_later(b);
    first.wait(Interest::Readable, Some(Instant::now() + Duration::from_secs(10))).unwrap();
    (&a).read_exact(&mut buf).unwrap();
    writer.join().unwrap();
    drop(first);
    drop(a);
}

#[test]
fn deregister_wakes_the_fds_waiters_on_every_thread_with_ebadf() {
    let (a, _b) = pair();
    // SAFETY: `a` outlives the registration's use: it is deregistered before `a` drops.
    let registration = Arc::new(unsafe { Registration::new(a.as_raw_fd()) });
    let waiters = wait_on_two_threads(&registration);
    std::thread::sleep(ms(50)); // both park
    registration.deregister(); // from a thread without a scheduler
    for waiter in waiters {
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
    }
    // Waiting through a deregistered registration fails at once too.
    let err =
        tasklets::spawn(move || registration.wait(Interest::Readable, None)).join().unwrap().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    drop(a);
}

extern "C" fn interrupt_on_signal(_: libc::c_int) {
    tasklets::io::interrupt();
}

#[test]
fn an_interrupt_from_a_signal_handler_ends_the_interruptible_waits_of_its_thread() {
    use tasklets::io::{sleep_interruptible, Interrupts};
    let sig = libc::SIGRTMIN() + 5;
    // SAFETY: plain data; all zeroes is an empty mask and no flags.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = interrupt_on_signal as *const () as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: a valid action.
    assert_eq!(unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) }, 0);
    let (a, _b) = pair();
    std::thread::spawn(move || {
        // SAFETY: plain call.
        let me = unsafe { libc::pthread_self() };
        let since = Interrupts::now();
        // SAFETY: `a` outlives the registration.
        let registration = Rc::new(unsafe { Registration::new(a.as_raw_fd()) });
        let waiter = {
            let registration = registration.clone();
            tasklets::spawn(move || registration.wait_interruptible(Interest::Readable, None, since))
        };
        let sleeper =
            tasklets::spawn(move || sleep_interruptible(Instant::now() + Duration::from_secs(3600), since));
        // Not interruptible: only the timer ends it.
        let plain = tasklets::spawn(|| tasklets::time::sleep(ms(300)));
        let signaller = std::thread::spawn(move || {
            std::thread::sleep(ms(100)); // the thread is idle in its poller by then
                                         // SAFETY: the target joins this thread before it ends.
            assert_eq!(unsafe { libc::pthread_kill(me, sig) }, 0);
        });
        let start = Instant::now();
        assert_eq!(waiter.join().unwrap().unwrap_err().kind(), ErrorKind::Interrupted);
        assert_eq!(sleeper.join().unwrap().unwrap_err().kind(), ErrorKind::Interrupted);
        assert!(start.elapsed() < Duration::from_secs(10));
        plain.join().unwrap();
        assert!(start.elapsed() >= ms(300), "a plain sleep was cut short");
        assert!(since.interrupted_since());
        // A wait whose snapshot is older fails at once; a fresh snapshot waits.
        assert_eq!(
            registration.wait_interruptible(Interest::Readable, None, since).unwrap_err().kind(),
            ErrorKind::Interrupted
        );
        let err = registration.wait_interruptible(
            Interest::Readable,
            Some(Instant::now() + ms(20)),
            Interrupts::now(),
        );
        assert_eq!(err.unwrap_err().kind(), ErrorKind::TimedOut);
        signaller.join().unwrap();
        drop(registration);
        drop(a);
    })
    .join()
    .unwrap();
}

#[test]
fn a_registration_of_the_highest_fd_number_allowed_works() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    let high = (limit.rlim_cur.min(1 << 30) - 1) as libc::c_int;
    let (a, b) = pair();
    // SAFETY: dup3 onto a number this test owns from here on (closed by the OwnedFd).
    let r = unsafe { libc::dup3(a.as_raw_fd(), high, libc::O_CLOEXEC) };
    if r < 0 {
        return; // the number is taken (another test's) or refused: nothing to check here
    }
    // SAFETY: the fd was just made and is owned by nothing else.
    let high = unsafe { OwnedFd::from_raw_fd(r) };
    // SAFETY: `high` outlives the registration.
    let registration = unsafe { Registration::new(high.as_raw_fd()) };
    let writer = tasklets::spawn(move || {
        tasklets::time::sleep(ms(10));
        (&b).write_all(b"h").unwrap();
        b
    });
    registration.wait(Interest::Readable, Some(Instant::now() + Duration::from_secs(10))).unwrap();
    writer.join().unwrap();
    drop(registration);
    drop(high);
    drop(a);
}
