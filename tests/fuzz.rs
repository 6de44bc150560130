//! Randomised programs of tasklets doing channel operations, schedules, kills, closes and
//! timeouts, checked against invariants rather than an exact trace:
//!
//! - every value is dropped exactly once (the wait nodes on parked stacks neither leak nor
//!   duplicate a value), and none is received twice;
//! - a value whose send failed came back to its sender; a value reported sent was received, or
//!   its receiver was killed after the rendezvous and dropped it while unwinding (a kill may
//!   land between the exchange and the moment the killed side runs again, on either side);
//! - each channel's `balance` equals the number of tasklets blocked sending on it minus those
//!   blocked receiving, at every quiescent point;
//! - after killing the survivors, every balance is 0 and every tasklet has finished.
//!
//! Deterministic: each seed gives the same program and the same interleaving on every run.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use tasklets::{Channel, Preference, Tasklet};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A value that records its drops, and whether each happened during an unwind (a kill).
struct Value {
    id: u64,
    drops: Rc<RefCell<Vec<(u64, bool)>>>,
}

impl Drop for Value {
    fn drop(&mut self) {
        self.drops.borrow_mut().push((self.id, std::thread::panicking()));
    }
}

/// Marks the tasklet as blocked on a channel for the duration of an operation; the mark is
/// cleared on return and on unwind (kill).
struct Mark<'a> {
    counts: &'a Cell<isize>,
    delta: isize,
}

impl<'a> Mark<'a> {
    fn new(counts: &'a Cell<isize>, delta: isize) -> Mark<'a> {
        counts.set(counts.get() + delta);
        Mark { counts, delta }
    }
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        self.counts.set(self.counts.get() - self.delta);
    }
}

struct World {
    channels: Vec<Channel<Value>>,
    /// Per channel: (tasklets inside send) - (tasklets inside receive): an upper view of the
    /// balance that equals it whenever no operation is mid-flight.
    inside: Vec<Cell<isize>>,
    drops: Rc<RefCell<Vec<(u64, bool)>>>,
    created: Cell<u64>,
    sent: RefCell<Vec<u64>>,
    received: RefCell<Vec<u64>>,
    tasklets: RefCell<Vec<Tasklet<()>>>,
}

impl World {
    fn value(&self) -> Value {
        let id = self.created.get();
        self.created.set(id + 1);
        Value { id, drops: self.drops.clone() }
    }
}

fn step(world: &World, rng: &mut Rng) {
    let c = rng.below(world.channels.len() as u64) as usize;
    let ch = &world.channels[c];
    match rng.below(19) {
        0..=3 => {
            let v = world.value();
            let id = v.id;
            let _mark = Mark::new(&world.inside[c], 1);
            match ch.send(v) {
                Ok(()) => world.sent.borrow_mut().push(id),
                Err(err) => assert_eq!(err.into_inner().id, id, "a failed send gives its own value back"),
            }
        }
        4..=7 => {
            let _mark = Mark::new(&world.inside[c], -1);
            if let Ok(v) = ch.receive() {
                world.received.borrow_mut().push(v.id);
            }
        }
        8 => {
            let v = world.value();
            let id = v.id;
            match ch.try_send(v) {
                Ok(()) => world.sent.borrow_mut().push(id),
                Err(err) => assert_eq!(err.into_inner().id, id),
            }
        }
        9 => {
            if let Ok(v) = ch.try_receive() {
                world.received.borrow_mut().push(v.id);
            }
        }
        10 => tasklets::schedule(),
        11 => {
            // Kill a random tasklet: finished, blocked, paused, runnable, or itself.
            if let Some(victim) = pick(world, rng) {
                victim.kill();
            }
        }
        12 => {
            if rng.below(4) == 0 {
                ch.close();
            } else {
                ch.open();
            }
            ch.set_preference(match rng.below(3) {
                0 => Preference::Receiver,
                1 => Preference::Neither,
                _ => Preference::Sender,
            });
        }
        14 => {
            // Join a random tasklet (itself, a finished one, a blocked one, or a cycle: the
            // join then never returns and the tasklet is killed at the end).
            let target = pick(world, rng);
            if let Some(target) = target {
                let _ = target.join();
            }
        }
        15 => tasklets::time::sleep(Duration::from_micros(rng.below(200))),
        16 => {
            if let Some(target) = pick(world, rng) {
                let _ = target.remove();
            }
        }
        17 => {
            if let Some(target) = pick(world, rng) {
                let _ = target.insert();
                if rng.below(2) == 0 {
                    let _ = target.run();
                }
            }
        }
        _ => {
            if rng.below(2) == 0 {
                let _mark = Mark::new(&world.inside[c], -1);
                if let Ok(v) = ch.receive_timeout(Duration::from_micros(rng.below(300))) {
                    world.received.borrow_mut().push(v.id);
                }
            } else {
                let v = world.value();
                let id = v.id;
                let _mark = Mark::new(&world.inside[c], 1);
                match ch.send_timeout(v, Duration::from_micros(rng.below(300))) {
                    Ok(()) => world.sent.borrow_mut().push(id),
                    Err(err) => assert_eq!(err.into_inner().id, id),
                }
            }
        }
    }
}

