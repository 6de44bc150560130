//! Integration tests of `tasklets::net::{TcpListener, TcpStream}` on real sockets (127.0.0.1
//! only).
//!
//! Every `#[test]` runs on its own thread and therefore has its own scheduler. Wall-clock bounds
//! are loose sanity bounds, never speed assertions. Tests that count the process's file
//! descriptors, lower its fd limit or depend on the default `SIGPIPE` disposition run their
//! body in a child process (the test binary re-executed with `TASKLET_NET_CHILD` naming the
//! test), so that the parallel tests of this binary cannot disturb them.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tasklets::net::{Incoming, TcpListener, TcpStream};
use tasklets::time::sleep;

mod common;
use common::{fd_count, in_child, ms, run_in_child};

/// FNV-1a, to check payloads.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// `len` deterministic pseudo-random bytes.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Raises the soft fd limit to the hard one (the 500-connection test needs 1000+ fds).
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// A connected pair: (client, server side).
fn pair() -> (TcpStream, TcpStream) {
    let listener = local();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, peer) = listener.accept().unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    (client, server)
}

/// Shrinks the kernel's buffers of `stream` so that a few hundred KB fill them.
fn small_buffers(stream: &TcpStream) {
    buffers(stream, 16 * 1024);
}

fn buffers(stream: &TcpStream, size: usize) {
    let sock = socket2::SockRef::from(stream);
    sock.set_send_buffer_size(size).unwrap();
    sock.set_recv_buffer_size(size).unwrap();
}

