//! Integration tests of `tasklets::net::unix`: `UnixListener`, `UnixStream`, `UnixDatagram`.
//!
//! Timing bounds are loose sanity bounds (at least the timeout, well under a few seconds), never
//! speed assertions; what is asserted exactly (bytes, checksums, error kinds, fd counts) is
//! deterministic. Every `#[test]` runs on its own thread and therefore has its own scheduler.
//! Socket files live in the temp dir under names unique to the process and the test, and are
//! removed by a guard. Tests that count the process's fds, or that need `SIGPIPE` at its
//! default action, run in a child process (the test binary re-executed with `CHILD` naming the
//! test, as in `tests/stacks.rs`).

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, ErrorKind, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tasklets::net::unix::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use tasklets::time::sleep;

mod common;
use common::{assert_child_ok, fd_count, in_child, ms, run_child};

/// A socket path in the temp dir, unique to this process and `name`, removed on drop.
struct SockPath(PathBuf);

impl SockPath {
    fn new(name: &str) -> SockPath {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tasklet-{}-{n}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        SockPath(path)
    }
}

impl AsRef<Path> for SockPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for SockPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// CPU time (user + system) the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn is_os_nonblocking(fd: &impl AsFd) -> bool {
    let flags = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0);
    flags & libc::O_NONBLOCK != 0
}

/// The bytes client `id` sends: deterministic, different per client.
fn payload(id: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ id.wrapping_mul(7)) as u8).collect()
}

/// A position-sensitive checksum (Fletcher-style).
fn checksum(bytes: &[u8]) -> u64 {
    let (mut a, mut b) = (0u64, 0u64);
    for &byte in bytes {
        a = (a + byte as u64) % 65_521;
        b = (b + a) % 65_521;
    }
    b << 16 | a
}

// ---------------------------------------------------------------------------------------------
// Listener and streams
// ---------------------------------------------------------------------------------------------

/// 200 clients and an echo server, all tasklets of one thread. Each client writes from one
/// tasklet (a clone of its stream) and reads from another; the data exceeds what the socket
/// buffers hold, so reads and writes park.
#[test]
fn echo_200_clients_on_one_thread() {
    const CLIENTS: usize = 200;
    const LEN: usize = 48 * 1024;
    let path = SockPath::new("echo");
    let listener = UnixListener::bind(&path).unwrap();
    assert_eq!(listener.local_addr().unwrap().as_pathname(), Some(path.0.as_path()));
    let served = Rc::new(Cell::new(0usize));
    let server = {
        let served = served.clone();
        tasklets::spawn(move || {
            for stream in listener.incoming().take(CLIENTS) {
                let mut stream = stream.unwrap();
                let served = served.clone();
                tasklets::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    io::copy(&mut reader, &mut stream).unwrap();
                    served.set(served.get() + 1);
                });
            }
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let path = path.0.clone();
            tasklets::spawn(move || {
                let data = payload(id, LEN);
                let expected = checksum(&data);
                let mut stream = UnixStream::connect(&path).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let sender = tasklets::spawn(move || {
                    writer.write_all(&data).unwrap();
                    writer.shutdown(Shutdown::Write).unwrap();
                });
                let mut echo = Vec::new();
                stream.read_to_end(&mut echo).unwrap();
                sender.join().unwrap();
                assert_eq!(echo.len(), LEN, "client {id}");
                (checksum(&echo), expected)
            })
        })
        .collect();
    tasklets::run();
    server.join().unwrap();
    for (id, client) in clients.into_iter().enumerate() {
        let (got, expected) = client.join().unwrap();
        assert_eq!(got, expected, "client {id}: echoed data differs");
    }
    assert_eq!(served.get(), CLIENTS);
}

#[test]
fn pair_with_read_line_and_io_copy() {
    let (mut a, b) = UnixStream::pair().unwrap();
    let (c, mut d) = UnixStream::pair().unwrap();
    // Forward everything from `b` to `c` with io::copy, in a tasklet.
    let forwarder = tasklets::spawn(move || {
        let mut b = b;
        let mut c = c;
        let n = io::copy(&mut b, &mut c).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        n
    });
    let reader = tasklets::spawn(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(&mut d);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 {
            lines.push(std::mem::take(&mut line));
        }
        lines
    });
    let writer = tasklets::spawn(move || {
        let mut total = 0;
        for i in 0..1000 {
            let line = format!("line {i} {}\n", "x".repeat(i % 97));
            a.write_all(line.as_bytes()).unwrap();
            total += line.len() as u64;
            if i.is_multiple_of(100) {
                tasklets::schedule();
            }
        }
        drop(a); // the end of the stream for `b`
        total
    });
    tasklets::run();
    let total = writer.join().unwrap();
    assert_eq!(forwarder.join().unwrap(), total);
    let lines = reader.join().unwrap();
    assert_eq!(lines.len(), 1000);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("line {i} {}\n", "x".repeat(i % 97)));
    }
}

