//! Echo over loopback: one server process pinned to CPU 0 (one implementation per process)
//! and one load-generator process pinned to CPU 1, the same for every server (`servers.rs`,
//! `load.rs`; the parent side that runs them is `run.rs`). Case `echo` measures throughput,
//! latency and the server's CPU time per message; case `echo-ir` counts the server's user-space
//! instructions per message under callgrind.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::case::{Case, ChildArgs, Job, Mode, Record};
use crate::report::{num, size_name, thousands, Goal, Reference, Report, Target};
use crate::svg::{self, Bar, Panel, Segment};

mod load;
mod run;
mod servers;

/// The cases `echo` and `echo-ir`.
pub struct Echo;

#[derive(Debug)]
struct Settings {
    conns: &'static [usize],
    sizes: &'static [usize],
    warm_ms: u64,
    window_ms: u64,
    /// Connections, and round trips per connection of the two callgrind runs (`echo-ir`).
    ir_conns: usize,
    ir_trips: (u64, u64),
}

fn settings(mode: Mode) -> Settings {
    match mode {
        Mode::Full => Settings {
            conns: &[100, 1_000],
            sizes: &[64, 4096],
            warm_ms: 1_000,
            window_ms: 5_000,
            ir_conns: 100,
            ir_trips: (100, 400),
        },
        Mode::Quick => Settings {
            conns: &[100],
            sizes: &[64],
            warm_ms: 300,
            window_ms: 1_000,
            ir_conns: 100,
            ir_trips: (50, 150),
        },
        Mode::Smoke => Settings {
            conns: &[10],
            sizes: &[64],
            warm_ms: 50,
            window_ms: 200,
            ir_conns: 10,
            ir_trips: (10, 30),
        },
    }
}

/// The servers, in table order.
const SERVERS: [&str; 6] = ["tasklet", "may", "tokio", "threads", "floor", "floor-epoll"];

/// Display names: (Markdown, plain text for the charts).
fn label(imp: &str) -> (&'static str, &'static str) {
    match imp {
        "tasklet" => ("tasklet: `net::TcpListener`, a tasklet per connection", "tasklet"),
        "may" => ("may (1 worker): a coroutine per connection", "may"),
        "tokio" => ("tokio current-thread: a task per connection", "tokio"),
        "threads" => ("std: a thread per connection", "OS threads"),
        "floor" => ("floor: hand-written loop on `polling` (edge), no tasks", "floor (polling)"),
        "floor-epoll" => ("floor on raw `epoll` (libc), no tasks", "floor (raw epoll)"),
        _ => ("?", "?"),
    }
}

