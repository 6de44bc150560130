//! Many cores, measured side by side in one run: the cross-thread round trip through
//! `tasklets::sync::channel` against crossbeam-channel, std's mpsc, tokio's mpsc on its
//! multi-threaded runtime and Go's unbuffered channel; echo scaling at 1 and 2 server threads
//! against tokio `multi_thread`, may and Go; and the memory of a tasklet parked on a
//! cross-thread channel against one parked on a local channel.
//!
//! ```sh
//! cargo bench -p tasklets-bench --bench multicore                     # every case, 3 runs
//! cargo bench -p tasklets-bench --bench multicore -- --runs 1         # one run
//! cargo bench -p tasklets-bench --bench multicore -- --only roundtrip,memory
//! MULTICORE_PIN=1 cargo bench -p tasklets-bench --bench multicore -- --only roundtrip
//! ```
//!
//! Every measurement runs in a fresh child process (this binary re-executed with `--child`;
//! Go's in a program built from the sources below with `go build`, skipped when `go` is not
//! on the PATH). Nothing is pinned (unless `MULTICORE_PIN=1`: then the two sides of a round
//! trip that run on threads of their own are pinned to CPUs 0 and 1): the two threads of a
//! round trip, and an echo server with its load generator, share the machine's CPUs as the
//! OS places them. CPU time is the
//! process's (`CLOCK_PROCESS_CPUTIME_ID`: every thread, exact), so a figure per round trip or
//! per message counts both sides and every helper thread.
//!
//! - **roundtrip**: thread A sends a number, thread B sends it back, `n` times after a warm-up;
//!   wall time and process CPU per round trip. Tasklets: one tasklet on each of two scheduler
//!   threads (`tasklets::threads`), so each wait parks the tasklet and the thread sleeps in its
//!   poller; also two plain threads on a `sync` channel (`park`/`unpark`), and a tasklet
//!   calling `tasklets::unblock` (the only cross-thread path before `sync`). Peers: plain
//!   threads on crossbeam-channel and `std::sync::mpsc::sync_channel` (capacity 0 and 1); two
//!   tasks on tokio's multi-threaded runtime (2 workers, `enable_all`) with
//!   `tokio::sync::mpsc::channel(1)` (its smallest); two goroutines with unbuffered channels,
//!   `GOMAXPROCS=2`. Tokio and Go place their two tasks themselves (both may run on one
//!   worker); tasklets and threads are on two threads by construction.
//! - **echo**: N server threads (1 and 2) echo 64-byte messages over loopback for a load
//!   process: `conns` connections in closed loops on 2 scheduler threads. Tasklets: N
//!   scheduler threads, each with its own `SO_REUSEPORT` listener (the `echo_server --threads N`
//!   design; the connections each thread got are reported); tokio: `multi_thread` with N
//!   workers; may: N workers; Go: `GOMAXPROCS=N`. Server and load share the machine's 2 CPUs.
//! - **memory**: N tasklets of one scheduler thread park receiving, on a local `Channel` or on
//!   a `sync` channel whose sender is on another thread; resident memory per parked tasklet
//!   (`VmRSS`), then every one is woken (across threads for `sync`) and checked.
//!
//! Run without `--bench` (as `cargo test --benches` does), it smoke-tests tiny versions of each
//! case.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "compare/common.rs"]
#[allow(dead_code)]
mod common;

use common::{emit, may_go, median, pin, process_cpu, status_kib, tokio_runtime};

/// Sizes of one run: the full benchmark or the smoke test.
#[derive(Clone, Copy)]
struct Settings {
    round_trips: u64,
    echo_conns: usize,
    echo_warm_ms: u64,
    echo_window_ms: u64,
    memory_n: usize,
}

const FULL: Settings = Settings {
    round_trips: 100_000,
    echo_conns: 1_000,
    echo_warm_ms: 1_000,
    echo_window_ms: 5_000,
    memory_n: 100_000,
};
const SMOKE: Settings =
    Settings { round_trips: 1_000, echo_conns: 10, echo_warm_ms: 50, echo_window_ms: 200, memory_n: 1_000 };

/// The round-trip implementations, in table order.
const ROUND_TRIPS: [&str; 15] = [
    "tasklets-sync0",
    "tasklets-sync1",
    "tasklets-plain-threads-sync0",
    "tasklets-unblock",
    "crossbeam0",
    "crossbeam1",
    "std-mpsc0",
    "std-mpsc1",
    "tokio-mpsc1",
    "tokio-mpsc1-two-runtimes",
    "go-unbuffered",
    "go-buffered1",
    "go-unbuffered-locked",
    "tasklets-sync0-one-thread",
    "tokio-mpsc1-one-worker",
];

/// The echo servers, in table order.
const ECHO_SERVERS: [&str; 4] = ["tasklets", "tokio", "may", "go"];

