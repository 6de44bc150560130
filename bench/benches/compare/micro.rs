//! Hot-path operations, one per child process: a switch, a channel round trip, and
//! spawn + run + finish, for tasklet and each peer. Every function performs `n` operations (or
//! the nearest whole number of rounds or batches) and returns how many it did.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tasklets::Channel;

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

/// Spawns a may coroutine (from inside a coroutine).
pub fn may_go<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> may::coroutine::JoinHandle<T> {
    // SAFETY: as in `in_may`.
    unsafe { may::coroutine::spawn(f) }
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
