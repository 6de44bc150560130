//! The aarch64 (AAPCS64) stack switch; the shared contract is in `mod.rs`.
//!
//! The ABI's callee-saved registers are x19–x28, the frame pointer x29, the link register x30
//! (the return address of the call into `switch_raw`), sp, and the low 64 bits of v8–v15
//! (d8–d15). A switch stores all twenty of them in one 160-byte frame below the caller's sp
//! (16-byte aligned, as sp must always be), saves sp in `from`, loads `to` as sp, reloads the
//! same frame from there and returns with `ret` (through x30, so the return-stack predictor
//! sees an ordinary return, as on x86_64).
//!
//! Frame of a suspended context (lowest address first, 8 bytes each; the `Context` holds its
//! address, the caller's sp is `sp + 160`):
//!
//! ```text
//!   sp -> d8 d9 d10 d11 d12 d13 d14 d15 x19 x20 x21 x22 x23 x24 x25 x26 x27 x28 x29(fp) x30(lr)
//!         +0                            +64                                +144     +152
//! ```
//!
//! A fresh context ([`init_frame`]) is that frame at the top of a new stack with x30 pointing
//! into [`trampoline`] (past a `nop`, so that an unwinder looking up `return address - 1`
//! finds the trampoline's CFI), x19 = the entry function, x20 = its argument and x29 = 0; the
//! switch's `add sp, sp, 160` leaves sp at the 16-aligned stack top. The trampoline's
//! `.cfi_undefined x30` makes it the outermost frame for DWARF unwinders, and x29 = 0 ends
//! frame-pointer walks.
//!
//! The file assembles for ELF and Mach-O alike: only `naked_asm!` (the compiler names and
//! sizes the symbols) and `.cfi_*` directives, no `.type`/`.size`, and x18 (the platform
//! register on Apple and Windows) is never touched.

use super::Entry;
use std::arch::naked_asm;

/// Words of a fresh context's first frame: the twenty registers of the switch's frame.
pub(super) const INIT_FRAME_WORDS: usize = 20;

/// Writes a fresh context's first frame below `top` and returns its stack pointer: the first
/// switch to it enters [`trampoline`] with sp = `top`, x19 = `entry`, x20 = `arg`.
///
/// # Safety
/// `top` is 16-byte aligned and the `INIT_FRAME_WORDS` words below it are writable and unused.
pub(super) unsafe fn init_frame(top: usize, entry: Entry, arg: *mut u8) -> usize {
    let mut frame = [0usize; INIT_FRAME_WORDS];
    frame[8] = entry as usize; // x19: the trampoline's callee
    frame[9] = arg as usize; // x20: the trampoline's argument
    frame[18] = 0; // x29: ends frame-pointer walks
    frame[19] = trampoline as *const () as usize + 4; // x30: past the `nop`
    let sp = top - INIT_FRAME_WORDS * 8;
    // SAFETY: per this function's contract the INIT_FRAME_WORDS words below `top` are ours to
    // write; `sp` is 16-byte aligned since `top` is and the frame is 160 bytes.
    unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), sp as *mut usize, frame.len()) };
    sp
}

/// The CFI of a suspended context's frame at sp (CFA = sp + 160): where each register is saved.
macro_rules! frame_cfi {
    () => {
        concat!(
            ".cfi_offset d8, -160\n.cfi_offset d9, -152\n",
            ".cfi_offset d10, -144\n.cfi_offset d11, -136\n",
            ".cfi_offset d12, -128\n.cfi_offset d13, -120\n",
            ".cfi_offset d14, -112\n.cfi_offset d15, -104\n",
            ".cfi_offset x19, -96\n.cfi_offset x20, -88\n",
            ".cfi_offset x21, -80\n.cfi_offset x22, -72\n",
            ".cfi_offset x23, -64\n.cfi_offset x24, -56\n",
            ".cfi_offset x25, -48\n.cfi_offset x26, -40\n",
            ".cfi_offset x27, -32\n.cfi_offset x28, -24\n",
            ".cfi_offset x29, -16\n.cfi_offset x30, -8\n",
        )
    };
}