/// An address where nothing listens (a port just released).
fn closed_port() -> SocketAddr {
    let listener = local();
    listener.local_addr().unwrap()
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a plain system call on a local struct.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

// ---------------------------------------------------------------------------------------------
// Many connections on one thread
// ---------------------------------------------------------------------------------------------

/// 500 client tasklets and a server (an acceptor tasklet spawning one tasklet per connection),
/// all on this thread; each client sends a few KB and checks the echo against its checksum.
#[test]
fn echo_500_clients_on_one_thread() {
    const CLIENTS: usize = 500;
    raise_fd_limit();
    let listener = local();
    let addr = listener.local_addr().unwrap();
    let served = Rc::new(Cell::new(0usize));
    let acceptor = {
        let served = served.clone();
        tasklets::spawn(move || {
            for stream in listener.incoming().take(CLIENTS) {
                let mut stream = stream.unwrap();
                let served = served.clone();
                tasklets::spawn(move || {
                    let mut buf = [0u8; 1500];
                    loop {
                        match stream.read(&mut buf).unwrap() {
                            0 => break,
                            n => stream.write_all(&buf[..n]).unwrap(),
                        }
                    }
                    served.set(served.get() + 1);
                });
            }
        })
    };
    let verified = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    for i in 0..CLIENTS {
        let verified = verified.clone();
        tasklets::spawn(move || {
            let data = payload(i as u64, 2000 + (i * 37) % 4000);
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(&data).unwrap();
            let mut echo = vec![0u8; data.len()];
            stream.read_exact(&mut echo).unwrap();
            assert_eq!(checksum(&echo), checksum(&data), "client {i}: echo differs");
            stream.shutdown(Shutdown::Write).unwrap();
            assert_eq!(stream.read(&mut [0u8; 16]).unwrap(), 0, "client {i}: more than the echo");
            verified.set(verified.get() + 1);
        });
    }
    tasklets::run();
    let elapsed = start.elapsed();
    println!("{CLIENTS} echo clients on one thread: {elapsed:?}");
    acceptor.join().unwrap();
    assert_eq!(verified.get(), CLIENTS);
    assert_eq!(served.get(), CLIENTS);
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

/// Code written against `Read + Write` (BufReader::read_line, io::copy, write_all, read_exact)
/// works unchanged on the tasklet types.
#[test]
fn generic_read_write_code_works_unchanged() {
    fn serve_lines<S: Read + Write>(mut reader: BufReader<S>, mut writer: S) -> io::Result<usize> {
        let mut line = String::new();
        let mut count = 0;
        while reader.read_line(&mut line)? > 0 {
            writer.write_all(line.trim_end().chars().rev().collect::<String>().as_bytes())?;
            writer.write_all(b"\n")?;
            writer.flush()?;
            line.clear();
            count += 1;
        }
        Ok(count)
    }

    let listener = local();
    let addr = listener.local_addr().unwrap();
    let server = tasklets::spawn(move || {
        let (stream, _) = listener.accept()?;
        let lines = serve_lines(BufReader::new(stream.try_clone()?), stream)?;
        // Then echo raw bytes with io::copy on a second connection.
        let (stream, _) = listener.accept()?;
        let copied = io::copy(&mut &stream, &mut &stream)?;
        io::Result::Ok((lines, copied))
    });
    let client = tasklets::spawn(move || {
        let stream = TcpStream::connect(addr)?;
        let mut reader = BufReader::new(&stream);
        let mut replies = Vec::new();
        for word in ["tasklet", "stackless", "rust"] {
            writeln!(&stream, "{word}")?;
            let mut reply = String::new();
            reader.read_line(&mut reply)?;
            replies.push(reply);
        }
        stream.shutdown(Shutdown::Write)?;
        let mut stream = TcpStream::connect(addr)?;
        let data = payload(7, 30_000);
        stream.write_all(&data)?;
        let mut echo = vec![0; data.len()];
        stream.read_exact(&mut echo)?;
        assert!(echo == data);
        io::Result::Ok(replies)
    });
    tasklets::run();
    let replies = client.join().unwrap().unwrap();
    assert_eq!(replies, ["telksat\n", "sselkcats\n", "tsur\n"]);
    assert_eq!(server.join().unwrap().unwrap(), (3, 30_000));
}

/// 4 MiB through 64 KiB socket buffers: writes and reads are partial, and the bytes arrive
/// intact and in order. (Much smaller buffers make TCP itself stall on delayed ACKs, with std's
/// blocking sockets too: 5 s for this transfer with 16 KiB buffers.)
#[test]
fn large_payload_with_partial_reads_and_writes() {
    const LEN: usize = 4 << 20;
    let (client, server) = pair();
    buffers(&client, 64 * 1024);
    buffers(&server, 64 * 1024);
    let data = Rc::new(payload(42, LEN));
    let echo = tasklets::spawn(move || io::copy(&mut &server, &mut &server).unwrap());
    let writer = {
        let (client, data) = (client.try_clone().unwrap(), data.clone());
        tasklets::spawn(move || {
            let (mut off, mut partial) = (0, 0);
            while off < data.len() {
                let want = (data.len() - off).min(1 << 20);
                let n = (&client).write(&data[off..off + want]).unwrap();
                assert!(n > 0);
                partial += usize::from(n < want);
                off += n;
            }
            client.shutdown(Shutdown::Write).unwrap();
            partial
        })
    };
    let reader = tasklets::spawn(move || {
        let (mut received, mut reads) = (Vec::with_capacity(LEN), 0);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match (&client).read(&mut buf).unwrap() {
                0 => break,
                n => received.extend_from_slice(&buf[..n]),
            }
            reads += 1;
        }
        (received, reads)
    });
    tasklets::run();
    let partial = writer.join().unwrap();
    let (received, reads) = reader.join().unwrap();
    assert_eq!(echo.join().unwrap(), LEN as u64);
    println!("4 MiB: {partial} partial writes, {reads} reads");
    assert!(partial > 0, "no write was partial");
    assert!(reads > 4, "only {reads} reads");
    assert_eq!(received.len(), LEN);
    assert!(received == *data, "the echo differs");
}

#[test]
fn vectored_reads_and_writes() {
    let (client, mut server) = pair();
    let bufs = [IoSlice::new(b"one "), IoSlice::new(b"two "), IoSlice::new(b"three")];
    let n = (&client).write_vectored(&bufs).unwrap();
    assert_eq!(n, 13);
    let (mut a, mut b) = ([0u8; 4], [0u8; 9]);
    let mut got = 0;
    while got < 13 {
        let mut bufs =
            [IoSliceMut::new(&mut a[got.min(4)..]), IoSliceMut::new(&mut b[got.saturating_sub(4)..])];
        got += server.read_vectored(&mut bufs).unwrap();
    }
    assert_eq!((&a, &b), (b"one ", b"two three"));
}

// ---------------------------------------------------------------------------------------------
// Timeouts and non-blocking mode
// ---------------------------------------------------------------------------------------------

#[test]
fn read_timeout_fires_while_other_tasklets_run() {
    let (client, server) = pair();
    client.set_read_timeout(Some(ms(150))).unwrap();
    assert_eq!(client.read_timeout().unwrap(), Some(ms(150)));
    let done = Rc::new(Cell::new(false));
    let ticks = Rc::new(Cell::new(0u32));
    let reader = {
        let done = done.clone();
        tasklets::spawn(move || {
            let start = Instant::now();
            let err = (&client).read(&mut [0u8; 16]).unwrap_err();
            let elapsed = start.elapsed();
            done.set(true);
            // Still usable after the timeout.
            let mut buf = [0u8; 5];
            (&client).read_exact(&mut buf).unwrap();
            (err.kind(), elapsed, buf)
        })
    };
    {
        let (done, ticks) = (done.clone(), ticks.clone());
        tasklets::spawn(move || {
            while !done.get() {
                ticks.set(ticks.get() + 1);
                sleep(ms(1));
            }
            (&server).write_all(b"later").unwrap();
        });
    }
    tasklets::run();
    let (kind, elapsed, buf) = reader.join().unwrap();
    println!("read timeout after {elapsed:?}; the other tasklet ticked {} times", ticks.get());
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(elapsed >= ms(150), "timed out early: {elapsed:?}");
    assert!(elapsed < ms(3000), "timed out late: {elapsed:?}");
    assert!(ticks.get() >= 10, "the other tasklet ticked only {} times", ticks.get());
    assert_eq!(&buf, b"later");
}

#[test]
fn timeout_arguments_as_std() {
    let (client, _server) = pair();
    assert_eq!(client.read_timeout().unwrap(), None);
    assert_eq!(client.write_timeout().unwrap(), None);
    let err = client.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let err = client.set_write_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    client.set_write_timeout(Some(ms(70))).unwrap();
    assert_eq!(client.write_timeout().unwrap(), Some(ms(70)));
    client.set_write_timeout(None).unwrap();
    assert_eq!(client.write_timeout().unwrap(), None);
    // std agrees on the kinds.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let std_stream = std::net::TcpStream::connect(std_listener.local_addr().unwrap()).unwrap();
    let std_err = std_stream.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(std_err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn write_timeout_fires_when_the_peer_does_not_read() {
    let (client, server) = pair();
    small_buffers(&client);
    small_buffers(&server);
    client.set_write_timeout(Some(ms(100))).unwrap();
    let writer = tasklets::spawn(move || {
        let chunk = vec![7u8; 64 * 1024];
        let mut total = 0usize;
        let start = Instant::now();
        loop {
            match (&client).write(&chunk) {
                Ok(n) => total += n,
                Err(err) => return (err.kind(), total, start.elapsed()),
            }
            assert!(total < 64 << 20, "wrote {total} bytes without blocking");
        }
    });
    tasklets::run();
    let (kind, total, elapsed) = writer.join().unwrap();
    println!("write timeout after {total} bytes, {elapsed:?}");
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(total > 0);
    assert!(elapsed >= ms(100), "timed out early: {elapsed:?}");
    drop(server);
}

#[test]
fn nonblocking_mode_gives_would_block_at_once() {
    let listener = local();
    listener.set_nonblocking(true).unwrap();
    let err = listener.accept().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    // A pending connection is accepted in non-blocking mode too (wait until it is queued).
    let server = loop {
        match listener.accept() {
            Ok((server, _)) => break server,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => tasklets::time::sleep(ms(1)),
            Err(err) => panic!("{err}"),
        }
    };
    client.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let err = (&client).read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let err = client.peek(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    // Writes until the buffers are full, then WouldBlock.
    small_buffers(&client);
    let chunk = vec![1u8; 64 * 1024];
    let mut total = 0;
    let err = loop {
        match (&client).write(&chunk) {
            Ok(n) => total += n,
            Err(err) => break err,
        }
        assert!(total < 64 << 20, "wrote {total} bytes without WouldBlock");
    };
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(start.elapsed() < ms(2000), "non-blocking calls waited: {:?}", start.elapsed());
    // Back to blocking: a read waits for the data.
    client.set_nonblocking(false).unwrap();
    let writer = tasklets::spawn(move || {
        sleep(ms(20));
        (&server).write_all(b"x").unwrap();
        server
    });
    let mut byte = [0u8; 1];
    (&client).read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
    drop(writer.join().unwrap());
}

// ---------------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------------

#[test]
fn connection_refused_on_a_closed_port() {
    let addr = closed_port();
    let err = TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    // Inside a tasklet, and with a timeout.
    let t = tasklets::spawn(move || {
        let a = TcpStream::connect(addr).unwrap_err().kind();
        let b = TcpStream::connect_timeout(&addr, ms(5000)).unwrap_err().kind();
        (a, b)
    });
    tasklets::run();
    assert_eq!(t.join().unwrap(), (io::ErrorKind::ConnectionRefused, io::ErrorKind::ConnectionRefused));
}

#[test]
fn connect_tries_each_address_in_order() {
    let listener = local();
    let good = listener.local_addr().unwrap();
    let addrs = [closed_port(), good];
    let stream = TcpStream::connect(&addrs[..]).unwrap();
    assert_eq!(stream.peer_addr().unwrap(), good);
    // No address at all: InvalidInput, as std.
    let none: &[SocketAddr] = &[];
    assert_eq!(TcpStream::connect(none).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(std::net::TcpStream::connect(none).unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn connect_timeout_zero_is_invalid_and_a_local_connect_succeeds() {
    let listener = local();
    let addr = listener.local_addr().unwrap();
    let err = TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let std_err = std::net::TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err();
    assert_eq!(std_err.kind(), io::ErrorKind::InvalidInput);
    let t =
        tasklets::spawn(move || TcpStream::connect_timeout(&addr, ms(5000)).map(|s| s.peer_addr().unwrap()));
    let (server, peer) = listener.accept().unwrap();
    assert_eq!(t.join().unwrap().unwrap(), addr);
    assert_eq!(server.peer_addr().unwrap(), peer);
}

#[test]
fn invalid_addresses_fail_like_std() {
    for bad in ["127.0.0.1", "127.0.0.1:notaport", "127.0.0.1:99999", ""] {
        let ours = TcpStream::connect(bad).unwrap_err().kind();
        let std = std::net::TcpStream::connect(bad).unwrap_err().kind();
        assert_eq!(ours, std, "connect({bad:?})");
        assert_eq!(ours, io::ErrorKind::InvalidInput, "connect({bad:?})");
        let ours = TcpListener::bind(bad).unwrap_err().kind();
        assert_eq!(ours, io::ErrorKind::InvalidInput, "bind({bad:?})");
    }
    // The same from a tasklet (resolution goes through the unblock pool there).
    let t = tasklets::spawn(|| {
        let a = TcpStream::connect("127.0.0.1:notaport").unwrap_err().kind();
        let b = TcpListener::bind(("127.0.0.1", 0)).map(|l| l.local_addr().unwrap().ip());
        (a, b.unwrap())
    });
    tasklets::run();
    assert_eq!(t.join().unwrap(), (io::ErrorKind::InvalidInput, "127.0.0.1".parse().unwrap()));
}

#[test]
fn host_names_are_resolved_from_a_tasklet() {
    let listener = local();
    let port = listener.local_addr().unwrap().port();
    let ticked = Rc::new(Cell::new(0u32));
    let connect =
        tasklets::spawn(move || TcpStream::connect(("localhost", port)).map(|s| s.peer_addr().unwrap()));
    let ticker = {
        let ticked = ticked.clone();
        tasklets::spawn(move || ticked.set(ticked.get() + 1))
    };
    let (_server, _) = listener.accept().unwrap();
    ticker.join().unwrap();
    let peer = connect.join().unwrap().unwrap();
    assert!(peer.ip().is_loopback());
    assert_eq!(ticked.get(), 1);
}

// ---------------------------------------------------------------------------------------------
// Connection ends: reset, broken pipe, EOF, half close
// ---------------------------------------------------------------------------------------------

#[test]
fn reset_by_peer_is_connection_reset() {
    let (client, server) = pair();
    let reader = tasklets::spawn(move || (&client).read(&mut [0u8; 16]).unwrap_err().kind());
    tasklets::spawn(move || {
        sleep(ms(10)); // the reader is parked by now
        socket2::SockRef::from(&server).set_linger(Some(Duration::ZERO)).unwrap();
        drop(server); // sends RST
    });
    tasklets::run();
    assert_eq!(reader.join().unwrap(), io::ErrorKind::ConnectionReset);
}

/// Writing to a connection the peer closed fails with BrokenPipe and does not raise SIGPIPE:
/// the child runs with SIGPIPE's default action (terminate), so a signal would kill it.
#[test]
fn broken_pipe_without_sigpipe() {
    const NAME: &str = "broken_pipe_without_sigpipe";
    if !in_child(NAME) {
        return run_in_child(NAME);
    }
    // SAFETY: setting a signal disposition in a single-threaded child test.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let (client, server) = pair();
    drop(server);
    let writer = tasklets::spawn(move || {
        let mut kinds = Vec::new();
        for _ in 0..1000 {
            match (&client).write_all(b"are you there?") {
                Ok(()) => sleep(ms(1)),
                Err(err) => {
                    kinds.push(err.kind());
                    if err.kind() == io::ErrorKind::BrokenPipe {
                        break;
                    }
                }
            }
        }
        // Vectored writes take the same path.
        let vectored = (&client).write_vectored(&[IoSlice::new(b"a"), IoSlice::new(b"b")]).unwrap_err();
        (kinds, vectored.kind())
    });
    tasklets::run();
    let (kinds, vectored) = writer.join().unwrap();
    println!("errors: {kinds:?}");
    assert_eq!(kinds.last(), Some(&io::ErrorKind::BrokenPipe), "{kinds:?}");
    assert_eq!(vectored, io::ErrorKind::BrokenPipe);
}

#[test]
fn eof_in_the_middle_of_a_message() {
    let (client, server) = pair();
    tasklets::spawn(move || {
        (&server).write_all(b"half a mes").unwrap();
        drop(server);
    });
    let reader = tasklets::spawn(move || {
        let mut buf = [0u8; 20];
        let err = (&client).read_exact(&mut buf).unwrap_err().kind();
        let after = (&client).read(&mut buf).unwrap();
        (err, after)
    });
    tasklets::run();
    assert_eq!(reader.join().unwrap(), (io::ErrorKind::UnexpectedEof, 0));
}

#[test]
fn half_close_then_read_the_rest() {
    let (client, server) = pair();
    let server = tasklets::spawn(move || {
        let mut request = Vec::new();
        (&server).read_to_end(&mut request).unwrap(); // ends at the client's shutdown(Write)
        let response = payload(request.len() as u64, 300_000);
        (&server).write_all(&response).unwrap();
        (request, checksum(&response))
    });
    let client = tasklets::spawn(move || {
        (&client).write_all(b"GET everything").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let after_shutdown = (&client).write(b"more").unwrap_err().kind();
        let mut response = Vec::new();
        (&client).read_to_end(&mut response).unwrap();
        (after_shutdown, response.len(), checksum(&response))
    });
    tasklets::run();
    let (request, sum) = server.join().unwrap();
    assert_eq!(request, b"GET everything");
    assert_eq!(client.join().unwrap(), (io::ErrorKind::BrokenPipe, 300_000, sum));
}

#[test]
fn peek_does_not_consume() {
    let (mut client, server) = pair();
    let peeker = tasklets::spawn(move || {
        let mut buf = [0u8; 8];
        let n = client.peek(&mut buf).unwrap(); // parks until data comes
        let peeked = buf[..n].to_vec();
        let mut all = [0u8; 5];
        client.read_exact(&mut all).unwrap();
        (peeked, all)
    });
    tasklets::spawn(move || {
        sleep(ms(5));
        (&server).write_all(b"hello").unwrap();
    });
    tasklets::run();
    let (peeked, all) = peeker.join().unwrap();
    assert!(!peeked.is_empty() && b"hello".starts_with(&peeked), "{peeked:?}");
    assert_eq!(&all, b"hello");
}

// ---------------------------------------------------------------------------------------------
// Sharing a stream between tasklets
// ---------------------------------------------------------------------------------------------

/// One tasklet writes through a clone while another reads the original, at the same time; the
/// clones share their options, as std's do.
#[test]
fn try_clone_one_tasklet_reads_another_writes() {
    const MESSAGES: usize = 200;
    let (client, server) = pair();
    let echo = tasklets::spawn(move || io::copy(&mut &server, &mut &server).unwrap());
    let writer_half = client.try_clone().unwrap();
    assert_ne!(writer_half.as_raw_fd(), client.as_raw_fd());
    writer_half.set_read_timeout(Some(ms(5000))).unwrap();
    assert_eq!(client.read_timeout().unwrap(), Some(ms(5000)), "options are shared");
    let writer = tasklets::spawn(move || {
        let mut sum = 0u64;
        for i in 0..MESSAGES {
            let msg = payload(i as u64, 64 + i * 11);
            sum = sum.wrapping_add(checksum(&msg));
            (&writer_half).write_all(&msg).unwrap();
            if i.is_multiple_of(7) {
                tasklets::schedule();
            }
        }
        writer_half.shutdown(Shutdown::Write).unwrap();
        sum
    });
    let reader = tasklets::spawn(move || {
        let (mut sum, mut reads) = (0u64, 0);
        for i in 0..MESSAGES {
            let mut msg = vec![0u8; 64 + i * 11];
            (&client).read_exact(&mut msg).unwrap();
            sum = sum.wrapping_add(checksum(&msg));
            reads += 1;
        }
        assert_eq!((&client).read(&mut [0u8; 1]).unwrap(), 0);
        (sum, reads)
    });
    tasklets::run();
    let sent = writer.join().unwrap();
    let (received, reads) = reader.join().unwrap();
    assert_eq!(reads, MESSAGES);
    assert_eq!(sent, received);
    echo.join().unwrap();
}

/// Two tasklets read one socket: every byte is delivered to exactly one of them, and the reads
/// put back in the order they happened give back the stream.
#[test]
fn two_readers_of_one_socket_get_each_byte_exactly_once() {
    let (client, server) = pair();
    let client = Rc::new(client);
    let data = payload(3, 200_000);
    /// (sequence number of the read, which reader, bytes)
    type Reads = Rc<RefCell<Vec<(usize, usize, Vec<u8>)>>>;
    let reads: Reads = Rc::default();
    let seq = Rc::new(Cell::new(0usize));
    for reader in 0..2 {
        let (client, reads, seq) = (client.clone(), reads.clone(), seq.clone());
        tasklets::spawn(move || {
            let mut buf = [0u8; 3000];
            loop {
                let n = (&*client).read(&mut buf).unwrap();
                let s = seq.get();
                seq.set(s + 1);
                if n == 0 {
                    break;
                }
                reads.borrow_mut().push((s, reader, buf[..n].to_vec()));
                tasklets::schedule(); // let the other reader in
            }
        });
    }
    {
        let data = data.clone();
        tasklets::spawn(move || {
            for chunk in data.chunks(5000) {
                (&server).write_all(chunk).unwrap();
                sleep(ms(1));
            }
        });
    }
    tasklets::run();
    let mut reads = std::mem::take(&mut *reads.borrow_mut());
    reads.sort_by_key(|r| r.0);
    let by_reader = [0, 1].map(|r| reads.iter().filter(|x| x.1 == r).count());
    println!("reads per reader: {by_reader:?}");
    assert!(by_reader[0] > 0 && by_reader[1] > 0, "one reader got nothing: {by_reader:?}");
    let stream: Vec<u8> = reads.into_iter().flat_map(|r| r.2).collect();
    assert_eq!(stream.len(), data.len());
    assert!(stream == data, "the bytes were not delivered exactly once, in order");
}

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

/// On plain threads that never spawn a tasklet, the calls block like std's (and the waiting
/// thread sleeps in its poller rather than spinning).
#[test]
fn plain_threads_without_tasklets() {
    let listener = local();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let cpu = thread_cpu_time();
        let (mut stream, _) = listener.accept().unwrap(); // blocks ~100 ms
        let accept_cpu = thread_cpu_time() - cpu;
        let mut request = [0u8; 4];
        stream.read_exact(&mut request).unwrap();
        stream.write_all(&request.map(|b| b.to_ascii_uppercase())).unwrap();
        accept_cpu
    });
    let client = std::thread::spawn(move || {
        std::thread::sleep(ms(100));
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(ms(5000))).unwrap();
        stream.write_all(b"ping").unwrap();
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).unwrap();
        reply
    });
    assert_eq!(&client.join().unwrap(), b"PING");
    let accept_cpu = server.join().unwrap();
    println!("CPU time of a thread blocked ~100 ms in accept: {accept_cpu:?}");
    assert!(accept_cpu < ms(50), "the blocked thread spun: {accept_cpu:?} of CPU");
}

/// Regression: one listener shared (not cloned) by two plain threads that both block in
/// `accept`, a common std pattern (`Arc<TcpListener>`, scoped threads), must not cost CPU
/// while waiting. The registration used to move between the two threads' pollers in a loop
/// (~80% of a core while idle); now the socket is registered with each poller once.
#[test]
fn one_listener_blocked_on_from_two_threads_does_not_spin() {
    let listener = local();
    let addr = listener.local_addr().unwrap();
    let cpu: Vec<Duration> = std::thread::scope(|s| {
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let start = thread_cpu_time();
                    drop(listener.accept().unwrap());
                    thread_cpu_time() - start
                })
            })
            .collect();
        std::thread::sleep(ms(300));
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        waiters.into_iter().map(|w| w.join().unwrap()).collect()
    });
    println!("CPU time of two threads blocked ~300 ms in accept on one listener: {cpu:?}");
    assert!(cpu.iter().all(|&c| c < ms(60)), "the blocked threads spun: {cpu:?} of CPU");
}

