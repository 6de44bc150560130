//! Side-by-side comparison of tasklet with its peers, measured in the same run on the same
//! machine: `may` (stackful coroutines, 1 worker), `tokio` (current-thread runtime), OS threads
//! (std), and for the echo server a hand-written readiness loop with no tasks at all (the floor).
//!
//! ```sh
//! cargo bench -p tasklets-bench --bench compare                 # everything, twice; rewrites the docs
//! cargo bench -p tasklets-bench --bench compare -- --runs 3     # three runs
//! cargo bench -p tasklets-bench --bench compare -- --only echo  # some cases; docs left alone
//! cargo bench -p tasklets-bench --bench compare -- --quick      # short settings; docs left alone
//! cargo bench -p tasklets-bench --bench compare -- --no-docs    # everything; only target/compare/ written
//! ```
//!
//! `--only` takes case names separated by commas: switch, channel, spawn, memory, sleep, echo,
//! echo-ir.
//! `--write-docs` rewrites the docs even after a partial or quick run.
//!
//! Every measurement runs in a fresh child process (this binary re-executed with `--child`),
//! pinned with `sched_setaffinity`: the single-core cases on CPU 0; the echo server on CPU 0
//! and the load generator on CPU 1. Each run measures every case for every peer, one after the
//! other, so the ratios of one run come from the same minutes of the same machine.
//!
//! Output: `target/compare/results.json` (every figure of every run, and the machine), the
//! comparison section of `docs/benchmarks.md` between its `compare:begin`/`compare:end`
//! markers, and the charts `docs/compare-*.svg`.
//!
//! Run without `--bench` (as `cargo test --benches` does), it only smoke-tests a few tiny
//! cases and writes nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
mod echo;
mod memory;
mod micro;
mod report;
mod sleep;
mod svg;

use common::{emit_per_op, measure, pin};

/// One measured figure set: one case, one peer, one parameter set, one run.
#[derive(Clone, Debug)]
pub struct Record {
    pub run: usize,
    pub case: String,
    pub imp: String,
    pub param: String,
    pub ok: bool,
    pub note: String,
    pub metrics: BTreeMap<String, f64>,
}

impl Record {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).copied()
    }
}

/// How long and how big: the full benchmark, `--quick`, or the smoke test.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub sample_ms: u64,
    pub samples: usize,
    pub memory_counts: &'static [usize],
    pub sleep_counts: &'static [usize],
    pub spawn_batch_big: u64,
    pub spawn_batch: u64,
    pub spawn_batch_small: u64,
    pub thread_batch: u64,
    pub echo_conns: &'static [usize],
    pub echo_sizes: &'static [usize],
    pub echo_warm_ms: u64,
    pub echo_window_ms: u64,
    /// Connections, and round trips per connection of the two callgrind runs (`echo-ir`).
    pub ir_conns: usize,
    pub ir_trips: (u64, u64),
}

const FULL: Settings = Settings {
    sample_ms: 200,
    samples: 5,
    memory_counts: &[10_000, 100_000, 1_000_000],
    sleep_counts: &[100_000, 30_000],
    spawn_batch_big: 100_000,
    spawn_batch: 10_000,
    spawn_batch_small: 1_000,
    thread_batch: 1_000,
    echo_conns: &[100, 1_000],
    echo_sizes: &[64, 4096],
    echo_warm_ms: 1_000,
    echo_window_ms: 5_000,
    ir_conns: 100,
    ir_trips: (100, 400),
};

const QUICK: Settings = Settings {
    sample_ms: 50,
    samples: 3,
    memory_counts: &[10_000],
    sleep_counts: &[10_000],
    spawn_batch_big: 100_000,
    spawn_batch: 10_000,
    spawn_batch_small: 1_000,
    thread_batch: 1_000,
    echo_conns: &[100],
    echo_sizes: &[64],
    echo_warm_ms: 300,
    echo_window_ms: 1_000,
    ir_conns: 100,
    ir_trips: (50, 150),
};

