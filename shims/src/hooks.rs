//! The hooks: `#[no_mangle]` definitions of libc's blocking calls, which the linker prefers to
//! libc's own for every caller in the process (std, other crates, C code).
//!
//! Each hook has the same shape: if the cooperative path does not apply (not installed, a
//! thread without a scheduler, not a socket, fd 0-2, a non-blocking request), forward the call
//! as a raw system call, untouched; otherwise run the cooperative version from `coop`. Every
//! hook is `unsafe extern "C"` with the C function's contract: the pointers it receives must be
//! valid as the C function requires; every `unsafe` block inside relies on exactly that.

use std::ptr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use libc::{
    c_int, c_long, c_uint, c_ulong, c_void, msghdr, nfds_t, pollfd, size_t, sockaddr, socklen_t, ssize_t,
    timespec, timeval,
};
use tasklets::io::{Interest, Interrupts};

use crate::coop::{self, Waited};
use crate::signals::{self, Marks};
use crate::fdtable;
use crate::sys::{self, raw};

// ---------------------------------------------------------------------------------------------
// Data transfer on sockets.

/// The cooperative receive: `recvfrom` with `MSG_DONTWAIT` until data, end of file or an
/// error, parking on `EAGAIN`. `MSG_WAITALL` keeps receiving until `len` bytes, as a blocking
/// socket does.
///
/// # Safety
/// As `recvfrom(2)`.
unsafe fn recv_coop(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> c_long {
    let attempt = |at: usize, flags: c_int| {
        move || {
            // SAFETY: `buf[at..len]` is part of the caller's buffer; the rest per the caller.
            unsafe {
                let rest = buf.cast::<u8>().add(at);
                raw!(libc::SYS_recvfrom, fd, rest, len - at, flags | libc::MSG_DONTWAIT, addr, addrlen)
            }
        }
    };
    let mut call = coop::Call::new(fd, Interest::Readable);
    if flags & libc::MSG_WAITALL == 0 || len == 0 {
        return call.io(attempt(0, flags));
    }
    if flags & libc::MSG_PEEK != 0 {
        // Peeking for `len` bytes: each peek sees everything queued from the start, so peek
        // again whenever more arrives, until `len` are there (a stream only), the end of the
        // stream, an error, or the deadline (which returns what the last peek saw).
        loop {
            let r = call.io(attempt(0, flags & !libc::MSG_WAITALL));
            if r <= 0 || r as usize >= len || sys::socket_type(fd) != Some(libc::SOCK_STREAM) {
                return r;
            }
            let saved = sys::errno();
            if call.park().is_err() {
                sys::set_errno(saved);
                return r;
            }
        }
    }
    let saved = sys::errno();
    let mut got = 0;
    let mut stream = None;
    while got < len {
        match call.io(attempt(got, flags & !libc::MSG_WAITALL)) {
            r if r < 0 && got == 0 => return r,
            r if r <= 0 => break,
            r => got += r as usize,
        }
        // Only a stream waits for more: a datagram or a record is one message, whatever its
        // length (the kernel ignores MSG_WAITALL there).
        if got < len && !*stream.get_or_insert_with(|| sys::socket_type(fd) == Some(libc::SOCK_STREAM)) {
            break;
        }
    }
    sys::set_errno(saved);
    got as c_long
}

/// The cooperative send: `sendto` with `MSG_DONTWAIT`, parking on `EAGAIN`, until every byte
/// is queued (a blocking stream socket sends everything unless a timeout or error cuts it
/// short, and then reports the bytes it did send).
///
/// # Safety
/// As `sendto(2)`.
unsafe fn send_coop(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> c_long {
    let saved = sys::errno();
    let mut sent = 0;
    // One call, one deadline: SO_SNDTIMEO bounds the whole send, as in the kernel.
    let mut call = coop::Call::new(fd, Interest::Writable);
    loop {
        let r = call.io(|| {
            // SAFETY: `buf[sent..len]` is part of the caller's buffer; the rest per the caller.
            unsafe {
                raw!(
                    libc::SYS_sendto,
                    fd,
                    buf.cast::<u8>().add(sent),
                    len - sent,
                    flags | libc::MSG_DONTWAIT,
                    addr,
                    addrlen
                )
            }
        });
        match r {
            r if r < 0 && sent == 0 => return r,
            r if r <= 0 => break,
            r => sent += r as usize,
        }
        if sent >= len {
            break;
        }
    }
    sys::set_errno(saved);
    sent as c_long
}

/// `recv(2)`.
///
/// # Safety
/// As `recv(2)`.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    if forwarded_as_is(fd, flags, Interest::Readable) {
        // SAFETY: the caller's arguments, forwarded.
        return unsafe { raw!(libc::SYS_recvfrom, fd, buf, len, flags, 0, 0) } as ssize_t;
    }
    // SAFETY: the caller's arguments.
    unsafe { recv_coop(fd, buf, len, flags, ptr::null_mut(), ptr::null_mut()) as ssize_t }
}

/// `recvfrom(2)`.
///
/// # Safety
/// As `recvfrom(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    if forwarded_as_is(fd, flags, Interest::Readable) {
        // SAFETY: the caller's arguments, forwarded.
        return unsafe { raw!(libc::SYS_recvfrom, fd, buf, len, flags, addr, addrlen) } as ssize_t;
    }
    // SAFETY: the caller's arguments.
    unsafe { recv_coop(fd, buf, len, flags, addr, addrlen) as ssize_t }
}

/// `send(2)`.
///
/// # Safety
/// As `send(2)`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if forwarded_as_is(fd, flags, Interest::Writable) {
        // SAFETY: the caller's arguments, forwarded.
        return unsafe { raw!(libc::SYS_sendto, fd, buf, len, flags, 0, 0) } as ssize_t;
    }
    // SAFETY: the caller's arguments.
    unsafe { send_coop(fd, buf, len, flags, ptr::null(), 0) as ssize_t }
}

/// `sendto(2)`.
///
/// # Safety
/// As `sendto(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    if forwarded_as_is(fd, flags, Interest::Writable) {
        // SAFETY: the caller's arguments, forwarded.
        return unsafe { raw!(libc::SYS_sendto, fd, buf, len, flags, addr, addrlen) } as ssize_t;
    }
    // SAFETY: the caller's arguments.
    unsafe { send_coop(fd, buf, len, flags, addr, addrlen) as ssize_t }
}

/// `recvmsg(2)`.
///
/// # Safety
/// As `recvmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    // SAFETY: the caller's arguments.
    unsafe { msg_call(libc::SYS_recvmsg, Interest::Readable, fd, msg, flags) }
}

/// `sendmsg(2)`. On a stream socket, sends everything, as a blocking `sendmsg` does (see
/// `stream_rest`).
///
/// # Safety
/// As `sendmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: the caller's arguments.
    unsafe { msg_call(libc::SYS_sendmsg, Interest::Writable, fd, msg.cast_mut(), flags) }
}

