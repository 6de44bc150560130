//! Parity with glibc, call by call: every hooked call made in a tasklet (the cooperative path)
//! returns what the same call returns on a plain thread, where the hooks forward it to the
//! kernel as glibc does. The expectation is never written by hand: each test runs one closure
//! both ways and compares what it observed (return values and `errno`).
//!
//! Loopback sockets only; every run is bounded (a hang fails the test after 20 s).

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::ptr;
use std::time::{Duration, Instant};

mod common;
use common::{glibc, ms, outcome, same_as_glibc, set_option, shimmed, tcp_pair_fds, timeval, Outcome};

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

#[test]
fn accept_on_a_socket_that_is_not_listening_fails_at_once_as_in_glibc() {
    fn probe() -> Vec<Outcome> {
        let (client, _server) = tcp_pair_fds();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let unbound = fresh_tcp();
        let unix = UnixDatagram::unbound().unwrap();
        [raw(&client), raw(&udp), raw(&unbound), raw(&unix)]
            .into_iter()
            // SAFETY: null address pointers are allowed.
            .map(|fd| outcome(|| unsafe { libc::accept(fd, ptr::null_mut(), ptr::null_mut()) } as i64))
            .collect()
    }
    let expected = same_as_glibc(probe);
    assert!(expected.iter().all(|&(r, err)| r == -1 && err != 0), "{expected:?}");
}

fn zero_byte_reads_of_a_queued_datagram() -> Vec<Outcome> {
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
        outcome(|| unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } as i64),
    ]
}

#[test]
fn read_of_zero_bytes_leaves_the_datagram_queued() {
    let expected = same_as_glibc(zero_byte_reads_of_a_queued_datagram);
    assert_eq!(expected.last(), Some(&(5, 0)));
}

fn zero_byte_reads_of_an_idle_stream() -> Vec<Outcome> {
    let (client, _server) = tcp_pair_fds();
    let fd = raw(&client);
    let mut buf = [0u8; 1];
    vec![
        // SAFETY: a valid buffer (zero bytes long).
        outcome(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 0) } as i64),
        // SAFETY: no iovec at all.
        outcome(|| unsafe { libc::readv(fd, ptr::null(), 0) } as i64),
    ]
}

#[test]
fn read_of_zero_bytes_on_an_idle_tcp_socket_returns_zero_at_once() {
    let expected = same_as_glibc(zero_byte_reads_of_an_idle_stream);
    assert_eq!(expected, [(0, 0), (0, 0)]);
}

fn vectored_calls_with_bad_counts() -> Vec<Outcome> {
    let (client, _server) = tcp_pair_fds();
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

#[test]
fn readv_and_writev_with_a_bad_buffer_count_fail_with_einval() {
    let expected = same_as_glibc(vectored_calls_with_bad_counts);
    assert!(expected.iter().all(|&o| o == (-1, libc::EINVAL)), "{expected:?}");
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
    let expected = same_as_glibc(probe);
    assert_eq!(expected, [(0, 0), (-1, libc::EISCONN), (-1, libc::EISCONN)]);
}

/// `send` of 4 MiB with `SO_SNDTIMEO` = 200 ms to a peer that reads 16 KiB every 20 ms (so
/// each wait for room ends with progress well within the timeout): what it returned, `errno`,
/// and how long it took.
fn send_4_mib_with_a_200_ms_timeout_to_a_slow_reader() -> (i64, i32, Duration) {
    let (client, server) = tcp_pair_fds();
    let fd = raw(&client);
    // Small buffers, so that the 4 MiB cannot simply be queued at once (whatever the
    // machine's tcp_wmem/tcp_rmem are).
    set_option(fd, libc::SO_SNDBUF, 64 << 10);
    set_option(raw(&server), libc::SO_RCVBUF, 64 << 10);
    set_option(fd, libc::SO_SNDTIMEO, timeval(ms(200)));
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
    let (client, server) = tcp_pair_fds();
    let fd = raw(&client);
    set_option(fd, libc::SO_RCVTIMEO, timeval(ms(200)));
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

#[test]
fn receiving_the_error_queue_or_out_of_band_data_never_waits() {
    fn probe() -> Vec<Outcome> {
        let (client, _server) = tcp_pair_fds();
        let fd = raw(&client);
        let mut buf = [0u8; 16];
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        // SAFETY: plain data; all zeroes is an empty message header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        vec![
            // SAFETY: a valid buffer.
            outcome(|| unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_OOB) } as i64),
            // SAFETY: a valid message header.
            outcome(|| unsafe { libc::recvmsg(raw(&udp), &mut msg, libc::MSG_ERRQUEUE) } as i64),
        ]
    }
    let expected = same_as_glibc(probe);
    assert!(expected.iter().all(|&(r, _)| r == -1), "{expected:?}");
}

