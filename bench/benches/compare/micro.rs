//! Hot-path operations, one per child process: a switch, a channel round trip, and
//! spawn + run + finish, for tasklet and each peer. Every function performs `n` operations (or
//! the nearest whole number of rounds or batches) and returns how many it did.

use std::fmt::Write;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tasklets::Channel;

use crate::case::{Case, ChildArgs, Job, Mode};
use crate::common::{emit_per_op, in_may, may_go, measure, tokio_runtime};
use crate::report::{num, thousands, Goal, Reference, Report, Target};
use crate::svg::{self, Panel};

/// The cases `switch`, `channel` and `spawn`.
pub struct Micro;

#[derive(Debug)]
struct Settings {
    /// Length and count of the samples of one measurement.
    sample_ms: u64,
    samples: usize,
    /// Tasks per batch of `spawn`: large, middle, small; OS threads get `thread_batch`.
    spawn_batch_big: u64,
    spawn_batch: u64,
    spawn_batch_small: u64,
    thread_batch: u64,
}

fn settings(mode: Mode) -> Settings {
    match mode {
        Mode::Full => Settings {
            sample_ms: 200,
            samples: 5,
            spawn_batch_big: 100_000,
            spawn_batch: 10_000,
            spawn_batch_small: 1_000,
            thread_batch: 1_000,
        },
        Mode::Quick => Settings { sample_ms: 50, samples: 3, ..settings(Mode::Full) },
        Mode::Smoke => Settings {
            sample_ms: 5,
            samples: 1,
            spawn_batch_big: 1_000,
            spawn_batch: 100,
            spawn_batch_small: 10,
            thread_batch: 10,
        },
    }
}

const SWITCH_PEERS: [&str; 5] = ["tasklet", "tasklet-acct", "may", "tokio", "threads"];
const CHANNEL_PEERS: [&str; 6] = ["tasklet", "tasklet-acct", "may", "tokio", "threads-1cpu", "threads-2cpu"];
const SPAWN_PEERS: [&str; 3] = ["tasklet", "may", "tokio"];

/// Display names: (Markdown, plain text for the charts).
fn label(case: &str, imp: &str) -> (&'static str, &'static str) {
    match (case, imp) {
        ("switch", "tasklet") => ("tasklet: two tasklets, `schedule()` (defaults)", "tasklet: schedule()"),
        ("switch", "tasklet-acct") => {
            ("tasklet, per-tasklet CPU accounting on (`set_accounting(true)`)", "tasklet, accounting on")
        }
        ("switch", "may") => ("may: two coroutines, `coroutine::yield_now()`", "may: yield_now()"),
        ("switch", "tokio") => {
            ("tokio: two `spawn_local` tasks, `task::yield_now().await`", "tokio: yield_now().await")
        }
        ("switch", "threads") => (
            "OS threads: two threads on one CPU, `thread::yield_now()` until it is their turn",
            "OS threads (1 CPU): yield_now()",
        ),
        ("channel", "tasklet") => ("tasklet: `Channel` (rendezvous, defaults)", "tasklet: Channel"),
        ("channel", "tasklet-acct") => (
            "tasklet: `Channel`, per-tasklet CPU accounting on (`set_accounting(true)`)",
            "tasklet: Channel, accounting on",
        ),
        ("channel", "may") => ("may: `sync::mpsc::channel`", "may: mpsc"),
        ("channel", "tokio") => ("tokio: `sync::mpsc::channel(1)`", "tokio: mpsc::channel(1)"),
        ("channel", "threads-1cpu") => {
            ("std: `sync::mpsc::channel`, two threads on one CPU", "std mpsc, threads on 1 CPU")
        }
        ("channel", "threads-2cpu") => {
            ("std: `sync::mpsc::channel`, two threads on two CPUs", "std mpsc, threads on 2 CPUs")
        }
        ("spawn", "tasklet") => ("tasklet: `spawn(\\|\\| {})` × batch, then `run()`", "tasklet"),
        ("spawn", "may") => ("may: `coroutine::spawn(\\|\\| {})` × batch, then `join` each", "may"),
        ("spawn", "tokio") => ("tokio: `LocalSet::spawn_local(async {})` × batch, then run the set", "tokio"),
        ("spawn", "threads") => ("std: `thread::spawn(\\|\\| {})` × batch, then `join` each", "OS threads"),
        _ => ("?", "?"),
    }
}

