//! After `uninstall()` nothing changes: hooked calls block the thread again, including on
//! sockets the shims handled before. (Its own test binary: install state is process-wide.)

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

mod common;
use common::{install, ms};

#[test]
fn after_uninstall_nothing_changes() {
    install();
    assert!(tasklets_shims::is_installed());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();

    // While installed: a read parks and the other tasklets run.
    let ticks = Rc::new(Cell::new(0));
    let counter = ticks.clone();
    let ticker = tasklets::spawn(move || {
        for _ in 0..3 {
            counter.set(counter.get() + 1);
            tasklets::schedule();
        }
    });
    let writer = tasklets::spawn(move || {
        std::thread::sleep(ms(10));
        server.write_all(b"1").unwrap();
        server
    });
    let mut buf = [0; 1];
    client.read_exact(&mut buf).unwrap();
    let mut server = writer.join().unwrap();
    ticker.join().unwrap();
    assert_eq!(ticks.get(), 3);

    tasklets_shims::uninstall();
    assert!(!tasklets_shims::is_installed());
    // The same socket, in a tasklet: the read blocks the thread (the ticker cannot run) and
    // times out the kernel's way.
    let ticks = Rc::new(Cell::new(0));
    let seen = ticks.clone();
    let reader = tasklets::spawn(move || {
        client.set_read_timeout(Some(ms(50))).unwrap();
        let start = Instant::now();
        let err = client.read(&mut [0; 1]).unwrap_err();
        // SAFETY: F_GETFL on an open fd.
        let flags = unsafe { libc::fcntl(client.as_raw_fd(), libc::F_GETFL) };
        (err.kind(), start.elapsed(), flags & libc::O_NONBLOCK, seen.get(), client)
    });
    let counter = ticks.clone();
    let ticker = tasklets::spawn(move || counter.set(counter.get() + 1));
    // The reader runs first (spawn order) and blocks the whole thread in the kernel: the
    // ticker has not run when the read returns.
    let (kind, waited, nonblock, ticks_during_read, mut client) = reader.join().unwrap();
    ticker.join().unwrap();
    assert_eq!(ticks_during_read, 0, "the read parked instead of blocking the thread");
    assert_eq!(kind, ErrorKind::WouldBlock);
    assert!(waited >= ms(50));
    assert_eq!(nonblock, 0);

    // A sleep in a tasklet blocks the thread again.
    let order = Rc::new(Cell::new(0));
    let seen = order.clone();
    let sleeper = tasklets::spawn(move || {
        std::thread::sleep(ms(30));
        seen.set(seen.get() * 10 + 1);
    });
    let other = {
        let order = order.clone();
        tasklets::spawn(move || order.set(order.get() * 10 + 2))
    };
    sleeper.join().unwrap();
    other.join().unwrap();
    assert_eq!(order.get(), 12, "the sleeper must finish before the other tasklet even starts");

    // And the socket still works as a blocking socket.
    client.set_read_timeout(None).unwrap();
    server.write_all(b"2").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"2");
}
