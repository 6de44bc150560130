//! Core micro-benchmarks of the tasklet runtime, all on the calling thread's scheduler.
//!
//! Run with `cargo bench -p tasklets-bench --bench core`; results and the machine they were
//! measured on are in `docs/benchmarks.md`. Every benchmark reports the time of ONE operation
//! (one switch, one round trip, one tasklet, one message): the closures use `iter_custom` and
//! scale the measured time to the number of iterations criterion asked for, so the tasklets that
//! do the work are created once per sample, not once per operation.
//!
//! - `switch/two_tasklets`: two tasklets alternate with `schedule()`; time per switch from one
//!   tasklet to the other (one stack switch, one run-queue push and pop).
//! - `switch/main_and_tasklet`: the main tasklet and one tasklet alternate with `schedule()`;
//!   the same one stack switch, but the two sides return into different code after it, which
//!   the CPU's return-stack predictor gets wrong once per switch.
//! - `channel_round_trip/{receiver,neither}`: ping-pong between two tasklets over two channels;
//!   time per round trip (a send and a receive each way), with the channels' preference.
//! - `spawn_run_finish/{1,100,10000}`: spawn a batch of tasklets running an empty closure, then
//!   `run()` them to completion; time per tasklet. Stacks come from the pool, which warms up
//!   during criterion's warm-up. (A closure that returns a value, not `()`, also pays for
//!   boxing it for `join`.)
//! - `channel_send_to_blocked_receiver/{receiver,neither,sender}`: a tasklet sends a stream of
//!   values to a tasklet that receives them in a loop; time per message, by preference.
//! - `accounting_on/*`: `switch/*` and `channel_round_trip/receiver` again with per-tasklet CPU
//!   accounting on (`tasklets::set_accounting(true)`), which reads the TSC once per switch:
//!   every other benchmark runs with the default, accounting off.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tasklets::{Channel, Preference};

/// Scales `elapsed`, measured for `done` operations, to `wanted` operations.
fn scale(elapsed: Duration, done: u64, wanted: u64) -> Duration {
    if done == wanted {
        elapsed
    } else {
        Duration::from_secs_f64(elapsed.as_secs_f64() * wanted as f64 / done as f64)
    }
}

/// `iters` switches between two tasklets calling `schedule()`.
fn two_tasklets(iters: u64) -> Duration {
    // Each tasklet calls schedule() n times: 2n switches between them.
    let n = iters.div_ceil(2).max(1);
    for _ in 0..2 {
        tasklets::spawn(move || {
            for _ in 0..n {
                tasklets::schedule();
            }
        });
    }
    let start = Instant::now();
    tasklets::run();
    scale(start.elapsed(), 2 * n, iters)
}

/// `iters` switches between the main tasklet and a tasklet, both calling `schedule()`.
fn main_and_tasklet(iters: u64) -> Duration {
    // main -> tasklet -> main is two switches; n rounds.
    let n = iters.div_ceil(2).max(1);
    let t = tasklets::spawn(move || {
        for _ in 0..n {
            tasklets::schedule();
        }
    });
    let start = Instant::now();
    for _ in 0..n {
        tasklets::schedule();
    }
    let elapsed = start.elapsed();
    tasklets::run();
    assert!(!t.is_alive());
    scale(elapsed, 2 * n, iters)
}

fn switch(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("two_tasklets", |b| b.iter_custom(two_tasklets));
    group.bench_function("main_and_tasklet", |b| b.iter_custom(main_and_tasklet));
    group.finish();
}

/// `n` round trips between two tasklets over `ping` and `pong` channels with `preference`.
fn round_trips(n: u64, preference: Preference) -> Duration {
    let ping = Channel::<u64>::new();
    let pong = Channel::<u64>::new();
    ping.set_preference(preference);
    pong.set_preference(preference);
    let (rx, tx) = (ping.clone(), pong.clone());
    // The echo tasklet runs first and blocks receiving; it ends when `ping` closes.
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
    let start = Instant::now();
    tasklets::run();
    start.elapsed()
}

fn channel_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("channel_round_trip");
    group.throughput(Throughput::Elements(1));
    for (name, preference) in [("receiver", Preference::Receiver), ("neither", Preference::Neither)] {
        group.bench_function(name, |b| b.iter_custom(|iters| round_trips(iters.max(1), preference)));
    }
    group.finish();
}

/// With per-tasklet CPU accounting (the thread's default, off, is restored for every iteration).
fn accounting_on(c: &mut Criterion) {
    fn on<R>(f: impl FnOnce() -> R) -> R {
        tasklets::set_accounting(true);
        let r = f();
        tasklets::set_accounting(false);
        r
    }
    let mut group = c.benchmark_group("accounting_on");
    group.throughput(Throughput::Elements(1));
    group.bench_function("switch/two_tasklets", |b| b.iter_custom(|iters| on(|| two_tasklets(iters))));
    group
        .bench_function("switch/main_and_tasklet", |b| b.iter_custom(|iters| on(|| main_and_tasklet(iters))));
    group.bench_function("channel_round_trip/receiver", |b| {
        b.iter_custom(|iters| on(|| round_trips(iters.max(1), Preference::Receiver)))
    });
    group.finish();
}

fn spawn_run_finish(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_run_finish");
    group.throughput(Throughput::Elements(1));
    for batch in [1u64, 100, 10_000] {
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            // One iteration = one tasklet; `iters` is rounded up to whole batches.
            b.iter_custom(|iters| {
                let batches = iters.div_ceil(batch).max(1);
                let start = Instant::now();
                for _ in 0..batches {
                    for _ in 0..batch {
                        tasklets::spawn(|| {});
                    }
                    tasklets::run();
                }
                scale(start.elapsed(), batches * batch, iters)
            })
        });
    }
    group.finish();
}

fn channel_send_to_blocked_receiver(c: &mut Criterion) {
    let mut group = c.benchmark_group("channel_send_to_blocked_receiver");
    group.throughput(Throughput::Elements(1));
    let preferences = [
        ("receiver", Preference::Receiver),
        ("neither", Preference::Neither),
        ("sender", Preference::Sender),
    ];
    for (name, preference) in preferences {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let n = iters.max(1);
                let ch = Channel::<u64>::new();
                ch.set_preference(preference);
                let rx = ch.clone();
                // Spawned first: it is blocked in receive when the first value comes.
                tasklets::spawn(move || {
                    for v in &rx {
                        black_box(v);
                    }
                });
                tasklets::spawn(move || {
                    for i in 0..n {
                        ch.send(i).unwrap();
                    }
                    ch.close();
                });
                let start = Instant::now();
                tasklets::run();
                scale(start.elapsed(), n, iters)
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    // A noisy shared VM: more samples and a longer measurement than criterion's defaults.
    Criterion::default()
        .sample_size(200)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(10))
        .noise_threshold(0.05)
}

criterion_group! {
    name = benches;
    config = config();
    targets = switch, channel_round_trip, accounting_on, spawn_run_finish, channel_send_to_blocked_receiver
}
criterion_main!(benches);