/// A listener bound (and used) on one thread moves to another thread, whose tasklets accept
/// from it.
#[test]
fn listener_moves_to_another_thread() {
    let (to_b, from_a) = mpsc::channel::<TcpListener>();
    let listener = local();
    let addr = listener.local_addr().unwrap();
    let clients = std::thread::spawn(move || {
        (0..4)
            .map(|i| {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.write_all(&[i]).unwrap();
                let mut reply = [0u8; 1];
                stream.read_exact(&mut reply).unwrap();
                reply[0]
            })
            .collect::<Vec<u8>>()
    });
    // Thread A: a tasklet serves the first connection (the listener registers here), then
    // hands the listener over.
    let a = std::thread::spawn(move || {
        let t = tasklets::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).unwrap();
            stream.write_all(&[b[0] + 100]).unwrap();
            listener
        });
        tasklets::run();
        to_b.send(t.join().unwrap()).unwrap();
    });
    let b = std::thread::spawn(move || {
        let listener = Rc::new(from_a.recv().unwrap());
        let served = Rc::new(Cell::new(0));
        for _ in 0..3 {
            let (listener, served) = (listener.clone(), served.clone());
            tasklets::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                let mut b = [0u8; 1];
                stream.read_exact(&mut b).unwrap();
                stream.write_all(&[b[0] + 200]).unwrap();
                served.set(served.get() + 1);
            });
        }
        tasklets::run();
        served.get()
    });
    a.join().unwrap();
    assert_eq!(b.join().unwrap(), 3);
    assert_eq!(clients.join().unwrap(), [100, 201, 202, 203]);
}

