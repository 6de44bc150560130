//! Listing 3 of the Linux Magazine article "Programming with Stackless Python": sorting by
//! scheduling. Each of 20 tasklets counts its number `n` down with `n` calls to `schedule()`,
//! then sends `n` on a channel. The round robin makes the tasklet with the smallest number send
//! first, so the senders end up blocked on the channel in sorted order, and the main tasklet
//! collects them with `while ch.balance() != 0 { ch.receive() }`.
//!
//! The numbers are shuffled with a small xorshift generator. Pass `--seed N` for a reproducible
//! shuffle; without it the seed comes from the clock (and is printed on stderr).
//!
//! Run it with `cargo run --release --example sort -- --seed 42`.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use tasklets::Channel;

/// xorshift64* (Vigna): small, fast and good enough to shuffle a demo's input.
struct XorShift64Star {
    state: u64,
}

impl XorShift64Star {
    fn new(seed: u64) -> Self {
        // SplitMix64 scrambles the seed so that nearby seeds give unrelated sequences and the
        // state is never 0 (the one state xorshift cannot leave).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift64Star { state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z } }
    }

    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (Lemire's multiply-shift, no division).
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Fisher-Yates, as Python's `random.shuffle`.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The seed given with `--seed N` (or `--seed=N`), `None` without the option.
fn parse_seed(args: impl IntoIterator<Item = String>) -> Result<Option<u64>, String> {
    let mut args = args.into_iter();
    let mut seed = None;
    while let Some(arg) = args.next() {
        let value = if arg == "--seed" {
            args.next().ok_or("--seed needs a value")?
        } else if let Some(value) = arg.strip_prefix("--seed=") {
            value.to_string()
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        seed = Some(value.parse().map_err(|_| format!("--seed needs a number, got {value:?}"))?);
    }
    Ok(seed)
}

fn counter(n: u32, ch: Channel<u32>) {
    for _ in 0..n {
        tasklets::schedule();
    }
    ch.send(n).expect("main receives every number");
}

fn main() -> ExitCode {
    let seed = match parse_seed(std::env::args().skip(1)) {
        Ok(Some(seed)) => seed,
        Ok(None) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let seed = now.as_nanos() as u64;
            eprintln!("seed {seed} (repeat with --seed {seed})");
            seed
        }
        Err(message) => {
            eprintln!("sort: {message}\nusage: sort [--seed N]");
            return ExitCode::from(2);
        }
    };

    let mut numbers: Vec<u32> = (0..20).collect();
    XorShift64Star::new(seed).shuffle(&mut numbers);
    println!("{numbers:?}");
    println!("Sorting...");

    let ch = Channel::new();
    for &n in &numbers {
        let ch = ch.clone();
        tasklets::spawn(move || counter(n, ch));
    }
    tasklets::run(); // every counter ends up blocked in send, smallest number first
    let mut rlist = Vec::new();
    while ch.balance() != 0 {
        rlist.push(ch.receive().expect("a sender is waiting"));
    }
    println!("{rlist:?}");
    ExitCode::SUCCESS
}
