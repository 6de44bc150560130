//! The stack switch: the shared contract of the only assembly of the crate. Each supported
//! architecture has one small file beside this one, in the manner of ruby's
//! `coroutine/{amd64,arm64,riscv64}`: `x86_64.rs` (System V ABI), `aarch64.rs` (AAPCS64, also
//! assembles for Mach-O) and `riscv64.rs` (LP64D). Each file's top comment draws its frame. This
//! file holds what they all agree on: the [`Context`] (a saved stack pointer), the
//! safe-to-reason-about wrappers [`switch`] and [`exit_to`], the entry contract and the target
//! selection.
//!
//! # The contract every architecture file implements
//!
//! - `switch_raw(from: *mut usize, to: usize)`: saves every callee-saved register of the ABI
//!   (integer and floating-point) and the return address on the current stack, stores the stack
//!   pointer in `*from`, loads `to` as the stack pointer, restores the same registers from
//!   there and returns into the code that suspended that stack.
//! - `switch_direct_raw(from: *mut usize, to: usize)` (x86_64 only so far; elsewhere it is
//!   `switch_raw`): `switch_raw`, but it resumes with an indirect jump to the saved return
//!   address instead of a return (see "Direct switches").
//! - `exit_raw(to: usize) -> !`: the second half of `switch_raw` alone (nothing is saved).
//! - `init_frame(top, entry, arg) -> sp`: writes `INIT_FRAME_WORDS` words (at most
//!   [`INIT_FRAME`] bytes) below the 16-byte-aligned `top`, shaped like a suspended frame whose
//!   return address is the trampoline, with the entry function and argument in two
//!   callee-saved registers and the frame pointer zero.
//! - `trampoline`: the outermost frame of every tasklet; its CFI marks the return address
//!   undefined so that DWARF unwinders and debuggers stop there; it calls `entry(arg)` with
//!   the ABI's stack alignment and traps if `entry` ever returns. The fresh frame's return
//!   address points one instruction into it (past a `nop`), so that an unwinder looking up
//!   `return address - 1`, as unwinders do for callers, finds the trampoline's CFI.
//! - CFI policy: `switch_raw` and `exit_raw` describe every save and restore, so a debugger
//!   stopped inside a switch unwinds correctly on either stack (both hold the same frame).
//! - Test helpers (`cfg(test)`): `CALLEE_SAVED` (the names of the callee-saved registers other
//!   than the stack pointer and return address), `plant_and_switch` and `clobber_and_switch`,
//!   behind `switches_preserve_every_callee_saved_register`.
//!
//! # Design
//!
//! A suspended tasklet is nothing but its saved stack pointer, a [`Context`]. Everything else
//! it needs to resume is on its own stack: [`switch`] stores the callee-saved registers of
//! the ABI on the current stack, stores the stack pointer in `from`, loads `to`'s, reloads
//! the same registers from there and returns, into the code that called `switch` on that
//! stack long ago. The caller-saved registers need no saving: the compiler assumes every call
//! clobbers them. A switch is symmetric: any context switches straight to any other, so the
//! scheduler hops from one tasklet to the next in one switch, without going through a
//! dispatcher.
//!
//! A fresh context ([`Context::init`]) is the same frame at the top of a new stack, with the
//! return address pointing into the trampoline, which calls `entry(arg)`. `entry` must never
//! return: a tasklet's last act is [`exit_to`], a switch that saves nothing, since its stack
//! is never resumed.
//!
//! **Unwinding never crosses a switch.** `switch` is `extern "C"` and has no unwind tables
//! beyond its CFI; every tasklet body runs inside `catch_unwind` at its root (see
//! `scheduler::entry`), and the root itself is `extern "C"`, so a panic that escaped it would
//! abort rather than unwind into the trampoline.
//!
//! **Debuggers and backtraces.** The switches carry CFI for their saves and restores, so a
//! debugger stopped inside one unwinds correctly on either stack. The trampoline marks itself
//! as the outermost frame by making the return-address register undefined (as glibc's `clone`
//! and `_start` do) and the fresh frame's frame pointer is 0: DWARF unwinders (gdb, and the
//! libgcc unwinder behind std's `Backtrace` and panic backtraces) and frame-pointer walks stop
//! cleanly there instead of wandering into whatever lies above the stack top
//! (`scheduler::tests` pins that a tasklet's backtrace ends in the trampoline).
//!
//! **Testing.** `switches_preserve_every_callee_saved_register` plants a distinct pattern in
//! every callee-saved integer and floating-point register, switches to a context that
//! overwrites them all, and back, 10,000 times, comparing each register; deleting any one
//! restore from an architecture file fails it (checked one restore at a time for all 20 of
//! aarch64 and all 25 of riscv64 under qemu-user: the test names the register, or crashes
//! for x19/s1, the entry function, and the return address). aarch64 and riscv64 run it (and
//! the whole suite) under qemu-user, `.ci/cross`.
//!
//! # Decisions and rejected alternatives
//!
//! - **Our own switch instead of corosensei.** Corosensei's coroutines are asymmetric (resume /
//!   suspend back to the resumer), so a tasklet-to-tasklet hop had to suspend to a dispatcher
//!   on the main stack and be resumed from there: two switches plus dispatcher bookkeeping.
//!   Measured here (criterion, `bench/benches/core.rs`, x86_64): 36 ns per tasklet-to-tasklet
//!   switch, where a bare symmetric switch costs ~9 ns; corosensei's suspend from a non-inlined
//!   function, as in real use, alone cost 28 ns per hop. Keeping corosensei and its dispatcher
//!   was rejected for that reason; what it gave besides (a switch for every architecture) costs
//!   one small file per architecture here.
//! - **Other architectures.** Each is one small file here (ruby's `coroutine/` layout), added
//!   only together with a test that runs it: untested code that swaps stacks is worse than
//!   none, so any architecture without a file is one compile error naming the supported ones,
//!   rather than a silent fallback.
//! - **No CET shadow stacks, no pointer authentication of the saved return address.** A switch
//!   returns on another stack than it was called on, which a hardware shadow stack would
//!   reject; Rust does not enable them by default, and supporting them would need a shadow
//!   stack per tasklet. Likewise the aarch64 switch stores x30 as it is (Rust does not sign
//!   return addresses by default; a signed one would still be restored bit for bit).
//! - **`ret` rather than an indirect jump**, for [`switch`]. Every file returns through the
//!   return address register or slot, so the CPU predicts the switch's return from its
//!   return-stack buffer (see `x86_64.rs` for why that is the right address on the new stack).
//!   [`switch_direct`] is the one exception, below.
//!
//! # Direct switches
//!
//! [`switch`] is called from one site (the scheduler's out-of-line `switch`), so its own `ret`
//! is predicted; the first return that differs between the two tasklets, the scheduler's
//! return into the caller, is not: the return-stack buffer holds the *old* tasklet's return
//! address. Two tasklets that run different code (a sender and a receiver in their loops) pay
//! that misprediction on every hop: 10–12 ns of a 60 ns channel round trip on the test VM
//! (the same ping-pong with both sides running one function took 38 ns against 61).
//!
//! [`switch_direct`] is for a switch inlined into the code that resumes (the channels'
//! blocking path: `Scheduler::park_lent`, `#[inline(always)]` down to the user's loop; and
//! `schedule()`, `#[inline]`). It
//! saves the same frame as [`switch`], but resumes with an indirect jump to the saved return
//! address (`pop rcx; jmp rcx` on x86_64) instead of a `ret`. The indirect-branch predictor,
//! which keys on the path that led to the jump, predicts the alternation of resume addresses
//! of a ping-pong, where the return-stack buffer could not: `channel_round_trip` 61 → 38 ns.
//! Both variants save and restore one frame layout, so either resumes a context saved by the
//! other. The cost: the `call` into `switch_direct` leaves one entry in the return-stack buffer
//! that no `ret` pops, so the first return the resumed code makes after it (if it returns
//! before it switches again) mispredicts, as the scheduler's return did before; code that
//! blocks in a loop does not return in between. Only x86_64 has the jump variant so far; on
//! aarch64 and riscv64 `switch_direct` is `switch` (a `ret`), pending measurements there.
//!
//! [`exit_to`] ends with the same jump on x86_64: the finished tasklet's return-stack entries
//! never match the context it resumes, which in a burst of spawns is the next tasklet's
//! trampoline every time, a target the indirect predictor learns (`spawn_run_finish` at
//! batches of 1,000: 61 → 51 ns per tasklet; the abandoned stack's entries are never popped,
//! as before).

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")))]
compile_error!(
    "tasklets' stack switch supports x86_64, aarch64 and riscv64 only (src/context/ holds one \
     file per supported architecture: x86_64.rs, aarch64.rs, riscv64.rs), and this target's \
     architecture has none"
);

