//! Priorities: the order across levels, the starvation bound, Stackless order within a level,
//! and what priorities do not change (direct switches, the default).

use tasklets::{Builder, Channel, Priority, STARVATION_LIMIT};

mod common;
use common::Log;

fn spawn_logger(log: &Log, name: &'static str, priority: Priority) -> tasklets::Tasklet<()> {
    let log = log.clone();
    Builder::new().name(name).priority(priority).spawn(move || log.push(name)).unwrap()
}

#[test]
fn higher_levels_run_first_and_each_level_keeps_fifo_order() {
    let log = Log::new();
    spawn_logger(&log, "l1", Priority::Low);
    spawn_logger(&log, "n1", Priority::Normal);
    spawn_logger(&log, "h1", Priority::High);
    spawn_logger(&log, "n2", Priority::Normal);
    spawn_logger(&log, "h2", Priority::High);
    spawn_logger(&log, "l2", Priority::Low);
    tasklets::run();
    assert_eq!(log.take(), ["h1", "h2", "n1", "n2", "l1", "l2"]);
}

#[test]
fn the_default_is_normal_and_plain_round_robin() {
    let log = Log::new();
    let tasklets: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let log = log.clone();
            tasklets::spawn(move || {
                for round in 0..3 {
                    log.push(format!("{name}{round}"));
                    tasklets::schedule();
                }
            })
        })
        .collect();
    assert!(tasklets.iter().all(|t| t.priority() == Priority::Normal));
    assert_eq!(tasklets::current().priority(), Priority::Normal);
    tasklets::run();
    assert_eq!(log.take(), ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]);
}

#[test]
fn a_busy_high_tasklet_cannot_starve_normal_or_low_ones() {
    let log = Log::new();
    let busy = log.clone();
    Builder::new()
        .priority(Priority::High)
        .spawn(move || {
            for _ in 0..40 {
                busy.push("H");
                tasklets::schedule();
            }
        })
        .unwrap();
    let normal = log.clone();
    tasklets::spawn(move || {
        normal.push("n");
        tasklets::schedule();
        normal.push("n");
    });
    spawn_logger(&log, "l", Priority::Low);
    tasklets::run();
    let order: String = log.take().concat();
    let limit = STARVATION_LIMIT as usize;
    // `n` waits STARVATION_LIMIT picks of H, then `l` (passed over once more) runs; `n`,
    // passed over for `l` too, is due again one pick earlier.
    let expected =
        format!("{}nl{}n{}", "H".repeat(limit), "H".repeat(limit - 1), "H".repeat(40 - 2 * limit + 1));
    assert_eq!(order, expected);
}

#[test]
fn set_priority_moves_a_queued_tasklet_and_the_same_priority_changes_nothing() {
    let log = Log::new();
    spawn_logger(&log, "a", Priority::Normal);
    let b = spawn_logger(&log, "b", Priority::Normal);
    let c = spawn_logger(&log, "c", Priority::Normal);
    c.set_priority(Priority::High);
    b.set_priority(Priority::Normal); // already normal: stays second among the normal ones
    assert_eq!(c.priority(), Priority::High);
    tasklets::run();
    assert_eq!(log.take(), ["c", "a", "b"]);

    // Lowering a queued tasklet moves it behind the normal ones.
    let x = spawn_logger(&log, "x", Priority::Normal);
    spawn_logger(&log, "y", Priority::Normal);
    x.set_priority(Priority::Low);
    tasklets::run();
    assert_eq!(log.take(), ["y", "x"]);
}

#[test]
fn a_channel_partner_runs_when_stackless_says_so_whatever_its_priority() {
    let log = Log::new();
    let ch = Channel::new();
    let (rx, rlog) = (ch.clone(), log.clone());
    let receiver = Builder::new()
        .priority(Priority::Low)
        .spawn(move || {
            rlog.push("r-start");
            let v: u32 = rx.receive().unwrap();
            rlog.push(format!("r-got {v}"));
        })
        .unwrap();
    receiver.run().unwrap(); // a direct switch: runs it now, low or not; it blocks in receive
    spawn_logger(&log, "H", Priority::High);
    ch.send(7).unwrap(); // the receiver is preferred: it runs at once, before the high tasklet
    tasklets::run();
    assert_eq!(log.take(), ["r-start", "r-got 7", "H"]);
}

#[test]
fn the_snapshot_shows_priorities() {
    let ch = Channel::<u8>::new();
    let rx = ch.clone();
    Builder::new().name("background").priority(Priority::Low).spawn(move || rx.receive()).unwrap();
    tasklets::run();
    let snap = tasklets::snapshot();
    let info = snap.tasklets.iter().find(|t| t.name.as_deref() == Some("background")).unwrap();
    assert_eq!(info.priority, Priority::Low);
    let table = snap.to_string();
    assert!(table.contains("'background' [low]"), "{table}");
    assert!(!table.contains("[normal]"), "normal is not shown: {table}");
}
