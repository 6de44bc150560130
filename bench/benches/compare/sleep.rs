//! N tasks each sleep a random 1–100 ms (the same seeded durations for every peer): the
//! process's CPU time from the first spawn until the last task finished, and how late each
//! wake-up was (time asleep minus the duration asked for).

use std::cell::RefCell;
use std::fmt::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::case::{child_at_n, plan_at_n, Case, ChildArgs, Job, Mode, PeerAtN, Record};
use crate::common::{
    emit, in_may, mappings, may_fits, may_go, percentile, process_cpu, rusage, tokio_runtime, Rng,
};
use crate::report::{num, thousands, Goal, Report};
use crate::svg::{self, Panel};

/// The case `sleep`.
pub struct Sleep;

/// The numbers of sleepers measured, one child process each.
fn counts(mode: Mode) -> &'static [usize] {
    match mode {
        Mode::Full => &[100_000, 10_000],
        Mode::Quick => &[10_000],
        Mode::Smoke => &[1_000],
    }
}

/// The peers, in table order.
const PEERS: [PeerAtN; 3] = [
    PeerAtN { imp: "tasklet", label: ("tasklet: `tasklets::time::sleep`", "tasklet"), measure: tasklet },
    PeerAtN { imp: "may", label: ("may: `coroutine::sleep`", "may"), measure: may },
    PeerAtN { imp: "tokio", label: ("tokio: `time::sleep(..).await`", "tokio"), measure: tokio },
];

