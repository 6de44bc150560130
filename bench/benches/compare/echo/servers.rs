//! The echo servers, one per process (the child with `role=server`), and the protocol by which
//! the parent drives them over stdin/stdout: the server prints `PORT <port>` once listening; on
//! `start` it takes a `getrusage(RUSAGE_SELF)` snapshot, on `stop` another one, and prints
//! `RESULT ...` (user and system CPU seconds between the two, `VmHWM`, `VmRSS`, thread count); it
//! exits when its stdin closes. The process holds nothing but the server (and the thread that
//! reads these commands, blocked in `read`), so its CPU time is the server's, helper threads of
//! the runtime included.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::common::{emit, in_may, may_go, rusage, status_kib, threads, tokio_runtime};

/// Read buffer of every server (so a 4 KiB message is a short read for all of them).
pub const BUF: usize = 16 * 1024;

/// `CLOCK_MONOTONIC` in seconds: the clock `perf record -k CLOCK_MONOTONIC` stamps samples with.
fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Prints the port and starts the thread that answers `start` / `stop` from the parent.
fn announce(port: u16) {
    println!("PORT {port}");
    std::io::stdout().flush().ok();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(|| {
            let stdin = std::io::stdin();
            let mut start = None;
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                match line.trim() {
                    "start" => start = Some((rusage(libc::RUSAGE_SELF), Instant::now(), monotonic())),
                    "stop" => {
                        let ((u1, s1), t1, m1) = (rusage(libc::RUSAGE_SELF), Instant::now(), monotonic());
                        let ((u0, s0), t0, m0) = start.unwrap_or(((u1, s1), t1, m1));
                        emit(&[
                            ("mono_start_s", m0),
                            ("mono_stop_s", m1),
                            ("user_s", (u1 - u0).as_secs_f64()),
                            ("sys_s", (s1 - s0).as_secs_f64()),
                            ("server_wall_s", (t1 - t0).as_secs_f64()),
                            ("hwm_kib", status_kib("VmHWM") as f64),
                            ("rss_kib", status_kib("VmRSS") as f64),
                            ("threads", threads() as f64),
                        ]);
                        std::io::stdout().flush().ok();
                    }
                    _ => {}
                }
            }
            // The parent closed our stdin (the load generator is gone): exit at once.
            // SAFETY: _exit ends the process; the server threads hold nothing to flush.
            unsafe { libc::_exit(0) };
        })
        .expect("control thread");
}

pub fn server(imp: &str) {
    match imp {
        "tasklet" => server_tasklet(),
        "may" => server_may(),
        "tokio" => server_tokio(),
        "threads" => server_threads(),
        "floor" => server_floor_polling(),
        "floor-epoll" => server_floor_epoll(),
        other => panic!("unknown echo server {other}"),
    }
}

