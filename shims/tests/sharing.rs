//! One socket, one registration per poller, shared by every layer: a socket used through the
//! shims, through `tasklets::net` and through `tasklets::io::Registration` (in any order, at
//! once, on several threads) parks and wakes correctly, and every poller forgets it before it
//! is closed.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

mod common;
use common::{in_child, install, ms, run_in_child, shimmed};

/// A connected pair of std TCP streams on loopback.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// A tasklet that writes `bytes` to `peer` after `delay` (with the runtime's sleep) and hands
/// `peer` back.
fn write_later<W: Write + 'static>(
    mut peer: W,
    delay: Duration,
    bytes: &'static [u8],
) -> tasklets::Tasklet<W> {
    tasklets::spawn(move || {
        tasklets::time::sleep(delay);
        peer.write_all(bytes).unwrap();
        peer
    })
}

/// A tasklet that counts its turns while `running` is set: proof that the thread is free.
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

#[test]
fn a_std_socket_parked_through_the_shims_converts_to_tasklets_net() {
    shimmed(|| {
        let (mut client, server) = tcp_pair();
        let writer = write_later(server, ms(10), b"1");
        let mut buf = [0; 1];
        client.read_exact(&mut buf).unwrap(); // parks in the hooked recv: registered
        let server = writer.join().unwrap();
        let client = tasklets::net::TcpStream::from(client);
        let writer = write_later(server, ms(10), b"2");
        (&client).read_exact(&mut buf).unwrap(); // parks through tasklets::net's Source
        assert_eq!(&buf, b"2");
        let server = writer.join().unwrap();
        // And back to std, parking through the shims again.
        let mut client = std::net::TcpStream::from(client);
        let writer = write_later(server, ms(10), b"3");
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"3");
        writer.join().unwrap();
    });
}

#[test]
fn libc_poll_on_a_tasklets_net_socket_parks_only_the_tasklet() {
    shimmed(|| {
        let listener = tasklets::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = tasklets::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let writer = write_later(server, ms(10), b"1");
        let mut buf = [0; 1];
        (&client).read_exact(&mut buf).unwrap(); // parks through the Source: registered
        let server = writer.join().unwrap();
        let running = Rc::new(Cell::new(true));
        let ticks = ticker(running.clone());
        let writer = write_later(server, ms(100), b"2");
        let mut fds = [libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        let start = Instant::now();
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, 5000) };
        let took = start.elapsed();
        running.set(false);
        assert_eq!((r, fds[0].revents & libc::POLLIN), (1, libc::POLLIN), "after {took:?}");
        assert!(ticks.join().unwrap() >= 5, "the thread was blocked in poll for {took:?}");
        writer.join().unwrap();
    });
}

#[test]
fn a_socket_used_through_shims_net_and_registrations_at_once() {
    shimmed(|| {
        let (client, server) = tcp_pair();
        let fd = client.as_raw_fd();
        // SAFETY: `client` outlives both registrations (dropped at the end of this closure).
        let first = Rc::new(unsafe { tasklets::io::Registration::new(fd) });
        // SAFETY: as above.
        let second = Rc::new(unsafe { tasklets::io::Registration::new(fd) });
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiters: Vec<_> = [first.clone(), second.clone()]
            .into_iter()
            .map(|registration| {
                tasklets::spawn(move || registration.wait(tasklets::io::Interest::Readable, Some(deadline)))
            })
            .collect();
        // A hooked poll on the same socket, at the same time.
        let poller = tasklets::spawn(move || {
            let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) }
        });
        let writer = write_later(server, ms(20), b"x");
        for waiter in waiters {
            waiter.join().unwrap().unwrap();
        }
        assert_eq!(poller.join().unwrap(), 1);
        // One registration goes; the other still wakes.
        drop(second);
        let mut client = client;
        let mut buf = [0; 1];
        client.read_exact(&mut buf).unwrap();
        let server = writer.join().unwrap();
        let writer = write_later(server, ms(20), b"y");
        first.wait(tasklets::io::Interest::Readable, Some(Instant::now() + Duration::from_secs(10))).unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"y");
        drop(first);
        writer.join().unwrap();
    });
}

