//! Memory cost of parked tasklets: how much resident memory and how many memory mappings each
//! tasklet blocked on a channel costs, and whether the memory goes back when they finish.
//!
//! `cargo bench -p tasklets-bench --bench parked` measures N = 10,000, 100,000 and 1,000,000;
//! `cargo bench -p tasklets-bench --bench parked -- 50000 2000000` measures the given counts
//! instead. Each N runs in a fresh child process (this binary re-executed with `--child N`), so
//! that one measurement's pooled stacks and heap do not distort the next.
//!
//! In the child: warm up the scheduler, read VmRSS (`/proc/self/status`) and the mapping count
//! (lines of `/proc/self/maps`), spawn N tasklets that each block receiving on one channel, run
//! them until all are parked, measure again, then close the channel (waking every receiver),
//! run them to completion and measure again; then call `run()` with nothing to do a few times
//! (each ends an epoch of the stack pool, which trims the pages of cold stacks) and measure
//! after each.
//!
//! Checks (the process exits with status 1 if one fails): all N tasklets parked; the RSS per
//! parked tasklet is at most 5 KiB and the mapping delta fits under `vm.max_map_count` (the
//! issue's target: 1,000,000 parked tasklets with default sysctls); after the idle runs, the
//! RSS is back within 25% of the parked tasklets' RSS above the baseline, plus 2 MiB (the run
//! queue, the wait list and the registry keep their capacity, as `Vec`s do, and the pool keeps
//! its hot stacks warm). Page tables (`VmPTE`) are reported but not part of the RSS.
//!
//! Run without `--bench` (as `cargo test --benches` does), it only smoke-tests N = 1,000.

use std::process::{Command, ExitCode};
use std::time::Instant;

use tasklets::Channel;

