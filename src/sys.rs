//! The one door to the operating system.
//!
//! Every raw libc call of the crate goes through [`syscall!`], which turns the C convention
//! ("-1 and errno", or `MAP_FAILED` for `mmap`) into an `io::Result`, so that error handling and
//! `errno` capture live in one place. Calls made from a signal handler (where `io::Error` must
//! not be built) use [`raw`] and check the result by hand.
//!
//! # Operating systems
//!
//! Linux is tested; macOS and FreeBSD are compile-checked only (README, *Platforms*). What
//! differs between them is kept here, behind small helpers, so that call sites carry no `cfg`:
//!
//! | need | Linux | macOS | FreeBSD |
//! | --- | --- | --- | --- |
//! | errno of the thread ([`raw::errno_location`]) | `__errno_location` | `__error` | `__error` |
//! | lazily backed stacks ([`map_anonymous`]) | `MAP_NORESERVE` | implicit | implicit |
//! | guard pages without mappings ([`HAS_MADV_GUARD_INSTALL`]) | `MADV_GUARD_INSTALL` (6.13) | `mprotect` only | `mprotect` only |
//! | giving pooled stack pages back ([`MADV_TRIM`]) | `MADV_DONTNEED` | `MADV_FREE` | `MADV_FREE` |
//! | stack overflow faults ([`FAULT_SIGNALS`]) | SIGSEGV | SIGSEGV, SIGBUS | SIGSEGV, SIGBUS |
//! | a signal handler wakes pollers ([`SignalWaker`]) | eventfd | drained self-pipe | drained self-pipe |
//! | close-on-exec non-blocking accept ([`accept`]) | `accept4` | `accept`, then `fcntl`/`ioctl` | `accept4` |
//! | no SIGPIPE on a closed peer ([`MSG_NOSIGNAL`], [`no_sigpipe`]) | `MSG_NOSIGNAL` | `SO_NOSIGPIPE` | `MSG_NOSIGNAL` |
//! | the thread's OS id ([`thread_id`]) | `gettid` | `pthread_threadid_np` | `pthread_getthreadid_np` |
//! | the process's mappings ([`mappings`], [`max_map_count`]) | `/proc` | none | none |
//! | socket reads and writes without a cancellation point ([`recv`], [`send`]) | `syscall(SYS_recvfrom/SYS_sendto)` | libc's `recv`/`send` | libc's `recv`/`send` |
//!
//! The poller (kqueue through `polling` off Linux) is `poller`'s business, the stack switch
//! `context`'s.

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "freebsd")))]
compile_error!(
    "tasklets runs on Linux (tested), macOS and FreeBSD (compile-checked, not yet run); this \
     operating system has no port: src/sys.rs holds what differs between systems"
);

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) use libc::__errno_location as errno_location;
    /// The calling thread's `errno` (`__error` on the BSDs and Apple platforms).
    #[cfg(any(target_vendor = "apple", target_os = "freebsd"))]
    pub(crate) use libc::__error as errno_location;
    pub(crate) use libc::{abort, read, sigaction, write};
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

/// `MAP_NORESERVE` where the kernel would otherwise reserve swap for a whole anonymous mapping
/// (Linux under `vm.overcommit_memory=2`); macOS and FreeBSD back anonymous memory lazily
/// without it (macOS defines the flag but ignores it; FreeBSD has none).
#[cfg(any(target_os = "linux", target_os = "android"))]
const MAP_NORESERVE: libc::c_int = libc::MAP_NORESERVE;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const MAP_NORESERVE: libc::c_int = 0;

