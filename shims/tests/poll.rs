//! `poll` and `select` called in tasklets park the tasklet: one socket, several fds, pipes,
//! timeouts; `tasklets::io`'s own poller never goes through them.

use std::cell::Cell;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

mod common;
use common::{in_child, install, ms, run_in_child};

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> i32 {
    // SAFETY: a valid slice of pollfds.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) }
}

/// A tasklet that counts its turns while `running` is set: proof that the thread is free.
/// (It sleeps with the runtime's own `sleep`, which a kill unwinds: should an assertion fail,
/// the thread's teardown can kill it.)
fn ticker(running: Rc<Cell<bool>>) -> tasklets::Tasklet<usize> {
    tasklets::spawn(move || {
        let mut ticks = 0;
        while running.get() {
            tasklets::time::sleep(ms(2));
            ticks += 1;
        }
        ticks
    })
}

/// A socket pair whose other end a tasklet writes `x` to after 30 ms (with unmodified
/// `std::thread::sleep`), and a running ticker: the end to wait on, the ticker's switch and
/// handle, and the writer (which returns the other end, kept open).
#[allow(clippy::type_complexity)]
fn socket_written_later(
) -> (UnixStream, Rc<Cell<bool>>, tasklets::Tasklet<usize>, tasklets::Tasklet<UnixStream>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let running = Rc::new(Cell::new(true));
    let ticks = ticker(running.clone());
    let writer = tasklets::spawn(move || {
        std::thread::sleep(ms(30));
        b.write_all(b"x").unwrap();
        b
    });
    (a, running, ticks, writer)
}

#[test]
fn poll_on_one_socket_parks_until_it_is_readable() {
    install();
    let (a, running, ticks, writer) = socket_written_later();
    let mut fds = [libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    let start = Instant::now();
    assert_eq!(poll(&mut fds, 5000), 1);
    assert!(fds[0].revents & libc::POLLIN != 0);
    assert!(start.elapsed() >= ms(25));
    running.set(false);
    assert!(ticks.join().unwrap() >= 1, "the thread was blocked in poll");
    drop(writer.join().unwrap());
}

#[test]
fn poll_on_several_fds_and_a_pipe_parks_and_reports_the_ready_one() {
    install();
    let (a, _a_peer) = UnixStream::pair().unwrap();
    let (r, w) = pipe();
    let running = Rc::new(Cell::new(true));
    let ticks = ticker(running.clone());
    let writer = tasklets::spawn(move || {
        std::thread::sleep(ms(30));
        std::fs::File::from(w).write_all(b"p").unwrap();
    });
    let mut fds = [
        libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: -1, events: libc::POLLIN, revents: 0 },
    ];
    assert_eq!(poll(&mut fds, 5000), 1);
    assert_eq!((fds[0].revents, fds[1].revents & libc::POLLIN, fds[2].revents), (0, libc::POLLIN, 0));
    running.set(false);
    assert!(ticks.join().unwrap() >= 1, "the thread was blocked in poll");
    writer.join().unwrap();
}

#[test]
fn poll_times_out_with_zero_and_lets_others_run() {
    install();
    let (a, _b) = UnixStream::pair().unwrap();
    let (r, _w) = pipe();
    let running = Rc::new(Cell::new(true));
    let ticks = ticker(running.clone());
    for fds in [
        vec![libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN, revents: 0 }],
        vec![
            libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ],
        vec![], // poll(NULL, 0, 50) is a sleep
    ] {
        let mut fds = fds;
        let start = Instant::now();
        assert_eq!(poll(&mut fds, 50), 0);
        let waited = start.elapsed();
        assert!(waited >= ms(50) && waited < Duration::from_secs(10), "{waited:?}");
    }
    running.set(false);
    assert!(ticks.join().unwrap() >= 3, "the thread was blocked in poll");
}

