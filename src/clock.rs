//! The cheap clock behind per-tasklet CPU accounting.
//!
//! Accounting reads the clock once per switch, so the clock must cost next to nothing: on
//! x86_64 it is the time-stamp counter (`rdtsc`, ~10 ns here, against ~24 ns for
//! `Instant::now()` through the vDSO); elsewhere, nanoseconds from `Instant`. Ticks are turned
//! into time with a rate calibrated once per process against `Instant` (the median of five 400 us
//! spins the first time a scheduler is created). The TSC is invariant on every CPU this targets (`constant_tsc`,
//! `nonstop_tsc`), so one rate serves all cores.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Nanoseconds per tick.
static RATE: OnceLock<f64> = OnceLock::new();

/// The current tick count.
#[inline]
pub(crate) fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions; it is available on every x86_64 CPU.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static BASE: OnceLock<Instant> = OnceLock::new();
        BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Calibrates the tick rate (once per process): the median of five 400 us windows. One window
/// inflated under load (the thread preempted between reading `Instant` and the TSC at either
/// end skews that window's rate); the median ignores up to two such windows.
pub(crate) fn calibrate() -> f64 {
    *RATE.get_or_init(|| {
        let mut rates = [0.0f64; 5];
        for rate in &mut rates {
            let (i0, t0) = (Instant::now(), now());
            let mut elapsed;
            loop {
                elapsed = i0.elapsed();
                if elapsed >= Duration::from_micros(400) {
                    break;
                }
                std::hint::spin_loop();
            }
            let ticks = now().wrapping_sub(t0).max(1);
            *rate = elapsed.as_nanos() as f64 / ticks as f64;
        }
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    })
}

/// Converts a tick count to time.
pub(crate) fn to_duration(ticks: u64) -> Duration {
    Duration::from_nanos((ticks as f64 * calibrate()) as u64)
}

/// Converts time to a tick count (saturating).
pub(crate) fn to_ticks(duration: Duration) -> u64 {
    let ticks = duration.as_nanos() as f64 / calibrate();
    if ticks >= u64::MAX as f64 {
        u64::MAX
    } else {
        ticks as u64
    }
}
