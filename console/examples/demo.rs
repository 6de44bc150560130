//! A console over a small constellation: two scheduler threads with tasklets that wait on
//! channels, sockets, timers and joins, one thread that stalls now and then, and a pair of
//! tasklets deadlocked on each other's join.
//!
//! ```sh
//! cargo run --release -p tasklets-console --example demo             # http://127.0.0.1:6680/
//! cargo run --release -p tasklets-console --example demo -- 127.0.0.1:0 --for 30
//! ```
//!
//! Prints the console's URL on the first line, then runs until killed (or for `--for SECS`).

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;
use std::time::Duration;

use tasklets::{Channel, Tasklet};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:6680".to_owned();
    let mut run_for = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--for" => run_for = args.next().and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs),
            other => addr = other.to_owned(),
        }
    }
    let console = tasklets_console::Builder::new()
        .stall_threshold(Duration::from_millis(100))
        .parked_threshold(Duration::from_secs(5))
        .serve(addr.as_str())
        .unwrap_or_else(|err| panic!("cannot serve the console on {addr}: {err}"));
    println!("{}", console.url());
    std::thread::Builder::new().name("pipeline".into()).spawn(pipeline).unwrap();
    std::thread::Builder::new().name("stalls".into()).spawn(stalls).unwrap();
    match run_for {
        Some(d) => std::thread::sleep(d),
        None => loop {
            std::thread::park();
        },
    }
}

/// A producer, three workers and a sink on channels; a reader parked on a socket; a sleeper;
/// a tasklet with a hostile name; two tasklets that join each other.
fn pipeline() {
    let jobs = Channel::<u64>::new();
    let results = Channel::<u64>::new();
    for w in 0..3 {
        let (jobs, results) = (jobs.clone(), results.clone());
        tasklets::Builder::new()
            .name(format!("worker {w}"))
            .spawn(move || {
                for n in &jobs {
                    tasklets::time::sleep(Duration::from_millis(20 + 15 * w));
                    results.send(n * n).unwrap();
                }
            })
            .unwrap();
    }
    tasklets::Builder::new()
        .name("producer")
        .spawn(move || {
            for n in 0.. {
                jobs.send(n).unwrap();
            }
        })
        .unwrap();
    tasklets::Builder::new()
        .name("sink")
        .spawn(move || {
            let mut total = 0u64;
            for r in &results {
                total = total.wrapping_add(r);
                tasklets::time::sleep(Duration::from_millis(5));
            }
            total
        })
        .unwrap();
    let (a, b) = tasklets::net::unix::UnixStream::pair().unwrap();
    tasklets::Builder::new()
        .name("socket reader")
        .spawn(move || {
            let _keep = b;
            let mut buf = [0; 16];
            (&a).read(&mut buf).ok()
        })
        .unwrap();
    tasklets::Builder::new()
        .name("<script>alert(1)</script>")
        .spawn(|| tasklets::time::sleep(Duration::from_secs(3600)))
        .unwrap();
    // Two tasklets that join each other: a deadlock that main does not see.
    let slot: Rc<RefCell<Option<Tasklet<()>>>> = Rc::default();
    let first = {
        let slot = slot.clone();
        tasklets::Builder::new()
            .name("joins second")
            .bind(move || {
                let second = slot.borrow_mut().take().expect("set before it runs");
                let _ = second.join();
            })
            .unwrap()
    };
    let second = tasklets::Builder::new().name("joins first").spawn({
        let first = first.clone();
        move || drop(first.join())
    });
    *slot.borrow_mut() = Some(second.unwrap());
    first.insert().unwrap();
    tasklets::run();
}

/// A thread whose "cruncher" computes for 1.5 s without yielding every 4 s.
fn stalls() {
    tasklets::Builder::new()
        .name("cruncher")
        .spawn(|| loop {
            tasklets::time::sleep(Duration::from_millis(2500));
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(1500) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
        })
        .unwrap();
    tasklets::run();
}
