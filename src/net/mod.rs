//! Networking that parks the tasklet instead of the thread: drop-in replacements for
//! `std::net` and `std::os::unix::net`, method for method.
//!
//! [`TcpListener`], [`TcpStream`] and [`UdpSocket`] have the methods, trait implementations
//! and error kinds of their std namesakes. Where std blocks the thread, these park the calling
//! tasklet until the socket is ready, and the thread runs its other tasklets meanwhile; a
//! socket operation that can complete at once costs the same single system call as std's.
//! Porting is a `use` line:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use tasklets::net::{TcpListener, TcpStream}; // was: use std::net::{TcpListener, TcpStream};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! // The server: an acceptor tasklet, and one tasklet per connection.
//! tasklets::spawn(move || {
//!     for stream in listener.incoming().take(3) {
//!         let stream = stream.unwrap();
//!         tasklets::spawn(move || {
//!             let mut lines = BufReader::new(&stream);
//!             let mut line = String::new();
//!             while lines.read_line(&mut line).unwrap() > 0 {
//!                 (&stream).write_all(line.to_uppercase().as_bytes()).unwrap();
//!                 line.clear();
//!             }
//!         });
//!     }
//! });
//! // Three clients, all on this thread too.
//! let clients: Vec<_> = ["one", "two", "three"]
//!     .into_iter()
//!     .map(|word| {
//!         tasklets::spawn(move || {
//!             let mut stream = TcpStream::connect(addr).unwrap();
//!             writeln!(stream, "{word}").unwrap();
//!             let mut reply = String::new();
//!             BufReader::new(&stream).read_line(&mut reply).unwrap();
//!             reply
//!         })
//!     })
//!     .collect();
//! tasklets::run(); // returns when every connection is served
//! let replies: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
//! assert_eq!(replies, ["ONE\n", "TWO\n", "THREE\n"]);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # How it behaves
//!
//! - **Inside a tasklet** a call that would block parks the tasklet (see `docs/io.md`).
//! - **On a plain thread** (or in the main tasklet with nothing else to run) the same calls
//!   block the thread as std's do: the thread waits in its poller, not in a busy loop.
//! - **Options are std's.** `set_nonblocking(true)` makes calls fail with
//!   [`WouldBlock`](std::io::ErrorKind::WouldBlock) instead of waiting; read and write
//!   timeouts fail with `WouldBlock` too (what std reports on Linux when `SO_RCVTIMEO` expires);
//!   handles made by `try_clone` share these options, as std's clones share the socket's.
//! - **No `SIGPIPE`.** Writes use `MSG_NOSIGNAL` (macOS: the sockets carry `SO_NOSIGPIPE`,
//!   set on sockets taken over from elsewhere too): a write to a closed connection fails with
//!   [`BrokenPipe`](std::io::ErrorKind::BrokenPipe), even in a program that did not ignore the
//!   signal (a C host, say).
//! - **Name resolution never blocks the thread.** A host name (`"example.com:80"`) is resolved
//!   on the [`unblock`](crate::unblock) pool while the tasklet is parked. For this reason the
//!   address arguments are `A: ToSocketAddrs + Sync`, where std asks only for
//!   `ToSocketAddrs`: every std implementor is `Sync`, so only generic code that forwards its
//!   own `A: ToSocketAddrs` needs the extra bound. Socket addresses and IP/port pairs never go
//!   to the pool; strings always do, so prefer a [`SocketAddr`] in hot paths such as
//!   [`UdpSocket::send_to`].
//! - **Threads.** The types are `Send` and `Sync`: a socket can move to another thread and be
//!   used by that thread's tasklets.
//!
//! The sockets are non-blocking at the OS level while they are owned here. The conversions out
//! ([`IntoRawFd`](std::os::fd::IntoRawFd), `From<TcpStream> for std::net::TcpStream`, ...) make
//! them blocking again (unless `set_nonblocking(true)` was asked for) and store the read and
//! write timeouts in the socket, so the std type behaves as this one did. The conversions in
//! take the std socket's mode and timeouts over. Since the non-blocking flag belongs to the open
//! file, another descriptor of the same socket kept elsewhere (a `dup`, a std clone) becomes
//! non-blocking too while this one lives.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::reactor::{Direction, Source};

