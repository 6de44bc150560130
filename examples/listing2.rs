//! Listing 2 of the Linux Magazine article "Programming with Stackless Python": two tasklets
//! that print, `schedule()`, and print again, started by `run()`. The output shows the round
//! robin: both "before" lines come first, then both "after" lines.
//!
//! Run it with `cargo run --release --example listing2`.

fn f(c: &str) {
    println!("{c} before");
    tasklets::schedule();
    println!("{c} after");
}

fn main() {
    tasklets::spawn(|| f("a"));
    tasklets::spawn(|| f("b"));
    tasklets::run(); // returns when no tasklet is runnable any more
}
