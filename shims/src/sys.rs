//! The shims' one door to the kernel: raw system calls, `errno`, and the two libc functions
//! that are not system calls (`getaddrinfo`, `getnameinfo`), found with `dlsym(RTLD_NEXT)`.
//!
//! Forwarding a hooked call with `libc::recv(..)` would call the hook itself (the symbol is
//! ours), so every forward is a raw system call through [`syscall`] (glibc's `syscall(2)`
//! wrapper, which is not hooked and sets `errno` like the real functions do). Raw calls need no
//! initialisation, never allocate and never recurse, which is what hooks running before `main`,
//! inside the allocator or on threads the runtime never saw require.

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_int, c_long};

/// Makes a raw system call (`nr` with up to six word arguments; unused ones are ignored by the
/// kernel). Returns the kernel's result, or `-1` with `errno` set, like the libc wrappers.
///
/// # Safety
///
/// The arguments must be valid for system call `nr` (pointers valid for the sizes the call
/// reads or writes), exactly as for the libc function of the same name.
#[inline]
pub(crate) unsafe fn syscall(nr: c_long, args: [c_long; 6]) -> c_long {
    // SAFETY: forwarded to the caller's contract.
    unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) }
}

/// Builds the argument array of [`syscall`] from up to six word-sized values (integers or
/// pointers), and calls it. Expands to an unsafe call: the caller writes the `// SAFETY:`.
macro_rules! raw {
    ($nr:expr $(, $arg:expr)* $(,)?) => {{
        #[allow(clippy::cast_lossless, trivial_numeric_casts)]
        let args = $crate::sys::args(&[$($arg as libc::c_long),*]);
        $crate::sys::syscall($nr, args)
    }};
}
pub(crate) use raw;

/// Pads up to six arguments to the six words [`syscall`] takes.
#[inline]
pub(crate) fn args(given: &[c_long]) -> [c_long; 6] {
    let mut all = [0; 6];
    all[..given.len()].copy_from_slice(given);
    all
}

/// The calling thread's `errno`.
#[inline]
pub(crate) fn errno() -> c_int {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, valid for the
    // thread's lifetime.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
#[inline]
pub(crate) fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value }
}

/// Returns `-1` with `errno` set to `err`: the C convention for a failed call.
#[inline]
pub(crate) fn fail(err: c_int) -> c_long {
    set_errno(err);
    -1
}

/// `poll(2)` as glibc makes it: the `poll` system call on x86_64; elsewhere (aarch64,
/// riscv64: their kernels have no `poll`, only `ppoll`) `ppoll` with the timeout in
/// milliseconds turned into a `timespec` (none for a negative timeout) and no signal mask.
///
/// # Safety
///
/// As `poll(2)`: `fds` points to `nfds` valid `pollfd`s (or the kernel reports `EFAULT`).
pub(crate) unsafe fn poll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_long {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: forwarded to the caller's contract.
        unsafe { raw!(libc::SYS_poll, fds, nfds, timeout) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let ts = libc::timespec { tv_sec: (timeout / 1000).into(), tv_nsec: ((timeout % 1000) * 1_000_000).into() };
        let tsp = if timeout >= 0 { &ts as *const libc::timespec } else { std::ptr::null() };
        // SAFETY: forwarded to the caller's contract; `tsp` is null or points to `ts`, which
        // outlives the call; a null signal mask leaves the mask alone.
        unsafe { raw!(libc::SYS_ppoll, fds, nfds, tsp, 0, 0) }
    }
}

