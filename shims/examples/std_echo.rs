//! Unmodified thread-style `std::net` code, made cooperative by `tasklets_shims::install()`:
//! an echo server and 200 clients (each sleeping 100-150 ms with `std::thread::sleep` first)
//! run as tasklets on the main thread, concurrently: about 150 ms in all, not 25 s.
//!
//! `cargo run --release -p tasklets-shims --example std_echo`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const CLIENTS: usize = 200;

/// Thread-style code, exactly as it would be written for one OS thread per connection.
fn handle(mut conn: TcpStream) -> std::io::Result<()> {
    let mut buf = [0; 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

fn client(addr: std::net::SocketAddr, id: usize) -> std::io::Result<bool> {
    // 100-150 ms: spread the connects, std's listen backlog is 128.
    std::thread::sleep(Duration::from_millis(100 + id as u64 % 50));
    let mut conn = TcpStream::connect(addr)?;
    let msg = format!("hello from client {id}");
    conn.write_all(msg.as_bytes())?;
    let mut back = vec![0; msg.len()];
    conn.read_exact(&mut back)?;
    Ok(back == msg.as_bytes())
}

fn main() {
    tasklets_shims::install().expect("tasklets-shims needs dynamically linked glibc on Linux x86_64");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tasklets::spawn(move || {
        for conn in listener.incoming().take(CLIENTS) {
            let conn = conn.unwrap();
            tasklets::spawn(move || handle(conn).unwrap());
        }
    });
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS).map(|id| tasklets::spawn(move || client(addr, id).unwrap())).collect();
    let ok = clients.into_iter().filter_map(|c| c.join().ok()).filter(|&ok| ok).count();
    tasklets::run();
    println!(
        "{ok}/{CLIENTS} echo round trips, each client sleeping 100-150 ms first, on one thread: {:?}",
        start.elapsed()
    );
    assert_eq!(ok, CLIENTS);
}
