//! Sleeping that parks the tasklet instead of the thread: drop-in replacements for
//! `std::thread::sleep`.
//!
//! Inside a tasklet, [`sleep`] arms a timer on the thread's scheduler and blocks the tasklet;
//! the other tasklets keep running, and when none is runnable the thread waits for the first
//! deadline. In the main tasklet it does the same (the others run meanwhile). On a thread that
//! never used the runtime it is `std::thread::sleep`. Porting is a `use` line:
//!
//! ```
//! use tasklets::time::sleep; // was: use std::thread::sleep;
//! use std::time::{Duration, Instant};
//!
//! let start = Instant::now();
//! for _ in 0..1000 {
//!     tasklets::spawn(|| sleep(Duration::from_millis(50)));
//! }
//! tasklets::run(); // returns once all have slept: together, not one after another
//! assert!(start.elapsed() < Duration::from_secs(5));
//! ```

use std::time::{Duration, Instant};

use crate::scheduler::{existing_scheduler, scheduler, BlockedOn, State, Wake};
use crate::timer::Alarm;

/// Puts the current tasklet to sleep for at least `dur` (as `std::thread::sleep`), letting the
/// other tasklets of the thread run meanwhile.
///
/// A zero duration returns at once without switching (use [`schedule`](crate::schedule) to
/// give up the CPU). A duration too long to represent as a deadline sleeps forever, as far as
/// the program can tell.
pub fn sleep(dur: Duration) {
    if dur.is_zero() {
        return;
    }
    match Instant::now().checked_add(dur) {
        Some(deadline) => sleep_until(deadline),
        None => sleep_until(far_future()),
    }
}

/// Puts the current tasklet to sleep until `deadline` (returns at once if it has passed).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// let deadline = Instant::now() + Duration::from_millis(20);
/// let t = tasklets::spawn(move || {
///     tasklets::time::sleep_until(deadline);
///     Instant::now() >= deadline
/// });
/// assert!(t.join().unwrap());
/// ```
pub fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    let Some(sched) = existing_scheduler() else {
        // A thread that never used the runtime: behave exactly like std.
        std::thread::sleep(deadline - now);
        return;
    };
    debug_assert!(std::ptr::eq(sched, scheduler()));
    let me = sched.current_rc();
    let alarm = Alarm::arm(&me, deadline);
    // Only the timer wakes a sleeper (a blocked tasklet cannot be inserted); `Never` only comes
    // from a second kill while unwinding, when giving up is right.
    while !alarm.fired() {
        me.set_state(State::Blocked(BlockedOn::Sleep));
        if sched.park() == Wake::Never {
            break;
        }
    }
}

/// A deadline nobody will live to see (~30 years), for durations `Instant` cannot represent.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
