//! Measurement helpers shared by the comparison's cases: CPU clocks, memory counters, CPU
//! pinning, a tiny random generator, percentiles, the `RESULT` line a child process prints, and
//! how the peers' runtimes are set up.

use std::time::{Duration, Instant};

/// CPU time of the whole process (every thread), from `CLOCK_PROCESS_CPUTIME_ID`: exact
/// (scheduler run time), unlike the tick-sampled user/system split of `getrusage`.
pub fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User and system CPU time from `getrusage(who)` (`RUSAGE_SELF`, `RUSAGE_THREAD`).
pub fn rusage(who: libc::c_int) -> (Duration, Duration) {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`, `VmPTE`), 0 if absent.
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Memory mappings of this process (lines of `/proc/self/maps`).
pub fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count()).unwrap_or(0)
}

/// Threads of this process.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// Pins the calling thread (and so every thread it creates afterwards) to `cpus`.
pub fn pin(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("sched_setaffinity({cpus:?}): {}", std::io::Error::last_os_error());
        }
    }
}

/// xorshift64*: a fixed, seeded sequence (the same sleep durations for every peer).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The `p`-th percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The median of a few values.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Prints the line the orchestrator parses: `RESULT key=value ...`.
pub fn emit(metrics: &[(&str, f64)]) {
    let mut line = String::from("RESULT");
    for (key, value) in metrics {
        line.push_str(&format!(" {key}={value}"));
    }
    println!("{line}");
}

/// Per-operation cost of a repeated operation: wall and process CPU nanoseconds per op.
#[derive(Clone, Copy, Debug)]
pub struct PerOp {
    pub wall_ns: f64,
    pub cpu_ns: f64,
    pub ops_per_sample: u64,
}

/// Measures `run(n)`, which performs `n` operations (it may round `n` and returns how many it
/// did): calibrates `n` so that one sample takes about `sample`, warms up, then takes `samples`
/// samples and returns the medians of wall and CPU time per operation.
pub fn measure(mut run: impl FnMut(u64) -> u64, min_n: u64, sample: Duration, samples: usize) -> PerOp {
    let mut n = min_n.max(1);
    loop {
        let start = Instant::now();
        let done = run(n);
        let took = start.elapsed();
        if took >= sample / 8 || n >= 1 << 40 {
            let scaled = (done as f64 * sample.as_secs_f64() / took.as_secs_f64().max(1e-9)) as u64;
            n = scaled.max(min_n).max(1);
            break;
        }
        n = n.saturating_mul(4);
    }
    run(n); // warm-up at full size
    let mut wall = Vec::with_capacity(samples);
    let mut cpu = Vec::with_capacity(samples);
    let mut ops = 0;
    for _ in 0..samples {
        let (w0, c0) = (Instant::now(), process_cpu());
        let done = run(n);
        let (w1, c1) = (Instant::now(), process_cpu());
        ops = done;
        wall.push((w1 - w0).as_nanos() as f64 / done as f64);
        cpu.push((c1 - c0).as_nanos() as f64 / done as f64);
    }
    PerOp { wall_ns: median(&mut wall), cpu_ns: median(&mut cpu), ops_per_sample: ops }
}

/// Emits a `PerOp` as the child's result.
pub fn emit_per_op(per_op: PerOp) {
    emit(&[
        ("cpu_ns", per_op.cpu_ns),
        ("wall_ns", per_op.wall_ns),
        ("ops_per_sample", per_op.ops_per_sample as f64),
    ]);
}

// ---------------------------------------------------------------------------------------------
// The peers' runtimes.

/// A tokio current-thread runtime as `#[tokio::main(flavor = "current_thread")]` builds it.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Runs `f` in a may coroutine (on may's single worker thread) and waits for it, so that the
/// coroutines it spawns go to the worker's local queue, as tasklets go to the thread's queue.
pub fn in_may<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    // SAFETY: may requires that the coroutine does not use thread-local storage that outlives a
    // migration and does not block the worker in a system call; these closures do neither.
    let handle = unsafe { may::coroutine::spawn(f) };
    handle.join().unwrap_or_else(|_| panic!("may coroutine panicked"))
}

/// Memory mappings one may coroutine holds while it lives: its stack `mmap` and the guard page
/// `mprotect` splits off it (measured: the `memory` case's progress lines grow by 2 per
/// coroutine until `mmap` fails).
pub const MAY_MAPPINGS_PER_COROUTINE: usize = 2;

/// Whether `n` may coroutines can live at once under `vm.max_map_count`; the reason if not.
/// May does not survive reaching the limit: its `mmap` fails inside a worker, the coroutine
/// panics and the process then hangs (the panic's backtrace cannot be allocated either: no
/// mapping is left), so a case that would need more fails up front instead.
pub fn may_fits(n: usize) -> Result<(), String> {
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(usize::MAX);
    let now = mappings();
    let needed = n.saturating_mul(MAY_MAPPINGS_PER_COROUTINE);
    // Room for the mappings the run itself makes (heap growth, thread stacks, libraries).
    const MARGIN: usize = 1_000;
    if now.saturating_add(needed).saturating_add(MARGIN) > limit {
        return Err(format!(
            "may cannot hold {n} coroutines at once here: each needs {MAY_MAPPINGS_PER_COROUTINE} memory \
             mappings (its stack and guard page), {now} exist and vm.max_map_count is {limit} (at most \
             about {} coroutines)",
            limit.saturating_sub(now + MARGIN) / MAY_MAPPINGS_PER_COROUTINE
        ));
    }
    Ok(())
}

/// Spawns a may coroutine (from inside a coroutine).
pub fn may_go<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> may::coroutine::JoinHandle<T> {
    // SAFETY: as in `in_may`.
    unsafe { may::coroutine::spawn(f) }
}