#[test]
fn accept4_with_bad_flags_fails_at_once_with_einval() {
    fn probe() -> Vec<Outcome> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: null address pointers are allowed.
        vec![outcome(|| unsafe {
            libc::accept4(raw(&listener), ptr::null_mut(), ptr::null_mut(), 0x7fff_0000)
        } as i64)]
    }
    let expected = same_as_glibc(probe);
    assert_eq!(expected, [(-1, libc::EINVAL)]);
}

#[test]
fn a_peeking_waitall_receive_waits_for_the_whole_length() {
    fn probe() -> (Outcome, bool) {
        let (client, server) = tcp_pair_fds();
        let writer = std::thread::spawn(move || {
            let mut server = std::fs::File::from(server);
            server.write_all(b"01234").unwrap();
            std::thread::sleep(ms(150));
            server.write_all(b"56789").unwrap();
            server
        });
        let mut buf = [0u8; 10];
        let start = Instant::now();
        let seen = outcome(|| {
            // SAFETY: a valid buffer.
            unsafe {
                libc::recv(raw(&client), buf.as_mut_ptr().cast(), 10, libc::MSG_PEEK | libc::MSG_WAITALL)
                    as i64
            }
        });
        let waited = start.elapsed() >= ms(100);
        writer.join().unwrap();
        (seen, waited)
    }
    let expected = same_as_glibc(probe);
    assert_eq!(expected, ((10, 0), true));
}

#[test]
fn poll_with_no_events_still_wakes_on_a_hangup() {
    fn probe() -> (Outcome, i16, bool) {
        let (client, server) = tcp_pair_fds();
        // Both directions closed make a hangup: ours now, the peer's in 100 ms.
        // SAFETY: plain call.
        assert_eq!(unsafe { libc::shutdown(raw(&client), libc::SHUT_WR) }, 0);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(ms(100));
            drop(server);
        });
        let mut fds = [libc::pollfd { fd: raw(&client), events: 0, revents: 0 }];
        let start = Instant::now();
        // SAFETY: one valid pollfd.
        let seen = outcome(|| unsafe { libc::poll(fds.as_mut_ptr(), 1, 5000) } as i64);
        let early = start.elapsed() < ms(2500);
        closer.join().unwrap();
        (seen, fds[0].revents, early)
    }
    let expected = same_as_glibc(probe);
    assert!(expected.2 && expected.0 == (1, 0), "{expected:?}");
}

#[test]
fn dup3_with_bad_flags_leaves_the_target_socket_alone() {
    shimmed(|| {
        let (client, server) = tcp_pair_fds();
        let (other, _other_peer) = tcp_pair_fds();
        let fd = raw(&client);
        let reader = tasklets::spawn(move || {
            let mut buf = [0u8; 1];
            // SAFETY: a valid buffer.
            outcome(|| unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 1, 0) } as i64)
        });
        tasklets::schedule(); // the reader parks on `client`
                              // SAFETY: plain call with bad flags: fails, and `client` stays open.
        assert_eq!(
            outcome(|| unsafe { libc::dup3(raw(&other), fd, 0x4000_0000) } as i64),
            (-1, libc::EINVAL)
        );
        let mut server = std::fs::File::from(server);
        server.write_all(b"z").unwrap();
        assert_eq!(reader.join().unwrap(), (1, 0), "the parked reader lost its registration");
        drop(client);
    });
}