/// Reserves `len` bytes of private anonymous memory, readable and writable, without reserving
/// swap for it ([`MAP_NORESERVE`]): pages cost memory only once touched.
pub(crate) fn map_anonymous(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing aliases nothing.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | MAP_NORESERVE,
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

/// Makes the page at `addr` resident and writable now (`MADV_POPULATE_WRITE`, Linux 5.14), as
/// a write to it would, but in a system call instead of a page fault: on the 2-vCPU VM of
/// docs/benchmarks.md a fresh stack page cost 1.5–1.8 µs faulted in and 1.3–1.4 µs populated.
/// Returns `false`, and does nothing from then on, where the kernel (or emulator) lacks the
/// advice or the platform has none; the page is then faulted in by its first write as before.
///
/// # Safety
/// The page must belong to a private writable mapping this crate owns, with nothing in it that
/// populating could disturb (it only allocates a zeroed page where none is resident).
pub(crate) unsafe fn populate_page(addr: *mut u8, page: usize) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static MISSING: AtomicBool = AtomicBool::new(false);
        /// `MADV_POPULATE_WRITE` (Linux 5.14; not in every libc target's constants).
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        if MISSING.load(Ordering::Relaxed) {
            return false;
        }
        // SAFETY: the caller's contract: a page of a private writable mapping we own.
        match unsafe { madvise(addr, page, MADV_POPULATE_WRITE) } {
            Ok(()) => true,
            Err(err) => {
                // EINVAL: a kernel before 5.14 (or an emulator); ENOMEM and the like: the
                // first write will fault and report it as it always did.
                if err.raw_os_error() == Some(libc::EINVAL) {
                    MISSING.store(true, Ordering::Relaxed);
                }
                false
            }
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (addr, page);
        false
    }
}

/// `madvise(addr, len, advice)` for `count` ranges `start + i * stride`, in as few system calls
/// as the kernel allows: `process_madvise` on this process takes up to 1,024 ranges a call
/// (any advice since Linux 6.13). Returns `Ok(false)`, having advised nothing the caller can
/// count on, where that is not available (older kernels, emulators, other systems) or the
/// kernel advised only part: the caller then advises range by range (for idempotent advice
/// such as `MADV_GUARD_INSTALL`, redoing a range is harmless). The pidfd it needs is opened
/// and closed per call: no descriptor outlives it, and a forked child opens its own.
///
/// # Safety
/// As [`madvise`], for every range.
pub(crate) unsafe fn madvise_strided(
    start: usize,
    stride: usize,
    count: usize,
    len: usize,
    advice: libc::c_int,
) -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::sync::atomic::{AtomicBool, Ordering};
        static MISSING: AtomicBool = AtomicBool::new(false);
        /// Most ranges per call (`UIO_MAXIOV`).
        const MAX_RANGES: usize = 1024;
        if MISSING.load(Ordering::Relaxed) || count < 2 {
            return Ok(false);
        }
        // SAFETY: pidfd_open takes a pid and flags; the fd it returns is ours to own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        let Ok(fd) = cvt(fd) else {
            MISSING.store(true, Ordering::Relaxed); // Linux < 5.3, or an emulator
            return Ok(false);
        };
        // SAFETY: a new fd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let mut iov = Vec::with_capacity(count.min(MAX_RANGES));
        let mut done = 0;
        while done < count {
            let n = (count - done).min(MAX_RANGES);
            iov.clear();
            iov.extend(
                (done..done + n)
                    .map(|i| libc::iovec { iov_base: (start + i * stride) as *mut _, iov_len: len }),
            );
            // SAFETY: `iov` holds `n` ranges, each of them the caller's to advise.
            let res = unsafe {
                libc::syscall(libc::SYS_process_madvise, pidfd.as_raw_fd(), iov.as_ptr(), n, advice, 0u32)
            };
            match cvt(res) {
                Ok(advised) if advised as usize == n * len => done += n,
                Ok(_) => return Ok(false), // partly: the caller goes range by range
                Err(err) => {
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::ENOSYS | libc::EINVAL | libc::EPERM | libc::EBADF)
                    ) {
                        // Linux < 6.13 refuses most advice for the calling process (EINVAL).
                        MISSING.store(true, Ordering::Relaxed);
                        return Ok(false);
                    }
                    return Err(err);
                }
            }
        }
        Ok(true)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (start, stride, count, len, advice);
        Ok(false)
    }
}

/// Whether `madvise(MADV_GUARD_INSTALL)` may exist (Linux ≥ 6.13; older kernels answer
/// `EINVAL`, and the stack pool then falls back to `mprotect`). Elsewhere guard pages are
/// always made with `mprotect(PROT_NONE)`, which costs a mapping split per stack.
pub(crate) const HAS_MADV_GUARD_INSTALL: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// The `madvise` advice that gives the pages of a free, pooled stack back to the system (their
/// contents may be lost; the mapping and its guard pages stay). Linux frees them at once with
/// `MADV_DONTNEED`; on macOS and FreeBSD that advice only lowers the pages' priority, and
/// `MADV_FREE` is the one that lets the kernel reclaim them.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const MADV_TRIM: libc::c_int = libc::MADV_DONTNEED;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const MADV_TRIM: libc::c_int = libc::MADV_FREE;

