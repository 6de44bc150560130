//! Signal handlers and `EINTR`: how a tasklet parked in a hooked call learns that a signal
//! handler ran on its thread, and whether that interrupts its call.
//!
//! In a thread-per-connection program, a signal whose handler was installed without
//! `SA_RESTART` makes the blocking call of the thread that ran the handler fail with `EINTR`
//! (and some calls fail with `EINTR` after any handler: `poll`, `select`, the sleeps, socket
//! calls with a `SO_RCVTIMEO`/`SO_SNDTIMEO` timeout). Programs rely on it to leave a blocking
//! loop when a handler sets a flag. With tasklets, the thread is blocked in the scheduler's
//! poller (or busy running other tasklets), not in the tasklet's system call, so the kernel
//! cannot tell anyone: the shims have to.
//!
//! **How.** While the shims are installed, the `sigaction`/`signal` hooks install a
//! trampoline in place of each handler of an asynchronous signal, keeping the user's handler
//! and flags (`SA_RESTART` included) as they asked: the kernel's restart rules still apply to
//! every real blocking system call. The trampoline counts the delivery on its thread (all
//! handlers, and those without `SA_RESTART`, in two thread-local counters), calls
//! `tasklets::io::interrupt()`, which wakes the thread's interruptible waits (async-signal-safe:
//! an atomic add and an eventfd write), and then calls the user's handler. A hooked call
//! snapshots the counters when it starts; when its interruptible wait ends with
//! `Interrupted`, it fails with `EINTR` if a handler ran since that the kernel would not
//! restart the call after, and otherwise waits on (glibc's `SA_RESTART` behaviour).
//!
//! **What is promised.** Each tasklet is treated as a thread that received the signal: every
//! hooked call parked on the thread that ran the handler (or parked later within the same
//! call) is interrupted; calls on other threads are not. The kernel picks the thread of a
//! process-directed signal as it always does (any thread that does not block it). A handler
//! that runs while the thread is busy interrupts the parked calls at the scheduler's next
//! poll (once per pass over the run queue), not in the middle of another tasklet's code.
//!
//! Synchronous fault signals (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`, `SIGSYS`)
//! are never wrapped: their handlers (std's and the runtime's stack-overflow handlers among
//! them) are about the faulting code, not an interruption. Nor are handlers installed before
//! `install()` or through calls that bypass the hooks (glibc-internal `sigaction` calls, such
//! as those of `sigset`, `system` or `posix_spawn`; raw `rt_sigaction` system calls): their
//! signals do not interrupt parked calls.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use libc::{c_int, c_void, siginfo_t};

use crate::sys;

thread_local! {
    /// Wrapped handlers run on this thread.
    static HANDLED: AtomicU64 = const { AtomicU64::new(0) };
    /// Of those, handlers installed without `SA_RESTART` (as the kernel had them when they ran).
    static UNRESTARTED: AtomicU64 = const { AtomicU64::new(0) };
}

/// Signal numbers are below this (Linux's `_NSIG` + 1).
const NSIG: usize = 65;

/// The user's handler for each wrapped signal (the kernel has [`trampoline`] instead).
static USER_HANDLER: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
/// Whether that handler takes three arguments (`SA_SIGINFO`).
static USER_SIGINFO: [AtomicBool; NSIG] = [const { AtomicBool::new(false) }; NSIG];
/// Signals `siginterrupt(sig, 1)` was called for: `signal` installs their handlers without
/// `SA_RESTART` (glibc keeps the same set, out of reach of the hooks).
static INTERRUPTING: [AtomicBool; NSIG] = [const { AtomicBool::new(false) }; NSIG];

fn index(sig: c_int) -> Option<usize> {
    usize::try_from(sig).ok().filter(|&i| (1..NSIG).contains(&i))
}

/// Whether a handler for `sig` gets the trampoline: asynchronous signals only.
fn wrappable(sig: c_int) -> bool {
    index(sig).is_some()
        && !matches!(
            sig,
            libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP | libc::SIGSYS
        )
}

/// What the kernel runs for a wrapped signal: count, wake the thread's interruptible waits,
/// call the user's handler. Async-signal-safe.
extern "C" fn trampoline(sig: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let saved = sys::errno();
    let restarts = sys::signal_restarts(sig);
    HANDLED.with(|count| count.fetch_add(1, Ordering::Relaxed));
    if !restarts {
        UNRESTARTED.with(|count| count.fetch_add(1, Ordering::Relaxed));
    }
    tasklets::io::interrupt();
    sys::set_errno(saved);
    let Some(i) = index(sig) else { return };
    let handler = USER_HANDLER[i].load(Ordering::Acquire);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return; // replaced since (a race with `sigaction`): nothing of the user's to run
    }
    if USER_SIGINFO[i].load(Ordering::Acquire) {
        // SAFETY: the user installed this address as an `SA_SIGINFO` handler.
        let handler: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = unsafe { std::mem::transmute(handler) };
        handler(sig, info, context);
    } else {
        // SAFETY: the user installed this address as a plain handler.
        let handler: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
        handler(sig);
    }
}