/// The architecture file of this target (one per supported architecture).
#[cfg_attr(target_arch = "x86_64", path = "x86_64.rs")]
#[cfg_attr(target_arch = "aarch64", path = "aarch64.rs")]
#[cfg_attr(target_arch = "riscv64", path = "riscv64.rs")]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
mod arch;

/// No architecture file: the `compile_error!` above is the one error of the build; these
/// signatures only keep the rest of the crate from burying it under follow-on errors (the
/// crate never links on such a target).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")))]
mod arch {
    pub(super) const INIT_FRAME_WORDS: usize = 0;
    pub(super) unsafe fn init_frame(_: usize, _: super::Entry, _: *mut u8) -> usize {
        unreachable!("no stack switch for this architecture")
    }
    pub(super) unsafe extern "C" fn switch_raw(_: *mut usize, _: usize) {
        unreachable!("no stack switch for this architecture")
    }
    pub(super) unsafe extern "C" fn exit_raw(_: usize) -> ! {
        unreachable!("no stack switch for this architecture")
    }
}
#[cfg(target_arch = "x86_64")]
use arch::switch_direct_raw;
#[cfg(not(target_arch = "x86_64"))]
use arch::switch_raw as switch_direct_raw;
use arch::{exit_raw, init_frame, switch_raw, INIT_FRAME_WORDS};

