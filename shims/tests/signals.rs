//! `EINTR`: a signal handler that runs on the thread of a tasklet parked in a hooked call
//! interrupts the call as it interrupts the system call of a thread blocked in glibc, with
//! the kernel's rules (`SA_RESTART`, calls never restarted, timeouts, time left).
//!
//! Each test compares one closure run on a plain thread (where the hooks forward to the
//! kernel: glibc's behaviour) and in a tasklet. Every test uses its own signal (handlers are
//! process-wide), sent to the thread with `pthread_kill` after 100 ms.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::ptr;
use std::time::{Duration, Instant};

mod common;
use common::{
    glibc, install, ms, outcome, same_as_glibc, set_option, shimmed, tcp_pair_fds, timeval, Outcome,
};

extern "C" fn on_signal(_: libc::c_int) {}

/// Installs the empty handler for `sig`, with or without `SA_RESTART` (through the hooked
/// `sigaction`, after `install()`, so that it is wrapped).
fn handle(sig: libc::c_int, restart: bool) {
    install();
    // SAFETY: plain data; all zeroes is an empty mask and no flags.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as *const () as usize;
    action.sa_flags = if restart { libc::SA_RESTART } else { 0 };
    // SAFETY: a valid action; no old action asked for.
    assert_eq!(unsafe { libc::sigaction(sig, &action, ptr::null_mut()) }, 0);
}

/// Sends `sig` to the calling thread after `delay`, from another thread; join the handle
/// before the calling thread ends.
fn signal_me_after(sig: libc::c_int, delay: Duration) -> std::thread::JoinHandle<()> {
    // SAFETY: plain call.
    let me = unsafe { libc::pthread_self() };
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        // SAFETY: the target thread joins this one before it ends, so it is alive.
        assert_eq!(unsafe { libc::pthread_kill(me, sig) }, 0);
    })
}

/// Makes `call` with `sig` arriving after 100 ms; returns its outcome and how long it took.
fn interrupted(sig: libc::c_int, call: impl FnOnce() -> i64) -> (Outcome, Duration) {
    let signaller = signal_me_after(sig, ms(100));
    let start = Instant::now();
    let seen = outcome(call);
    let took = start.elapsed();
    signaller.join().unwrap();
    (seen, took)
}

#[test]
fn a_signal_without_sa_restart_interrupts_parked_socket_calls_with_eintr() {
    const SIG: libc::c_int = libc::SIGUSR1;
    handle(SIG, false);
    fn probe() -> Vec<Outcome> {
        let (client, _server) = tcp_pair_fds();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 8];
        let (recv, took) = interrupted(SIG, || {
            // SAFETY: a valid buffer.
            unsafe { libc::recv(client.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) as i64 }
        });
        assert!(took < Duration::from_secs(5), "recv was not interrupted: {took:?}");
        let (accept, _) = interrupted(SIG, || {
            // SAFETY: null address pointers are allowed.
            unsafe { libc::accept(listener.as_raw_fd(), ptr::null_mut(), ptr::null_mut()) as i64 }
        });
        let (read, _) = interrupted(SIG, || {
            // SAFETY: a valid buffer.
            unsafe { libc::read(client.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) as i64 }
        });
        vec![recv, accept, read]
    }
    assert_eq!(same_as_glibc(probe), [(-1, libc::EINTR); 3]);
}

#[test]
fn a_signal_with_sa_restart_lets_recv_go_on_but_interrupts_poll_select_and_sleeps() {
    const SIG: libc::c_int = libc::SIGUSR2;
    handle(SIG, true);
    fn probe() -> Vec<Outcome> {
        let (client, server) = tcp_pair_fds();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(ms(400));
            // SAFETY: a valid buffer.
            assert_eq!(unsafe { libc::send(server.as_raw_fd(), b"x".as_ptr().cast(), 1, 0) }, 1);
            server
        });
        let mut buf = [0u8; 8];
        // Restarted after the handler: returns the byte written at 400 ms.
        let (recv, took) = interrupted(SIG, || {
            // SAFETY: a valid buffer.
            unsafe { libc::recv(client.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) as i64 }
        });
        assert!(took >= ms(300), "{took:?}");
        let _server = writer.join().unwrap();
        let mut fds = [libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        // SAFETY: one valid pollfd.
        let (poll, _) = interrupted(SIG, || unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) as i64 });
        let (select, _) = interrupted(SIG, || {
            // SAFETY: plain data.
            let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
            // SAFETY: the fd is below FD_SETSIZE.
            unsafe { libc::FD_SET(client.as_raw_fd(), &mut set) };
            let mut timeout = libc::timeval { tv_sec: 10, tv_usec: 0 };
            let nfds = client.as_raw_fd() + 1;
            // SAFETY: valid set and timeout.
            unsafe { libc::select(nfds, &mut set, ptr::null_mut(), ptr::null_mut(), &mut timeout) as i64 }
        });
        let mut rem = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let (nanosleep, _) = interrupted(SIG, || {
            let req = libc::timespec { tv_sec: 10, tv_nsec: 0 };
            // SAFETY: valid timespecs.
            unsafe { libc::nanosleep(&req, &mut rem) as i64 }
        });
        assert!(rem.tv_sec >= 8 && rem.tv_sec < 10, "the time left: {}", rem.tv_sec);
        let (clock_nanosleep, _) = interrupted(SIG, || {
            let req = libc::timespec { tv_sec: 10, tv_nsec: 0 };
            // SAFETY: a valid timespec; returns the error number.
            let err = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &req, ptr::null_mut()) };
            -(err as i64)
        });
        // SAFETY: plain call.
        let (usleep, _) = interrupted(SIG, || unsafe { libc::usleep(10_000_000) as i64 });
        vec![recv, poll, select, nanosleep, (clock_nanosleep.0, 0), usleep]
    }
    let eintr = (-1, libc::EINTR);
    assert_eq!(same_as_glibc(probe), [(1, 0), eintr, eintr, eintr, (-(libc::EINTR as i64), 0), eintr]);
}