/// A random tasklet of the program, if any exists yet.
fn pick(world: &World, rng: &mut Rng) -> Option<Tasklet<()>> {
    let ts = world.tasklets.borrow();
    (!ts.is_empty()).then(|| ts[rng.below(ts.len() as u64) as usize].clone())
}

fn check_balances(world: &World) {
    for (ch, inside) in world.channels.iter().zip(&world.inside) {
        assert_eq!(ch.balance(), inside.get(), "balance equals the tasklets blocked on the channel");
    }
}

fn run_program(seed: u64) {
    let world = Rc::new(World {
        channels: (0..3).map(|_| Channel::new()).collect(),
        inside: (0..3).map(|_| Cell::new(0)).collect(),
        drops: Rc::default(),
        created: Cell::new(0),
        sent: RefCell::default(),
        received: RefCell::default(),
        tasklets: RefCell::default(),
    });
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for t in 0..24 {
        let world2 = world.clone();
        let mut trng = Rng(rng.next() | 1);
        let steps = 5 + rng.below(40);
        let handle = tasklets::Builder::new()
            .name(format!("t{t}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                for _ in 0..steps {
                    step(&world2, &mut trng);
                }
            })
            .unwrap();
        world.tasklets.borrow_mut().push(handle);
    }
    tasklets::run();
    // Tasklets paused by `remove()` go back to the run queue until none is paused (their
    // steps are finite, so this ends). A paused tasklet may be in the middle of a completed
    // channel operation, so balances are checked only once none is.
    loop {
        let paused: Vec<Tasklet<()>> =
            world.tasklets.borrow().iter().filter(|t| t.is_paused()).cloned().collect();
        if paused.is_empty() {
            break;
        }
        for t in paused {
            t.insert().unwrap();
        }
        tasklets::run();
    }
    check_balances(&world);

    // Drain what blocked senders still hold (a receive may switch to a sender with preference
    // `Sender`, which may then pause others again, so not every listed sender is necessarily
    // still blocked: stop at the first refusal), then kill the survivors.
    for ch in &world.channels {
        ch.open();
        while let Ok(v) = ch.try_receive() {
            world.received.borrow_mut().push(v.id);
        }
    }
    tasklets::run();
    let survivors: Vec<Tasklet<()>> =
        world.tasklets.borrow().iter().filter(|t| t.is_alive()).cloned().collect();
    for t in &survivors {
        t.kill();
    }
    tasklets::run();
    for t in world.tasklets.borrow().iter() {
        assert!(!t.is_alive(), "every tasklet has finished");
    }
    check_balances(&world);
    for ch in &world.channels {
        assert_eq!(ch.balance(), 0);
    }

    let received = world.received.borrow();
    let unique: HashSet<u64> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "no value is received twice");
    let drops = world.drops.borrow();
    let dropped: HashSet<u64> = drops.iter().map(|&(id, _)| id).collect();
    assert_eq!(dropped.len(), drops.len(), "no value is dropped twice");
    assert_eq!(drops.len() as u64, world.created.get(), "every value is dropped exactly once");
    let dropped_unwinding: HashSet<u64> =
        drops.iter().filter(|&&(_, unwinding)| unwinding).map(|&(id, _)| id).collect();
    for id in world.sent.borrow().iter() {
        assert!(
            unique.contains(id) || dropped_unwinding.contains(id),
            "value {id} was reported sent, but nobody received it and no killed receiver dropped it"
        );
    }
}

#[test]
fn random_programs_keep_the_channel_invariants() {
    // FUZZ_PROGRAMS=100000 runs more programs locally; CI runs the default.
    let programs: u64 = std::env::var("FUZZ_PROGRAMS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let only: Option<u64> = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok());
    for seed in 0..programs {
        if only.is_some_and(|o| o != seed) {
            continue;
        }
        if std::env::var_os("FUZZ_VERBOSE").is_some() {
            eprintln!("seed {seed}");
        }
        run_program(seed);
    }
    println!("{programs} random programs of 24 tasklets checked");
}

#[test]
fn the_same_seed_gives_the_same_interleaving() {
    let trace = |seed: u64| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let ch = Channel::<u64>::new();
        let mut rng = Rng(seed | 1);
        for t in 0..10u64 {
            let (log, ch) = (log.clone(), ch.clone());
            let ops: Vec<u64> = (0..20).map(|_| rng.below(3)).collect();
            tasklets::spawn(move || {
                for op in ops {
                    match op {
                        0 => {
                            let _ = ch.send(t);
                        }
                        1 => {
                            if let Ok(v) = ch.receive() {
                                log.borrow_mut().push((t, v));
                            }
                        }
                        _ => tasklets::schedule(),
                    }
                }
            });
        }
        tasklets::run();
        let out = log.borrow().clone();
        out
    };
    for seed in 1..20 {
        assert_eq!(trace(seed), trace(seed));
    }
}
