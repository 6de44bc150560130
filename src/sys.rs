//! The one door to the operating system.
//!
//! Every raw libc call of the crate goes through [`syscall!`], which turns the C convention
//! ("-1 and errno", or `MAP_FAILED` for `mmap`) into an `io::Result`, so that error handling and
//! `errno` capture live in one place. Calls made from a signal handler (where `io::Error` must
//! not be built) use [`raw`] and check the result by hand.

use std::io;

/// Calls a libc function and turns a `-1` result into `io::Error::last_os_error()`.
///
/// The expansion is an `unsafe` call: the caller writes the `// SAFETY:` argument for the
/// arguments it passes, exactly as for a direct call.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        $crate::sys::cvt(res)
    }};
}
#[allow(unused_imports)]
pub(crate) use syscall;

/// Module for calls that must not allocate (signal handlers): the bare libc entry points.
pub(crate) mod raw {
    pub(crate) use libc::{__errno_location, abort, sigaction, write};
}

/// Numeric results of libc calls that signal failure with `-1`.
pub(crate) trait IsMinusOne: Copy {
    fn is_minus_one(self) -> bool;
}

macro_rules! impl_is_minus_one {
    ($($t:ty)*) => ($(impl IsMinusOne for $t {
        #[inline]
        fn is_minus_one(self) -> bool {
            self == -1
        }
    })*)
}
impl_is_minus_one! { i32 i64 isize }

/// Converts a `-1`-on-error libc result into an `io::Result`.
#[inline]
pub(crate) fn cvt<T: IsMinusOne>(res: T) -> io::Result<T> {
    if res.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

/// The calling thread's `errno`, read without building an `io::Error` (for the `EAGAIN` path
/// of socket calls, taken once per park).
#[inline]
pub(crate) fn errno() -> i32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: `__errno_location` returns the calling thread's errno slot, always valid.
    return unsafe { *libc::__errno_location() };
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    // SAFETY: `__error` returns the calling thread's errno slot, always valid.
    return unsafe { *libc::__error() };
    #[allow(unreachable_code)]
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Whether `errno` says that a non-blocking call would block (`EAGAIN`, or `EWOULDBLOCK` where
/// it differs).
#[inline]
pub(crate) fn would_block(errno: i32) -> bool {
    errno == libc::EAGAIN || errno == libc::EWOULDBLOCK
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock of `Instant` on Linux): one `clock_gettime`
/// through the vDSO, without `Instant`'s checks (see `timer::Nanos`).
#[cfg(target_os = "linux")]
#[inline]
pub(crate) fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux, so
    // the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// The system page size, read once.
pub(crate) fn page_size() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let page = syscall!(sysconf(libc::_SC_PAGESIZE)).map_or(4096, |p| p as usize);
    debug_assert!(page.is_power_of_two());
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// Reserves `len` bytes of private anonymous memory, readable and writable, without reserving
/// swap for it (`MAP_NORESERVE`): pages cost memory only once touched.
pub(crate) fn map_anonymous(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing aliases nothing.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(addr.cast())
    }
}

/// Unmaps a region obtained from [`map_anonymous`].
///
/// # Safety
/// `addr..addr + len` must be a mapping this crate owns, and nothing may use it afterwards.
pub(crate) unsafe fn unmap(addr: *mut u8, len: usize) -> io::Result<()> {
    syscall!(munmap(addr.cast(), len)).map(drop)
}

/// `madvise(2)` on a range this crate owns.
///
/// # Safety
/// The range must belong to a mapping this crate owns; `advice` must not invalidate memory
/// that is still in use (e.g. `MADV_DONTNEED` on a live stack).
pub(crate) unsafe fn madvise(addr: *mut u8, len: usize, advice: libc::c_int) -> io::Result<()> {
    syscall!(madvise(addr.cast(), len, advice)).map(drop)
}

/// `mprotect(2)` on a range this crate owns.
///
/// # Safety
/// The range must belong to a mapping this crate owns and must not be in use by live data when
/// protection is removed.
pub(crate) unsafe fn mprotect(addr: *mut u8, len: usize, prot: libc::c_int) -> io::Result<()> {
    syscall!(mprotect(addr.cast(), len, prot)).map(drop)
}

/// The CPUs the calling thread may run on (`sched_getaffinity(2)`), in increasing order.
#[cfg(target_os = "linux")]
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero `cpu_set_t` is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable `cpu_set_t` of the size passed.
    syscall!(sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set))?;
    // SAFETY: `CPU_ISSET` reads the set for indexes below `CPU_SETSIZE`.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect())
}

/// Pins the calling thread to `cpu` (`sched_setaffinity(2)`).
#[cfg(target_os = "linux")]
pub(crate) fn pin_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "CPU number out of range"));
    }
    // SAFETY: an all-zero `cpu_set_t` is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below `CPU_SETSIZE` (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    syscall!(sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)).map(drop)
}

/// CPU pinning is implemented with Linux's affinity calls only.
#[cfg(not(target_os = "linux"))]
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "CPU pinning is implemented on Linux only"))
}

/// See [`allowed_cpus`].
#[cfg(not(target_os = "linux"))]
pub(crate) fn pin_thread(_cpu: usize) -> io::Result<()> {
    allowed_cpus().map(drop)
}
