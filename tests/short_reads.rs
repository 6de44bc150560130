//! Regression tests for the skipped `recv` after a short read (issue 14; design in the
//! "Short reads" part of `src/reactor.rs`): a TCP read that returned less than it asked for
//! lets the next read park without trying, unless the poller reported the read side closed.
//! What would break: a reader parked for good on a socket whose FIN (or reset, or urgent
//! data) came with the last data, or data that arrived between the short read and the park
//! never waking it.
//!
//! Real loopback sockets; the peer is a plain OS thread with std sockets, so that its writes
//! and shutdowns race the reader for real. Every reader has a read timeout: a lost wake-up
//! fails the test with `WouldBlock` instead of hanging it.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use tasklets::net::{TcpListener, TcpStream};

/// Longer than any wait of these tests on a loaded machine; a lost wake-up ends in this.
const LOST: Duration = Duration::from_secs(10);

/// A connected pair: the tasklet side (accepted, with a read timeout) and a std client.
fn pair() -> (TcpStream, std::net::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_read_timeout(Some(LOST)).unwrap();
    client.set_nodelay(true).unwrap();
    (server, client)
}

fn set_cork(stream: &std::net::TcpStream, on: bool) {
    let value: libc::c_int = on.into();
    // SAFETY: a valid socket and a live `c_int` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_CORK: {}", io::Error::last_os_error());
}

