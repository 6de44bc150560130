//! The stress suite: many connections, large payloads and misbehaving clients against the echo
//! server of `examples/echo_server.rs` and the boss/worker server of `examples/boss_worker.rs`
//! (their server code is included from `examples/shared/`), over loopback only.
//!
//! Every test is bounded (counts fixed up front, idle timeouts on every server connection) and
//! its assertions are exact counts, never speeds. Each prints what it did. The tests that count
//! the process's file descriptors run their body in a child process (the test binary
//! re-executed, see `tests/common`), so that the other tests of this binary, running in
//! parallel, cannot disturb the count.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tasklets::net::{TcpListener, TcpStream};
use tasklets::Channel;

mod common;
use common::{fd_count, in_child, ms, run_in_child};

#[path = "../examples/shared/echo.rs"]
mod echo;

#[path = "../examples/shared/boss_worker.rs"]
mod boss_worker;

/// Raises the soft fd limit to the hard one and returns it.
fn raise_fd_limit() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// Makes this thread's scheduler create its poller (and its fds) and starts an `unblock`
/// worker, so that a file descriptor count taken afterwards is a stable baseline.
fn warm_up() {
    let listener = local();
    let addr = listener.local_addr().unwrap();
    let client = tasklets::spawn(move || {
        tasklets::time::sleep(ms(1));
        TcpStream::connect(addr).unwrap()
    });
    let (_server_side, _) = listener.accept().unwrap(); // parks in the poller
    drop(client.join().unwrap());
    assert_eq!(tasklets::unblock(|| 1), 1);
}

fn local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// How the echo server's connections ended, counted by kind.
#[derive(Debug, Default, Clone)]
struct EchoTally {
    accepted: usize,
    /// Client closed its side, every byte echoed.
    clean: usize,
    clean_bytes: u64,
    timed_out: usize,
    /// Reset, broken pipe.
    aborted: usize,
    /// Anything else (must stay 0).
    other: Vec<String>,
    accept_errors: usize,
}

impl EchoTally {
    fn record(&mut self, served: echo::Served) {
        match served.error {
            None => {
                self.clean += 1;
                self.clean_bytes += served.bytes;
            }
            Some(err) if echo::is_timeout(&err) => self.timed_out += 1,
            Some(err) if echo::is_abort(&err) => self.aborted += 1,
            Some(err) => self.other.push(err.to_string()),
        }
    }

    fn finished(&self) -> usize {
        self.clean + self.timed_out + self.aborted + self.other.len()
    }
}