// ---------------------------------------------------------------------------------------------
// Resources: kills, fd exhaustion
// ---------------------------------------------------------------------------------------------

/// The fds registered with this process's epoll instances (the `tfd:` lines of their fdinfo).
fn poller_registrations() -> usize {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        if target.to_string_lossy() == "anon_inode:[eventpoll]" {
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy()))
                    .unwrap_or_default();
            total += info.lines().filter(|l| l.starts_with("tfd:")).count();
        }
    }
    total
}

/// Killing tasklets parked in accept, read, write and connect leaves neither fds nor poller
/// registrations behind.
#[test]
fn killing_parked_tasklets_leaks_no_fd_and_no_registration() {
    const NAME: &str = "killing_parked_tasklets_leaks_no_fd_and_no_registration";
    if !in_child(NAME) {
        return run_in_child(NAME);
    }
    // Warm up: the poller and its own fds exist from here on.
    {
        let (client, _server) = pair();
        client.set_read_timeout(Some(ms(1))).unwrap();
        let _ = (&client).read(&mut [0u8; 1]);
    }
    let (fds, registrations) = (fd_count(), poller_registrations());
    println!("before: {fds} fds, {registrations} registrations");
    let mut parked = Vec::new();
    for _ in 0..3 {
        let listener = local();
        let (client, server) = pair();
        let (idle_client, idle_server) = pair(); // nobody ever writes to these
        small_buffers(&client);
        let reader = client.try_clone().unwrap();
        parked.push(tasklets::spawn(move || drop(listener.accept())));
        parked.push(tasklets::spawn(move || drop((&reader).read(&mut [0u8; 16]))));
        parked.push(tasklets::spawn(move || {
            let chunk = vec![0u8; 64 * 1024];
            loop {
                (&client).write_all(&chunk).unwrap(); // parks once the buffers are full
            }
        }));
        // Keeps `server` (which never reads) open while parked elsewhere.
        parked.push(tasklets::spawn(move || drop((&idle_server, server).0.read(&mut [0u8; 16]))));
        parked.push(tasklets::spawn(move || drop((&idle_client).read(&mut [0u8; 16]))));
    }
    // Connections to a listener whose queue is full (backlog 0, never accepting) stay in
    // progress: the kernel drops their SYNs (and retries on the loopback only).
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    full.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap().as_socket().unwrap();
    let connected = Rc::new(Cell::new(0));
    for _ in 0..5 {
        let connected = connected.clone();
        parked.push(tasklets::spawn(move || {
            let stream = TcpStream::connect(full_addr).unwrap();
            connected.set(connected.get() + 1);
            drop((&stream).read(&mut [0u8; 16]));
        }));
    }
    // Let them all park: until they are, not for a fixed number of rounds (the writers fill
    // their buffers 64 KiB at a time, which took longer than 10 rounds of 2 ms under qemu
    // beside other load: "not all parked", 2 runs in 25).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !parked.iter().all(|t| t.is_blocked()) {
        assert!(Instant::now() < deadline, "not all parked");
        tasklets::schedule();
        sleep(ms(2));
    }
    assert!(connected.get() < 5, "no tasklet is parked in connect");
    let during = (fd_count(), poller_registrations());
    println!("parked: {} fds, {} registrations, {} in connect", during.0, during.1, 5 - connected.get());
    assert!(during.0 > fds && during.1 > registrations);
    for t in &parked {
        t.kill();
    }
    for t in parked {
        assert!(matches!(t.join(), Err(tasklets::JoinError::Killed)));
    }
    drop(full);
    let after = (fd_count(), poller_registrations());
    println!("after: {} fds, {} registrations", after.0, after.1);
    assert_eq!(after, (fds, registrations));
}

