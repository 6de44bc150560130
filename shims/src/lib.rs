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
//! (that would be the hook itself), and `getaddrinfo`/`getnameinfo`, which are not system
//! calls, through `dlsym(RTLD_NEXT)`.
//!
//! **Which calls cooperate.** A hooked call takes the cooperative path only when all hold:
//! [`install()`] was called (an atomic flag, checked first, so nothing else is touched before
//! `main`); the thread has a scheduler (`tasklets::io::is_cooperative`, one TLS read); for fd
//! calls, the fd is a socket above 2 and below `TABLE_SIZE` (cached `fstat` class in
//! `fdtable`); and the call does not itself ask not to wait (`MSG_DONTWAIT`). Everything
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
//!   3. deadline = now + SO_RCVTIMEO (getsockopt; once per call; none = forever)
//!   4. park on the fd's Registration (made on the first park, kept until close), kills
//!      deferred ─ readiness ──► back to 1
//!                ─ deadline ──► return EAGAIN (what SO_RCVTIMEO gives; std: WouldBlock)
//!                ─ killed ────► return ECANCELED (the kill lands at the next switch point)
//! ```
//!
//! `read`/`write`/`readv`/`writev` on a socket are `recv`/`send`/`recvmsg`/`sendmsg` with
//! flags 0 (so says POSIX), made the same way. `send`/`sendto`/`write` keep going until every
//! byte is queued, as a blocking stream socket does; `MSG_WAITALL` receives keep going too.
//! `accept4` has no per-call flag: it polls (timeout 0) first and calls the real `accept4`
//! only when a connection or an error is pending. `connect` on a blocking socket sets
//! `O_NONBLOCK` for the duration of the system call only, parks until writable, and reads the
//! outcome from `SO_ERROR`.
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
//! - *Register once.* A socket's `tasklets::io::Registration` is made on its first park and
//!   kept in `fdtable` until `close` (or `dup2`/`dup3` onto it) deletes it, before the real
//!   close. If a tasklet is still parked on it at that moment (closed under its feet by
//!   another tasklet or thread), the registration is leaked instead of deleted: deleting it
//!   later would act on whatever file reuses the number. A number closed behind libc's back is
//!   caught by the inode check on the next park.
//! - *Hooks need nothing.* The pass-through path of every hook is an atomic load or two plus
//!   the system call: no initialisation, no allocation, no lock, `errno` untouched except by
//!   the system call itself. The cooperative path may allocate (timers, registrations): it is
//!   reached only from a tasklet thread on a socket, never from an allocator. Every hook
//!   restores `errno` on success.
//! - *Never unwind through C.* Every park runs in `tasklets::io::with_kills_deferred`. A kill
//!   fails the park: I/O returns `-1`/`ECANCELED`; sleeps return as completed (never `EINTR`,
//!   which std's `thread::sleep` retries with the time left: it would spin while the kill is
//!   pending); the kill is delivered at the tasklet's next ordinary switch point. A sleep cut
//!   short by a kill yields once before returning, so a loop of nothing but sleeps cannot keep
//!   the thread (it still ends only by its own exit condition: see `docs/shims.md`).
//! - *The runtime's own calls never reach the hooks:* `polling` drives epoll through rustix,
//!   whose `linux_raw` backend (the default on x86_64 Linux) makes raw system calls.
//!
//! **Multiplexing.** `poll`/`select` with a non-zero timeout in a tasklet run once with
//! timeout 0; if nothing is ready, a single socket waiting in one direction parks on its own
//! registration, anything else on a temporary epoll instance holding all the fds
//! (level-triggered), itself waited on as one readable fd; then the zero-timeout call runs
//! again for the results. **Sleeps** (`clock_nanosleep`, `nanosleep`, `usleep`, `sleep`) become
//! `tasklets::time::sleep`. **DNS** (`getaddrinfo`, `getnameinfo`) runs on `tasklets::unblock`'s
//! pool.
//!
//! **Rejected alternatives.**
//! - *Set `O_NONBLOCK` once per socket and hide it* (Go, libco, the first sketch of this
//!   crate): it needs a per-fd record of what the user asked, kept in step across `dup` (the
//!   flag belongs to the open file description, shared by all dups and by children after
//!   `fork`), a fallback that re-creates blocking behaviour with `poll` outside tasklets and
//!   after `uninstall()`, and it breaks every call the shims do not hook (`sendfile` from
//!   `std::io::copy`, fortified `__recv_chk` from C, child processes inheriting the socket)
//!   with spurious `EAGAIN`s. Per-call `MSG_DONTWAIT` gets the same single system call on the
//!   fast path and leaves the kernel's truth alone. It costs one `fcntl(F_GETFL)` and one
//!   `getsockopt` per park, a few hundred nanoseconds against the microseconds a park costs.
//! - *A registration per wait* (register, wait, delete): two more `epoll_ctl` per park.
//! - *Mirroring timeouts in the table*: saves the `getsockopt` per park, but goes stale for
//!   sockets whose options were set before the shims saw them or through a dup.
//! - *`dlsym(RTLD_NEXT)` for every forward*: the look-up may allocate and take the loader's
//!   lock, which a hook called from inside an allocator or before `main` must not; raw system
//!   calls need neither and also work in static binaries.
//!
//! # Where it cannot work
//!
//! Interposition needs a dynamically linked glibc executable on Linux x86_64 (the configuration
//! it was verified on). Static builds (`-C target-feature=+crt-static`), musl and other
//! targets compile without any hook, and [`install()`] returns an [`Unsupported`] error there
//! instead of silently doing nothing.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this build can interpose libc: dynamically linked glibc on Linux x86_64.
macro_rules! if_supported {
    ($($item:item)*) => {$(
        #[cfg(all(
            target_os = "linux",
            target_arch = "x86_64",
            target_env = "gnu",
            not(target_feature = "crt-static")
        ))]
        $item
    )*};
}

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
/// or targets other than Linux x86_64 with glibc.
pub fn install() -> Result<(), Unsupported> {
    if cfg!(all(
        target_os = "linux",
        target_arch = "x86_64",
        target_env = "gnu",
        not(target_feature = "crt-static")
    )) {
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
             glibc executable on Linux x86_64 (static `+crt-static` and musl builds are not \
             supported)",
        )
    }
}

impl std::error::Error for Unsupported {}

#[cfg(test)]
mod tests {
    #[test]
    fn install_succeeds_exactly_on_supported_builds_and_uninstall_undoes_it() {
        let supported = cfg!(all(
            target_os = "linux",
            target_arch = "x86_64",
            target_env = "gnu",
            not(target_feature = "crt-static")
        ));
        assert_eq!(super::install().is_ok(), supported);
        assert_eq!(super::is_installed(), supported);
        super::uninstall();
        assert!(!super::is_installed());
        if !supported {
            assert!(super::install().unwrap_err().to_string().contains("crt-static"));
        }
    }
}
