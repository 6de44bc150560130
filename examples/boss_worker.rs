//! The main demo: a boss/worker TCP server and its clients, all tasklets on one OS thread,
//! all written blocking-style.
//!
//! - The **boss** tasklet accepts connections and hands each one, as a job, to a fixed pool of
//!   **worker** tasklets over channels; each worker asks the boss for work and hands in the
//!   report of its last job at the same rendezvous, so the boss accounts for every job.
//! - A worker talks to its client with plain `read_line`/`write_all` on
//!   `tasklets::net::TcpStream`: `SUM` it computes itself, `HASH` (CPU-heavy) it runs on the
//!   `tasklets::unblock` pool, `SLEEP` it serves with `tasklets::time::sleep`, `RAND` is a long
//!   answer written as it is generated. Each of these parks only the worker's tasklet.
//! - The clients are tasklets too: each opens connections one after the other and checks every
//!   answer.
//!
//! ```sh
//! cargo run --release --example boss_worker                         # the self-contained demo
//! cargo run --release --example boss_worker -- --workers 4 --clients 64 --requests 1000
//! cargo run --release --example boss_worker -- --serve 127.0.0.1:7100   # only the server (SIGQUIT dumps)
//! printf 'SUM 1 2 3\nHASH 1000 tasklet\nSLEEP 20\nRAND 16 7\nQUIT\n' | nc 127.0.0.1 7100
//! RUST_LOG=debug cargo run --release --example boss_worker -- --clients 2 --requests 10
//! cargo run --release --example boss_worker -- --console 127.0.0.1:6680 --requests 100000
//! ```
//!
//! `--console ADDR` serves the live web console (`tasklets-console`) on ADDR while it runs:
//! open `http://ADDR/` in a browser (docs/debugging.md).
//!
//! Without `--serve` it starts the server on a free port of 127.0.0.1, runs the clients against
//! it with a progress line on stderr, prints a report (connections, requests, requests/s,
//! latency percentiles, errors, the boss's ledger) and exits 0 when every answer was right and
//! the boss accounted for every job. The protocol is described in `examples/shared/boss_worker.rs`.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklets::net::TcpListener;

#[path = "shared/boss_worker.rs"]
mod server;
use server::{Config, Ledger, Request, Server};

const USAGE: &str = "usage: boss_worker [--workers N] [--clients N] [--requests N] [--per-connection N] \
                     [--idle-timeout SECS] [--dump-after MS] [--console ADDR]\n       boss_worker --serve ADDR [--workers N] [--idle-timeout SECS] [--console ADDR]";