use std::cell::Cell;

/// Entry function of a fresh context, called by the trampoline with the argument given to
/// [`Context::init`]. It must never return: it ends by switching away for the last time
/// ([`exit_to`]).
pub(crate) type Entry = unsafe extern "C" fn(arg: *mut u8) -> !;

/// Bytes of a fresh context's first frame, below a 16-aligned stack top.
pub(crate) const INIT_FRAME: usize = INIT_FRAME_WORDS * size_of::<usize>();

/// A suspended execution context: its saved stack pointer (the registers are on its stack).
///
/// `0` while no context was saved (a running context's `Context` holds a stale value).
#[derive(Debug, Default)]
pub(crate) struct Context {
    sp: Cell<usize>,
}

impl Context {
    /// An empty context, to be filled by [`switch`] (the thread's own stack) or by [`init`].
    ///
    /// [`init`]: Context::init
    pub(crate) const fn new() -> Context {
        Context { sp: Cell::new(0) }
    }

    /// The saved stack pointer (`0` if none was saved): where a resume reads its registers
    /// first, for a prefetch (see `Scheduler::fire_expired`).
    #[inline]
    pub(crate) fn saved_sp(&self) -> usize {
        self.sp.get()
    }

    /// Prepares a fresh context on the stack whose top is `top`: the first [`switch`] to it
    /// enters the trampoline, which calls `entry(arg)` with the stack pointer 16-byte aligned
    /// below `top`.
    ///
    /// # Safety
    /// `top` is 16-byte aligned and the [`INIT_FRAME`] bytes below it are writable memory of a
    /// stack that nothing else uses, and that stays mapped until `entry` has switched away for
    /// the last time. `arg` must be what `entry` expects.
    pub(crate) unsafe fn init(&self, top: usize, entry: Entry, arg: *mut u8) {
        debug_assert_eq!(top % 16, 0, "a stack top is 16-byte aligned");
        // SAFETY: per this function's contract the INIT_FRAME bytes below `top` are ours to
        // write and `top` is 16-byte aligned, which is `init_frame`'s contract.
        let sp = unsafe { init_frame(top, entry, arg) };
        debug_assert_eq!(sp, top - INIT_FRAME, "the first frame is INIT_FRAME bytes");
        self.sp.set(sp);
    }
}