fn server_tasklet() {
    use tasklets::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    announce(listener.local_addr().expect("addr").port());
    tasklets::spawn(move || loop {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        tasklets::spawn(move || {
            let mut buf = vec![0u8; BUF];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    });
    tasklets::run();
}

fn server_may() {
    let listener = may::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    announce(listener.local_addr().expect("addr").port());
    in_may(move || loop {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        may_go(move || {
            let mut buf = vec![0u8; BUF];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    });
}

fn server_tokio() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio_runtime();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        announce(listener.local_addr().expect("addr").port());
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let mut buf = vec![0u8; BUF];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
}

fn server_threads() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    announce(listener.local_addr().expect("addr").port());
    loop {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; BUF];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The floor: one thread, non-blocking sockets, edge-triggered readiness, no tasks at all.

/// One connection of the hand-written loop: bytes read but not yet written back wait in
/// `pending` until the socket is writable again.
struct Conn {
    stream: std::net::TcpStream,
    pending: Vec<u8>,
}

/// Handles a readiness edge: flushes what is pending, then reads and echoes until the socket
/// is drained. A short read means the receive queue is empty, and any byte that arrives later
/// raises a new edge, so no `EAGAIN` read is needed then (as mio/tokio do). Returns false when
/// the connection is finished.
fn serve(conn: &mut Conn, buf: &mut [u8]) -> bool {
    fn write_out(stream: &mut std::net::TcpStream, data: &[u8], pending: &mut Vec<u8>) -> bool {
        let mut off = 0;
        while off < data.len() {
            match stream.write(&data[off..]) {
                Ok(k) => off += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    pending.extend_from_slice(&data[off..]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
    if !conn.pending.is_empty() {
        let pending = std::mem::take(&mut conn.pending);
        if !write_out(&mut conn.stream, &pending, &mut conn.pending) {
            return false;
        }
    }
    loop {
        if !conn.pending.is_empty() {
            return true; // wait for the writable edge
        }
        match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if !write_out(&mut conn.stream, &buf[..n], &mut conn.pending) {
                    return false;
                }
                if n < buf.len() {
                    return true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Connections by key (key 0 is the listener; connection keys start at 1).
#[derive(Default)]
struct Slab {
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, conn: Conn) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(conn);
                i + 1
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len()
            }
        }
    }

    fn get(&mut self, key: usize) -> Option<&mut Conn> {
        self.conns.get_mut(key.checked_sub(1)?)?.as_mut()
    }

    fn remove(&mut self, key: usize) -> Option<Conn> {
        let conn = self.conns.get_mut(key - 1)?.take();
        if conn.is_some() {
            self.free.push(key - 1);
        }
        conn
    }
}

/// Accepts every pending connection; calls `register(key, &stream)` for each.
fn accept_all(listener: &std::net::TcpListener, slab: &mut Slab, mut register: impl FnMut(usize, &Conn)) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true).expect("nonblocking");
                stream.set_nodelay(true).expect("nodelay");
                let key = slab.insert(Conn { stream, pending: Vec::new() });
                let conn = slab.get(key).expect("just inserted");
                register(key, conn);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// The floor on the `polling` crate (tasklet's reactor used it until issue 14 gave it its own
/// epoll poller), in edge mode.
fn server_floor_polling() {
    use polling::{Event, Events, PollMode, Poller};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    announce(listener.local_addr().expect("addr").port());
    let poller = Poller::new().expect("poller");
    // SAFETY: every source is deleted from the poller before it is closed.
    unsafe { poller.add_with_mode(&listener, Event::readable(0), PollMode::Edge) }.expect("add listener");
    let mut slab = Slab::default();
    let mut buf = vec![0u8; BUF];
    let mut events = Events::new();
    loop {
        events.clear();
        poller.wait(&mut events, None).expect("wait");
        for ev in events.iter() {
            if ev.key == 0 {
                accept_all(&listener, &mut slab, |key, conn| {
                    // SAFETY: as above.
                    unsafe { poller.add_with_mode(&conn.stream, Event::all(key), PollMode::Edge) }
                        .expect("add");
                });
            } else if let Some(conn) = slab.get(ev.key) {
                if !serve(conn, &mut buf) {
                    let conn = slab.remove(ev.key).expect("conn");
                    poller.delete(&conn.stream).ok();
                }
            }
        }
    }
}

/// The same loop on raw `epoll` (libc), without the `polling` crate: shows what the crate's
/// wrapper costs per wait.
fn server_floor_epoll() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    announce(listener.local_addr().expect("addr").port());
    // SAFETY: plain epoll calls on fds we own; the event array outlives each epoll_wait.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    let add = |fd: i32, key: usize, flags: u32| {
        let mut ev = libc::epoll_event { events: flags | libc::EPOLLET as u32, u64: key as u64 };
        // SAFETY: as above.
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl ADD");
    };
    add(listener.as_raw_fd(), 0, libc::EPOLLIN as u32);
    let mut slab = Slab::default();
    let mut buf = vec![0u8; BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        // SAFETY: as above.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            assert_eq!(std::io::Error::last_os_error().kind(), ErrorKind::Interrupted, "epoll_wait");
            continue;
        }
        for ev in &events[..n as usize] {
            let key = ev.u64 as usize;
            if key == 0 {
                accept_all(&listener, &mut slab, |key, conn| {
                    let flags = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP;
                    add(conn.stream.as_raw_fd(), key, flags as u32);
                });
            } else if let Some(conn) = slab.get(key) {
                if !serve(conn, &mut buf) {
                    let conn = slab.remove(key).expect("conn");
                    // SAFETY: as above (deleted before the fd is closed).
                    unsafe {
                        libc::epoll_ctl(
                            ep,
                            libc::EPOLL_CTL_DEL,
                            conn.stream.as_raw_fd(),
                            std::ptr::null_mut(),
                        )
                    };
                }
            }
        }
    }
}
