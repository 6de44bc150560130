//! Listing 1 of the Linux Magazine article "Programming with Stackless Python": a tasklet that
//! prints `1`, gives up the CPU with `schedule()`, then prints `2`. The main tasklet drives it
//! with two `schedule()` calls, as the interactive session of the article does with
//! `stackless.schedule(None)`.
//!
//! Run it with `cargo run --release --example listing1`.

fn f() {
    println!("1");
    tasklets::schedule();
    println!("2");
}

fn main() {
    let f_task = tasklets::spawn(f);
    tasklets::schedule(); // main goes to the end of the run queue: f prints 1 and schedules back
    tasklets::schedule(); // f resumes, prints 2 and finishes
    assert!(!f_task.is_alive());
}
