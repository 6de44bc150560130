//! Unmodified `std::net` code in tasklets with the shims installed: many connections on one
//! thread, the user-visible semantics of non-blocking mode, timeouts and `F_GETFL`, kills,
//! sockets that leave the tasklets, and `tasklets::net` alongside.
//!
//! Every `#[test]` runs on its own thread (its own scheduler). Loopback only; time bounds are
//! loose sanity bounds that sequential execution could never meet, never speed assertions.

use std::cell::Cell;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklets::JoinError;

mod common;
use common::{fd_count, in_child, install, ms, run_in_child};

/// `fcntl(F_GETFL)` of a socket has `O_NONBLOCK`.
fn has_o_nonblock(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFL on an open fd touches no memory.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0);
    flags & libc::O_NONBLOCK != 0
}

/// A connected pair of std TCP streams on loopback.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// A thread-style echo handler: plain blocking std code.
fn echo(mut conn: TcpStream) -> io::Result<()> {
    let mut buf = [0; 4096];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

/// A thread-style client: sleeps, connects, sends `rounds` messages and checks the echo.
fn client(addr: std::net::SocketAddr, id: u64, rounds: usize) -> io::Result<u64> {
    std::thread::sleep(ms(id % 100 * 2)); // connects spread over 200 ms: std's backlog is 128
    let mut conn = TcpStream::connect(addr)?;
    std::thread::sleep(ms(50)); // think time: the connections overlap
    let mut sum = 0u64;
    for round in 0..rounds {
        let msg: Vec<u8> =
            (0..64 + (id as usize * 7 + round) % 900).map(|i| (i as u64 * 31 + id) as u8).collect();
        conn.write_all(&msg)?;
        let mut back = vec![0; msg.len()];
        conn.read_exact(&mut back)?;
        assert_eq!(back, msg, "client {id} round {round}");
        sum += back.iter().map(|&b| u64::from(b)).sum::<u64>();
        if round % 3 == 0 {
            std::thread::sleep(ms(1));
        }
    }
    conn.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)?;
    assert!(rest.is_empty());
    Ok(sum)
}