/// `accept` with no fd left fails with EMFILE at once (no retry loop), the connection stays
/// queued, and serving resumes once fds are freed.
#[test]
fn accept_under_emfile_returns_the_error_and_recovers() {
    const NAME: &str = "accept_under_emfile_returns_the_error_and_recovers";
    if !in_child(NAME) {
        return run_in_child(NAME);
    }
    let listener = local();
    let addr = listener.local_addr().unwrap();
    // Warm up (the poller's fds exist from here on), then queue a connection.
    {
        let t = tasklets::spawn(move || TcpStream::connect(addr).unwrap());
        let (_served, _) = listener.accept().unwrap();
        drop(t.join().unwrap());
    }
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    // Lower the limit close to what is open, then use up what is left.
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on local structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let low = libc::rlimit { rlim_cur: (fd_count() + 16) as libc::rlim_t, rlim_max: lim.rlim_max };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
    }
    let mut filler: Vec<OwnedFd> = Vec::new();
    loop {
        // SAFETY: dup of stdin; the result is checked and owned.
        let fd = unsafe { libc::dup(0) };
        if fd < 0 {
            assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EMFILE));
            break;
        }
        // SAFETY: a fresh fd we own.
        filler.push(unsafe { OwnedFd::from_raw_fd(fd) });
        assert!(filler.len() < 100, "the fd limit did not take");
    }
    // In a tasklet, as a server would.
    let acceptor = tasklets::spawn(move || {
        let start = Instant::now();
        let err = listener.accept().map(|_| ()).unwrap_err();
        let second = listener.incoming().next().unwrap().map(|_| ()).unwrap_err();
        (listener, err, second, start.elapsed())
    });
    tasklets::run();
    let (listener, err, second, elapsed) = acceptor.join().unwrap();
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
    assert_eq!(second.raw_os_error(), Some(libc::EMFILE), "{second}");
    assert!(elapsed < ms(2000), "accept did not fail at once: {elapsed:?}");
    // Free some fds: the queued connection is served.
    filler.truncate(filler.len() - 4);
    let server = tasklets::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).unwrap();
        stream.write_all(&buf).unwrap();
    });
    client.write_all(b"again").unwrap();
    tasklets::run();
    server.join().unwrap();
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"again");
    drop(filler);
    // SAFETY: restores the limit read above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

