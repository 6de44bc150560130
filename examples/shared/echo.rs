//! The echo server's connection handler and the echo client's round trip, shared by
//! `examples/echo_server.rs`, `examples/echo_load.rs` and the stress tests (`tests/stress.rs`
//! includes this file with `#[path]`). Not an example of its own: cargo only builds
//! `examples/*.rs` and `examples/*/main.rs`.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Duration;

use tasklets::net::TcpStream;

/// Bytes a connection handler reads (and writes back) at a time.
pub const CHUNK: usize = 16 * 1024;

/// Messages up to this size are written before their echo is read; larger ones are written by a
/// helper tasklet while the caller reads, since the kernel's buffers may not hold all of them.
pub const INLINE_LIMIT: usize = 32 * 1024;

/// How one echo connection ended.
#[derive(Debug)]
pub struct Served {
    /// Bytes read and written back.
    pub bytes: u64,
    /// `None` when the client closed its side and got every byte back; else what failed.
    pub error: Option<io::Error>,
}

/// Serves one echo connection, blocking-style, until the client closes its side: every byte
/// read is written back. Sets `TCP_NODELAY`. With `idle_timeout`, a read or a write that waits
/// longer than that fails (a client that sends nothing, or never reads, is dropped).
pub fn serve_connection(stream: TcpStream, idle_timeout: Option<Duration>) -> Served {
    let mut served = Served { bytes: 0, error: None };
    if let Err(err) = echo(&stream, idle_timeout, &mut served.bytes) {
        served.error = Some(err);
    }
    served
}

fn echo(mut stream: &TcpStream, idle_timeout: Option<Duration>, bytes: &mut u64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(idle_timeout)?;
    stream.set_write_timeout(idle_timeout)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        stream.write_all(&buf[..n])?;
        *bytes += n as u64;
    }
}

/// Whether `err` is what a read or write timeout gives (`WouldBlock`, as std on Linux).
pub fn is_timeout(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Whether `err` is what a peer that reset or vanished mid-connection gives.
pub fn is_abort(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// Sends `data` on `stream` and reads the echo into `echo`, checking every byte. Large messages
/// are written by a helper tasklet (on the caller's thread) while the caller reads.
pub fn round_trip(stream: &Rc<TcpStream>, data: &Rc<Vec<u8>>, echo: &mut Vec<u8>) -> io::Result<()> {
    echo.resize(data.len(), 0);
    if data.len() <= INLINE_LIMIT {
        (&**stream).write_all(data)?;
        (&**stream).read_exact(echo)?;
    } else {
        let writer = {
            let (stream, data) = (stream.clone(), data.clone());
            tasklets::spawn(move || (&*stream).write_all(&data))
        };
        let read = (&**stream).read_exact(echo);
        if read.is_err() {
            // The writer may be parked on a connection that will never drain: stop it.
            writer.kill();
        }
        read?;
        writer.join().map_err(|err| io::Error::other(format!("writer tasklet: {err}")))??;
    }
    verify(data, echo)
}

/// `Ok` when `echo` is exactly `data`, else an `InvalidData` error naming the first difference.
pub fn verify(data: &[u8], echo: &[u8]) -> io::Result<()> {
    if data == echo {
        return Ok(());
    }
    let at = data.iter().zip(echo).position(|(a, b)| a != b).unwrap_or(data.len().min(echo.len()));
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("echo differs from what was sent at byte {at} of {} (got {} bytes)", data.len(), echo.len()),
    ))
}

/// `len` deterministic pseudo-random bytes (xorshift64 seeded from `seed`).
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// FNV-1a (64 bit) of `data`.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The `p`-th percentile (0..=100) of sorted `samples`, nearest rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration for people: `850 µs`, `12.3 ms`, `1.52 s`.
pub fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