/// Size of every echo message.
const ECHO_SIZE: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        child(&args[pos + 1..]);
        std::io::stdout().flush().ok();
        return ExitCode::SUCCESS;
    }
    let benching = args.iter().any(|a| a == "--bench");
    let settings = if benching { FULL } else { SMOKE };
    let runs: usize =
        value_of(&args, "--runs").map_or(if benching { 3 } else { 1 }, |v| v.parse().expect("--runs N"));
    let only: Vec<String> = value_of(&args, "--only").map_or_else(
        || vec!["roundtrip".into(), "echo".into(), "memory".into()],
        |v| v.split(',').map(String::from).collect(),
    );
    let go = GoPrograms::build();
    if go.is_none() {
        eprintln!("multicore: `go` not found on the PATH (or the build failed): the Go peers are skipped");
    }
    let mut results: BTreeMap<(String, String), Vec<BTreeMap<String, f64>>> = BTreeMap::new();
    let mut record = |case: &str, imp: &str, metrics: Option<BTreeMap<String, f64>>| {
        if let Some(metrics) = metrics {
            results.entry((case.to_string(), imp.to_string())).or_default().push(metrics);
        }
    };
    for run in 1..=runs {
        eprintln!("multicore: run {run} of {runs}");
        if only.iter().any(|c| c == "roundtrip") {
            for imp in ROUND_TRIPS {
                let n = settings.round_trips;
                let metrics = if imp.starts_with("go-") {
                    go.as_ref().map(|go| go.run_round_trip(imp, n))
                } else {
                    Some(run_child(&["roundtrip", imp, &n.to_string()]))
                };
                record("roundtrip", imp, metrics);
            }
        }
        if only.iter().any(|c| c == "echo") {
            for threads in [1, 2] {
                for server in ECHO_SERVERS {
                    if server == "go" && go.is_none() {
                        continue;
                    }
                    let metrics = echo_run(server, threads, &settings, go.as_ref());
                    record("echo", &format!("{server} {threads}"), Some(metrics));
                }
            }
        }
        if only.iter().any(|c| c == "memory") {
            for imp in ["local", "sync"] {
                let metrics = run_child(&["memory", imp, &settings.memory_n.to_string()]);
                record("memory", imp, Some(metrics));
            }
        }
    }
    report(&results, runs, &settings, go.as_ref());
    ExitCode::SUCCESS
}

fn value_of<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let pos = args.iter().position(|a| a == name)?;
    args.get(pos + 1).map(String::as_str)
}

/// Runs this binary as a child with `args` and returns the metrics of its `RESULT` line.
fn run_child(args: &[&str]) -> BTreeMap<String, f64> {
    let exe = std::env::current_exe().expect("own path");
    let output = Command::new(exe).arg("--child").args(args).output().expect("child process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_result(&stdout).unwrap_or_else(|| panic!("child {args:?} printed no RESULT: {stdout}"))
}

/// The metrics of the first `RESULT key=value ...` line of `text`.
fn parse_result(text: &str) -> Option<BTreeMap<String, f64>> {
    let line = text.lines().find(|l| l.starts_with("RESULT"))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect(),
    )
}