/// The fd traits and the conversions from and to std and `OwnedFd` of a type holding a
/// [`NetSocket`] in its `inner` field.
macro_rules! conversions {
    ($ty:ident) => {
        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(self.inner.socket())
            }
        }

        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(self.inner.socket())
            }
        }

        /// Takes ownership of the socket, its blocking mode and timeouts (see the
        /// [module](crate::net) docs); the fd becomes non-blocking at the OS level.
        impl std::os::fd::FromRawFd for $ty {
            /// # Safety
            ///
            /// `fd` must be an open socket of the right kind, owned by nobody else (as for
            /// std's `FromRawFd`).
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> $ty {
                // SAFETY: the caller's contract is `OwnedFd::from_raw_fd`'s.
                $ty::from(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
            }
        }

        /// Gives the fd up, blocking again unless non-blocking mode was asked for, with the
        /// timeouts stored in the socket.
        impl std::os::fd::IntoRawFd for $ty {
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                std::os::fd::IntoRawFd::into_raw_fd(self.inner.into_socket())
            }
        }

        /// Takes ownership of the socket, its blocking mode and timeouts; the fd becomes
        /// non-blocking at the OS level.
        impl From<std::os::fd::OwnedFd> for $ty {
            fn from(fd: std::os::fd::OwnedFd) -> $ty {
                $ty { inner: $crate::net::NetSocket::import(socket2::Socket::from(fd)) }
            }
        }

        /// Gives the fd up, blocking again unless non-blocking mode was asked for, with the
        /// timeouts stored in the socket.
        impl From<$ty> for std::os::fd::OwnedFd {
            fn from(socket: $ty) -> std::os::fd::OwnedFd {
                socket.inner.into_socket().into()
            }
        }

        /// Takes the std socket over, with its blocking mode and timeouts.
        impl From<std::net::$ty> for $ty {
            fn from(socket: std::net::$ty) -> $ty {
                $ty { inner: $crate::net::NetSocket::import(socket2::Socket::from(socket)) }
            }
        }

        /// Gives the socket to std: blocking unless non-blocking mode was asked for, with the
        /// read and write timeouts set on it.
        impl From<$ty> for std::net::$ty {
            fn from(socket: $ty) -> std::net::$ty {
                socket.inner.into_socket().into()
            }
        }
    };
}

mod bind;
mod tcp;
mod udp;
pub mod unix;

pub use bind::BindOptions;
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;

/// Flags of every receive: `MSG_DONTWAIT` keeps the call non-blocking even if the file's
/// `O_NONBLOCK` was cleared through another descriptor of the same socket.
const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// Flags of every send: non-blocking as [`RECV_FLAGS`], and no `SIGPIPE` on a closed peer.
/// (`sys::MSG_NOSIGNAL` is 0 on macOS, whose sockets carry `SO_NOSIGPIPE` instead.)
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | crate::sys::MSG_NOSIGNAL;

/// Most buffers passed to one vectored call (Linux's `UIO_MAXIOV`); std caps the same way.
const MAX_IOV: usize = 1024;

/// A socket of `std::net`'s kind as the types of this module hold it: the reactor's [`Source`]
/// and the options the user set, shared by the handles `try_clone` makes (std's clones share
/// them because they live in the socket; here they live beside it).
pub(crate) struct NetSocket {
    source: Source,
    options: Arc<Options>,
}

/// What the user asked for with `set_nonblocking` and the timeouts.
#[derive(Default)]
struct Options {
    nonblocking: AtomicBool,
    /// Read and write timeouts in nanoseconds; 0 means none.
    timeouts: [AtomicU64; 2],
}

impl NetSocket {
    /// Wraps a socket this crate created (it becomes non-blocking at the OS level).
    pub(crate) fn new(socket: socket2::Socket) -> io::Result<NetSocket> {
        Ok(NetSocket { source: Source::new(socket)?, options: Arc::default() })
    }

    /// Wraps a socket accepted with `sys::accept`, which makes it non-blocking already.
    pub(crate) fn accepted(socket: socket2::Socket) -> NetSocket {
        NetSocket { source: Source::nonblocking(socket), options: Arc::default() }
    }