/// The end of both switches: reloads the twenty registers of a suspended context's frame
/// (stored by `switch_raw`), with the CFI of each restore, pops the frame and returns into it.
macro_rules! pop_frame_and_return {
    () => {
        concat!(
            "ldp d8, d9, [sp, #0]\n.cfi_restore d8\n.cfi_restore d9\n",
            "ldp d10, d11, [sp, #16]\n.cfi_restore d10\n.cfi_restore d11\n",
            "ldp d12, d13, [sp, #32]\n.cfi_restore d12\n.cfi_restore d13\n",
            "ldp d14, d15, [sp, #48]\n.cfi_restore d14\n.cfi_restore d15\n",
            "ldp x19, x20, [sp, #64]\n.cfi_restore x19\n.cfi_restore x20\n",
            "ldp x21, x22, [sp, #80]\n.cfi_restore x21\n.cfi_restore x22\n",
            "ldp x23, x24, [sp, #96]\n.cfi_restore x23\n.cfi_restore x24\n",
            "ldp x25, x26, [sp, #112]\n.cfi_restore x25\n.cfi_restore x26\n",
            "ldp x27, x28, [sp, #128]\n.cfi_restore x27\n.cfi_restore x28\n",
            "ldp x29, x30, [sp, #144]\n.cfi_restore x29\n.cfi_restore x30\n",
            "add sp, sp, #160\n.cfi_def_cfa_offset 0\n",
            "ret",
        )
    };
}

/// `switch` itself: `x0` = where to store the current sp, `x1` = the sp to load.
///
/// # Safety
/// See `switch`.
#[unsafe(naked)]
pub(super) unsafe extern "C" fn switch_raw(from: *mut usize, to: usize) {
    naked_asm!(
        ".cfi_startproc",
        // On entry the CFA is sp and the return address is in x30.
        "sub sp, sp, #160",
        ".cfi_def_cfa_offset 160",
        "stp d8, d9, [sp, #0]",
        "stp d10, d11, [sp, #16]",
        "stp d12, d13, [sp, #32]",
        "stp d14, d15, [sp, #48]",
        "stp x19, x20, [sp, #64]",
        "stp x21, x22, [sp, #80]",
        "stp x23, x24, [sp, #96]",
        "stp x25, x26, [sp, #112]",
        "stp x27, x28, [sp, #128]",
        "stp x29, x30, [sp, #144]",
        // From here to the restores the CFI (CFA = sp + 160, registers saved below it)
        // describes whichever stack sp is on: both hold the same twenty-word frame.
        frame_cfi!(),
        "mov x2, sp",
        "str x2, [x0]",
        "mov sp, x1",
        pop_frame_and_return!(),
        ".cfi_endproc",
    )
}

/// `exit_to` itself: `x0` = the sp to load; nothing is saved.
///
/// # Safety
/// See `exit_to`.
#[unsafe(naked)]
pub(super) unsafe extern "C" fn exit_raw(to: usize) -> ! {
    naked_asm!(
        ".cfi_startproc",
        "mov sp, x0",
        // The frame being reloaded is `switch_raw`'s: CFA = sp + 160.
        ".cfi_def_cfa_offset 160",
        frame_cfi!(),
        pop_frame_and_return!(),
        ".cfi_endproc",
    )
}

/// The first code of every fresh context, entered (one instruction in) by the `ret` of a switch
/// with sp = the 16-aligned stack top, x19 = entry, x20 = argument, x29 = 0. Calls
/// `entry(arg)`, which never returns.
///
/// `.cfi_undefined x30` makes this the outermost frame for DWARF unwinders (gdb, std's
/// backtraces), as glibc's `clone` and `_start` do; x29 = 0 ends frame-pointer walks.
///
/// # Safety
/// Never called from Rust: only entered through a frame made by `Context::init`.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined x30",
        // Never executed: the first frame returns to the next instruction, so that an unwinder
        // looking up `return address - 1` (as they do for callers) lands inside this function.
        "nop",
        "mov x0, x20",
        "blr x19",
        // `entry` never returns; trap if it somehow does.
        "brk #1",
        ".cfi_endproc",
    )
}

/// Test helpers for the register-preservation test: the callee-saved registers of the ABI
/// (x30 and sp are checked by the helpers returning at all), in the order the helpers plant
/// and read them.
#[cfg(test)]
pub(super) const CALLEE_SAVED: [&str; 19] = [
    "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x29", "d8", "d9", "d10", "d11",
    "d12", "d13", "d14", "d15",
];