// ---------------------------------------------------------------------------------------------
// Options, conversions, traits
// ---------------------------------------------------------------------------------------------

#[test]
fn socket_options() {
    let (client, _server) = pair();
    client.set_nodelay(true).unwrap();
    assert!(client.nodelay().unwrap());
    client.set_nodelay(false).unwrap();
    assert!(!client.nodelay().unwrap());
    client.set_ttl(42).unwrap();
    assert_eq!(client.ttl().unwrap(), 42);
    assert!(client.take_error().unwrap().is_none());
    let listener = local();
    listener.set_ttl(17).unwrap();
    assert_eq!(listener.ttl().unwrap(), 17);
    assert!(listener.take_error().unwrap().is_none());
    // A clone accepts from the same socket.
    let clone = listener.try_clone().unwrap();
    let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_s, peer) = clone.accept().unwrap();
    assert_eq!(peer, c.local_addr().unwrap());
    assert_eq!(client.peer_addr().unwrap().ip(), client.local_addr().unwrap().ip());
    let unconnected = TcpStream::from(OwnedFd::from(
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap(),
    ));
    assert_eq!(unconnected.peer_addr().unwrap_err().kind(), io::ErrorKind::NotConnected);
}

fn is_os_nonblocking(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFL on an fd the caller keeps open.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    flags & libc::O_NONBLOCK != 0
}