    /// Wraps a socket made elsewhere (a std socket, a raw fd), taking over its blocking mode
    /// and its timeouts.
    pub(crate) fn import(socket: socket2::Socket) -> NetSocket {
        let options = Options::default();
        options.nonblocking.store(socket.nonblocking().unwrap_or(false), Ordering::Relaxed);
        for (dir, timeout) in
            [(Direction::Read, socket.read_timeout()), (Direction::Write, socket.write_timeout())]
        {
            options.timeouts[dir as usize].store(nanos(timeout.ok().flatten()), Ordering::Relaxed);
        }
        if let Err(err) = crate::sys::no_sigpipe(&socket) {
            log::warn!("tasklets::net: cannot set SO_NOSIGPIPE on a socket taken over: {err}");
        }
        // `ioctl(FIONBIO)` on an open socket cannot fail; an fd that is not open at all breaks
        // the contract of `FromRawFd`/`OwnedFd`.
        let source = Source::new(socket).expect("tasklets::net: cannot make the socket non-blocking");
        NetSocket { source, options: Arc::new(options) }
    }

    /// Gives the socket up, blocking again unless the user asked for non-blocking mode, with
    /// the user's timeouts stored in it (so that a std socket made of it behaves the same).
    pub(crate) fn into_socket(self) -> socket2::Socket {
        let socket = self.source.socket();
        if let Err(err) = socket
            .set_read_timeout(self.timeout(Direction::Read))
            .and_then(|()| socket.set_write_timeout(self.timeout(Direction::Write)))
        {
            log::warn!("tasklets::net: cannot store the timeouts in a socket given up: {err}");
        }
        let nonblocking = self.options.nonblocking.load(Ordering::Relaxed);
        // As above: `ioctl(FIONBIO)` on an open socket cannot fail.
        self.source
            .into_socket(nonblocking)
            .expect("tasklets::net: cannot restore the socket's blocking mode")
    }

    /// A second handle to the same socket (`dup`), sharing the options. It registers with the
    /// poller on its own when it first has to wait.
    pub(crate) fn try_clone(&self) -> io::Result<NetSocket> {
        let socket = self.source.socket().try_clone()?;
        Ok(NetSocket { source: Source::new(socket)?, options: self.options.clone() })
    }

    pub(crate) fn socket(&self) -> &socket2::Socket {
        self.source.socket()
    }

    pub(crate) fn source(&self) -> &Source {
        &self.source
    }

    /// Runs a read-side operation (read, recv, accept, peek) with the user's mode and read
    /// timeout, parking while it would block.
    pub(crate) fn read<R>(&self, op: impl FnMut(&socket2::Socket) -> io::Result<R>) -> io::Result<R> {
        let nonblocking = self.options.nonblocking.load(Ordering::Relaxed);
        self.source.io(Direction::Read, nonblocking, self.timeout_nanos(Direction::Read), op)
    }

    /// Runs a write-side operation with the user's mode and write timeout.
    pub(crate) fn write<R>(&self, op: impl FnMut(&socket2::Socket) -> io::Result<R>) -> io::Result<R> {
        let nonblocking = self.options.nonblocking.load(Ordering::Relaxed);
        self.source.io(Direction::Write, nonblocking, self.timeout_nanos(Direction::Write), op)
    }

