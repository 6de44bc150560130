//! The x86_64 (System V ABI) stack switch; the shared contract is in `mod.rs`.
//!
//! A switch pushes the six callee-saved registers of the SysV ABI (rbp, rbx, r12–r15) on the
//! current stack (the `call` into `switch_raw` pushed the return address), stores rsp in
//! `from`, loads `to` as rsp, pops the same six registers from there and returns.
//!
//! Frame of a suspended context (lowest address first, 8 bytes each; the `Context` holds its
//! address):
//!
//! ```text
//!   sp -> r15 r14 r13 r12 rbx rbp return-address
//! ```
//!
//! A fresh context ([`init_frame`]) is the same frame at the top of a new stack, with the
//! return address pointing into [`trampoline`] (past a `nop`), rbx = the entry function, r12 =
//! its argument and rbp = 0, laid out so that rsp is 16-byte aligned when the trampoline starts
//! (its own `call` then pushes the return address, as the ABI expects). The trampoline marks
//! itself the outermost frame with `.cfi_undefined rip`.
//!
//! - **MXCSR and the x87 control word are not saved.** The SysV ABI makes their control bits
//!   callee-saved, and boost.context saves them; here that costs 2 ns per bare switch (10.6
//!   against 8.5 ns: `stmxcsr`/`ldmxcsr` and `fnstcw`/`fldcw` serialise), and up to ~6 ns in
//!   earlier measurements. Corosensei does not save them either, and Rust code does
//!   not change rounding modes or exception masks: a tasklet that does (through `asm!` or C)
//!   must restore them before it gives up the CPU. So a switch inherits the floating-point
//!   environment of the tasklet that switched, exactly as before. (Likewise FPCR on aarch64
//!   and fcsr on riscv64 are not saved.)
//! - **`ret` rather than `pop; jmp`.** The CPU predicts a `ret` from its return-stack buffer,
//!   which holds the address after the `call` that entered `switch` on the *old* stack. The
//!   scheduler makes every ordinary hop from one call site, so that is also the right address
//!   on the new stack and the switch's own `ret` is predicted (the first return into code that
//!   differs between the two tasklets is not). `pop rcx; jmp rcx` would use the indirect
//!   predictor instead and leave the return-stack buffer unbalanced; the prototype measured no
//!   difference for a bare switch, and `ret` keeps the CFI simple. [`switch_direct_raw`] is
//!   that variant, for switches inlined into the code that resumes, where the first return
//!   after the switch would differ between the two sides (see "Direct switches" in `mod.rs`).

use super::Entry;
use std::arch::naked_asm;

/// Words of a fresh context's first frame: six callee-saved registers and the return address.
pub(super) const INIT_FRAME_WORDS: usize = 7;

/// Writes a fresh context's first frame below `top` and returns its stack pointer: the first
/// switch to it enters [`trampoline`] with rsp 16-byte aligned, rbx = `entry`, r12 = `arg`.
///
/// # Safety
/// `top` is 16-byte aligned and the `INIT_FRAME_WORDS` words below it are writable and unused.
pub(super) unsafe fn init_frame(top: usize, entry: Entry, arg: *mut u8) -> usize {
    let frame: [usize; 7] = [
        0,                                    // r15
        0,                                    // r14
        0,                                    // r13
        arg as usize,                         // r12: the trampoline's argument
        entry as usize,                       // rbx: the trampoline's callee
        0,                                    // rbp: ends frame-pointer walks
        trampoline as *const () as usize + 1, // return address (past the `nop`): rsp = top
    ];
    let sp = top - INIT_FRAME_WORDS * 8;
    // SAFETY: per this function's contract the INIT_FRAME_WORDS words below `top` are ours to
    // write; `sp` is 8-byte aligned since `top` is 16-byte aligned.
    unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), sp as *mut usize, frame.len()) };
    sp
}

/// The end of both switches: pops the six callee-saved registers of a suspended context's
/// frame (pushed by `switch_raw`), with the CFI of each pop, and returns into it.
macro_rules! pop_frame_and_return {
    () => {
        concat!(
            "pop r15\n.cfi_adjust_cfa_offset -8\n.cfi_restore r15\n",
            "pop r14\n.cfi_adjust_cfa_offset -8\n.cfi_restore r14\n",
            "pop r13\n.cfi_adjust_cfa_offset -8\n.cfi_restore r13\n",
            "pop r12\n.cfi_adjust_cfa_offset -8\n.cfi_restore r12\n",
            "pop rbx\n.cfi_adjust_cfa_offset -8\n.cfi_restore rbx\n",
            "pop rbp\n.cfi_adjust_cfa_offset -8\n.cfi_restore rbp\n",
            "ret",
        )
    };
}

/// The end of `switch_direct_raw` and `exit_raw`: as `pop_frame_and_return`, but the return
/// address is popped into rcx (caller-saved, and no argument of the resumed code) and jumped
/// to, so that the indirect-branch predictor predicts it (see "Direct switches" in `mod.rs`).
macro_rules! pop_frame_and_jump {
    () => {
        concat!(
            "pop r15\n.cfi_adjust_cfa_offset -8\n.cfi_restore r15\n",
            "pop r14\n.cfi_adjust_cfa_offset -8\n.cfi_restore r14\n",
            "pop r13\n.cfi_adjust_cfa_offset -8\n.cfi_restore r13\n",
            "pop r12\n.cfi_adjust_cfa_offset -8\n.cfi_restore r12\n",
            "pop rbx\n.cfi_adjust_cfa_offset -8\n.cfi_restore rbx\n",
            "pop rbp\n.cfi_adjust_cfa_offset -8\n.cfi_restore rbp\n",
            "pop rcx\n.cfi_adjust_cfa_offset -8\n.cfi_register rip, rcx\n",
            "jmp rcx",
        )
    };
}

