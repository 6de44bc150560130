//! The shims on every scheduler thread at once: after `install()`, unmodified std code in the
//! tasklets of two `tasklets::threads` scheduler threads is cooperative on both, and std
//! sockets cross between them.
//!
//! Time bounds are loose: each asserts only what sequential execution could never meet.
//! Every socket has a 10 s timeout, so a call that blocked its thread would fail the test
//! instead of hanging it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

mod common;
use common::{install, ms};

const TIMEOUT: Duration = Duration::from_secs(10);
const CLIENTS: usize = 20;
const ROUNDS: usize = 50;

/// Sets `SO_RCVTIMEO` on a listener (std has no setter for it), which bounds `accept`.
fn bound_accept(listener: &TcpListener) {
    let tv = libc::timeval { tv_sec: TIMEOUT.as_secs() as libc::time_t, tv_usec: 0 };
    // SAFETY: a valid timeval of the size passed, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// Plain blocking std code: echo until the peer closes.
fn echo(mut conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = [0; 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

/// Plain blocking std code: `ROUNDS` messages, each echo checked, a sleep now and then.
fn client(addr: SocketAddr, id: usize) -> io::Result<usize> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    let mut bytes = 0;
    for round in 0..ROUNDS {
        let msg = vec![(id * 31 + round) as u8; 16 + (id + round) % 200];
        conn.write_all(&msg)?;
        let mut back = vec![0; msg.len()];
        conn.read_exact(&mut back)?;
        assert_eq!(back, msg);
        bytes += msg.len();
        if round % 10 == 0 {
            std::thread::sleep(ms(1));
        }
    }
    conn.shutdown(Shutdown::Write)?;
    Ok(bytes)
}

fn expected_bytes() -> usize {
    (0..CLIENTS).flat_map(|id| (0..ROUNDS).map(move |round| 16 + (id + round) % 200)).sum()
}

/// What one scheduler thread did: bytes echoed to its clients and how long 20 parallel
/// `std::thread::sleep(100 ms)` took there.
fn serve_and_sleep_here() -> (usize, Duration) {
    // A std server and its clients, all tasklets of this one thread: if `accept` or `read`
    // blocked the thread, the clients could never connect or write.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    bound_accept(&listener);
    let addr = listener.local_addr().unwrap();
    tasklets::spawn(move || {
        for _ in 0..CLIENTS {
            let (conn, _) = listener.accept().unwrap();
            tasklets::spawn(move || echo(conn).unwrap());
        }
    });
    let clients: Vec<_> = (0..CLIENTS).map(|id| tasklets::spawn(move || client(addr, id))).collect();
    let start = Instant::now();
    let sleepers: Vec<_> = (0..20).map(|_| tasklets::spawn(|| std::thread::sleep(ms(100)))).collect();
    for sleeper in sleepers {
        sleeper.join().unwrap();
    }
    let slept = start.elapsed();
    let bytes = clients.into_iter().map(|c| c.join().unwrap().unwrap()).sum();
    (bytes, slept)
}

#[test]
fn blocking_std_code_is_cooperative_on_two_scheduler_threads_at_once() {
    install();
    let threads = tasklets::threads::spawn(2, |_| serve_and_sleep_here()).unwrap();
    for (index, result) in threads.join().into_iter().enumerate() {
        let (bytes, slept) = result.unwrap();
        println!("thread {index}: {bytes} bytes echoed; 20 x std::thread::sleep(100 ms) took {slept:?}");
        assert_eq!(bytes, expected_bytes(), "thread {index}");
        assert!(slept >= ms(100), "thread {index}: {slept:?}");
        // One after another, 2 s.
        assert!(slept < ms(1500), "thread {index}: sleeps are not cooperative: {slept:?}");
    }
}

/// A std server on one scheduler thread, std clients on the other: each side's blocking calls
/// park its own tasklets, and the two threads' pollers wake them.
#[test]
fn std_sockets_cross_between_scheduler_threads() {
    install();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    bound_accept(&listener);
    let addr = listener.local_addr().unwrap();
    let threads = tasklets::threads::spawn(2, |_| ()).unwrap();
    let server = threads.thread(0).spawn(move || {
        for _ in 0..CLIENTS {
            let (conn, _) = listener.accept().unwrap();
            tasklets::spawn(move || echo(conn).unwrap());
        }
    });
    let clients: Vec<_> = (0..CLIENTS).map(|id| threads.thread(1).spawn(move || client(addr, id))).collect();
    let bytes: usize = clients.into_iter().map(|c| c.join().unwrap().unwrap()).sum();
    server.join().unwrap();
    assert_eq!(bytes, expected_bytes());
    for result in threads.join() {
        result.unwrap();
    }
}