/// Plants `patterns[i]` in the i-th of [`CALLEE_SAVED`], switches from `from` to `to` with
/// `switch_raw`, and when resumed stores what those registers hold in `out[i]`; restores the
/// caller's values before returning (it is itself a well-behaved `extern "C"` function).
///
/// # Safety
/// `patterns` and `out` point to nineteen words each; `from`/`to` as for `switch_raw`.
#[cfg(test)]
#[unsafe(naked)]
pub(super) unsafe extern "C" fn plant_and_switch(
    patterns: *const u64,
    out: *mut u64,
    from: *mut usize,
    to: usize,
) {
    naked_asm!(
        // The caller's callee-saved registers and lr, and `out` (22 words, 16-aligned).
        "sub sp, sp, #176",
        "stp d8, d9, [sp, #0]",
        "stp d10, d11, [sp, #16]",
        "stp d12, d13, [sp, #32]",
        "stp d14, d15, [sp, #48]",
        "stp x19, x20, [sp, #64]",
        "stp x21, x22, [sp, #80]",
        "stp x23, x24, [sp, #96]",
        "stp x25, x26, [sp, #112]",
        "stp x27, x28, [sp, #128]",
        "stp x29, x30, [sp, #144]",
        "str x1, [sp, #160]",
        "ldp x19, x20, [x0, #0]",
        "ldp x21, x22, [x0, #16]",
        "ldp x23, x24, [x0, #32]",
        "ldp x25, x26, [x0, #48]",
        "ldp x27, x28, [x0, #64]",
        "ldr x29, [x0, #80]",
        "ldp d8, d9, [x0, #88]",
        "ldp d10, d11, [x0, #104]",
        "ldp d12, d13, [x0, #120]",
        "ldp d14, d15, [x0, #136]",
        "mov x0, x2",
        "mov x1, x3",
        "bl {switch}",
        "ldr x1, [sp, #160]",
        "stp x19, x20, [x1, #0]",
        "stp x21, x22, [x1, #16]",
        "stp x23, x24, [x1, #32]",
        "stp x25, x26, [x1, #48]",
        "stp x27, x28, [x1, #64]",
        "str x29, [x1, #80]",
        "stp d8, d9, [x1, #88]",
        "stp d10, d11, [x1, #104]",
        "stp d12, d13, [x1, #120]",
        "stp d14, d15, [x1, #136]",
        "ldp d8, d9, [sp, #0]",
        "ldp d10, d11, [sp, #16]",
        "ldp d12, d13, [sp, #32]",
        "ldp d14, d15, [sp, #48]",
        "ldp x19, x20, [sp, #64]",
        "ldp x21, x22, [sp, #80]",
        "ldp x23, x24, [sp, #96]",
        "ldp x25, x26, [sp, #112]",
        "ldp x27, x28, [sp, #128]",
        "ldp x29, x30, [sp, #144]",
        "add sp, sp, #176",
        "ret",
        switch = sym switch_raw,
    )
}

/// Overwrites every register of [`CALLEE_SAVED`] with `garbage` (and neighbours) and switches
/// from `from` to `to`; restores the caller's values when resumed.
///
/// # Safety
/// As for `switch_raw`.
#[cfg(test)]
#[unsafe(naked)]
pub(super) unsafe extern "C" fn clobber_and_switch(from: *mut usize, to: usize, garbage: u64) {
    naked_asm!(
        "sub sp, sp, #160",
        "stp d8, d9, [sp, #0]",
        "stp d10, d11, [sp, #16]",
        "stp d12, d13, [sp, #32]",
        "stp d14, d15, [sp, #48]",
        "stp x19, x20, [sp, #64]",
        "stp x21, x22, [sp, #80]",
        "stp x23, x24, [sp, #96]",
        "stp x25, x26, [sp, #112]",
        "stp x27, x28, [sp, #128]",
        "stp x29, x30, [sp, #144]",
        "mov x19, x2",
        "add x20, x2, #1",
        "add x21, x2, #2",
        "add x22, x2, #3",
        "add x23, x2, #4",
        "add x24, x2, #5",
        "add x25, x2, #6",
        "add x26, x2, #7",
        "add x27, x2, #8",
        "add x28, x2, #9",
        "add x29, x2, #10",
        "add x9, x2, #11",
        "fmov d8, x9",
        "add x9, x2, #12",
        "fmov d9, x9",
        "add x9, x2, #13",
        "fmov d10, x9",
        "add x9, x2, #14",
        "fmov d11, x9",
        "add x9, x2, #15",
        "fmov d12, x9",
        "add x9, x2, #16",
        "fmov d13, x9",
        "add x9, x2, #17",
        "fmov d14, x9",
        "add x9, x2, #18",
        "fmov d15, x9",
        "bl {switch}",
        "ldp d8, d9, [sp, #0]",
        "ldp d10, d11, [sp, #16]",
        "ldp d12, d13, [sp, #32]",
        "ldp d14, d15, [sp, #48]",
        "ldp x19, x20, [sp, #64]",
        "ldp x21, x22, [sp, #80]",
        "ldp x23, x24, [sp, #96]",
        "ldp x25, x26, [sp, #112]",
        "ldp x27, x28, [sp, #128]",
        "ldp x29, x30, [sp, #144]",
        "add sp, sp, #160",
        "ret",
        switch = sym switch_raw,
    )
}