/// `select(2)` as glibc makes it: the `select` system call on x86_64; elsewhere (no `select`
/// in those kernels) `pselect6` with the `timeval` normalised into a `timespec` (negative
/// fields are `EINVAL`, an overflowing one saturates) and no signal mask, and the time not
/// slept written back into `*timeout` as `select` does on Linux.
///
/// # Safety
///
/// As `select(2)`: the sets are null or valid for `nfds` bits; `timeout` is null or a
/// caller's pointer (read and written safely: a bad one is `EFAULT`).
pub(crate) unsafe fn select(
    nfds: c_int,
    readfds: *mut libc::fd_set,
    writefds: *mut libc::fd_set,
    exceptfds: *mut libc::fd_set,
    timeout: *mut libc::timeval,
) -> c_long {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: forwarded to the caller's contract.
        unsafe { raw!(libc::SYS_select, nfds, readfds, writefds, exceptfds, timeout) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        if !timeout.is_null() {
            let tv = match read_user(timeout) {
                Ok(tv) => tv,
                Err(err) => return fail(err),
            };
            if tv.tv_sec < 0 || tv.tv_usec < 0 {
                return fail(libc::EINVAL);
            }
            let (carry, usec) = (tv.tv_usec / 1_000_000, tv.tv_usec % 1_000_000);
            ts = match tv.tv_sec.checked_add(carry) {
                Some(sec) => libc::timespec { tv_sec: sec, tv_nsec: usec * 1000 },
                None => libc::timespec { tv_sec: libc::time_t::MAX, tv_nsec: 999_999_999 },
            };
        }
        let tsp = if timeout.is_null() { std::ptr::null_mut() } else { &mut ts as *mut libc::timespec };
        // SAFETY: forwarded to the caller's contract; `tsp` is null or points to `ts`, which
        // outlives the call; a null sixth argument means no signal mask.
        let r = unsafe { raw!(libc::SYS_pselect6, nfds, readfds, writefds, exceptfds, tsp, 0) };
        if !timeout.is_null() {
            let saved = errno();
            let left = libc::timeval { tv_sec: ts.tv_sec, tv_usec: ts.tv_nsec / 1000 };
            let _ = write_user(timeout, left);
            set_errno(saved);
        }
        r
    }
}

/// `dup2(2)` as glibc makes it: the `dup2` system call on x86_64; elsewhere (no `dup2` in
/// those kernels) `dup3(old, new, 0)`, except that `dup2(fd, fd)` returns `fd` if it is open
/// and fails with `EBADF` if not (`dup3` would reject equal fds with `EINVAL`).
pub(crate) fn dup2(old: c_int, new: c_int) -> c_long {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: dup2 takes two integers and touches no memory.
        unsafe { raw!(libc::SYS_dup2, old, new) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        if old == new {
            return if getfl(old) < 0 { -1 } else { old.into() };
        }
        // SAFETY: dup3 takes three integers and touches no memory.
        unsafe { raw!(libc::SYS_dup3, old, new, 0) }
    }
}

/// `fstat` of `fd`, or `None` (with `errno` set) if it fails.
pub(crate) fn fstat(fd: c_int) -> Option<libc::stat> {
    // SAFETY: `libc::stat` is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `struct stat`.
    let r = unsafe { raw!(libc::SYS_fstat, fd, &mut st as *mut libc::stat) };
    (r == 0).then_some(st)
}

/// `fcntl(fd, F_GETFL)`: the file status flags (`O_NONBLOCK`, ...), or `-1`.
pub(crate) fn getfl(fd: c_int) -> c_long {
    // SAFETY: F_GETFL takes no argument and touches no memory.
    unsafe { raw!(libc::SYS_fcntl, fd, libc::F_GETFL) }
}

/// `fcntl(fd, F_SETFL, flags)`.
pub(crate) fn setfl(fd: c_int, flags: c_long) -> c_long {
    // SAFETY: F_SETFL takes an integer and touches no memory.
    unsafe { raw!(libc::SYS_fcntl, fd, libc::F_SETFL, flags) }
}

/// `poll` of one fd for `events` with timeout 0: the returned events (0 if none), or `None`
/// (with `errno` set) if the call fails.
pub(crate) fn poll_now(fd: c_int, events: libc::c_short) -> Option<libc::c_short> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: `pfd` is one valid pollfd.
    let r = unsafe { poll(&mut pfd, 1, 0) };
    (r >= 0).then_some(pfd.revents)
}

