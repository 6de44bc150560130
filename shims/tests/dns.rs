//! Name resolution in tasklets runs on the `unblock` pool: the scheduler keeps running.

use std::cell::Cell;
use std::net::ToSocketAddrs;
use std::rc::Rc;

mod common;
use common::install;

#[test]
fn getaddrinfo_from_100_tasklets_does_not_block_the_scheduler() {
    install();
    let in_flight = Rc::new(Cell::new(0usize));
    let most_in_flight = Rc::new(Cell::new(0usize));
    let pending = Rc::new(Cell::new(100usize));
    let ticks = Rc::new(Cell::new(0usize));
    let ticker = {
        let (pending, ticks) = (pending.clone(), ticks.clone());
        tasklets::spawn(move || {
            while pending.get() > 0 {
                ticks.set(ticks.get() + 1);
                tasklets::time::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let lookups: Vec<_> = (0..100)
        .map(|i| {
            let (in_flight, most_in_flight, pending) =
                (in_flight.clone(), most_in_flight.clone(), pending.clone());
            tasklets::spawn(move || {
                in_flight.set(in_flight.get() + 1);
                most_in_flight.set(most_in_flight.get().max(in_flight.get()));
                let addrs: Vec<_> = ("localhost", 8000 + i).to_socket_addrs().unwrap().collect();
                in_flight.set(in_flight.get() - 1);
                pending.set(pending.get() - 1);
                addrs
            })
        })
        .collect();
    for (i, lookup) in lookups.into_iter().enumerate() {
        let addrs = lookup.join().unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8000 + i as u16), "{addrs:?}");
    }
    ticker.join().unwrap();
    println!(
        "100 getaddrinfo(localhost): {} in flight at once, ticker ran {} times",
        most_in_flight.get(),
        ticks.get()
    );
    // Blocking the thread, each lookup would finish before the next tasklet starts its own.
    assert!(most_in_flight.get() > 1, "the lookups ran one after another on the scheduler's thread");
    assert!(ticks.get() >= 1);
}

#[test]
fn getnameinfo_in_a_tasklet_resolves_loopback() {
    install();
    let t = tasklets::spawn(|| {
        // SAFETY: all-zero sockaddr_in is valid; fields set below.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let mut host = [0 as libc::c_char; 256];
        // SAFETY: valid sockaddr and buffer sizes.
        let r = unsafe {
            libc::getnameinfo(
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                host.as_mut_ptr(),
                host.len() as libc::socklen_t,
                std::ptr::null_mut(),
                0,
                libc::NI_NUMERICHOST,
            )
        };
        // SAFETY: getnameinfo wrote a NUL-terminated string on success.
        (r, unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) }.to_string_lossy().into_owned())
    });
    assert_eq!(t.join().unwrap(), (0, "127.0.0.1".to_string()));
}

/// Killing a tasklet in a shimmed `getaddrinfo` used to block its thread until the lookup
/// ended (the job borrowed the caller's buffers). The job now owns copies, so the hook returns
/// at once (`EAI_SYSTEM`/`EINTR`), the kill is delivered, and the lookup finishes alone.
#[test]
fn kill_during_getaddrinfo_returns_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Barrier};
    use std::time::Duration;
    install();
    // Occupy every pool thread so the lookup's job waits in the queue until released.
    let barrier = Arc::new(Barrier::new(tasklets::MAX_THREADS + 1));
    let blockers: Vec<_> = (0..tasklets::MAX_THREADS)
        .map(|_| {
            let b = barrier.clone();
            tasklets::spawn(move || tasklets::unblock(move || b.wait().is_leader()))
        })
        .collect();
    let (go, wait_go) = mpsc::channel::<()>();
    let timed_out = Arc::new(AtomicBool::new(false));
    let releaser = {
        let (barrier, timed_out) = (barrier.clone(), timed_out.clone());
        std::thread::spawn(move || {
            if wait_go.recv_timeout(Duration::from_secs(10)).is_err() {
                timed_out.store(true, Ordering::SeqCst);
            }
            barrier.wait();
        })
    };
    tasklets::schedule();
    let lookup = tasklets::spawn(|| {
        let r = ("localhost", 80).to_socket_addrs();
        tasklets::schedule(); // the deferred kill is delivered here
        r.is_ok()
    });
    tasklets::schedule();
    assert!(lookup.is_blocked(), "the lookup waits for the pool");
    lookup.kill();
    assert!(!timed_out.load(Ordering::SeqCst), "kill() waited for the lookup's job");
    go.send(()).unwrap();
    assert!(lookup.join().unwrap_err().is_killed());
    releaser.join().unwrap();
    for b in blockers {
        b.join().unwrap();
    }
}