impl Case for Echo {
    fn names(&self) -> &'static [&'static str] {
        &["echo", "echo-ir"]
    }

    fn settings(&self, mode: Mode) -> String {
        format!("{:?}", settings(mode))
    }

    fn plan(&self, name: &'static str, mode: Mode) -> Vec<Job> {
        let s = settings(mode);
        let mut jobs = Vec::new();
        if name == "echo" {
            for &conns in s.conns {
                for &size in s.sizes {
                    jobs.extend(SERVERS.iter().map(|imp| {
                        Job::new(name, imp, "0")
                            .with("conns", conns)
                            .with("size", size)
                            .with("warm_ms", s.warm_ms)
                            .with("window_ms", s.window_ms)
                    }));
                }
            }
        } else if mode == Mode::Smoke {
            // No valgrind in the smoke test.
        } else if Command::new("valgrind").arg("--version").output().is_err() {
            println!("(echo-ir skipped: valgrind is not installed)");
        } else {
            jobs.extend(SERVERS.iter().map(|imp| {
                Job::new(name, imp, "0")
                    .with("conns", s.ir_conns)
                    .with("size", 64)
                    .with("trips", format!("{},{}", s.ir_trips.0, s.ir_trips.1))
            }));
        }
        jobs
    }

    fn child(&self, args: &ChildArgs) {
        match args.get("role") {
            Some("server") => servers::server(args.imp),
            Some("client") => load::client(
                args.num("port") as u16,
                args.num("conns") as usize,
                args.num("size") as usize,
                Duration::from_millis(args.num("warm_ms")),
                Duration::from_millis(args.num("window_ms")),
                args.get("trips").and_then(|v| v.parse().ok()).unwrap_or(0),
            ),
            other => panic!("{}: unknown role {other:?}", args.case),
        }
    }

    fn run(&self, exe: &Path, job: &Job, record: &mut Record) {
        if job.case == "echo" {
            run::echo(exe, job, record);
        } else {
            run::echo_ir(exe, job, record);
        }
    }

    fn summary(&self, r: &Record) -> String {
        let g = |k: &str| r.get(k).unwrap_or(f64::NAN);
        if r.case == "echo-ir" {
            return format!("{:.0} user-space instructions per message", g("ir_per_msg"));
        }
        format!(
            "{:.0} msg/s, p50 {:.0} µs p99 {:.0} µs, server user {:.2} + sys {:.2} µs/msg, peak RSS {:.1} MiB",
            g("rps"),
            g("p50_us"),
            g("p99_us"),
            g("user_us_per_msg"),
            g("sys_us_per_msg"),
            g("hwm_kib") / 1024.0
        )
    }

    fn reference(&self, report: &Report) -> Vec<Reference> {
        let s = settings(report.mode);
        let p = format!("conns={} size={}", s.conns[0], s.sizes[0]);
        vec![Reference {
            figure: "echo, server CPU per message",
            go: "3.9 µs",
            gevent: "8.9 µs",
            ours: format!(
                "{} µs ({} conns × {}, user + system)",
                report.cells("echo", "tasklet", &p, "cpu_us_per_msg", num),
                s.conns[0],
                size_name(s.sizes[0])
            ),
        }]
    }

    fn targets(&self, report: &Report) -> Vec<Target> {
        let s = settings(report.mode);
        let mut t = Vec::new();
        for &conns in s.conns {
            for &size in s.sizes {
                let p = format!("conns={conns} size={size}");
                let w = format!("{} conns × {}", thousands(conns as f64), size_name(size));
                t.push(Target {
                    name: format!("echo {w}: server user CPU per message ≤ 1.2× the floor"),
                    values: report.ratios("echo", "tasklet", &p, ("floor", &p), "user_us_per_msg"),
                    met: |v| v <= 1.2,
                    shown: "tasklet ÷ floor".into(),
                });
                t.push(Target {
                    name: format!("echo {w}: server user CPU per message below tokio's"),
                    values: report.ratios("echo", "tasklet", &p, ("tokio", &p), "user_us_per_msg"),
                    met: |v| v < 1.0,
                    shown: "tasklet ÷ tokio".into(),
                });
                t.push(Target {
                    name: format!("echo {w}: throughput at least tokio's"),
                    values: report.ratios("echo", "tasklet", &p, ("tokio", &p), "rps"),
                    met: |v| v >= 1.0,
                    shown: "tasklet ÷ tokio".into(),
                });
            }
        }
        let p = format!("conns={} size=64", s.ir_conns);
        if report.records.iter().any(|r| r.case == "echo-ir") {
            t.push(Target {
                name: format!(
                    "(companion) echo {} conns × 64 B, user-space instructions per message (callgrind) ≤ 1.2× the floor",
                    s.ir_conns
                ),
                values: report.ratios("echo-ir", "tasklet", &p, ("floor", &p), "ir_per_msg"),
                met: |v| v <= 1.2,
                shown: "tasklet ÷ floor".into(),
            });
            t.push(Target {
                name: format!(
                    "(companion) echo {} conns × 64 B, user-space instructions per message (callgrind) below tokio's",
                    s.ir_conns
                ),
                values: report.ratios("echo-ir", "tasklet", &p, ("tokio", &p), "ir_per_msg"),
                met: |v| v < 1.0,
                shown: "tasklet ÷ tokio".into(),
            });
        }
        t
    }

    fn goals(&self, report: &Report) -> Vec<Goal> {
        let s = settings(report.mode);
        let mut goals = Vec::new();
        for &conns in s.conns {
            let p = format!("conns={conns} size=64");
            let mean = |imp| report.mean("echo", imp, &p, "cpu_us_per_msg");
            goals.push(Goal {
                case: "echo",
                name: format!(
                    "goal 1: echo {} conns × 64 B, server CPU per message (this bench's server, no idle timeout)",
                    thousands(conns as f64)
                ),
                unit: "µs",
                ours: mean("tasklet"),
                peer: Some(("tokio", mean("tokio"))),
                limit: 0.95,
                strict: false,
            });
        }
        let p = format!("conns={} size=64", s.ir_conns);
        let mean = |imp| report.mean("echo-ir", imp, &p, "ir_per_msg");
        for (peer, limit) in [("tokio", 0.6), ("floor-epoll", 1.5)] {
            goals.push(Goal {
                case: "echo-ir",
                name: format!(
                    "goal 1: echo {} conns × 64 B, user-space instructions per message (this bench's server, no idle timeout; \
                     the shipped example: `bench/echo-ir.sh`)",
                    s.ir_conns
                ),
                unit: "instr.",
                ours: mean("tasklet"),
                peer: Some((peer, mean(peer))),
                limit,
                strict: false,
            });
        }
        goals
    }

    fn section(&self, report: &Report) -> String {
        let s = settings(report.mode);
        let runs = report.runs_header();
        let mut md = String::new();
        let _ = write!(
            md,
            "### 6. Echo server on one core\n\n![Echo: server CPU per message](compare-echo.svg)\n\n\
             The server runs in its own process pinned to CPU 0; the load generator is another process pinned to \
             CPU 1, the same for every server: `tasklets::net` clients, one per connection, each a closed loop of \
             write N bytes → read them back → compare, `TCP_NODELAY` on both sides. After all connections are up \
             and a {:.1} s warm-up, round trips and their latencies are counted for {:.1} s. Server CPU is \
             `getrusage(RUSAGE_SELF)` of the server process between the start and the end of that window (every \
             thread of the server: may's and tokio's helper threads and each thread of the thread-per-connection \
             server count; the process holds nothing else), divided by the round trips (one message echoed = one \
             round trip). Every server reads into a 16 KiB buffer, so a 4 KiB message is one short read.\n\n",
            s.warm_ms as f64 / 1e3,
            s.window_ms as f64 / 1e3
        );
        let sampled = report.records.iter().any(|r| r.case == "echo" && r.get("perf_user_samples").is_some());
        if sampled {
            md.push_str(
                "User and system time: `getrusage`'s user + system is exact (the scheduler's run time), but its \
                 split is sampled by the 250 Hz tick on this kernel (no `VIRT_CPU_ACCOUNTING`), far too coarse for \
                 a user share of 3–15%. So each server runs under `perf record -e cpu-clock -c 100000` (a software \
                 clock event, no PMU needed: 10 kHz sampling), and the share of its samples in user mode within the \
                 window splits the exact total. The tick-sampled split is kept in the JSON \
                 (`user_us_per_msg_rusage`). The companion table below counts user-space instructions per message \
                 with callgrind, which is exact.\n\n",
            );
        } else {
            md.push_str(
                "User and system time are `getrusage`'s split (perf was not available), sampled by the kernel \
                 tick: good to about ±20% per run at these user shares; the companion table below counts \
                 user-space instructions per message with callgrind, which is exact.\n\n",
            );
        }
        for &conns in s.conns {
            for &size in s.sizes {
                let p = format!("conns={conns} size={size}");
                let _ = writeln!(
                    md,
                    "#### {} connections × {} messages\n",
                    thousands(conns as f64),
                    size_name(size)
                );
                let _ = writeln!(
                    md,
                    "| server | messages/s ({runs}) | latency p50 / p99, µs | user µs/msg | system µs/msg | \
                     user ÷ floor | CPU µs/msg (user + sys) | CPU × tasklet | peak RSS, MiB |\n\
                     |---|---:|---:|---:|---:|---:|---:|---:|---:|"
                );
                for imp in SERVERS {
                    let (name, _) = label(imp);
                    let lat = (1..=report.runs)
                        .map(|run| match report.find(run, "echo", imp, &p) {
                            Some(r) if r.ok => format!(
                                "{} / {}",
                                num(r.get("p50_us").unwrap_or(f64::NAN)),
                                num(r.get("p99_us").unwrap_or(f64::NAN))
                            ),
                            Some(_) => "failed".into(),
                            None => "–".into(),
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    let _ = writeln!(
                        md,
                        "| {name} | {} | {lat} | {} | {} | {} | {} | {} | {} |",
                        report.cells("echo", imp, &p, "rps", thousands),
                        report.cells("echo", imp, &p, "user_us_per_msg", num),
                        report.cells("echo", imp, &p, "sys_us_per_msg", num),
                        report.ratio_cells("echo", imp, &p, ("floor", &p), "user_us_per_msg"),
                        report.cells("echo", imp, &p, "cpu_us_per_msg", num),
                        report.times_tasklet("echo", imp, &p, "cpu_us_per_msg"),
                        report.cells("echo", imp, &p, "hwm_kib", |k| format!("{:.1}", k / 1024.0)),
                    );
                }
                md.push('\n');
            }
        }
        md.push_str(&report.failures("echo"));
        if report.records.iter().any(|r| r.case == "echo-ir") {
            let p = format!("conns={} size=64", s.ir_conns);
            let _ = write!(
                md,
                "#### User-space instructions per message (callgrind)\n\n\
                 Each server runs under `valgrind --tool=callgrind` twice, with {} connections making {} and then {} \
                 round trips of 64 B each (same load generator, not under valgrind); instructions per message = \
                 difference of the two totals ÷ difference of the messages, which leaves out start-up, connection \
                 set-up and teardown. Deterministic up to how many events one `epoll_wait` returns (under valgrind \
                 the server is slower, so it finds more connections ready per wait than at full speed).\n\n\
                 | server | user-space instructions per message ({runs}) | ÷ floor (polling) | ÷ tasklet |\n\
                 |---|---:|---:|---:|\n",
                s.ir_conns, s.ir_trips.0, s.ir_trips.1
            );
            for imp in SERVERS {
                let (name, _) = label(imp);
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {} |",
                    report.cells("echo-ir", imp, &p, "ir_per_msg", thousands),
                    report.ratio_cells("echo-ir", imp, &p, ("floor", &p), "ir_per_msg"),
                    report.times_tasklet("echo-ir", imp, &p, "ir_per_msg"),
                );
            }
            md.push('\n');
            md.push_str(&report.failures("echo-ir"));
        }
        md
    }

    fn charts(&self, report: &Report) -> Vec<(String, String)> {
        let s = settings(report.mode);
        // Stacked user + system per message.
        let mut panels = Vec::new();
        for &conns in s.conns {
            for &size in s.sizes {
                let p = format!("conns={conns} size={size}");
                let bars = SERVERS
                    .iter()
                    .map(|imp| {
                        let (_, name) = label(imp);
                        let user = report.mean("echo", imp, &p, "user_us_per_msg");
                        let sys = report.mean("echo", imp, &p, "sys_us_per_msg");
                        let rps = report.mean("echo", imp, &p, "rps");
                        let (segments, note) = match (user, sys, rps) {
                            (Some(u), Some(sy), Some(r)) => (
                                vec![
                                    Segment { value: u, color: svg::USER },
                                    Segment { value: sy, color: svg::SYSTEM },
                                ],
                                format!("{} + {} µs; {} msg/s", num(u), num(sy), thousands(r)),
                            ),
                            _ => (Vec::new(), "failed".into()),
                        };
                        Bar { label: name.to_owned(), segments, note, highlight: *imp == "tasklet" }
                    })
                    .collect();
                panels.push(Panel {
                    title: format!(
                        "{} connections × {}: server CPU per message",
                        thousands(conns as f64),
                        size_name(size)
                    ),
                    unit: "µs".into(),
                    log: false,
                    bars,
                });
            }
        }
        vec![(
            "compare-echo.svg".to_owned(),
            svg::chart(
                "Echo server on one core: server CPU per message (user + system; lower is better)",
                &report.subtitle(),
                &panels,
                &[("user", svg::USER), ("system", svg::SYSTEM)],
            ),
        )]
    }
}