fn expected_sum(id: u64, rounds: usize) -> u64 {
    (0..rounds)
        .map(|round| {
            (0..64 + (id as usize * 7 + round) % 900)
                .map(|i| u64::from((i as u64 * 31 + id) as u8))
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn unmodified_std_net_echo_runs_500_clients_concurrently_on_one_thread() {
    install();
    const CLIENTS: u64 = 500;
    const ROUNDS: usize = 10;
    let thread = std::thread::current().id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Rc::new(Cell::new(0usize));
    let most_open = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    let server = {
        let (open, most_open) = (open.clone(), most_open.clone());
        tasklets::spawn(move || {
            let mut handlers = Vec::new();
            for _ in 0..CLIENTS {
                let (conn, _) = listener.accept().unwrap();
                let (open, most_open) = (open.clone(), most_open.clone());
                handlers.push(tasklets::spawn(move || {
                    open.set(open.get() + 1);
                    most_open.set(most_open.get().max(open.get()));
                    echo(conn).unwrap();
                    open.set(open.get() - 1);
                    assert_eq!(std::thread::current().id(), thread);
                }));
            }
            for handler in handlers {
                handler.join().unwrap();
            }
        })
    };
    let clients: Vec<_> =
        (0..CLIENTS).map(|id| tasklets::spawn(move || client(addr, id, ROUNDS).unwrap())).collect();
    for (id, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().unwrap(), expected_sum(id as u64, ROUNDS), "checksum of client {id}");
    }
    server.join().unwrap();
    let took = start.elapsed();
    println!(
        "500 std::net echo clients x {ROUNDS} rounds on one thread: {took:?}, {} open at once",
        most_open.get()
    );
    assert!(most_open.get() > 1, "the connections never overlapped");
    // Each client sleeps 50 ms and more; one after another that is > 25 s.
    assert!(took < Duration::from_secs(12), "{took:?}");
    assert!(most_open.get() >= 20, "too little overlap: {}", most_open.get());
}

#[test]
fn tasklet_net_still_works_with_the_shims_installed() {
    install();
    let listener = tasklets::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tasklets::spawn(move || {
        for _ in 0..20 {
            let (mut conn, _) = listener.accept().unwrap();
            tasklets::spawn(move || {
                let mut buf = [0; 64];
                loop {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    conn.write_all(&buf[..n]).unwrap();
                }
            });
        }
    });
    let clients: Vec<_> = (0..20u8)
        .map(|i| {
            tasklets::spawn(move || {
                let mut conn = tasklets::net::TcpStream::connect(addr).unwrap();
                // tasklets::net's own timeouts and non-blocking mode keep their meaning.
                conn.set_read_timeout(Some(ms(30))).unwrap();
                let mut buf = [0; 1];
                assert_eq!(conn.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
                conn.set_read_timeout(None).unwrap();
                conn.write_all(&[i; 10]).unwrap();
                let mut back = [0; 10];
                conn.read_exact(&mut back).unwrap();
                back == [i; 10]
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().unwrap());
    }
    server.join().unwrap();
}

#[test]
fn killing_a_tasklet_blocked_in_a_hooked_read_ends_it_killed_without_leaking_fds() {
    if !in_child("killing_a_tasklet_blocked_in_a_hooked_read_ends_it_killed_without_leaking_fds") {
        return run_in_child("killing_a_tasklet_blocked_in_a_hooked_read_ends_it_killed_without_leaking_fds");
    }
    install();
    let kill_a_blocked_reader = || {
        let (client, server) = tcp_pair();
        let reader = tasklets::spawn(move || -> io::Result<usize> {
            let mut server = server;
            let mut buf = [0; 16];
            server.read(&mut buf) // nothing is ever written
        });
        tasklets::schedule(); // the reader parks inside the hooked recv
        assert_eq!(tasklets::snapshot().stats.parked_on_io, 1);
        reader.kill();
        assert!(matches!(reader.join(), Err(JoinError::Killed)));
        assert_eq!(tasklets::snapshot().stats.parked_on_io, 0);
        drop(client);
    };
    kill_a_blocked_reader(); // the first run opens the thread's poller (epoll fd, eventfd)
    let before = fd_count();
    for _ in 0..10 {
        kill_a_blocked_reader();
    }
    assert_eq!(fd_count(), before, "fds leaked");
}

#[test]
fn set_nonblocking_still_yields_would_block() {
    install();
    let t = tasklets::spawn(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
        let (mut client, server) = tcp_pair();
        client.set_nonblocking(true).unwrap();
        let mut buf = [0; 8];
        assert_eq!(client.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        assert!(has_o_nonblock(&client));
        client.set_nonblocking(false).unwrap();
        assert!(!has_o_nonblock(&client));
        drop(server);
        assert_eq!(client.read(&mut buf).unwrap(), 0); // blocking again: EOF, not WouldBlock
    });
    t.join().unwrap();
}

#[test]
fn set_read_timeout_still_times_out_with_stds_error_kind_and_lets_others_run() {
    install();
    let ticks = Rc::new(Cell::new(0));
    let waiting = Rc::new(Cell::new(true));
    let ticker = {
        let (ticks, waiting) = (ticks.clone(), waiting.clone());
        tasklets::spawn(move || {
            while waiting.get() {
                tasklets::time::sleep(ms(5)); // the runtime's sleep: a kill can end this loop
                ticks.set(ticks.get() + 1);
            }
        })
    };
    let reader = tasklets::spawn(move || {
        let (mut client, _server) = tcp_pair();
        client.set_read_timeout(Some(ms(100))).unwrap();
        assert_eq!(client.read_timeout().unwrap(), Some(ms(100)));
        let start = Instant::now();
        let err = client.read(&mut [0; 8]).unwrap_err();
        let waited = start.elapsed();
        waiting.set(false);
        // Write timeouts too: fill the socket until a write times out.
        client.set_write_timeout(Some(ms(50))).unwrap();
        let chunk = vec![0u8; 1 << 16];
        let write_err = loop {
            if let Err(err) = client.write_all(&chunk) {
                break err;
            }
        };
        (err.kind(), waited, write_err.kind())
    });
    let (kind, waited, write_kind) = reader.join().unwrap();
    ticker.join().unwrap();
    assert_eq!(kind, ErrorKind::WouldBlock, "std reports SO_RCVTIMEO as WouldBlock");
    assert_eq!(write_kind, ErrorKind::WouldBlock);
    assert!(waited >= ms(100) && waited < Duration::from_secs(10), "{waited:?}");
    assert!(ticks.get() >= 1, "the thread was blocked during the read");
}

#[test]
fn f_getfl_shows_only_what_the_user_set() {
    install();
    let t = tasklets::spawn(|| {
        let (mut client, mut server) = tcp_pair();
        let writer = tasklets::spawn(move || {
            std::thread::sleep(ms(10));
            server.write_all(b"late").unwrap();
            server
        });
        let mut buf = [0; 4];
        client.read_exact(&mut buf).unwrap(); // parks in the hooked recv
        assert_eq!(&buf, b"late");
        assert!(!has_o_nonblock(&client), "a cooperative read must not leave O_NONBLOCK behind");
        let _server = writer.join().unwrap();
        client.set_nonblocking(true).unwrap();
        assert!(has_o_nonblock(&client));
    });
    t.join().unwrap();
}

#[test]
fn outside_tasklets_nothing_changes() {
    install();
    std::thread::spawn(|| {
        assert!(!tasklets::io::is_cooperative());
        let (mut client, mut server) = tcp_pair();
        client.set_read_timeout(Some(ms(50))).unwrap();
        let start = Instant::now();
        assert_eq!(client.read(&mut [0; 1]).unwrap_err().kind(), ErrorKind::WouldBlock);
        assert!(start.elapsed() >= ms(50));
        client.set_read_timeout(None).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(ms(30));
            server.write_all(b"x").unwrap();
        });
        let mut buf = [0; 1];
        client.read_exact(&mut buf).unwrap(); // blocks the thread until the write
        writer.join().unwrap();
        assert!(!has_o_nonblock(&client));
        let start = Instant::now();
        std::thread::sleep(ms(30));
        assert!(start.elapsed() >= ms(30));
        assert!(!tasklets::io::is_cooperative(), "the shims must not give the thread a scheduler");
    })
    .join()
    .unwrap();
}

#[test]
fn a_socket_used_by_tasklets_then_by_a_plain_thread_still_blocks() {
    install();
    let t = tasklets::spawn(|| {
        let (mut client, server) = tcp_pair();
        let peer = tasklets::spawn(move || {
            let mut server = server;
            let mut buf = [0; 2];
            server.read_exact(&mut buf).unwrap();
            server.write_all(&buf).unwrap();
            server
        });
        client.write_all(b"hi").unwrap();
        let mut buf = [0; 2];
        client.read_exact(&mut buf).unwrap(); // parked once: registered with the poller
        (client, peer.join().unwrap())
    });
    let (mut client, mut server) = t.join().unwrap();
    std::thread::spawn(move || {
        let writer = std::thread::spawn(move || {
            std::thread::sleep(ms(30));
            server.write_all(b"ok").unwrap();
        });
        let mut buf = [0; 2];
        client.read_exact(&mut buf).unwrap(); // must block, not fail with WouldBlock
        assert_eq!(&buf, b"ok");
        writer.join().unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn connect_timeout_and_udp_work_in_tasklets() {
    install();
    let t = tasklets::spawn(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        assert!(!has_o_nonblock(&conn), "std restores blocking mode after connect_timeout");
        drop(listener);
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        let refused = TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a_addr = a.local_addr().unwrap();
        let b_addr = b.local_addr().unwrap();
        let ponger = tasklets::spawn(move || {
            let mut buf = [0; 16];
            for _ in 0..10 {
                let (n, from) = b.recv_from(&mut buf).unwrap(); // parks
                b.send_to(&buf[..n], from).unwrap();
            }
        });
        let mut buf = [0; 16];
        for i in 0..10u8 {
            a.send_to(&[i; 5], b_addr).unwrap();
            let (n, from) = a.recv_from(&mut buf).unwrap();
            assert_eq!((n, from, buf[0]), (5, b_addr, i));
        }
        ponger.join().unwrap();
        let _ = a_addr;
    });
    t.join().unwrap();
}

#[test]
fn dup2_onto_a_registered_socket_lets_the_new_socket_park() {
    install();
    let t = tasklets::spawn(|| {
        let (mut a, mut a_peer) = tcp_pair();
        let (b, mut b_peer) = tcp_pair();
        // `a` parks once, so its number has a poller registration.
        let writer = tasklets::spawn(move || {
            std::thread::sleep(ms(5));
            a_peer.write_all(b"1").unwrap();
            a_peer
        });
        a.read_exact(&mut [0; 1]).unwrap();
        let _a_peer = writer.join().unwrap();
        // Put `b`'s socket at `a`'s number; `a`'s old socket is closed by dup2.
        // SAFETY: both fds are open and owned by this test.
        assert_eq!(unsafe { libc::dup2(b.as_raw_fd(), a.as_raw_fd()) }, a.as_raw_fd());
        drop(b);
        let writer = tasklets::spawn(move || {
            std::thread::sleep(ms(5));
            b_peer.write_all(b"2").unwrap();
            b_peer
        });
        let mut buf = [0; 1];
        a.read_exact(&mut buf).unwrap(); // parks on the new socket at the old number
        assert_eq!(&buf, b"2");
        writer.join().unwrap();
    });
    t.join().unwrap();
}

#[test]
fn a_cooperative_call_that_parked_leaves_errno_as_it_found_it() {
    install();
    let t = tasklets::spawn(|| {
        let (client, mut server) = tcp_pair();
        let writer = tasklets::spawn(move || {
            std::thread::sleep(ms(5));
            server.write_all(b"e").unwrap();
            server
        });
        // SAFETY: writing the calling thread's errno.
        unsafe { *libc::__errno_location() = libc::EXDEV };
        let mut buf = [0u8; 1];
        // SAFETY: a valid buffer of one byte.
        let n = unsafe { libc::recv(client.as_raw_fd(), buf.as_mut_ptr().cast(), 1, 0) };
        // SAFETY: reading the calling thread's errno.
        let errno = unsafe { *libc::__errno_location() };
        let _server = writer.join().unwrap();
        (n, errno)
    });
    // The recv failed with EAGAIN, parked, and read the byte; errno is the caller's again.
    assert_eq!(t.join().unwrap(), (1, libc::EXDEV));
}