fn bad_descriptors_and_pointers() -> Vec<Outcome> {
    let (client, _server) = tcp_pair_fds();
    let fd = raw(&client);
    let unopened = 19_999;
    let mut buf = [0u8; 4];
    let bad = 8 as *mut libc::c_void; // a never-mapped address
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let mut seen = Vec::new();
    for target in [-1, unopened, raw(&file)] {
        // SAFETY: valid buffers; the fds are bad on purpose.
        seen.push(outcome(|| unsafe { libc::recv(target, buf.as_mut_ptr().cast(), 4, 0) } as i64));
        // SAFETY: as above.
        seen.push(outcome(
            || unsafe { libc::send(target, buf.as_ptr().cast(), 4, libc::MSG_NOSIGNAL) } as i64
        ));
        // SAFETY: as above.
        seen.push(outcome(|| unsafe { libc::accept(target, ptr::null_mut(), ptr::null_mut()) } as i64));
    }
    let mut server = std::fs::File::from(_server);
    server.write_all(b"data").unwrap();
    if !common::process_vm_readv_works() {
        println!("no process_vm_readv here (qemu-user?): the bad-pointer calls are left out");
        drop(server);
        return seen;
    }
    // The kernel reports bad pointers as EFAULT; the shims must not fault on them.
    // SAFETY: bad pointers on purpose: the kernel checks them.
    seen.push(outcome(|| unsafe { libc::recv(fd, bad, 4, 0) } as i64));
    // SAFETY: as above.
    seen.push(outcome(|| unsafe { libc::readv(fd, bad.cast(), 1) } as i64));
    // SAFETY: as above.
    seen.push(outcome(|| unsafe { libc::writev(fd, bad.cast(), 1) } as i64));
    // SAFETY: as above.
    seen.push(outcome(|| unsafe { libc::recvmsg(fd, bad.cast(), 0) } as i64));
    // SAFETY: as above.
    seen.push(outcome(|| unsafe { libc::send(fd, bad, 4, libc::MSG_NOSIGNAL) } as i64));
    let mut fds = [libc::pollfd { fd: unopened, events: libc::POLLIN, revents: 0 }];
    // SAFETY: one valid pollfd (for a closed fd: POLLNVAL).
    seen.push(outcome(|| unsafe { libc::poll(fds.as_mut_ptr(), 1, 1000) } as i64));
    seen.push((fds[0].revents as i64, 0));
    // SAFETY: a bad pointer with nfds > 0: EFAULT.
    seen.push(outcome(|| unsafe { libc::poll(bad.cast(), 1, 1000) } as i64));
    // SAFETY: as above.
    seen.push(outcome(|| unsafe { libc::nanosleep(bad.cast(), ptr::null_mut()) } as i64));
    drop(server);
    seen
}

#[test]
fn bad_descriptors_and_bad_pointers_fail_as_in_glibc() {
    same_as_glibc(bad_descriptors_and_pointers);
}

