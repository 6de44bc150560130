//! The riscv64 (LP64D psABI) stack switch; the shared contract is in `mod.rs`.
//!
//! The ABI's callee-saved registers are s0–s11 (s0 is the frame pointer), the return address
//! ra (of the call into `switch_raw`), sp, and fs0–fs11 (the D extension: riscv64gc has it). A
//! switch stores all twenty-five in one 208-byte frame below the caller's sp (one spare word
//! keeps sp 16-byte aligned, as the ABI requires), saves sp in `from`, loads `to` as sp,
//! reloads the same frame from there and returns with `ret` (`jalr zero, 0(ra)`, which the
//! return-address stack predicts, as on x86_64).
//!
//! Frame of a suspended context (lowest address first, 8 bytes each; the `Context` holds its
//! address, the caller's sp is `sp + 208`):
//!
//! ```text
//!   sp -> ra s0(fp) s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 fs0 fs1 ... fs11 (spare)
//!         +0 +8                                   +96 +104          +192 +200
//! ```
//!
//! A fresh context ([`init_frame`]) is that frame at the top of a new stack with ra pointing
//! into [`trampoline`] (past a 4-byte `nop`, so that an unwinder looking up
//! `return address - 1` finds the trampoline's CFI), s1 = the entry function, s2 = its
//! argument and s0 = 0; the switch's `addi sp, sp, 208` leaves sp at the 16-aligned stack top.
//! The trampoline's `.cfi_undefined ra` makes it the outermost frame for DWARF unwinders, and
//! s0 = 0 ends frame-pointer walks.
//!
//! `.option arch, +d` lets the assembler of a naked function accept the `fsd`/`fld` of the D
//! extension whatever the function's own target features say; `.option norvc` keeps the
//! trampoline's `nop` four bytes long (the compressed `c.nop` is two).

use super::Entry;
use std::arch::naked_asm;

/// Words of a fresh context's first frame: the switch's frame (25 registers and a spare word).
pub(super) const INIT_FRAME_WORDS: usize = 26;

/// Writes a fresh context's first frame below `top` and returns its stack pointer: the first
/// switch to it enters [`trampoline`] with sp = `top`, s1 = `entry`, s2 = `arg`.
///
/// # Safety
/// `top` is 16-byte aligned and the `INIT_FRAME_WORDS` words below it are writable and unused.
pub(super) unsafe fn init_frame(top: usize, entry: Entry, arg: *mut u8) -> usize {
    let mut frame = [0usize; INIT_FRAME_WORDS];
    frame[0] = trampoline as *const () as usize + 4; // ra: past the `nop`
                                                     // frame[1] is s0 = 0: ends frame-pointer walks.
    frame[2] = entry as usize; // s1: the trampoline's callee
    frame[3] = arg as usize; // s2: the trampoline's argument
    let sp = top - INIT_FRAME_WORDS * 8;
    // SAFETY: per this function's contract the INIT_FRAME_WORDS words below `top` are ours to
    // write; `sp` is 16-byte aligned since `top` is and the frame is 208 bytes.
    unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), sp as *mut usize, frame.len()) };
    sp
}

/// The CFI of a suspended context's frame at sp (CFA = sp + 208): where each register is saved.
macro_rules! frame_cfi {
    () => {
        concat!(
            ".cfi_offset ra, -208\n",
            ".cfi_offset s0, -200\n.cfi_offset s1, -192\n.cfi_offset s2, -184\n",
            ".cfi_offset s3, -176\n.cfi_offset s4, -168\n.cfi_offset s5, -160\n",
            ".cfi_offset s6, -152\n.cfi_offset s7, -144\n.cfi_offset s8, -136\n",
            ".cfi_offset s9, -128\n.cfi_offset s10, -120\n.cfi_offset s11, -112\n",
            ".cfi_offset fs0, -104\n.cfi_offset fs1, -96\n.cfi_offset fs2, -88\n",
            ".cfi_offset fs3, -80\n.cfi_offset fs4, -72\n.cfi_offset fs5, -64\n",
            ".cfi_offset fs6, -56\n.cfi_offset fs7, -48\n.cfi_offset fs8, -40\n",
            ".cfi_offset fs9, -32\n.cfi_offset fs10, -24\n.cfi_offset fs11, -16\n",
        )
    };
}

