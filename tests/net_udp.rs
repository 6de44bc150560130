//! Integration tests of `tasklets::net::UdpSocket` on real sockets (127.0.0.1 only).
//!
//! Every `#[test]` runs on its own thread and therefore has its own scheduler. Wall-clock bounds
//! are loose sanity bounds, never speed assertions. No test sends anything beyond the loopback
//! interface (multicast is exercised through its options only).

use std::cell::Cell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklets::net::UdpSocket;
use tasklets::time::sleep;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn local() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// FNV-1a, to check payloads.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// A datagram: 8 bytes of checksum, then `body`.
fn datagram(body: &[u8]) -> Vec<u8> {
    let mut d = checksum(body).to_le_bytes().to_vec();
    d.extend_from_slice(body);
    d
}

/// The body of a datagram whose checksum matches.
fn body(datagram: &[u8]) -> &[u8] {
    let (sum, body) = datagram.split_at(8);
    assert_eq!(u64::from_le_bytes(sum.try_into().unwrap()), checksum(body), "corrupt datagram");
    body
}

#[test]
fn send_to_and_recv_from_between_tasklets() {
    const N: usize = 50;
    let server = local();
    let server_addr = server.local_addr().unwrap();
    let server = tasklets::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..N {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let reply = datagram(&body(&buf[..n]).to_ascii_uppercase());
            assert_eq!(server.send_to(&reply, from).unwrap(), reply.len());
        }
    });
    let client = tasklets::spawn(move || {
        let socket = local();
        let mut buf = [0u8; 2048];
        for i in 0..N {
            let text = format!("datagram number {i}");
            socket.send_to(&datagram(text.as_bytes()), server_addr).unwrap();
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(from, server_addr);
            assert_eq!(body(&buf[..n]), text.to_ascii_uppercase().as_bytes());
        }
        N
    });
    tasklets::run();
    server.join().unwrap();
    assert_eq!(client.join().unwrap(), N);
}

/// 100 pairs of sockets, 200 tasklets, each pair bouncing a datagram 20 times; every hop
/// checks the checksum and changes the payload.
#[test]
fn two_hundred_tasklets_ping_pong() {
    const PAIRS: usize = 100;
    const ROUNDS: usize = 20;
    let hops = Rc::new(Cell::new(0usize));
    for p in 0..PAIRS {
        let (a, b) = (local(), local());
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        for (socket, serves) in [(a, false), (b, true)] {
            let hops = hops.clone();
            tasklets::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut payload = vec![p as u8; 100 + p * 10];
                if !serves {
                    socket.send(&datagram(&payload)).unwrap();
                }
                for round in 0..ROUNDS {
                    let n = socket.recv(&mut buf).unwrap();
                    payload = body(&buf[..n]).to_vec();
                    payload.push(round as u8);
                    hops.set(hops.get() + 1);
                    if serves || round + 1 < ROUNDS {
                        socket.send(&datagram(&payload)).unwrap();
                    }
                }
                assert_eq!(payload.len(), 100 + p * 10 + 2 * ROUNDS - usize::from(serves));
            });
        }
    }
    let start = Instant::now();
    tasklets::run();
    println!("{} UDP hops between 200 tasklets: {:?}", hops.get(), start.elapsed());
    assert_eq!(hops.get(), PAIRS * ROUNDS * 2);
}

#[test]
fn recv_timeout_fires_while_other_tasklets_run() {
    let socket = local();
    socket.set_read_timeout(Some(ms(120))).unwrap();
    assert_eq!(socket.read_timeout().unwrap(), Some(ms(120)));
    let done = Rc::new(Cell::new(false));
    let ticks = Rc::new(Cell::new(0u32));
    let receiver = {
        let done = done.clone();
        tasklets::spawn(move || {
            let start = Instant::now();
            let err = socket.recv_from(&mut [0u8; 64]).unwrap_err();
            let elapsed = start.elapsed();
            done.set(true);
            (err.kind(), elapsed)
        })
    };
    {
        let (done, ticks) = (done.clone(), ticks.clone());
        tasklets::spawn(move || {
            while !done.get() {
                ticks.set(ticks.get() + 1);
                sleep(ms(1));
            }
        });
    }
    tasklets::run();
    let (kind, elapsed) = receiver.join().unwrap();
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(elapsed >= ms(120), "timed out early: {elapsed:?}");
    assert!(elapsed < ms(3000), "timed out late: {elapsed:?}");
    assert!(ticks.get() >= 10, "the other tasklet ticked only {} times", ticks.get());
}