/// Runs an echo server on a thread of its own: it accepts exactly `connections` connections,
/// serves each in a tasklet with `idle_timeout`, and returns the tally once every one has ended.
/// `finished` counts the connections that have ended so far.
fn echo_server_thread(
    listener: TcpListener,
    connections: usize,
    idle_timeout: Duration,
    finished: Arc<AtomicUsize>,
) -> thread::JoinHandle<EchoTally> {
    thread::Builder::new()
        .name("echo server".into())
        .spawn(move || {
            let tally = Rc::new(RefCell::new(EchoTally::default()));
            {
                let tally = tally.clone();
                tasklets::spawn(move || {
                    while tally.borrow().accepted < connections {
                        let stream = match listener.accept() {
                            Ok((stream, _)) => stream,
                            Err(err) => {
                                tally.borrow_mut().accept_errors += 1;
                                assert!(tally.borrow().accept_errors < 1000, "accept keeps failing: {err}");
                                tasklets::time::sleep(ms(1));
                                continue;
                            }
                        };
                        tally.borrow_mut().accepted += 1;
                        let (tally, finished) = (tally.clone(), finished.clone());
                        tasklets::spawn(move || {
                            let served = echo::serve_connection(stream, Some(idle_timeout));
                            tally.borrow_mut().record(served);
                            finished.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                });
            }
            tasklets::run();
            let tally = tally.borrow().clone();
            tally
        })
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Many connections
// ---------------------------------------------------------------------------------------------

/// What the clients of `many_concurrent_connections` saw.
#[derive(Default)]
struct ManyTally {
    connected: usize,
    arrived: usize,
    round_trips: usize,
    bytes: u64,
    sent_sum: u64,
    echoed_sum: u64,
    errors: Vec<String>,
    peak_fds: usize,
}

/// As many connections open at once as the fd limit allows (up to 10,000; server and clients
/// share the process, so two fds each), every one doing round trips of checksummed payloads
/// with the echo server, which runs on a second thread. All connect and do one round trip, wait
/// at a barrier until all are open (the fd count is taken there), then do the rest. Zero errors,
/// every byte back, and the fd count back to where it was.
#[test]
fn many_concurrent_connections() {
    const NAME: &str = "many_concurrent_connections";
    if !in_child(NAME) {
        return run_in_child(NAME);
    }
    const ROUND_TRIPS: usize = 3;
    /// Fds kept free for the pollers, the listener, std's and the harness's own.
    const RESERVE: usize = 64;
    let started = Instant::now();
    let limit = raise_fd_limit();
    let baseline = fd_count();
    let connections = (limit.saturating_sub(baseline + RESERVE) / 2).min(10_000);
    assert!(
        connections >= 4_000,
        "the hard fd limit ({limit}) allows only {connections} connections; this test needs 4,000 \
         (raise `ulimit -Hn` to at least 8,200)"
    );

    let listener = local();
    let addr = listener.local_addr().unwrap();
    let finished = Arc::new(AtomicUsize::new(0));
    let server = echo_server_thread(listener, connections, Duration::from_secs(60), finished);

    let clients = thread::Builder::new()
        .name("clients".into())
        .spawn(move || {
            let tally = Rc::new(RefCell::new(ManyTally::default()));
            let go = Channel::<()>::new();
            let connecting = Rc::new(Cell::new(0usize));
            // Everyone, failed or not, arrives at the barrier once; the last one opens it.
            let arrive = {
                let (tally, go) = (tally.clone(), go.clone());
                Rc::new(move || {
                    let last = {
                        let mut t = tally.borrow_mut();
                        t.arrived += 1;
                        t.arrived == connections
                    };
                    if last {
                        tally.borrow_mut().peak_fds = fd_count();
                        go.close(); // wakes every client waiting below
                    } else {
                        let _ = go.receive();
                    }
                })
            };
            let spawner_tally = tally.clone();
            tasklets::spawn(move || {
                let tally = spawner_tally;
                for i in 0..connections {
                    // Keep the handshakes in flight below the listener's backlog.
                    while connecting.get() >= 256 {
                        tasklets::time::sleep(ms(1));
                    }
                    let (tally, connecting, arrive) = (tally.clone(), connecting.clone(), arrive.clone());
                    connecting.set(connecting.get() + 1);
                    tasklets::spawn(move || {
                        let stream = TcpStream::connect(addr);
                        connecting.set(connecting.get() - 1);
                        if let Err(err) = many_client(i, stream, &tally, &*arrive) {
                            tally.borrow_mut().errors.push(format!("client {i}: {err}"));
                        }
                    });
                }
            });
            tasklets::run();
            let tally = std::mem::take(&mut *tally.borrow_mut());
            tally
        })
        .unwrap();

    let clients = clients.join().unwrap();
    // A client that could not connect leaves the acceptor waiting: connect in its place.
    let missing = connections - clients.connected;
    let fillers: Vec<_> = (0..missing).map(|_| std::net::TcpStream::connect(addr)).collect();
    drop(fillers);
    let server = server.join().unwrap();
    let after = fd_count();
    let elapsed = started.elapsed();

    println!(
        "many_concurrent_connections: {connections} connections open at once (fd limit {limit}: \
         {} fds open at the barrier, {baseline} before, {after} after), {} round trips of 64 B..4 KiB, \
         {} each way verified byte for byte, {} errors, {:.1} s",
        clients.peak_fds,
        clients.round_trips,
        mib(clients.bytes),
        clients.errors.len(),
        elapsed.as_secs_f64()
    );
    assert!(clients.errors.is_empty(), "{} errors, first: {:?}", clients.errors.len(), &clients.errors[..1]);
    assert_eq!(clients.connected, connections);
    assert_eq!(clients.round_trips, connections * ROUND_TRIPS);
    assert_eq!(clients.sent_sum, clients.echoed_sum, "checksums of what was sent and what came back");
    assert!(
        clients.peak_fds >= baseline + 2 * connections,
        "not all connections were open at once: {} fds at the barrier",
        clients.peak_fds
    );
    assert_eq!(server.accepted, connections);
    assert_eq!((server.clean, server.timed_out, server.aborted), (connections, 0, 0), "{server:?}");
    assert!(server.other.is_empty(), "{:?}", server.other);
    assert_eq!(server.clean_bytes, clients.bytes, "bytes echoed by the server and verified by the clients");
    assert_eq!(after, baseline, "file descriptors leaked");
}

/// The size of round trip `k` of client `i`: 64 B to 4 KiB.
fn many_size(i: usize, k: usize) -> usize {
    64 + (i * 7_919 + k * 104_729) % 4_033
}

fn many_client(
    i: usize,
    stream: io::Result<TcpStream>,
    tally: &RefCell<ManyTally>,
    arrive: &dyn Fn(),
) -> io::Result<()> {
    let stream = match stream {
        Ok(stream) => stream,
        Err(err) => {
            arrive();
            return Err(err);
        }
    };
    tally.borrow_mut().connected += 1;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let stream = Rc::new(stream);
    let mut echo_buf = Vec::new();
    for k in 0..3 {
        if k == 1 {
            arrive();
        }
        let data = Rc::new(echo::payload((i * 3 + k) as u64, many_size(i, k)));
        let result = echo::round_trip(&stream, &data, &mut echo_buf);
        if let Err(err) = result {
            if k == 0 {
                arrive();
            }
            return Err(err);
        }
        let mut t = tally.borrow_mut();
        t.round_trips += 1;
        t.bytes += data.len() as u64;
        t.sent_sum = t.sent_sum.wrapping_add(echo::checksum(&data));
        t.echoed_sum = t.echoed_sum.wrapping_add(echo::checksum(&echo_buf));
    }
    stream.shutdown(Shutdown::Write)?;
    match (&*stream).read(&mut [0u8; 1])? {
        0 => Ok(()),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "a byte after the echo")),
    }
}

// ---------------------------------------------------------------------------------------------
// Large payloads
// ---------------------------------------------------------------------------------------------

/// Kernel buffers small enough that a 1 MiB message needs many partial reads and writes.
fn small_buffers(stream: &TcpStream) {
    let sock = socket2::SockRef::from(stream);
    sock.set_send_buffer_size(32 * 1024).unwrap();
    sock.set_recv_buffer_size(32 * 1024).unwrap();
}

#[derive(Default, Debug)]
struct IoCounts {
    calls: usize,
    partial: usize,
}

/// Writes all of `data` with plain `write` calls, counting those that took less than offered.
fn write_counting(stream: &TcpStream, data: &[u8], counts: &RefCell<IoCounts>) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        let n = (&*stream).write(&data[done..])?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut c = counts.borrow_mut();
        c.calls += 1;
        c.partial += usize::from(n < data.len() - done);
        done += n;
    }
    Ok(())
}