/// The signals a fault in a `PROT_NONE` or guard page raises: SIGSEGV on Linux; macOS reports
/// such faults as SIGBUS, and FreeBSD may (`machdep.prot_fault_translation`), so both are
/// handled there, as std's own stack overflow handler does.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const FAULT_SIGNALS: [libc::c_int; 1] = [libc::SIGSEGV];
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const FAULT_SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// This process's memory mappings as `(count, bytes)`, read from `/proc/self/maps` (Linux);
/// `None` where it cannot be read, and always off Linux (macOS has no `/proc`, FreeBSD's
/// `procfs` is seldom mounted and has no map-count limit to compare with).
pub(crate) fn mappings() -> Option<(usize, u64)> {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let bytes = maps
        .lines()
        .filter_map(|line| {
            let (range, _) = line.split_once(' ')?;
            let (start, end) = range.split_once('-')?;
            Some(u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?)
        })
        .sum();
    Some((maps.lines().count(), bytes))
}

/// Linux's limit on a process's mappings (`vm.max_map_count`); `None` elsewhere (no such
/// limit) or when it cannot be read.
pub(crate) fn max_map_count() -> Option<usize> {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return None;
    }
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?.trim().parse().ok()
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

/// The calling thread's id as the operating system knows it (what `ps`, debuggers and profilers
/// show): Linux's TID, macOS's `pthread_threadid_np`, FreeBSD's `pthread_getthreadid_np`.
/// (`monitor` calls `gettid` itself on Linux; the Linux branch here serves the test.)
#[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
pub(crate) fn thread_id() -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: `gettid` has no preconditions and cannot fail.
    return Some(unsafe { libc::gettid() } as u64);
    #[cfg(target_vendor = "apple")]
    {
        let mut id = 0u64;
        // SAFETY: a null thread means the calling thread; `id` is a live `u64` to write.
        let res = unsafe { libc::pthread_threadid_np(0, &mut id) };
        (res == 0).then_some(id)
    }
    #[cfg(target_os = "freebsd")]
    // SAFETY: `pthread_getthreadid_np` has no preconditions and cannot fail.
    return Some(unsafe { libc::pthread_getthreadid_np() } as u64);
}

/// Sets `O_NONBLOCK` and `FD_CLOEXEC` on `fd` (macOS has no `pipe2`).
#[cfg(target_vendor = "apple")]
fn set_nonblocking_cloexec(fd: RawFd) -> io::Result<()> {
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    if flags & libc::O_NONBLOCK == 0 {
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    let flags = syscall!(fcntl(fd, libc::F_GETFD))?;
    if flags & libc::FD_CLOEXEC == 0 {
        syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
    }
    Ok(())
}

/// A new pipe, both ends non-blocking and close-on-exec: `(read end, write end)` (`pipe2`, or
/// `pipe` and `fcntl` on macOS, which has no `pipe2`).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    #[cfg(not(target_vendor = "apple"))]
    // SAFETY: `fds` has room for the two descriptors `pipe2` writes.
    syscall!(pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC))?;
    #[cfg(target_vendor = "apple")]
    // SAFETY: `fds` has room for the two descriptors `pipe` writes.
    syscall!(pipe(fds.as_mut_ptr()))?;
    // SAFETY: two new descriptors that nothing else owns.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[cfg(target_vendor = "apple")]
    {
        // macOS has no `pipe2`: between the two calls a concurrent `fork` + `exec` may inherit
        // the ends (std's `pipe` has the same window there).
        set_nonblocking_cloexec(ends.0.as_raw_fd())?;
        set_nonblocking_cloexec(ends.1.as_raw_fd())?;
    }
    Ok(ends)
}

/// A file descriptor that a signal handler makes readable, for pollers to watch (registered
/// edge-triggered, never read by them): each [`wake`](SignalWaker::wake) is a new edge for
/// every poller that watches it.
///
/// On Linux it is an eventfd, written and never read: each write to an eventfd is a new edge
/// even while its counter is non-zero, and a full counter (2^64 - 2 writes) only makes the
/// write fail, harmlessly. Elsewhere it is a self-pipe that the waking side drains before it
/// writes one byte, so that the pipe never fills (a full pipe would drop the wake-ups that
/// follow) and every wake is an empty-to-readable edge, which kqueue (`EV_CLEAR`) and epoll
/// report alike. The pollers never read it: a poller that drained it could take the edge from
/// another poller that had not looked yet (kqueue re-checks a pipe's readability when it
/// reports). Between a waker's drain and its write the pipe is empty for an instant; the
/// write that follows is the edge, so no wake-up is lost.
#[derive(Debug)]
pub(crate) struct SignalWaker {
    /// The end pollers watch (the eventfd itself, or the pipe's read end).
    watch: OwnedFd,
    /// The pipe's write end (`None` for an eventfd).
    write: Option<OwnedFd>,
}

