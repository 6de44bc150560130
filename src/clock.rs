//! The cheap clock behind per-tasklet CPU accounting.
//!
//! Accounting reads the clock once per switch, so the clock must cost next to nothing. Each
//! architecture reads its own counter:
//!
//! - **x86_64**: the time-stamp counter (`rdtsc`, ~10 ns here, against ~24 ns for
//!   `Instant::now()` through the vDSO). The TSC is invariant on every CPU this targets
//!   (`constant_tsc`, `nonstop_tsc`), so one rate serves all cores.
//! - **aarch64**: the generic timer's virtual counter `CNTVCT_EL0`, which Linux lets user space
//!   read (its vDSO does) and which ticks at the fixed frequency in `CNTFRQ_EL0` on every core
//!   (typically 1–100 MHz, 1 GHz on Armv8.6+); that frequency gives the rate directly, with the
//!   calibration below as the fallback should it read 0.
//! - **riscv64**: the `time` CSR (`rdtime`), a constant-rate counter shared by all harts; Linux
//!   enables user reads of it (`scounteren.TM`, used by its own vDSO). On cores that do not
//!   implement the CSR in hardware the read traps into the SBI firmware, which emulates it
//!   (correct but slow, microseconds rather than nanoseconds); the kernel never lets it fault.
//!   Its rate (the device tree's `timebase-frequency`) is not visible to user space, so it is
//!   calibrated. Under qemu-user both counters are derived from the host's clock.
//! - **elsewhere**: nanoseconds from `Instant`.
//!
//! Ticks are turned into time with a rate known from the hardware (aarch64) or calibrated once
//! per process against `Instant` (the median of five 400 us spins the first time a scheduler
//! is created).

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
    #[cfg(target_arch = "aarch64")]
    {
        let ticks: u64;
        // SAFETY: reading CNTVCT_EL0 has no side effects; Linux (and macOS) enable it at EL0.
        unsafe {
            core::arch::asm!("mrs {}, cntvct_el0", out(reg) ticks, options(nomem, nostack, preserves_flags))
        };
        ticks
    }
    #[cfg(target_arch = "riscv64")]
    {
        let ticks: u64;
        // SAFETY: reading the `time` CSR has no side effects; Linux enables it in user mode
        // (see the module comment).
        unsafe { core::arch::asm!("rdtime {}", out(reg) ticks, options(nomem, nostack, preserves_flags)) };
        ticks
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")))]
    {
        static BASE: OnceLock<Instant> = OnceLock::new();
        BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Nanoseconds per tick as the hardware states it, where it does: `CNTFRQ_EL0` on aarch64.
fn known_rate() -> Option<f64> {
    #[cfg(target_arch = "aarch64")]
    {
        let freq: u64;
        // SAFETY: reading CNTFRQ_EL0 has no side effects and is allowed at EL0.
        unsafe {
            core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack, preserves_flags))
        };
        (freq != 0).then(|| 1e9 / freq as f64)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        None
    }
}

/// The tick rate, known from the hardware or else calibrated (once per process): the median of five 400 us windows. One window
/// inflated under load (the thread preempted between reading `Instant` and the TSC at either
/// end skews that window's rate); the median ignores up to two such windows.
pub(crate) fn calibrate() -> f64 {
    *RATE.get_or_init(|| {
        if let Some(rate) = known_rate() {
            return rate;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The counter of this architecture runs forward and its rate turns ticks into time: the
    /// ticks across a sleep, measured inside an `Instant` interval, come to that interval
    /// within a factor of two (a wrong rate, e.g. a counter frequency misread, is off by far
    /// more; the factor leaves room for a loaded machine or an emulator).
    #[test]
    fn counter_runs_forward_at_the_stated_rate() {
        calibrate();
        let i0 = Instant::now();
        let t0 = now();
        std::thread::sleep(Duration::from_millis(50));
        let t1 = now();
        let wall = i0.elapsed();
        assert!(t1 > t0, "the counter did not advance: {t0} then {t1}");
        let measured = to_duration(t1 - t0);
        assert!(
            measured >= wall / 2 && measured <= wall * 2,
            "{} ticks converted to {measured:?} over {wall:?} (rate {} ns per tick)",
            t1 - t0,
            calibrate()
        );
        assert!(to_ticks(measured).abs_diff(t1 - t0) <= (t1 - t0) / 100 + 1);
    }
}