impl Case for Sleep {
    fn names(&self) -> &'static [&'static str] {
        &["sleep"]
    }

    fn settings(&self, mode: Mode) -> String {
        format!("counts: {:?}", counts(mode))
    }

    fn plan(&self, name: &'static str, mode: Mode) -> Vec<Job> {
        plan_at_n(name, counts(mode), &PEERS)
    }

    fn child(&self, args: &ChildArgs) {
        child_at_n(args, &PEERS);
    }

    fn summary(&self, r: &Record) -> String {
        let g = |k: &str| r.get(k).unwrap_or(f64::NAN);
        format!(
            "{:.2} µs CPU per sleeper, lateness p50 {:.0} µs p99 {:.0} µs",
            g("cpu_us_per_task"),
            g("late_p50_us"),
            g("late_p99_us")
        )
    }

    fn goals(&self, report: &Report) -> Vec<Goal> {
        let mut goals = Vec::new();
        for &n in counts(report.mode) {
            let p = format!("n={n}");
            let mean = |imp, key| report.mean("sleep", imp, &p, key);
            goals.push(Goal {
                case: "sleep",
                name: format!("goal 3: {} sleepers, CPU per sleeper (first round)", thousands(n as f64)),
                unit: "µs",
                ours: mean("tasklet", "cpu_us_per_task"),
                peer: Some(("tokio", mean("tokio", "cpu_us_per_task"))),
                limit: 1.0,
                strict: false,
            });
            goals.push(Goal {
                case: "sleep",
                name: format!("goal 3: {} sleepers, p99 lateness (first round)", thousands(n as f64)),
                unit: "ms",
                ours: mean("tasklet", "late_p99_us").map(|v| v / 1e3),
                peer: None,
                limit: 1.0,
                strict: false,
            });
        }
        goals
    }

    fn section(&self, report: &Report) -> String {
        let runs = report.runs_header();
        let mut md = String::new();
        md.push_str(
            "### 5. Sleep\n\n![Sleep: CPU per sleeper and lateness](compare-sleep.svg)\n\n\
             N tasks each sleep a random 1–100 ms (the same seeded durations for every peer); CPU is the process's \
             CPU time from the first spawn until the last task finished, per task; lateness is each task's time \
             asleep minus the duration it asked for. The child does this twice: the first round in a fresh process \
             (stacks and heap first touched: page faults), the second reusing what the runtime kept.\n\n",
        );
        let _ = writeln!(
            md,
            "| N | peer | round | CPU µs per sleeper ({runs}) | × tasklet | lateness p50, ms | lateness p99, ms | \
             lateness max, ms |\n|---:|---|---|---:|---:|---:|---:|---:|"
        );
        let ms = |v: f64| num(v / 1e3);
        for &n in counts(report.mode) {
            let p = format!("n={n}");
            for (round, prefix) in [("first", ""), ("second", "warm_")] {
                for peer in &PEERS {
                    let (imp, name) = (peer.imp, peer.label.0);
                    let key = |k: &str| format!("{prefix}{k}");
                    let _ = writeln!(
                        md,
                        "| {} | {name} | {round} | {} | {} | {} | {} | {} |",
                        thousands(n as f64),
                        report.cells("sleep", imp, &p, &key("cpu_us_per_task"), num),
                        report.times_tasklet("sleep", imp, &p, &key("cpu_us_per_task")),
                        report.cells("sleep", imp, &p, &key("late_p50_us"), ms),
                        report.cells("sleep", imp, &p, &key("late_p99_us"), ms),
                        report.cells("sleep", imp, &p, &key("late_max_us"), ms),
                    );
                }
            }
        }
        md.push('\n');
        md.push_str(&report.failures("sleep"));
        md.push_str(
            "\nAt these N, lateness measures the burst more than the timers: the first runs of all N tasks take \
             tens to hundreds of milliseconds on one core, and a task whose deadline passes meanwhile waits behind \
             tasks that have not started yet. While tasklets are runnable, tasklet checks its due timers every 64 \
             switches and runs their tasklets first; idle wake-ups are rounded up to a 500 µs grid (see \
             `src/timer.rs`). tokio checks its timer wheel every 61 polls and rounds deadlines up to the next \
             millisecond, so its p50 is about 1 ms even without a burst.\n\n",
        );
        md
    }

    fn charts(&self, report: &Report) -> Vec<(String, String)> {
        let mut panels = Vec::new();
        for &n in counts(report.mode) {
            let p = format!("n={n}");
            panels.push(Panel {
                title: format!("{} sleepers (1–100 ms), first round: CPU per sleeper", thousands(n as f64)),
                unit: "µs".into(),
                log: false,
                bars: PEERS
                    .iter()
                    .map(|peer| {
                        report.bar(
                            ("sleep", peer.imp, &p),
                            peer.label.1,
                            "cpu_us_per_task",
                            "µs",
                            Some(("tasklet", &p)),
                        )
                    })
                    .collect(),
            });
            panels.push(Panel {
                title: format!("{} sleepers, first round: p99 wake-up lateness", thousands(n as f64)),
                unit: "ms".into(),
                log: false,
                bars: PEERS
                    .iter()
                    .map(|peer| {
                        let mut b =
                            report.bar(("sleep", peer.imp, &p), peer.label.1, "late_p99_us", "ms", None);
                        for seg in &mut b.segments {
                            seg.value /= 1e3;
                        }
                        if let Some(v) = report.mean("sleep", peer.imp, &p, "late_p99_us") {
                            b.note = format!("{} ms", num(v / 1e3));
                        }
                        b
                    })
                    .collect(),
            });
        }
        vec![(
            "compare-sleep.svg".to_owned(),
            svg::chart(
                "Sleeping tasks: CPU per sleeper and p99 lateness (lower is better)",
                &report.subtitle(),
                &panels,
                &[("tasklet", svg::TASKLET), ("peer", svg::PEER)],
            ),
        )]
    }
}

const SEED: u64 = 0x05ee_d7a5_c1e7;

fn durations(n: usize) -> Vec<Duration> {
    let mut rng = Rng::new(SEED);
    (0..n).map(|_| Duration::from_micros(rng.range(1_000, 100_000))).collect()
}

/// What one round measured.
struct Round {
    wall: Duration,
    cpu: Duration,
    user: Duration,
    sys: Duration,
    late_ns: Vec<u64>,
}

