//! Valgrind client requests: tell memcheck where tasklet stacks are.
//!
//! Memcheck tracks the stack pointer to tell stack memory from the heap; a switch to a tasklet
//! stack it does not know looks like a huge stack change, and every access there then reads as
//! uninitialised or invalid (thousands of false reports, and crashes on the scheduler tests).
//! Registering each stack (`VALGRIND_STACK_REGISTER`) when its region is carved, and
//! deregistering it before the region is unmapped, makes switches ordinary.
//!
//! The requests are valgrind's "magic sequence" for amd64 (from `valgrind.h`): `rdi` rotated by
//! 3, 13, 61 and 51 bits (128 in all: a no-op natively) then `xchg rbx, rbx`, with `rax`
//! pointing at the request and its arguments and `rdx` the result (left unchanged natively, so
//! the default comes back). Valgrind recognises the sequence and answers. Elsewhere (other
//! architectures or systems) every request is a no-op returning the default: memcheck then
//! reports on tasklet stacks as it did before.

/// `VALGRIND_RUNNING_ON_VALGRIND`.
const RUNNING_ON_VALGRIND: usize = 0x1001;
/// `VALGRIND_STACK_REGISTER`.
const STACK_REGISTER: usize = 0x1501;
/// `VALGRIND_STACK_DEREGISTER`.
const STACK_DEREGISTER: usize = 0x1502;

/// One client request: returns `default` when not running under valgrind.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(never)]
fn request(default: usize, request: usize, arg1: usize, arg2: usize) -> usize {
    let args: [usize; 6] = [request, arg1, arg2, 0, 0, 0];
    let result;
    // SAFETY: natively the sequence changes nothing (rdi is rotated by 128 bits in all and
    // `xchg rbx, rbx` is a no-op); under valgrind it reads `args` (alive for the call) and
    // writes the answer to rdx. rdi is declared clobbered to be safe.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") default => result,
            in("rax") args.as_ptr(),
            inout("rdi") 0usize => _,
            options(nostack, preserves_flags),
        );
    }
    result
}

/// No client requests on this target: always the default.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request(default: usize, _request: usize, _arg1: usize, _arg2: usize) -> usize {
    default
}

/// Whether the process runs under valgrind.
pub(crate) fn running() -> bool {
    request(0, RUNNING_ON_VALGRIND, 0, 0) != 0
}

/// Registers `[start, end)` as a stack; returns its id for [`stack_deregister`].
pub(crate) fn stack_register(start: usize, end: usize) -> usize {
    request(0, STACK_REGISTER, start, end)
}

/// Forgets the stack registered as `id`.
pub(crate) fn stack_deregister(id: usize) {
    request(0, STACK_DEREGISTER, id, 0);
}