/// `recvmsg`/`sendmsg` (`sysno`): forwarded as is, or tried with `MSG_DONTWAIT` and parked
/// for `interest` on `EAGAIN`.
///
/// # Safety
/// As the system call `sysno` with these arguments.
unsafe fn msg_call(sysno: c_long, interest: Interest, fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if forwarded_as_is(fd, flags, interest) {
        // SAFETY: the caller's arguments, forwarded.
        return unsafe { raw!(sysno, fd, msg, flags) } as ssize_t;
    }
    let mut call = coop::Call::new(fd, interest);
    let r = call.io(|| {
        // SAFETY: the caller's arguments.
        unsafe { raw!(sysno, fd, msg, flags | libc::MSG_DONTWAIT) }
    });
    // A blocking sendmsg on a stream sends everything, and a blocking MSG_WAITALL recvmsg
    // fills every buffer: go on with the rest (without ancillary data, which went with the
    // first part). The kernel has just read `msg` and its iovec: they are valid to read here.
    let goes_on = match interest {
        Interest::Writable => true,
        Interest::Readable => flags & libc::MSG_WAITALL != 0 && flags & libc::MSG_PEEK == 0,
    };
    if r <= 0 || !goes_on {
        return r as ssize_t;
    }
    // SAFETY: `msg` was read by the kernel in the call that just succeeded.
    let (iov, iovcnt) = unsafe { ((*msg).msg_iov.cast_const(), (*msg).msg_iovlen) };
    let rest_flags = (flags & !libc::MSG_WAITALL) | libc::MSG_DONTWAIT;
    // SAFETY: as above, for the iovec.
    unsafe {
        stream_rest(&mut call, fd, iov, iovcnt, r, |rest, count| {
            // SAFETY: plain data; all zeroes is an empty header.
            let mut part: msghdr = std::mem::zeroed();
            part.msg_iov = rest.cast_mut();
            part.msg_iovlen = count;
            raw!(sysno, fd, &mut part as *mut msghdr, rest_flags)
        })
    }
}

/// Goes on with a vectored transfer on a stream socket after a first attempt moved `done`
/// bytes of the `iovcnt` buffers at `iov`, as a blocking call does: until every byte is
/// moved, the end of the stream, an error, the call's deadline or an interrupting signal.
/// Returns the bytes moved in all (at least `done`). Other socket types return `done` at
/// once (a datagram or a record is one message).
///
/// # Safety
/// `iov[..iovcnt]` must be readable (the kernel has just read it) and its buffers valid for
/// the transfer, as the caller's contract says.
unsafe fn stream_rest(
    call: &mut coop::Call,
    fd: c_int,
    iov: *const libc::iovec,
    iovcnt: usize,
    done: c_long,
    mut attempt: impl FnMut(*const libc::iovec, usize) -> c_long,
) -> ssize_t {
    // SAFETY: readable per this function's contract.
    let buffers = unsafe { std::slice::from_raw_parts(iov, iovcnt) };
    let total: usize = buffers.iter().map(|b| b.iov_len).sum();
    let mut moved = done as usize;
    if moved >= total || sys::socket_type(fd) != Some(libc::SOCK_STREAM) {
        return done as ssize_t;
    }
    let saved = sys::errno();
    let mut rest: Vec<libc::iovec> = Vec::with_capacity(iovcnt);
    while moved < total {
        // The buffers not yet (fully) moved, the first one advanced.
        rest.clear();
        let mut skip = moved;
        for b in buffers {
            if skip >= b.iov_len {
                skip -= b.iov_len;
                continue;
            }
            rest.push(libc::iovec { iov_base: b.iov_base.cast::<u8>().wrapping_add(skip).cast(), iov_len: b.iov_len - skip });
            skip = 0;
        }
        match call.io(|| attempt(rest.as_ptr(), rest.len())) {
            r if r > 0 => moved += r as usize,
            _ => break, // the end, an error, the deadline, a signal: report what was moved
        }
    }
    sys::set_errno(saved);
    moved as ssize_t
}

/// Whether a socket call goes straight to the kernel: the call never waits (the caller asked
/// for `MSG_DONTWAIT`; a receive of the error queue or of out-of-band data, which the kernel
/// answers at once, with `EAGAIN` if there is nothing, even on a blocking socket), or the fd
/// does not cooperate (see `coop::fd_is_cooperative`).
fn forwarded_as_is(fd: c_int, flags: c_int, interest: Interest) -> bool {
    let never_waits = match interest {
        Interest::Readable => libc::MSG_DONTWAIT | libc::MSG_ERRQUEUE | libc::MSG_OOB,
        Interest::Writable => libc::MSG_DONTWAIT,
    };
    flags & never_waits != 0 || !coop::fd_is_cooperative(fd)
}

/// A socket call made through `read`/`write`/`readv`/`writev` on what the table thought was a
/// socket failed with `ENOTSOCK` (the number was reused behind libc's back): reclassify and
/// let the caller make the real call, with `errno` as it was on entry.
fn not_a_socket_after_all(fd: c_int, r: c_long, saved: c_int) -> bool {
    if r < 0 && sys::errno() == libc::ENOTSOCK {
        fdtable::set_not_socket(fd);
        sys::set_errno(saved);
        return true;
    }
    false
}

/// `read(2)`: on a socket in a tasklet, `recv` (identical for sockets) made cooperative.
///
/// # Safety
/// As `read(2)`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // A read of zero bytes returns 0 at once on a socket and leaves a queued datagram alone
    // (the kernel checks the length before anything else); `recv` would wait, or consume it.
    if count > 0 && coop::fd_is_cooperative(fd) {
        let saved = sys::errno();
        // SAFETY: the caller's arguments.
        let r = unsafe { recv_coop(fd, buf, count, 0, ptr::null_mut(), ptr::null_mut()) };
        if !not_a_socket_after_all(fd, r, saved) {
            return r as ssize_t;
        }
    }
    // SAFETY: the caller's arguments, forwarded.
    unsafe { raw!(libc::SYS_read, fd, buf, count) as ssize_t }
}

/// `write(2)`: on a socket in a tasklet, `send` (identical for sockets) made cooperative.
///
/// # Safety
/// As `write(2)`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    if coop::fd_is_cooperative(fd) {
        let saved = sys::errno();
        // SAFETY: the caller's arguments.
        let r = unsafe { send_coop(fd, buf, count, 0, ptr::null(), 0) };
        if !not_a_socket_after_all(fd, r, saved) {
            return r as ssize_t;
        }
    }
    // SAFETY: the caller's arguments, forwarded.
    unsafe { raw!(libc::SYS_write, fd, buf, count) as ssize_t }
}

/// A `msghdr` carrying only an iovec (what `readv`/`writev` are as `recvmsg`/`sendmsg`).
fn iov_msg(iov: *const libc::iovec, iovcnt: c_int) -> msghdr {
    // SAFETY: `msghdr` is plain data; all zeroes is a valid (empty) value.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.cast_mut();
    msg.msg_iovlen = iovcnt as usize;
    msg
}