/// `getsockopt(fd, SOL_SOCKET, opt)` for a `timeval` option (`SO_RCVTIMEO`, `SO_SNDTIMEO`).
pub(crate) fn socket_timeout(fd: c_int, opt: c_int) -> Option<std::time::Duration> {
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are valid and `len` is the size of `tv`.
    let r = unsafe {
        raw!(
            libc::SYS_getsockopt,
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut tv as *mut libc::timeval,
            &mut len as *mut libc::socklen_t
        )
    };
    if r != 0 || (tv.tv_sec == 0 && tv.tv_usec == 0) || tv.tv_sec < 0 || tv.tv_usec < 0 {
        return None;
    }
    Some(std::time::Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000))
}

/// An `int` socket option at level `SOL_SOCKET`, or `None` (with `errno` set) if the call fails.
fn int_option(fd: c_int, opt: c_int) -> Option<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid and `len` is the size of `value`.
    let r = unsafe {
        raw!(
            libc::SYS_getsockopt,
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut value as *mut c_int,
            &mut len as *mut libc::socklen_t
        )
    };
    (r == 0).then_some(value)
}

/// The pending error of a socket (`SO_ERROR`), `Some(0)` if none; `None` if the call fails.
pub(crate) fn socket_error(fd: c_int) -> Option<c_int> {
    int_option(fd, libc::SO_ERROR)
}

/// Whether socket `fd` is listening (`SO_ACCEPTCONN`); `false` if it cannot be asked.
pub(crate) fn is_listening(fd: c_int) -> bool {
    int_option(fd, libc::SO_ACCEPTCONN).is_some_and(|on| on != 0)
}

/// The type of socket `fd` (`SOCK_STREAM`, ...), if it can be asked; leaves `errno` alone.
pub(crate) fn socket_type(fd: c_int) -> Option<c_int> {
    let saved = errno();
    let ty = int_option(fd, libc::SO_TYPE);
    set_errno(saved);
    ty
}

/// Closes an fd the shims made themselves (a temporary epoll fd), bypassing the `close` hook.
pub(crate) fn close_own(fd: c_int) {
    // SAFETY: closing an fd this crate owns.
    unsafe { raw!(libc::SYS_close, fd) };
}

/// A libc function looked up once with `dlsym(RTLD_NEXT, name)` and cached (0: not looked up
/// yet; 1: not found). Only for the resolver functions, which are not system calls; they
/// allocate themselves, so a look-up that may allocate costs nothing new.
pub(crate) struct NextSymbol {
    name: &'static std::ffi::CStr,
    addr: AtomicUsize,
}

impl NextSymbol {
    pub(crate) const fn new(name: &'static std::ffi::CStr) -> NextSymbol {
        NextSymbol { name, addr: AtomicUsize::new(0) }
    }

    /// The address of the next definition of the symbol after this object's, if any.
    pub(crate) fn get(&self) -> Option<usize> {
        let mut addr = self.addr.load(Ordering::Acquire);
        if addr == 0 {
            // SAFETY: `name` is a valid C string; RTLD_NEXT is a valid pseudo-handle.
            let found = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
            addr = if found == 0 { 1 } else { found };
            self.addr.store(addr, Ordering::Release);
        }
        (addr != 1).then_some(addr)
    }
}

extern "C" {
    /// glibc's `sigaction` under its exported alias (the name `sigaction` is the hook's).
    /// Not a raw system call: on x86_64 the kernel needs the `sa_restorer` trampoline that
    /// only glibc can supply.
    fn __sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int;
}

/// glibc's own `sigaction`.
///
/// # Safety
///
/// As `sigaction(2)`: `act` and `old` are null or valid.
pub(crate) unsafe fn real_sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    // SAFETY: forwarded to the caller's contract.
    unsafe { __sigaction(sig, act, old) }
}

/// Whether the handler the kernel has for `sig` was installed with `SA_RESTART`.
/// Async-signal-safe (`sigaction` is); leaves `errno` alone.
pub(crate) fn signal_restarts(sig: c_int) -> bool {
    let saved = errno();
    // SAFETY: plain data; all zeroes is valid.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a query: no new action, `current` is valid to write.
    let r = unsafe { real_sigaction(sig, std::ptr::null(), &mut current) };
    set_errno(saved);
    r != 0 || current.sa_flags & libc::SA_RESTART != 0
}