#[test]
fn vectored_reads_and_writes() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let bufs = [IoSlice::new(b"hello, "), IoSlice::new(b"vectored "), IoSlice::new(b"world")];
    assert_eq!(a.write_vectored(&bufs).unwrap(), 21);
    let (mut x, mut y) = ([0u8; 7], [0u8; 14]);
    let mut slices = [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)];
    assert_eq!(b.read_vectored(&mut slices).unwrap(), 21);
    assert_eq!(&x, b"hello, ");
    assert_eq!(&y, b"vectored world");
}

/// A tasklet parked in a read with a timeout gets `WouldBlock` after the timeout, while
/// another tasklet of the thread keeps running.
#[test]
fn read_timeout_fires_while_others_progress() {
    let (a, _b) = UnixStream::pair().unwrap();
    assert_eq!(a.read_timeout().unwrap(), None);
    a.set_read_timeout(Some(ms(100))).unwrap();
    assert_eq!(a.read_timeout().unwrap(), Some(ms(100)));
    let ticks = Rc::new(Cell::new(0u32));
    let done = Rc::new(Cell::new(false));
    let reader = {
        let (ticks, done) = (ticks.clone(), done.clone());
        tasklets::spawn(move || {
            let start = Instant::now();
            let err = (&a).read(&mut [0; 16]).unwrap_err();
            done.set(true);
            (err.kind(), start.elapsed(), ticks.get())
        })
    };
    let ticker = {
        let (ticks, done) = (ticks.clone(), done.clone());
        tasklets::spawn(move || {
            while !done.get() {
                sleep(ms(5));
                ticks.set(ticks.get() + 1);
            }
        })
    };
    tasklets::run();
    ticker.join().unwrap();
    let (kind, elapsed, ticks_meanwhile) = reader.join().unwrap();
    assert_eq!(kind, ErrorKind::WouldBlock);
    assert!(elapsed >= ms(100), "timed out too early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "timed out too late: {elapsed:?}");
    assert!(ticks_meanwhile >= 5, "the other tasklet barely ran: {ticks_meanwhile} ticks");
}

#[test]
fn write_timeout_fires_when_the_buffer_stays_full() {
    let (a, _b) = UnixStream::pair().unwrap();
    a.set_write_timeout(Some(ms(50))).unwrap();
    assert_eq!(a.write_timeout().unwrap(), Some(ms(50)));
    let chunk = vec![7u8; 64 * 1024];
    let start = Instant::now();
    let mut written = 0usize;
    let err = loop {
        match (&a).write(&chunk) {
            Ok(n) => written += n,
            Err(err) => break err,
        }
        assert!(written < 64 << 20, "the buffer never filled up");
    };
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(written > 0);
    assert!(start.elapsed() >= ms(50));
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn zero_timeouts_are_invalid_input() {
    let (a, _b) = UnixStream::pair().unwrap();
    assert_eq!(a.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(a.set_write_timeout(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);
    let d = UnixDatagram::unbound().unwrap();
    assert_eq!(d.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(d.set_write_timeout(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);
    // And std agrees.
    let (s, _t) = std::os::unix::net::UnixStream::pair().unwrap();
    assert_eq!(s.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn nonblocking_mode_returns_would_block() {
    let path = SockPath::new("nonblocking");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);

    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    assert_eq!((&a).read(&mut [0; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    // Fill the buffer: eventually WouldBlock, immediately.
    let chunk = vec![1u8; 64 * 1024];
    let mut written = 0usize;
    let err = loop {
        match (&a).write(&chunk) {
            Ok(n) => written += n,
            Err(err) => break err,
        }
        assert!(written < 64 << 20, "the buffer never filled up");
    };
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    // Back to blocking mode: the next write parks until a reader drains `b`.
    a.set_nonblocking(false).unwrap();
    let drainer = tasklets::spawn(move || {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = (&b).read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    });
    (&a).write_all(&chunk).unwrap();
    drop(a);
    assert_eq!(drainer.join().unwrap(), written + chunk.len());

    let d = UnixDatagram::unbound().unwrap();
    d.set_nonblocking(true).unwrap();
    assert_eq!(d.recv(&mut [0; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(d.recv_from(&mut [0; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
}

#[test]
fn peer_closed_read_returns_zero_and_write_is_broken_pipe() {
    let (mut a, b) = UnixStream::pair().unwrap();
    let reader = tasklets::spawn(move || (&a).read(&mut [0; 8]).map(|n| (n, a)));
    tasklets::schedule(); // the reader parks
    assert!(reader.is_blocked());
    drop(b);
    let (n, a2) = reader.join().unwrap().unwrap();
    assert_eq!(n, 0);
    a = a2;
    assert_eq!(a.write(b"anyone?").unwrap_err().kind(), ErrorKind::BrokenPipe);
    assert_eq!(a.write_vectored(&[IoSlice::new(b"x")]).unwrap_err().kind(), ErrorKind::BrokenPipe);
}

/// Writing to a closed peer must fail with `BrokenPipe`, not kill the process: run with
/// `SIGPIPE` at its default action (the Rust runtime ignores it otherwise).
#[test]
fn no_sigpipe_on_writes_to_closed_peers() {
    const NAME: &str = "no_sigpipe_on_writes_to_closed_peers";
    if in_child(NAME) {
        // SAFETY: setting a signal disposition before any other thread uses it.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let (mut a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert_eq!(a.write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
        assert_eq!(a.write_vectored(&[IoSlice::new(b"x")]).unwrap_err().kind(), ErrorKind::BrokenPipe);
        let (c, _d) = UnixDatagram::pair().unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(c.send(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
        println!("survived");
        return;
    }
    let out = run_child(NAME, &[]);
    assert_child_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived"));
}

#[test]
fn shutdown_half_closes() {
    let (a, b) = UnixStream::pair().unwrap();
    (&a).write_all(b"request").unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    let server = tasklets::spawn(move || {
        let mut request = String::new();
        (&b).read_to_string(&mut request).unwrap(); // ends: a's write half is shut
        (&b).write_all(b"response").unwrap();
        request
    });
    let mut response = [0; 8];
    (&a).read_exact(&mut response).unwrap();
    assert_eq!(&response, b"response");
    assert_eq!(server.join().unwrap(), "request");
    assert_eq!((&a).write(b"more").unwrap_err().kind(), ErrorKind::BrokenPipe);

    // Shutting down the read half wakes a parked reader, which then reads 0.
    let (c, _d) = UnixStream::pair().unwrap();
    let c = Rc::new(c);
    let reader = {
        let c = c.clone();
        tasklets::spawn(move || (&*c).read(&mut [0; 8]).unwrap())
    };
    tasklets::schedule();
    assert!(reader.is_blocked());
    c.shutdown(Shutdown::Read).unwrap();
    assert_eq!(reader.join().unwrap(), 0);
}

/// Two tasklets reading one stream: each byte goes to exactly one of them.
#[test]
fn two_readers_share_a_stream() {
    let (a, b) = UnixStream::pair().unwrap();
    let b = Rc::new(b);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            tasklets::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 100];
                loop {
                    let n = (&*b).read(&mut buf).unwrap();
                    if n == 0 {
                        return got;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            })
        })
        .collect();
    let data = payload(3, 100_000);
    let writer = {
        let data = data.clone();
        tasklets::spawn(move || {
            for chunk in data.chunks(1000) {
                (&a).write_all(chunk).unwrap();
                tasklets::schedule();
            }
        })
    };
    tasklets::run();
    writer.join().unwrap();
    let total: usize = readers.into_iter().map(|r| r.join().unwrap().len()).sum();
    assert_eq!(total, data.len());
}

#[test]
fn addresses_and_debug() {
    let path = SockPath::new("addr");
    let listener = UnixListener::bind(&path).unwrap();
    let client = UnixStream::connect(&path).unwrap();
    let (server, peer) = listener.accept().unwrap();
    assert!(peer.is_unnamed(), "an unbound client is unnamed: {peer:?}");
    assert!(client.local_addr().unwrap().is_unnamed());
    assert_eq!(client.peer_addr().unwrap().as_pathname(), Some(path.0.as_path()));
    assert_eq!(server.local_addr().unwrap().as_pathname(), Some(path.0.as_path()));
    assert!(server.peer_addr().unwrap().is_unnamed());
    assert!(listener.take_error().unwrap().is_none());
    assert!(client.take_error().unwrap().is_none());

    // Debug is std's, field for field.
    let fd = client.as_raw_fd();
    let debug = format!("{client:?}");
    assert!(debug.starts_with("UnixStream {"), "{debug}");
    assert!(debug.contains(&fd.to_string()), "{debug}");
    assert!(debug.contains("local") && debug.contains("peer"), "{debug}");
    let std_client = std::os::unix::net::UnixStream::from(client);
    assert_eq!(format!("{std_client:?}"), debug);
    let debug = format!("{listener:?}");
    let std_listener = std::os::unix::net::UnixListener::from(listener);
    assert_eq!(format!("{std_listener:?}"), debug);
    let d = UnixDatagram::bind(SockPath::new("addr-dgram")).unwrap();
    let debug = format!("{d:?}");
    assert!(debug.starts_with("UnixDatagram {"), "{debug}");
}

#[cfg(target_os = "linux")]
#[test]
fn abstract_addresses() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("tasklet-test-abstract-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    assert_eq!(listener.local_addr().unwrap().as_abstract_name(), Some(name.as_bytes()));
    let server = tasklets::spawn(move || {
        let (mut stream, peer) = listener.accept().unwrap();
        let mut buf = [0; 2];
        stream.read_exact(&mut buf).unwrap();
        (peer.is_unnamed(), buf)
    });
    let mut client = UnixStream::connect_addr(&addr).unwrap();
    client.write_all(b"hi").unwrap();
    assert_eq!(server.join().unwrap(), (true, *b"hi"));

    let dname = format!("tasklet-test-abstract-dgram-{}", std::process::id());
    let daddr = SocketAddr::from_abstract_name(dname.as_bytes()).unwrap();
    let receiver = UnixDatagram::bind_addr(&daddr).unwrap();
    let cname = format!("tasklet-test-abstract-dgram-client-{}", std::process::id());
    let sender = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(cname.as_bytes()).unwrap()).unwrap();
    assert_eq!(sender.send_to_addr(b"abs", &daddr).unwrap(), 3);
    let mut buf = [0; 8];
    let (n, from) = receiver.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"abs");
    assert_eq!(from.as_abstract_name(), Some(cname.as_bytes()));
    sender.connect_addr(&daddr).unwrap();
    assert_eq!(sender.peer_addr().unwrap().as_abstract_name(), Some(dname.as_bytes()));
}

/// The error kinds of failing binds and connects are std's.
#[test]
fn errors_match_std() {
    use std::os::unix::net as std_net;
    let kind = |r: io::Result<()>| r.map_err(|e| e.kind()).err();
    let missing = SockPath::new("missing");
    let long = PathBuf::from("/tmp").join("x".repeat(200));
    let nul = PathBuf::from("/tmp/a\0b");
    for path in [missing.0.as_path(), long.as_path(), nul.as_path()] {
        assert_eq!(
            kind(UnixStream::connect(path).map(drop)),
            kind(std_net::UnixStream::connect(path).map(drop)),
            "connect {path:?}"
        );
        let d = UnixDatagram::unbound().unwrap();
        let s = std_net::UnixDatagram::unbound().unwrap();
        assert_eq!(kind(d.connect(path)), kind(s.connect(path)), "datagram connect {path:?}");
        assert_eq!(kind(d.send_to(b"x", path).map(drop)), kind(s.send_to(b"x", path).map(drop)));
    }
    assert_eq!(kind(UnixStream::connect(&missing).map(drop)), Some(ErrorKind::NotFound));
    assert_eq!(kind(UnixListener::bind(&long).map(drop)), Some(ErrorKind::InvalidInput));
    assert_eq!(kind(UnixDatagram::bind(&nul).map(drop)), Some(ErrorKind::InvalidInput));

    // Binding a path in use.
    let taken = SockPath::new("taken");
    let _listener = UnixListener::bind(&taken).unwrap();
    assert_eq!(
        kind(UnixListener::bind(&taken).map(drop)),
        kind(std_net::UnixListener::bind(&taken).map(drop))
    );
    assert_eq!(kind(UnixDatagram::bind(&taken).map(drop)), Some(ErrorKind::AddrInUse));

    // A stream connect to a datagram socket, and a datagram connect to nothing listening.
    let dgram = SockPath::new("dgram-target");
    let _d = UnixDatagram::bind(&dgram).unwrap();
    assert_eq!(
        kind(UnixStream::connect(&dgram).map(drop)),
        kind(std_net::UnixStream::connect(&dgram).map(drop))
    );
    let (a, _b) = UnixDatagram::pair().unwrap();
    assert!(a.peer_addr().unwrap().is_unnamed());
    let s = std_net::UnixDatagram::unbound().unwrap();
    let unconnected = UnixDatagram::unbound().unwrap();
    assert_eq!(kind(unconnected.peer_addr().map(drop)), kind(s.peer_addr().map(drop)));
    assert_eq!(kind(unconnected.send(b"x").map(drop)), kind(s.send(b"x").map(drop)));
}

/// With a listen backlog of 1, most connects find it full: they wait (as std's would, in the
/// kernel) and complete once the server accepts.
#[test]
fn connect_waits_for_a_full_backlog() {
    let path = SockPath::new("backlog");
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    socket.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    socket.listen(1).unwrap();
    let listener = UnixListener::from(OwnedFd::from(socket));
    let connected = Rc::new(Cell::new(0usize));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (path, connected) = (path.0.clone(), connected.clone());
            tasklets::spawn(move || {
                let mut stream = UnixStream::connect(&path).unwrap();
                connected.set(connected.get() + 1);
                stream.write_all(&[i]).unwrap();
            })
        })
        .collect();
    sleep(ms(30)); // all clients tried; only the backlog's worth got in
    let early = connected.get();
    assert!(early < 8, "the backlog of 1 admitted {early} connections");
    let mut seen = Vec::new();
    for _ in 0..8 {
        let (mut stream, _) = listener.accept().unwrap();
        let mut byte = [0];
        stream.read_exact(&mut byte).unwrap();
        seen.push(byte[0]);
    }
    for client in clients {
        client.join().unwrap();
    }
    seen.sort();
    assert_eq!(seen, (0..8).collect::<Vec<u8>>());
}

// ---------------------------------------------------------------------------------------------
// Datagrams
// ---------------------------------------------------------------------------------------------

#[test]
fn datagram_send_to_and_recv_from_between_tasklets() {
    const SENDERS: usize = 20;
    const EACH: usize = 10;
    let server_path = SockPath::new("dgram-server");
    let server = UnixDatagram::bind(&server_path).unwrap();
    let paths: Vec<SockPath> = (0..SENDERS).map(|i| SockPath::new(&format!("dgram-client{i}"))).collect();
    let receiver = tasklets::spawn(move || {
        let mut per_sender = vec![Vec::new(); SENDERS];
        let mut buf = [0u8; 64];
        for _ in 0..SENDERS * EACH {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let name = from.as_pathname().unwrap().file_name().unwrap().to_str().unwrap().to_owned();
            let msg = std::str::from_utf8(&buf[..n]).unwrap().to_owned();
            let (sender, seq) = msg.split_once(':').unwrap();
            let sender: usize = sender.parse().unwrap();
            assert!(name.ends_with(&format!("dgram-client{sender}.sock")), "{name} sent {msg}");
            per_sender[sender].push(seq.parse::<usize>().unwrap());
            // Reply to the sender's address.
            server.send_to(&buf[..n], from.as_pathname().unwrap()).unwrap();
        }
        per_sender
    });
    let senders: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let socket = UnixDatagram::bind(path).unwrap();
            let server_path = server_path.0.clone();
            tasklets::spawn(move || {
                let mut buf = [0u8; 64];
                for seq in 0..EACH {
                    let msg = format!("{i}:{seq}");
                    assert_eq!(socket.send_to(msg.as_bytes(), &server_path).unwrap(), msg.len());
                    let (n, from) = socket.recv_from(&mut buf).unwrap();
                    assert_eq!(&buf[..n], msg.as_bytes());
                    assert_eq!(from.as_pathname(), Some(server_path.as_path()));
                }
            })
        })
        .collect();
    tasklets::run();
    for sender in senders {
        sender.join().unwrap();
    }
    let per_sender = receiver.join().unwrap();
    for (i, seqs) in per_sender.iter().enumerate() {
        assert_eq!(*seqs, (0..EACH).collect::<Vec<_>>(), "sender {i}: datagrams lost or reordered");
    }
}

#[test]
fn connected_datagrams_send_and_recv() {
    let a_path = SockPath::new("dgram-a");
    let b_path = SockPath::new("dgram-b");
    let a = UnixDatagram::bind(&a_path).unwrap();
    let b = UnixDatagram::bind(&b_path).unwrap();
    a.connect(&b_path).unwrap();
    b.connect(&a_path).unwrap();
    assert_eq!(a.peer_addr().unwrap().as_pathname(), Some(b_path.0.as_path()));
    assert_eq!(b.local_addr().unwrap().as_pathname(), Some(b_path.0.as_path()));
    let ponger = tasklets::spawn(move || {
        let mut buf = [0u8; 16];
        let mut count = 0;
        loop {
            let n = b.recv(&mut buf).unwrap();
            if &buf[..n] == b"stop" {
                return count;
            }
            count += 1;
            b.send(&buf[..n]).unwrap();
        }
    });
    let mut buf = [0u8; 16];
    for i in 0..100u32 {
        a.send(&i.to_le_bytes()).unwrap();
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &i.to_le_bytes());
    }
    a.send(b"stop").unwrap();
    assert_eq!(ponger.join().unwrap(), 100);

    // A pair, and truncation of a datagram longer than the buffer.
    let (c, d) = UnixDatagram::pair().unwrap();
    c.send(b"0123456789").unwrap();
    let mut small = [0u8; 4];
    assert_eq!(d.recv(&mut small).unwrap(), 4);
    assert_eq!(&small, b"0123");
    // A datagram from an unbound socket comes from the unnamed address.
    // (Not to `a`: a socket connected elsewhere refuses it, EPERM.)
    let r_path = SockPath::new("dgram-r");
    let r = UnixDatagram::bind(&r_path).unwrap();
    let unbound = UnixDatagram::unbound().unwrap();
    unbound.send_to(b"anon", &r_path).unwrap();
    let (n, from) = r.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"anon");
    assert!(from.is_unnamed(), "{from:?}");
}

#[test]
fn datagram_recv_timeout() {
    let socket = UnixDatagram::bind(SockPath::new("dgram-timeout")).unwrap();
    socket.set_read_timeout(Some(ms(60))).unwrap();
    assert_eq!(socket.read_timeout().unwrap(), Some(ms(60)));
    assert_eq!(socket.write_timeout().unwrap(), None);
    let other_ran = Rc::new(Cell::new(false));
    {
        let other_ran = other_ran.clone();
        tasklets::spawn(move || other_ran.set(true));
    }
    let start = Instant::now();
    let err = socket.recv_from(&mut [0; 8]).unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(elapsed >= ms(60), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(other_ran.get(), "the main tasklet's wait let the other tasklet run");
    let start = Instant::now();
    assert_eq!(socket.recv(&mut [0; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(start.elapsed() >= ms(60));
    socket.set_read_timeout(None).unwrap();
    assert_eq!(socket.read_timeout().unwrap(), None);
}

/// A send to a receiver whose queue is full of *other* sockets' datagrams waits, and
/// completes once the receiver drains its queue (the kernel sends the waiting socket no
/// readiness event for that; the send retries).
#[test]
fn datagram_send_waits_for_a_full_receiver() {
    let path = SockPath::new("dgram-full");
    let receiver = UnixDatagram::bind(&path).unwrap();
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut queued = 0usize;
    loop {
        match filler.send_to(b"filler", &path) {
            Ok(_) => queued += 1,
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err) => panic!("{err}"),
        }
        assert!(queued < 1_000_000, "the receiver's queue never filled up");
    }
    let sender = UnixDatagram::unbound().unwrap();
    let sent_at = Rc::new(Cell::new(None));
    let blocked_sender = {
        let (path, sent_at) = (path.0.clone(), sent_at.clone());
        tasklets::spawn(move || {
            sender.send_to(b"last", &path).unwrap();
            sent_at.set(Some(Instant::now()));
        })
    };
    tasklets::schedule();
    assert!(blocked_sender.is_alive() && sent_at.get().is_none(), "the send should wait");
    // It waits without spinning: each failed attempt makes the kernel signal write space on
    // the sender's socket, so retrying on every readiness event would burn the CPU.
    let cpu = thread_cpu_time();
    sleep(ms(100));
    let busy = thread_cpu_time() - cpu;
    assert!(sent_at.get().is_none(), "the send should still wait");
    assert!(busy < ms(30), "the waiting send used {busy:?} of CPU in 100 ms");
    let drained_at = Instant::now();
    let mut buf = [0u8; 16];
    for _ in 0..queued {
        assert_eq!(receiver.recv(&mut buf).unwrap(), 6);
    }
    let n = receiver.recv(&mut buf).unwrap(); // parks until the waiting send gets through
    assert_eq!(&buf[..n], b"last");
    blocked_sender.join().unwrap();
    assert!(sent_at.get().unwrap() >= drained_at);
}

#[test]
fn datagram_shutdown_and_clones() {
    let (a, b) = UnixDatagram::pair().unwrap();
    let a2 = a.try_clone().unwrap();
    assert_ne!(a.as_raw_fd(), a2.as_raw_fd());
    // Settings are shared by clones, as std's are.
    a2.set_read_timeout(Some(ms(30))).unwrap();
    assert_eq!(a.read_timeout().unwrap(), Some(ms(30)));
    a.set_nonblocking(true).unwrap();
    assert_eq!(a2.recv(&mut [0; 4]).unwrap_err().kind(), ErrorKind::WouldBlock);
    a.set_nonblocking(false).unwrap();
    b.send(b"to a").unwrap();
    let mut buf = [0; 8];
    assert_eq!(a2.recv(&mut buf).unwrap(), 4);
    // A parked receiver wakes up when the read half is shut down.
    a.set_read_timeout(None).unwrap();
    let a = Rc::new(a);
    let receiver = {
        let a = a.clone();
        tasklets::spawn(move || a.recv(&mut [0; 8]).unwrap())
    };
    tasklets::schedule();
    assert!(receiver.is_blocked());
    a.shutdown(Shutdown::Read).unwrap();
    assert_eq!(receiver.join().unwrap(), 0);
    // Afterwards a receive returns 0 at once, and a non-blocking one fails, both as std's.
    assert_eq!(a.recv(&mut [0; 8]).unwrap(), 0);
    assert!(a.recv_from(&mut [0; 8]).unwrap().1.is_unnamed());
    a.set_nonblocking(true).unwrap();
    assert_eq!(a.recv(&mut [0; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    a.set_nonblocking(false).unwrap();
    let (s, _t) = std::os::unix::net::UnixDatagram::pair().unwrap();
    s.shutdown(Shutdown::Read).unwrap();
    assert_eq!(s.recv(&mut [0; 8]).unwrap(), 0);
    s.set_nonblocking(true).unwrap();
    assert_eq!(s.recv(&mut [0; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    a.shutdown(Shutdown::Write).unwrap();
    assert_eq!(a.send(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
    assert!(a.take_error().unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// Threads, conversions, kills
// ---------------------------------------------------------------------------------------------

/// On threads that never spawn a tasklet the calls block the thread, as std's do.
#[test]
fn plain_threads_without_tasklets() {
    let path = SockPath::new("threads");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap(); // blocks this thread
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        stream.write_all(&request.iter().rev().copied().collect::<Vec<u8>>()).unwrap();
        request.len()
    });
    let client_path = path.0.clone();
    let client = std::thread::spawn(move || {
        std::thread::sleep(ms(20)); // let the server block in accept first
        let mut stream = UnixStream::connect(&client_path).unwrap();
        stream.write_all(b"abcdef").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    });
    assert_eq!(client.join().unwrap(), "fedcba");
    assert_eq!(server.join().unwrap(), 6);

    // A datagram receive blocking a thread, fed by another thread.
    let (a, b) = UnixDatagram::pair().unwrap();
    let receiver = std::thread::spawn(move || {
        let mut buf = [0; 8];
        let n = b.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    std::thread::sleep(ms(20));
    a.send(b"thread").unwrap();
    assert_eq!(receiver.join().unwrap(), b"thread");
}

/// A socket made on one thread, used by the tasklets of another.
#[test]
fn sockets_move_between_threads() {
    let (a, b) = UnixStream::pair().unwrap();
    // `b` first waits on this thread (registering with its poller)...
    b.set_read_timeout(Some(ms(10))).unwrap();
    assert_eq!((&b).read(&mut [0; 1]).unwrap_err().kind(), ErrorKind::WouldBlock);
    b.set_read_timeout(None).unwrap();
    // ...then on another thread's tasklet.
    let other = std::thread::spawn(move || {
        let t = tasklets::spawn(move || {
            let mut s = String::new();
            (&b).read_to_string(&mut s).unwrap();
            s
        });
        tasklets::run();
        t.join().unwrap()
    });
    std::thread::sleep(ms(20));
    (&a).write_all(b"across threads").unwrap();
    drop(a);
    assert_eq!(other.join().unwrap(), "across threads");
}

#[test]
fn conversions_round_trip() {
    use std::os::unix::net as std_net;

    // Ours into std: blocking again, with the timeouts set on the socket.
    let (a, b) = UnixStream::pair().unwrap();
    assert!(is_os_nonblocking(&a), "ours are non-blocking at the OS level");
    a.set_read_timeout(Some(ms(40))).unwrap();
    let std_a: std_net::UnixStream = a.into();
    assert!(!is_os_nonblocking(&std_a));
    assert_eq!(std_a.read_timeout().unwrap(), Some(ms(40)));
    let start = Instant::now();
    assert_eq!((&std_a).read(&mut [0; 4]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(start.elapsed() >= ms(30));

    // std into ours: non-blocking at the OS level, with std's timeouts and mode.
    let a = UnixStream::from(std_a);
    assert!(is_os_nonblocking(&a));
    assert_eq!(a.read_timeout().unwrap(), Some(ms(40)));
    (&b).write_all(b"ping").unwrap();
    let mut buf = [0; 4];
    (&a).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    let (s, _t) = std_net::UnixStream::pair().unwrap();
    s.set_nonblocking(true).unwrap();
    let ours = UnixStream::from(s);
    assert_eq!((&ours).read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    let back: std_net::UnixStream = ours.into();
    assert!(is_os_nonblocking(&back), "the user's non-blocking mode is kept");

    // OwnedFd and raw fds.
    let fd_number = b.as_raw_fd();
    let owned = OwnedFd::from(b);
    assert_eq!(owned.as_raw_fd(), fd_number);
    assert!(!is_os_nonblocking(&owned));
    let b = UnixStream::from(owned);
    let raw = b.into_raw_fd();
    assert_eq!(raw, fd_number);
    // SAFETY: `raw` was just given up by `b`.
    let b = unsafe { UnixStream::from_raw_fd(raw) };
    (&b).write_all(b"pong").unwrap();
    (&a).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");

    // Listeners and datagrams.
    let path = SockPath::new("convert");
    let std_listener = std_net::UnixListener::bind(&path).unwrap();
    let listener = UnixListener::from(std_listener);
    let client = std::thread::spawn({
        let path = path.0.clone();
        move || std_net::UnixStream::connect(path).unwrap()
    });
    let (_stream, _) = listener.accept().unwrap();
    client.join().unwrap();
    let std_listener: std_net::UnixListener = listener.into();
    assert!(!is_os_nonblocking(&std_listener));
    let listener = unsafe { UnixListener::from_raw_fd(std_listener.into_raw_fd()) };
    assert_eq!(listener.local_addr().unwrap().as_pathname(), Some(path.0.as_path()));

    let (d, e) = UnixDatagram::pair().unwrap();
    let std_d: std_net::UnixDatagram = d.into();
    assert!(!is_os_nonblocking(&std_d));
    std_d.send(b"dgram").unwrap();
    let e = UnixDatagram::from(OwnedFd::from(e));
    assert_eq!(e.recv(&mut [0; 8]).unwrap(), 5);
    let d = UnixDatagram::from(std_d);
    assert!(is_os_nonblocking(&d));
}

/// The clone of a stream is a second fd; the two share settings as std's clones do.
#[test]
fn try_clone_shares_settings() {
    let (a, _b) = UnixStream::pair().unwrap();
    let a2 = a.try_clone().unwrap();
    assert_ne!(a.as_raw_fd(), a2.as_raw_fd());
    a.set_write_timeout(Some(ms(25))).unwrap();
    assert_eq!(a2.write_timeout().unwrap(), Some(ms(25)));
    a2.set_nonblocking(true).unwrap();
    assert_eq!((&a).read(&mut [0; 1]).unwrap_err().kind(), ErrorKind::WouldBlock);
    let path = SockPath::new("clone");
    let listener = UnixListener::bind(&path).unwrap();
    let l2 = listener.try_clone().unwrap();
    l2.set_nonblocking(true).unwrap();
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    // `&UnixListener` iterates like std's.
    listener.set_nonblocking(false).unwrap();
    let _client = UnixStream::connect(&path).unwrap();
    let first = (&l2).into_iter().next().unwrap();
    assert!(first.is_ok());
}

/// Killing a tasklet parked in a read (or an accept) leaves no fd behind once its socket is
/// dropped: the poller registration goes with the socket.
#[test]
fn killing_parked_tasklets_leaks_no_fds() {
    const NAME: &str = "killing_parked_tasklets_leaks_no_fds";
    if in_child(NAME) {
        // Create this thread's poller first (its fds stay for the thread's life).
        let (warm, _w) = UnixStream::pair().unwrap();
        warm.set_read_timeout(Some(ms(1))).unwrap();
        assert_eq!((&warm).read(&mut [0; 1]).unwrap_err().kind(), ErrorKind::WouldBlock);
        drop((warm, _w));
        let before = fd_count();

        let path = SockPath::new("kill");
        let mut peers = Vec::new();
        let mut parked = Vec::new();
        for _ in 0..50 {
            let (a, b) = UnixStream::pair().unwrap();
            peers.push(b);
            parked.push(tasklets::spawn(move || {
                let mut a = a;
                let _ = a.read(&mut [0; 8]);
                unreachable!("nobody writes");
            }));
        }
        let listener = UnixListener::bind(&path).unwrap();
        parked.push(tasklets::spawn(move || {
            let _ = listener.accept();
            unreachable!("nobody connects");
        }));
        let (d, e) = UnixDatagram::pair().unwrap();
        peers.push(UnixStream::from(OwnedFd::from(e))); // just to keep it open
        parked.push(tasklets::spawn(move || {
            let _ = d.recv(&mut [0; 8]);
            unreachable!("nobody sends");
        }));
        tasklets::schedule(); // each runs and parks
        assert!(parked.iter().all(|t| t.is_blocked()));
        assert!(fd_count() > before + 100);
        for t in &parked {
            t.kill();
        }
        assert!(parked.iter().all(|t| !t.is_alive()));
        drop(peers);
        drop(path);
        let after = fd_count();
        println!("fds before {before}, after {after}");
        assert_eq!(after, before, "fds leaked");
        // The thread is idle: `run` returns at once, nothing is left waiting.
        let start = Instant::now();
        tasklets::run();
        assert!(start.elapsed() < Duration::from_secs(1));
        return;
    }
    let out = run_child(NAME, &[]);
    assert_child_ok(&out);
}

#[test]
fn types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<UnixListener>();
    assert_send_sync::<UnixStream>();
    assert_send_sync::<UnixDatagram>();
    assert_send_sync::<tasklets::net::unix::Incoming<'static>>();
    assert_send_sync::<SocketAddr>();
}

// ---------------------------------------------------------------------------------------------
// Reactor bugs found while writing these tests (kept failing, ignored until fixed)
// ---------------------------------------------------------------------------------------------

/// Regression: a tasklet parked in an I/O wait, made runnable another way (here: `kill`) while
/// a readiness event for its fd was pending, was queued twice: the dispatcher polled before
/// switching to it, and `Reactor::poll` woke every waiter of the fd without checking that it
/// was still blocked. The killed tasklet finished, and its second queue entry made the
/// dispatcher panic ("a runnable tasklet has a coroutine").
#[test]
fn kill_with_a_pending_readiness_event() {
    const NAME: &str = "kill_with_a_pending_readiness_event";
    if in_child(NAME) {
        let (a, b) = UnixStream::pair().unwrap();
        let t = tasklets::spawn(move || {
            let _ = (&a).read(&mut [0; 1]);
        });
        tasklets::schedule(); // t parks in the read
        (&b).write_all(b"x").unwrap(); // a readiness event is pending
        std::thread::sleep(ms(1)); // the last poll is old enough for the dispatcher to poll
        t.kill();
        tasklets::run();
        assert!(!t.is_alive());
        return;
    }
    assert_child_ok(&run_child(NAME, &[]));
}

/// Regression, the same with a read timeout: the timer wakes the reader (it stays in the fd's
/// waiters until it runs), the data arrives, and a poll happens before the reader runs; it was
/// queued twice, returned, and the dispatcher panicked on the second entry.
#[test]
fn read_timeout_then_data_before_the_reader_runs() {
    const NAME: &str = "read_timeout_then_data_before_the_reader_runs";
    if in_child(NAME) {
        let start = Instant::now();
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(ms(20))).unwrap();
        let reader = tasklets::spawn(move || (&a).read(&mut [0; 1]).map_err(|e| e.kind()));
        // Two tasklets whose timers expire just before the reader's, so that the same timer
        // check queues them ahead of it.
        let writer = tasklets::spawn(move || {
            tasklets::time::sleep_until(start + ms(10));
            (&b).write_all(b"x").unwrap(); // the reader's fd becomes readable
            sleep(ms(50));
            b
        });
        let slow = tasklets::spawn(move || {
            tasklets::time::sleep_until(start + ms(11));
            std::thread::sleep(ms(1)); // the last poll gets old: the dispatcher polls next
            sleep(ms(50));
        });
        tasklets::schedule(); // all three park
        std::thread::sleep(ms(30)); // every deadline passes meanwhile
        tasklets::run();
        let _ = reader.join().unwrap();
        drop((writer, slow));
        return;
    }
    assert_child_ok(&run_child(NAME, &[]));
}

/// An accepted Unix stream is non-blocking at the OS level (`accept4` made it so; issue 14
/// dropped the `fcntl` that set it again), so a read with nothing to read parks the tasklet
/// and the thread's other tasklets run, instead of the thread blocking in `recv`.
#[test]
fn a_read_of_an_accepted_unix_stream_parks_the_tasklet_not_the_thread() {
    let dir = std::env::temp_dir().join(format!("tasklets-accepted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let (server, _) = listener.accept().unwrap();
    assert!(is_os_nonblocking(&server));
    let reader = tasklets::spawn(move || {
        let mut buf = [0u8; 8];
        (&server).read(&mut buf).unwrap()
    });
    // Runs only if the reader parked rather than blocking the thread in `recv`.
    let writer = tasklets::spawn(move || {
        let mut client = client;
        client.write_all(b"hi").unwrap();
        client
    });
    tasklets::run();
    assert_eq!(reader.join().unwrap(), 2);
    drop(writer.join().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