#[test]
fn conversions_round_trip() {
    // std -> ours: the std socket's timeout and mode are taken over.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let std_client = std::net::TcpStream::connect(addr).unwrap();
    // (Multiples of 20 ms: the kernel keeps socket timeouts in clock ticks.)
    std_client.set_read_timeout(Some(ms(300))).unwrap();
    let client = TcpStream::from(std_client);
    assert_eq!(client.read_timeout().unwrap(), Some(ms(300)));
    assert!(is_os_nonblocking(&client));
    let listener = TcpListener::from(std_listener);
    assert_eq!(listener.local_addr().unwrap(), addr);
    let (server, _) = listener.accept().unwrap();
    (&client).write_all(b"ok").unwrap();
    let mut buf = [0u8; 2];
    (&server).read_exact(&mut buf).unwrap();

    // ours -> std: blocking again, with the timeout stored in the socket.
    client.set_write_timeout(Some(ms(400))).unwrap();
    let std_client: std::net::TcpStream = client.into();
    assert!(!is_os_nonblocking(&std_client));
    assert_eq!(std_client.read_timeout().unwrap(), Some(ms(300)));
    assert_eq!(std_client.write_timeout().unwrap(), Some(ms(400)));
    (&std_client).write_all(b"std").unwrap();
    let mut buf = [0u8; 3];
    (&server).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"std");

    // Non-blocking mode asked for survives the conversion.
    server.set_nonblocking(true).unwrap();
    let std_server: std::net::TcpStream = server.into();
    assert!(is_os_nonblocking(&std_server));
    assert_eq!((&std_server).read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let server = TcpStream::from(std_server);
    let err = (&server).read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "non-blocking mode was taken over");

    // OwnedFd and raw fds.
    let fd: OwnedFd = server.into();
    let raw = fd.as_raw_fd();
    let server = TcpStream::from(fd);
    assert_eq!(server.as_raw_fd(), raw);
    let raw = server.into_raw_fd();
    // SAFETY: `raw` was just given up by `into_raw_fd`.
    let server = unsafe { TcpStream::from_raw_fd(raw) };
    (&std_client).write_all(b"raw").unwrap();
    server.set_nonblocking(false).unwrap();
    (&server).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"raw");
    let listener: std::net::TcpListener = listener.into();
    assert!(!is_os_nonblocking(&listener));
    let listener = TcpListener::from(OwnedFd::from(listener));
    assert_eq!(listener.local_addr().unwrap(), addr);

    // Debug shows addresses and the fd, as std's does.
    let debug = format!("{server:?}");
    assert!(
        debug.starts_with("TcpStream {") && debug.contains("addr:") && debug.contains("peer:"),
        "{debug}"
    );
    assert!(debug.contains(&format!("fd: {}", server.as_raw_fd())), "{debug}");
    let debug = format!("{listener:?}");
    assert!(debug.starts_with("TcpListener {") && debug.contains(&addr.to_string()), "{debug}");
    assert!(format!("{:?}", listener.incoming()).starts_with("Incoming"));
}