/// The fds registered in every epoll instance of this process (from `/proc/self/fdinfo`).
fn fds_in_pollers() -> Vec<i32> {
    let mut registered = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap() {
        let Ok(info) = std::fs::read_to_string(entry.unwrap().path()) else { continue };
        for line in info.lines() {
            if let Some(rest) = line.strip_prefix("tfd:") {
                registered.push(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
        }
    }
    registered
}

#[test]
fn every_poller_forgets_a_shared_socket_before_it_is_closed() {
    const NAME: &str = "every_poller_forgets_a_shared_socket_before_it_is_closed";
    if !in_child(NAME) {
        return run_in_child(NAME); // alone: other tests' sockets would show up in the pollers
    }
    install();
    let (client, mut server) = tcp_pair();
    let fd = client.as_raw_fd();
    let client = std::sync::Arc::new(client);
    // Three threads park on it: through the shims, through a Registration, through poll.
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || {
                let t = tasklets::spawn(move || match i {
                    0 => (&*client).read(&mut [0; 1]).map(|_| ()).unwrap(),
                    1 => {
                        // SAFETY: `client` outlives the registration.
                        let registration = unsafe { tasklets::io::Registration::new(client.as_raw_fd()) };
                        registration.wait(tasklets::io::Interest::Readable, None).unwrap();
                    }
                    _ => {
                        let mut fds =
                            [libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
                        // SAFETY: one valid pollfd.
                        assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) }, 1);
                    }
                });
                t.join().unwrap();
                // The thread (and its scheduler) stays alive while the socket is closed.
                std::thread::sleep(ms(300));
            })
        })
        .collect();
    std::thread::sleep(ms(100));
    assert!(fds_in_pollers().iter().filter(|&&tfd| tfd == fd).count() >= 3, "{:?}", fds_in_pollers());
    server.write_all(b"ab").unwrap();
    std::thread::sleep(ms(100));
    // The last user is the std socket: its close (through the close hook) deletes every
    // registration while the number still names the socket.
    let client = std::sync::Arc::try_unwrap(client).unwrap_or_else(|_| panic!("still shared"));
    drop(client);
    assert!(!fds_in_pollers().contains(&fd), "fd {fd} still registered: {:?}", fds_in_pollers());
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn closing_a_socket_under_a_parked_hooked_call_wakes_it_with_ebadf_and_leaks_nothing() {
    const NAME: &str = "closing_a_socket_under_a_parked_hooked_call_wakes_it_with_ebadf_and_leaks_nothing";
    if !in_child(NAME) {
        return run_in_child(NAME); // alone: the pollers are inspected
    }
    shimmed(|| {
        let (client, server) = tcp_pair();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(client);
        let reader = tasklets::spawn(move || {
            let mut buf = [0u8; 1];
            // SAFETY: a valid buffer; `fd` is open until the closer runs.
            let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 1, 0) };
            (r, common::errno())
        });
        tasklets::schedule(); // the reader parks: the socket is registered
        assert!(fds_in_pollers().contains(&fd));
        // Another tasklet closes it under the reader's feet.
        // SAFETY: the fd was given up by `into_raw_fd` above and is closed once.
        assert_eq!(unsafe { libc::close(fd) }, 0);
        assert!(!fds_in_pollers().contains(&fd), "the registration outlived the close");
        assert_eq!(reader.join().unwrap(), (-1, libc::EBADF));
        drop(server);
    });
}

#[test]
fn a_socket_number_closed_behind_libcs_back_and_reused_by_tasklets_net_registers_afresh() {
    const NAME: &str = "a_socket_number_closed_behind_libcs_back_and_reused_by_tasklets_net_registers_afresh";
    if !in_child(NAME) {
        return run_in_child(NAME); // alone, so no other test takes the freed number
    }
    shimmed(|| {
        let (mut client, server) = tcp_pair();
        let writer = write_later(server, ms(5), b"1");
        client.read_exact(&mut [0; 1]).unwrap(); // the shims register the number
        let _server = writer.join().unwrap();
        let listener = tasklets::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(client);
        // Closed with a raw system call: neither the shims nor the runtime hear of it.
        // SAFETY: closing an fd this test owns.
        assert_eq!(unsafe { libc::syscall(libc::SYS_close, fd) }, 0);
        // The next socket takes the freed number.
        let client = tasklets::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!([client.as_raw_fd(), server.as_raw_fd()].contains(&fd), "the number was not reused");
        let (reader, peer) = if client.as_raw_fd() == fd { (client, server) } else { (server, client) };
        let writer = write_later(peer, ms(10), b"2");
        let mut buf = [0; 1];
        (&reader).read_exact(&mut buf).unwrap(); // parks on a fresh registration
        assert_eq!(&buf, b"2");
        writer.join().unwrap();
    });
}
