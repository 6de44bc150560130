//! A load generator for an echo server: N connections, each doing M round trips of S bytes,
//! all as blocking-style tasklets on one OS thread. Every byte that comes back is checked
//! against what was sent; the report gives throughput and latency percentiles.
//!
//! ```sh
//! cargo run --release --example echo_server &      # or any echo server
//! cargo run --release --example echo_load -- 127.0.0.1:7000 --connections 100 --round-trips 1000 --size 64
//! ```
//!
//! Exits 0 when every round trip came back intact, 1 otherwise.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklets::net::TcpStream;

#[path = "shared/echo.rs"]
mod echo;

const USAGE: &str = "usage: echo_load [ADDR] [--connections N] [--round-trips M] [--size BYTES] \
                     [--timeout SECS]   (ADDR defaults to 127.0.0.1:7000)";

struct Args {
    addr: String,
    connections: usize,
    round_trips: usize,
    size: usize,
    timeout: Duration,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        addr: "127.0.0.1:7000".into(),
        connections: 100,
        round_trips: 1000,
        size: 64,
        timeout: Duration::from_secs(30),
    };
    let mut addr_seen = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value =
            |what: &str| inline.clone().or_else(|| args.next()).ok_or(format!("{what} needs a value"));
        let number = |what: &str, value: String| -> Result<usize, String> {
            value.parse().map_err(|_| format!("{what} needs a number, got {value:?}"))
        };
        match name.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--connections" | "-c" => parsed.connections = number(&name, value(&name)?)?,
            "--round-trips" | "-n" => parsed.round_trips = number(&name, value(&name)?)?,
            "--size" | "-s" => parsed.size = number(&name, value(&name)?)?,
            "--timeout" => {
                let secs = number(&name, value(&name)?)?;
                parsed.timeout = Duration::from_secs(secs.max(1) as u64);
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg:?}")),
            _ if !addr_seen => {
                parsed.addr = arg;
                addr_seen = true;
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    if parsed.connections == 0 || parsed.size == 0 {
        return Err("--connections and --size must be at least 1".into());
    }
    Ok(parsed)
}

#[derive(Default)]
struct Totals {
    latencies: Vec<Duration>,
    bytes: u64,
    errors: u64,
}

fn main() -> ExitCode {
    env_logger::init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("echo_load: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let addr: SocketAddr = match std::net::ToSocketAddrs::to_socket_addrs(&args.addr).map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        _ => {
            eprintln!("echo_load: cannot resolve {:?}", args.addr);
            return ExitCode::from(2);
        }
    };
    println!(
        "echo_load: {} connections x {} round trips x {} B to {addr}",
        args.connections, args.round_trips, args.size
    );
    let totals = Rc::new(RefCell::new(Totals::default()));
    let start = Instant::now();
    let clients: Vec<_> = (0..args.connections)
        .map(|conn| {
            let totals = totals.clone();
            let (round_trips, size, timeout) = (args.round_trips, args.size, args.timeout);
            tasklets::spawn(move || {
                if let Err(err) = client(addr, conn, round_trips, size, timeout, &totals) {
                    log::warn!("connection {conn}: {err}");
                    totals.borrow_mut().errors += 1;
                }
            })
        })
        .collect();
    for client in clients {
        if let Err(err) = client.join() {
            eprintln!("echo_load: a client tasklet failed: {err}");
            totals.borrow_mut().errors += 1;
        }
    }
    let elapsed = start.elapsed();

    let mut totals = totals.borrow_mut();
    totals.latencies.sort_unstable();
    let trips = totals.latencies.len() as u64;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let lat = |p| echo::human(echo::percentile(&totals.latencies, p));
    println!(
        "round trips  {} in {:.2} s ({}/s)",
        echo::thousands(trips),
        secs,
        echo::thousands((trips as f64 / secs) as u64)
    );
    println!(
        "throughput   {:.1} MB/s each way ({} bytes sent and verified)",
        totals.bytes as f64 / secs / 1e6,
        echo::thousands(totals.bytes)
    );
    println!("latency      p50 {}, p90 {}, p99 {}, max {}", lat(50.0), lat(90.0), lat(99.0), lat(100.0));
    println!("errors       {}", totals.errors);
    if totals.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One connection: `round_trips` echoes of `size` bytes, each checked byte for byte.
fn client(
    addr: SocketAddr,
    conn: usize,
    round_trips: usize,
    size: usize,
    timeout: Duration,
    totals: &RefCell<Totals>,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let stream = Rc::new(stream);
    // A few distinct messages per connection, so that a mixed-up echo cannot pass.
    let messages: Vec<Rc<Vec<u8>>> =
        (0..3).map(|k| Rc::new(echo::payload((conn * 3 + k) as u64, size))).collect();
    let mut back = Vec::with_capacity(size);
    for trip in 0..round_trips {
        let message = &messages[trip % messages.len()];
        let sent = Instant::now();
        echo::round_trip(&stream, message, &mut back)?;
        let latency = sent.elapsed();
        let mut totals = totals.borrow_mut();
        totals.latencies.push(latency);
        totals.bytes += size as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    // The server closes after the echo: anything more would be a byte we did not send.
    let mut rest = [0u8; 1];
    match std::io::Read::read(&mut &*stream, &mut rest)? {
        0 => Ok(()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "more bytes than were sent")),
    }
}