/// Most iovecs one `readv`/`writev` takes (Linux's `UIO_MAXIOV`, glibc's `IOV_MAX`).
const IOV_MAX: c_int = 1024;

/// Whether the kernel takes `RWF_NOWAIT` on sockets: unknown (0), yes (1), no (2).
static NOWAIT_ON_SOCKETS: AtomicU8 = AtomicU8::new(0);

/// `readv`/`writev` on a socket in a tasklet, made cooperative; `None` when the real call
/// answers at once and must be made instead (a count the kernel refuses, an empty read, a
/// number that is not a socket after all).
///
/// The exact cooperative form is the kernel's own `readv`/`writev` with `RWF_NOWAIT`
/// (`preadv2`/`pwritev2` at the current position): it fails with `EAGAIN` instead of
/// blocking and otherwise behaves as `readv`/`writev` in every respect (an empty read leaves a
/// datagram queued, `SOCK_SEQPACKET` writes end a record). Kernels that do not take the flag
/// on sockets say `EOPNOTSUPP`, and kernels or emulators without `preadv2` say `ENOSYS`
/// (either detected once); then `recvmsg`/`sendmsg` with
/// `MSG_DONTWAIT` stand in, after `process_vm_readv` has read the iovec's total length
/// safely: an empty read goes to the real `readv`.
///
/// # Safety
/// As `readv(2)`/`writev(2)`.
unsafe fn vectored(fd: c_int, iov: *const libc::iovec, iovcnt: c_int, interest: Interest) -> Option<ssize_t> {
    if !(1..=IOV_MAX).contains(&iovcnt) || !coop::fd_is_cooperative(fd) {
        return None; // EINVAL, or 0 at once, from the real call
    }
    let saved = sys::errno();
    let mut call = coop::Call::new(fd, interest);
    if NOWAIT_ON_SOCKETS.load(Ordering::Relaxed) == 0
        && std::env::var_os("TASKLETS_SHIMS_RWF_NOWAIT").is_some_and(|v| v == "off")
    {
        NOWAIT_ON_SOCKETS.store(2, Ordering::Relaxed); // the fallback, forced (for its tests)
    }
    if NOWAIT_ON_SOCKETS.load(Ordering::Relaxed) != 2 {
        let sysno = match interest {
            Interest::Readable => libc::SYS_preadv2,
            Interest::Writable => libc::SYS_pwritev2,
        };
        // SAFETY: the caller's iovec; offset -1 (both halves) is "the current position".
        let r = call.io(|| unsafe { raw!(sysno, fd, iov, iovcnt, -1, -1, libc::RWF_NOWAIT) });
        match (r, sys::errno()) {
            (r, _) if r >= 0 => {
                NOWAIT_ON_SOCKETS.store(1, Ordering::Relaxed);
                if interest == Interest::Readable || r == 0 {
                    return Some(r as ssize_t);
                }
                // A blocking writev on a stream writes everything (see `stream_rest`).
                // SAFETY: the kernel has just read the iovec.
                return Some(unsafe {
                    stream_rest(&mut call, fd, iov, iovcnt as usize, r, |rest, count| {
                        raw!(sysno, fd, rest, count, -1, -1, libc::RWF_NOWAIT)
                    })
                });
            }
            (_, libc::EOPNOTSUPP) if sys::fstat(fd).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK) => {
                NOWAIT_ON_SOCKETS.store(2, Ordering::Relaxed);
                sys::set_errno(saved);
            }
            // No preadv2/pwritev2 at all (kernels before 4.6, qemu-user 7.2): the same
            // fallback.
            (_, libc::ENOSYS) => {
                NOWAIT_ON_SOCKETS.store(2, Ordering::Relaxed);
                sys::set_errno(saved);
            }
            (_, err) => {
                if not_a_socket_after_all(fd, r, saved) || err == libc::EOPNOTSUPP {
                    sys::set_errno(saved);
                    return None;
                }
                return Some(r as ssize_t);
            }
        }
    }
    if interest == Interest::Readable {
        // A bad iovec pointer (EFAULT) goes to the real call too, which reports it.
        let total = sys::iov_total(iov, iovcnt as usize).unwrap_or(0);
        if total == 0 {
            return None;
        }
    }
    let mut msg = iov_msg(iov, iovcnt);
    let sysno = match interest {
        Interest::Readable => libc::SYS_recvmsg,
        Interest::Writable => libc::SYS_sendmsg,
    };
    // SAFETY: `msg` points to the caller's iovec, valid per the caller.
    let r = call.io(|| unsafe { raw!(sysno, fd, &mut msg as *mut msghdr, libc::MSG_DONTWAIT) });
    if not_a_socket_after_all(fd, r, saved) {
        return None;
    }
    if interest == Interest::Readable || r <= 0 {
        return Some(r as ssize_t);
    }
    // SAFETY: the kernel has just read the iovec.
    Some(unsafe {
        stream_rest(&mut call, fd, iov, iovcnt as usize, r, |rest, count| {
            let mut part = iov_msg(rest, count as c_int);
            raw!(sysno, fd, &mut part as *mut msghdr, libc::MSG_DONTWAIT)
        })
    })
}

/// `readv(2)`: on a socket in a tasklet, made cooperative (see `vectored`).
///
/// # Safety
/// As `readv(2)`.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, iovcnt: c_int) -> ssize_t {
    // SAFETY: the caller's arguments.
    if let Some(r) = unsafe { vectored(fd, iov, iovcnt, Interest::Readable) } {
        return r;
    }
    // SAFETY: the caller's arguments, forwarded.
    unsafe { raw!(libc::SYS_readv, fd, iov, iovcnt) as ssize_t }
}

/// `writev(2)`: on a socket in a tasklet, made cooperative (see `vectored`).
///
/// # Safety
/// As `writev(2)`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, iovcnt: c_int) -> ssize_t {
    // SAFETY: the caller's arguments.
    if let Some(r) = unsafe { vectored(fd, iov, iovcnt, Interest::Writable) } {
        return r;
    }
    // SAFETY: the caller's arguments, forwarded.
    unsafe { raw!(libc::SYS_writev, fd, iov, iovcnt) as ssize_t }
}

// ---------------------------------------------------------------------------------------------
// Fortified entry points: what C code built with `_FORTIFY_SOURCE` calls instead of `read`,
// `recv`, `recvfrom` and `poll` when the compiler knows the buffer's size. Each checks the size
// as glibc's does, then is the plain call.

/// `__read_chk`: `read` with the buffer's size checked.
///
/// # Safety
/// As `read(2)`; `buflen` is the size of `buf`.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, count: size_t, buflen: size_t) -> ssize_t {
    if count > buflen {
        sys::chk_fail();
    }
    // SAFETY: the caller's arguments.
    unsafe { read(fd, buf, count) }
}