    pub(crate) fn set_nonblocking(&self, nonblocking: bool) {
        self.options.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    /// Whether the user asked for non-blocking mode.
    pub(crate) fn is_nonblocking(&self) -> bool {
        self.options.nonblocking.load(Ordering::Relaxed)
    }

    /// The timeout in nanoseconds; 0: none.
    #[inline]
    fn timeout_nanos(&self, dir: Direction) -> u64 {
        self.options.timeouts[dir as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn timeout(&self, dir: Direction) -> Option<Duration> {
        match self.options.timeouts[dir as usize].load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Sets a timeout; a zero duration is an `InvalidInput` error, as in std.
    pub(crate) fn set_timeout(&self, dir: Direction, timeout: Option<Duration>) -> io::Result<()> {
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot set a 0 duration timeout"));
        }
        self.options.timeouts[dir as usize].store(nanos(timeout), Ordering::Relaxed);
        Ok(())
    }

    /// `recv` into `buf` with `flags` (plus [`RECV_FLAGS`]), waiting as a read.
    pub(crate) fn recv(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        self.recv_raw(buf, flags, None)
    }

    /// A read of a TCP stream: `recv` into `buf`, waiting as a read; after a short read the
    /// next one may park without trying (see "Short reads" in `reactor`). Only for TCP: a
    /// short read of a Unix stream can stop at a change of sender credentials or at passed
    /// fds with more data queued, and a datagram is always "short".
    pub(crate) fn read_stream(&self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len();
        self.recv_raw(buf, 0, Some(len))
    }

    #[inline]
    fn recv_raw(&self, buf: &mut [u8], flags: libc::c_int, stream_read: Option<usize>) -> io::Result<usize> {
        let nonblocking = self.options.nonblocking.load(Ordering::Relaxed);
        let timeout = self.timeout_nanos(Direction::Read);
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        self.source.io_raw(Direction::Read, nonblocking, timeout, stream_read, |fd| {
            // SAFETY: `ptr` is valid for writes of `len` bytes (it is `buf`, borrowed for the
            // whole call); `recv` writes at most `len` bytes there.
            unsafe { crate::sys::recv(fd, ptr, len, flags | RECV_FLAGS) }
        })
    }

    /// `recvfrom` into `buf` with `flags` (plus [`RECV_FLAGS`]), waiting as a read.
    pub(crate) fn recv_from(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<(usize, SocketAddr)> {
        let (n, addr) =
            self.read(|socket| socket.recv_from_with_flags(as_uninit(buf), flags | RECV_FLAGS))?;
        Ok((n, inet(&addr)?))
    }

    /// `recvmsg` scattering into `bufs`, waiting as a read.
    pub(crate) fn recv_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let len = bufs.len().min(MAX_IOV);
        self.read(|socket| {
            // SAFETY: an all-zero `msghdr` is valid (null pointers, zero lengths).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            // `IoSliceMut` is guaranteed ABI-compatible with `iovec` on Unix.
            msg.msg_iov = bufs.as_mut_ptr().cast();
            msg.msg_iovlen = len as _;
            // SAFETY: `msg` points at `len` valid, writable buffers for the duration of the call.
            let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, RECV_FLAGS) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        })
    }

    /// `send` with [`SEND_FLAGS`], waiting as a write.
    pub(crate) fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let nonblocking = self.options.nonblocking.load(Ordering::Relaxed);
        let timeout = self.timeout_nanos(Direction::Write);
        self.source.io_raw(Direction::Write, nonblocking, timeout, None, |fd| {
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
            unsafe { crate::sys::send(fd, buf.as_ptr(), buf.len(), SEND_FLAGS) }
        })
    }

    /// `sendmsg` gathering from `bufs` with [`SEND_FLAGS`], waiting as a write.
    pub(crate) fn send_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let bufs = &bufs[..bufs.len().min(MAX_IOV)];
        self.write(|socket| socket.send_vectored_with_flags(bufs, SEND_FLAGS))
    }

    /// `sendto` with [`SEND_FLAGS`], waiting as a write.
    pub(crate) fn send_to(&self, buf: &[u8], addr: &SocketAddr) -> io::Result<usize> {
        let addr = socket2::SockAddr::from(*addr);
        self.write(|socket| socket.send_to_with_flags(buf, &addr, SEND_FLAGS))
    }
}

fn nanos(timeout: Option<Duration>) -> u64 {
    timeout.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1))
}

