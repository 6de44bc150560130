//! Memory per parked task: N tasks each blocked waiting for a wake-up that comes only after
//! the measurement. One child process per (peer, N); the child prints progress lines so that
//! the parent can tell where a peer that cannot hold N tasks gave up, and how.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::case::{child_at_n, plan_at_n, run_child, Case, ChildArgs, Job, Mode, PeerAtN, Record};
use crate::common::{emit, in_may, mappings, may_go, status_kib, tokio_runtime};
use crate::report::{md_escape, num, read, thousands, Reference, Report};
use crate::svg::{self, Panel};

/// The case `memory`.
pub struct Memory;

/// The numbers of parked tasks measured, one child process each.
fn counts(mode: Mode) -> &'static [usize] {
    match mode {
        Mode::Full => &[10_000, 100_000, 1_000_000],
        Mode::Quick => &[10_000],
        Mode::Smoke => &[1_000],
    }
}

/// The peers, in table order.
const PEERS: [PeerAtN; 3] = [
    PeerAtN { imp: "tasklet", label: ("tasklet blocked in `Channel::receive`", "tasklet"), measure: tasklet },
    PeerAtN { imp: "may", label: ("may coroutine in `coroutine::park()`", "may"), measure: may },
    PeerAtN { imp: "tokio", label: ("tokio task awaiting `Notify::notified()`", "tokio"), measure: tokio },
];