#[test]
fn a_socket_timeout_makes_even_an_sa_restart_signal_interrupt_recv() {
    let sig = libc::SIGRTMIN() + 1;
    handle(sig, true);
    fn probe() -> Vec<Outcome> {
        let sig = libc::SIGRTMIN() + 1;
        let (client, _server) = tcp_pair_fds();
        set_option(client.as_raw_fd(), libc::SO_RCVTIMEO, timeval(Duration::from_secs(10)));
        let mut buf = [0u8; 8];
        let (recv, took) = interrupted(sig, || {
            // SAFETY: a valid buffer.
            unsafe { libc::recv(client.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) as i64 }
        });
        assert!(took < Duration::from_secs(5), "{took:?}");
        vec![recv]
    }
    assert_eq!(same_as_glibc(probe), [(-1, libc::EINTR)]);
}

#[test]
fn sleep_returns_the_seconds_left_as_glibc_counts_them() {
    let sig = libc::SIGRTMIN() + 2;
    handle(sig, false);
    type SleepFn = unsafe extern "C" fn(libc::c_uint) -> libc::c_uint;
    // glibc's own `sleep` (the next definition after the hook), for the expectation.
    // SAFETY: a valid symbol name; RTLD_NEXT is a valid pseudo-handle.
    let glibc_sleep = unsafe { libc::dlsym(libc::RTLD_NEXT, c"sleep".as_ptr()) };
    assert!(!glibc_sleep.is_null());
    // SAFETY: the symbol is glibc's `sleep`, of this type.
    let glibc_sleep: SleepFn = unsafe { std::mem::transmute(glibc_sleep) };
    let expected = glibc(move || {
        let sig = libc::SIGRTMIN() + 2;
        // SAFETY: plain call.
        interrupted(sig, || unsafe { glibc_sleep(3) } as i64).0
    });
    let probe = || {
        let sig = libc::SIGRTMIN() + 2;
        // SAFETY: plain call (the hook).
        interrupted(sig, || unsafe { libc::sleep(3) } as i64).0
    };
    println!("glibc sleep(3) interrupted at 100 ms: {expected:?}");
    assert_eq!(glibc(probe), expected, "the hook on a plain thread");
    assert_eq!(shimmed(probe), expected, "the hook in a tasklet");
}

#[test]
fn a_send_interrupted_after_a_partial_write_returns_the_count() {
    let sig = libc::SIGRTMIN() + 3;
    handle(sig, false);
    fn probe() -> (i64, i32) {
        let sig = libc::SIGRTMIN() + 3;
        let (client, _server) = tcp_pair_fds();
        set_option(client.as_raw_fd(), libc::SO_SNDBUF, 64 << 10);
        let data = vec![1u8; 16 << 20];
        let ((sent, err), took) = interrupted(sig, || {
            // SAFETY: a valid buffer.
            unsafe {
                libc::send(client.as_raw_fd(), data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) as i64
            }
        });
        assert!(took < Duration::from_secs(5), "{took:?}");
        (sent, err)
    }
    let (sent, err) = glibc(probe);
    assert!(sent > 0 && sent < 16 << 20 && err == 0, "glibc: {sent} {err}");
    let (sent, err) = shimmed(probe);
    assert!(sent > 0 && sent < 16 << 20 && err == 0, "shims: {sent} {err}");
}

#[test]
fn a_signal_interrupts_every_parked_call_of_its_thread_and_no_other() {
    let sig = libc::SIGRTMIN() + 4;
    handle(sig, false);
    // Three tasklets parked in recv on this thread, one on another thread: the signal sent to
    // this thread interrupts the three; the other's recv goes on until its data arrives.
    let other = std::thread::spawn(|| {
        let (client, server) = tcp_pair_fds();
        let t = tasklets::spawn(move || {
            let mut buf = [0u8; 1];
            // SAFETY: a valid buffer.
            outcome(|| unsafe { libc::recv(client.as_raw_fd(), buf.as_mut_ptr().cast(), 1, 0) as i64 })
        });
        tasklets::spawn(move || {
            std::thread::sleep(ms(400));
            // SAFETY: a valid buffer.
            unsafe { libc::send(server.as_raw_fd(), b"y".as_ptr().cast(), 1, 0) };
            server
        });
        t.join().unwrap()
    });
    let seen = shimmed(move || {
        let sig = libc::SIGRTMIN() + 4;
        let pairs: Vec<_> = (0..3).map(|_| tcp_pair_fds()).collect();
        let readers: Vec<_> = pairs
            .iter()
            .map(|(client, _)| {
                let fd = client.as_raw_fd();
                tasklets::spawn(move || {
                    let mut buf = [0u8; 1];
                    // SAFETY: a valid buffer.
                    outcome(|| unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 1, 0) as i64 })
                })
            })
            .collect();
        let signaller = signal_me_after(sig, ms(100));
        let seen: Vec<Outcome> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        signaller.join().unwrap();
        drop(pairs);
        seen
    });
    assert_eq!(seen, [(-1, libc::EINTR); 3]);
    assert_eq!(other.join().unwrap(), (1, 0), "a tasklet of another thread was interrupted");
}