/// The end of both switches: reloads the 25 registers of a suspended context's frame (stored
/// by `switch_raw`), with the CFI of each restore, pops the frame and returns into it.
macro_rules! pop_frame_and_return {
    () => {
        concat!(
            "ld ra, 0(sp)\n.cfi_restore ra\n",
            "ld s0, 8(sp)\n.cfi_restore s0\n",
            "ld s1, 16(sp)\n.cfi_restore s1\n",
            "ld s2, 24(sp)\n.cfi_restore s2\n",
            "ld s3, 32(sp)\n.cfi_restore s3\n",
            "ld s4, 40(sp)\n.cfi_restore s4\n",
            "ld s5, 48(sp)\n.cfi_restore s5\n",
            "ld s6, 56(sp)\n.cfi_restore s6\n",
            "ld s7, 64(sp)\n.cfi_restore s7\n",
            "ld s8, 72(sp)\n.cfi_restore s8\n",
            "ld s9, 80(sp)\n.cfi_restore s9\n",
            "ld s10, 88(sp)\n.cfi_restore s10\n",
            "ld s11, 96(sp)\n.cfi_restore s11\n",
            "fld fs0, 104(sp)\n.cfi_restore fs0\n",
            "fld fs1, 112(sp)\n.cfi_restore fs1\n",
            "fld fs2, 120(sp)\n.cfi_restore fs2\n",
            "fld fs3, 128(sp)\n.cfi_restore fs3\n",
            "fld fs4, 136(sp)\n.cfi_restore fs4\n",
            "fld fs5, 144(sp)\n.cfi_restore fs5\n",
            "fld fs6, 152(sp)\n.cfi_restore fs6\n",
            "fld fs7, 160(sp)\n.cfi_restore fs7\n",
            "fld fs8, 168(sp)\n.cfi_restore fs8\n",
            "fld fs9, 176(sp)\n.cfi_restore fs9\n",
            "fld fs10, 184(sp)\n.cfi_restore fs10\n",
            "fld fs11, 192(sp)\n.cfi_restore fs11\n",
            "addi sp, sp, 208\n.cfi_def_cfa_offset 0\n",
            "ret",
        )
    };
}

/// Stores the 25 callee-saved registers of the switch's frame at sp (which the caller has
/// lowered by 208 bytes), in the layout of the frame diagram.
macro_rules! store_frame {
    () => {
        concat!(
            "sd ra, 0(sp)\n",
            "sd s0, 8(sp)\nsd s1, 16(sp)\nsd s2, 24(sp)\nsd s3, 32(sp)\n",
            "sd s4, 40(sp)\nsd s5, 48(sp)\nsd s6, 56(sp)\nsd s7, 64(sp)\n",
            "sd s8, 72(sp)\nsd s9, 80(sp)\nsd s10, 88(sp)\nsd s11, 96(sp)\n",
            "fsd fs0, 104(sp)\nfsd fs1, 112(sp)\nfsd fs2, 120(sp)\nfsd fs3, 128(sp)\n",
            "fsd fs4, 136(sp)\nfsd fs5, 144(sp)\nfsd fs6, 152(sp)\nfsd fs7, 160(sp)\n",
            "fsd fs8, 168(sp)\nfsd fs9, 176(sp)\nfsd fs10, 184(sp)\nfsd fs11, 192(sp)\n",
        )
    };
}