impl SignalWaker {
    /// The platform's kind: an eventfd on Linux, a self-pipe elsewhere.
    pub(crate) fn new() -> io::Result<SignalWaker> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return SignalWaker::eventfd();
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return SignalWaker::pipe();
    }

    /// An eventfd (Linux).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn eventfd() -> io::Result<SignalWaker> {
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        // SAFETY: a new descriptor that nothing else owns.
        Ok(SignalWaker { watch: unsafe { OwnedFd::from_raw_fd(fd) }, write: None })
    }

    /// A self-pipe (every Unix; the only kind off Linux, and tested on Linux too).
    #[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
    fn pipe() -> io::Result<SignalWaker> {
        let (read, write) = pipe()?;
        Ok(SignalWaker { watch: read, write: Some(write) })
    }

    /// The descriptor to watch for readability, edge-triggered.
    pub(crate) fn fd(&self) -> RawFd {
        self.watch.as_raw_fd()
    }

    /// Makes [`fd`](SignalWaker::fd) signal a new edge. Async-signal-safe (`read` and `write`
    /// only), and preserves `errno`, so that a signal handler may call it.
    pub(crate) fn wake(&self) {
        // SAFETY: `errno_location` returns the calling thread's errno slot; `read` and `write`
        // work on descriptors this waker owns, with live local buffers of the lengths passed.
        // Their failures are ignored: a full eventfd counter or pipe (EAGAIN) means a wake-up
        // is already pending.
        unsafe {
            let errno = raw::errno_location();
            let saved = *errno;
            match &self.write {
                None => {
                    let one = 1u64.to_ne_bytes();
                    raw::write(self.watch.as_raw_fd(), one.as_ptr().cast(), one.len());
                }
                Some(write) => {
                    let mut sink = [0u8; 64];
                    while raw::read(self.watch.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) > 0 {}
                    raw::write(write.as_raw_fd(), [1u8].as_ptr().cast(), 1);
                }
            }
            *errno = saved;
        }
    }
}

/// Accepts a connection on `listener` as a close-on-exec, non-blocking socket: one `accept4`
/// where the system has it (Linux, FreeBSD); macOS has none, so there it is `accept` (socket2
/// sets `FD_CLOEXEC` right after it, the window std's `accept` has there too) and then
/// `O_NONBLOCK`. An accepted socket inherits `SO_NOSIGPIPE` from its listener on macOS.
pub(crate) fn accept(listener: &socket2::Socket) -> io::Result<(socket2::Socket, socket2::SockAddr)> {
    #[cfg(not(target_vendor = "apple"))]
    return listener.accept4(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK);
    #[cfg(target_vendor = "apple")]
    {
        let (socket, addr) = listener.accept()?;
        socket.set_nonblocking(true)?;
        Ok((socket, addr))
    }
}

/// `ty` with `SOCK_NONBLOCK` where `socket(2)` takes the flag; on macOS `ty` itself (the
/// socket is made non-blocking afterwards, as every socket this crate holds is).
pub(crate) fn nonblocking(ty: socket2::Type) -> socket2::Type {
    #[cfg(not(target_vendor = "apple"))]
    return ty.nonblocking();
    #[cfg(target_vendor = "apple")]
    return ty;
}

/// The send flag that keeps a write to a closed connection from raising SIGPIPE
/// (`MSG_NOSIGNAL`); 0 on macOS, whose documented way is the socket option `SO_NOSIGPIPE`
/// instead (see [`no_sigpipe`]).
#[cfg(not(target_vendor = "apple"))]
pub(crate) const MSG_NOSIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(target_vendor = "apple")]
pub(crate) const MSG_NOSIGNAL: libc::c_int = 0;