/// Saves the running context into `from` and resumes `to`. Returns when a later switch resumes
/// `from`.
///
/// # Safety
/// - `to` holds a context of this thread saved by [`switch`] or made by [`Context::init`], not
///   resumed since, whose stack is still mapped; `to` is not `from`.
/// - `from` stays alive (and is not moved) until it is resumed, or forever if it never is.
/// - The caller holds no borrow that a resumed context could invalidate (nothing in the
///   compiler's view of the call says that other code runs meanwhile, except that it is an
///   opaque call: `Cell`/`RefCell` state is reloaded after it, plain references are not).
#[inline(always)]
pub(crate) unsafe fn switch(from: &Context, to: &Context) {
    debug_assert!(!std::ptr::eq(from, to), "a context never switches to itself");
    debug_assert_ne!(to.sp.get(), 0, "switch to a context that was never saved");
    // SAFETY: per this function's contract `to.sp` is a frame laid out by `switch_raw` or
    // `init`, and `from.sp` is writable until resumed.
    unsafe { switch_raw(from.sp.as_ptr(), to.sp.get()) }
}

/// [`switch`] for a call site inlined into the code that resumes: it resumes `to` with an
/// indirect jump rather than a return (see "Direct switches").
///
/// # Safety
/// As [`switch`].
#[inline(always)]
pub(crate) unsafe fn switch_direct(from: &Context, to: &Context) {
    debug_assert!(!std::ptr::eq(from, to), "a context never switches to itself");
    debug_assert_ne!(to.sp.get(), 0, "switch to a context that was never saved");
    // SAFETY: as in `switch`; both variants save and restore the same frame.
    unsafe { switch_direct_raw(from.sp.as_ptr(), to.sp.get()) }
}