#[test]
fn a_connect_retried_after_eintr_waits_for_the_connection_as_glibc() {
    // A listener with a full backlog drops the SYN, so a connect stays in progress; a signal
    // interrupts it; a second connect waits for it (once a slot is free, the SYN is resent).
    extern "C" fn on_signal(_: libc::c_int) {}
    let sig = libc::SIGRTMIN() + 6;
    common::install();
    // SAFETY: plain data; all zeroes is an empty mask and no flags.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as *const () as usize;
    // SAFETY: a valid action.
    assert_eq!(unsafe { libc::sigaction(sig, &action, ptr::null_mut()) }, 0);
    fn probe() -> Vec<Outcome> {
        let sig = libc::SIGRTMIN() + 6;
        let listener = fresh_tcp();
        let (addr, len) = sockaddr_of("127.0.0.1:0".parse().unwrap());
        let addr_ptr = (&addr as *const libc::sockaddr_in).cast();
        // SAFETY: valid address; backlog 0 (one pending connection at most).
        assert_eq!(unsafe { libc::bind(raw(&listener), addr_ptr, len) }, 0);
        // SAFETY: plain call.
        assert_eq!(unsafe { libc::listen(raw(&listener), 0) }, 0);
        let bound = {
            // SAFETY: plain data.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut l = len;
            // SAFETY: valid buffers.
            unsafe { libc::getsockname(raw(&listener), (&mut sin as *mut libc::sockaddr_in).cast(), &mut l) };
            sin
        };
        let target = (&bound as *const libc::sockaddr_in).cast();
        // Fill the backlog.
        let fillers: Vec<_> = (0..2)
            .map(|_| {
                let s = fresh_tcp();
                // SAFETY: non-blocking connect to a valid address.
                unsafe {
                    libc::fcntl(raw(&s), libc::F_SETFL, libc::O_NONBLOCK);
                    libc::connect(raw(&s), target, len);
                }
                s
            })
            .collect();
        std::thread::sleep(ms(50));
        let socket = fresh_tcp();
        let signaller = {
            // SAFETY: plain call.
            let me = unsafe { libc::pthread_self() };
            std::thread::spawn(move || {
                std::thread::sleep(ms(100));
                // SAFETY: the target joins this thread before it ends.
                unsafe { libc::pthread_kill(me, sig) };
            })
        };
        // SAFETY: a valid address.
        let first = outcome(|| unsafe { libc::connect(raw(&socket), target, len) } as i64);
        signaller.join().unwrap();
        let listener_fd = raw(&listener);
        let acceptor = std::thread::spawn(move || {
            for _ in 0..3 {
                // SAFETY: null address pointers are allowed.
                let fd = unsafe { libc::accept(listener_fd, ptr::null_mut(), ptr::null_mut()) };
                assert!(fd >= 0);
                // SAFETY: closing the accepted fd.
                unsafe { libc::close(fd) };
            }
        });
        // SAFETY: a valid address.
        let second = outcome(|| unsafe { libc::connect(raw(&socket), target, len) } as i64);
        acceptor.join().unwrap();
        drop(fillers);
        vec![first, second]
    }
    let expected = same_as_glibc(probe);
    assert_eq!(expected, [(-1, libc::EINTR), (0, 0)]);
}

/// `writev` of three buffers and `readv` into two, on a stream and on a datagram socket.
fn vectored_transfers() -> Vec<Outcome> {
    let (client, server) = tcp_pair_fds();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(udp.local_addr().unwrap()).unwrap();
    let parts: [&[u8]; 3] = [b"one", b"two", b"three"];
    let out: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec { iov_base: p.as_ptr().cast_mut().cast(), iov_len: p.len() })
        .collect();
    let mut seen = Vec::new();
    for (writer, reader) in [(raw(&client), raw(&server)), (raw(&udp), raw(&udp))] {
        // SAFETY: three valid iovecs.
        seen.push(outcome(|| unsafe { libc::writev(writer, out.as_ptr(), 3) } as i64));
        let (mut a, mut b) = ([0u8; 4], [0u8; 16]);
        let input = [
            libc::iovec { iov_base: a.as_mut_ptr().cast(), iov_len: a.len() },
            libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() },
        ];
        // SAFETY: two valid iovecs.
        seen.push(outcome(|| unsafe { libc::readv(reader, input.as_ptr(), 2) } as i64));
        assert_eq!((&a, &b[..7]), (b"onet", &b"wothree"[..]));
    }
    seen
}

#[test]
fn vectored_transfers_match_glibc() {
    let expected = same_as_glibc(vectored_transfers);
    assert_eq!(expected, [(11, 0); 4]);
}

#[test]
fn readv_and_writev_match_glibc_on_kernels_without_rwf_nowait_on_sockets() {
    // The fallback taken where preadv2/pwritev2 refuse RWF_NOWAIT on sockets (EOPNOTSUPP),
    // forced here with the shims' switch, in a child process (the choice is process-wide).
    const NAME: &str = "readv_and_writev_match_glibc_on_kernels_without_rwf_nowait_on_sockets";
    if !common::in_child(NAME) {
        return common::run_in_child_with(NAME, &[("TASKLETS_SHIMS_RWF_NOWAIT", "off")]);
    }
    for probe in [
        zero_byte_reads_of_a_queued_datagram,
        zero_byte_reads_of_an_idle_stream,
        vectored_calls_with_bad_counts,
        vectored_transfers,
        bad_descriptors_and_pointers,
        vectored_calls_that_must_wait_for_the_rest,
    ] {
        assert_eq!(shimmed(probe), glibc(probe));
    }
}

