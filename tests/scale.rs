//! Scale tests: 100,000 tasklets run in batches with their stacks reused, and 100,000 tasklets
//! parked at once on one channel, as receivers and as senders.
//!
//! Each test prints what it did (run with `--nocapture` to see it). The memory check runs in a
//! child process of this test binary, so the other tests running in parallel threads of this
//! process cannot disturb its numbers.

use std::time::Instant;

use tasklets::{Channel, Tasklet};

mod common;

const TOTAL: usize = 100_000;
const BATCHES: usize = 10;
const BATCH: usize = TOTAL / BATCHES;

/// A field of /proc/self/status, in KiB (`VmRSS`, `VmSize`).
fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().expect("a number of kB")
}

/// Some work that uses a few hundred bytes of the tasklet's stack.
fn work(i: usize) -> u64 {
    let mut buf = [0u8; 512];
    for (k, b) in buf.iter_mut().enumerate() {
        *b = (i + k) as u8;
    }
    std::hint::black_box(&mut buf);
    buf.iter().map(|&b| u64::from(b)).sum::<u64>() + i as u64
}

/// Runs one batch: `BATCH` tasklets that are all alive at the same time (each yields once), then
/// checks every result.
fn run_batch(batch: usize) {
    let handles: Vec<Tasklet<u64>> = (0..BATCH)
        .map(|k| {
            let i = batch * BATCH + k;
            tasklets::spawn(move || {
                let first = work(i);
                tasklets::schedule(); // every tasklet of the batch is live at this point
                first + 1
            })
        })
        .collect();
    assert_eq!(tasklets::runcount(), BATCH + 1);
    tasklets::run();
    assert_eq!(tasklets::runcount(), 1);
    for (k, t) in handles.into_iter().enumerate() {
        let i = batch * BATCH + k;
        assert!(!t.is_alive());
        assert_eq!(t.join().unwrap(), work(i) + 1, "tasklet {i}");
    }
}

const CHILD_ENV: &str = "TASKLET_SCALE_RSS_CHILD";