impl Case for Memory {
    fn names(&self) -> &'static [&'static str] {
        &["memory"]
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

    fn run(&self, exe: &Path, job: &Job, record: &mut Record) {
        let stderr = run_child(exe, job, record);
        if let (false, Some((spawned, maps))) = (record.ok, last_progress(&stderr)) {
            record.metrics.entry("failed_at".into()).or_insert(spawned as f64);
            record.metrics.entry("maps_at_failure".into()).or_insert(maps as f64);
        }
    }

    fn summary(&self, r: &Record) -> String {
        let g = |k: &str| r.get(k).unwrap_or(f64::NAN);
        format!("{:.2} KiB per parked task, +{} mappings", g("kib_per_task"), g("maps_added"))
    }

    fn reference(&self, report: &Report) -> Vec<Reference> {
        let counts = counts(report.mode);
        let n = counts.get(1).or(counts.first()).copied().unwrap_or(0);
        vec![Reference {
            figure: "memory per parked task",
            go: "2.7 KiB per goroutine",
            gevent: "8.2 KiB per greenlet",
            ours: format!(
                "{} KiB (N = {})",
                report.cells("memory", "tasklet", &format!("n={n}"), "kib_per_task", num),
                thousands(n as f64)
            ),
        }]
    }

    fn section(&self, report: &Report) -> String {
        let runs = report.runs_header();
        let mut md = String::new();
        md.push_str(
            "### 4. Memory per parked task\n\n![Resident memory per parked task](compare-memory.svg)\n\n\
             N tasks each block until woken after the measurement; RSS is `VmRSS` before spawning and once all N \
             are parked (page tables, `VmPTE`, are not part of it and are listed apart). One child process per \
             peer and N, default sysctls.\n\n",
        );
        let _ = writeln!(
            md,
            "| N | peer | RSS per parked task, KiB ({runs}) | × tasklet | page tables per task, KiB | mappings added | \
             spawn until parked, µs per task |\n|---:|---|---:|---:|---:|---:|---:|"
        );
        for &n in counts(report.mode) {
            let p = format!("n={n}");
            for peer in &PEERS {
                let (imp, name) = (peer.imp, peer.label.0);
                let _ = writeln!(
                    md,
                    "| {} | {name} | {} | {} | {} | {} | {} |",
                    thousands(n as f64),
                    report.cells("memory", imp, &p, "kib_per_task", num),
                    report.times_tasklet("memory", imp, &p, "kib_per_task"),
                    report.cells("memory", imp, &p, "pte_kib_per_task", num),
                    report.cells("memory", imp, &p, "maps_added", thousands),
                    report.cells("memory", imp, &p, "spawn_park_us_per_task", num),
                );
            }
        }
        md.push('\n');
        // How may failed.
        let may_failure = report.records.iter().find(|r| r.case == "memory" && r.imp == "may" && !r.ok);
        if let Some(r) = may_failure {
            let at = r.get("failed_at").map_or("?".into(), thousands);
            let maps = r.get("maps_at_failure").map_or("?".into(), thousands);
            let rss = r.get("rss_at_failure_kib").map_or("?".into(), |k| format!("{:.0} MiB", k / 1024.0));
            let _ = writeln!(
                md,
                "**Where may stops:** at N = {}, may failed after spawning **{at} coroutines**, with {maps} mappings \
                 (`vm.max_map_count` is {}) and {rss} resident. Every may stack is its own `mmap` with an \
                 `mprotect`ed guard page, i.e. two mappings, so about 65,530 / 2 = 32,765 coroutines can exist; the \
                 next `mmap` fails with `ENOMEM` and may panics (`{}`) — in the spawning coroutine, which its `join` \
                 reports. Larger N were not attempted in the same run (`–` in the table). tasklet carves guard pages with \
                 `MADV_GUARD_INSTALL` inside large regions (a handful of mappings for any N); tokio tasks are heap \
                 objects without stacks.\n",
                r.param.trim_start_matches("n=").parse::<f64>().map_or("?".into(), thousands),
                read("/proc/sys/vm/max_map_count"),
                md_escape(&r.note)
            );
        }
        let _ = writeln!(
            md,
            "Peak RSS of the echo servers (`VmHWM`, 16 KiB read buffer per connection included, except the floor's \
             single shared buffer) is in the echo tables below.\n"
        );
        md
    }

    fn charts(&self, report: &Report) -> Vec<(String, String)> {
        let panels: Vec<Panel> = counts(report.mode)
            .iter()
            .map(|&n| {
                let p = format!("n={n}");
                let bars = PEERS
                    .iter()
                    .map(|peer| {
                        let imp = peer.imp;
                        let mut bar = report.bar(
                            ("memory", imp, &p),
                            peer.label.1,
                            "kib_per_task",
                            "KiB",
                            Some(("tasklet", &p)),
                        );
                        if bar.segments.is_empty() {
                            let record = report
                                .records
                                .iter()
                                .find(|r| r.case == "memory" && r.imp == imp && r.param == p);
                            bar.note = match record {
                                Some(r) => format!(
                                    "failed at {} (mappings)",
                                    r.get("failed_at").map_or("?".into(), thousands)
                                ),
                                None => "not run: failed at a smaller N".into(),
                            };
                        }
                        bar
                    })
                    .collect();
                Panel {
                    title: format!("N = {} parked tasks: resident memory per task", thousands(n as f64)),
                    unit: "KiB".into(),
                    log: false,
                    bars,
                }
            })
            .collect();
        vec![(
            "compare-memory.svg".to_owned(),
            svg::chart(
                "Memory per parked task (VmRSS delta / N; lower is better)",
                &report.subtitle(),
                &panels,
                &[("tasklet", svg::TASKLET), ("peer", svg::PEER)],
            ),
        )]
    }
}

/// Counters before the tasks exist.
struct Before {
    rss: u64,
    pte: u64,
    maps: usize,
    start: Instant,
}

fn before() -> Before {
    Before { rss: status_kib("VmRSS"), pte: status_kib("VmPTE"), maps: mappings(), start: Instant::now() }
}

/// Prints the result once all `n` are parked.
fn parked(b: &Before, n: usize, parked: usize) {
    let rss = status_kib("VmRSS");
    let pte = status_kib("VmPTE");
    let maps = mappings();
    let secs = b.start.elapsed().as_secs_f64();
    emit(&[
        ("n", n as f64),
        ("parked", parked as f64),
        ("kib_per_task", rss.saturating_sub(b.rss) as f64 / n as f64),
        ("pte_kib_per_task", pte.saturating_sub(b.pte) as f64 / n as f64),
        ("rss_base_kib", b.rss as f64),
        ("rss_parked_kib", rss as f64),
        ("maps_added", maps as f64 - b.maps as f64),
        ("spawn_park_us_per_task", secs * 1e6 / n as f64),
    ]);
    std::io::stdout().flush().ok();
}

