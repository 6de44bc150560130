//! # tasklets-shims
//!
//! Stackless's `stacklesssocket.install()` for Rust: after [`install()`], unmodified blocking
//! code — `std::net`, `std::thread::sleep`, synchronous third-party crates, C libraries —
//! parks the calling *tasklet* instead of the OS thread, so thousands of blocking-style
//! connections run concurrently on one thread.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::{Duration, Instant};
//!
//! use tasklets_shims as _; // reference the crate, or the linker drops it (install() does too)
//!
//! tasklets_shims::install().expect("a dynamically linked glibc target");
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let server = tasklets::spawn(move || {
//!     for _ in 0..10 {
//!         let (mut conn, _) = listener.accept().unwrap(); // parks this tasklet, not the thread
//!         tasklets::spawn(move || {
//!             let mut buf = [0; 5];
//!             conn.read_exact(&mut buf).unwrap();
//!             conn.write_all(&buf).unwrap();
//!         });
//!     }
//! });
//! let start = Instant::now();
//! let clients: Vec<_> = (0..10)
//!     .map(|_| {
//!         tasklets::spawn(move || {
//!             std::thread::sleep(Duration::from_millis(100)); // a tasklet sleep now
//!             let mut conn = TcpStream::connect(addr).unwrap();
//!             conn.write_all(b"hello").unwrap();
//!             let mut buf = [0; 5];
//!             conn.read_exact(&mut buf).unwrap();
//!             buf
//!         })
//!     })
//!     .collect();
//! for client in clients {
//!     assert_eq!(&client.join().unwrap(), b"hello");
//! }
//! server.join().unwrap();
//! // Ten 100 ms sleeps on one thread, at the same time.
//! assert!(start.elapsed() < Duration::from_secs(1));
//! ```
//!
//! `docs/shims.md` in the repository lists every hooked call, what is not covered, and how
//! to use the crate.
//!
//! # Design
//!
//! **Interposition.** The `hooks` module defines `#[no_mangle] extern "C"` functions named like
//! libc's (`recv`, `accept4`, `clock_nanosleep`, ...). The dynamic linker binds every call in
//! the process to the executable's definition first, so std, other crates and C code all
//! reach the hooks. A hook forwards with a raw system call (`sys`), never with `libc::name`
//! (that would be the hook itself), `getaddrinfo`/`getnameinfo`, which are not system calls,
//! through `dlsym(RTLD_NEXT)`, and `sigaction` through glibc's exported `__sigaction` (on
//! x86_64 the kernel needs the signal-return trampoline only glibc supplies).
//!
//! **Which calls cooperate.** A hooked call takes the cooperative path only when all hold:
//! [`install()`] was called (an atomic flag, checked first, so nothing else is touched before
//! `main`); the thread has a scheduler (`tasklets::io::is_cooperative`, one TLS read); for fd
//! calls, the fd is a socket above 2 and below `TABLE_SIZE` (cached `fstat` class in
//! `fdtable`); and the call does not itself ask not to wait (`MSG_DONTWAIT`, or a receive of
//! `MSG_ERRQUEUE`/`MSG_OOB`, which the kernel never makes wait). Everything
//! else is forwarded untouched: before `install()`, after [`uninstall()`], on threads
//! without tasklets, for files, pipes, ttys and for stdin/stdout/stderr. (Std's stdout and
//! stderr locks are re-entrant per thread: a tasklet parked inside `write` while holding one
//! would let a second tasklet of the thread into the same `RefCell` and panic. Stdio fds
//! therefore block the thread, as before.)
//!
//! **The cooperative socket call: try first, park on `EAGAIN`.**
//!
//! ```text
//! recv(fd, buf, len, 0) in a tasklet
//!   1. recvfrom(fd, buf, len, MSG_DONTWAIT)  ── data / EOF / error ───► return it
//!   2. EAGAIN: F_GETFL has O_NONBLOCK? (the user asked for non-blocking) ► return EAGAIN
//!   3. deadline = now + SO_RCVTIMEO (getsockopt; once per call, at its first park: the
//!      timeout bounds the whole call, as in the kernel; none = forever)
//!   4. park on the fd's Registration (made on the first park, kept until close), kills
//!      deferred ─ readiness ──► back to 1
//!                ─ deadline ──► return EAGAIN (what SO_RCVTIMEO gives; std: WouldBlock)
//!                ─ a signal handler ran on the thread ──► EINTR, or wait on (SA_RESTART)
//!                ─ killed ────► return ECANCELED (the kill lands at the next switch point)
//!                ─ closed under the wait ──► return EBADF
//! ```
//!
//! `coop::Call` is that loop and its state (deadline, signal counts at the start), one per
//! hooked call however many attempts it makes. `read`/`write` on a socket are
//! `recv`/`send` with flags 0 (so says POSIX), except that an empty `read` goes to the
//! kernel's `read` (it returns 0 at once and leaves a datagram queued); `readv`/`writev` are
//! the kernel's own, made non-blocking per call with `RWF_NOWAIT` (with a
//! `recvmsg`/`sendmsg` fallback for kernels that refuse the flag on sockets).
//! `send`/`sendto`/`sendmsg`/`write`/`writev` keep going until every byte is queued, as a
//! blocking stream socket does; `MSG_WAITALL` receives keep going too (streams only).
//! `accept4` has no per-call flag: it polls (timeout 0) first and calls the real `accept4`
//! only when a connection or an error is pending or the socket does not listen. `connect` on
//! a blocking socket sets `O_NONBLOCK` for the duration of the system call only, parks until
//! writable, reads the outcome from `SO_ERROR`, and connects once more so that the kernel
//! marks the socket connected (a third `connect` then fails with `EISCONN`, as after a
//! blocking one).
//!
//! **`EINTR`** (the `signals` module): while the shims are installed, the `sigaction` family
//! puts a trampoline in front of each handler of an asynchronous signal; it counts the
//! delivery on its thread and calls `tasklets::io::interrupt()`, which wakes the thread's
//! interruptible waits. Every park is one; a woken call fails with `EINTR` when the kernel
//! would fail it (no `SA_RESTART`, or a call never restarted), else waits on.
//!
//! **Invariants.**
//! - *The shims never change a file's state.* No `O_NONBLOCK` is left set (only `connect`
//!   sets it for the span of one system call, on a socket not yet connected), no socket option
//!   is set. The kernel's flags and timeouts are the user's, so `F_GETFL`, `FIONBIO`,
//!   `SO_RCVTIMEO` need no bookkeeping and cannot go stale across `dup`, `fork` or
//!   `SCM_RIGHTS`; a socket used outside a tasklet, on another thread or after
//!   [`uninstall()`] behaves exactly as without the shims; and any call the shims do not hook
//!   (`sendfile`, `splice`, `recvmmsg`, glibc-internal calls) still blocks correctly, it just
//!   blocks the thread.
//! - *Register once, shared.* A socket's `tasklets::io::Registration` is made on its first
//!   park and kept in `fdtable` until `close` (or `dup2`/`dup3` onto it) deregisters it,
//!   before the real close. It shares the fd's one registration per poller with every other
//!   user of the fd (`tasklets::net`, other `Registration`s): the runtime's fd records count
//!   them, and the last to leave deletes the fd from every poller. A tasklet still parked on
//!   the fd when it is closed under its feet (by another tasklet or thread) wakes with
//!   `EBADF`. A number closed behind libc's back is caught by the inode check on the next
//!   park (and by the runtime's own check when another user joins).
//! - *Hooks need nothing.* The pass-through path of every hook is an atomic load or two plus
//!   the system call: no initialisation, no allocation, no lock, `errno` untouched except by
//!   the system call itself. The cooperative path may allocate (timers, registrations): it is
//!   reached only from a tasklet thread on a socket, never from an allocator. Every hook
//!   restores `errno` on success.
//! - *Bad pointers are the kernel's to report.* A hook that must read or write a caller's
//!   memory itself (a sleep's `timespec`, `select`'s sets and `timeval`, a `readv` iovec on
//!   the fallback path) does it through `process_vm_readv`/`process_vm_writev`, or after the
//!   kernel has read it in a call that succeeded, so a bad pointer fails with `EFAULT`
//!   instead of crashing the hook.
//! - *Never unwind through C.* Every park runs in `tasklets::io::with_kills_deferred`. A kill
//!   fails the park: I/O returns `-1`/`ECANCELED`; sleeps return as completed (never `EINTR`,
//!   which std's `thread::sleep` retries with the time left: it would spin while the kill is
//!   pending); the kill is delivered at the tasklet's next ordinary switch point. A sleep cut
//!   short by a kill yields once before returning, so a loop of nothing but sleeps cannot keep
//!   the thread (it still ends only by its own exit condition: see `docs/shims.md`).
//! - *The runtime's own calls never reach the hooks:* `polling` drives epoll through rustix,
//!   whose `linux_raw` backend (the default on Linux x86_64, aarch64 and riscv64) makes raw
//!   system calls.
//!
//! **Multiplexing.** `poll`/`select` with a non-zero timeout in a tasklet run once with
//! timeout 0; if nothing is ready, a single socket waiting in one direction parks on its own
//! registration, anything else on a temporary epoll instance holding all the fds
//! (level-triggered), itself waited on as one readable fd; then the zero-timeout call runs
//! again for the results. **Sleeps** (`clock_nanosleep`, `nanosleep`, `usleep`, `sleep`) become
//! `tasklets::io::sleep_interruptible`. **DNS** (`getaddrinfo`, `getnameinfo`) runs on
//! `tasklets::unblock`'s pool.
//!
//! **Rejected alternatives.**
//! - *Set `O_NONBLOCK` once per socket and hide it* (Go, libco, the first sketch of this
//!   crate): it needs a per-fd record of what the user asked, kept in step across `dup` (the
//!   flag belongs to the open file description, shared by all dups and by children after
//!   `fork`), a fallback that re-creates blocking behaviour with `poll` outside tasklets and
//!   after `uninstall()`, and it breaks every call the shims do not hook (`sendfile` from
//!   `std::io::copy`, fortified `__recv_chk` from C, child processes inheriting the socket)
//!   with spurious `EAGAIN`s. Per-call `MSG_DONTWAIT` gets the same single system call on the
//!   fast path and leaves the kernel's truth alone. It costs one `fcntl(F_GETFL)` per park and
//!   one `getsockopt` per call, a few hundred nanoseconds against the microseconds a park
//!   costs.
//! - *A registration per wait* (register, wait, delete): two more `epoll_ctl` per park.
//! - *Mirroring timeouts in the table*: saves the `getsockopt` per park, but goes stale for
//!   sockets whose options were set before the shims saw them or through a dup.
//! - *`dlsym(RTLD_NEXT)` for every forward*: the look-up may allocate and take the loader's
//!   lock, which a hook called from inside an allocator or before `main` must not; raw system
//!   calls need neither and also work in static binaries.
//! - *`EINTR` from the poller's own interruption* (`epoll_wait` fails with `EINTR` when a
//!   handler runs while the thread idles in it): it misses every signal that arrives while the
//!   thread is running tasklets, cannot tell `SA_RESTART` handlers from others, and `polling`
//!   retries `EINTR` inside its `wait` anyway. Wrapping the handlers sees every delivery, on
//!   the thread it happened on, with the flags the kernel applied.
//! - *Leaving a socket closed under a parked call registered* (the first design leaked the
//!   registration, so as not to delete it after the number was reused): the parked tasklet
//!   then hung for good. Deleting it at the close, while the number still names the file,
//!   and waking the waiters with `EBADF` leaks nothing and hangs nobody.
//!
//! # Where it cannot work
//!
//! Interposition needs a dynamically linked glibc executable on Linux x86_64, aarch64 or
//! riscv64 (the configurations its tests run on: x86_64 natively, the other two under
//! qemu-user, `.ci/cross`). Where those kernels lack a system call glibc's wrapper does not
//! use (`poll`, `select`, `dup2` on aarch64 and riscv64), the forward makes the call glibc
//! makes there instead (`ppoll`, `pselect6`, `dup3`: see `sys`). Static builds (`-C target-feature=+crt-static`), musl and other
//! targets compile without any hook, and [`install()`] returns an [`Unsupported`] error there
//! instead of silently doing nothing.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

// ELF symbol interposition of glibc's entry points: nothing of it carries over to Mach-O (macOS
// binds symbols two-level, by library) or to FreeBSD's libc, so other operating systems are
// refused at build time rather than given a crate that hooks nothing (other Linux builds, static
// or musl, compile without hooks: see "Where it cannot work" above).
#[cfg(not(target_os = "linux"))]
compile_error!(
    "tasklets-shims works on Linux only (it interposes glibc's symbols in ELF executables); on \
     other systems call tasklets::net and tasklets::time directly, and list tasklets-shims under \
     [target.'cfg(target_os = \"linux\")'.dependencies] in a crate that builds for several systems"
);

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this build can interpose libc: dynamically linked glibc on Linux x86_64, aarch64 or
/// riscv64 (the architectures the test suite runs on: natively and under qemu-user).
macro_rules! if_supported {
    ($($item:item)*) => {$(
        #[cfg(all(
            target_os = "linux",
            any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"),
            target_env = "gnu",
            not(target_feature = "crt-static")
        ))]
        $item
    )*};
}