/// Data calls on sockets in states where the kernel answers at once with an error or an end:
/// a closed peer, a listening socket, an unconnected one, a datagram socket without a peer.
fn sockets_in_odd_states() -> Vec<Outcome> {
    let (client, server) = tcp_pair_fds();
    drop(server);
    std::thread::sleep(ms(20)); // the FIN (and the RST after the first write) arrive
    let fd = raw(&client);
    let mut buf = [0u8; 8];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let unconnected = fresh_tcp();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seen = vec![
        // SAFETY (all): valid buffers; the sockets are in odd states on purpose.
        outcome(|| unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 8, 0) } as i64),
        outcome(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) } as i64),
        outcome(|| unsafe { libc::send(fd, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) } as i64),
    ];
    std::thread::sleep(ms(20));
    seen.extend([
        outcome(|| unsafe { libc::send(fd, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) } as i64),
        // `write` raises SIGPIPE as the kernel does (ignored by Rust programs): EPIPE.
        outcome(|| unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) } as i64),
        outcome(|| unsafe { libc::recv(raw(&listener), buf.as_mut_ptr().cast(), 8, 0) } as i64),
        outcome(|| unsafe { libc::recv(raw(&unconnected), buf.as_mut_ptr().cast(), 8, 0) } as i64),
        outcome(
            || unsafe { libc::send(raw(&unconnected), b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) } as i64
        ),
        outcome(|| unsafe { libc::send(raw(&udp), b"x".as_ptr().cast(), 1, 0) } as i64),
        outcome(|| unsafe { libc::write(raw(&listener), b"x".as_ptr().cast(), 1) } as i64),
        outcome(|| unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), 8, libc::MSG_WAITALL) } as i64),
    ]);
    seen
}

#[test]
fn data_calls_on_sockets_in_odd_states_fail_as_in_glibc() {
    same_as_glibc(sockets_in_odd_states);
}

#[test]
fn name_resolution_errors_match_glibc() {
    fn probe() -> Vec<i64> {
        let mut res: *mut libc::addrinfo = ptr::null_mut();
        let mut seen = Vec::new();
        // SAFETY: valid (or null, as allowed) arguments.
        seen.push(unsafe { libc::getaddrinfo(ptr::null(), ptr::null(), ptr::null(), &mut res) } as i64);
        // SAFETY: as above.
        seen.push(unsafe {
            libc::getaddrinfo(c"127.0.0.1".as_ptr(), c"no-such-service-x".as_ptr(), ptr::null(), &mut res)
        } as i64);
        // SAFETY: as above.
        let r = unsafe { libc::getaddrinfo(c"127.0.0.1".as_ptr(), c"80".as_ptr(), ptr::null(), &mut res) };
        seen.push(r as i64);
        if r == 0 {
            // SAFETY: a list getaddrinfo returned.
            unsafe { libc::freeaddrinfo(res) };
        }
        let mut host = [0 as libc::c_char; 64];
        // SAFETY: a null address with length 0: EAI_FAMILY (or similar) from glibc.
        seen.push(
            unsafe { libc::getnameinfo(ptr::null(), 0, host.as_mut_ptr(), 64, ptr::null_mut(), 0, 0) } as i64
        );
        seen
    }
    let expected = same_as_glibc(probe);
    assert_eq!(expected[2], 0);
}