impl Micro {
    /// The (peer, batch) rows of `spawn`, in table order.
    fn spawn_rows(s: &Settings) -> Vec<(&'static str, u64)> {
        let mut rows = Vec::new();
        for batch in [s.spawn_batch_big, s.spawn_batch, s.spawn_batch_small] {
            rows.extend(SPAWN_PEERS.iter().map(|&imp| (imp, batch)));
        }
        rows.push(("threads", s.thread_batch));
        rows
    }

    /// A table of CPU time per operation, with the ratio to tasklet's row of the same `param`.
    fn table(report: &Report, case: &str, rows: &[(&str, String)]) -> String {
        let runs = report.runs_header();
        let mut md = String::new();
        let batch_col = case == "spawn";
        if batch_col {
            let _ = writeln!(
                md,
                "| peer | batch | CPU ns per task ({runs}) | × tasklet, same batch ({runs}) |\n|---|---:|---:|---:|"
            );
        } else {
            let _ = writeln!(
                md,
                "| peer | CPU ns per operation ({runs}) | × tasklet ({runs}) |\n|---|---:|---:|"
            );
        }
        for (imp, param) in rows {
            let (name, _) = label(case, imp);
            let cpu = report.cells(case, imp, param, "cpu_ns", num);
            let x = report.times_tasklet(case, imp, param, "cpu_ns");
            if batch_col {
                let b = param.trim_start_matches("batch=").parse::<f64>().map_or("?".into(), thousands);
                let _ = writeln!(md, "| {name} | {b} | {cpu} | {x} |");
            } else {
                let _ = writeln!(md, "| {name} | {cpu} | {x} |");
            }
        }
        md.push_str(&report.failures(case));
        md
    }
}

