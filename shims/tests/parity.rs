//! Parity with glibc, call by call: every hooked call made in a tasklet (the cooperative path)
//! returns what the same call returns on a plain thread, where the hooks forward it to the
//! kernel as glibc does. The expectation is never written by hand: each test runs one closure
//! both ways and compares what it observed (return values and `errno`).
//!
//! Loopback sockets only; every run is bounded (a hang fails the test after 20 s).

use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::ptr;
use std::time::{Duration, Instant};

mod common;
use common::{glibc, ms, outcome, shimmed, Outcome};

/// A connected pair of TCP sockets on loopback (client, server).
fn tcp_pair() -> (OwnedFd, OwnedFd) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client.into(), server.into())
}

/// A UDP socket bound on loopback with one 5-byte datagram ("dgram") queued on it.
fn udp_with_a_datagram() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(b"dgram", socket.local_addr().unwrap()).unwrap();
    socket
}

fn raw(fd: &impl AsRawFd) -> libc::c_int {
    fd.as_raw_fd()
}

/// A fresh TCP socket, neither bound nor connected.
fn fresh_tcp() -> OwnedFd {
    // SAFETY: plain call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn sockaddr_of(addr: std::net::SocketAddr) -> (libc::sockaddr_in, libc::socklen_t) {
    let std::net::SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
    // SAFETY: plain data; all zeroes is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = v4.port().to_be();
    sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    (sin, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
}

fn set_timeout(fd: libc::c_int, opt: libc::c_int, timeout: Duration) {
    let tv = libc::timeval { tv_sec: timeout.as_secs() as _, tv_usec: timeout.subsec_micros() as _ };
    // SAFETY: a valid timeval of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

fn set_int_option(fd: libc::c_int, opt: libc::c_int, value: libc::c_int) {
    // SAFETY: a valid int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn accept_on_a_socket_that_is_not_listening_fails_at_once_as_in_glibc() {
    fn probe() -> Vec<Outcome> {
        let (client, _server) = tcp_pair();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let unbound = fresh_tcp();
        let unix = UnixDatagram::unbound().unwrap();
        [raw(&client), raw(&udp), raw(&unbound), raw(&unix)]
            .into_iter()
            // SAFETY: null address pointers are allowed.
            .map(|fd| outcome(|| unsafe { libc::accept(fd, ptr::null_mut(), ptr::null_mut()) } as i64))
            .collect()
    }
    let expected = glibc(probe);
    assert!(expected.iter().all(|&(r, err)| r == -1 && err != 0), "{expected:?}");
    assert_eq!(shimmed(probe), expected);
}

#[test]
fn read_of_zero_bytes_leaves_the_datagram_queued() {
    fn probe() -> Vec<Outcome> {
        let socket = udp_with_a_datagram();
        let fd = raw(&socket);
        let mut buf = [0u8; 16];
        let zero = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: 0 };
        vec![
            // SAFETY: valid buffers (zero bytes long).
            outcome(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 0) } as i64),
            // SAFETY: no iovec at all.
            outcome(|| unsafe { libc::readv(fd, ptr::null(), 0) } as i64),
            // SAFETY: one valid iovec of zero bytes.
            outcome(|| unsafe { libc::readv(fd, &zero, 1) } as i64),
            // The datagram is still there.
            // SAFETY: a valid buffer.
            outcome(
                || unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } as i64
            ),
        ]
    }
    let expected = glibc(probe);
    assert_eq!(expected.last(), Some(&(5, 0)));
    assert_eq!(shimmed(probe), expected);
}

#[test]
fn read_of_zero_bytes_on_an_idle_tcp_socket_returns_zero_at_once() {
    fn probe() -> Vec<Outcome> {
        let (client, _server) = tcp_pair();
        let fd = raw(&client);
        let mut buf = [0u8; 1];
        vec![
            // SAFETY: a valid buffer (zero bytes long).
            outcome(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 0) } as i64),
            // SAFETY: no iovec at all.
            outcome(|| unsafe { libc::readv(fd, ptr::null(), 0) } as i64),
        ]
    }
    let expected = glibc(probe);
    assert_eq!(expected, [(0, 0), (0, 0)]);
    assert_eq!(shimmed(probe), expected);
}

#[test]
fn readv_and_writev_with_a_bad_buffer_count_fail_with_einval() {
    fn probe() -> Vec<Outcome> {
        let (client, _server) = tcp_pair();
        let fd = raw(&client);
        let mut byte = [0u8; 1];
        let iovs = vec![libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 }; 1025];
        let mut seen = Vec::new();
        for count in [1025, -1] {
            // SAFETY: `iovs` holds 1025 valid iovecs.
            seen.push(outcome(|| unsafe { libc::readv(fd, iovs.as_ptr(), count) } as i64));
            // SAFETY: as above.
            seen.push(outcome(|| unsafe { libc::writev(fd, iovs.as_ptr(), count) } as i64));
        }
        seen
    }
    let expected = glibc(probe);
    assert!(expected.iter().all(|&o| o == (-1, libc::EINVAL)), "{expected:?}");
    assert_eq!(shimmed(probe), expected);
}