/// `__recv_chk`: `recv` with the buffer's size checked.
///
/// # Safety
/// As `recv(2)`; `buflen` is the size of `buf`.
#[no_mangle]
pub unsafe extern "C" fn __recv_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int) -> ssize_t {
    if len > buflen {
        sys::chk_fail();
    }
    // SAFETY: the caller's arguments.
    unsafe { recv(fd, buf, len, flags) }
}

/// `__recvfrom_chk`: `recvfrom` with the buffer's size checked.
///
/// # Safety
/// As `recvfrom(2)`; `buflen` is the size of `buf`.
#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    if len > buflen {
        sys::chk_fail();
    }
    // SAFETY: the caller's arguments.
    unsafe { recvfrom(fd, buf, len, flags, addr, addrlen) }
}

/// `__poll_chk`: `poll` with the array's size checked.
///
/// # Safety
/// As `poll(2)`; `fdslen` is the size of `fds` in bytes.
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: c_int, fdslen: size_t) -> c_int {
    if fdslen / std::mem::size_of::<pollfd>() < nfds as usize {
        sys::chk_fail();
    }
    // SAFETY: the caller's arguments.
    unsafe { poll(fds, nfds, timeout) }
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// `accept(2)`.
///
/// # Safety
/// As `accept(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, addrlen: *mut socklen_t) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { accept4(fd, addr, addrlen, 0) }
}

/// `accept4(2)`. There is no per-call "don't wait" for accept, so the cooperative path asks
/// `poll` first and calls the real `accept4` only when a connection (or an error) is pending,
/// or when the socket is not listening at all (`SO_ACCEPTCONN`): then the real call fails at
/// once, as it does without the shims (`EINVAL`, `EOPNOTSUPP`).
///
/// # Safety
/// As `accept4(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let real = || {
        // SAFETY: the caller's arguments, forwarded.
        let r = unsafe { raw!(libc::SYS_accept4, fd, addr, addrlen, flags) } as c_int;
        if r >= 0 {
            fdtable::set_socket(r);
        }
        r
    };
    // Bad flags fail at once, before any connection is taken.
    if flags & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) != 0 || !coop::fd_is_cooperative(fd) {
        return real();
    }
    let saved = sys::errno();
    let mut call = coop::Call::new(fd, Interest::Readable);
    let mut listening = false;
    loop {
        match sys::poll_now(fd, libc::POLLIN) {
            Some(0) if !coop::user_nonblocking(fd) && (listening || sys::is_listening(fd)) => listening = true,
            _ => {
                // A connection or an error is pending, the user wants EAGAIN, or the socket
                // does not listen: the real call returns at once.
                sys::set_errno(saved);
                return real();
            }
        }
        if let Err(err) = call.park() {
            return sys::fail(err) as c_int;
        }
    }
}

/// `connect(2)`. On a blocking socket in a tasklet: connect with `O_NONBLOCK` set for the
/// duration of the call only, park until writable (`SO_SNDTIMEO` as the deadline, reported as
/// `EINPROGRESS` like the kernel does), then report the outcome from `SO_ERROR`.
///
/// # Safety
/// As `connect(2)`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, addrlen: socklen_t) -> c_int {
    let real = || {
        // SAFETY: the caller's arguments, forwarded.
        unsafe { raw!(libc::SYS_connect, fd, addr, addrlen) as c_int }
    };
    if !coop::fd_is_cooperative(fd) {
        return real();
    }
    let saved = sys::errno();
    let flags = sys::getfl(fd);
    if flags < 0 || flags & libc::O_NONBLOCK as c_long != 0 {
        sys::set_errno(saved);
        return real();
    }
    let mut call = coop::Call::new(fd, Interest::Writable);
    let deadline = call.deadline();
    let nonblocking_connect = || {
        sys::setfl(fd, flags | libc::O_NONBLOCK as c_long);
        let r = real();
        let err = sys::errno();
        sys::setfl(fd, flags);
        (r, err)
    };
    loop {
        let (r, err) = nonblocking_connect();
        if r == 0 {
            sys::set_errno(saved);
            return 0;
        }
        match err {
            // EALREADY: a connect still in progress (one interrupted by a signal): a blocking
            // connect waits for it, as here.
            libc::EINPROGRESS | libc::EALREADY => break,
            // A Unix socket whose listener's backlog is full: a blocking connect would wait
            // for room, which has no readiness to park on. Retry shortly.
            libc::EAGAIN if deadline.is_none_or(|d| Instant::now() < d) => {
                let soon = Instant::now() + Duration::from_millis(1);
                match call.park_until(Some(soon.min(deadline.unwrap_or(soon)))) {
                    Ok(()) | Err(libc::EAGAIN) => {}
                    Err(err) => return sys::fail(err) as c_int,
                }
            }
            err => return sys::fail(err) as c_int,
        }
    }
    loop {
        match call.park() {
            Ok(()) => {}
            Err(libc::EAGAIN) => return sys::fail(libc::EINPROGRESS) as c_int,
            Err(err) => return sys::fail(err) as c_int,
        }
        match sys::poll_now(fd, libc::POLLOUT) {
            Some(0) => continue, // spurious wake-up
            None => return -1,
            Some(_) => {}
        }
        return match sys::socket_error(fd) {
            Some(0) => {
                // The kernel marks the socket connected (so that a later connect fails with
                // EISCONN, as after a blocking connect) only when connect is called again.
                let _ = nonblocking_connect();
                sys::set_errno(saved);
                0
            }
            Some(err) => sys::fail(err) as c_int,
            None => -1,
        };
    }
}

// ---------------------------------------------------------------------------------------------
// Multiplexing.