const SMOKE: Settings = Settings {
    sample_ms: 5,
    samples: 1,
    memory_counts: &[1_000],
    sleep_counts: &[1_000],
    spawn_batch_big: 1_000,
    spawn_batch: 100,
    spawn_batch_small: 10,
    thread_batch: 10,
    echo_conns: &[10],
    echo_sizes: &[64],
    echo_warm_ms: 50,
    echo_window_ms: 200,
    ir_conns: 10,
    ir_trips: (10, 30),
};

pub const CASES: [&str; 7] = ["switch", "channel", "spawn", "memory", "sleep", "echo", "echo-ir"];

/// A child measurement: case, peer, CPUs to pin to, and `key=value` parameters.
struct Job {
    case: &'static str,
    imp: &'static str,
    cpus: &'static str,
    params: Vec<(&'static str, String)>,
}

impl Job {
    fn new(case: &'static str, imp: &'static str, cpus: &'static str) -> Job {
        Job { case, imp, cpus, params: Vec::new() }
    }

    fn with(mut self, key: &'static str, value: impl ToString) -> Job {
        self.params.push((key, value.to_string()));
        self
    }

    /// The parameters that identify the measurement (not the sampling settings).
    fn param(&self) -> String {
        let keys = ["batch", "n", "conns", "size"];
        self.params
            .iter()
            .filter(|(k, _)| keys.contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn plan(cases: &[&str], s: &Settings) -> Vec<Job> {
    let mut jobs = Vec::new();
    let sampling = |job: Job| job.with("sample_ms", s.sample_ms).with("samples", s.samples);
    for &case in cases {
        match case {
            "switch" => {
                for imp in ["tasklet", "tasklet-noacct", "may", "tokio", "threads"] {
                    jobs.push(sampling(Job::new("switch", imp, "0")));
                }
            }
            "channel" => {
                for imp in ["tasklet", "tasklet-noacct", "may", "tokio", "threads-1cpu"] {
                    jobs.push(sampling(Job::new("channel", imp, "0")));
                }
                jobs.push(sampling(Job::new("channel", "threads-2cpu", "0,1")));
            }
            "spawn" => {
                let batches = [
                    ("tasklet", s.spawn_batch_big),
                    ("tokio", s.spawn_batch_big),
                    ("may", s.spawn_batch_big),
                    ("tasklet", s.spawn_batch),
                    ("tokio", s.spawn_batch),
                    ("may", s.spawn_batch),
                    ("tasklet", s.spawn_batch_small),
                    ("tokio", s.spawn_batch_small),
                    ("may", s.spawn_batch_small),
                    ("threads", s.thread_batch),
                ];
                for (imp, batch) in batches {
                    jobs.push(sampling(Job::new("spawn", imp, "0").with("batch", batch)));
                }
            }
            "memory" => {
                for &n in s.memory_counts {
                    for imp in ["tasklet", "may", "tokio"] {
                        jobs.push(Job::new("memory", imp, "0").with("n", n));
                    }
                }
            }
            "sleep" => {
                for &n in s.sleep_counts {
                    for imp in ["tasklet", "may", "tokio"] {
                        jobs.push(Job::new("sleep", imp, "0").with("n", n));
                    }
                }
            }
            "echo" => {
                for &conns in s.echo_conns {
                    for &size in s.echo_sizes {
                        for imp in echo::SERVERS {
                            jobs.push(
                                Job::new("echo", imp, "0")
                                    .with("conns", conns)
                                    .with("size", size)
                                    .with("warm_ms", s.echo_warm_ms)
                                    .with("window_ms", s.echo_window_ms),
                            );
                        }
                    }
                }
            }
            "echo-ir" => {
                if Command::new("valgrind").arg("--version").output().is_err() {
                    println!("(echo-ir skipped: valgrind is not installed)");
                    continue;
                }
                for imp in echo::SERVERS {
                    jobs.push(
                        Job::new("echo-ir", imp, "0")
                            .with("conns", s.ir_conns)
                            .with("size", 64)
                            .with("trips", format!("{},{}", s.ir_trips.0, s.ir_trips.1)),
                    );
                }
            }
            other => panic!("unknown case {other}"),
        }
    }
    jobs
}

// ---------------------------------------------------------------------------------------------
// Child side.

fn child(args: &[String]) -> ExitCode {
    let (case, imp) = (args[0].as_str(), args[1].as_str());
    let kv: BTreeMap<&str, &str> = args[2..].iter().filter_map(|a| a.split_once('=')).collect();
    let num = |key: &str| -> u64 {
        kv.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{case} {imp}: missing {key}="))
    };
    if let Some(cpus) = kv.get("cpus") {
        let cpus: Vec<usize> = cpus.split(',').filter_map(|c| c.parse().ok()).collect();
        pin(&cpus);
    }
    if imp == "may" {
        may::config().set_workers(1);
    }
    let sample = || Duration::from_millis(num("sample_ms"));
    let samples = || num("samples") as usize;
    match case {
        "switch" => {
            let per_op = match imp {
                "tasklet" => measure(micro::switch_tasklet, 1000, sample(), samples()),
                "tasklet-noacct" => {
                    tasklets::set_accounting(false);
                    measure(micro::switch_tasklet, 1000, sample(), samples())
                }
                "may" => measure(micro::switch_may, 1000, sample(), samples()),
                "tokio" => {
                    let rt = micro::tokio_runtime();
                    measure(|n| micro::switch_tokio(&rt, n), 1000, sample(), samples())
                }
                "threads" => measure(micro::switch_threads, 1000, sample(), samples()),
                other => panic!("unknown switch peer {other}"),
            };
            emit_per_op(per_op);
        }
        "channel" => {
            let per_op = match imp {
                "tasklet" => measure(micro::channel_tasklet, 1000, sample(), samples()),
                "tasklet-noacct" => {
                    tasklets::set_accounting(false);
                    measure(micro::channel_tasklet, 1000, sample(), samples())
                }
                "may" => measure(micro::channel_may, 1000, sample(), samples()),
                "tokio" => {
                    let rt = micro::tokio_runtime();
                    measure(|n| micro::channel_tokio(&rt, n), 1000, sample(), samples())
                }
                "threads-1cpu" | "threads-2cpu" => measure(micro::channel_threads, 1000, sample(), samples()),
                other => panic!("unknown channel peer {other}"),
            };
            emit_per_op(per_op);
        }
        "spawn" => {
            let batch = num("batch");
            let per_op = match imp {
                "tasklet" => measure(|n| micro::spawn_tasklet(n, batch), batch, sample(), samples()),
                "may" => measure(|n| micro::spawn_may(n, batch), batch, sample(), samples()),
                "tokio" => {
                    let rt = micro::tokio_runtime();
                    measure(|n| micro::spawn_tokio(&rt, n, batch), batch, sample(), samples())
                }
                "threads" => measure(|n| micro::spawn_threads(n, batch), batch, sample(), samples()),
                other => panic!("unknown spawn peer {other}"),
            };
            emit_per_op(per_op);
        }
        "memory" => {
            let n = num("n") as usize;
            match imp {
                "tasklet" => memory::tasklet(n),
                "may" => memory::may(n),
                "tokio" => memory::tokio(n),
                other => panic!("unknown memory peer {other}"),
            }
        }
        "sleep" => {
            let n = num("n") as usize;
            match imp {
                "tasklet" => sleep::tasklet(n),
                "may" => sleep::may(n),
                "tokio" => sleep::tokio(n),
                other => panic!("unknown sleep peer {other}"),
            }
        }
        "echo-server" => echo::server(imp),
        "echo-client" => echo::client(
            num("port") as u16,
            num("conns") as usize,
            num("size") as usize,
            Duration::from_millis(num("warm_ms")),
            Duration::from_millis(num("window_ms")),
            kv.get("trips").and_then(|v| v.parse().ok()).unwrap_or(0),
        ),
        other => panic!("unknown case {other}"),
    }
    std::io::stdout().flush().ok();
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------------
// Parent side.

/// Kills process `pid` (a child we started) unless `done` says it finished within `limit`.
fn watchdog(pid: u32, limit: Duration) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("  (watchdog: killing child {pid} after {limit:?})");
            // SAFETY: kill(2) on the id of a child process this program started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    tx
}

/// Parses the `RESULT k=v ...` line of a child's stdout.
fn parse_result(stdout: &str) -> Option<BTreeMap<String, f64>> {
    let line = stdout.lines().rev().find(|l| l.starts_with("RESULT"))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect(),
    )
}

/// What a failed child said last: the panic message, or its last stderr line.
fn failure_note(stderr: &str, status: std::process::ExitStatus) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let panic = lines.iter().position(|l| l.contains("panicked at"));
    let what = match panic {
        Some(i) => {
            let msg = lines.get(i + 1).copied().unwrap_or("").trim();
            format!("panicked: {msg}")
        }
        None => {
            lines.iter().rev().find(|l| !l.starts_with("PROGRESS")).map_or(String::new(), |l| l.to_string())
        }
    };
    format!("{status}; {what}").trim_end_matches("; ").to_owned()
}

fn child_args(job: &Job) -> Vec<String> {
    let mut args =
        vec!["--child".to_owned(), job.case.to_owned(), job.imp.to_owned(), format!("cpus={}", job.cpus)];
    args.extend(job.params.iter().map(|(k, v)| format!("{k}={v}")));
    args
}

fn run_job(exe: &PathBuf, job: &Job, run: usize) -> Record {
    let mut record = Record {
        run,
        case: job.case.to_owned(),
        imp: job.imp.to_owned(),
        param: job.param(),
        ok: false,
        note: String::new(),
        metrics: BTreeMap::new(),
    };
    if job.case == "echo" {
        run_echo(exe, job, &mut record);
        return record;
    }
    if job.case == "echo-ir" {
        run_echo_ir(exe, job, &mut record);
        return record;
    }
    let child = Command::new(exe)
        .args(child_args(job))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a child");
    let done = watchdog(child.id(), Duration::from_secs(300));
    let out = child.wait_with_output().expect("wait for a child");
    done.send(()).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(metrics) = parse_result(&stdout) {
        record.metrics = metrics;
    }
    record.ok = out.status.success() && !record.metrics.is_empty();
    if !record.ok {
        record.note = failure_note(&stderr, out.status);
        if let Some((spawned, maps)) = memory::last_progress(&stderr) {
            record.metrics.entry("failed_at".into()).or_insert(spawned as f64);
            record.metrics.entry("maps_at_failure".into()).or_insert(maps as f64);
        }
    }
    record
}

/// One echo measurement: a server child on CPU 0, the load generator child on CPU 1, the
/// parent relaying START/STOP from the generator to the server.
fn run_echo(exe: &PathBuf, job: &Job, record: &mut Record) {
    // With perf, the server runs under `perf record` sampling its CPU clock at 10 kHz, which
    // splits its CPU time into user and kernel far more finely than the 250 Hz tick does.
    let perf_data = report::target_dir().join("compare").join(format!("perf-{}.data", job.imp));
    let mut server = if perf_works() {
        let mut c = Command::new("perf");
        c.args(["record", "-q", "-k", "CLOCK_MONOTONIC", "-e", "cpu-clock", "-c", "100000", "-o"])
            .arg(&perf_data)
            .arg("--")
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let mut server = server
        .args(["--child", "echo-server", job.imp, "cpus=0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the echo server");
    let server_done = watchdog(server.id(), Duration::from_secs(180));
    let mut server_in = server.stdin.take().expect("server stdin");
    let mut server_out = BufReader::new(server.stdout.take().expect("server stdout"));
    let mut line = String::new();
    server_out.read_line(&mut line).expect("server port");
    let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok()) else {
        record.note = format!("server said {line:?}");
        server.kill().ok();
        server.wait().ok();
        return;
    };
    let mut client_args = vec![
        "--child".to_owned(),
        "echo-client".to_owned(),
        "tasklet".to_owned(),
        "cpus=1".to_owned(),
        format!("port={port}"),
    ];
    client_args.extend(job.params.iter().map(|(k, v)| format!("{k}={v}")));
    let mut client = Command::new(exe)
        .args(client_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the load generator");
    let client_done = watchdog(client.id(), Duration::from_secs(150));
    let client_out = BufReader::new(client.stdout.take().expect("client stdout"));
    let mut client_result = None;
    for line in client_out.lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "START" => writeln!(server_in, "start").and_then(|()| server_in.flush()).unwrap_or(()),
            "STOP" => writeln!(server_in, "stop").and_then(|()| server_in.flush()).unwrap_or(()),
            l if l.starts_with("RESULT") => client_result = parse_result(l),
            _ => {}
        }
    }
    let client_status = client.wait().expect("wait for the load generator");
    client_done.send(()).ok();
    let mut rest = String::new();
    if client_result.is_some() {
        // The server prints its RESULT line after `stop`.
        server_out.read_line(&mut rest).ok();
    }
    drop(server_in); // the server exits when its stdin closes
    let server_status = server.wait().expect("wait for the echo server");
    server_done.send(()).ok();
    let server_result = parse_result(&rest);
    match (client_result, server_result) {
        (Some(c), Some(s)) if client_status.success() => {
            let trips = c.get("round_trips").copied().unwrap_or(0.0).max(1.0);
            let user = s.get("user_s").copied().unwrap_or(f64::NAN);
            let sys = s.get("sys_s").copied().unwrap_or(f64::NAN);
            // getrusage's user + system is the exact run time; only its split is tick-sampled.
            let cpu = user + sys;
            let window = (s.get("mono_start_s").copied(), s.get("mono_stop_s").copied());
            let samples = match window {
                (Some(t0), Some(t1)) if perf_works() => perf_samples(&perf_data, t0, t1),
                _ => None,
            };
            std::fs::remove_file(&perf_data).ok();
            record.metrics.extend(c);
            record.metrics.extend(s);
            record.metrics.insert("user_us_per_msg_rusage".into(), user * 1e6 / trips);
            record.metrics.insert("sys_us_per_msg_rusage".into(), sys * 1e6 / trips);
            let user_share = match samples {
                Some((u, k)) if u + k > 0 => {
                    record.metrics.insert("perf_user_samples".into(), u as f64);
                    record.metrics.insert("perf_kernel_samples".into(), k as f64);
                    u as f64 / (u + k) as f64
                }
                _ => user / cpu,
            };
            record.metrics.insert("user_us_per_msg".into(), cpu * user_share * 1e6 / trips);
            record.metrics.insert("sys_us_per_msg".into(), cpu * (1.0 - user_share) * 1e6 / trips);
            record.metrics.insert("cpu_us_per_msg".into(), cpu * 1e6 / trips);
            record.ok = record.get("failed") == Some(0.0);
            if !record.ok {
                record.note = "some connections failed".into();
            }
        }
        _ => record.note = format!("load generator {client_status}, server {server_status}"),
    }
}

/// Whether `perf record` can sample the CPU clock here (a software event: no PMU needed).
pub fn perf_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        let data = std::env::temp_dir().join(format!("compare-perf-probe-{}.data", std::process::id()));
        let ok = Command::new("perf")
            .args(["record", "-q", "-k", "CLOCK_MONOTONIC", "-e", "cpu-clock", "-c", "100000", "-o"])
            .arg(&data)
            .args(["--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        std::fs::remove_file(&data).ok();
        ok
    })
}

/// User-mode and kernel-mode CPU-clock samples of a `perf record` file between two
/// `CLOCK_MONOTONIC` times (a kernel address has its top bit set).
fn perf_samples(data: &std::path::Path, t0: f64, t1: f64) -> Option<(u64, u64)> {
    let out = Command::new("perf")
        .args(["script", "--ns", "-F", "time,ip", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let (mut user, mut kernel) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((time, ip)) = line.split_once(':') else { continue };
        let (Ok(time), Ok(ip)) = (time.trim().parse::<f64>(), u64::from_str_radix(ip.trim(), 16)) else {
            continue;
        };
        if time < t0 || time > t1 {
            continue;
        }
        if ip >> 63 == 1 {
            kernel += 1;
        } else {
            user += 1;
        }
    }
    Some((user, kernel))
}

/// User-space instructions per echoed message of one server, counted by callgrind: the server
/// runs under `valgrind --tool=callgrind` twice, for two numbers of round trips, and the
/// difference of the totals divided by the difference of the messages leaves out start-up,
/// connection set-up and teardown. Deterministic, so it is the noise-free companion of the
/// tick-sampled user CPU time.
fn run_echo_ir(exe: &PathBuf, job: &Job, record: &mut Record) {
    let param =
        |key: &str| job.params.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let trips: Vec<u64> = param("trips").split(',').filter_map(|t| t.parse().ok()).collect();
    let mut points = Vec::new();
    for &t in &trips {
        let mut server = match Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(exe)
            .args(["--child", "echo-server", job.imp, "cpus=0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(s) => s,
            Err(e) => {
                record.note = format!("valgrind: {e}");
                return;
            }
        };
        let server_done = watchdog(server.id(), Duration::from_secs(600));
        let server_in = server.stdin.take().expect("server stdin");
        let mut server_out = BufReader::new(server.stdout.take().expect("server stdout"));
        let mut server_err = server.stderr.take().expect("server stderr");
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut server_err, &mut text).ok();
            text
        });
        let mut line = String::new();
        server_out.read_line(&mut line).ok();
        let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok()) else {
            record.note = format!("server under valgrind said {line:?}");
            server.kill().ok();
            server.wait().ok();
            return;
        };
        let client = Command::new(exe)
            .args(["--child", "echo-client", "tasklet", "cpus=1"])
            .arg(format!("port={port}"))
            .arg(format!("conns={}", param("conns")))
            .arg(format!("size={}", param("size")))
            .args(["warm_ms=0", "window_ms=0"])
            .arg(format!("trips={t}"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the load generator");
        drop(server_in);
        server.wait().ok();
        server_done.send(()).ok();
        let stderr = err_reader.join().unwrap_or_default();
        let collected = stderr
            .lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok());
        let msgs = parse_result(&String::from_utf8_lossy(&client.stdout))
            .and_then(|m| m.get("round_trips").copied());
        match (collected, msgs) {
            (Some(ir), Some(msgs)) => points.push((msgs, ir)),
            _ => {
                record.note = format!("no instruction count (load generator {})", client.status);
                return;
            }
        }
    }
    if let [(m1, i1), (m2, i2)] = points[..] {
        record.metrics.insert("msgs_1".into(), m1);
        record.metrics.insert("ir_1".into(), i1);
        record.metrics.insert("msgs_2".into(), m2);
        record.metrics.insert("ir_2".into(), i2);
        record.metrics.insert("ir_per_msg".into(), (i2 - i1) / (m2 - m1));
        record.ok = true;
    } else {
        record.note = "needs two trip counts".into();
    }
}

