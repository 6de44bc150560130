//! Side-by-side comparison of tasklets with its peers, measured in the same run on the same
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
//! Every run ends by printing the goals of issue 14 that the cases run measured, one line each:
//! tasklet's figure, the peer's, the ratio, the limit, met or missed (also a table in the docs).
//!
//! Every measurement runs in a fresh child process (this binary re-executed with `--child`),
//! pinned with `sched_setaffinity`: the single-core cases on CPU 0; the echo server on CPU 0
//! and the load generator on CPU 1. Each run measures every case for every peer, one after the
//! other, so the ratios of one run come from the same minutes of the same machine.
//!
//! Output: `target/compare/results.json` (every figure of every run, and the machine) and
//! `target/compare/tables.md` under the workspace's target directory, the comparison section of
//! the workspace's `docs/benchmarks.md` between its `compare:begin`/`compare:end` markers, and
//! the charts `docs/compare-*.svg`.
//!
//! Run without `--bench` (as `cargo test --benches` does), it only smoke-tests a few tiny
//! cases and writes nothing.
//!
//! The cases live in one module each (see `case.rs` for what a case provides); `CASES` below
//! lists them in the order of the report.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

mod case;
mod common;
mod echo;
mod memory;
mod micro;
mod report;
mod sleep;
mod svg;

use case::{Case, ChildArgs, Mode, Record};

/// Every case of the comparison, in the order of the report. A new case is a module that
/// implements [`Case`] and one line here.
const CASES: &[&dyn Case] = &[&micro::Micro, &memory::Memory, &sleep::Sleep, &echo::Echo];

/// The case module that measures case `name`.
fn case_named(name: &str) -> Option<&'static dyn Case> {
    CASES.iter().copied().find(|c| c.names().contains(&name))
}

/// Child side: one measurement, its `RESULT` line on stdout.
fn child(args: &[String]) -> ExitCode {
    let args = ChildArgs::parse(args);
    if let Some(cpus) = args.get("cpus") {
        let cpus: Vec<usize> = cpus.split(',').filter_map(|c| c.parse().ok()).collect();
        common::pin(&cpus);
    }
    if args.imp == "may" {
        may::config().set_workers(1);
    }
    let case = case_named(args.case).unwrap_or_else(|| panic!("unknown case {}", args.case));
    case.child(&args);
    std::io::stdout().flush().ok();
    ExitCode::SUCCESS
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
    let mode = if !benching {
        Mode::Smoke
    } else if quick {
        Mode::Quick
    } else {
        Mode::Full
    };
    let names: Vec<&'static str> = CASES.iter().flat_map(|c| c.names().iter().copied()).collect();
    if let Some(unknown) = only.iter().flatten().find(|o| !names.contains(&o.as_str())) {
        eprintln!("--only: unknown case {unknown:?}; the cases are {}", names.join(", "));
        return ExitCode::FAILURE;
    }
    let write_docs = args.iter().any(|a| a == "--write-docs")
        || (mode == Mode::Full && only.is_none() && !args.iter().any(|a| a == "--no-docs"));
    let exe = std::env::current_exe().expect("current_exe");
    let machine = report::Machine::probe();
    let mut jobs = Vec::new();
    let mut planned = Vec::new();
    for &name in &names {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        let case = case_named(name).expect("a name of CASES");
        let case_jobs = case.plan(name, mode);
        if !case_jobs.is_empty() {
            planned.push(name);
        }
        jobs.extend(case_jobs.into_iter().map(|job| (case, job)));
    }
    println!("tasklets side-by-side comparison: {runs} run(s) of {planned:?}");
    println!("{}", machine.one_line());
    let started = Instant::now();
    let mut records = Vec::new();
    for run in 1..=runs {
        println!("\n== run {run} of {runs} ==");
        // A peer that could not hold N tasks is not asked for more in the same run.
        let mut failed_at: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (case, job) in &jobs {
            let n: Option<usize> = job.get("n").parse().ok();
            if let (Some(n), Some(&limit)) = (n, failed_at.get(&(job.case, job.imp))) {
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
            let mut record = Record {
                run,
                case: job.case.to_owned(),
                imp: job.imp.to_owned(),
                param: job.param(),
                ok: false,
                note: String::new(),
                metrics: BTreeMap::new(),
            };
            case.run(&exe, job, &mut record);
            let summary = if record.ok { case.summary(&record) } else { format!("FAILED ({})", record.note) };
            println!("{:>8} {:<13} {:<22} {summary}", job.case, job.imp, record.param);
            if let (false, Some(n)) = (record.ok, n) {
                failed_at.insert((job.case, job.imp), n);
            }
            records.push(record);
        }
    }
    let loadavg_end = report::loadavg();
    println!("\ndone in {:.0} s; load average now {loadavg_end}", started.elapsed().as_secs_f64());
    let report = report::Report { cases: CASES, machine, runs, mode, records, loadavg_end };
    let goals = report.goal_lines();
    if !goals.is_empty() {
        println!("\nissue 14 goals (mean of {runs} run(s); tasklet ÷ peer where a peer is named):\n{goals}");
    }
    let records = &report.records;
    if mode == Mode::Smoke {
        let failed = records.iter().filter(|r| !r.ok).count();
        println!("smoke test: {} passed, {failed} failed", records.len() - failed);
        return if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let out_dir = report::target_dir().join("compare");
    std::fs::create_dir_all(&out_dir).expect("create target/compare");
    let json_path = out_dir.join("results.json");
    std::fs::write(&json_path, report.json()).expect("write results.json");
    println!("wrote {}", json_path.display());
    let tables = report.markdown();
    let tables_path = out_dir.join("tables.md");
    std::fs::write(&tables_path, &tables).expect("write tables.md");
    println!("wrote {}", tables_path.display());
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
        println!("(docs left alone: only a full `{}` rewrites them)", report::COMMAND);
    }
    ExitCode::SUCCESS
}