/// The inverse of [`store_frame!`] without CFI or the `ret` (for the test helpers).
#[cfg(test)]
macro_rules! load_frame {
    () => {
        concat!(
            "ld ra, 0(sp)\n",
            "ld s0, 8(sp)\nld s1, 16(sp)\nld s2, 24(sp)\nld s3, 32(sp)\n",
            "ld s4, 40(sp)\nld s5, 48(sp)\nld s6, 56(sp)\nld s7, 64(sp)\n",
            "ld s8, 72(sp)\nld s9, 80(sp)\nld s10, 88(sp)\nld s11, 96(sp)\n",
            "fld fs0, 104(sp)\nfld fs1, 112(sp)\nfld fs2, 120(sp)\nfld fs3, 128(sp)\n",
            "fld fs4, 136(sp)\nfld fs5, 144(sp)\nfld fs6, 152(sp)\nfld fs7, 160(sp)\n",
            "fld fs8, 168(sp)\nfld fs9, 176(sp)\nfld fs10, 184(sp)\nfld fs11, 192(sp)\n",
        )
    };
}

/// `switch` itself: `a0` = where to store the current sp, `a1` = the sp to load.
///
/// # Safety
/// See `switch`.
#[unsafe(naked)]
pub(super) unsafe extern "C" fn switch_raw(from: *mut usize, to: usize) {
    naked_asm!(
        ".option push",
        ".option arch, +d",
        ".cfi_startproc",
        // On entry the CFA is sp and the return address is in ra.
        "addi sp, sp, -208",
        ".cfi_def_cfa_offset 208",
        store_frame!(),
        // From here to the restores the CFI (CFA = sp + 208, registers saved below it)
        // describes whichever stack sp is on: both hold the same frame.
        frame_cfi!(),
        "sd sp, 0(a0)",
        "mv sp, a1",
        pop_frame_and_return!(),
        ".cfi_endproc",
        ".option pop",
    )
}

/// `exit_to` itself: `a0` = the sp to load; nothing is saved.
///
/// # Safety
/// See `exit_to`.
#[unsafe(naked)]
pub(super) unsafe extern "C" fn exit_raw(to: usize) -> ! {
    naked_asm!(
        ".option push",
        ".option arch, +d",
        ".cfi_startproc",
        "mv sp, a0",
        // The frame being reloaded is `switch_raw`'s: CFA = sp + 208.
        ".cfi_def_cfa_offset 208",
        frame_cfi!(),
        pop_frame_and_return!(),
        ".cfi_endproc",
        ".option pop",
    )
}

/// The first code of every fresh context, entered (one 4-byte instruction in) by the `ret` of
/// a switch with sp = the 16-aligned stack top, s1 = entry, s2 = argument, s0 = 0. Calls
/// `entry(arg)`, which never returns.
///
/// `.cfi_undefined ra` makes this the outermost frame for DWARF unwinders (gdb, std's
/// backtraces), as glibc's `clone` and `_start` do; s0 = 0 ends frame-pointer walks.
///
/// # Safety
/// Never called from Rust: only entered through a frame made by `Context::init`.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        ".option push",
        ".option norvc",
        ".cfi_startproc",
        ".cfi_undefined ra",
        // Never executed: the first frame returns to the next instruction, so that an unwinder
        // looking up `return address - 1` (as they do for callers) lands inside this function.
        "nop",
        "mv a0, s2",
        "jalr s1",
        // `entry` never returns; trap if it somehow does.
        "unimp",
        ".cfi_endproc",
        ".option pop",
    )
}

/// Test helpers for the register-preservation test: the callee-saved registers of the ABI (ra
/// and sp are checked by the helpers returning at all), in the order the helpers plant and
/// read them.
#[cfg(test)]
pub(super) const CALLEE_SAVED: [&str; 24] = [
    "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "fs0", "fs1", "fs2", "fs3",
    "fs4", "fs5", "fs6", "fs7", "fs8", "fs9", "fs10", "fs11",
];