/// `poll(2)`. In a tasklet with a non-zero timeout: a zero-timeout poll first; if nothing is
/// ready, park (one socket waiting for one direction: on its own registration; otherwise on a
/// temporary epoll instance holding all the fds), then poll again with timeout zero for the
/// results.
///
/// # Safety
/// As `poll(2)`.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    let real = |timeout: c_int| {
        // SAFETY: the caller's arguments, forwarded.
        unsafe { sys::poll(fds, nfds, timeout) as c_int }
    };
    if timeout == 0 || !coop::thread_is_cooperative() {
        return real(timeout);
    }
    let saved = sys::errno();
    // poll is never restarted: any signal handler that runs from here on interrupts it.
    let marks = Marks::now();
    let mut since = Interrupts::now();
    let r = real(0);
    if r != 0 {
        return r;
    }
    let deadline =
        u64::try_from(timeout).ok().and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
    let fds_slice: &[pollfd] = if nfds == 0 {
        &[]
    } else {
        // SAFETY: the caller passes `nfds` valid pollfds.
        unsafe { std::slice::from_raw_parts(fds, nfds as usize) }
    };
    let mut single = match fds_slice {
        [one] if coop::fd_is_cooperative(one.fd) => {
            let read = libc::POLLIN | libc::POLLRDNORM;
            let write = libc::POLLOUT | libc::POLLWRNORM;
            match one.events {
                e if e != 0 && e & !read == 0 => Some((one.fd, Interest::Readable)),
                e if e != 0 && e & !write == 0 => Some((one.fd, Interest::Writable)),
                _ => None,
            }
        }
        _ => None,
    };
    loop {
        let waited = match single {
            Some((fd, interest)) => match coop::park(fd, interest, deadline, since) {
                // Closed under the wait: the zero-timeout poll reports POLLNVAL.
                Ok(()) | Err(libc::EBADF) => Waited::Ready,
                Err(libc::EAGAIN) => Waited::TimedOut,
                Err(libc::EINTR) => Waited::Interrupted,
                Err(libc::ENOTSOCK) => {
                    single = None; // not a socket after all: wait through epoll instead
                    continue;
                }
                Err(err) => Waited::Failed(err),
            },
            None => coop::wait_many(deadline, since, |epfd| {
                // Entries with no events too: poll reports POLLERR and POLLHUP regardless, and so
                // does epoll.
                for pfd in fds_slice.iter().filter(|pfd| pfd.fd >= 0) {
                    coop::epoll_add(epfd, pfd.fd, pfd.events as u16 as u32)?;
                }
                Ok(())
            }),
        };
        match waited {
            Waited::Ready => {}
            Waited::TimedOut => break,
            Waited::Interrupted if marks.interrupted(false) => return sys::fail(libc::EINTR) as c_int,
            Waited::Interrupted => {
                since = Interrupts::now(); // not a signal handler's doing: wait on
                continue;
            }
            Waited::Failed(libc::ECANCELED) => return sys::fail(libc::ECANCELED) as c_int,
            Waited::Failed(_) => {
                // The poller cannot help (out of fds, ...): block the thread as poll would.
                let left =
                    coop::remaining(deadline).map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as c_int);
                sys::set_errno(saved);
                return real(left);
            }
        }
        let r = real(0);
        if r != 0 {
            if r > 0 {
                sys::set_errno(saved);
            }
            return r;
        }
    }
    let r = real(0);
    if r >= 0 {
        sys::set_errno(saved);
    }
    r
}

/// `select(2)`. In a tasklet with a non-zero timeout: like `poll`, with the fd sets turned into
/// a temporary epoll instance. As on Linux, `timeout` is updated to the time not slept.
///
/// # Safety
/// As `select(2)`.
#[no_mangle]
pub unsafe extern "C" fn select(
    nfds: c_int,
    readfds: *mut libc::fd_set,
    writefds: *mut libc::fd_set,
    exceptfds: *mut libc::fd_set,
    timeout: *mut timeval,
) -> c_int {
    let real = |timeout: *mut timeval| {
        // SAFETY: the caller's arguments, forwarded.
        unsafe { sys::select(nfds, readfds, writefds, exceptfds, timeout) as c_int }
    };
    // The caller's pointers are read through the kernel: a bad one goes to the real call,
    // which reports EFAULT, instead of faulting here.
    let Ok(limit) = (if timeout.is_null() { Ok(None) } else { sys::read_user(timeout).map(Some) }) else {
        return real(timeout);
    };
    let valid_limit = limit.is_none_or(|tv| tv.tv_sec >= 0 && (0..1_000_000).contains(&tv.tv_usec));
    let zero = limit.is_some_and(|tv| tv.tv_sec == 0 && tv.tv_usec == 0);
    if zero
        || !valid_limit
        || !(0..=libc::FD_SETSIZE as c_int).contains(&nfds)
        || !coop::thread_is_cooperative()
    {
        return real(timeout);
    }
    let saved = sys::errno();
    // select is never restarted: any signal handler that runs from here on interrupts it.
    let marks = Marks::now();
    let mut since = Interrupts::now();
    let copy_of = |set: *mut libc::fd_set| if set.is_null() { Ok(None) } else { sys::read_user(set).map(Some) };
    let (Ok(read_copy), Ok(write_copy), Ok(except_copy)) = (copy_of(readfds), copy_of(writefds), copy_of(exceptfds))
    else {
        return real(timeout);
    };
    let original = [read_copy, write_copy, except_copy];
    // Writes to the sets: only after a zero-timeout select succeeded, so the kernel found them
    // writable.
    let restore_sets = || {
        for (set, copy) in [readfds, writefds, exceptfds].into_iter().zip(original) {
            if let Some(copy) = copy {
                // SAFETY: `set` is non-null (it had a copy) and valid per the caller.
                unsafe { *set = copy };
            }
        }
    };
    let check_now = || {
        restore_sets();
        let mut zero = timeval { tv_sec: 0, tv_usec: 0 };
        real(&mut zero)
    };
    let mut zero = timeval { tv_sec: 0, tv_usec: 0 };
    let r = real(&mut zero); // the sets are still the caller's
    if r != 0 {
        return r;
    }
    let deadline = limit.and_then(|tv| {
        Instant::now().checked_add(Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000))
    });
    // As the kernel: the time left, written back if the timeval is writable (ignored if not).
    let report_left = || {
        if let (false, Some(left)) = (timeout.is_null(), coop::remaining(deadline)) {
            let tv = timeval { tv_sec: left.as_secs() as libc::time_t, tv_usec: left.subsec_micros() as libc::suseconds_t };
            let _ = sys::write_user(timeout, tv);
        }
    };
    loop {
        let waited = coop::wait_many(deadline, since, |epfd| {
            for fd in 0..nfds {
                let mut events = 0;
                for (copy, bits) in original.iter().zip([libc::EPOLLIN, libc::EPOLLOUT, libc::EPOLLPRI]) {
                    // SAFETY: `fd` is below FD_SETSIZE (nfds was checked).
                    if copy.as_ref().is_some_and(|set| unsafe { libc::FD_ISSET(fd, set) }) {
                        events |= bits as u32;
                    }
                }
                if events != 0 {
                    coop::epoll_add(epfd, fd, events)?;
                }
            }
            Ok(())
        });
        match waited {
            Waited::Ready | Waited::TimedOut => {
                let r = check_now();
                if r != 0 || matches!(waited, Waited::TimedOut) {
                    report_left();
                    if r >= 0 {
                        sys::set_errno(saved);
                    }
                    return r;
                }
            }
            Waited::Interrupted if marks.interrupted(false) => {
                // As the kernel's select: the time left, the sets as they were given.
                report_left();
                restore_sets();
                return sys::fail(libc::EINTR) as c_int;
            }
            Waited::Interrupted => since = Interrupts::now(), // not a signal handler's doing
            Waited::Failed(libc::ECANCELED) => return sys::fail(libc::ECANCELED) as c_int,
            Waited::Failed(_) => {
                report_left();
                sys::set_errno(saved);
                return real(timeout);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sleeping. A signal handler that runs on the thread during a cooperative sleep interrupts it
// (EINTR, with the time left), as it interrupts the kernel's. A kill ends it as completed, never
// with EINTR: std's `thread::sleep` retries EINTR with the time left, which would spin while
// the kill is pending.

/// A valid `timespec` as a `Duration` (`None` if out of range, which the real call rejects).
fn duration_of(ts: &timespec) -> Option<Duration> {
    (ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec))
        .then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// `clock_nanosleep(2)` (returns the error number, leaves `errno` alone). Cooperative for
/// `CLOCK_MONOTONIC` and `CLOCK_REALTIME`, relative or `TIMER_ABSTIME` (an absolute deadline
/// is turned into a duration once: a later jump of the real-time clock is not followed).
///
/// # Safety
/// As `clock_nanosleep(2)`.
#[no_mangle]
pub unsafe extern "C" fn clock_nanosleep(
    clock: libc::clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    let real = || {
        let saved = sys::errno();
        // SAFETY: the caller's arguments, forwarded.
        let r = unsafe { raw!(libc::SYS_clock_nanosleep, clock, flags, req, rem) };
        let err = if r < 0 { sys::errno() } else { 0 };
        sys::set_errno(saved);
        err
    };
    let clock_ok = clock == libc::CLOCK_MONOTONIC || clock == libc::CLOCK_REALTIME;
    if req.is_null() || !clock_ok || !coop::thread_is_cooperative() {
        return real();
    }
    // Read through the kernel: a bad pointer goes to the real call (EFAULT).
    let Ok(req_ts) = sys::read_user(req) else { return real() };
    let Some(mut dur) = duration_of(&req_ts) else { return real() };
    let absolute = flags & libc::TIMER_ABSTIME != 0;
    if absolute {
        let mut now = timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `now` is a valid timespec (clock_gettime is a vDSO call, not hooked).
        if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
            return real();
        }
        let Some(now) = duration_of(&now) else { return real() };
        dur = dur.saturating_sub(now);
    }
    match coop::sleep(dur) {
        Ok(()) => 0,
        Err(left) => {
            if !absolute && !rem.is_null() && sys::write_user(rem, timespec_of(left)).is_err() {
                return libc::EFAULT;
            }
            libc::EINTR
        }
    }
}

/// `dur` as a `timespec`.
fn timespec_of(dur: Duration) -> timespec {
    timespec { tv_sec: dur.as_secs() as libc::time_t, tv_nsec: dur.subsec_nanos() as c_long }
}

/// `nanosleep(2)`.
///
/// # Safety
/// As `nanosleep(2)`.
#[no_mangle]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    if !req.is_null() && coop::thread_is_cooperative() {
        // Read through the kernel: a bad pointer goes to the real call (EFAULT).
        if let Some(dur) = sys::read_user(req).ok().as_ref().and_then(duration_of) {
            return match coop::sleep(dur) {
                Ok(()) => 0,
                Err(left) if !rem.is_null() && sys::write_user(rem, timespec_of(left)).is_err() => {
                    sys::fail(libc::EFAULT) as c_int
                }
                Err(_) => sys::fail(libc::EINTR) as c_int,
            };
        }
    }
    // SAFETY: the caller's arguments, forwarded.
    unsafe { raw!(libc::SYS_nanosleep, req, rem) as c_int }
}