impl Case for Micro {
    fn names(&self) -> &'static [&'static str] {
        &["switch", "channel", "spawn"]
    }

    fn settings(&self, mode: Mode) -> String {
        format!("{:?}", settings(mode))
    }

    fn plan(&self, name: &'static str, mode: Mode) -> Vec<Job> {
        let s = settings(mode);
        let sampled =
            |imp, cpus| Job::new(name, imp, cpus).with("sample_ms", s.sample_ms).with("samples", s.samples);
        match name {
            "switch" => SWITCH_PEERS.iter().map(|imp| sampled(imp, "0")).collect(),
            "channel" => CHANNEL_PEERS
                .iter()
                .map(|&imp| sampled(imp, if imp == "threads-2cpu" { "0,1" } else { "0" }))
                .collect(),
            _ => Micro::spawn_rows(&s)
                .into_iter()
                .map(|(imp, batch)| sampled(imp, "0").with("batch", batch))
                .collect(),
        }
    }

    fn child(&self, args: &ChildArgs) {
        let (sample, samples) = (args.sample(), args.samples());
        // Accounting is off by default (a sysmon thread reports stalls instead); the companion
        // rows turn it on to show what the per-switch clock read costs.
        if args.imp == "tasklet-acct" {
            tasklets::set_accounting(true);
        }
        let per_op = match (args.case, args.imp) {
            ("switch", "tasklet" | "tasklet-acct") => measure(switch_tasklet, 1000, sample, samples),
            ("switch", "may") => measure(switch_may, 1000, sample, samples),
            ("switch", "tokio") => {
                let rt = tokio_runtime();
                measure(|n| switch_tokio(&rt, n), 1000, sample, samples)
            }
            ("switch", "threads") => measure(switch_threads, 1000, sample, samples),
            ("channel", "tasklet" | "tasklet-acct") => measure(channel_tasklet, 1000, sample, samples),
            ("channel", "may") => measure(channel_may, 1000, sample, samples),
            ("channel", "tokio") => {
                let rt = tokio_runtime();
                measure(|n| channel_tokio(&rt, n), 1000, sample, samples)
            }
            ("channel", "threads-1cpu" | "threads-2cpu") => measure(channel_threads, 1000, sample, samples),
            ("spawn", imp) => {
                let batch = args.num("batch");
                match imp {
                    "tasklet" => measure(|n| spawn_tasklet(n, batch), batch, sample, samples),
                    "may" => measure(|n| spawn_may(n, batch), batch, sample, samples),
                    "tokio" => {
                        let rt = tokio_runtime();
                        measure(|n| spawn_tokio(&rt, n, batch), batch, sample, samples)
                    }
                    "threads" => measure(|n| spawn_threads(n, batch), batch, sample, samples),
                    other => panic!("unknown spawn peer {other}"),
                }
            }
            (case, other) => panic!("unknown {case} peer {other}"),
        };
        emit_per_op(per_op);
    }

    fn reference(&self, report: &Report) -> Vec<Reference> {
        let s = settings(report.mode);
        let mid = format!("batch={}", s.spawn_batch);
        let big = format!("batch={}", s.spawn_batch_big);
        vec![
            Reference {
                figure: "switch",
                go: "50 ns (`runtime.Gosched`)",
                gevent: "160 ns",
                ours: format!("{} ns", report.cells("switch", "tasklet", "", "cpu_ns", num)),
            },
            Reference {
                figure: "channel round trip",
                go: "235 ns (unbuffered `chan`)",
                gevent: "3.9 µs",
                ours: format!("{} ns", report.cells("channel", "tasklet", "", "cpu_ns", num)),
            },
            Reference {
                figure: "spawn + finish",
                go: "171–594 ns per goroutine",
                gevent: "—",
                ours: format!(
                    "{} ns (batches of {}), {} ns (batches of {})",
                    report.cells("spawn", "tasklet", &mid, "cpu_ns", num),
                    thousands(s.spawn_batch as f64),
                    report.cells("spawn", "tasklet", &big, "cpu_ns", num),
                    thousands(s.spawn_batch_big as f64)
                ),
            },
        ]
    }

    fn targets(&self, report: &Report) -> Vec<Target> {
        let s = settings(report.mode);
        let vs_may = |case: &str, base: &str, name: &str, met: fn(f64) -> bool, shown: &str| Target {
            name: name.to_owned(),
            values: report.ratios(case, "may", "", (base, ""), "cpu_ns"),
            met,
            shown: shown.to_owned(),
        };
        let mut t = vec![
            vs_may(
                "switch",
                "tasklet",
                "switch: tasklet ≥ 4× faster than may `yield_now` (CPU per switch)",
                |v| v >= 4.0,
                "may ÷ tasklet",
            ),
            vs_may(
                "switch",
                "tasklet-acct",
                "(companion) switch with per-tasklet CPU accounting on: ≥ 4× faster than may",
                |v| v >= 4.0,
                "may ÷ tasklet (accounting on)",
            ),
            vs_may(
                "channel",
                "tasklet",
                "channel round trip: ≥ 8× faster than may mpsc",
                |v| v >= 8.0,
                "may ÷ tasklet",
            ),
            vs_may(
                "channel",
                "tasklet-acct",
                "(companion) channel round trip, accounting on: ≥ 8× faster than may mpsc",
                |v| v >= 8.0,
                "may ÷ tasklet (accounting on)",
            ),
        ];
        for batch in [s.spawn_batch, s.spawn_batch_small] {
            let p = format!("batch={batch}");
            let why = if batch == s.spawn_batch {
                "past may's pool of 1,000 cached coroutines; the largest batch of this comparison that may can hold"
            } else {
                "within may's pool of 1,000 cached coroutines"
            };
            t.push(Target {
                name: format!(
                    "spawn + run + finish: ≥ 10× faster than may, batches of {} ({why})",
                    thousands(batch as f64)
                ),
                values: report.ratios("spawn", "may", &p, ("tasklet", &p), "cpu_ns"),
                met: |v| v >= 10.0,
                shown: "may ÷ tasklet".into(),
            });
        }
        t
    }

    fn goals(&self, report: &Report) -> Vec<Goal> {
        let s = settings(report.mode);
        let ours = |case, param: &str| report.mean(case, "tasklet", param, "cpu_ns");
        let alone = |case: &'static str, name: &str, param: &str, limit| Goal {
            case,
            name: name.to_owned(),
            unit: "ns",
            ours: ours(case, param),
            peer: None,
            limit,
            strict: false,
        };
        let small = format!("batch={}", s.spawn_batch_small);
        let mut goals = vec![
            alone("switch", "goal 2: switch between two tasklets, defaults (CPU)", "", 10.0),
            alone("channel", "goal 2: channel round trip, defaults (CPU)", "", 40.0),
            alone(
                "spawn",
                &format!(
                    "goal 2: spawn + run + finish, batches of {}",
                    thousands(s.spawn_batch_small as f64)
                ),
                &small,
                60.0,
            ),
        ];
        for batch in [s.spawn_batch, s.spawn_batch_big] {
            let p = format!("batch={batch}");
            goals.push(Goal {
                case: "spawn",
                name: format!(
                    "goal 2: spawn + run + finish, batches of {}, below tokio",
                    thousands(batch as f64)
                ),
                unit: "ns",
                ours: ours("spawn", &p),
                peer: Some(("tokio", report.mean("spawn", "tokio", &p, "cpu_ns"))),
                limit: 1.0,
                strict: true,
            });
        }
        goals
    }

    fn section(&self, report: &Report) -> String {
        let s = settings(report.mode);
        let plain = |peers: &[&'static str]| -> Vec<(&'static str, String)> {
            peers.iter().map(|&imp| (imp, String::new())).collect()
        };
        let mut md = String::new();
        md.push_str(
            "### 1–3. Switch, channel round trip, spawn\n\n![CPU time per operation](compare-micro.svg)\n\n",
        );
        md.push_str(
            "#### 1. Switch\n\nTwo tasks that are both runnable alternate; one operation is one switch from one to \
             the other. For OS threads, two threads pinned to the same CPU pass a turn flag, each waiting for its \
             turn with `std::thread::yield_now()` (so every hand-over is a `sched_yield` into the other thread; \
             chosen over a condvar hand-off, which adds a futex wake and sleep per switch). The tasklet rows use \
             the defaults: per-tasklet CPU accounting is off (since issue 14; a sysmon thread reports stalls \
             instead); the companion rows turn it on with `set_accounting(true)` (one clock read per switch).\n\n",
        );
        md.push_str(&Micro::table(report, "switch", &plain(&SWITCH_PEERS)));
        md.push_str(
            "\n#### 2. Channel round trip\n\nPing-pong over two channels; one operation is a send and a receive \
             each way. tasklet channels are rendezvous (the default preference, `Receiver`); the peers' channels \
             are queues.\n\n",
        );
        md.push_str(&Micro::table(report, "channel", &plain(&CHANNEL_PEERS)));
        let _ = write!(
            md,
            "\n#### 3. Spawn + run + finish\n\nA batch of tasks with an empty body is spawned, then run to \
             completion; one operation is one task. may keeps 1,000 finished coroutines in a pool; a batch larger \
             than that pays an `mmap` + `mprotect` (guard page) + `munmap` for every coroutine past the pool. may \
             cannot run a batch of {} at all: each stack takes two mappings, and 32,765 of them exhaust \
             `vm.max_map_count`. OS threads get batches of {}.\n\n",
            thousands(s.spawn_batch_big as f64),
            thousands(s.thread_batch as f64)
        );
        let rows: Vec<(&str, String)> =
            Micro::spawn_rows(&s).into_iter().map(|(imp, batch)| (imp, format!("batch={batch}"))).collect();
        md.push_str(&Micro::table(report, "spawn", &rows));
        md.push('\n');
        md
    }

    fn charts(&self, report: &Report) -> Vec<(String, String)> {
        let s = settings(report.mode);
        let bar = |case: &str, imp: &str, param: &str| {
            report.bar((case, imp, param), label(case, imp).1, "cpu_ns", "ns", Some(("tasklet", param)))
        };
        let panels = vec![
            Panel {
                title: "1. Switch between two runnable tasks (CPU per switch)".into(),
                unit: "ns".into(),
                log: true,
                bars: SWITCH_PEERS.iter().map(|imp| bar("switch", imp, "")).collect(),
            },
            Panel {
                title: "2. Channel round trip (CPU per round trip)".into(),
                unit: "ns".into(),
                log: true,
                bars: CHANNEL_PEERS.iter().map(|imp| bar("channel", imp, "")).collect(),
            },
            Panel {
                title: "3. Spawn + run + finish (CPU per task)".into(),
                unit: "ns".into(),
                log: true,
                bars: Micro::spawn_rows(&s)
                    .into_iter()
                    .map(|(imp, batch)| {
                        let mut b = bar("spawn", imp, &format!("batch={batch}"));
                        b.label = format!("{}, batch {}", b.label, thousands(batch as f64));
                        b
                    })
                    .collect(),
            },
        ];
        vec![(
            "compare-micro.svg".to_owned(),
            svg::chart(
                "tasklet vs may, tokio and OS threads: CPU time per operation (lower is better)",
                &report.subtitle(),
                &panels,
                &[("tasklet", svg::TASKLET), ("peer", svg::PEER)],
            ),
        )]
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Switch: two runnable tasks alternate; one operation = one switch from one to the other.

pub fn switch_tasklet(n: u64) -> u64 {
    let half = n.div_ceil(2).max(1);
    for _ in 0..2 {
        tasklets::spawn(move || {
            for _ in 0..half {
                tasklets::schedule();
            }
        });
    }
    tasklets::run();
    2 * half
}

pub fn switch_may(n: u64) -> u64 {
    let half = n.div_ceil(2).max(1);
    in_may(move || {
        let a = may_go(move || {
            for _ in 0..half {
                may::coroutine::yield_now();
            }
        });
        let b = may_go(move || {
            for _ in 0..half {
                may::coroutine::yield_now();
            }
        });
        a.join().expect("may a");
        b.join().expect("may b");
    });
    2 * half
}

pub fn switch_tokio(rt: &tokio::runtime::Runtime, n: u64) -> u64 {
    let half = n.div_ceil(2).max(1);
    let local = tokio::task::LocalSet::new();
    for _ in 0..2 {
        local.spawn_local(async move {
            for _ in 0..half {
                tokio::task::yield_now().await;
            }
        });
    }
    rt.block_on(local);
    2 * half
}

/// Two OS threads on the SAME CPU (the child is pinned to one) hand a turn back and forth:
/// each waits for its turn with `std::thread::yield_now()`, so every hand-over is a
/// `sched_yield` that switches to the other thread.
pub fn switch_threads(n: u64) -> u64 {
    let half = n.div_ceil(2).max(1);
    let turn = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..2u64)
        .map(|me| {
            let turn = turn.clone();
            std::thread::spawn(move || {
                for _ in 0..half {
                    while turn.load(Ordering::Acquire) % 2 != me {
                        std::thread::yield_now();
                    }
                    turn.fetch_add(1, Ordering::Release);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    2 * half
}

// ---------------------------------------------------------------------------------------------
// 2. Channel round trip: ping-pong over two channels; one operation = send + receive each way.

pub fn channel_tasklet(n: u64) -> u64 {
    let ping = Channel::<u64>::new();
    let pong = Channel::<u64>::new();
    let (rx, tx) = (ping.clone(), pong.clone());
    tasklets::spawn(move || {
        for v in &rx {
            tx.send(v).unwrap();
        }
    });
    tasklets::spawn(move || {
        for i in 0..n {
            ping.send(i).unwrap();
            black_box(pong.receive().unwrap());
        }
        ping.close();
    });
    tasklets::run();
    n
}

pub fn channel_may(n: u64) -> u64 {
    in_may(move || {
        let (ping_tx, ping_rx) = may::sync::mpsc::channel::<u64>();
        let (pong_tx, pong_rx) = may::sync::mpsc::channel::<u64>();
        let echo = may_go(move || {
            while let Ok(v) = ping_rx.recv() {
                pong_tx.send(v).unwrap();
            }
        });
        for i in 0..n {
            ping_tx.send(i).unwrap();
            black_box(pong_rx.recv().unwrap());
        }
        drop(ping_tx);
        echo.join().expect("may echo");
    });
    n
}

pub fn channel_tokio(rt: &tokio::runtime::Runtime, n: u64) -> u64 {
    let local = tokio::task::LocalSet::new();
    let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
    local.spawn_local(async move {
        while let Some(v) = ping_rx.recv().await {
            pong_tx.send(v).await.unwrap();
        }
    });
    local.spawn_local(async move {
        for i in 0..n {
            ping_tx.send(i).await.unwrap();
            black_box(pong_rx.recv().await.unwrap());
        }
    });
    rt.block_on(local);
    n
}

/// std's mpsc (crossbeam's algorithm since Rust 1.67) between two OS threads; the child's
/// pinning decides whether they share one CPU or have one each.
pub fn channel_threads(n: u64) -> u64 {
    let (ping_tx, ping_rx) = std::sync::mpsc::channel::<u64>();
    let (pong_tx, pong_rx) = std::sync::mpsc::channel::<u64>();
    let echo = std::thread::spawn(move || {
        while let Ok(v) = ping_rx.recv() {
            pong_tx.send(v).unwrap();
        }
    });
    for i in 0..n {
        ping_tx.send(i).unwrap();
        black_box(pong_rx.recv().unwrap());
    }
    drop(ping_tx);
    echo.join().expect("echo thread");
    n
}

// ---------------------------------------------------------------------------------------------
// 3. Spawn + run + finish: batches of `batch` empty tasks, each batch run to completion;
//    one operation = one task.

pub fn spawn_tasklet(n: u64, batch: u64) -> u64 {
    let batches = n.div_ceil(batch).max(1);
    for _ in 0..batches {
        for _ in 0..batch {
            tasklets::spawn(|| {});
        }
        tasklets::run();
    }
    batches * batch
}

pub fn spawn_may(n: u64, batch: u64) -> u64 {
    let batches = n.div_ceil(batch).max(1);
    in_may(move || {
        let mut handles = Vec::with_capacity(batch as usize);
        for _ in 0..batches {
            for _ in 0..batch {
                handles.push(may_go(|| {}));
            }
            for h in handles.drain(..) {
                h.join().expect("may task");
            }
        }
    });
    batches * batch
}

pub fn spawn_tokio(rt: &tokio::runtime::Runtime, n: u64, batch: u64) -> u64 {
    let batches = n.div_ceil(batch).max(1);
    for _ in 0..batches {
        let local = tokio::task::LocalSet::new();
        for _ in 0..batch {
            local.spawn_local(async {});
        }
        rt.block_on(local);
    }
    batches * batch
}

pub fn spawn_threads(n: u64, batch: u64) -> u64 {
    let batches = n.div_ceil(batch).max(1);
    let mut handles = Vec::with_capacity(batch as usize);
    for _ in 0..batches {
        for _ in 0..batch {
            handles.push(std::thread::spawn(|| {}));
        }
        for h in handles.drain(..) {
            h.join().expect("thread");
        }
    }
    batches * batch
}