/// `writev` and `sendmsg` of 4 MiB in four buffers to a reader that takes 64 KiB every 5 ms,
/// and `recvmsg(MSG_WAITALL)` of 100 bytes that arrive 10 at a time.
fn vectored_calls_that_must_wait_for_the_rest() -> Vec<Outcome> {
    let mut seen = Vec::new();
    let chunk = vec![3u8; 1 << 20];
    let iovs: Vec<libc::iovec> = (0..4)
        .map(|_| libc::iovec { iov_base: chunk.as_ptr().cast_mut().cast(), iov_len: chunk.len() })
        .collect();
    for use_sendmsg in [false, true] {
        let (client, server) = tcp_pair_fds();
        set_option(raw(&client), libc::SO_SNDBUF, 64 << 10);
        let reader = std::thread::spawn(move || {
            let mut server = std::fs::File::from(server);
            let mut buf = vec![0u8; 64 << 10];
            let mut total = 0;
            loop {
                match std::io::Read::read(&mut server, &mut buf) {
                    Ok(0) | Err(_) => break total,
                    Ok(n) => total += n,
                }
                std::thread::sleep(ms(5));
            }
        });
        seen.push(outcome(|| {
            if use_sendmsg {
                // SAFETY: plain data; all zeroes is an empty header.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = iovs.as_ptr().cast_mut();
                msg.msg_iovlen = iovs.len();
                // SAFETY: a valid header and iovec.
                unsafe { libc::sendmsg(raw(&client), &msg, libc::MSG_NOSIGNAL) as i64 }
            } else {
                // SAFETY: four valid iovecs.
                unsafe { libc::writev(raw(&client), iovs.as_ptr(), 4) as i64 }
            }
        }));
        drop(client);
        seen.push((reader.join().unwrap() as i64, 0));
    }
    let (client, server) = tcp_pair_fds();
    let writer = std::thread::spawn(move || {
        let mut server = std::fs::File::from(server);
        for _ in 0..10 {
            server.write_all(&[9; 10]).unwrap();
            std::thread::sleep(ms(10));
        }
        server
    });
    let mut buf = [0u8; 100];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: plain data; all zeroes is an empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: a valid header and iovec.
    seen.push(outcome(|| unsafe { libc::recvmsg(raw(&client), &mut msg, libc::MSG_WAITALL) as i64 }));
    writer.join().unwrap();
    seen
}

#[test]
fn writev_sendmsg_and_waitall_recvmsg_on_a_stream_move_everything_as_in_glibc() {
    let expected = same_as_glibc(vectored_calls_that_must_wait_for_the_rest);
    assert_eq!(expected, [(4 << 20, 0), (4 << 20, 0), (4 << 20, 0), (4 << 20, 0), (100, 0)]);
}

extern "C" {
    fn __read_chk(fd: libc::c_int, buf: *mut libc::c_void, count: usize, buflen: usize) -> isize;
    fn __recv_chk(
        fd: libc::c_int,
        buf: *mut libc::c_void,
        len: usize,
        buflen: usize,
        flags: libc::c_int,
    ) -> isize;
    fn __poll_chk(
        fds: *mut libc::pollfd,
        nfds: libc::nfds_t,
        timeout: libc::c_int,
        fdslen: usize,
    ) -> libc::c_int;
}

/// The fortified calls C code built with `_FORTIFY_SOURCE` makes, each waiting for data a
/// thread writes 50 ms later; what they return, and whether another tasklet ran meanwhile
/// (`None` on a plain thread, which has no other tasklet).
fn fortified_calls() -> (Vec<Outcome>, Option<bool>) {
    let (client, server) = tcp_pair_fds();
    let fd = raw(&client);
    let ticks = std::rc::Rc::new(std::cell::Cell::new(0));
    let running = std::rc::Rc::new(std::cell::Cell::new(true));
    let ticker = tasklets::io::is_cooperative().then(|| {
        let (ticks, running) = (ticks.clone(), running.clone());
        tasklets::spawn(move || {
            while running.get() {
                tasklets::time::sleep(ms(2));
                ticks.set(ticks.get() + 1);
            }
        })
    });
    let writer = std::thread::spawn(move || {
        let mut server = std::fs::File::from(server);
        for _ in 0..3 {
            std::thread::sleep(ms(50));
            server.write_all(b"ab").unwrap();
        }
        server
    });
    let mut buf = [0u8; 2];
    let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
    let seen = vec![
        // SAFETY (all): valid buffers of the sizes given.
        outcome(|| unsafe { __poll_chk(fds.as_mut_ptr(), 1, 5000, std::mem::size_of_val(&fds)) } as i64),
        outcome(|| unsafe { __recv_chk(fd, buf.as_mut_ptr().cast(), 2, 2, libc::MSG_WAITALL) } as i64),
        outcome(|| unsafe { __read_chk(fd, buf.as_mut_ptr().cast(), 2, 2) } as i64),
        outcome(|| unsafe { __read_chk(fd, buf.as_mut_ptr().cast(), 2, 2) } as i64),
    ];
    running.set(false);
    let others_ran = ticker.map(|t| {
        t.join().unwrap();
        ticks.get() >= 10
    });
    writer.join().unwrap();
    (seen, others_ran)
}