/// `usleep(3)`.
///
/// # Safety
/// None beyond the C function's (it takes no pointers); `unsafe` as every hook.
#[no_mangle]
pub unsafe extern "C" fn usleep(usec: libc::useconds_t) -> c_int {
    let dur = Duration::from_micros(usec.into());
    if coop::thread_is_cooperative() {
        return match coop::sleep(dur) {
            Ok(()) => 0,
            Err(_) => sys::fail(libc::EINTR) as c_int,
        };
    }
    let req = timespec_of(dur);
    // SAFETY: `req` is a valid timespec; no remainder is asked for.
    unsafe { raw!(libc::SYS_nanosleep, &req as *const timespec, 0) as c_int }
}

/// `sleep(3)`: returns the seconds not slept (0 unless interrupted by a signal handler), in
/// whole seconds as glibc counts them (the fraction is dropped), with `errno` left at `EINTR`
/// when interrupted.
///
/// # Safety
/// None beyond the C function's (it takes no pointers); `unsafe` as every hook.
#[no_mangle]
pub unsafe extern "C" fn sleep(seconds: c_uint) -> c_uint {
    if coop::thread_is_cooperative() {
        let saved = sys::errno();
        return match coop::sleep(Duration::from_secs(seconds.into())) {
            Ok(()) => {
                sys::set_errno(saved);
                0
            }
            Err(left) => {
                sys::set_errno(libc::EINTR);
                left.as_secs() as c_uint
            }
        };
    }
    let saved = sys::errno();
    let req = timespec { tv_sec: seconds as libc::time_t, tv_nsec: 0 };
    let mut rem = timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `req` and `rem` are valid timespecs.
    let r = unsafe { raw!(libc::SYS_nanosleep, &req as *const timespec, &mut rem as *mut timespec) };
    if r < 0 {
        rem.tv_sec as c_uint
    } else {
        sys::set_errno(saved);
        0
    }
}

// ---------------------------------------------------------------------------------------------
// Signal handlers: wrapped so that a handler running on a thread interrupts the hooked calls
// parked there (see `signals`).

/// `sigaction(2)`.
///
/// # Safety
/// As `sigaction(2)`.
#[no_mangle]
pub unsafe extern "C" fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { signals::sigaction(sig, act, old) }
}

/// `signal(3)` (BSD semantics, as glibc's: `SA_RESTART` unless `siginterrupt` said otherwise).
///
/// # Safety
/// As `signal(3)`: `handler` is `SIG_DFL`, `SIG_IGN` or a function of the right type.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    signals::install(sig, handler, false)
}

/// `bsd_signal(3)`: `signal`.
///
/// # Safety
/// As `signal(3)`.
#[no_mangle]
pub unsafe extern "C" fn bsd_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    signals::install(sig, handler, false)
}

/// `sysv_signal(3)` (one-shot, not restarting).
///
/// # Safety
/// As `signal(3)`.
#[no_mangle]
pub unsafe extern "C" fn sysv_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    signals::install(sig, handler, true)
}

/// `__sysv_signal`: what `signal` is in C code compiled for strict POSIX (no `_DEFAULT_SOURCE`).
///
/// # Safety
/// As `signal(3)`.
#[no_mangle]
pub unsafe extern "C" fn __sysv_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    signals::install(sig, handler, true)
}

