//! What a case of the comparison is, and the plumbing every case shares: a job, the record it
//! yields, the arguments of the child process that measures it, and the parent side that runs
//! that child under a watchdog and reads its `RESULT` line.
//!
//! A new case is a module that implements [`Case`] (its jobs, what its child process measures,
//! its part of the report) plus one line in `CASES` in `main.rs`; nothing else changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::report::{Goal, Reference, Report, Target};

/// How long and how big: the full benchmark, `--quick`, or the smoke test (run without
/// `--bench`, as `cargo test --benches` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Quick,
    Smoke,
}

/// One case group of the comparison: one module, one or more case names.
pub trait Case: Sync {
    /// The names `--only` selects and records carry, in report order.
    fn names(&self) -> &'static [&'static str];

    /// This case's settings for `mode`, as `results.json` records them.
    fn settings(&self, mode: Mode) -> String;

    /// The jobs of one run of case `name` (one of [`Case::names`]).
    fn plan(&self, name: &'static str, mode: Mode) -> Vec<Job>;

    /// Child side: measures one job in this process and prints its `RESULT` line.
    fn child(&self, args: &ChildArgs);

    /// Parent side: runs `job` and fills `record`. By default, one child process.
    fn run(&self, exe: &Path, job: &Job, record: &mut Record) {
        run_child(exe, job, record);
    }

    /// A one-line summary of a record for the console.
    fn summary(&self, r: &Record) -> String {
        let g = |k: &str| r.get(k).unwrap_or(f64::NAN);
        format!("{:.1} ns CPU/op, {:.1} ns wall/op", g("cpu_ns"), g("wall_ns"))
    }

    /// Rows of the table of figures quoted from Go and gevent.
    fn reference(&self, _report: &Report) -> Vec<Reference> {
        Vec::new()
    }

    /// Rows of the targets table.
    fn targets(&self, _report: &Report) -> Vec<Target> {
        Vec::new()
    }

    /// The goals of issue 14 this case measures.
    fn goals(&self, _report: &Report) -> Vec<Goal> {
        Vec::new()
    }

    /// This case's section of `docs/benchmarks.md`.
    fn section(&self, report: &Report) -> String;

    /// This case's charts: (file name under `docs/`, SVG text).
    fn charts(&self, _report: &Report) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A peer of a case measured at several numbers N of tasks (`memory`, `sleep`): one child
/// process per (N, peer), pinned to CPU 0.
pub struct PeerAtN {
    pub imp: &'static str,
    /// Display names: in the Markdown table, on the charts.
    pub label: (&'static str, &'static str),
    /// Child side: measures N tasks and prints the `RESULT` line.
    pub measure: fn(usize),
}

/// The jobs of case `name` for these N and peers.
pub fn plan_at_n(name: &'static str, counts: &[usize], peers: &[PeerAtN]) -> Vec<Job> {
    counts.iter().flat_map(|&n| peers.iter().map(move |p| Job::new(name, p.imp, "0").with("n", n))).collect()
}

/// Child side of such a case: the job's peer measures the job's N.
pub fn child_at_n(args: &ChildArgs, peers: &[PeerAtN]) {
    let peer = peers.iter().find(|p| p.imp == args.imp);
    let peer = peer.unwrap_or_else(|| panic!("unknown {} peer {}", args.case, args.imp));
    (peer.measure)(args.num("n") as usize);
}

/// A child measurement: case, peer, CPUs to pin to, and `key=value` parameters.
pub struct Job {
    pub case: &'static str,
    pub imp: &'static str,
    pub cpus: &'static str,
    pub params: Vec<(&'static str, String)>,
}

impl Job {
    pub fn new(case: &'static str, imp: &'static str, cpus: &'static str) -> Job {
        Job { case, imp, cpus, params: Vec::new() }
    }

    pub fn with(mut self, key: &'static str, value: impl ToString) -> Job {
        self.params.push((key, value.to_string()));
        self
    }

    /// A parameter's value, or "" if the job has none.
    pub fn get(&self, key: &str) -> &str {
        self.params.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| v.as_str())
    }

    /// The parameters that identify the measurement (not the sampling settings).
    pub fn param(&self) -> String {
        let keys = ["batch", "n", "conns", "size"];
        self.params
            .iter()
            .filter(|(k, _)| keys.contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The child's command line: `--child CASE IMP cpus=.. key=value...`.
    pub fn child_args(&self) -> Vec<String> {
        let mut args = vec![
            "--child".to_owned(),
            self.case.to_owned(),
            self.imp.to_owned(),
            format!("cpus={}", self.cpus),
        ];
        args.extend(self.params.iter().map(|(k, v)| format!("{k}={v}")));
        args
    }
}

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

/// A child process's arguments: `CASE IMP key=value...`.
pub struct ChildArgs<'a> {
    pub case: &'a str,
    pub imp: &'a str,
    kv: BTreeMap<&'a str, &'a str>,
}

impl<'a> ChildArgs<'a> {
    pub fn parse(args: &'a [String]) -> ChildArgs<'a> {
        let kv = args[2..].iter().filter_map(|a| a.split_once('=')).collect();
        ChildArgs { case: &args[0], imp: &args[1], kv }
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.kv.get(key).copied()
    }

    /// A numeric parameter the job must have.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{} {}: missing {key}=", self.case, self.imp))
    }

    pub fn sample(&self) -> Duration {
        Duration::from_millis(self.num("sample_ms"))
    }

    pub fn samples(&self) -> usize {
        self.num("samples") as usize
    }
}

/// Kills process `pid` (a child we started) unless `done` says it finished within `limit`.
pub fn watchdog(pid: u32, limit: Duration) -> mpsc::Sender<()> {
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
pub fn parse_result(stdout: &str) -> Option<BTreeMap<String, f64>> {
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

/// Runs `job` in one child process (this binary re-executed with `--child`) and fills `record`
/// from its `RESULT` line; returns the child's stderr.
pub fn run_child(exe: &Path, job: &Job, record: &mut Record) -> String {
    let child = Command::new(exe)
        .args(job.child_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a child");
    let done = watchdog(child.id(), Duration::from_secs(300));
    let out = child.wait_with_output().expect("wait for a child");
    done.send(()).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(metrics) = parse_result(&stdout) {
        record.metrics = metrics;
    }
    record.ok = out.status.success() && !record.metrics.is_empty();
    if !record.ok {
        record.note = failure_note(&stderr, out.status);
    }
    stderr
}