/// `switch` itself: `rdi` = where to store the current rsp, `rsi` = the rsp to load.
///
/// # Safety
/// See `switch`.
#[unsafe(naked)]
pub(super) unsafe extern "C" fn switch_raw(from: *mut usize, to: usize) {
    naked_asm!(
        ".cfi_startproc",
        // On entry the CFA is rsp + 8 (the return address is at rsp); each push moves it.
        "push rbp",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset rbp, 0",
        "push rbx",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset rbx, 0",
        "push r12",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r12, 0",
        "push r13",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r13, 0",
        "push r14",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r14, 0",
        "push r15",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r15, 0",
        // From here to the pops the CFI (CFA = rsp + 56, registers saved below it) describes
        // whichever stack rsp is on: both hold the same seven-word frame.
        "mov [rdi], rsp",
        "mov rsp, rsi",
        pop_frame_and_return!(),
        ".cfi_endproc",
    )
}

/// `switch_direct` itself: as [`switch_raw`], but it resumes the new stack with an indirect
/// jump to its saved return address (`pop rcx; jmp rcx`) instead of a `ret`.
///
/// # Safety
/// See `switch_direct`.
#[unsafe(naked)]
pub(super) unsafe extern "C" fn switch_direct_raw(from: *mut usize, to: usize) {
    naked_asm!(
        ".cfi_startproc",
        "push rbp",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset rbp, 0",
        "push rbx",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset rbx, 0",
        "push r12",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r12, 0",
        "push r13",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r13, 0",
        "push r14",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r14, 0",
        "push r15",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r15, 0",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        pop_frame_and_jump!(),
        ".cfi_endproc",
    )
}

/// `exit_to` itself: `rdi` = the rsp to load; nothing is saved.
///
/// # Safety
/// See `exit_to`.
#[unsafe(naked)]
pub(super) unsafe extern "C" fn exit_raw(to: usize) -> ! {
    naked_asm!(
        ".cfi_startproc",
        "mov rsp, rdi",
        // The frame being popped is `switch_raw`'s: CFA = rsp + 56.
        ".cfi_adjust_cfa_offset 48",
        ".cfi_rel_offset r15, 0",
        ".cfi_rel_offset r14, 8",
        ".cfi_rel_offset r13, 16",
        ".cfi_rel_offset r12, 24",
        ".cfi_rel_offset rbx, 32",
        ".cfi_rel_offset rbp, 40",
        // A jump, not a `ret`: the return-stack buffer holds the finished tasklet's return
        // addresses, never the one resumed here (the next tasklet's trampoline, in a burst of
        // spawns), while the indirect predictor learns it.
        pop_frame_and_jump!(),
        ".cfi_endproc",
    )
}

/// The first code of every fresh context, entered (one byte in) by the `ret` of a switch with
/// rsp 16-byte aligned, rbx = entry, r12 = argument, rbp = 0. Calls `entry(arg)`, which never
/// returns.
///
/// `.cfi_undefined rip` makes this the outermost frame for DWARF unwinders (gdb, std's
/// backtraces), as glibc's `clone` and `_start` do; rbp = 0 ends frame-pointer walks.
///
/// # Safety
/// Never called from Rust: only entered through a frame made by `Context::init`.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined rip",
        // Never executed: the first frame returns to the next instruction, so that an unwinder
        // looking up `return address - 1` (as they do for callers) lands inside this function.
        "nop",
        "mov rdi, r12",
        "call rbx",
        // `entry` never returns; trap if it somehow does.
        "ud2",
        ".cfi_endproc",
    )
}

/// Test helpers for the register-preservation test: the callee-saved registers of the ABI, in
/// the order the helpers plant and read them.
#[cfg(test)]
pub(super) const CALLEE_SAVED: [&str; 6] = ["rbx", "rbp", "r12", "r13", "r14", "r15"];

/// Plants `patterns[i]` in the i-th of [`CALLEE_SAVED`], switches from `from` to `to` with
/// `switch_raw`, and when resumed stores what those registers hold in `out[i]`; restores the
/// caller's values before returning (it is itself a well-behaved `extern "C"` function).
///
/// # Safety
/// `patterns` and `out` point to six words each; `from`/`to` as for `switch_raw`.
#[cfg(test)]
#[unsafe(naked)]
pub(super) unsafe extern "C" fn plant_and_switch(
    patterns: *const u64,
    out: *mut u64,
    from: *mut usize,
    to: usize,
) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // Seven pushes after the call's return address: rsp is 16-byte aligned for the call.
        "push rsi",
        "mov rbx, [rdi]",
        "mov rbp, [rdi + 8]",
        "mov r12, [rdi + 16]",
        "mov r13, [rdi + 24]",
        "mov r14, [rdi + 32]",
        "mov r15, [rdi + 40]",
        "mov rdi, rdx",
        "mov rsi, rcx",
        "call {switch}",
        "pop rsi",
        "mov [rsi], rbx",
        "mov [rsi + 8], rbp",
        "mov [rsi + 16], r12",
        "mov [rsi + 24], r13",
        "mov [rsi + 32], r14",
        "mov [rsi + 40], r15",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
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
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "sub rsp, 8",
        "mov rbx, rdx",
        "lea rbp, [rdx + 1]",
        "lea r12, [rdx + 2]",
        "lea r13, [rdx + 3]",
        "lea r14, [rdx + 4]",
        "lea r15, [rdx + 5]",
        "call {switch}",
        "add rsp, 8",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        switch = sym switch_raw,
    )
}