/// `siginterrupt(3)`: toggles `SA_RESTART` of the installed action, as glibc's does, and
/// remembers it for later `signal` calls.
///
/// # Safety
/// None beyond the C function's; `unsafe` as every hook.
#[no_mangle]
pub unsafe extern "C" fn siginterrupt(sig: c_int, flag: c_int) -> c_int {
    // SAFETY: plain data; all zeroes is valid.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a query into a valid struct.
    if unsafe { sys::real_sigaction(sig, ptr::null(), &mut action) } != 0 {
        return -1;
    }
    if flag != 0 {
        action.sa_flags &= !libc::SA_RESTART;
    } else {
        action.sa_flags |= libc::SA_RESTART;
    }
    // SAFETY: the kernel's own action (our trampoline, if wrapped), with one flag changed.
    if unsafe { sys::real_sigaction(sig, &action, ptr::null_mut()) } != 0 {
        return -1;
    }
    signals::set_interrupting(sig, flag);
    0
}

// ---------------------------------------------------------------------------------------------
// Descriptor bookkeeping: these only keep the fd table in step and forward.

/// `close(2)`: deletes the fd's poller registration (while the number still names the file),
/// then closes.
///
/// # Safety
/// As `close(2)`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    fdtable::closing(fd);
    // SAFETY: the caller's argument, forwarded.
    unsafe { raw!(libc::SYS_close, fd) as c_int }
}

/// `socket(2)`.
///
/// # Safety
/// As `socket(2)`.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: the caller's arguments, forwarded (no pointers).
    let fd = unsafe { raw!(libc::SYS_socket, domain, ty, protocol) as c_int };
    if fd >= 0 {
        fdtable::set_socket(fd);
    }
    fd
}

/// `socketpair(2)`.
///
/// # Safety
/// As `socketpair(2)`.
#[no_mangle]
pub unsafe extern "C" fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int {
    // SAFETY: the caller's arguments, forwarded.
    let r = unsafe { raw!(libc::SYS_socketpair, domain, ty, protocol, sv) as c_int };
    if r == 0 {
        // SAFETY: on success the kernel wrote two fds to `sv`, valid per the caller.
        let (a, b) = unsafe { (*sv, *sv.add(1)) };
        fdtable::set_socket(a);
        fdtable::set_socket(b);
    }
    r
}

/// `dup(2)`.
///
/// # Safety
/// As `dup(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    // SAFETY: the caller's argument, forwarded.
    let new = unsafe { raw!(libc::SYS_dup, old) as c_int };
    if new >= 0 {
        fdtable::duplicated(old, new);
    }
    new
}

/// `dup2(2)`: an open `new` is closed by the kernel, so its registration goes first.
///
/// # Safety
/// As `dup2(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new && sys::getfl(old) >= 0 {
        fdtable::closing(new);
    }
    let r = sys::dup2(old, new) as c_int;
    if r >= 0 && old != new {
        fdtable::duplicated(old, new);
    }
    r
}

/// `dup3(2)`.
///
/// # Safety
/// As `dup3(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // Only a call that will succeed closes `new` (bad flags or a bad `old` fail first).
    if old != new && flags & !libc::O_CLOEXEC == 0 && sys::getfl(old) >= 0 {
        fdtable::closing(new);
    }
    // SAFETY: the caller's arguments, forwarded.
    let r = unsafe { raw!(libc::SYS_dup3, old, new, flags) as c_int };
    if r >= 0 {
        fdtable::duplicated(old, new);
    }
    r
}

/// `fcntl(2)`, declared with one fixed word for the variadic argument (ABI-compatible on the
/// supported targets: x86_64 SysV, AAPCS64 on Linux and the riscv64 psABI pass variadic integer
/// and pointer arguments in the same registers as fixed ones). Only
/// `F_DUPFD`/`F_DUPFD_CLOEXEC` concern the shims; everything else, including `F_SETFL` and
/// `F_GETFL`, goes to the kernel as is: the shims never change a file's flags, so `F_GETFL`
/// shows exactly what the user set.
///
/// # Safety
/// As `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's arguments, forwarded.
    let r = unsafe { raw!(libc::SYS_fcntl, fd, cmd, arg) as c_int };
    if r >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
        fdtable::duplicated(fd, r);
    }
    r
}

/// `fcntl64`: what C code built with `_FILE_OFFSET_BITS=64` calls; the same as `fcntl` on
/// x86_64.
///
/// # Safety
/// As `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { fcntl(fd, cmd, arg) }
}

/// `ioctl(2)`, with a fixed third word (see `fcntl`). `FIONBIO` goes to the kernel like every
/// request: the non-blocking flag the user sets is the one the cooperative path reads.
///
/// # Safety
/// As `ioctl(2)`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    // SAFETY: the caller's arguments, forwarded.
    unsafe { raw!(libc::SYS_ioctl, fd, request, arg) as c_int }
}

/// `setsockopt(2)`: forwarded; the kernel keeps `SO_RCVTIMEO`/`SO_SNDTIMEO`, and the
/// cooperative path reads them from there when it is about to park.
///
/// # Safety
/// As `setsockopt(2)`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: the caller's arguments, forwarded.
    unsafe { raw!(libc::SYS_setsockopt, fd, level, name, value, len) as c_int }
}

/// `getsockopt(2)`: forwarded (the kernel's values are the user's: the shims set none).
///
/// # Safety
/// As `getsockopt(2)`.
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    // SAFETY: the caller's arguments, forwarded.
    unsafe { raw!(libc::SYS_getsockopt, fd, level, name, value, len) as c_int }
}

// ---------------------------------------------------------------------------------------------
// Name resolution: no readiness to wait for (glibc's resolver makes its own internal calls,
// which never reach the hooks), so in a tasklet the real function runs on the `unblock` pool.

/// Something the pool's job owns and hands back, moved across threads. The job owns copies
/// of the caller's inputs and its own output buffers: a kill returns from the hook at once and
/// the caller's frame (its buffers) may be gone while the job still runs.
struct Owned<T>(T);
// SAFETY: the raw pointers inside (`addrinfo` copies and lists) are owned by the value, never
// shared with the caller's thread while the job runs.
unsafe impl<T> Send for Owned<T> {}

impl<T> Owned<T> {
    /// Unwraps the value (a method, so a closure captures the whole wrapper, not its
    /// non-`Send` field).
    fn into_inner(self) -> T {
        self.0
    }
}

/// A list from the real `getaddrinfo`, freed unless handed to the caller.
struct AddrinfoList(*mut libc::addrinfo);

impl Drop for AddrinfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a list the real `getaddrinfo` returned, owned by this value alone.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// A C string argument copied (`None` for NULL).
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string.
unsafe fn copy_cstr(p: *const libc::c_char) -> Option<std::ffi::CString> {
    // SAFETY: per this function's contract.
    (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(p) }.to_owned())
}