/// Reads until end of stream with a buffer larger than anything sent (every read is short).
fn read_all(stream: &TcpStream) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match (&*stream).read(&mut buf)? {
            0 => return Ok(all),
            n => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// The FIN in the same segment as the last data (the client corks, writes, shuts down: the
/// kernel puts the FIN on the corked segment), after a first short read that left the reader
/// parked without a `recv`. One poller event says "data and closed"; the read that takes the
/// data is short, and no event is left for the end of stream: the reader must try the `recv`
/// that returns 0 instead of parking.
#[test]
fn a_short_read_then_the_fin_in_the_same_segment_ends_the_stream() {
    for round in 0..200u32 {
        let (server, client) = pair();
        let peer = thread::spawn(move || {
            let mut client = client;
            client.write_all(b"first").unwrap();
            // Let the reader take "first" (a short read) and park for the rest.
            thread::sleep(Duration::from_micros(200 * u64::from(round % 5)));
            set_cork(&client, true);
            client.write_all(b"last words").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            client
        });
        let reader = tasklets::spawn(move || read_all(&server));
        tasklets::run();
        let got = reader.join().unwrap().unwrap_or_else(|err| panic!("round {round}: {err}"));
        assert_eq!(got, b"firstlast words", "round {round}");
        drop(peer.join().unwrap());
    }
}

/// `shutdown(Write)` racing the reader: the client writes a few small pieces and shuts down at
/// once (no cork, no pause), so the FIN comes with, right after, or well after the last
/// data, against a reader that may be between a short read and its park at any of these.
#[test]
fn shutdown_write_racing_short_reads_always_ends_the_stream() {
    for round in 0..300u32 {
        let (server, client) = pair();
        let pieces = 1 + round % 4;
        let peer = thread::spawn(move || {
            let mut client = client;
            for i in 0..pieces {
                client.write_all(&[i as u8; 10]).unwrap();
                if round % 3 == 0 {
                    thread::yield_now();
                }
            }
            client.shutdown(Shutdown::Write).unwrap();
            client
        });
        let reader = tasklets::spawn(move || read_all(&server));
        tasklets::run();
        let got = reader.join().unwrap().unwrap_or_else(|err| panic!("round {round}: {err}"));
        assert_eq!(got.len(), 10 * pieces as usize, "round {round}");
        drop(peer.join().unwrap());
    }
}

/// Data that arrives after a short read (between the `recv` and the park, or after the park)
/// wakes the reader: a ping-pong where every read is short and the next message is sent only
/// once the echo came back, so the reader always parks without a `recv` first.
#[test]
fn data_after_a_short_read_wakes_the_parked_reader() {
    const ROUNDS: usize = 2_000;
    let (server, client) = pair();
    let peer = thread::spawn(move || {
        let mut client = client;
        let mut back = [0u8; 3];
        for i in 0..ROUNDS {
            let msg = [i as u8, (i >> 8) as u8, 7];
            client.write_all(&msg).unwrap();
            client.read_exact(&mut back).unwrap();
            assert_eq!(back, msg, "echo {i}");
        }
        client.shutdown(Shutdown::Write).unwrap();
    });
    let echo = tasklets::spawn(move || -> io::Result<usize> {
        let mut buf = [0u8; 1024];
        let mut total = 0;
        loop {
            let n = (&server).read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            (&server).write_all(&buf[..n])?;
            total += n;
        }
    });
    tasklets::run();
    peer.join().unwrap();
    assert_eq!(echo.join().unwrap().unwrap(), 3 * ROUNDS);
}

/// The same with the data racing the park: the peer writes its next piece as soon as it can,
/// without waiting for anything, in pieces of one byte, so that pieces arrive during the
/// reader's `recv`, between it and the park, and while it is parked.
#[test]
fn a_stream_of_tiny_writes_is_read_whole_through_short_reads() {
    const BYTES: usize = 20_000;
    let (server, client) = pair();
    let peer = thread::spawn(move || {
        let mut client = client;
        for i in 0..BYTES {
            client.write_all(&[i as u8]).unwrap();
        }
        client.shutdown(Shutdown::Write).unwrap();
    });
    let reader = tasklets::spawn(move || read_all(&server));
    tasklets::run();
    peer.join().unwrap();
    let got = reader.join().unwrap().unwrap();
    assert_eq!(got.len(), BYTES);
    assert!(got.iter().enumerate().all(|(i, &b)| b == i as u8), "bytes out of order");
}

/// A reset after a short read: the reader gets the error (or end of stream), never a park.
#[test]
fn a_reset_after_a_short_read_ends_the_read() {
    for round in 0..100u32 {
        let (server, client) = pair();
        let peer = thread::spawn(move || {
            let mut client = client;
            client.write_all(b"partial").unwrap();
            thread::sleep(Duration::from_micros(100 * u64::from(round % 4)));
            // SO_LINGER 0: close sends a reset instead of a FIN.
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: a valid socket and a live `linger` of the size passed.
            let rc = unsafe {
                libc::setsockopt(
                    client.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
        });
        let reader = tasklets::spawn(move || -> io::Result<()> {
            let mut buf = [0u8; 64];
            let n = (&server).read(&mut buf)?;
            assert!(n > 0);
            loop {
                if (&server).read(&mut buf)? == 0 {
                    return Ok(());
                }
            }
        });
        tasklets::run();
        peer.join().unwrap();
        match reader.join().unwrap() {
            Ok(()) => {}
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "round {round}: {err}"),
        }
    }
}

/// Urgent data: a read stops at the urgent mark with more data queued behind it, so that short
/// read does not mean "empty". The poller reports urgent data (`EPOLLPRI`) like a closed read
/// side, and the bytes after the mark are read.
#[test]
fn bytes_after_urgent_data_are_read() {
    for round in 0..100u32 {
        let (server, client) = pair();
        let peer = thread::spawn(move || {
            let client = client;
            let send = |data: &[u8], flags: libc::c_int| {
                // SAFETY: a valid socket and a live buffer of the length passed.
                let n = unsafe { libc::send(client.as_raw_fd(), data.as_ptr().cast(), data.len(), flags) };
                assert_eq!(n, data.len() as isize);
            };
            send(b"abc", 0);
            if round % 2 == 0 {
                thread::sleep(Duration::from_micros(300));
            }
            send(b"!", libc::MSG_OOB);
            send(b"def", 0);
            client // open: no end of stream to wake the reader
        });
        let reader = tasklets::spawn(move || -> io::Result<Vec<u8>> {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < 6 {
                let n = (&server).read(&mut buf)?;
                got.extend_from_slice(&buf[..n]);
            }
            Ok(got)
        });
        tasklets::run();
        let got = reader.join().unwrap().unwrap_or_else(|err| panic!("round {round}: {err}"));
        // The urgent byte is out of band (SO_OOBINLINE is off); everything else arrives.
        assert_eq!(got, b"abcdef", "round {round}");
        drop(peer.join().unwrap());
    }
}

/// Reads in non-blocking mode are never skipped: they get `WouldBlock` from the system call
/// (not from a guess); blocking reads after them still see new data and the end of stream.
#[test]
fn nonblocking_reads_after_a_short_read() {
    let (server, client) = pair();
    let go = tasklets::Channel::<()>::new();
    let peer = {
        let go = go.clone();
        tasklets::spawn(move || {
            let mut client = client;
            tasklets::schedule(); // the reader parks first: its fd gets registered
            client.write_all(b"xy").unwrap();
            go.receive().unwrap();
            client.write_all(b"z").unwrap();
            go.receive().unwrap();
        })
    };
    let reader = tasklets::spawn(move || {
        let mut buf = [0u8; 16];
        assert_eq!((&server).read(&mut buf).unwrap(), 2); // parks, then a short read
        server.set_nonblocking(true).unwrap();
        assert_eq!((&server).read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        server.set_nonblocking(false).unwrap();
        go.send(()).unwrap();
        assert_eq!((&server).read(&mut buf).unwrap(), 1);
        go.send(()).unwrap(); // the peer ends: its socket closes
        assert_eq!((&server).read(&mut buf).unwrap(), 0);
    });
    tasklets::run();
    peer.join().unwrap();
    reader.join().unwrap();
}

/// A read that parks because the last one was short (without trying its `recv`) still arms its
/// read timeout: the deadline is computed at that park (issue 14 made the drained check and the
/// wait one lookup, and moved the deadline's clock read to the park), so a silent peer ends the
/// read with `WouldBlock` after the timeout instead of leaving it parked for good.
#[test]
fn a_read_parked_after_a_short_read_still_times_out() {
    let (server, mut client) = pair();
    let reader = tasklets::spawn(move || {
        let mut buf = [0u8; 16];
        assert_eq!((&server).read(&mut buf).unwrap(), 2); // a short read: Drained
        server.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let err = (&server).read(&mut buf).unwrap_err(); // parks at once, then times out
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // The socket still works after the timeout: new data wakes the next read.
        server.set_read_timeout(Some(LOST)).unwrap();
        (&server).read(&mut buf)
    });
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50)); // the reader parks first: its fd gets registered
        client.write_all(b"ab").unwrap();
        thread::sleep(Duration::from_millis(300)); // past the reader's 50 ms timeout
        client.write_all(b"c").unwrap();
        client
    });
    tasklets::run();
    assert_eq!(reader.join().unwrap().unwrap(), 1);
    drop(writer.join().unwrap());
}

/// The drained check of a read on a thread that has no scheduler makes none, and a socket
/// whose last short read was on another thread does not let a read on this one skip its
/// `recv` (each thread's reactor has its own entry for the fd).
#[test]
fn a_short_read_on_one_thread_does_not_skip_a_read_on_another() {
    let (server, mut client) = pair();
    let reader = tasklets::spawn(move || {
        let mut buf = [0u8; 16];
        assert_eq!((&server).read(&mut buf).unwrap(), 2); // parks, then short: Drained here
        server
    });
    tasklets::schedule(); // the reader parks: its fd gets registered with this thread's poller
    client.write_all(b"ab").unwrap();
    let server = reader.join().unwrap();
    client.write_all(b"cd").unwrap();
    thread::sleep(Duration::from_millis(50)); // the bytes are queued before the other read
    let other = thread::spawn(move || {
        assert!(!tasklets::io::is_cooperative());
        let mut buf = [0u8; 16];
        // No scheduler here: the read tries its recv (which finds the bytes) and makes none.
        let n = (&server).read(&mut buf).unwrap();
        (n, tasklets::io::is_cooperative())
    });
    assert_eq!(other.join().unwrap(), (2, false));
}