#[test]
fn hundred_thousand_tasklets_in_batches_reuse_stacks() {
    if std::env::var_os(CHILD_ENV).is_some() {
        batches_in_this_process();
        return;
    }
    // Measure in a child process that runs only this test, so that the tests running in parallel
    // here do not move the numbers.
    let exe = std::env::current_exe().expect("the test binary");
    let output = common::target_command(exe)
        .args(["--exact", "hundred_thousand_tasklets_in_batches_reuse_stacks", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("spawn the child test process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("child process output:\n{stdout}");
    assert!(output.status.success(), "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(stdout.contains("1 passed"), "the child ran the test: {stdout}");
    assert!(stdout.contains("batches done"), "the child did the work: {stdout}");
}

fn batches_in_this_process() {
    let start = Instant::now();
    let mut rss = Vec::new();
    let mut vm = Vec::new();
    for batch in 0..BATCHES {
        let t = Instant::now();
        run_batch(batch);
        rss.push(status_kib("VmRSS"));
        vm.push(status_kib("VmSize"));
        println!(
            "batch {batch}: {BATCH} tasklets in {:?}, VmRSS {} KiB, VmSize {} KiB",
            t.elapsed(),
            rss[batch],
            vm[batch]
        );
    }
    println!("{BATCHES} batches done: {TOTAL} tasklets in {:?}", start.elapsed());

    // From batch 2 on, every batch finds the stacks of the previous one in the pool. Were they
    // not reused, each batch would map BATCH new stacks of 256 KiB of address space (2.5 GiB per
    // batch, 20 GiB over batches 2..10) and keep a touched page or more of each.
    let vm_growth = vm[BATCHES - 1].saturating_sub(vm[1]);
    let rss_growth = rss[BATCHES - 1].saturating_sub(rss[1]);
    println!("growth from batch 2 to batch {BATCHES}: VmSize {vm_growth} KiB, VmRSS {rss_growth} KiB");
    assert!(vm_growth < 256 * 1024, "address space grew by {vm_growth} KiB: stacks are not reused");
    assert!(rss_growth < 128 * 1024, "resident memory grew by {rss_growth} KiB: stacks are not reused");
}

#[test]
fn hundred_thousand_receivers_parked_on_one_channel() {
    let start = Instant::now();
    let ch = Channel::<usize>::new();
    let receivers: Vec<Tasklet<(usize, usize)>> = (0..TOTAL)
        .map(|k| {
            let ch = ch.clone();
            tasklets::spawn(move || (k, ch.receive().unwrap()))
        })
        .collect();
    let spawned = start.elapsed();
    tasklets::run();
    let parked = start.elapsed();
    assert_eq!(ch.balance(), -(TOTAL as isize));
    assert!(receivers[0].is_blocked() && receivers[TOTAL - 1].is_blocked());
    assert_eq!(tasklets::runcount(), 1);

    for v in 0..TOTAL {
        ch.send(v * 2).unwrap(); // the receiver runs now and finishes
    }
    assert_eq!(ch.balance(), 0);
    let fed = start.elapsed();
    tasklets::run();
    let mut sum = 0;
    for (k, t) in receivers.into_iter().enumerate() {
        assert!(!t.is_alive());
        let (who, v) = t.join().unwrap();
        assert_eq!((who, v), (k, k * 2), "blocked receivers are served in arrival order");
        sum += v;
    }
    assert_eq!(sum, TOTAL * (TOTAL - 1));
    println!(
        "{TOTAL} receivers: spawned in {spawned:?}, all parked (balance -{TOTAL}) at {parked:?}, \
         fed at {fed:?}, joined at {:?}",
        start.elapsed()
    );
}

#[test]
fn hundred_thousand_senders_parked_and_drained_by_main() {
    let start = Instant::now();
    let ch = Channel::<usize>::new();
    let senders: Vec<Tasklet<usize>> = (0..TOTAL)
        .map(|k| {
            let ch = ch.clone();
            tasklets::spawn(move || {
                ch.send(k + 1).unwrap();
                k
            })
        })
        .collect();
    tasklets::run();
    let parked = start.elapsed();
    assert_eq!(ch.balance(), TOTAL as isize);
    assert!(senders.iter().all(Tasklet::is_blocked));

    for k in 0..TOTAL {
        assert_eq!(ch.receive(), Ok(k + 1), "blocked senders are served in arrival order");
    }
    assert_eq!(ch.balance(), 0);
    // The default preference lets the receiver (main) continue: the senders are all queued.
    assert_eq!(tasklets::runcount(), TOTAL + 1);
    let drained = start.elapsed();
    tasklets::run();
    for (k, t) in senders.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), k);
    }
    assert_eq!(tasklets::runcount(), 1);
    println!(
        "{TOTAL} senders: all parked (balance {TOTAL}) at {parked:?}, drained by main at {drained:?}, \
         finished and joined at {:?}",
        start.elapsed()
    );
}

#[test]
fn hundred_thousand_tasklets_alive_in_a_ring() {
    // A token passed around a ring of tasklets, each blocked on its own channel: every tasklet
    // is parked at once, then each wakes the next exactly once.
    let start = Instant::now();
    let chans: Vec<Channel<usize>> = (0..=TOTAL).map(|_| Channel::new()).collect();
    let handles: Vec<Tasklet<()>> = (0..TOTAL)
        .map(|k| {
            let (rx, tx) = (chans[k].clone(), chans[k + 1].clone());
            tasklets::spawn(move || {
                let token = rx.receive().unwrap();
                tx.send(token + 1).unwrap();
            })
        })
        .collect();
    tasklets::run();
    assert!(chans[..TOTAL].iter().all(|c| c.balance() == -1));
    let last = chans[TOTAL].clone();
    let collector = tasklets::spawn(move || last.receive().unwrap());
    chans[0].send(0).unwrap();
    tasklets::run();
    assert_eq!(collector.join().unwrap(), TOTAL);
    assert!(handles.iter().all(|t| !t.is_alive()));
    println!("token passed through a ring of {TOTAL} tasklets in {:?}", start.elapsed());
}