#[test]
fn timeout_arguments_as_std() {
    let socket = local();
    assert_eq!(socket.read_timeout().unwrap(), None);
    assert_eq!(socket.write_timeout().unwrap(), None);
    assert_eq!(
        socket.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        socket.set_write_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    socket.set_write_timeout(Some(ms(30))).unwrap();
    assert_eq!(socket.write_timeout().unwrap(), Some(ms(30)));
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        std_socket.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn connect_send_recv_and_peer_filtering() {
    let (a, b, stranger) = (local(), local(), local());
    assert_eq!(a.peer_addr().unwrap_err().kind(), io::ErrorKind::NotConnected);
    assert_eq!(
        a.send(b"x").unwrap_err().kind(),
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().send(b"x").unwrap_err().kind()
    );
    a.connect(b.local_addr().unwrap()).unwrap();
    assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
    let a_addr = a.local_addr().unwrap();
    let receiver = tasklets::spawn(move || {
        let mut buf = [0u8; 32];
        let n = a.recv(&mut buf).unwrap(); // the stranger's datagram is not for a connected socket
        buf[..n].to_vec()
    });
    tasklets::spawn(move || {
        stranger.send_to(b"from a stranger", a_addr).unwrap();
        sleep(ms(10));
        b.send_to(b"from the peer", a_addr).unwrap();
    });
    tasklets::run();
    assert_eq!(receiver.join().unwrap(), b"from the peer");
}

#[test]
fn peek_from_and_peek() {
    let (a, b) = (local(), local());
    let b_addr = b.local_addr().unwrap();
    let peeker = tasklets::spawn(move || {
        let mut buf = [0u8; 32];
        let (n, from) = b.peek_from(&mut buf).unwrap(); // parks until the datagram comes
        let peeked = (buf[..n].to_vec(), from);
        let (n, from2) = b.recv_from(&mut buf).unwrap();
        assert_eq!(from, from2);
        b.connect(from).unwrap();
        (peeked, buf[..n].to_vec(), b)
    });
    let a_addr = a.local_addr().unwrap();
    tasklets::spawn(move || {
        sleep(ms(5));
        a.send_to(b"peekaboo", b_addr).unwrap();
        sleep(ms(5));
        a.send_to(b"twice", b_addr).unwrap();
    });
    tasklets::run();
    let ((peeked, from), received, b) = peeker.join().unwrap();
    assert_eq!((peeked.as_slice(), from), (&b"peekaboo"[..], a_addr));
    assert_eq!(received, b"peekaboo");
    let mut buf = [0u8; 32];
    let n = b.peek(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"twice");
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"twice");
}

#[test]
fn a_long_datagram_is_truncated_to_the_buffer() {
    let (a, b) = (local(), local());
    a.send_to(&[9u8; 100], b.local_addr().unwrap()).unwrap();
    let mut small = [0u8; 10];
    let (n, _) = b.recv_from(&mut small).unwrap();
    assert_eq!((n, small), (10, [9u8; 10]));
    b.set_nonblocking(true).unwrap();
    assert_eq!(
        b.recv_from(&mut small).unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "the rest was dropped"
    );
}

#[test]
fn nonblocking_gives_would_block_at_once() {
    let socket = local();
    socket.set_nonblocking(true).unwrap();
    let start = Instant::now();
    assert_eq!(socket.recv_from(&mut [0u8; 8]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert_eq!(socket.peek_from(&mut [0u8; 8]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    socket.connect(socket.local_addr().unwrap()).unwrap();
    assert_eq!(socket.recv(&mut [0u8; 8]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert_eq!(socket.peek(&mut [0u8; 8]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert!(start.elapsed() < ms(2000));
    socket.send(b"self").unwrap();
    socket.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(socket.recv(&mut buf).unwrap(), 4);
}

#[test]
fn socket_options() {
    let socket = local();
    assert!(!socket.broadcast().unwrap());
    socket.set_broadcast(true).unwrap();
    assert!(socket.broadcast().unwrap());
    socket.set_broadcast(false).unwrap();
    assert!(!socket.broadcast().unwrap());

    assert!(socket.multicast_loop_v4().unwrap());
    socket.set_multicast_loop_v4(false).unwrap();
    assert!(!socket.multicast_loop_v4().unwrap());
    socket.set_multicast_ttl_v4(4).unwrap();
    assert_eq!(socket.multicast_ttl_v4().unwrap(), 4);
    socket.set_ttl(33).unwrap();
    assert_eq!(socket.ttl().unwrap(), 33);
    assert!(socket.take_error().unwrap().is_none());
    // Leaving a group never joined fails as std's does (and sends nothing).
    let group = Ipv4Addr::new(239, 255, 77, 77);
    let ours = socket.leave_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED).unwrap_err();
    let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let theirs = std.leave_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED).unwrap_err();
    assert_eq!(ours.raw_os_error(), theirs.raw_os_error());

    // IPv6, where the machine has it.
    if let Ok(v6) = UdpSocket::bind("[::1]:0") {
        assert!(v6.multicast_loop_v6().unwrap());
        v6.set_multicast_loop_v6(false).unwrap();
        assert!(!v6.multicast_loop_v6().unwrap());
        let group = "ff15::7777".parse::<Ipv6Addr>().unwrap();
        assert!(v6.leave_multicast_v6(&group, 0).is_err());
    }

    // try_clone shares the options kept beside the socket.
    let clone = socket.try_clone().unwrap();
    clone.set_read_timeout(Some(ms(10))).unwrap();
    assert_eq!(socket.read_timeout().unwrap(), Some(ms(10)));
    clone.set_nonblocking(true).unwrap();
    assert_eq!(socket.recv_from(&mut [0u8; 1]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn send_to_resolves_like_std() {
    let (a, b) = (local(), local());
    let port = b.local_addr().unwrap().port();
    // A string and a host/port pair (resolved on the pool inside a tasklet).
    let t = tasklets::spawn(move || {
        a.send_to(b"one", format!("127.0.0.1:{port}")).unwrap();
        a.send_to(b"two", ("127.0.0.1", port)).unwrap();
        let none: &[SocketAddr] = &[];
        let err = a.send_to(b"three", none).unwrap_err();
        let bad = a.send_to(b"four", "127.0.0.1").unwrap_err();
        (err.kind(), bad.kind())
    });
    tasklets::run();
    assert_eq!(t.join().unwrap(), (io::ErrorKind::InvalidInput, io::ErrorKind::InvalidInput));
    let mut buf = [0u8; 8];
    assert_eq!(b.recv(&mut buf).unwrap(), 3);
    assert_eq!(b.recv(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"two");
    assert_eq!(UdpSocket::bind("127.0.0.1").unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

/// On plain threads that never spawn a tasklet, the calls block like std's.
#[test]
fn plain_threads_without_tasklets() {
    let server = local();
    let addr = server.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).unwrap(); // blocks until the client sends
        server.send_to(&buf[..n].to_ascii_uppercase(), from).unwrap();
    });
    let client = std::thread::spawn(move || {
        std::thread::sleep(ms(50));
        let socket = local();
        socket.set_read_timeout(Some(ms(5000))).unwrap();
        socket.send_to(b"quiet", addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(from, addr);
        buf[..n].to_vec()
    });
    server.join().unwrap();
    assert_eq!(client.join().unwrap(), b"QUIET");
}

#[test]
fn conversions_round_trip() {
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = std_socket.local_addr().unwrap();
    // (Multiples of 20 ms: the kernel keeps socket timeouts in clock ticks.)
    std_socket.set_read_timeout(Some(ms(200))).unwrap();
    let socket = UdpSocket::from(std_socket);
    assert_eq!(socket.read_timeout().unwrap(), Some(ms(200)));
    assert_eq!(socket.local_addr().unwrap(), addr);

    socket.set_write_timeout(Some(ms(400))).unwrap();
    let std_socket: std::net::UdpSocket = socket.into();
    assert_eq!(std_socket.read_timeout().unwrap(), Some(ms(200)));
    assert_eq!(std_socket.write_timeout().unwrap(), Some(ms(400)));
    // SAFETY: F_GETFL on an open fd.
    let flags = unsafe { libc::fcntl(std_socket.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(flags & libc::O_NONBLOCK, 0, "the std socket is blocking again");

    let fd: OwnedFd = UdpSocket::from(std_socket).into();
    let socket = UdpSocket::from(fd);
    let raw = socket.into_raw_fd();
    // SAFETY: `raw` was just given up by `into_raw_fd`.
    let socket = unsafe { UdpSocket::from_raw_fd(raw) };
    assert_eq!(socket.as_raw_fd(), raw);
    socket.send_to(b"me", addr).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(socket.recv_from(&mut buf).unwrap(), (2, addr));

    let debug = format!("{socket:?}");
    assert!(debug.starts_with("UdpSocket {") && debug.contains(&addr.to_string()), "{debug}");
    assert!(debug.contains(&format!("fd: {raw}")), "{debug}");
}

#[test]
fn udp_socket_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<UdpSocket>();
}