struct Args {
    serve: Option<String>,
    workers: usize,
    clients: usize,
    requests: usize,
    per_connection: usize,
    idle_timeout: Duration,
    /// Print a snapshot of every tasklet (`tasklets::dump`) this long into the run.
    dump_after: Option<Duration>,
    /// Serve the web console on this address.
    console: Option<String>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        serve: None,
        workers: 8,
        clients: 32,
        requests: 1500,
        per_connection: 100,
        idle_timeout: Duration::from_secs(10),
        dump_after: None,
        console: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value.to_string())),
            _ => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Err(String::new());
        }
        if !matches!(
            name.as_str(),
            "--serve"
                | "--workers"
                | "--clients"
                | "--requests"
                | "--per-connection"
                | "--idle-timeout"
                | "--dump-after"
                | "--console"
        ) {
            return Err(format!("unexpected argument {arg:?}"));
        }
        let value = inline.or_else(|| args.next()).ok_or(format!("{name} needs a value"))?;
        let count = || -> Result<usize, String> {
            match value.parse() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name} needs a positive number, got {value:?}")),
            }
        };
        match name.as_str() {
            "--serve" => parsed.serve = Some(value.clone()),
            "--console" => parsed.console = Some(value.clone()),
            "--workers" => parsed.workers = count()?,
            "--clients" => parsed.clients = count()?,
            "--requests" => parsed.requests = count()?,
            "--per-connection" => parsed.per_connection = count()?,
            "--dump-after" => parsed.dump_after = Some(Duration::from_millis(count()? as u64)),
            _ => parsed.idle_timeout = Duration::from_secs(count()? as u64),
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
            eprintln!("boss_worker: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Started first, on its own thread: it shows this thread's scheduler from the start.
    let _console = match args.console.as_deref().map(tasklets_console::serve).transpose() {
        Ok(console) => console.inspect(|c| eprintln!("boss_worker: console on {}", c.url())),
        Err(err) => {
            eprintln!("boss_worker: cannot serve the console: {err}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config { workers: args.workers, idle_timeout: args.idle_timeout, ..Config::default() };
    let listen = args.serve.as_deref().unwrap_or("127.0.0.1:0");
    let server = match TcpListener::bind(listen).and_then(|listener| Server::start(listener, config)) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("boss_worker: cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    if args.serve.is_some() {
        // `kill -QUIT <pid>` prints every tasklet (docs/debugging.md).
        if let Err(err) = tasklets::dump_on_signal(libc::SIGQUIT) {
            eprintln!("boss_worker: no dump on SIGQUIT: {err}");
        }
        println!("boss_worker: serving on {} with {} workers", server.local_addr(), args.workers);
        server.wait(); // until the process is killed
        return ExitCode::SUCCESS;
    }
    demo(server, &args)
}

/// What the clients measured.
#[derive(Default)]
struct Totals {
    connections: u64,
    requests: u64,
    by_kind: [u64; 4],
    latencies: Vec<Duration>,
    errors: u64,
}

const KINDS: [&str; 4] = ["SUM", "HASH", "SLEEP", "RAND"];

/// The requests of the demo: mostly `SUM`, and one in 20 each of `HASH` (on the unblock pool),
/// `SLEEP 1` and a short `RAND`. The `HASH` answers are computed once, up front.
struct Workload {
    hashes: Vec<(Request, String)>,
}

impl Workload {
    fn new() -> Workload {
        let hashes = ["boss", "worker", "tasklet", "channel", "stackless", "rendezvous", "pool", "job"]
            .iter()
            .map(|word| {
                let request = Request::Hash { rounds: 20_000, word: (*word).into() };
                let expected = request.expected();
                (request, expected)
            })
            .collect();
        Workload { hashes }
    }

    /// Request `i` of client `client`: its kind, line and expected answer.
    fn request(&self, client: usize, i: usize) -> (usize, String, String) {
        let pick = (client * 7 + i) % 20;
        let (kind, request) = match pick {
            0 => {
                let (request, expected) = &self.hashes[(client + i) % self.hashes.len()];
                return (1, request.line(), expected.clone());
            }
            1 => (2, Request::Sleep { ms: 1 }),
            2 => (3, Request::Rand { len: 48, seed: (client * 100_000 + i) as u64 }),
            _ => {
                (0, Request::Sum((0..(i % 6 + 2) as u64).map(|k| k * 1_000 + (client + i) as u64).collect()))
            }
        };
        (kind, request.line(), request.expected())
    }
}

fn demo(server: Server, args: &Args) -> ExitCode {
    let addr = server.local_addr();
    let total_requests = (args.clients * args.requests) as u64;
    println!(
        "boss_worker: {} workers on {addr}; {} clients x {} requests, {} per connection",
        args.workers, args.clients, args.requests, args.per_connection
    );
    let workload = Rc::new(Workload::new());
    let totals = Rc::new(RefCell::new(Totals::default()));
    let start = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|id| {
            let (workload, totals) = (workload.clone(), totals.clone());
            let (requests, per_connection) = (args.requests, args.per_connection);
            tasklets::Builder::new()
                .name(format!("client {id}"))
                .spawn(move || client(addr, id, requests, per_connection, &workload, &totals))
                .expect("a stack for a client tasklet")
        })
        .collect();
    let progress = {
        let totals = totals.clone();
        tasklets::spawn(move || progress(&totals, total_requests, start))
    };
    if let Some(after) = args.dump_after {
        // A debug tasklet: the whole constellation, as seen from inside, once.
        tasklets::Builder::new()
            .name("dumper")
            .spawn(move || {
                tasklets::time::sleep(after);
                tasklets::dump();
            })
            .expect("a stack for the dump tasklet");
    }
    for client in clients {
        if let Err(err) = client.join() {
            log::error!("{err}");
            totals.borrow_mut().errors += 1;
        }
    }
    let elapsed = start.elapsed();
    progress.kill();
    {
        // The final progress line, also when the run was shorter than one progress period.
        let t = totals.borrow();
        eprintln!("{}", progress_line(t.requests, t.errors, total_requests, start));
    }
    let ledger = server.shutdown();
    let totals = totals.borrow();
    report(&totals, &ledger, elapsed)
}

/// One client: `requests` requests over connections of `per_connection` requests each, every
/// answer checked. A failed connection counts as one error and the client goes on with a new
/// one.
fn client(
    addr: SocketAddr,
    id: usize,
    requests: usize,
    per_connection: usize,
    workload: &Workload,
    totals: &RefCell<Totals>,
) {
    let mut i = 0;
    while i < requests {
        let batch = per_connection.min(requests - i);
        let mut conn = match server::Client::connect(addr) {
            Ok(conn) => conn,
            Err(err) => {
                log::warn!("client {id}: cannot connect: {err}");
                totals.borrow_mut().errors += 1;
                i += batch;
                continue;
            }
        };
        totals.borrow_mut().connections += 1;
        for _ in 0..batch {
            let (kind, line, expected) = workload.request(id, i);
            i += 1;
            let sent = Instant::now();
            let result = conn.check(&line, &expected);
            let latency = sent.elapsed();
            let mut totals = totals.borrow_mut();
            match result {
                Ok(()) => {
                    totals.requests += 1;
                    totals.by_kind[kind] += 1;
                    totals.latencies.push(latency);
                }
                Err(err) => {
                    log::warn!("client {id}: {err}");
                    totals.errors += 1;
                    break; // this connection is in an unknown state: take a new one
                }
            }
        }
    }
}

/// Keeps a progress line on stderr: rewritten in place on a terminal, a line a second otherwise.
/// `  42%  20160/48000 requests  25000 requests/s  0 errors`
fn progress_line(done: u64, errors: u64, total: u64, start: Instant) -> String {
    let rate = done as f64 / start.elapsed().as_secs_f64();
    format!(
        "  {:>3}%  {done}/{total} requests  {rate:.0} requests/s  {errors} errors",
        done * 100 / total.max(1)
    )
}

fn progress(totals: &RefCell<Totals>, total: u64, start: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal { Duration::from_millis(200) } else { Duration::from_secs(1) };
    let mut shown = 0usize;
    loop {
        tasklets::time::sleep(period);
        let (done, errors) = {
            let totals = totals.borrow();
            (totals.requests, totals.errors)
        };
        let line = progress_line(done, errors, total, start);
        let mut stderr = std::io::stderr().lock();
        if terminal {
            let pad = shown.saturating_sub(line.len());
            let _ = write!(stderr, "\r{line}{:pad$}\r", "");
            shown = line.len();
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
        drop(stderr);
        if done + errors >= total {
            break;
        }
    }
}

fn report(totals: &Totals, ledger: &Ledger, elapsed: Duration) -> ExitCode {
    if std::io::stderr().is_terminal() {
        eprint!("\r{:79}\r", ""); // clear the progress line
    }
    let mut latencies = totals.latencies.clone();
    latencies.sort_unstable();
    let percentile = |p: f64| -> String {
        if latencies.is_empty() {
            return "-".into();
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        human(latencies[rank.clamp(1, latencies.len()) - 1])
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    let kinds: Vec<String> =
        KINDS.iter().zip(totals.by_kind).map(|(name, n)| format!("{n} {name}")).collect();
    println!("connections   {}", totals.connections);
    println!("requests      {} in {secs:.2} s ({})", totals.requests, kinds.join(", "));
    println!("requests/s    {:.0}", totals.requests as f64 / secs);
    println!("latency       p50 {}, p99 {}, max {}", percentile(50.0), percentile(99.0), percentile(100.0));
    println!("errors        {}", totals.errors);
    println!(
        "boss          {} jobs accepted, {} finished ({} closed by the client, {} timed out, {} aborted, \
         {} refused), {} requests answered",
        ledger.accepted,
        ledger.finished,
        ledger.closed,
        ledger.timed_out,
        ledger.aborted,
        ledger.refused,
        ledger.requests
    );
    let books_balance = ledger.accepted == totals.connections
        && ledger.finished == ledger.accepted
        && ledger.requests >= totals.requests;
    if totals.errors == 0 && books_balance {
        ExitCode::SUCCESS
    } else {
        if !books_balance {
            eprintln!("boss_worker: the boss's ledger does not match what the clients did");
        }
        ExitCode::FAILURE
    }
}

/// A duration for people: `850 µs`, `12.3 ms`, `1.52 s`.
fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}