fn tasklet(n: usize) {
    // Warm up: the scheduler, the first stack region and the allocator's arenas.
    tasklets::spawn(|| ()).join().expect("warm-up tasklet");
    tasklets::run();
    let b = before();
    let ch = tasklets::Channel::<()>::new();
    for _ in 0..n {
        let rx = ch.clone();
        tasklets::spawn(move || {
            let _ = rx.receive();
        });
    }
    tasklets::run();
    let blocked = usize::try_from(-ch.balance()).unwrap_or(0);
    parked(&b, n, blocked);
    ch.close();
    tasklets::run();
}

fn may(n: usize) {
    // Warm up the scheduler (its threads and first coroutine).
    in_may(|| ());
    let b = before();
    let spawned = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let counter = spawned.clone();
    let started2 = started.clone();
    // Spawned from a coroutine, so that the new ones go to the worker's local queue.
    // SAFETY: may's `spawn` is unsafe because a coroutine must not hold thread-local references
    // across yields (it may resume on another thread); these closures touch no TLS, only `Arc`s.
    let driver = unsafe {
        may::coroutine::spawn(move || {
            let mut handles = Vec::with_capacity(n);
            for i in 0..n {
                let started = started2.clone();
                handles.push(may_go(move || {
                    started.fetch_add(1, Ordering::Relaxed);
                    may::coroutine::park();
                }));
                counter.store(i + 1, Ordering::Relaxed);
                if (i + 1).is_multiple_of(1000) {
                    eprintln!("PROGRESS spawned={} maps={}", i + 1, mappings());
                }
            }
            // may's `spawn` queues new coroutines on the worker's global queue, which the
            // worker drains only when its local queue is empty: they run once this returns.
            handles
        })
    };
    match driver.join() {
        Ok(handles) => {
            while started.load(Ordering::Relaxed) < n {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            std::thread::sleep(std::time::Duration::from_millis(20)); // the last ones reach park()
            parked(&b, n, started.load(Ordering::Relaxed));
            for h in &handles {
                h.coroutine().unpark();
            }
            for h in handles {
                h.join().expect("may parked coroutine");
            }
        }
        Err(_) => {
            let done = spawned.load(Ordering::Relaxed);
            eprintln!("FAILED spawned={done} maps={}", mappings());
            emit(&[
                ("n", n as f64),
                ("failed_at", done as f64),
                ("maps_at_failure", mappings() as f64),
                ("rss_at_failure_kib", status_kib("VmRSS") as f64),
            ]);
            std::process::exit(2);
        }
    }
}

fn tokio(n: usize) {
    let rt = tokio_runtime();
    let local = tokio::task::LocalSet::new();
    rt.block_on(local.run_until(async {})); // warm up
    let b = before();
    let notify = Rc::new(tokio::sync::Notify::new());
    let waiting = Rc::new(Cell::new(0usize));
    for _ in 0..n {
        let (notify, waiting) = (notify.clone(), waiting.clone());
        local.spawn_local(async move {
            waiting.set(waiting.get() + 1);
            notify.notified().await;
        });
    }
    rt.block_on(local.run_until(async {
        while waiting.get() < n {
            tokio::task::yield_now().await;
        }
    }));
    parked(&b, n, waiting.get());
    notify.notify_waiters();
    rt.block_on(local);
}

/// A may failure's last progress, from the child's stderr (used when the child dies by a signal).
fn last_progress(stderr: &str) -> Option<(usize, usize)> {
    let line = stderr.lines().rev().find(|l| l.starts_with("PROGRESS") || l.starts_with("FAILED"))?;
    let field = |name: &str| -> Option<usize> {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    Some((field("spawned")?, field("maps")?))
}
