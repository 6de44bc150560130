//! An echo server written blocking-style: an acceptor tasklet, and one tasklet per connection
//! that reads and writes back until the client closes. Everything runs on one OS thread;
//! `read` and `write` park only the connection's own tasklet.
//!
//! With `--threads N` it is the shared-nothing server of `docs/multicore.md`: N scheduler
//! threads (`tasklets::threads`), each with its own listener on the same port
//! (`TcpListener::options().reuse_port(true)`), its own acceptor and its own connections; the
//! kernel spreads the connections over the listeners. Nothing is shared between the threads.
//!
//! ```sh
//! cargo run --release --example echo_server                    # listens on 127.0.0.1:7000
//! cargo run --release --example echo_server -- 127.0.0.1:7001
//! cargo run --release --example echo_server -- 127.0.0.1:7001 --threads 2
//! cargo run --release --example echo_load -- 127.0.0.1:7001    # in another terminal
//! RUST_LOG=debug cargo run --release --example echo_server     # a line per connection
//! ```
//!
//! It serves until killed. Accepted connections get `TCP_NODELAY`; a connection that neither
//! sends nor takes its echo for `--idle-timeout` seconds (default 60) is closed; `--idle-timeout 0`
//! turns the timeout off (to measure what it costs: docs/benchmarks.md).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use tasklets::net::TcpListener;

#[path = "shared/echo.rs"]
mod echo;

const USAGE: &str =
    "usage: echo_server [ADDR] [--threads N] [--idle-timeout SECS]   (ADDR defaults to 127.0.0.1:7000)";

struct Args {
    addr: String,
    idle_timeout: Option<Duration>,
    /// Scheduler threads, each with its own listener.
    threads: usize,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed =
        Args { addr: "127.0.0.1:7000".into(), idle_timeout: Some(Duration::from_secs(60)), threads: 1 };
    let mut addr_seen = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--idle-timeout" => {
                let value = inline.or_else(|| args.next()).ok_or("--idle-timeout needs a value")?;
                let secs: f64 =
                    value.parse().map_err(|_| format!("--idle-timeout: not a number: {value:?}"))?;
                if !(0.0..1e9).contains(&secs) {
                    return Err(format!("--idle-timeout must be 0 (off) or positive, got {value}"));
                }
                parsed.idle_timeout = (secs > 0.0).then(|| Duration::from_secs_f64(secs));
            }
            "--threads" => {
                let value = inline.or_else(|| args.next()).ok_or("--threads needs a value")?;
                parsed.threads = match value.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--threads needs a positive number, got {value:?}")),
                };
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg:?}")),
            _ if !addr_seen => {
                parsed.addr = arg;
                addr_seen = true;
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(parsed)
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
            eprintln!("echo_server: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listeners = match bind(&args.addr, args.threads) {
        Ok(listeners) => listeners,
        Err(err) => {
            eprintln!("echo_server: cannot listen on {}: {err}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listeners[0].local_addr().expect("a bound listener has an address");
    let idle_timeout = args.idle_timeout;
    if args.threads == 1 {
        println!("echo_server: listening on {addr}");
        let listener = listeners.into_iter().next().expect("one listener");
        tasklets::spawn(move || accept_loop(listener, idle_timeout));
        tasklets::run(); // never returns: the acceptor always waits for the next connection
        return ExitCode::SUCCESS;
    }
    // One scheduler thread per listener; each takes its own and serves on its own.
    let listeners = Mutex::new(listeners.into_iter().map(Some).collect::<Vec<_>>());
    let threads = tasklets::threads::Builder::new(args.threads).name("echo").spawn(move |index| {
        let listener = listeners.lock().unwrap()[index].take().expect("one listener per thread");
        accept_loop(listener, idle_timeout)
    });
    match threads {
        Ok(threads) => {
            println!("echo_server: listening on {addr} with {} threads", args.threads);
            threads.join(); // never returns: the acceptors always wait for the next connection
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("echo_server: cannot start {} threads: {err}", args.threads);
            ExitCode::FAILURE
        }
    }
}

/// The listeners: one plain, or `threads` sharing one port with `SO_REUSEPORT` (the first one
/// picks the port when `addr` says 0). All are bound here, so that a bad address is reported
/// before any thread starts.
fn bind(addr: &str, threads: usize) -> std::io::Result<Vec<TcpListener>> {
    if threads == 1 {
        return Ok(vec![TcpListener::bind(addr)?]);
    }
    let first = TcpListener::options().reuse_port(true).bind(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(TcpListener::options().reuse_port(true).bind(addr)?);
    }
    Ok(listeners)
}

fn accept_loop(listener: TcpListener, idle_timeout: Option<Duration>) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                log::debug!("{peer}: connected");
                // A failed spawn (no stack: out of memory or mappings) drops this connection
                // (the closure and its stream), not the acceptor.
                let served = tasklets::Builder::new()
                    .spawn(move || finish(peer, echo::serve_connection(stream, idle_timeout)));
                if let Err(err) = served {
                    log::warn!("{peer}: dropped, no tasklet for it: {err}");
                    tasklets::time::sleep(Duration::from_millis(10));
                }
            }
            Err(err) => {
                // Out of file descriptors, typically: the connection stays queued; try later.
                log::warn!("accept failed: {err}");
                tasklets::time::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn finish(peer: SocketAddr, served: echo::Served) {
    match served.error {
        None => log::debug!("{peer}: closed after {} bytes", served.bytes),
        Some(err) if echo::is_timeout(&err) => {
            log::info!("{peer}: idle, closed after {} bytes", served.bytes)
        }
        Some(err) => log::info!("{peer}: {err} after {} bytes", served.bytes),
    }
}