#[test]
fn select_parks_until_ready_and_updates_the_timeout() {
    install();
    let (a, running, ticks, writer) = socket_written_later();
    let fd = a.as_raw_fd();
    // SAFETY: fd_set is plain data; FD_ZERO/FD_SET/FD_ISSET on a valid set with fd < FD_SETSIZE.
    let (r, ready, left) = unsafe {
        let mut set: libc::fd_set = std::mem::zeroed();
        libc::FD_ZERO(&mut set);
        libc::FD_SET(fd, &mut set);
        let mut tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
        let r = libc::select(fd + 1, &mut set, std::ptr::null_mut(), std::ptr::null_mut(), &mut tv);
        (r, libc::FD_ISSET(fd, &set), tv)
    };
    assert_eq!((r, ready), (1, true));
    assert!(left.tv_sec < 5, "select did not report the time left: {left:?}");
    // And a timeout: nothing more to read.
    let _b = writer.join().unwrap(); // kept open: a closed peer would make `a` readable (EOF)
    let mut buf = [0; 1];
    std::io::Read::read_exact(&mut &a, &mut buf).unwrap();
    let start = Instant::now();
    // SAFETY: as above.
    let r = unsafe {
        let mut set: libc::fd_set = std::mem::zeroed();
        libc::FD_SET(fd, &mut set);
        let mut tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
        let r = libc::select(fd + 1, &mut set, std::ptr::null_mut(), std::ptr::null_mut(), &mut tv);
        assert!(!libc::FD_ISSET(fd, &set), "select clears the sets on timeout");
        r
    };
    assert_eq!(r, 0);
    assert!(start.elapsed() >= ms(50));
    running.set(false);
    assert!(ticks.join().unwrap() >= 1, "the thread was blocked in select");
}

#[test]
fn tasklet_io_registrations_do_not_go_through_the_hooks() {
    // The runtime's own poller (epoll through rustix's raw system calls) must keep working
    // with every hook installed: a Registration wait on a pipe, while the hooks are on.
    install();
    let (r, w) = pipe();
    // SAFETY: F_SETFL on a fresh fd.
    assert_eq!(unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) }, 0);
    // SAFETY: `r` outlives the registration.
    let registration = unsafe { tasklets::io::Registration::new(r.as_raw_fd()) };
    let writer = tasklets::spawn(move || {
        std::thread::sleep(ms(10));
        std::fs::File::from(w).write_all(b"z").unwrap();
    });
    registration
        .wait(tasklets::io::Interest::Readable, Some(Instant::now() + Duration::from_secs(10)))
        .unwrap();
    writer.join().unwrap();
    drop(registration);
}

#[test]
fn a_socket_number_reused_behind_libcs_back_is_not_taken_for_a_socket() {
    const NAME: &str = "a_socket_number_reused_behind_libcs_back_is_not_taken_for_a_socket";
    if !in_child(NAME) {
        return run_in_child(NAME); // alone, so no other test takes the freed number
    }
    install();
    let t = tasklets::spawn(|| {
        let (a, b) = UnixStream::pair().unwrap();
        // The shims saw `a` made by socketpair: its number is classed as a socket.
        let fd = a.as_raw_fd();
        // Close it with a raw system call, which the close hook never sees, then let a pipe
        // take the lowest free number.
        std::mem::forget(a);
        // SAFETY: closing an fd this test owns (forgotten above).
        assert_eq!(unsafe { libc::syscall(libc::SYS_close, fd) }, 0);
        let (r, w) = pipe();
        assert_eq!(r.as_raw_fd(), fd, "the pipe did not get the freed number");
        let writer = tasklets::spawn(move || {
            std::thread::sleep(ms(10));
            std::fs::File::from(w).write_all(b"p").unwrap();
        });
        // poll parks on the pipe (through epoll, once it is found not to be a socket)...
        let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
        assert_eq!(poll(&mut fds, 5000), 1);
        // ...and read is the pipe's own read.
        let mut buf = [0; 1];
        std::io::Read::read_exact(&mut std::fs::File::from(r), &mut buf).unwrap();
        assert_eq!(&buf, b"p");
        writer.join().unwrap();
        drop(b);
    });
    t.join().unwrap();
}