/// Fills `buf` with plain `read` calls, counting those that returned less than asked for.
fn read_counting(stream: &TcpStream, buf: &mut [u8], counts: &RefCell<IoCounts>) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = (&*stream).read(&mut buf[done..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut c = counts.borrow_mut();
        c.calls += 1;
        c.partial += usize::from(n < buf.len() - done);
        done += n;
    }
    Ok(())
}

/// Messages of 1 MiB and more through the echo server, with 32 KiB socket buffers on both
/// sides: every message crosses in many partial writes and partial reads (counted), a writer
/// tasklet and a reader tasklet using the same connection at once. Every byte is checked.
#[test]
fn large_payloads_cross_in_partial_reads_and_writes() {
    const CONNECTIONS: usize = 3;
    const SIZES: [usize; 4] = [1 << 20, (1 << 20) + 1, (3 << 20) + 12_345, 8 << 20];
    let started = Instant::now();
    let listener = local();
    let addr = listener.local_addr().unwrap();
    // Server and clients on this one thread: a send cannot be drained by the receiver while it
    // runs, so a message larger than the buffers must be written in parts.
    let server = tasklets::spawn(move || {
        let handlers: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let (stream, _) = listener.accept().unwrap();
                small_buffers(&stream);
                tasklets::spawn(move || echo::serve_connection(stream, Some(Duration::from_secs(30))))
            })
            .collect();
        handlers.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let writes = Rc::new(RefCell::new(IoCounts::default()));
    let reads = Rc::new(RefCell::new(IoCounts::default()));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (writes, reads) = (writes.clone(), reads.clone());
            tasklets::spawn(move || -> io::Result<u64> {
                let stream = Rc::new(TcpStream::connect(addr)?);
                small_buffers(&stream);
                stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                let mut bytes = 0;
                for (k, &size) in SIZES.iter().enumerate() {
                    let data = Rc::new(echo::payload((c * 10 + k) as u64, size));
                    let writer = {
                        let (stream, data, writes) = (stream.clone(), data.clone(), writes.clone());
                        tasklets::spawn(move || write_counting(&stream, &data, &writes))
                    };
                    let mut back = vec![0u8; size];
                    read_counting(&stream, &mut back, &reads)?;
                    writer.join().unwrap()?;
                    echo::verify(&data, &back)?;
                    assert_eq!(echo::checksum(&back), echo::checksum(&data));
                    bytes += size as u64;
                }
                stream.shutdown(Shutdown::Write)?;
                assert_eq!((&*stream).read(&mut [0u8; 1])?, 0);
                Ok(bytes)
            })
        })
        .collect();
    tasklets::run();
    let bytes: u64 = clients.into_iter().map(|c| c.join().unwrap().unwrap()).sum();
    let served = server.join().unwrap();
    let (writes, reads) = (writes.borrow(), reads.borrow());
    println!(
        "large_payloads: {CONNECTIONS} connections x {} messages (1 MiB, 1 MiB + 1, 3 MiB + 12,345, 8 MiB), \
         {} each way verified; client writes: {} calls, {} partial; client reads: {} calls, {} partial; {:.1} s",
        SIZES.len(),
        mib(bytes),
        writes.calls,
        writes.partial,
        reads.calls,
        reads.partial,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(bytes, (CONNECTIONS * SIZES.iter().sum::<usize>()) as u64);
    for s in &served {
        assert!(s.error.is_none(), "server: {:?}", s.error);
    }
    assert_eq!(served.iter().map(|s| s.bytes).sum::<u64>(), bytes);
    assert!(writes.partial >= CONNECTIONS * SIZES.len(), "every message needs partial writes: {writes:?}");
    assert!(reads.partial >= CONNECTIONS * SIZES.len(), "every message needs partial reads: {reads:?}");
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// The kinds of misbehaving client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Sends part of a message, then resets the connection (`SO_LINGER` 0).
    ResetMidMessage,
    /// Sends its messages, shuts down its write side, and reads all the answers.
    HalfClose,
    /// Connects and sends nothing: the server's idle timeout must close it.
    NeverSend,
    /// Makes the server write more than the client reads, then disconnects.
    DisconnectWhileServerWrites,
    /// Connects and closes at once.
    ConnectAndVanish,
}