/// [`if_supported!`]'s condition as a value.
const SUPPORTED: bool = cfg!(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"),
    target_env = "gnu",
    not(target_feature = "crt-static")
));

if_supported! {
    mod coop;
    mod fdtable;
    mod hooks;
    mod signals;
    mod sys;
    pub use fdtable::TABLE_SIZE;
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Turns the shims on for the whole process: from now on, blocking calls made in tasklets
/// park the tasklet instead of the thread. Threads without tasklets are unaffected. Calling
/// it again is harmless.
///
/// The crate must be linked for the hooks to exist: calling `install()` references it; a
/// crate that only lists `tasklets-shims` in `Cargo.toml` must also say
/// `use tasklets_shims as _;`, or the linker drops it and nothing is hooked.
///
/// # Errors
///
/// [`Unsupported`] on builds where interposition cannot work: static (`+crt-static`), musl,
/// or targets other than Linux x86_64, aarch64 and riscv64 with glibc.
pub fn install() -> Result<(), Unsupported> {
    if SUPPORTED {
        INSTALLED.store(true, Ordering::SeqCst);
        Ok(())
    } else {
        Err(Unsupported { _private: () })
    }
}

/// Turns the shims off: every hooked call goes straight to the kernel again, in every thread
/// (a tasklet already parked inside a hooked call finishes that call cooperatively). Sockets
/// used while the shims were on behave exactly as before: the shims never change their state.
pub fn uninstall() {
    INSTALLED.store(false, Ordering::SeqCst);
}

/// Whether [`install()`] is in force.
#[inline]
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// The error of [`install()`] on a build where interposing libc cannot work.
#[derive(Clone, PartialEq, Eq)]
pub struct Unsupported {
    _private: (),
}

impl fmt::Debug for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Unsupported")
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "tasklets-shims cannot interpose libc in this build: it needs a dynamically linked \
             glibc executable on Linux x86_64, aarch64 or riscv64 (static `+crt-static` and musl builds are not \
             supported)",
        )
    }
}

impl std::error::Error for Unsupported {}

#[cfg(test)]
mod tests {
    #[test]
    fn install_succeeds_exactly_on_supported_builds_and_uninstall_undoes_it() {
        let supported = super::SUPPORTED;
        assert_eq!(super::install().is_ok(), supported);
        assert_eq!(super::is_installed(), supported);
        super::uninstall();
        assert!(!super::is_installed());
        if !supported {
            assert!(super::install().unwrap_err().to_string().contains("crt-static"));
        }
    }
}