/// Resumes `to` and abandons the running context, whose stack is never used again: the last
/// switch of a finished tasklet.
///
/// # Safety
/// As [`switch`] for `to`. The running stack must hold nothing that needs dropping: the frames
/// on it are abandoned without unwinding.
#[inline(always)]
pub(crate) unsafe fn exit_to(to: &Context) -> ! {
    debug_assert_ne!(to.sp.get(), 0, "switch to a context that was never saved");
    // SAFETY: per this function's contract `to.sp` is a frame laid out by `switch_raw` or
    // `init`.
    unsafe { exit_raw(to.sp.get()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static MAIN: Context = const { Context::new() };
        static OTHER: Context = const { Context::new() };
        static LOG: Cell<u32> = const { Cell::new(0) };
    }

    unsafe extern "C" fn ping(arg: *mut u8) -> ! {
        let step = arg as usize as u32 - 6;
        for i in 0..3 {
            LOG.with(|l| l.set(l.get() * 10 + step + i));
            // SAFETY: both contexts are thread-locals of this thread; MAIN was saved by the
            // switch that started us.
            MAIN.with(|main| OTHER.with(|other| unsafe { switch(other, main) }));
        }
        // SAFETY: as above; this stack is abandoned, and nothing on it needs dropping.
        MAIN.with(|main| unsafe { exit_to(main) })
    }

    #[test]
    fn switches_back_and_forth_and_exits() {
        let mut stack = vec![0u128; 4096];
        let top = stack.as_mut_ptr() as usize + stack.len() * 16;
        // SAFETY: `stack` is ours, 16-aligned at both ends, and outlives the context (we switch
        // to it until it exits, below).
        OTHER.with(|other| unsafe { other.init(top, ping, 7 as *mut u8) });
        for _ in 0..4 {
            // SAFETY: OTHER is fresh or suspended in `ping`; MAIN is this thread's context.
            MAIN.with(|main| OTHER.with(|other| unsafe { switch(main, other) }));
        }
        assert_eq!(LOG.with(Cell::get), 123);
        drop(stack);
    }

    thread_local! {
        static D_MAIN: Context = const { Context::new() };
        static D_OTHER: Context = const { Context::new() };
        static D_LOG: Cell<u64> = const { Cell::new(0) };
    }

    /// The other side of `direct_and_plain_switches_resume_each_other`: switches back with
    /// `switch_direct` and `switch` in turn.
    unsafe extern "C" fn direct_ping(_: *mut u8) -> ! {
        for i in 0..1000u64 {
            D_LOG.with(|l| l.set(l.get() + i));
            // SAFETY: both contexts are thread-locals of this thread; D_MAIN was saved by the
            // switch that resumed us.
            D_MAIN.with(|main| {
                D_OTHER.with(|other| unsafe {
                    if i % 2 == 0 {
                        switch_direct(other, main)
                    } else {
                        switch(other, main)
                    }
                })
            });
        }
        // SAFETY: as above; this stack is abandoned, and nothing on it needs dropping.
        D_MAIN.with(|main| unsafe { exit_to(main) })
    }

    /// `switch_direct` saves the frame `switch` does: each resumes a context the other saved,
    /// in every combination (the scheduler mixes them: a tasklet parked on a channel may be
    /// resumed by a `schedule()` and the other way round).
    #[test]
    fn direct_and_plain_switches_resume_each_other() {
        let mut stack = vec![0u128; 4096];
        let top = stack.as_mut_ptr() as usize + stack.len() * 16;
        // SAFETY: `stack` is ours, 16-aligned at both ends, and outlives the context (we switch
        // to it until it exits, below).
        D_OTHER.with(|other| unsafe { other.init(top, direct_ping, std::ptr::null_mut()) });
        for round in 0..1001u64 {
            // SAFETY: D_OTHER is fresh or suspended in `direct_ping`; D_MAIN is this thread's.
            D_MAIN.with(|main| {
                D_OTHER.with(|other| unsafe {
                    if round % 3 == 0 {
                        switch(main, other)
                    } else {
                        switch_direct(main, other)
                    }
                })
            });
        }
        assert_eq!(D_LOG.with(Cell::get), (0..1000u64).sum::<u64>());
        drop(stack);
    }

    thread_local! {
        static REG_MAIN: Context = const { Context::new() };
        static REG_OTHER: Context = const { Context::new() };
    }

    /// The other side of `switches_preserve_every_callee_saved_register`: each time it is
    /// resumed it overwrites every callee-saved register with fresh garbage and switches back.
    unsafe extern "C" fn clobberer(_: *mut u8) -> ! {
        let mut garbage = 0xdead_0000_0000_0000u64;
        loop {
            garbage = garbage.wrapping_add(0x1_0001);
            REG_MAIN.with(|main| {
                REG_OTHER.with(|other| {
                    // SAFETY: both contexts are thread-locals of this thread; MAIN was saved by
                    // the switch that resumed us. This loop never ends: the test abandons the
                    // stack, which holds nothing that needs dropping.
                    unsafe { super::arch::clobber_and_switch(other.sp.as_ptr(), main.sp.get(), garbage) }
                })
            });
        }
    }

    /// A switch away and back restores every callee-saved register of the ABI exactly, even
    /// though the other side overwrote all of them meanwhile (a missing restore in any
    /// architecture file shows up here as a wrong value in that register).
    #[test]
    fn switches_preserve_every_callee_saved_register() {
        let mut stack = vec![0u128; 4096];
        let top = stack.as_mut_ptr() as usize + stack.len() * 16;
        // SAFETY: `stack` is ours, 16-aligned at both ends, and outlives every switch to the
        // context (the test never switches to it after the loop).
        REG_OTHER.with(|other| unsafe { other.init(top, clobberer, std::ptr::null_mut()) });
        let n = super::arch::CALLEE_SAVED.len();
        for round in 0..10_000u64 {
            let patterns: Vec<u64> = (0..n as u64)
                .map(|i| 0x5a5a_0000_0000_0000 ^ (round << 16) ^ ((i + 1) * 0x0101_0101))
                .collect();
            let mut out = vec![0u64; n];
            REG_MAIN.with(|main| {
                REG_OTHER.with(|other| {
                    // SAFETY: OTHER is fresh or suspended in `clobberer`; MAIN is this thread's
                    // context; both buffers hold one word per callee-saved register.
                    unsafe {
                        super::arch::plant_and_switch(
                            patterns.as_ptr(),
                            out.as_mut_ptr(),
                            main.sp.as_ptr(),
                            other.sp.get(),
                        )
                    }
                })
            });
            for i in 0..n {
                assert_eq!(
                    out[i],
                    patterns[i],
                    "{} not restored by a switch (round {round})",
                    super::arch::CALLEE_SAVED[i]
                );
            }
        }
        drop(stack);
    }
}