const DEFAULT_COUNTS: [usize; 3] = [10_000, 100_000, 1_000_000];
const SMOKE_COUNT: usize = 1_000;
/// The target for a parked tasklet's resident memory.
const MAX_KIB_PER_PARKED: f64 = 5.0;
/// How much of the parked tasklets' memory may still be resident after the idle runs...
const MAX_RETAINED_FRACTION: f64 = 0.25;
/// ...plus this much (the pool keeps its hot stacks warm; the allocator keeps some heap).
const RETAINED_SLACK_KIB: u64 = 2048;
/// Idle `run()` calls after the tasklets finished.
const IDLE_RUNS: usize = 3;

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmPTE`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Resident set size of this process in KiB.
fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// Page tables of this process in KiB (not part of the RSS).
fn page_tables_kib() -> u64 {
    status_kib("VmPTE")
}

/// User and system CPU time in seconds, and minor page faults, of this process so far.
fn cpu() -> (f64, f64, i64) {
    // SAFETY: getrusage writes the struct we pass; an all-zero rusage is a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (secs(usage.ru_utime), secs(usage.ru_stime), usage.ru_minflt)
}

/// Memory mappings of this process.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps").lines().count()
}

fn max_map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?.trim().parse().ok()
}

/// Gives the allocator's free heap back to the kernel and returns the RSS afterwards, to tell
/// how much of the memory retained after a burst is free heap that glibc keeps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rss_after_malloc_trim() -> Option<u64> {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
    Some(rss_kib())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rss_after_malloc_trim() -> Option<u64> {
    None
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Measures N parked tasklets in this process; returns whether every check passed.
fn child(n: usize) -> bool {
    let mut ok = true;
    let ch = Channel::<u64>::new();
    // Warm up: create the scheduler, the first stack region and the allocator's arenas, so the
    // baseline includes the fixed costs.
    tasklets::spawn(|| ()).join().expect("warm-up tasklet");
    tasklets::run();

    let rss_before = rss_kib();
    let pte_before = page_tables_kib();
    let maps_before = mappings();
    let (user_before, sys_before, faults_before) = cpu();

    let start = Instant::now();
    for _ in 0..n {
        let rx = ch.clone();
        tasklets::spawn(move || {
            let _ = rx.receive();
        });
    }
    let spawned = start.elapsed();
    tasklets::run();
    let parked = start.elapsed();
    let blocked = usize::try_from(-ch.balance()).unwrap_or(0);
    let (user_parked, sys_parked, faults_parked) = cpu();

    let rss_parked = rss_kib();
    let pte_parked = page_tables_kib();
    let maps_parked = mappings();
    let rss_delta = rss_parked.saturating_sub(rss_before);
    let kib_each = rss_delta as f64 / n as f64;
    let maps_delta = maps_parked as isize - maps_before as isize;

    println!("N = {n}");
    println!(
        "  spawn: {:.1} ms ({:.0} ns/tasklet); spawn + run until parked: {:.1} ms ({:.0} ns/tasklet)",
        spawned.as_secs_f64() * 1e3,
        spawned.as_nanos() as f64 / n as f64,
        parked.as_secs_f64() * 1e3,
        parked.as_nanos() as f64 / n as f64,
    );
    println!(
        "  CPU: {:.2} s user, {:.2} s system; {:.2} minor page faults per tasklet",
        user_parked - user_before,
        sys_parked - sys_before,
        (faults_parked - faults_before) as f64 / n as f64,
    );
    println!("  parked on the channel: {blocked} (balance {})", ch.balance());
    println!(
        "  RSS: {:.1} MiB before, {:.1} MiB parked: +{:.1} MiB = {kib_each:.2} KiB per parked tasklet",
        mib(rss_before),
        mib(rss_parked),
        mib(rss_delta),
    );
    let pte_delta = pte_parked.saturating_sub(pte_before);
    println!(
        "  page tables (VmPTE, not in RSS): +{:.1} MiB = {:.2} KiB per parked tasklet",
        mib(pte_delta),
        pte_delta as f64 / n as f64,
    );
    println!(
        "  mappings: {maps_before} before, {maps_parked} parked: {maps_delta:+} (vm.max_map_count = {})",
        max_map_count().map_or_else(|| "?".to_owned(), |m| m.to_string())
    );

    let start = Instant::now();
    ch.close();
    tasklets::run();
    let finished = start.elapsed();
    let rss_finished = rss_kib();
    println!(
        "  close + run to completion: {:.1} ms ({:.0} ns/tasklet); RSS after: {:.1} MiB, page tables {:.1} MiB, mappings {}",
        finished.as_secs_f64() * 1e3,
        finished.as_nanos() as f64 / n as f64,
        mib(rss_finished),
        mib(page_tables_kib()),
        mappings(),
    );
    let mut rss_idle = rss_finished;
    for i in 1..=IDLE_RUNS {
        tasklets::run();
        rss_idle = rss_kib();
        println!("  RSS after idle run() #{i}: {:.1} MiB", mib(rss_idle));
    }
    let retained = rss_idle.saturating_sub(rss_before);
    println!(
        "  retained after the idle runs: {:.1} MiB = {:.2} KiB per tasklet ({:.0}% of the parked delta)",
        mib(retained),
        retained as f64 / n as f64,
        100.0 * retained as f64 / rss_delta.max(1) as f64,
    );
    if let Some(rss_trimmed) = rss_after_malloc_trim() {
        println!(
            "  (diagnostic) RSS after malloc_trim(0): {:.1} MiB: {:.1} MiB of the retained memory is free heap kept by the allocator",
            mib(rss_trimmed),
            mib(rss_idle.saturating_sub(rss_trimmed)),
        );
    }

    if blocked != n {
        println!("  CHECK FAILED: {blocked} of {n} tasklets parked");
        ok = false;
    }
    if kib_each > MAX_KIB_PER_PARKED {
        println!("  CHECK FAILED: {kib_each:.2} KiB per parked tasklet > {MAX_KIB_PER_PARKED} KiB");
        ok = false;
    }
    if let Some(max) = max_map_count() {
        if maps_parked >= max {
            println!("  CHECK FAILED: {maps_parked} mappings >= vm.max_map_count {max}");
            ok = false;
        }
    }
    if retained.saturating_sub(RETAINED_SLACK_KIB) as f64 > MAX_RETAINED_FRACTION * rss_delta as f64 {
        println!(
            "  CHECK FAILED: {:.1} MiB still resident after the tasklets finished (> {:.0}% of {:.1} MiB + {:.0} MiB)",
            mib(retained),
            MAX_RETAINED_FRACTION * 100.0,
            mib(rss_delta),
            mib(RETAINED_SLACK_KIB)
        );
        ok = false;
    }
    if ok {
        println!("  checks passed");
    }
    ok
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let n = args.get(pos + 1).and_then(|a| a.parse().ok()).expect("--child N");
        return if child(n) { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    // cargo passes `--bench` to bench targets run by `cargo bench`, not by `cargo test`.
    let benching = args.iter().any(|a| a == "--bench");
    let given: Vec<usize> =
        args.iter().filter(|a| !a.starts_with('-')).filter_map(|a| a.replace('_', "").parse().ok()).collect();
    let counts = if !given.is_empty() {
        given
    } else if benching {
        DEFAULT_COUNTS.to_vec()
    } else {
        vec![SMOKE_COUNT]
    };
    let exe = std::env::current_exe().expect("current_exe");
    let mut ok = true;
    for n in counts {
        let status =
            Command::new(&exe).arg("--child").arg(n.to_string()).status().expect("re-run the benchmark");
        if !status.success() {
            println!("N = {n}: FAILED ({status})");
            ok = false;
        }
        println!();
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