/// Child side: one measurement, its `RESULT` line on stdout.
fn child(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match arg(0) {
        "roundtrip" => {
            let n: u64 = arg(2).parse().expect("round trips");
            let (wall, cpu, done) = round_trip(arg(1), n);
            let per = |d: Duration| d.as_nanos() as f64 / done as f64;
            emit(&[("wall_ns", per(wall)), ("cpu_ns", per(cpu)), ("round_trips", done as f64)]);
        }
        "echo-server" => echo_server(arg(1), arg(2).parse().expect("threads")),
        "echo-load" => echo_load(
            arg(1).parse().expect("port"),
            arg(2).parse().expect("conns"),
            Duration::from_millis(arg(3).parse().expect("warm-up ms")),
            Duration::from_millis(arg(4).parse().expect("window ms")),
        ),
        "memory" => memory(arg(1), arg(2).parse().expect("n")),
        other => panic!("unknown case {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

/// Measures `n` round trips (after `n / 10` of warm-up) of implementation `imp`: wall time and
/// process CPU.
fn round_trip(imp: &str, n: u64) -> Measured {
    let warm = (n / 10).max(1);
    match imp {
        "tasklets-sync0" => rt_tasklets(0, warm, n),
        "tasklets-sync1" => rt_tasklets(1, warm, n),
        "tasklets-plain-threads-sync0" => rt_threads::<SyncPlain>(0, warm, n),
        "tasklets-unblock" => rt_unblock(warm, n),
        "crossbeam0" => rt_threads::<Crossbeam>(0, warm, n),
        "crossbeam1" => rt_threads::<Crossbeam>(1, warm, n),
        "std-mpsc0" => rt_threads::<StdMpsc>(0, warm, n),
        "std-mpsc1" => rt_threads::<StdMpsc>(1, warm, n),
        "tokio-mpsc1" => rt_tokio(2, warm, n),
        "tokio-mpsc1-one-worker" => rt_tokio(1, warm, n),
        "tokio-mpsc1-two-runtimes" => rt_tokio_two_runtimes(warm, n),
        "tasklets-sync0-one-thread" => rt_tasklets_one_thread(warm, n),
        other => panic!("unknown round trip {other}"),
    }
}

/// With `MULTICORE_PIN=1` in the environment, pins the calling thread to CPU `side` (0 or 1),
/// so that the two sides of a round trip run on two CPUs (a many-core machine's placement)
/// instead of wherever the kernel puts them (on a busy 2-CPU machine: often both on one).
fn pin_side(side: usize) {
    if std::env::var_os("MULTICORE_PIN").is_some_and(|v| v == "1") {
        pin(&[side]);
    }
}

/// Times `n` calls of `step` after `warm` unmeasured ones.
fn timed(warm: u64, n: u64, mut step: impl FnMut()) -> Measured {
    for _ in 0..warm {
        step();
    }
    let (t0, c0) = (Instant::now(), process_cpu());
    let mut done = 0;
    while done < n && (done % 1024 != 0 || t0.elapsed() < MAX_MEASURE) {
        step();
        done += 1;
    }
    (t0.elapsed(), process_cpu() - c0, done)
}

/// Wall time, process CPU time and the number of round trips measured.
type Measured = (Duration, Duration, u64);

/// A round-trip measurement stops after this long even if it has not done its `n` (the slow
/// peers: a futex wake-up on this VM can take 100 µs).
const MAX_MEASURE: Duration = Duration::from_secs(3);

/// One tasklet on each of two scheduler threads, ping-ponging through `sync::channel(cap)`.
fn rt_tasklets(cap: usize, warm: u64, n: u64) -> Measured {
    let (ping_tx, ping_rx) = tasklets::sync::channel::<u64>(cap);
    let (pong_tx, pong_rx) = tasklets::sync::channel::<u64>(cap);
    let threads = tasklets::threads::spawn(2, |_| ()).expect("scheduler threads");
    threads.thread(1).spawn(move || {
        pin_side(1);
        for v in &ping_rx {
            pong_tx.send(v).expect("pong");
        }
    });
    let pinger = threads.thread(0).spawn(move || {
        pin_side(0);
        timed(warm, n, || {
            ping_tx.send(1).expect("ping");
            pong_rx.receive().expect("pong back");
        })
    });
    let measured = pinger.join().expect("pinger");
    threads.join();
    measured
}

/// A channel kind that plain threads ping-pong through.
trait Ends {
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn pair(capacity: usize) -> (Self::Tx, Self::Rx);
    fn send(tx: &Self::Tx, value: u64) -> bool;
    fn receive(rx: &Self::Rx) -> Option<u64>;
}

/// `tasklets::sync` between plain threads (no scheduler: `park`/`unpark`).
struct SyncPlain;
struct Crossbeam;
struct StdMpsc;

impl Ends for SyncPlain {
    type Tx = tasklets::sync::Sender<u64>;
    type Rx = tasklets::sync::Receiver<u64>;
    fn pair(capacity: usize) -> (Self::Tx, Self::Rx) {
        tasklets::sync::channel(capacity)
    }
    fn send(tx: &Self::Tx, value: u64) -> bool {
        tx.send(value).is_ok()
    }
    fn receive(rx: &Self::Rx) -> Option<u64> {
        rx.receive().ok()
    }
}

impl Ends for Crossbeam {
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;
    fn pair(capacity: usize) -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(capacity)
    }
    fn send(tx: &Self::Tx, value: u64) -> bool {
        tx.send(value).is_ok()
    }
    fn receive(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
}

impl Ends for StdMpsc {
    type Tx = std::sync::mpsc::SyncSender<u64>;
    type Rx = std::sync::mpsc::Receiver<u64>;
    fn pair(capacity: usize) -> (Self::Tx, Self::Rx) {
        std::sync::mpsc::sync_channel(capacity)
    }
    fn send(tx: &Self::Tx, value: u64) -> bool {
        tx.send(value).is_ok()
    }
    fn receive(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
}

/// Two plain threads ping-ponging through two channels of kind `E`.
fn rt_threads<E: Ends>(capacity: usize, warm: u64, n: u64) -> Measured {
    let (ping_tx, ping_rx) = E::pair(capacity);
    let (pong_tx, pong_rx) = E::pair(capacity);
    let far = std::thread::spawn(move || {
        pin_side(1);
        while let Some(value) = E::receive(&ping_rx) {
            if !E::send(&pong_tx, value) {
                break;
            }
        }
    });
    pin_side(0);
    let measured = timed(warm, n, || {
        assert!(E::send(&ping_tx, 1), "ping");
        assert!(E::receive(&pong_rx).is_some(), "pong");
    });
    drop(ping_tx);
    far.join().expect("far thread");
    measured
}

/// A tasklet waiting for `tasklets::unblock` (a function run on the blocking pool): the
/// cross-thread round trip there was before `sync`.
fn rt_unblock(warm: u64, n: u64) -> Measured {
    let measured = tasklets::spawn(move || {
        timed(warm, n, || {
            std::hint::black_box(tasklets::unblock(|| 1u64));
        })
    });
    tasklets::run();
    measured.join().expect("unblock loop")
}

/// Both tasklets on one scheduler thread (the wake needs no poller): what placement buys.
fn rt_tasklets_one_thread(warm: u64, n: u64) -> Measured {
    let (ping_tx, ping_rx) = tasklets::sync::channel::<u64>(0);
    let (pong_tx, pong_rx) = tasklets::sync::channel::<u64>(0);
    tasklets::spawn(move || {
        for v in &ping_rx {
            pong_tx.send(v).expect("pong");
        }
    });
    let pinger = tasklets::spawn(move || {
        timed(warm, n, || {
            ping_tx.send(1).expect("ping");
            pong_rx.receive().expect("pong back");
        })
    });
    tasklets::run();
    pinger.join().expect("pinger")
}

/// Two tasks on tokio's multi-threaded runtime (`workers` workers) ping-ponging through
/// `tokio::sync::mpsc::channel(1)`; tokio places the tasks.
fn rt_tokio(workers: usize, warm: u64, n: u64) -> Measured {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async move {
        let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
        let (pong_tx, pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
        let far = tokio::spawn(async move {
            while let Some(value) = ping_rx.recv().await {
                if pong_tx.send(value).await.is_err() {
                    break;
                }
            }
        });
        let near = tokio::spawn(tokio_ping(ping_tx, pong_rx, warm, n));
        let measured = near.await.expect("near task");
        far.await.expect("far task");
        measured
    })
}

/// The measuring side of a tokio round trip: `warm` unmeasured round trips, then up to `n`.
async fn tokio_ping(
    ping: tokio::sync::mpsc::Sender<u64>,
    mut pong: tokio::sync::mpsc::Receiver<u64>,
    warm: u64,
    n: u64,
) -> Measured {
    for _ in 0..warm {
        ping.send(1).await.expect("ping");
        pong.recv().await.expect("pong");
    }
    let (t0, c0) = (Instant::now(), process_cpu());
    let mut done = 0;
    while done < n && (done % 1024 != 0 || t0.elapsed() < MAX_MEASURE) {
        ping.send(1).await.expect("ping");
        pong.recv().await.expect("pong");
        done += 1;
    }
    (t0.elapsed(), process_cpu() - c0, done)
}

/// Two tokio current-thread runtimes on two threads, one task each, ping-ponging through
/// `tokio::sync::mpsc::channel(1)`: every wake crosses threads, as between two scheduler
/// threads.
fn rt_tokio_two_runtimes(warm: u64, n: u64) -> Measured {
    let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let (pong_tx, pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let far = std::thread::spawn(move || {
        pin_side(1);
        tokio_runtime().block_on(async move {
            while let Some(value) = ping_rx.recv().await {
                if pong_tx.send(value).await.is_err() {
                    break;
                }
            }
        })
    });
    pin_side(0);
    let measured = tokio_runtime().block_on(tokio_ping(ping_tx, pong_rx, warm, n));
    far.join().expect("far thread");
    measured
}

// ---------------------------------------------------------------------------------------------
// Echo scaling

/// Prints `PORT <port>`, then answers the parent on stdin: `start` snapshots the process CPU,
/// `stop` prints `RESULT` with the CPU and wall time since `start` and `extra()`'s figures; a
/// closed stdin ends the process.
fn control(port: u16, extra: impl Fn() -> Vec<(String, f64)> + Send + 'static) {
    println!("PORT {port}");
    std::io::stdout().flush().ok();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let mut start = (Instant::now(), process_cpu());
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match line.trim() {
                    "start" => start = (Instant::now(), process_cpu()),
                    "stop" => {
                        let (wall, cpu) = (start.0.elapsed(), process_cpu() - start.1);
                        let mut metrics = vec![
                            ("cpu_s".to_string(), cpu.as_secs_f64()),
                            ("wall_s".into(), wall.as_secs_f64()),
                        ];
                        metrics.extend(extra());
                        let line: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        println!("RESULT {}", line.join(" "));
                        std::io::stdout().flush().ok();
                    }
                    _ => {}
                }
            }
            // SAFETY: _exit ends the process; the server threads hold nothing to flush.
            unsafe { libc::_exit(0) };
        })
        .expect("control thread");
}

/// Echoes on `stream` until it closes (a plain blocking loop: tasklets and may park in it).
fn echo_loop<S: Read + Write>(mut stream: S) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn echo_server(imp: &str, threads: usize) {
    match imp {
        "tasklets" => {
            use tasklets::net::TcpListener;
            let first = TcpListener::options().reuse_port(true).bind("127.0.0.1:0").expect("bind");
            let addr = first.local_addr().expect("addr");
            let mut listeners = vec![Some(first)];
            for _ in 1..threads {
                listeners.push(Some(TcpListener::options().reuse_port(true).bind(addr).expect("bind")));
            }
            let listeners = Mutex::new(listeners);
            let accepted: Arc<Vec<AtomicUsize>> =
                Arc::new((0..threads).map(|_| AtomicUsize::new(0)).collect());
            let counts = accepted.clone();
            let server = tasklets::threads::spawn(threads, move |index| {
                let listener = listeners.lock().expect("listeners")[index].take().expect("a listener");
                loop {
                    let (stream, _) = listener.accept().expect("accept");
                    stream.set_nodelay(true).expect("nodelay");
                    accepted[index].fetch_add(1, Ordering::Relaxed);
                    tasklets::spawn(move || echo_loop(stream));
                }
            })
            .expect("scheduler threads");
            control(addr.port(), move || {
                counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("conns{i}"), c.load(Ordering::Relaxed) as f64))
                    .collect()
            });
            server.join(); // never returns: the acceptors loop
        }
        "tokio" => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
                .expect("tokio");
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                control(listener.local_addr().expect("addr").port(), Vec::new);
                loop {
                    let (mut stream, _) = listener.accept().await.expect("accept");
                    stream.set_nodelay(true).expect("nodelay");
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = stream.read(&mut buf).await {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        }
        "may" => {
            may::config().set_workers(threads);
            let listener = may::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            control(listener.local_addr().expect("addr").port(), Vec::new);
            let acceptor = may_go(move || loop {
                let (stream, _) = listener.accept().expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                may_go(move || echo_loop(stream));
            });
            let _ = acceptor.join();
        }
        other => panic!("unknown echo server {other}"),
    }
}

/// The load: `conns` connections, half on each of two scheduler threads, each a closed loop of
/// write 64 bytes, read them back, check them. After every connection is up and the warm-up,
/// prints `START`, counts round trips for the window, prints `STOP`, then `RESULT`.
fn echo_load(port: u16, conns: usize, warm_up: Duration, window: Duration) {
    use tasklets::net::TcpStream;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let connected = Arc::new(AtomicUsize::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let trips = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let load = {
        let (connected, counting, stop, trips, failed) =
            (connected.clone(), counting.clone(), stop.clone(), trips.clone(), failed.clone());
        tasklets::threads::Builder::new(2)
            .name("load")
            .spawn(move |index| {
                let mine: Vec<_> = (index..conns)
                    .step_by(2)
                    .map(|i| {
                        let (connected, counting, stop, trips, failed) = (
                            connected.clone(),
                            counting.clone(),
                            stop.clone(),
                            trips.clone(),
                            failed.clone(),
                        );
                        tasklets::spawn(move || {
                            let Ok(mut stream) = TcpStream::connect(addr) else {
                                failed.fetch_add(1, Ordering::Relaxed);
                                return;
                            };
                            stream.set_nodelay(true).expect("nodelay");
                            connected.fetch_add(1, Ordering::Relaxed);
                            let message: Vec<u8> = (0..ECHO_SIZE).map(|j| (i * 31 + j) as u8).collect();
                            let mut back = vec![0u8; ECHO_SIZE];
                            let mut local = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                if stream
                                    .write_all(&message)
                                    .and_then(|()| stream.read_exact(&mut back))
                                    .is_err()
                                {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                                assert!(back == message, "echo corrupted");
                                if counting.load(Ordering::Relaxed) {
                                    local += 1;
                                }
                            }
                            trips.fetch_add(local, Ordering::Relaxed);
                        })
                    })
                    .collect();
                for connection in mine {
                    connection.join().expect("connection");
                }
            })
            .expect("load threads")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) + (failed.load(Ordering::Relaxed) as usize) < conns {
        assert!(Instant::now() < deadline, "connections not up within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(warm_up);
    println!("START");
    std::io::stdout().flush().ok();
    let (t0, c0) = (Instant::now(), process_cpu());
    counting.store(true, Ordering::Relaxed);
    std::thread::sleep(window);
    counting.store(false, Ordering::Relaxed);
    let (wall, cpu) = (t0.elapsed(), process_cpu() - c0);
    println!("STOP");
    std::io::stdout().flush().ok();
    stop.store(true, Ordering::Relaxed);
    for result in load.join() {
        result.expect("load thread");
    }
    emit(&[
        ("trips", trips.load(Ordering::Relaxed) as f64),
        ("load_wall_s", wall.as_secs_f64()),
        ("load_cpu_s", cpu.as_secs_f64()),
        ("failed", failed.load(Ordering::Relaxed) as f64),
    ]);
}

/// One echo measurement: the server in one process, the load in another.
fn echo_run(server: &str, threads: usize, s: &Settings, go: Option<&GoPrograms>) -> BTreeMap<String, f64> {
    let mut server_child = match (server, go) {
        ("go", Some(go)) => go.command("echo", threads),
        _ => {
            let mut command = Command::new(std::env::current_exe().expect("own path"));
            command.args(["--child", "echo-server", server, &threads.to_string()]);
            command
        }
    }
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("echo server");
    let mut server_out = BufReader::new(server_child.stdout.take().expect("server stdout"));
    let mut line = String::new();
    server_out.read_line(&mut line).expect("server's first line");
    let port: u16 =
        line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
    let mut server_in = server_child.stdin.take().expect("server stdin");
    let mut load = Command::new(std::env::current_exe().expect("own path"))
        .args(["--child", "echo-load", &port.to_string(), &s.echo_conns.to_string()])
        .args([s.echo_warm_ms.to_string(), s.echo_window_ms.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("load");
    let load_out = BufReader::new(load.stdout.take().expect("load stdout"));
    let mut load_result = None;
    for line in load_out.lines() {
        let line = line.expect("load output");
        match line.as_str() {
            "START" => writeln!(server_in, "start").expect("server stdin"),
            "STOP" => writeln!(server_in, "stop").expect("server stdin"),
            _ => load_result = load_result.or_else(|| parse_result(&line)),
        }
    }
    assert!(load.wait().expect("load exit").success(), "the load failed");
    let mut server_line = String::new();
    server_out.read_line(&mut server_line).expect("server result");
    drop(server_in); // the server exits
    reap(&mut server_child);
    let mut metrics = parse_result(&server_line).unwrap_or_else(|| panic!("server printed {server_line:?}"));
    metrics.extend(load_result.expect("load RESULT"));
    metrics
}

fn reap(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Memory of parked receivers

/// `n` tasklets of a scheduler thread park receiving (on a local `Channel`, or on a `sync`
/// channel whose sender is this, another, thread); prints the resident memory per parked
/// tasklet, then wakes every one and checks that each got its value.
fn memory(imp: &str, n: usize) {
    let received = Arc::new(AtomicUsize::new(0));
    let (parked_tx, parked) = std::sync::mpsc::channel::<u64>();
    let (tx, rx) = tasklets::sync::channel::<u64>(0);
    let (go_tx, go) = std::sync::mpsc::channel::<()>();
    let local = imp == "local";
    let worker = {
        let received = received.clone();
        std::thread::spawn(move || {
            // Warm the scheduler and the stack pool's first region, as the baseline.
            tasklets::spawn(|| ()).join().expect("warm-up");
            let before = status_kib("VmRSS");
            let channel = tasklets::Channel::<u64>::new();
            for _ in 0..n {
                let (received, channel, rx) = (received.clone(), channel.clone(), rx.clone());
                tasklets::spawn(move || {
                    let value = if local { channel.receive().ok() } else { rx.receive().ok() };
                    if value.is_some() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            drop(rx);
            tasklets::schedule(); // each tasklet runs until it parks
            let after = status_kib("VmRSS");
            parked_tx.send(after.saturating_sub(before)).expect("report");
            go.recv().expect("go");
            if local {
                for value in 0..n as u64 {
                    channel.send(value).expect("local send");
                }
            }
            tasklets::run();
        })
    };
    let kib = parked.recv().expect("parked");
    go_tx.send(()).expect("go");
    let start = Instant::now();
    if !local {
        for value in 0..n as u64 {
            tx.send(value).expect("cross-thread send");
        }
    }
    drop(tx);
    worker.join().expect("worker");
    let wake = start.elapsed();
    assert_eq!(received.load(Ordering::Relaxed), n, "every parked receiver got a value");
    emit(&[
        ("kib_per_parked", kib as f64 / n as f64),
        ("wake_us_per_tasklet", wake.as_secs_f64() * 1e6 / n as f64),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Go

/// The Go peers: one program (round trips and the echo server), built once per run of the
/// benchmark with the `go` on the PATH.
struct GoPrograms {
    binary: PathBuf,
    version: String,
}

const GO_SOURCE: &str = r#"package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// CPU time of the whole process (CLOCK_PROCESS_CPUTIME_ID), as the Rust side measures it.
func cpu() time.Duration {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 2, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}

// Round trips between the main goroutine and another; with lock, each goroutine is wired to
// its own OS thread (runtime.LockOSThread), so every hand-off crosses threads.
func roundTrip(capacity int, n int, lock bool) {
	ping := make(chan uint64, capacity)
	pong := make(chan uint64, capacity)
	if lock {
		runtime.LockOSThread()
	}
	go func() {
		if lock {
			runtime.LockOSThread()
		}
		for v := range ping {
			pong <- v
		}
	}()
	warm := n / 10
	if warm < 1 {
		warm = 1
	}
	for i := 0; i < warm; i++ {
		ping <- 1
		<-pong
	}
	t0, c0 := time.Now(), cpu()
	done := 0
	for done < n && (done%1024 != 0 || time.Since(t0) < 3*time.Second) {
		ping <- 1
		<-pong
		done++
	}
	wall, c := time.Since(t0), cpu()-c0
	fmt.Printf("RESULT wall_ns=%f cpu_ns=%f round_trips=%d\n", float64(wall.Nanoseconds())/float64(done), float64(c.Nanoseconds())/float64(done), done)
}

func echo() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Printf("PORT %d\n", ln.Addr().(*net.TCPAddr).Port)
	go func() {
		in := bufio.NewScanner(os.Stdin)
		t0, c0 := time.Now(), cpu()
		for in.Scan() {
			switch in.Text() {
			case "start":
				t0, c0 = time.Now(), cpu()
			case "stop":
				fmt.Printf("RESULT cpu_s=%f wall_s=%f\n", (cpu() - c0).Seconds(), time.Since(t0).Seconds())
			}
		}
		os.Exit(0)
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		go func(c net.Conn) {
			buf := make([]byte, 16*1024)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
		}(conn)
	}
}

func main() {
	switch os.Args[1] {
	case "go-unbuffered":
		n, _ := strconv.Atoi(os.Args[2])
		roundTrip(0, n, false)
	case "go-buffered1":
		n, _ := strconv.Atoi(os.Args[2])
		roundTrip(1, n, false)
	case "go-unbuffered-locked":
		n, _ := strconv.Atoi(os.Args[2])
		roundTrip(0, n, true)
	case "echo":
		echo()
	}
}
"#;

impl GoPrograms {
    /// Builds the Go program, or `None` when there is no `go` (or the build fails).
    fn build() -> Option<GoPrograms> {
        let version = Command::new("go").arg("version").output().ok().filter(|o| o.status.success())?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        let dir = target_dir().join("multicore-go");
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("main.go"), GO_SOURCE).ok()?;
        let binary = dir.join("peer");
        let built = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg("main.go")
            .current_dir(&dir)
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GO111MODULE", "off")
            .status()
            .ok()?;
        built.success().then_some(GoPrograms { binary, version })
    }

    fn command(&self, mode: &str, gomaxprocs: usize) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg(mode).env("GOMAXPROCS", gomaxprocs.to_string());
        command
    }

    fn run_round_trip(&self, imp: &str, n: u64) -> BTreeMap<String, f64> {
        let output = self.command(imp, 2).arg(n.to_string()).output().expect("go round trip");
        let stdout = String::from_utf8_lossy(&output.stdout);
        parse_result(&stdout).unwrap_or_else(|| panic!("go {imp} printed {stdout:?}"))
    }
}

/// `target/<profile>`, where this binary lives (`target/<profile>/deps/multicore-<hash>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir)
}

// ---------------------------------------------------------------------------------------------
// Report

type Results = BTreeMap<(String, String), Vec<BTreeMap<String, f64>>>;

/// The median over the runs of `key` (and the smallest and largest), `None` if never measured.
fn stat(results: &Results, case: &str, imp: &str, key: &str) -> Option<(f64, f64, f64)> {
    let runs = results.get(&(case.to_string(), imp.to_string()))?;
    let mut values: Vec<f64> = runs.iter().filter_map(|m| m.get(key).copied()).collect();
    if values.is_empty() {
        return None;
    }
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    Some((median(&mut values), lo, hi))
}

/// `12.3` or `12.3 (11.9–13.0)` over several runs.
fn show(stat: Option<(f64, f64, f64)>, scale: f64, decimals: usize, runs: usize) -> String {
    match stat {
        None => "—".into(),
        Some((m, lo, hi)) if runs > 1 => {
            format!("{:.*} ({:.*}–{:.*})", decimals, m * scale, decimals, lo * scale, decimals, hi * scale)
        }
        Some((m, _, _)) => format!("{:.*}", decimals, m * scale),
    }
}

/// What a round-trip row measures, and where its two sides run.
fn describe(imp: &str) -> (&'static str, &'static str) {
    match imp {
        "tasklets-sync0" => ("`tasklets::sync::channel(0)`", "2 scheduler threads, a tasklet each"),
        "tasklets-sync1" => ("`tasklets::sync::channel(1)`", "2 scheduler threads, a tasklet each"),
        "tasklets-plain-threads-sync0" => {
            ("`tasklets::sync::channel(0)` (`park`/`unpark`)", "2 plain threads")
        }
        "tasklets-unblock" => ("`tasklets::unblock(\\|\\| ..)`", "a tasklet and the blocking pool"),
        "crossbeam0" => ("crossbeam-channel `bounded(0)`", "2 plain threads"),
        "crossbeam1" => ("crossbeam-channel `bounded(1)`", "2 plain threads"),
        "std-mpsc0" => ("`std::sync::mpsc::sync_channel(0)`", "2 plain threads"),
        "std-mpsc1" => ("`std::sync::mpsc::sync_channel(1)`", "2 plain threads"),
        "tokio-mpsc1" => ("tokio `mpsc::channel(1)`, `multi_thread` (2 workers)", "where tokio puts them"),
        "tokio-mpsc1-two-runtimes" => {
            ("tokio `mpsc::channel(1)`, a `current_thread` runtime each", "2 threads")
        }
        "go-unbuffered" => ("Go unbuffered channel, `GOMAXPROCS=2`", "where Go puts them"),
        "go-buffered1" => ("Go channel of 1, `GOMAXPROCS=2`", "where Go puts them"),
        "go-unbuffered-locked" => ("Go unbuffered channel, `runtime.LockOSThread` each", "2 threads"),
        "tasklets-sync0-one-thread" => ("`tasklets::sync::channel(0)`", "1 scheduler thread"),
        "tokio-mpsc1-one-worker" => ("tokio `mpsc::channel(1)`, `multi_thread` (1 worker)", "1 worker"),
        other => panic!("no description for {other}"),
    }
}

fn report(results: &Results, runs: usize, s: &Settings, go: Option<&GoPrograms>) {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string())
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    println!("## Many cores (`cargo bench -p tasklets-bench --bench multicore`)\n");
    println!("| | |\n|---|---|");
    println!(
        "| CPU | {cpu_model}, {} CPUs available |",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| kernel | {} |", kernel.trim());
    println!("| rustc | {} |", rustc.unwrap_or_default());
    println!("| go | {} |", go.map_or("not found: Go rows skipped", |g| g.version.as_str()));
    println!("| runs | {runs} (median, and min–max across runs) |\n");
    if results.keys().any(|(case, _)| case == "roundtrip") {
        println!(
            "### Cross-thread round trip ({} round trips after {} of warm-up)\n",
            s.round_trips,
            s.round_trips / 10
        );
        println!(
            "| implementation | the two sides run on | wall µs per round trip | CPU µs per round trip |"
        );
        println!("|---|---|---:|---:|");
        for imp in ROUND_TRIPS {
            if !results.contains_key(&("roundtrip".to_string(), imp.to_string())) {
                continue;
            }
            let (what, placement) = describe(imp);
            let wall = show(stat(results, "roundtrip", imp, "wall_ns"), 1e-3, 2, runs);
            let cpu = show(stat(results, "roundtrip", imp, "cpu_ns"), 1e-3, 2, runs);
            println!("| {what} | {placement} | {wall} | {cpu} |");
        }
        println!();
    }
    if results.keys().any(|(case, _)| case == "echo") {
        println!(
            "### Echo scaling ({} connections × {ECHO_SIZE} B, {} ms warm-up, {} ms window; server and load share the CPUs)\n",
            s.echo_conns, s.echo_warm_ms, s.echo_window_ms
        );
        println!("| server | threads | round trips/s | server CPU µs per round trip | load CPU µs per round trip | connections per thread |");
        println!("|---|---:|---:|---:|---:|---|");
        for threads in [1, 2] {
            for server in ECHO_SERVERS {
                let imp = format!("{server} {threads}");
                let Some(runs_of) = results.get(&("echo".to_string(), imp.clone())) else { continue };
                let per_run = |key: &str, per_trip: bool| -> Vec<f64> {
                    runs_of
                        .iter()
                        .filter_map(|m| {
                            let v = *m.get(key)?;
                            let trips = *m.get("trips")?;
                            Some(if per_trip { v / trips } else { trips / m.get("load_wall_s")? })
                        })
                        .collect()
                };
                let fmt = |mut v: Vec<f64>, scale: f64, decimals: usize| {
                    if v.is_empty() {
                        return "—".to_string();
                    }
                    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                    show(Some((median(&mut v), lo, hi)), scale, decimals, runs)
                };
                let rate = fmt(per_run("trips", false), 1.0, 0);
                let server_cpu = fmt(per_run("cpu_s", true), 1e6, 2);
                let load_cpu = fmt(per_run("load_cpu_s", true), 1e6, 2);
                let split: Vec<String> = runs_of
                    .iter()
                    .filter_map(|m| {
                        let counts: Vec<f64> =
                            (0..threads).filter_map(|i| m.get(&format!("conns{i}")).copied()).collect();
                        let total: f64 = counts.iter().sum();
                        (counts.len() == threads && threads > 1 && total > 0.0).then(|| {
                            counts
                                .iter()
                                .map(|c| format!("{:.0}", 100.0 * c / total))
                                .collect::<Vec<_>>()
                                .join("/")
                        })
                    })
                    .collect();
                let split =
                    if split.is_empty() { "—".to_string() } else { format!("{} %", split.join(", ")) };
                println!("| {server} | {threads} | {rate} | {server_cpu} | {load_cpu} | {split} |");
            }
        }
        println!();
    }
    if results.keys().any(|(case, _)| case == "memory") {
        println!("### Parked receivers ({} tasklets on one scheduler thread)\n", s.memory_n);
        println!("| parked on | resident KiB per parked tasklet | wake + finish µs per tasklet |");
        println!("|---|---:|---:|");
        for (imp, what) in
            [("local", "a local `Channel`"), ("sync", "a `sync::channel(0)`, sender on another thread")]
        {
            let kib = show(stat(results, "memory", imp, "kib_per_parked"), 1.0, 3, runs);
            let wake = show(stat(results, "memory", imp, "wake_us_per_tasklet"), 1.0, 2, runs);
            println!("| {what} | {kib} | {wake} |");
        }
        println!();
    }
}