/// Copies `len` bytes between this process's memory at `local` and at `user` (a pointer the
/// caller of a hook passed) through `process_vm_readv` (`to_user == false`) or
/// `process_vm_writev`, so that a bad user pointer is reported as the kernel reports it,
/// `Err(EFAULT)`, instead of faulting in the hook. When the call itself is refused (`ENOSYS`,
/// `EPERM`: a seccomp filter), copies directly: then a bad pointer faults, as it would in most
/// C libraries. Leaves `errno` alone.
fn copy_user(local: *mut u8, user: *mut u8, len: usize, to_user: bool) -> Result<(), c_int> {
    let saved = errno();
    // SAFETY: getpid takes no arguments.
    let pid = unsafe { raw!(libc::SYS_getpid) };
    let local_iov = libc::iovec { iov_base: local.cast(), iov_len: len };
    let user_iov = libc::iovec { iov_base: user.cast(), iov_len: len };
    let sysno = if to_user { libc::SYS_process_vm_writev } else { libc::SYS_process_vm_readv };
    // SAFETY: `local` is valid for `len` bytes (the caller's own memory); the kernel checks
    // `user`.
    let r = unsafe {
        raw!(sysno, pid, &local_iov as *const libc::iovec, 1, &user_iov as *const libc::iovec, 1, 0)
    };
    let result = match (r, errno()) {
        (r, _) if r == len as c_long => Ok(()),
        (r, _) if r >= 0 => Err(libc::EFAULT), // a partial copy: the rest is not mapped
        (_, libc::ENOSYS | libc::EPERM) => {
            // SAFETY: the caller's pointer, valid per its contract (nothing can check it).
            unsafe {
                if to_user {
                    std::ptr::copy_nonoverlapping(local, user, len);
                } else {
                    std::ptr::copy_nonoverlapping(user, local, len);
                }
            }
            Ok(())
        }
        (_, err) => Err(err),
    };
    set_errno(saved);
    result
}

/// Reads a `T` from a pointer a hook's caller passed (see [`copy_user`]): `Err(EFAULT)` for
/// a bad pointer.
pub(crate) fn read_user<T: Copy>(user: *const T) -> Result<T, c_int> {
    let mut value = std::mem::MaybeUninit::<T>::uninit();
    copy_user(value.as_mut_ptr().cast(), user.cast_mut().cast(), std::mem::size_of::<T>(), false)?;
    // SAFETY: fully written by the copy (`T` is plain data: `Copy`).
    Ok(unsafe { value.assume_init() })
}

/// Writes a `T` to a pointer a hook's caller passed (see [`copy_user`]): `Err(EFAULT)` for a
/// bad pointer.
pub(crate) fn write_user<T: Copy>(user: *mut T, value: T) -> Result<(), c_int> {
    let mut value = value;
    copy_user((&mut value as *mut T).cast(), user.cast(), std::mem::size_of::<T>(), true)
}

/// The total length of `iovcnt` iovecs at `iov` (a caller's pointer, read safely in chunks:
/// see [`copy_user`]).
pub(crate) fn iov_total(iov: *const libc::iovec, iovcnt: usize) -> Result<usize, c_int> {
    const CHUNK: usize = 64;
    let mut copy = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; CHUNK];
    let (mut total, mut done) = (0usize, 0);
    while done < iovcnt {
        let n = (iovcnt - done).min(CHUNK);
        let bytes = n * std::mem::size_of::<libc::iovec>();
        copy_user(copy.as_mut_ptr().cast(), iov.wrapping_add(done).cast_mut().cast(), bytes, false)?;
        total = copy[..n].iter().fold(total, |sum, v| sum.saturating_add(v.iov_len));
        done += n;
    }
    Ok(total)
}

extern "C" {
    /// glibc's report of a buffer overflow caught by a fortified call (`*** buffer overflow
    /// detected ***`, then abort).
    fn __chk_fail() -> !;
}

/// What a fortified call (`__read_chk`, ...) does when the length exceeds the buffer.
pub(crate) fn chk_fail() -> ! {
    // SAFETY: glibc's function, which takes no arguments and does not return.
    unsafe { __chk_fail() }
}