/// Makes sure no write to `socket` raises SIGPIPE where the send flag [`MSG_NOSIGNAL`] cannot:
/// on macOS it sets `SO_NOSIGPIPE` unless the socket has it already (sockets made by socket2 or
/// std have it, accepted ones inherit it from their listener, and setting it on a connection
/// whose peer has already shut down fails with `EINVAL`). Elsewhere it does nothing.
pub(crate) fn no_sigpipe(socket: &socket2::Socket) -> io::Result<()> {
    #[cfg(target_vendor = "apple")]
    {
        let mut on: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let fd = socket.as_raw_fd();
        // SAFETY: `on` and `len` are live and sized for the option's `int`.
        syscall!(getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&mut on as *mut libc::c_int).cast(),
            &mut len
        ))?;
        if on == 0 {
            socket.set_nosigpipe(true)?;
        }
    }
    let _ = socket;
    Ok(())
}

/// `recv(fd, buf, len, flags)` as a bare system call: -1 with `errno` set on failure.
///
/// On Linux this is `syscall(SYS_recvfrom, ...)` rather than glibc's `recv`, which is a
/// pthread cancellation point: in a process with more than one thread (any process with a
/// scheduler: the sysmon thread) every call switches asynchronous cancellation on and off
/// around the system call, ~60 instructions per call on top of the call itself (issue 14,
/// callgrind of `examples/echo_server`: `__pthread_enable_asynccancel` 35 and
/// `__pthread_disable_asynccancel` 28 per echoed message for a `recv` and a `send`). The
/// sockets of `net` are non-blocking, so the call never blocks and there is nothing for a
/// cancellation to interrupt. (`tasklets-shims` forwards its own calls the same way.)
/// Elsewhere it is libc's `recv`.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes.
#[inline]
pub(crate) unsafe fn recv(fd: RawFd, buf: *mut u8, len: usize, flags: libc::c_int) -> isize {
    #[cfg(target_os = "linux")]
    // SAFETY: per this function's contract; `recvfrom` with null address arguments is `recv`.
    // Every argument is passed as a full word (`syscall` is variadic).
    return unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd as libc::c_long,
            buf as libc::c_long,
            len as libc::c_long,
            flags as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    } as isize;
    #[cfg(not(target_os = "linux"))]
    // SAFETY: per this function's contract.
    return unsafe { libc::recv(fd, buf.cast(), len, flags) };
}