/// Measures `round` (spawn `n` sleepers with these durations and run them all to completion)
/// twice in this process: first with everything cold (fresh stacks, heap, timer structures),
/// then again with whatever the runtime kept from the first round.
fn rounds(n: usize, mut round: impl FnMut(Vec<Duration>) -> Vec<u64>) {
    let mut results = Vec::new();
    for _ in 0..2 {
        let durations = durations(n);
        let (w0, c0, (u0, s0)) = (Instant::now(), process_cpu(), rusage(libc::RUSAGE_SELF));
        let mut late_ns = round(durations);
        let (w1, c1, (u1, s1)) = (Instant::now(), process_cpu(), rusage(libc::RUSAGE_SELF));
        late_ns.sort_unstable();
        results.push(Round { wall: w1 - w0, cpu: c1 - c0, user: u1 - u0, sys: s1 - s0, late_ns });
    }
    let mut metrics = vec![("n".to_owned(), n as f64)];
    for (prefix, r) in ["", "warm_"].iter().zip(&results) {
        let m = |name: &str, v: f64| (format!("{prefix}{name}"), v);
        metrics.extend([
            m("finished", r.late_ns.len() as f64),
            m("wall_ms", r.wall.as_secs_f64() * 1e3),
            m("cpu_ms", r.cpu.as_secs_f64() * 1e3),
            m("cpu_us_per_task", r.cpu.as_secs_f64() * 1e6 / n as f64),
            m("user_ms", r.user.as_secs_f64() * 1e3),
            m("sys_ms", r.sys.as_secs_f64() * 1e3),
            m("late_p50_us", percentile(&r.late_ns, 50.0) as f64 / 1e3),
            m("late_p99_us", percentile(&r.late_ns, 99.0) as f64 / 1e3),
            m("late_max_us", r.late_ns.last().copied().unwrap_or(0) as f64 / 1e3),
        ]);
    }
    let refs: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    emit(&refs);
}

fn lateness(start: Instant, asked: Duration) -> u64 {
    start.elapsed().saturating_sub(asked).as_nanos() as u64
}

fn tasklet(n: usize) {
    tasklets::spawn(|| tasklets::time::sleep(Duration::from_micros(100))).join().expect("warm-up");
    rounds(n, |durations| {
        let late = Rc::new(RefCell::new(Vec::with_capacity(n)));
        for d in durations {
            let late = late.clone();
            tasklets::spawn(move || {
                let start = Instant::now();
                tasklets::time::sleep(d);
                late.borrow_mut().push(lateness(start, d));
            });
        }
        tasklets::run();
        Rc::try_unwrap(late).expect("all tasklets finished").into_inner()
    });
}

fn may(n: usize) {
    // All `n` coroutines live at once (may runs the spawned ones only after the spawning one
    // returns), so a count past `vm.max_map_count` fails here, in bounded time and saying why,
    // instead of in may (see `may_fits`).
    if let Err(why) = may_fits(n) {
        may_failed(n, &why);
    }
    in_may(|| may::coroutine::sleep(Duration::from_micros(100)));
    rounds(n, |durations| {
        // SAFETY: may's `spawn` is unsafe because a coroutine must not hold thread-local
        // references across yields (it may resume on another thread); this one touches no TLS.
        let driver = unsafe {
            may::coroutine::spawn(move || {
                let handles: Vec<_> = durations
                    .into_iter()
                    .map(|d| {
                        may_go(move || {
                            let start = Instant::now();
                            may::coroutine::sleep(d);
                            lateness(start, d)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("may sleeper")).collect::<Vec<u64>>()
            })
        };
        // Should the estimate be wrong, may's failure still ends the child now, not at the
        // parent's watchdog: no unwinding through `main` (see `may_fits`).
        driver.join().unwrap_or_else(|_| {
            may_failed(n, &format!("may failed spawning {n} sleepers, at {} memory mappings", mappings()))
        })
    });
}

/// Reports that may could not run `n` sleepers and ends the child: the parent's table shows
/// `why` (the last line of stderr) as the failure.
fn may_failed(n: usize, why: &str) -> ! {
    emit(&[("n", n as f64), ("failed", 1.0), ("maps", mappings() as f64)]);
    eprintln!("{why}");
    std::process::exit(2);
}

fn tokio(n: usize) {
    let rt = tokio_runtime();
    rt.block_on(async { tokio::time::sleep(Duration::from_micros(100)).await });
    rounds(n, |durations| {
        let late = Rc::new(RefCell::new(Vec::with_capacity(n)));
        let local = tokio::task::LocalSet::new();
        for d in durations {
            let late = late.clone();
            local.spawn_local(async move {
                let start = Instant::now();
                tokio::time::sleep(d).await;
                late.borrow_mut().push(lateness(start, d));
            });
        }
        rt.block_on(local);
        Rc::try_unwrap(late).expect("all tasks finished").into_inner()
    });
}