/// Views an initialised buffer as the `MaybeUninit` buffer socket2's receive calls take.
fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`. The only danger of the cast is that
    // uninitialised bytes could be written through it; the result is only passed to socket2's
    // `recv*` calls, which write nothing but the bytes received (initialised) into it.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// The IP address of a socket address from the kernel (always one for IP sockets).
pub(crate) fn inet(addr: &socket2::SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket address"))
}

/// Resolves `addr` like [`ToSocketAddrs::to_socket_addrs`], on the [`unblock`](crate::unblock)
/// pool when that could mean a DNS query and the thread has a scheduler whose tasklets could
/// run meanwhile.
pub(crate) fn resolve<A: ToSocketAddrs + Sync + ?Sized>(addr: &A) -> io::Result<Vec<SocketAddr>> {
    if crate::scheduler::existing_scheduler().is_none() || never_resolves::<A>() {
        return addr.to_socket_addrs().map(Iterator::collect);
    }
    if let Some(addr) = ip_literal(addr) {
        return Ok(vec![addr]);
    }
    crate::blocking::unblock_scoped(|| addr.to_socket_addrs().map(Iterator::collect))
}

/// Whether `A` is one of std's address types whose `to_socket_addrs` never does a DNS query
/// (socket addresses, IP/port pairs, slices of socket addresses, references to these).
///
/// The type name is only a hint: getting it wrong costs either a trip to the pool or a
/// resolution on the calling thread, never correctness.
fn never_resolves<A: ?Sized>() -> bool {
    use std::any::type_name;
    let mut name = type_name::<A>();
    while let Some(rest) = name.strip_prefix('&') {
        name = rest;
    }
    [
        type_name::<SocketAddr>(),
        type_name::<SocketAddrV4>(),
        type_name::<SocketAddrV6>(),
        type_name::<(IpAddr, u16)>(),
        type_name::<(Ipv4Addr, u16)>(),
        type_name::<(Ipv6Addr, u16)>(),
        type_name::<[SocketAddr]>(),
    ]
    .contains(&name)
}

/// The address `addr` stands for when it is one of std's string forms holding an IP literal
/// (`"127.0.0.1:80"`, `("::1", 80)`), parsed as std's `to_socket_addrs` parses it before it
/// would query the resolver; `None` for a host name or any other type. A literal then costs no
/// trip to the `unblock` pool (a thread and a park).
///
/// The type is recognised by [`type_name`](std::any::type_name) (`TypeId` needs `'static`, and
/// `&str` arguments rarely are): the names matched are those of primitive or std types, which
/// no other type carries.
fn ip_literal<A: ?Sized>(addr: &A) -> Option<SocketAddr> {
    use std::any::type_name;
    let name = type_name::<A>();
    let is = |other: &str| name == other;
    // `str` is unsized: `&A` is then a fat pointer of the same layout as `&str`.
    if is(type_name::<str>()) && std::mem::size_of::<&A>() == std::mem::size_of::<&str>() {
        // SAFETY: `A` is `str` (its type name is the primitive's), so `&A` is a `&str`.
        let s: &str = unsafe { std::mem::transmute_copy::<&A, &str>(&addr) };
        return s.parse().ok();
    }
    let ptr = addr as *const A;
    if is(type_name::<&str>()) {
        // SAFETY: `A` is `&str` (lifetimes aside, which type names omit); it is read for the
        // duration of the borrow of `addr` only.
        return unsafe { *ptr.cast::<&str>() }.parse().ok();
    }
    if is(type_name::<String>()) || is(type_name::<&String>()) {
        // SAFETY: `A` is `String` or `&String` as its name says; read within the borrow of `addr`.
        let s: &str = unsafe {
            if is(type_name::<String>()) {
                &*ptr.cast::<String>()
            } else {
                *ptr.cast::<&String>()
            }
        };
        return s.parse().ok();
    }
    let (host, port) = if is(type_name::<(&str, u16)>()) {
        // SAFETY: `A` is `(&str, u16)` as its name says; read within the borrow of `addr`.
        unsafe { *ptr.cast::<(&str, u16)>() }
    } else if is(type_name::<(String, u16)>()) {
        // SAFETY: `A` is `(String, u16)` as its name says; read within the borrow of `addr`.
        let pair = unsafe { &*ptr.cast::<(String, u16)>() };
        (pair.0.as_str(), pair.1)
    } else {
        return None;
    };
    host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port))
}

/// Calls `f` with each address `addr` resolves to, in order, until one succeeds, as std does:
/// the last error if all fail, `InvalidInput` if there is none.
pub(crate) fn each_addr<A, T>(addr: &A, mut f: impl FnMut(&SocketAddr) -> io::Result<T>) -> io::Result<T>
where
    A: ToSocketAddrs + Sync + ?Sized,
{
    let mut last_err = None;
    for addr in resolve(addr)? {
        match f(&addr) {
            Ok(value) => return Ok(value),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "could not resolve to any addresses")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_types_that_never_resolve() {
        fn check<A: ?Sized>(_: &A) -> bool {
            never_resolves::<A>()
        }
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(check(&addr));
        assert!(check(&&addr));
        assert!(check(&(Ipv4Addr::LOCALHOST, 80u16)));
        assert!(check(&[addr][..]));
        assert!(!check("127.0.0.1:80"));
        assert!(!check(&String::from("localhost:80")));
        assert!(!check(&("localhost", 80)));
    }

    #[test]
    fn ip_literals_are_parsed_without_the_resolver() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(ip_literal("127.0.0.1:7000"), Some(v4));
        assert_eq!(ip_literal(&"127.0.0.1:7000"), Some(v4));
        assert_eq!(ip_literal(&String::from("[::1]:7000")), Some(v6));
        assert_eq!(ip_literal(&&String::from("[::1]:7000")), Some(v6));
        assert_eq!(ip_literal(&("127.0.0.1", 7000u16)), Some(v4));
        assert_eq!(ip_literal(&(String::from("::1"), 7000u16)), Some(v6));
        assert_eq!(ip_literal("localhost:7000"), None);
        assert_eq!(ip_literal(&("localhost", 7000u16)), None);
        assert_eq!(ip_literal(&7000u16), None);
    }
}