/// `send(fd, buf, len, flags)` as a bare system call (see [`recv`] for why): -1 with `errno`
/// set on failure.
///
/// # Safety
///
/// `buf` must be valid for reads of `len` bytes.
#[inline]
pub(crate) unsafe fn send(fd: RawFd, buf: *const u8, len: usize, flags: libc::c_int) -> isize {
    #[cfg(target_os = "linux")]
    // SAFETY: per this function's contract; `sendto` with no address is `send`. Every argument
    // is passed as a full word (`syscall` is variadic).
    return unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd as libc::c_long,
            buf as libc::c_long,
            len as libc::c_long,
            flags as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    } as isize;
    #[cfg(not(target_os = "linux"))]
    // SAFETY: per this function's contract.
    return unsafe { libc::send(fd, buf.cast(), len, flags) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::{Event, Events, PollMode, Poller};
    use std::time::Duration;

    fn fd_flags(fd: RawFd) -> (bool, bool) {
        let status = syscall!(fcntl(fd, libc::F_GETFL)).unwrap();
        let descriptor = syscall!(fcntl(fd, libc::F_GETFD)).unwrap();
        (status & libc::O_NONBLOCK != 0, descriptor & libc::FD_CLOEXEC != 0)
    }

    /// Bytes waiting in a pipe (`FIONREAD`).
    fn pending(fd: RawFd) -> libc::c_int {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one `int` to the live `n`.
        syscall!(ioctl(fd, libc::FIONREAD, &mut n)).unwrap();
        n
    }

    /// Each wake is one edge for a poller that watches the waker edge-triggered and never reads
    /// it, however many wakes came before; the waker keeps `errno`.
    fn wakes_are_edges_and_keep_errno(waker: SignalWaker) {
        let poller = Poller::new().unwrap();
        // SAFETY: the waker outlives the poller (dropped after it, below).
        unsafe { poller.add_with_mode(waker.fd(), Event::readable(7), PollMode::Edge) }.unwrap();
        let mut events = Events::new();
        let mut edges = |poller: &Poller, timeout_ms| {
            events.clear();
            poller.wait(&mut events, Some(Duration::from_millis(timeout_ms))).unwrap();
            events.iter().filter(|e| e.key == 7 && e.readable).count()
        };
        assert_eq!(edges(&poller, 0), 0, "nothing before the first wake");
        for round in 0..3 {
            // SAFETY: the calling thread's errno slot.
            unsafe { *raw::errno_location() = libc::EDOM };
            waker.wake();
            // SAFETY: as above.
            assert_eq!(unsafe { *raw::errno_location() }, libc::EDOM, "errno kept (round {round})");
            assert_eq!(edges(&poller, 5000), 1, "a wake is an edge (round {round})");
            assert_eq!(edges(&poller, 0), 0, "and only one (round {round})");
        }
        // Far more wakes than a pipe holds bytes (64 KiB on Linux): the waker drains its pipe,
        // so it never fills and the next wake is still an edge.
        for _ in 0..100_000 {
            waker.wake();
        }
        if waker.write.is_some() {
            assert_eq!(pending(waker.fd()), 1, "the self-pipe holds one byte");
        }
        edges(&poller, 0);
        waker.wake();
        assert_eq!(edges(&poller, 5000), 1, "a wake after many is still an edge");
        poller.delete(std::os::fd::AsFd::as_fd(&waker.watch)).unwrap();
        drop(poller);
    }

    #[test]
    fn a_signal_waker_self_pipe_never_fills_and_each_wake_is_an_edge() {
        let waker = SignalWaker::pipe().unwrap();
        let write = waker.write.as_ref().unwrap().as_raw_fd();
        assert_eq!(fd_flags(waker.fd()), (true, true), "read end non-blocking, close-on-exec");
        assert_eq!(fd_flags(write), (true, true), "write end non-blocking, close-on-exec");
        wakes_are_edges_and_keep_errno(waker);
    }

    #[test]
    fn a_signal_waker_of_the_platform_kind_wakes_an_edge_triggered_poller() {
        let waker = SignalWaker::new().unwrap();
        assert_eq!(fd_flags(waker.fd()), (true, true));
        wakes_are_edges_and_keep_errno(waker);
    }

    /// Other tests of this process map and unmap meanwhile, so only what this test's own
    /// mapping guarantees is asserted: it alone is three mappings (split by a guard) and `len`
    /// bytes.
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn mappings_include_a_live_split_mapping() {
        let len = 16 * page_size();
        let addr = map_anonymous(len).unwrap();
        // SAFETY: the page lies inside the mapping just made, which holds no data.
        unsafe { mprotect(addr.add(4 * page_size()), page_size(), libc::PROT_NONE) }.unwrap();
        let (count, bytes) = mappings().expect("/proc/self/maps on Linux");
        // SAFETY: the mapping made above, used by nothing.
        unsafe { unmap(addr, len) }.unwrap();
        assert!(count >= 3, "{count} mappings");
        assert!(bytes >= len as u64, "{bytes} bytes mapped");
        assert!(max_map_count().expect("vm.max_map_count on Linux") >= count);
    }

    #[test]
    fn thread_ids_differ_between_threads_and_stay_put_within_one() {
        let here = thread_id().expect("an OS thread id");
        assert_eq!(thread_id(), Some(here));
        let there = std::thread::spawn(|| thread_id().unwrap()).join().unwrap();
        assert_ne!(here, there);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert!(std::path::Path::new(&format!("/proc/self/task/{here}")).exists(), "a TID");
    }

    #[test]
    fn accept_returns_a_close_on_exec_non_blocking_socket_and_would_block_when_none_waits() {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        listener.listen(8).unwrap();
        listener.set_nonblocking(true).unwrap();
        let err = accept(&listener).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        // The connection is queued once `connect` returns on loopback; poll briefly anyway.
        let (socket, peer) = (0..500)
            .find_map(|_| match accept(&listener) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                }
                other => Some(other.unwrap()),
            })
            .expect("the connection is accepted");
        assert_eq!(peer.as_socket().unwrap(), client.local_addr().unwrap());
        assert_eq!(fd_flags(socket.as_raw_fd()), (true, true), "non-blocking, close-on-exec");
        let err = socket.recv(&mut [std::mem::MaybeUninit::new(0)]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "reads do not block");
        no_sigpipe(&socket).unwrap();
        drop(client);
    }
}