#[test]
fn a_second_connect_after_success_fails_with_eisconn() {
    fn probe() -> Vec<Outcome> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr, len) = sockaddr_of(listener.local_addr().unwrap());
        let socket = fresh_tcp();
        let fd = raw(&socket);
        let addr = (&addr as *const libc::sockaddr_in).cast();
        (0..3)
            // SAFETY: a valid address of `len` bytes.
            .map(|_| outcome(|| unsafe { libc::connect(fd, addr, len) } as i64))
            .collect()
    }
    let expected = glibc(probe);
    assert_eq!(expected, [(0, 0), (-1, libc::EISCONN), (-1, libc::EISCONN)]);
    assert_eq!(shimmed(probe), expected);
}

/// `send` of 4 MiB with `SO_SNDTIMEO` = 200 ms to a peer that reads 16 KiB every 20 ms (so
/// each wait for room ends with progress well within the timeout): what it returned, `errno`,
/// and how long it took.
fn send_4_mib_with_a_200_ms_timeout_to_a_slow_reader() -> (i64, i32, Duration) {
    let (client, server) = tcp_pair();
    let fd = raw(&client);
    // Small buffers, so that the 4 MiB cannot simply be queued at once (whatever the
    // machine's tcp_wmem/tcp_rmem are).
    set_int_option(fd, libc::SO_SNDBUF, 64 << 10);
    set_int_option(raw(&server), libc::SO_RCVBUF, 64 << 10);
    set_timeout(fd, libc::SO_SNDTIMEO, ms(200));
    let reader = std::thread::spawn(move || {
        let mut server = std::fs::File::from(server);
        let mut buf = vec![0u8; 16 << 10];
        loop {
            std::thread::sleep(ms(20));
            match std::io::Read::read(&mut server, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    let data = vec![7u8; 4 << 20];
    let start = Instant::now();
    // SAFETY: a valid buffer.
    let (r, err) =
        outcome(|| unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) } as i64);
    let took = start.elapsed();
    drop(client);
    reader.join().unwrap();
    (r, err, took)
}

#[test]
fn so_sndtimeo_bounds_the_whole_send_not_each_chunk() {
    let (sent, _, took) = glibc(send_4_mib_with_a_200_ms_timeout_to_a_slow_reader);
    println!("glibc: sent {sent} bytes in {took:?}");
    assert!(sent > 0 && sent < 4 << 20, "glibc returns a partial count: {sent}");
    let (sent, err, took) = shimmed(send_4_mib_with_a_200_ms_timeout_to_a_slow_reader);
    println!("shims: sent {sent} bytes in {took:?}");
    assert!(sent > 0 && sent < 4 << 20, "a partial count, as glibc: {sent} (errno {err})");
    assert!(took >= ms(200), "{took:?}");
    // About one timeout's worth, with room for a loaded machine; with a fresh timeout per
    // chunk of progress the call never times out and sends everything at the reader's pace.
    assert!(took < Duration::from_millis(1000), "the timeout did not bound the whole call: {took:?}");
}

/// `recv(MSG_WAITALL)` of 1,000 bytes with `SO_RCVTIMEO` = 200 ms from a peer that sends 10
/// bytes every 50 ms for 1 s: what it returned and how long it took.
fn recv_waitall_from_a_slow_sender() -> (i64, Duration) {
    let (client, server) = tcp_pair();
    let fd = raw(&client);
    set_timeout(fd, libc::SO_RCVTIMEO, ms(200));
    let sender = std::thread::spawn(move || {
        let mut server = std::fs::File::from(server);
        for _ in 0..20 {
            if server.write_all(&[1; 10]).is_err() {
                break;
            }
            std::thread::sleep(ms(50));
        }
    });
    let mut buf = vec![0u8; 1000];
    let start = Instant::now();
    // SAFETY: a valid buffer.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_WAITALL) } as i64;
    let took = start.elapsed();
    drop(client);
    sender.join().unwrap();
    (r, took)
}

#[test]
fn so_rcvtimeo_bounds_a_waitall_receive_which_returns_what_it_has() {
    let (got, took) = glibc(recv_waitall_from_a_slow_sender);
    println!("glibc: received {got} bytes in {took:?}");
    assert!(got > 0 && got < 200, "{got}");
    let (got, took) = shimmed(recv_waitall_from_a_slow_sender);
    println!("shims: received {got} bytes in {took:?}");
    assert!(got > 0 && got < 200, "the partial count glibc returns: {got} bytes");
    assert!(took < ms(800), "the timeout did not bound the whole call: {took:?}");
}