/// Plants `patterns[i]` in the i-th of [`CALLEE_SAVED`], switches from `from` to `to` with
/// `switch_raw`, and when resumed stores what those registers hold in `out[i]`; restores the
/// caller's values before returning (it is itself a well-behaved `extern "C"` function).
///
/// # Safety
/// `patterns` and `out` point to 24 words each; `from`/`to` as for `switch_raw`.
#[cfg(test)]
#[unsafe(naked)]
pub(super) unsafe extern "C" fn plant_and_switch(
    patterns: *const u64,
    out: *mut u64,
    from: *mut usize,
    to: usize,
) {
    naked_asm!(
        ".option push",
        ".option arch, +d",
        // The caller's callee-saved registers and ra in a switch-shaped frame; `out` in its
        // spare word.
        "addi sp, sp, -208",
        store_frame!(),
        "sd a1, 200(sp)",
        "ld s0, 0(a0)",
        "ld s1, 8(a0)",
        "ld s2, 16(a0)",
        "ld s3, 24(a0)",
        "ld s4, 32(a0)",
        "ld s5, 40(a0)",
        "ld s6, 48(a0)",
        "ld s7, 56(a0)",
        "ld s8, 64(a0)",
        "ld s9, 72(a0)",
        "ld s10, 80(a0)",
        "ld s11, 88(a0)",
        "fld fs0, 96(a0)",
        "fld fs1, 104(a0)",
        "fld fs2, 112(a0)",
        "fld fs3, 120(a0)",
        "fld fs4, 128(a0)",
        "fld fs5, 136(a0)",
        "fld fs6, 144(a0)",
        "fld fs7, 152(a0)",
        "fld fs8, 160(a0)",
        "fld fs9, 168(a0)",
        "fld fs10, 176(a0)",
        "fld fs11, 184(a0)",
        "mv a0, a2",
        "mv a1, a3",
        "call {switch}",
        "ld a1, 200(sp)",
        "sd s0, 0(a1)",
        "sd s1, 8(a1)",
        "sd s2, 16(a1)",
        "sd s3, 24(a1)",
        "sd s4, 32(a1)",
        "sd s5, 40(a1)",
        "sd s6, 48(a1)",
        "sd s7, 56(a1)",
        "sd s8, 64(a1)",
        "sd s9, 72(a1)",
        "sd s10, 80(a1)",
        "sd s11, 88(a1)",
        "fsd fs0, 96(a1)",
        "fsd fs1, 104(a1)",
        "fsd fs2, 112(a1)",
        "fsd fs3, 120(a1)",
        "fsd fs4, 128(a1)",
        "fsd fs5, 136(a1)",
        "fsd fs6, 144(a1)",
        "fsd fs7, 152(a1)",
        "fsd fs8, 160(a1)",
        "fsd fs9, 168(a1)",
        "fsd fs10, 176(a1)",
        "fsd fs11, 184(a1)",
        load_frame!(),
        "addi sp, sp, 208",
        "ret",
        ".option pop",
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
        ".option push",
        ".option arch, +d",
        "addi sp, sp, -208",
        store_frame!(),
        "mv s0, a2",
        "addi s1, a2, 1",
        "addi s2, a2, 2",
        "addi s3, a2, 3",
        "addi s4, a2, 4",
        "addi s5, a2, 5",
        "addi s6, a2, 6",
        "addi s7, a2, 7",
        "addi s8, a2, 8",
        "addi s9, a2, 9",
        "addi s10, a2, 10",
        "addi s11, a2, 11",
        "addi t0, a2, 12",
        "fmv.d.x fs0, t0",
        "addi t0, a2, 13",
        "fmv.d.x fs1, t0",
        "addi t0, a2, 14",
        "fmv.d.x fs2, t0",
        "addi t0, a2, 15",
        "fmv.d.x fs3, t0",
        "addi t0, a2, 16",
        "fmv.d.x fs4, t0",
        "addi t0, a2, 17",
        "fmv.d.x fs5, t0",
        "addi t0, a2, 18",
        "fmv.d.x fs6, t0",
        "addi t0, a2, 19",
        "fmv.d.x fs7, t0",
        "addi t0, a2, 20",
        "fmv.d.x fs8, t0",
        "addi t0, a2, 21",
        "fmv.d.x fs9, t0",
        "addi t0, a2, 22",
        "fmv.d.x fs10, t0",
        "addi t0, a2, 23",
        "fmv.d.x fs11, t0",
        "call {switch}",
        load_frame!(),
        "addi sp, sp, 208",
        "ret",
        ".option pop",
        switch = sym switch_raw,
    )
}
