//! Echo round trips over loopback on ONE thread: a server tasklet per connection and client
//! tasklets, all on the same scheduler, talking through `tasklets::net`.
//!
//! ```sh
//! # 100 connections x 2,000 round trips of 64 B
//! cargo bench -p tasklets-bench --bench echo
//! # connections, round trips each, message size
//! cargo bench -p tasklets-bench --bench echo -- 1000 200 4096
//! # oneshot registration instead of edge
//! TASKLET_POLL_MODE=oneshot cargo bench -p tasklets-bench --bench echo
//! ```
//!
//! Prints round trips per second and the process's CPU time (user and system, from
//! `getrusage`) per round trip: CPU per round trip is the stable figure on a noisy machine.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use tasklets::net::{TcpListener, TcpStream};

fn cpu_time() -> (Duration, Duration) {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (conns, trips, size) = match args.as_slice() {
        [c, t, s, ..] => (*c, *t, *s),
        [c, t] => (*c, *t, 64),
        [c] => (*c, 2_000, 64),
        [] => (100, 2_000, 64),
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    tasklets::spawn(move || {
        for _ in 0..conns {
            let (mut stream, _) = listener.accept().expect("accept");
            stream.set_nodelay(true).expect("nodelay");
            tasklets::spawn(move || {
                let mut buf = vec![0u8; size];
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
    });
    let clients: Vec<_> = (0..conns)
        .map(|i| {
            tasklets::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let msg: Vec<u8> = (0..size).map(|j| (i + j) as u8).collect();
                let mut back = vec![0u8; size];
                for _ in 0..trips {
                    stream.write_all(&msg).expect("write");
                    stream.read_exact(&mut back).expect("read");
                    assert_eq!(back, msg, "echo corrupted");
                }
            })
        })
        .collect();
    let (u0, s0) = cpu_time();
    let start = Instant::now();
    tasklets::run();
    let elapsed = start.elapsed();
    let (u1, s1) = cpu_time();
    for c in clients {
        c.join().expect("client");
    }
    let total = (conns * trips) as f64;
    let mode = std::env::var("TASKLET_POLL_MODE").unwrap_or_else(|_| "edge".into());
    println!(
        "echo, one thread, {conns} connections x {trips} round trips of {size} B ({mode}): {:.0} round trips/s, \
         user {:.2} us + sys {:.2} us CPU per round trip (client and server together)",
        total / elapsed.as_secs_f64(),
        (u1 - u0).as_secs_f64() * 1e6 / total,
        (s1 - s0).as_secs_f64() * 1e6 / total,
    );
}