const FAULTS: [Fault; 5] = [
    Fault::ResetMidMessage,
    Fault::HalfClose,
    Fault::NeverSend,
    Fault::DisconnectWhileServerWrites,
    Fault::ConnectAndVanish,
];

fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream); // RST instead of FIN
}

/// Bytes a half-closing echo client sends.
const HALF_CLOSE_BYTES: usize = 3 * 4096;

/// One misbehaving echo client; returns the bytes the server should have echoed cleanly.
fn echo_fault_client(addr: SocketAddr, fault: Fault, seed: u64) -> io::Result<u64> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    match fault {
        Fault::ResetMidMessage => {
            let message = echo::payload(seed, 64 * 1024);
            (&stream).write_all(&message[..10_000])?;
            reset(stream);
            Ok(0)
        }
        Fault::HalfClose => {
            let data = echo::payload(seed, HALF_CLOSE_BYTES);
            for part in data.chunks(4096) {
                (&stream).write_all(part)?;
            }
            stream.shutdown(Shutdown::Write)?;
            let mut back = Vec::new();
            (&stream).read_to_end(&mut back)?;
            echo::verify(&data, &back)?;
            Ok(data.len() as u64)
        }
        Fault::NeverSend => {
            // The server must close it: EOF, well before our own 20 s read timeout.
            match (&stream).read(&mut [0u8; 1])? {
                0 => Ok(0),
                _ => Err(io::Error::other("the server sent a byte nobody asked for")),
            }
        }
        Fault::DisconnectWhileServerWrites => {
            // Write without reading until nothing moves for 100 ms: the server is then stuck
            // writing its echo to us (it reads whenever it is not writing).
            stream.set_write_timeout(Some(ms(100)))?;
            let block = echo::payload(seed, 1 << 20);
            let mut sent = 0usize;
            loop {
                match (&stream).write(&block) {
                    Ok(n) => sent += n,
                    Err(err) if echo::is_timeout(&err) => break,
                    Err(err) => return Err(err),
                }
                if sent > 256 << 20 {
                    return Err(io::Error::other("the server never stopped reading"));
                }
            }
            drop(stream); // unread echo in our buffer: the kernel resets the connection
            Ok(0)
        }
        Fault::ConnectAndVanish => {
            drop(stream);
            Ok(0)
        }
    }
}