#[test]
fn fortified_calls_from_c_are_cooperative_too() {
    let (expected, _) = glibc(fortified_calls);
    assert_eq!(expected, [(1, 0), (2, 0), (2, 0), (2, 0)]);
    let (seen, others_ran) = shimmed(fortified_calls);
    assert_eq!(seen, expected);
    assert_eq!(others_ran, Some(true), "the thread was blocked in a fortified call");
}

/// `dup2`, `select` and `poll` with the edge cases of their own semantics, which the forwards
/// must keep where the kernel has no such system call (aarch64, riscv64: `dup3`, `pselect6`
/// and `ppoll` stand in, as in glibc there): `dup2(fd, fd)` is `fd` if open and `EBADF` if not
/// (`dup3` says `EINVAL`), `select` normalises a `tv_usec` of a second or more, rejects a
/// negative timeout with `EINVAL` and writes back the time left, `poll` with `-1` waits
/// without a timeout.
fn dup2_select_and_poll_edge_cases() -> Vec<Outcome> {
    let (a, b) = tcp_pair_fds();
    let fd = raw(&a);
    let unopened = 19_999;
    let mut seen = Vec::new();
    // SAFETY: plain calls on integers. (Whether it returned `fd`: the number differs by run.)
    let (r, err) = outcome(|| unsafe { libc::dup2(fd, fd) } as i64);
    seen.push(((r == fd as i64) as i64, err));
    // SAFETY: as above.
    seen.push(outcome(|| unsafe { libc::dup2(unopened, unopened) } as i64));
    // SAFETY: as above; the new number is closed right after.
    let copy = outcome(|| unsafe { libc::dup2(fd, unopened - 1) } as i64);
    seen.push(copy);
    // SAFETY: the duplicate made just above.
    unsafe { libc::close(unopened - 1) };
    std::fs::File::from(b).write_all(b"x").unwrap();
    let select = |tv: &mut libc::timeval| {
        // SAFETY: plain data; all zeroes is an empty set.
        let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is below FD_SETSIZE; `set` and `tv` are valid.
        unsafe {
            libc::FD_SET(fd, &mut set);
            libc::select(fd + 1, &mut set, ptr::null_mut(), ptr::null_mut(), tv) as i64
        }
    };
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 1_500_000 };
    seen.push(outcome(|| select(&mut tv)));
    // The time left, normalised: at most the 1.5 s asked for.
    seen.push(((tv.tv_sec * 1_000_000 + tv.tv_usec <= 1_500_000 && tv.tv_usec < 1_000_000) as i64, 0));
    let mut negative = libc::timeval { tv_sec: -1, tv_usec: 0 };
    seen.push(outcome(|| select(&mut negative)));
    let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
    // SAFETY: one valid pollfd.
    seen.push(outcome(|| unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) } as i64));
    seen.push((fds[0].revents as i64, 0));
    seen
}

#[test]
fn dup2_select_and_poll_keep_their_semantics_on_kernels_without_those_system_calls() {
    let expected: Vec<Outcome> = vec![
        (1, 0),                   // dup2(fd, fd) returns fd
        (-1, libc::EBADF),        // dup2 of an unopened fd onto itself
        (19_998, 0),              // dup2 onto another number
        (1, 0),                   // select with tv_usec = 1.5 s: the fd is ready
        (1, 0),                   // the time left is normalised and at most 1.5 s
        (-1, libc::EINVAL),       // select with a negative timeout
        (1, 0),                   // poll without a timeout: the fd is ready
        (libc::POLLIN as i64, 0), // its revents
    ];
    assert_eq!(glibc(dup2_select_and_poll_edge_cases), expected, "on a plain thread");
    assert_eq!(shimmed(dup2_select_and_poll_edge_cases), expected, "in a tasklet");
}