#[test]
fn types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TcpListener>();
    assert_send_sync::<TcpStream>();
    assert_send_sync::<Incoming<'static>>();
}

/// A stream used from a tasklet on another thread than where it was created and first waited.
#[test]
fn stream_moves_between_threads() {
    let (client, server) = pair();
    client.set_read_timeout(Some(ms(5))).unwrap();
    assert_eq!((&client).read(&mut [0u8; 1]).unwrap_err().kind(), io::ErrorKind::WouldBlock); // registers here
    client.set_read_timeout(None).unwrap();
    let other = std::thread::spawn(move || {
        let t = tasklets::spawn(move || {
            let mut buf = [0u8; 4];
            (&client).read_exact(&mut buf).unwrap();
            buf
        });
        tasklets::run();
        t.join().unwrap()
    });
    std::thread::sleep(ms(20));
    (&server).write_all(b"moved").unwrap();
    assert_eq!(&other.join().unwrap(), b"move");
}

/// Threads of this process named like the `unblock` pool's.
fn unblock_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "tasklet-unblock")
        .count()
}

/// The child of [`string_ip_literals_do_not_go_to_the_resolver_pool`].
#[test]
fn string_ip_literals_do_not_go_to_the_resolver_pool_child() {
    if !common::in_child("string_ip_literals_do_not_go_to_the_resolver_pool_child") {
        return;
    }
    let t = tasklets::spawn(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let udp = tasklets::net::UdpSocket::bind(String::from("127.0.0.1:0")).unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        udp.send_to(b"x", format!("127.0.0.1:{udp_port}").as_str()).unwrap();
        udp.connect(("127.0.0.1", udp_port)).unwrap();
    });
    t.join().unwrap();
    assert_eq!(unblock_threads(), 0, "a literal IP address went to the resolver pool");
    // A host name still goes there (the check above would see it).
    tasklets::spawn(|| drop(TcpListener::bind("localhost:0"))).join().unwrap();
    assert!(unblock_threads() > 0, "a host name is resolved on the pool");
}

/// `TcpListener::bind("127.0.0.1:0")`, `connect("127.0.0.1:7000")` and the UDP calls with
/// string addresses went to the resolver pool (a thread and a park) even for IP literals.
#[test]
fn string_ip_literals_do_not_go_to_the_resolver_pool() {
    common::run_in_child("string_ip_literals_do_not_go_to_the_resolver_pool_child");
}

/// An accepted stream is non-blocking at the OS level (`accept4` made it so; issue 14 dropped
/// the `fcntl` that set it again), so a read with nothing to read parks the tasklet and the
/// thread's other tasklets run, instead of the thread blocking in `recv`.
#[test]
fn a_read_of_an_accepted_stream_parks_the_tasklet_not_the_thread() {
    let listener = local();
    let addr = listener.local_addr().unwrap();
    let client = std::net::TcpStream::connect(addr).unwrap();
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
}
