//! Memory per parked task: N tasks each blocked waiting for a wake-up that comes only after
//! the measurement. One child process per (peer, N); the child prints progress lines so that
//! the parent can tell where a peer that cannot hold N tasks gave up, and how.

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::common::{emit, mappings, status_kib};
use crate::micro::{in_may, may_go, tokio_runtime};

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

pub fn tasklet(n: usize) {
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

pub fn may(n: usize) {
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

pub fn tokio(n: usize) {
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

/// Prints a may failure's last progress for the parent (used when the child dies by a signal).
pub fn last_progress(stderr: &str) -> Option<(usize, usize)> {
    let line = stderr.lines().rev().find(|l| l.starts_with("PROGRESS") || l.starts_with("FAILED"))?;
    let field = |name: &str| -> Option<usize> {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    Some((field("spawned")?, field("maps")?))
}