/// A one-line summary of a record for the console.
fn summary(r: &Record) -> String {
    if !r.ok {
        return format!("FAILED ({})", r.note);
    }
    let g = |k: &str| r.get(k).unwrap_or(f64::NAN);
    match r.case.as_str() {
        "memory" => format!("{:.2} KiB per parked task, +{} mappings", g("kib_per_task"), g("maps_added")),
        "sleep" => format!(
            "{:.2} µs CPU per sleeper, lateness p50 {:.0} µs p99 {:.0} µs",
            g("cpu_us_per_task"),
            g("late_p50_us"),
            g("late_p99_us")
        ),
        "echo" => format!(
            "{:.0} msg/s, p50 {:.0} µs p99 {:.0} µs, server user {:.2} + sys {:.2} µs/msg, peak RSS {:.1} MiB",
            g("rps"),
            g("p50_us"),
            g("p99_us"),
            g("user_us_per_msg"),
            g("sys_us_per_msg"),
            g("hwm_kib") / 1024.0
        ),
        "echo-ir" => format!("{:.0} user-space instructions per message", g("ir_per_msg")),
        _ => format!("{:.1} ns CPU/op, {:.1} ns wall/op", g("cpu_ns"), g("wall_ns")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        return child(&args[pos + 1..]);
    }
    let benching = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = value("--runs").and_then(|v| v.parse().ok()).unwrap_or(if benching { 2 } else { 1 });
    let only: Option<Vec<String>> = value("--only").map(|v| v.split(',').map(str::to_owned).collect());
    let settings = if !benching {
        SMOKE
    } else if quick {
        QUICK
    } else {
        FULL
    };
    let cases: Vec<&str> = CASES
        .iter()
        .copied()
        .filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|x| x == c)))
        .filter(|c| benching || *c != "echo-ir") // no valgrind in the smoke test
        .collect();
    let write_docs = args.iter().any(|a| a == "--write-docs")
        || (benching && !quick && only.is_none() && !args.iter().any(|a| a == "--no-docs"));
    let exe = std::env::current_exe().expect("current_exe");
    let machine = report::Machine::probe();
    println!("tasklet side-by-side comparison: {} run(s) of {cases:?}", runs);
    println!("{}", machine.one_line());
    let jobs = plan(&cases, &settings);
    let started = Instant::now();
    let mut records = Vec::new();
    for run in 1..=runs {
        println!("\n== run {run} of {runs} ==");
        // A peer that could not hold N tasks is not asked for more in the same run.
        let mut failed_at: BTreeMap<(String, String), usize> = BTreeMap::new();
        for job in &jobs {
            let n: Option<usize> =
                job.params.iter().find(|(k, _)| *k == "n").and_then(|(_, v)| v.parse().ok());
            if let (Some(n), Some(&limit)) = (n, failed_at.get(&(job.case.to_owned(), job.imp.to_owned()))) {
                if n > limit {
                    println!(
                        "{:>8} {:<13} {:<22} skipped (failed at a smaller N in this run)",
                        job.case,
                        job.imp,
                        job.param()
                    );
                    continue;
                }
            }
            let record = run_job(&exe, job, run);
            println!("{:>8} {:<13} {:<22} {}", job.case, job.imp, record.param, summary(&record));
            if !record.ok {
                if let Some(n) = n {
                    failed_at.insert((job.case.to_owned(), job.imp.to_owned()), n);
                }
            }
            records.push(record);
        }
    }
    let loadavg_end = report::loadavg();
    println!("\ndone in {:.0} s; load average now {loadavg_end}", started.elapsed().as_secs_f64());
    if !benching {
        let failed = records.iter().filter(|r| !r.ok).count();
        println!("smoke test: {} passed, {failed} failed", records.len() - failed);
        return if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let report = report::Report { machine, runs, settings, records, loadavg_end };
    let json_path = report::target_dir().join("compare").join("results.json");
    std::fs::create_dir_all(json_path.parent().expect("parent")).expect("create target/compare");
    std::fs::write(&json_path, report.json()).expect("write results.json");
    println!("wrote {}", json_path.display());
    let tables = report.markdown();
    std::fs::write(json_path.with_file_name("tables.md"), &tables).expect("write tables.md");
    println!("wrote {}", json_path.with_file_name("tables.md").display());
    if write_docs {
        for (name, svg) in report.charts() {
            let path = report::docs_dir().join(name);
            std::fs::write(&path, svg).expect("write a chart");
            println!("wrote {}", path.display());
        }
        let path = report::docs_dir().join("benchmarks.md");
        let doc = std::fs::read_to_string(&path).expect("read docs/benchmarks.md");
        std::fs::write(&path, report::splice(&doc, &tables)).expect("write docs/benchmarks.md");
        println!("rewrote the comparison section of {}", path.display());
    } else {
        println!(
            "(docs left alone: only a full `cargo bench -p tasklets-bench --bench compare` rewrites them)"
        );
    }
    ExitCode::SUCCESS
}