/// The `sigaction` hook's work: installs `act` (with the trampoline in place of a handler of
/// an asynchronous signal, while the shims are installed) and reports in `old` the action as
/// the user set it.
///
/// # Safety
///
/// As `sigaction(2)`: `act` and `old` are null or valid.
pub(crate) unsafe fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    let Some(i) = index(sig).filter(|_| wrappable(sig)) else {
        // SAFETY: the caller's arguments, forwarded.
        return unsafe { sys::real_sigaction(sig, act, old) };
    };
    let previous = (USER_HANDLER[i].load(Ordering::Acquire), USER_SIGINFO[i].load(Ordering::Acquire));
    let mut wrapped;
    // SAFETY: a non-null `act` is valid per the caller.
    let act = match unsafe { act.as_ref() } {
        Some(given)
            if crate::is_installed() && given.sa_sigaction != libc::SIG_DFL && given.sa_sigaction != libc::SIG_IGN =>
        {
            USER_HANDLER[i].store(given.sa_sigaction, Ordering::Release);
            USER_SIGINFO[i].store(given.sa_flags & libc::SA_SIGINFO != 0, Ordering::Release);
            wrapped = *given;
            wrapped.sa_sigaction = trampoline as *const () as usize;
            wrapped.sa_flags |= libc::SA_SIGINFO;
            &wrapped as *const libc::sigaction
        }
        _ => act,
    };
    // SAFETY: `current` is a valid `sigaction` to write to.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `act` is null, the caller's or `wrapped`; `current` is valid.
    let r = unsafe { sys::real_sigaction(sig, act, &mut current) };
    if r != 0 {
        USER_HANDLER[i].store(previous.0, Ordering::Release);
        USER_SIGINFO[i].store(previous.1, Ordering::Release);
        return r;
    }
    if current.sa_sigaction == trampoline as *const () as usize {
        // The kernel had our trampoline: report the user's handler it stood for.
        current.sa_sigaction = previous.0;
        if !previous.1 {
            current.sa_flags &= !libc::SA_SIGINFO;
        }
    }
    // SAFETY: a non-null `old` is valid per the caller.
    if let Some(old) = unsafe { old.as_mut() } {
        *old = current;
    }
    r
}

/// `signal`'s (BSD) and `sysv_signal`'s work: the handler installed through [`sigaction`]
/// with the flags and mask glibc gives it. Returns the previous handler, or `SIG_ERR`.
pub(crate) fn install(sig: c_int, handler: libc::sighandler_t, sysv: bool) -> libc::sighandler_t {
    if handler == libc::SIG_ERR || index(sig).is_none() {
        sys::set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
    // SAFETY: plain data; all zeroes is an empty mask and no flags.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler;
    if sysv {
        act.sa_flags = libc::SA_RESETHAND | libc::SA_NODEFER;
    } else {
        // SAFETY: `act.sa_mask` is a valid sigset.
        unsafe { libc::sigaddset(&mut act.sa_mask, sig) };
        let interrupting = index(sig).is_some_and(|i| INTERRUPTING[i].load(Ordering::Relaxed));
        act.sa_flags = if interrupting { 0 } else { libc::SA_RESTART };
    }
    // SAFETY: `act` and `old` are valid.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// Records `siginterrupt(sig, flag)` for later `signal` calls (see [`INTERRUPTING`]).
pub(crate) fn set_interrupting(sig: c_int, flag: c_int) {
    if let Some(i) = index(sig) {
        INTERRUPTING[i].store(flag != 0, Ordering::Relaxed);
    }
}

/// The calling thread's signal counts when a hooked call starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Marks {
    handled: u64,
    unrestarted: u64,
}

impl Marks {
    pub(crate) fn now() -> Marks {
        Marks {
            handled: HANDLED.with(|count| count.load(Ordering::Relaxed)),
            unrestarted: UNRESTARTED.with(|count| count.load(Ordering::Relaxed)),
        }
    }

    /// Whether a handler that ran on this thread since interrupts the call: any handler for a
    /// call the kernel never restarts (`restartable == false`: `poll`, `select`, sleeps, socket
    /// calls with a timeout), one installed without `SA_RESTART` otherwise.
    pub(crate) fn interrupted(self, restartable: bool) -> bool {
        let now = Marks::now();
        now.unrestarted != self.unrestarted || (!restartable && now.handled != self.handled)
    }
}