/// Pointer to a copied C string argument (NULL for `None`).
fn cstr_ptr(s: &Option<std::ffi::CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

type GetaddrinfoFn = unsafe extern "C" fn(
    *const libc::c_char,
    *const libc::c_char,
    *const libc::addrinfo,
    *mut *mut libc::addrinfo,
) -> c_int;

type GetnameinfoFn = unsafe extern "C" fn(
    *const sockaddr,
    socklen_t,
    *mut libc::c_char,
    socklen_t,
    *mut libc::c_char,
    socklen_t,
    c_int,
) -> c_int;

static REAL_GETADDRINFO: sys::NextSymbol = sys::NextSymbol::new(c"getaddrinfo");
static REAL_GETNAMEINFO: sys::NextSymbol = sys::NextSymbol::new(c"getnameinfo");

/// Runs `f` on the `unblock` pool (kills deferred) and hands its `errno` back with what it
/// returns. A kill ends the wait at once: `EAI_SYSTEM` with `EINTR`, and the job finishes on
/// its pool thread, where its output is dropped (freed).
fn on_pool<T: Send + 'static>(f: impl FnOnce() -> (c_int, T) + Send + 'static) -> (c_int, Option<T>) {
    let saved = sys::errno();
    let done = tasklets::io::with_kills_deferred(|| {
        tasklets::io::unblock_unless_killed(move || {
            let (r, out) = f();
            (r, sys::errno(), out)
        })
    });
    match done {
        Some((r, err, out)) => {
            sys::set_errno(if r == libc::EAI_SYSTEM { err } else { saved });
            (r, Some(out))
        }
        None => {
            sys::set_errno(libc::EINTR);
            (libc::EAI_SYSTEM, None)
        }
    }
}

/// `getaddrinfo(3)`: on the `unblock` pool when called in a tasklet.
///
/// # Safety
/// As `getaddrinfo(3)`.
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const libc::c_char,
    service: *const libc::c_char,
    hints: *const libc::addrinfo,
    res: *mut *mut libc::addrinfo,
) -> c_int {
    let Some(addr) = REAL_GETADDRINFO.get() else {
        sys::set_errno(libc::ENOSYS);
        return libc::EAI_SYSTEM;
    };
    // SAFETY: `addr` is libc's `getaddrinfo`, whose type this is.
    let real: GetaddrinfoFn = unsafe { std::mem::transmute::<usize, GetaddrinfoFn>(addr) };
    if !coop::thread_is_cooperative() {
        // SAFETY: the caller's arguments, forwarded.
        return unsafe { real(node, service, hints, res) };
    }
    // SAFETY: the caller's strings (NULL or NUL-terminated, per getaddrinfo's contract).
    let (node, service) = unsafe { (copy_cstr(node), copy_cstr(service)) };
    // Only these fields of `hints` are read by getaddrinfo; the others must be zero or NULL.
    let hints = (!hints.is_null()).then(|| {
        // SAFETY: a non-NULL `hints` points to an `addrinfo` (getaddrinfo's contract).
        let h = unsafe { &*hints };
        // SAFETY: an all-zero `addrinfo` is valid (null pointers, zero integers).
        let mut copy: libc::addrinfo = unsafe { std::mem::zeroed() };
        copy.ai_flags = h.ai_flags;
        copy.ai_family = h.ai_family;
        copy.ai_socktype = h.ai_socktype;
        copy.ai_protocol = h.ai_protocol;
        Owned(copy)
    });
    let (r, list) = on_pool(move || {
        let hints = hints.map(Owned::into_inner);
        let mut list: *mut libc::addrinfo = std::ptr::null_mut();
        let hints_ptr = hints.as_ref().map_or(std::ptr::null(), |h| h as *const libc::addrinfo);
        // SAFETY: pointers to the job's own copies and its own output variable.
        let r = unsafe { real(cstr_ptr(&node), cstr_ptr(&service), hints_ptr, &mut list) };
        (r, Owned(AddrinfoList(list)))
    });
    if let Some(list) = list {
        let list = list.into_inner();
        if r == 0 {
            // SAFETY: `res` is the caller's output pointer (getaddrinfo's contract); the list
            // is now the caller's, to free with freeaddrinfo.
            unsafe { *res = list.0 };
            std::mem::forget(list);
        }
    }
    r
}

/// `getnameinfo(3)`: on the `unblock` pool when called in a tasklet.
///
/// # Safety
/// As `getnameinfo(3)`.
#[no_mangle]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut libc::c_char,
    hostlen: socklen_t,
    serv: *mut libc::c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    let Some(addr) = REAL_GETNAMEINFO.get() else {
        sys::set_errno(libc::ENOSYS);
        return libc::EAI_SYSTEM;
    };
    // SAFETY: `addr` is libc's `getnameinfo`, whose type this is.
    let real: GetnameinfoFn = unsafe { std::mem::transmute::<usize, GetnameinfoFn>(addr) };
    if !coop::thread_is_cooperative() {
        // SAFETY: the caller's arguments, forwarded.
        return unsafe { real(sa, salen, host, hostlen, serv, servlen, flags) };
    }
    // The job works on copies: a kill returns at once and the caller's buffers may be gone.
    let mut storage = Owned(
        // SAFETY: an all-zero `sockaddr_storage` is valid.
        unsafe { std::mem::zeroed::<libc::sockaddr_storage>() },
    );
    let copied = (salen as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    if !sa.is_null() {
        // SAFETY: `sa` points to `salen` readable bytes (getnameinfo's contract); `storage`
        // has room for `copied` bytes.
        unsafe { std::ptr::copy_nonoverlapping(sa.cast::<u8>(), (&mut storage.0 as *mut libc::sockaddr_storage).cast::<u8>(), copied) };
    }
    let sa_null = sa.is_null();
    let host_len = if host.is_null() { 0 } else { hostlen as usize };
    let serv_len = if serv.is_null() { 0 } else { servlen as usize };
    let (r, out) = on_pool(move || {
        let storage = storage.into_inner();
        let mut host_buf = vec![0 as libc::c_char; host_len];
        let mut serv_buf = vec![0 as libc::c_char; serv_len];
        let sa = if sa_null { std::ptr::null() } else { (&storage as *const libc::sockaddr_storage).cast::<sockaddr>() };
        let host = if host_len == 0 { std::ptr::null_mut() } else { host_buf.as_mut_ptr() };
        let serv = if serv_len == 0 { std::ptr::null_mut() } else { serv_buf.as_mut_ptr() };
        // SAFETY: pointers to the job's own copy and buffers of the caller's sizes.
        let r = unsafe { real(sa, copied as socklen_t, host, host_len as socklen_t, serv, serv_len as socklen_t, flags) };
        (r, (host_buf, serv_buf))
    });
    if let (0, Some((host_buf, serv_buf))) = (r, out) {
        // SAFETY: the caller's output buffers of these sizes (getnameinfo's contract).
        unsafe {
            if host_len > 0 {
                std::ptr::copy_nonoverlapping(host_buf.as_ptr(), host, host_len);
            }
            if serv_len > 0 {
                std::ptr::copy_nonoverlapping(serv_buf.as_ptr(), serv, serv_len);
            }
        }
    }
    r
}