/// A well-behaved echo client: `round_trips` checked round trips, then a clean close.
fn echo_good_client(addr: SocketAddr, id: usize, round_trips: usize) -> io::Result<u64> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let stream = Rc::new(stream);
    let mut back = Vec::new();
    let mut bytes = 0;
    for k in 0..round_trips {
        let data = Rc::new(echo::payload((id * 1000 + k) as u64, 1 + (id * 331 + k * 977) % 8192));
        echo::round_trip(&stream, &data, &mut back)?;
        bytes += data.len() as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    match (&*stream).read(&mut [0u8; 1])? {
        0 => Ok(bytes),
        _ => Err(io::Error::other("a byte after the echo")),
    }
}

/// The echo server under every kind of misbehaving client, running alongside well-behaved
/// ones; afterwards a second wave of well-behaved clients is served correctly. The server sees
/// exactly the expected endings (clean, timed out, aborted), echoed every byte of the
/// well-behaved clients, and no file descriptor is left behind.
#[test]
fn echo_server_survives_faults() {
    const NAME: &str = "echo_server_survives_faults";
    if !in_child(NAME) {
        return run_in_child(NAME);
    }
    const GOOD: usize = 50;
    const ROUND_TRIPS: usize = 20;
    const EACH_FAULT: usize = 10;
    const IDLE: Duration = Duration::from_secs(1);
    let started = Instant::now();
    raise_fd_limit();
    warm_up();
    let baseline = fd_count();
    let faulty = EACH_FAULT * FAULTS.len();
    let first_wave = GOOD + faulty;
    let total = first_wave + GOOD;

    let listener = local();
    let addr = listener.local_addr().unwrap();
    let finished = Arc::new(AtomicUsize::new(0));
    let server = echo_server_thread(listener, total, IDLE, finished.clone());

    let good_bytes = Rc::new(Cell::new(0u64));
    let errors = Rc::new(RefCell::new(Vec::<String>::new()));
    let fault_bytes = Rc::new(Cell::new(0u64));
    let good = {
        let (good_bytes, errors) = (good_bytes.clone(), errors.clone());
        move |id: usize| {
            let (good_bytes, errors) = (good_bytes.clone(), errors.clone());
            move || match echo_good_client(addr, id, ROUND_TRIPS) {
                Ok(bytes) => good_bytes.set(good_bytes.get() + bytes),
                Err(err) => errors.borrow_mut().push(format!("good client {id}: {err}")),
            }
        }
    };
    for id in 0..GOOD {
        tasklets::spawn(good(id));
        let fault = FAULTS[id % FAULTS.len()];
        if id < faulty {
            let (fault_bytes, errors) = (fault_bytes.clone(), errors.clone());
            tasklets::spawn(move || match echo_fault_client(addr, fault, id as u64) {
                Ok(bytes) => fault_bytes.set(fault_bytes.get() + bytes),
                Err(err) => errors.borrow_mut().push(format!("{fault:?} client {id}: {err}")),
            });
        }
    }
    assert!(faulty <= GOOD);
    // The second wave starts once the server has finished with every connection of the first.
    let second_wave = {
        let (finished, good) = (finished.clone(), good.clone());
        tasklets::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while finished.load(Ordering::SeqCst) < first_wave {
                assert!(Instant::now() < deadline, "the server did not finish the first wave");
                tasklets::time::sleep(ms(5));
            }
            for id in GOOD..2 * GOOD {
                tasklets::spawn(good(id));
            }
        })
    };
    tasklets::run();
    second_wave.join().unwrap();
    let tally = server.join().unwrap();
    drop(good);
    let after = fd_count();
    let errors = errors.borrow();
    println!(
        "echo_server_survives_faults: {total} connections: 2 x {GOOD} well-behaved ({ROUND_TRIPS} round trips \
         each, {} verified), {EACH_FAULT} each of {FAULTS:?}; server: {} clean ({} echoed), {} timed out, \
         {} aborted, {} other; {} client errors; fds {baseline} before, {after} after; {:.1} s",
        mib(good_bytes.get()),
        tally.clean,
        mib(tally.clean_bytes),
        tally.timed_out,
        tally.aborted,
        tally.other.len(),
        errors.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(tally.accepted, total);
    assert_eq!(tally.finished(), total);
    assert!(tally.other.is_empty(), "{:?}", tally.other);
    assert_eq!(tally.clean, 2 * GOOD + 2 * EACH_FAULT, "well-behaved, half-closing, vanishing");
    assert_eq!(tally.timed_out, EACH_FAULT, "never sending");
    assert_eq!(tally.aborted, 2 * EACH_FAULT, "reset, disconnected while the server wrote");
    assert_eq!(fault_bytes.get(), (EACH_FAULT * HALF_CLOSE_BYTES) as u64);
    assert_eq!(tally.clean_bytes, good_bytes.get() + fault_bytes.get(), "every byte echoed exactly once");
    assert_eq!(after, baseline, "file descriptors leaked");
}

