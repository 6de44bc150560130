//! N tasks each sleep a random 1–100 ms (the same seeded durations for every peer): the
//! process's CPU time from the first spawn until the last task finished, and how late each
//! wake-up was (time asleep minus the duration asked for).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::common::{emit, percentile, process_cpu, rusage, Rng};
use crate::micro::{in_may, may_go, tokio_runtime};

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

pub fn tasklet(n: usize) {
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

pub fn may(n: usize) {
    in_may(|| may::coroutine::sleep(Duration::from_micros(100)));
    rounds(n, |durations| {
        in_may(move || {
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
    });
}

pub fn tokio(n: usize) {
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