// ---------------------------------------------------------------------------------------------
// The boss/worker server under faults
// ---------------------------------------------------------------------------------------------

/// One misbehaving boss/worker client (the same kinds as the echo server's, plus a line over
/// the length limit); returns the requests the server answered it.
fn boss_fault_client(addr: SocketAddr, fault: Option<Fault>) -> io::Result<u64> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let Some(fault) = fault else {
        // A line over the limit: answered with ERR, then the server closes.
        let line = vec![b'7'; 70 * 1024];
        (&stream).write_all(b"SUM ")?;
        let _ = (&stream).write_all(&line); // the server may close before taking all of it
                                            // The server closes with part of the line unread, which resets the connection: what
                                            // it wrote before is still delivered, then the reset.
        let mut answer = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = (&stream).read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        return if answer == b"ERR line too long\n" {
            Ok(1)
        } else {
            Err(io::Error::other(format!("answer to a long line: {:?}", String::from_utf8_lossy(&answer))))
        };
    };
    match fault {
        Fault::ResetMidMessage => {
            (&stream).write_all(b"SUM 1 2 3")?; // no newline
            reset(stream);
            Ok(0)
        }
        Fault::HalfClose => {
            let requests = [
                boss_worker::Request::Sum(vec![1, 2, 3]),
                boss_worker::Request::Hash { rounds: 500, word: "half".into() },
                boss_worker::Request::Sleep { ms: 5 },
            ];
            let mut expected = String::new();
            for request in &requests {
                (&stream).write_all(format!("{}\n", request.line()).as_bytes())?;
                expected.push_str(&request.expected());
                expected.push('\n');
            }
            stream.shutdown(Shutdown::Write)?;
            let mut answers = String::new();
            (&stream).read_to_string(&mut answers)?;
            if answers != expected {
                return Err(io::Error::other(format!("answers after a half-close: {answers:?}")));
            }
            Ok(requests.len() as u64)
        }
        Fault::NeverSend => match (&stream).read(&mut [0u8; 1])? {
            0 => Ok(0),
            _ => Err(io::Error::other("the server sent a byte nobody asked for")),
        },
        Fault::DisconnectWhileServerWrites => {
            // 128 MiB of answer: far more than the kernel buffers hold.
            (&stream).write_all(b"RAND 134217728 5\n")?;
            let mut start = [0u8; 4096];
            (&stream).read_exact(&mut start)?;
            if !start.starts_with(b"OK ") {
                return Err(io::Error::other("RAND answer does not start with OK"));
            }
            drop(stream); // unread answer in our buffer: the kernel resets the connection
            Ok(0)
        }
        Fault::ConnectAndVanish => {
            drop(stream);
            Ok(0)
        }
    }
}

/// A well-behaved boss/worker client: `connections` connections of `requests` checked
/// requests each (sums, hashes on the unblock pool, sleeps, a 2 MiB `RAND`).
fn boss_good_client(addr: SocketAddr, id: usize, connections: usize, requests: usize) -> io::Result<u64> {
    use boss_worker::Request;
    let mut answered = 0;
    for c in 0..connections {
        let mut client = boss_worker::Client::connect(addr)?;
        client.stream().set_read_timeout(Some(Duration::from_secs(20)))?;
        for i in 0..requests {
            let request = match (id + c + i) % 10 {
                0 => Request::Hash { rounds: 2_000, word: format!("w{}", i % 3) },
                1 => Request::Sleep { ms: 1 },
                2 if i == 2 => Request::Rand { len: 2 << 20, seed: (id * 100 + c) as u64 },
                _ => Request::Sum((0..(i % 5) as u64).map(|k| k + (id * i) as u64).collect()),
            };
            client.check(&request.line(), &request.expected())?;
            answered += 1;
        }
    }
    Ok(answered)
}

/// The boss/worker server (4 workers, 1 s idle timeout) under the same faults as the echo
/// server, plus a line over the length limit, alongside well-behaved clients; then a second
/// wave of well-behaved clients. The boss's ledger accounts for every job it accepted, each
/// with the ending its client caused, and every answer the clients got was right.
#[test]
fn boss_worker_loses_no_job_under_faults() {
    const NAME: &str = "boss_worker_loses_no_job_under_faults";
    if !in_child(NAME) {
        return run_in_child(NAME);
    }
    const GOOD: usize = 12;
    const CONNECTIONS: usize = 3;
    const REQUESTS: usize = 30;
    const EACH_FAULT: usize = 3;
    let started = Instant::now();
    raise_fd_limit();
    warm_up();
    let baseline = fd_count();

    let config =
        boss_worker::Config { workers: 4, idle_timeout: Duration::from_secs(1), ..Default::default() };
    let server = boss_worker::Server::start(local(), config).unwrap();
    let addr = server.local_addr();
    let answered = Rc::new(Cell::new(0u64));
    let errors = Rc::new(RefCell::new(Vec::<String>::new()));
    let good_wave = |wave: usize| -> Vec<tasklets::Tasklet<()>> {
        (0..GOOD)
            .map(|g| {
                let (answered, errors) = (answered.clone(), errors.clone());
                let id = wave * GOOD + g;
                tasklets::spawn(move || match boss_good_client(addr, id, CONNECTIONS, REQUESTS) {
                    Ok(n) => answered.set(answered.get() + n),
                    Err(err) => errors.borrow_mut().push(format!("good client {id}: {err}")),
                })
            })
            .collect()
    };
    let mut first = good_wave(0);
    let kinds: Vec<Option<Fault>> = FAULTS.iter().copied().map(Some).chain([None]).collect();
    for k in 0..EACH_FAULT {
        for &fault in &kinds {
            let (answered, errors) = (answered.clone(), errors.clone());
            first.push(tasklets::spawn(move || match boss_fault_client(addr, fault) {
                Ok(n) => answered.set(answered.get() + n),
                Err(err) => errors.borrow_mut().push(format!("{fault:?} client {k}: {err}")),
            }));
        }
    }
    for client in first {
        client.join().unwrap();
    }
    for client in good_wave(1) {
        client.join().unwrap();
    }
    let ledger = server.shutdown();
    let after = fd_count();
    let errors = errors.borrow();
    let good_connections = (2 * GOOD * CONNECTIONS) as u64;
    let faulty = (EACH_FAULT * kinds.len()) as u64;
    println!(
        "boss_worker_loses_no_job_under_faults: {} connections: {good_connections} well-behaved \
         ({REQUESTS} requests each), {EACH_FAULT} each of {FAULTS:?} and a too-long line; {} answers \
         checked; ledger {ledger:?}; {} client errors; fds {baseline} before, {after} after; {:.1} s",
        good_connections + faulty,
        answered.get(),
        errors.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(errors.is_empty(), "{errors:#?}");
    let each = EACH_FAULT as u64;
    assert_eq!(ledger.accepted, good_connections + faulty, "every connection became a job");
    assert_eq!(ledger.finished, ledger.accepted, "a job was lost: {ledger:?}");
    assert_eq!(ledger.closed, good_connections + 2 * each, "well-behaved, half-closing, vanishing");
    assert_eq!(ledger.timed_out, each, "never sending");
    assert_eq!(ledger.aborted, 2 * each, "reset mid-request, disconnected while the server wrote");
    assert_eq!(ledger.refused, each, "too-long line");
    assert_eq!(ledger.accept_errors, 0);
    assert_eq!(ledger.requests, answered.get(), "requests answered = answers the clients checked");
    assert_eq!(after, baseline, "file descriptors leaked");
}
