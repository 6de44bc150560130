//! Unix domain sockets that park the tasklet instead of the thread: drop-in replacements for
//! [`std::os::unix::net`], method for method.
//!
//! [`UnixListener`], [`UnixStream`] and [`UnixDatagram`] have std's methods, signatures, error
//! kinds and trait implementations. An operation that would block parks the calling tasklet
//! until the socket is ready, and the other tasklets of the thread run meanwhile; on a thread
//! that never spawned a tasklet, it blocks the thread as std does. Porting is a `use` line:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use tasklets::net::unix::{UnixListener, UnixStream}; // was: use std::os::unix::net::...
//!
//! let path = std::env::temp_dir().join(format!("tasklet-doc-unix-{}.sock", std::process::id()));
//! let _ = std::fs::remove_file(&path);
//! let listener = UnixListener::bind(&path).unwrap();
//! tasklets::spawn(move || {
//!     for stream in listener.incoming().take(3) {
//!         let mut stream = stream.unwrap();
//!         tasklets::spawn(move || {
//!             let mut line = String::new();
//!             BufReader::new(&stream).read_line(&mut line).unwrap();
//!             stream.write_all(line.to_uppercase().as_bytes()).unwrap();
//!         });
//!     }
//! });
//! let clients: Vec<_> = ["one\n", "two\n", "three\n"]
//!     .into_iter()
//!     .map(|word| {
//!         let path = path.clone();
//!         tasklets::spawn(move || {
//!             let mut stream = UnixStream::connect(&path).unwrap();
//!             stream.write_all(word.as_bytes()).unwrap();
//!             let mut reply = String::new();
//!             BufReader::new(stream).read_line(&mut reply).unwrap();
//!             reply
//!         })
//!     })
//!     .collect();
//! let replies: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
//! assert_eq!(replies, ["ONE\n", "TWO\n", "THREE\n"]);
//! std::fs::remove_file(&path).unwrap();
//! ```
//!
//! # How it behaves
//!
//! As the rest of [`crate::net`] (see its docs): a call that would block parks the tasklet,
//! or blocks a thread without tasklets; `set_nonblocking` and the timeouts are std's and are
//! shared by the handles [`try_clone`](UnixStream::try_clone) makes; writes never raise
//! `SIGPIPE` (a stream whose peer is gone fails with [`BrokenPipe`](io::ErrorKind::BrokenPipe));
//! the conversions from and to std types, [`OwnedFd`] and raw fds carry the blocking mode and
//! the timeouts across. Specific to Unix sockets:
//!
//! - **A full listen backlog.** std's `connect` sleeps in the kernel until the listener
//!   accepts. The kernel has no readiness event for that, so [`UnixStream::connect`] retries
//!   after a pause that grows from 0.1 ms to 10 ms, parking only the calling tasklet.
//! - **A full datagram receiver.** A send to a datagram socket whose queue is full waits until
//!   the socket is writable. The kernel reports that reliably only for a connected socket, so
//!   the send is also retried at least every 10 ms.
//! - [`SocketAddr`] is std's, re-exported here.
//! - `peek`, `peek_from`, `peer_cred`, `set_mark` and the ancillary-data methods are missing:
//!   they are unstable in std.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net as std_net;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Type};

use super::{as_uninit, NetSocket, RECV_FLAGS, SEND_FLAGS};
use crate::reactor::{timed_out, Direction};

/// The address of a Unix domain socket: std's type, re-exported so that a `use` line naming it
/// along with the socket types ports unchanged.
pub use std::os::unix::net::SocketAddr;

/// `listen(2)` backlog, as std's: the kernel caps -1 at `net.core.somaxconn`.
#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd", target_vendor = "apple"))]
const BACKLOG: libc::c_int = -1;
#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd", target_vendor = "apple")))]
const BACKLOG: libc::c_int = 128;

/// First and longest pause between two attempts of an operation whose readiness the kernel
/// does not report (connecting to a full backlog, sending to a full unconnected receiver).
const RETRY_MIN: Duration = Duration::from_micros(100);
const RETRY_MAX: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------------
// Shared machinery
// ---------------------------------------------------------------------------------------------

/// A new close-on-exec, non-blocking socket of type `ty`.
fn socket(ty: Type) -> io::Result<socket2::Socket> {
    socket2::Socket::new(Domain::UNIX, crate::sys::nonblocking(ty), None)
}

/// A connected pair of close-on-exec, non-blocking sockets of type `ty`.
fn pair(ty: Type) -> io::Result<(NetSocket, NetSocket)> {
    let (a, b) = socket2::Socket::pair(Domain::UNIX, crate::sys::nonblocking(ty), None)?;
    Ok((NetSocket::new(a)?, NetSocket::new(b)?))
}

/// `socket` seen as the std socket `T`, for what std expresses exactly and socket2 does not
/// (`getsockname`/`getpeername` as a std [`SocketAddr`], `Debug`).
fn as_std<T: FromRawFd>(socket: &NetSocket) -> AsStd<'_, T> {
    // SAFETY: the fd is open and owned by `socket` for the lifetime the result borrows; the `T`
    // is never dropped (`ManuallyDrop`) and only used through `&T`, so it neither closes the fd
    // nor outlives it.
    let std = unsafe { T::from_raw_fd(socket.socket().as_raw_fd()) };
    AsStd { std: ManuallyDrop::new(std), _fd: PhantomData }
}

/// A std socket borrowing one of ours (see [`as_std`]).
struct AsStd<'a, T> {
    std: ManuallyDrop<T>,
    _fd: PhantomData<BorrowedFd<'a>>,
}

impl<T> Deref for AsStd<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.std
    }
}

/// The address of a path, with std's checks and errors (`InvalidInput` for a NUL byte or a
/// path too long).
fn path_addr(path: &Path) -> io::Result<SockAddr> {
    sock_addr(&SocketAddr::from_pathname(path)?)
}

/// A std address as socket2's.
fn sock_addr(addr: &SocketAddr) -> io::Result<SockAddr> {
    if let Some(path) = addr.as_pathname() {
        return SockAddr::unix(path);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::ffi::OsStr;
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        if let Some(name) = addr.as_abstract_name() {
            // socket2 reads a leading NUL as the abstract namespace.
            let mut bytes = Vec::with_capacity(name.len() + 1);
            bytes.push(0);
            bytes.extend_from_slice(name);
            return SockAddr::unix(OsStr::from_bytes(&bytes));
        }
    }
    // Unnamed: the family alone (binding it autobinds, connecting to it is `EINVAL`, as std).
    SockAddr::unix("")
}

/// An address from the kernel (`accept`, `recvfrom`) as std's. std has no constructor for an
/// arbitrary `sockaddr_un`, but one for each kind of address.
fn std_addr(addr: &SockAddr) -> SocketAddr {
    if let Some(path) = addr.as_pathname() {
        // Fails only for a path of 108 bytes, which std cannot bind or connect to either.
        if let Ok(addr) = SocketAddr::from_pathname(path) {
            return addr;
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(name) = addr.as_abstract_namespace() {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = SocketAddr::from_abstract_name(name) {
            return addr;
        }
    }
    unnamed()
}

/// The unnamed address (what an unbound socket has).
fn unnamed() -> SocketAddr {
    static UNNAMED: OnceLock<SocketAddr> = OnceLock::new();
    UNNAMED
        .get_or_init(|| {
            // The empty path is the family alone, which is what std reads as unnamed.
            SocketAddr::from_pathname("")
                .ok()
                .filter(SocketAddr::is_unnamed)
                .or_else(|| std_net::UnixDatagram::unbound().and_then(|s| s.local_addr()).ok())
                .expect("tasklet: cannot make an unnamed Unix socket address")
        })
        .clone()
}

/// Connects a fresh stream socket to `addr`. When the listener's backlog is full, a
/// non-blocking connect fails with `EAGAIN` and no event says when to try again (std's
/// blocking connect sleeps in the kernel until the listener accepts): retry after a growing
/// pause that parks only the calling tasklet.
fn connect(socket: &NetSocket, addr: &SockAddr) -> io::Result<()> {
    let mut pause = RETRY_MIN;
    loop {
        match socket.socket().connect(addr) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
        crate::time::sleep(pause);
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// A datagram receive with the user's mode and read timeout; `None` for the end of the data
/// after `shutdown(Read)`.
///
/// A *blocking* `recv` on a datagram socket whose read half is shut down returns 0 (std's
/// does), but a non-blocking one, which ours is at the OS level, fails with `EAGAIN`, and no
/// further readiness event comes. So in blocking mode a `WouldBlock` is checked against the
/// shutdown before parking.
fn recv<R>(
    socket: &NetSocket,
    mut op: impl FnMut(&socket2::Socket) -> io::Result<R>,
) -> io::Result<Option<R>> {
    let nonblocking = socket.is_nonblocking();
    socket.read(|s| match op(s) {
        Err(err) if err.kind() == io::ErrorKind::WouldBlock && !nonblocking && read_shut_down(s) => Ok(None),
        result => result.map(Some),
    })
}

/// Whether the read half of `socket` is shut down (`POLLRDHUP`, which a datagram socket reports
/// for exactly that).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_shut_down(socket: &socket2::Socket) -> bool {
    let mut pfd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid `pollfd`, and a zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n == 1 && pfd.revents & libc::POLLRDHUP != 0
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_shut_down(_socket: &socket2::Socket) -> bool {
    false
}

/// A datagram send with the user's mode and write timeout.
///
/// A send to a receiver whose queue is full fails with `EAGAIN`, and std's blocking send then
/// sleeps in the kernel until the receiver drains its queue. The poller cannot always stand in
/// for that: for a connected socket the kernel reports writability only once the peer has room,
/// but an *unconnected* one (`send_to`) stays writable as far as `epoll` can tell, and each
/// failed attempt even signals fresh write space (its buffer is freed), so retrying on every
/// readiness event would spin. So the send waits for writability once, which is right for a
/// full send buffer and for connected sockets; if it fails again after that wake-up, it retries
/// after pauses growing from 0.1 ms to 10 ms instead.
fn send(socket: &NetSocket, mut op: impl FnMut(&socket2::Socket) -> io::Result<usize>) -> io::Result<usize> {
    let nonblocking = socket.is_nonblocking();
    let mut deadline = None;
    let mut pause = RETRY_MIN;
    let mut woken = false;
    loop {
        match op(socket.socket()) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock && !nonblocking => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
        let now = Instant::now();
        let user = *deadline.get_or_insert_with(|| {
            socket.timeout(Direction::Write).map(|t| now.checked_add(t).unwrap_or_else(far_future))
        });
        if user.is_some_and(|d| d <= now) {
            return Err(timed_out());
        }
        if woken {
            // Woken by readiness, and still no room: readiness says nothing here.
            crate::time::sleep_until(user.map_or(now + pause, |d| d.min(now + pause)));
            pause = (pause * 2).min(RETRY_MAX);
        } else {
            socket.source().wait(Direction::Write, user)?;
            woken = true;
        }
    }
}

/// A deadline nobody will live to see, for timeouts `Instant` cannot represent.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// The fd traits, the conversions from and to std and `OwnedFd`, and std's `Debug` for a type
/// holding a [`NetSocket`] in its `inner` field.
macro_rules! unix_conversions {
    ($ty:ident) => {
        impl AsFd for $ty {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.inner.socket().as_fd()
            }
        }

        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                self.inner.socket().as_raw_fd()
            }
        }

        /// Takes ownership of the socket, its blocking mode and timeouts (see the
        /// [module](self) docs); the fd becomes non-blocking at the OS level.
        impl FromRawFd for $ty {
            /// # Safety
            ///
            /// `fd` must be an open socket of the right kind, owned by nobody else (as for
            /// std's `FromRawFd`).
            unsafe fn from_raw_fd(fd: RawFd) -> $ty {
                // SAFETY: the caller's contract is `OwnedFd::from_raw_fd`'s.
                $ty::from(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        }

        /// Gives the fd up, blocking again unless non-blocking mode was asked for, with the
        /// timeouts stored in the socket.
        impl IntoRawFd for $ty {
            fn into_raw_fd(self) -> RawFd {
                self.inner.into_socket().into_raw_fd()
            }
        }

        /// Takes ownership of the socket, its blocking mode and timeouts; the fd becomes
        /// non-blocking at the OS level.
        impl From<OwnedFd> for $ty {
            fn from(fd: OwnedFd) -> $ty {
                $ty { inner: NetSocket::import(socket2::Socket::from(fd)) }
            }
        }

        /// Gives the fd up, blocking again unless non-blocking mode was asked for, with the
        /// timeouts stored in the socket.
        impl From<$ty> for OwnedFd {
            fn from(socket: $ty) -> OwnedFd {
                socket.inner.into_socket().into()
            }
        }

        /// Takes the std socket over, with its blocking mode and timeouts.
        impl From<std_net::$ty> for $ty {
            fn from(socket: std_net::$ty) -> $ty {
                $ty::from(OwnedFd::from(socket))
            }
        }

        /// Gives the socket to std: blocking unless non-blocking mode was asked for, with the
        /// read and write timeouts set on it.
        impl From<$ty> for std_net::$ty {
            fn from(socket: $ty) -> std_net::$ty {
                std_net::$ty::from(OwnedFd::from(socket))
            }
        }

        /// As std's: the fd and the addresses the socket has.
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*as_std::<std_net::$ty>(&self.inner), f)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// UnixListener
// ---------------------------------------------------------------------------------------------

/// A Unix domain socket server, listening for connections: [`std::os::unix::net::UnixListener`]
/// whose [`accept`](UnixListener::accept) parks the calling tasklet.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use tasklets::net::unix::{UnixListener, UnixStream};
///
/// let path = std::env::temp_dir().join(format!("tasklet-doc-listener-{}.sock", std::process::id()));
/// let _ = std::fs::remove_file(&path);
/// let listener = UnixListener::bind(&path).unwrap();
/// let server = tasklets::spawn(move || {
///     let (mut stream, _addr) = listener.accept().unwrap();
///     let mut request = String::new();
///     stream.read_to_string(&mut request).unwrap();
///     request
/// });
/// let mut client = UnixStream::connect(&path).unwrap();
/// client.write_all(b"hello").unwrap();
/// drop(client);
/// assert_eq!(server.join().unwrap(), "hello");
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct UnixListener {
    inner: NetSocket,
}

impl UnixListener {
    /// Creates a listener bound to `path`, as std's `bind`. The socket file is not removed when
    /// the listener is dropped (nor by std).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a path too long or with a NUL byte; `AddrInUse` when the file exists.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        UnixListener::bind_sock_addr(&path_addr(path.as_ref())?)
    }

    /// Creates a listener bound to `socket_addr` (a path or, on Linux, an abstract name).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(target_os = "linux")] {
    /// use std::os::linux::net::SocketAddrExt;
    /// use tasklets::net::unix::{SocketAddr, UnixListener, UnixStream};
    ///
    /// let name = format!("tasklet-doc-abstract-{}", std::process::id());
    /// let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    /// let listener = UnixListener::bind_addr(&addr).unwrap();
    /// let client = UnixStream::connect_addr(&addr).unwrap();
    /// let (_stream, _peer) = listener.accept().unwrap();
    /// assert_eq!(client.peer_addr().unwrap().as_abstract_name(), Some(name.as_bytes()));
    /// # }
    /// ```
    pub fn bind_addr(socket_addr: &SocketAddr) -> io::Result<UnixListener> {
        UnixListener::bind_sock_addr(&sock_addr(socket_addr)?)
    }

    fn bind_sock_addr(addr: &SockAddr) -> io::Result<UnixListener> {
        let socket = socket(Type::STREAM)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)?;
        Ok(UnixListener { inner: NetSocket::new(socket)? })
    }

    /// Accepts a connection, parking the calling tasklet until one arrives (or failing with
    /// `WouldBlock` in non-blocking mode). Returns the stream and the peer's address (unnamed
    /// unless the client bound its socket).
    ///
    /// The stream starts in blocking mode without timeouts, whatever the listener's settings,
    /// as with std.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (socket, addr) = self.inner.read(crate::sys::accept)?;
        Ok((UnixStream { inner: NetSocket::accepted(socket) }, std_addr(&addr)))
    }

    /// Creates a new handle to the same socket (a `dup`). The handles share the non-blocking
    /// setting, as std's do.
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        Ok(UnixListener { inner: self.inner.try_clone()? })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        as_std::<std_net::UnixListener>(&self.inner).local_addr()
    }

    /// In non-blocking mode, [`accept`](UnixListener::accept) fails with `WouldBlock` instead
    /// of parking when no connection is pending.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.socket().take_error()
    }

    /// An endless iterator over incoming connections: [`accept`](UnixListener::accept) in a
    /// loop, without the addresses.
    ///
    /// # Examples
    ///
    /// ```
    /// use tasklets::net::unix::{UnixListener, UnixStream};
    ///
    /// let path = std::env::temp_dir().join(format!("tasklet-doc-incoming-{}.sock", std::process::id()));
    /// let _ = std::fs::remove_file(&path);
    /// let listener = UnixListener::bind(&path).unwrap();
    /// let server = tasklets::spawn(move || listener.incoming().take(10).filter(|s| s.is_ok()).count());
    /// let _clients: Vec<UnixStream> = (0..10).map(|_| UnixStream::connect(&path).unwrap()).collect();
    /// assert_eq!(server.join().unwrap(), 10);
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }
}

unix_conversions!(UnixListener);

impl<'a> IntoIterator for &'a UnixListener {
    type Item = io::Result<UnixStream>;
    type IntoIter = Incoming<'a>;

    fn into_iter(self) -> Incoming<'a> {
        self.incoming()
    }
}

/// The iterator of [`UnixListener::incoming`]: never ends, yields each accepted stream or the
/// error of the failed accept.
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Incoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<UnixStream>;

    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl std::iter::FusedIterator for Incoming<'_> {}

// ---------------------------------------------------------------------------------------------
// UnixStream
// ---------------------------------------------------------------------------------------------

/// A Unix domain stream socket: [`std::os::unix::net::UnixStream`] whose reads, writes and
/// connects park the calling tasklet instead of the thread.
///
/// `Read` and `Write` are implemented for `UnixStream` and `&UnixStream`, so two tasklets (or
/// threads) can read and write one stream at once. Writes never raise `SIGPIPE`.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use tasklets::net::unix::UnixStream;
///
/// let (mut a, mut b) = UnixStream::pair().unwrap();
/// let reader = tasklets::spawn(move || {
///     let mut buf = [0; 5];
///     b.read_exact(&mut buf).unwrap(); // parks until the bytes arrive
///     buf
/// });
/// a.write_all(b"hello").unwrap();
/// assert_eq!(&reader.join().unwrap(), b"hello");
/// ```
pub struct UnixStream {
    inner: NetSocket,
}

impl UnixStream {
    /// Connects to the socket at `path`. If the listener's backlog is full, the calling tasklet
    /// waits until there is room (std's thread sleeps in the kernel).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a path too long or with a NUL byte; `NotFound` when there is no such
    /// file; `ConnectionRefused` when no socket listens there (a stale socket file, say).
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        UnixStream::connect_sock_addr(&path_addr(path.as_ref())?)
    }

    /// Connects to `socket_addr` (a path or, on Linux, an abstract name).
    pub fn connect_addr(socket_addr: &SocketAddr) -> io::Result<UnixStream> {
        UnixStream::connect_sock_addr(&sock_addr(socket_addr)?)
    }

    fn connect_sock_addr(addr: &SockAddr) -> io::Result<UnixStream> {
        let inner = NetSocket::new(socket(Type::STREAM)?)?;
        connect(&inner, addr)?;
        Ok(UnixStream { inner })
    }

    /// Creates a pair of connected, unnamed streams.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use tasklets::net::unix::UnixStream;
    ///
    /// let (mut a, b) = UnixStream::pair().unwrap();
    /// let echo = tasklets::spawn(move || {
    ///     let mut line = String::new();
    ///     BufReader::new(b).read_line(&mut line).unwrap();
    ///     line
    /// });
    /// writeln!(a, "ping").unwrap();
    /// assert_eq!(echo.join().unwrap(), "ping\n");
    /// ```
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = pair(Type::STREAM)?;
        Ok((UnixStream { inner: a }, UnixStream { inner: b }))
    }

    /// Creates a new handle to the same socket (a `dup`), for instance to read in one tasklet
    /// and write in another. The handles share the non-blocking setting and the timeouts, as
    /// std's do.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        Ok(UnixStream { inner: self.inner.try_clone()? })
    }

    /// The address of this end (unnamed unless bound, which a connected stream is not).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        as_std::<std_net::UnixStream>(&self.inner).local_addr()
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        as_std::<std_net::UnixStream>(&self.inner).peer_addr()
    }

    /// Sets the read timeout: a read that waits that long fails with `WouldBlock`, as std's
    /// does on Unix. `None` waits forever.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{ErrorKind, Read};
    /// use std::time::Duration;
    /// use tasklets::net::unix::UnixStream;
    ///
    /// let (mut a, _b) = UnixStream::pair().unwrap();
    /// a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    /// let err = a.read(&mut [0; 8]).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::WouldBlock);
    /// ```
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(Direction::Read, timeout)
    }

    /// Sets the write timeout: a write that waits that long fails with `WouldBlock`. `None`
    /// waits forever.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(Direction::Write, timeout)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.timeout(Direction::Read))
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.timeout(Direction::Write))
    }

    /// In non-blocking mode, reads and writes that would wait fail with `WouldBlock` instead.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.socket().take_error()
    }

    /// Shuts down the read half, the write half or both. Tasklets parked on the stream wake up:
    /// reads then return 0, writes fail with `BrokenPipe`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::net::Shutdown;
    /// use tasklets::net::unix::UnixStream;
    ///
    /// let (mut a, mut b) = UnixStream::pair().unwrap();
    /// a.write_all(b"last words").unwrap();
    /// a.shutdown(Shutdown::Write).unwrap(); // b sees the end of the stream...
    /// let mut got = String::new();
    /// b.read_to_string(&mut got).unwrap();
    /// assert_eq!(got, "last words");
    /// b.write_all(b"reply").unwrap(); // ...and can still answer
    /// let mut reply = [0; 5];
    /// a.read_exact(&mut reply).unwrap();
    /// assert_eq!(&reply, b"reply");
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.socket().shutdown(how)
    }
}

unix_conversions!(UnixStream);

impl io::Read for UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &*self, buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        io::Read::read_vectored(&mut &*self, bufs)
    }
}

impl io::Read for &UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.recv(buf, 0)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.inner.recv_vectored(bufs)
    }
}

impl io::Write for UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &*self, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        io::Write::write_vectored(&mut &*self, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Write for &UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.send(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner.send_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// UnixDatagram
// ---------------------------------------------------------------------------------------------

/// A Unix domain datagram socket: [`std::os::unix::net::UnixDatagram`] whose receives and
/// sends park the calling tasklet instead of the thread.
///
/// # Examples
///
/// ```
/// use tasklets::net::unix::UnixDatagram;
///
/// let dir = std::env::temp_dir();
/// let server_path = dir.join(format!("tasklet-doc-dgram-server-{}.sock", std::process::id()));
/// let client_path = dir.join(format!("tasklet-doc-dgram-client-{}.sock", std::process::id()));
/// let _ = std::fs::remove_file(&server_path);
/// let _ = std::fs::remove_file(&client_path);
/// let server = UnixDatagram::bind(&server_path).unwrap();
/// let echo = tasklets::spawn(move || {
///     let mut buf = [0; 64];
///     let (n, from) = server.recv_from(&mut buf).unwrap(); // parks until a datagram arrives
///     server.send_to(&buf[..n], from.as_pathname().unwrap()).unwrap();
/// });
/// let client = UnixDatagram::bind(&client_path).unwrap();
/// client.send_to(b"marco", &server_path).unwrap();
/// let mut buf = [0; 64];
/// let n = client.recv(&mut buf).unwrap();
/// assert_eq!(&buf[..n], b"marco");
/// echo.join().unwrap();
/// std::fs::remove_file(&server_path).unwrap();
/// std::fs::remove_file(&client_path).unwrap();
/// ```
pub struct UnixDatagram {
    inner: NetSocket,
}

impl UnixDatagram {
    /// Creates a datagram socket bound to `path`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a path too long or with a NUL byte; `AddrInUse` when the file exists.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        UnixDatagram::bind_sock_addr(&path_addr(path.as_ref())?)
    }

    /// Creates a datagram socket bound to `socket_addr` (a path or, on Linux, an abstract
    /// name).
    pub fn bind_addr(socket_addr: &SocketAddr) -> io::Result<UnixDatagram> {
        UnixDatagram::bind_sock_addr(&sock_addr(socket_addr)?)
    }

    fn bind_sock_addr(addr: &SockAddr) -> io::Result<UnixDatagram> {
        let socket = socket(Type::DGRAM)?;
        socket.bind(addr)?;
        Ok(UnixDatagram { inner: NetSocket::new(socket)? })
    }

    /// Creates a datagram socket bound to no address: it can send, and receive replies only if
    /// it is [`connect`](UnixDatagram::connect)ed or its peer knows it otherwise.
    pub fn unbound() -> io::Result<UnixDatagram> {
        Ok(UnixDatagram { inner: NetSocket::new(socket(Type::DGRAM)?)? })
    }

    /// Creates a pair of connected, unnamed datagram sockets.
    ///
    /// # Examples
    ///
    /// ```
    /// use tasklets::net::unix::UnixDatagram;
    ///
    /// let (a, b) = UnixDatagram::pair().unwrap();
    /// let receiver = tasklets::spawn(move || {
    ///     let mut buf = [0; 16];
    ///     let n = b.recv(&mut buf).unwrap();
    ///     buf[..n].to_vec()
    /// });
    /// a.send(b"one datagram").unwrap();
    /// assert_eq!(receiver.join().unwrap(), b"one datagram");
    /// ```
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = pair(Type::DGRAM)?;
        Ok((UnixDatagram { inner: a }, UnixDatagram { inner: b }))
    }

    /// Connects the socket to the one at `path`: [`send`](UnixDatagram::send) goes there, and
    /// only datagrams from there are received. Does not wait.
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        as_std::<std_net::UnixDatagram>(&self.inner).connect(path)
    }

    /// Connects the socket to `socket_addr` (a path or, on Linux, an abstract name).
    pub fn connect_addr(&self, socket_addr: &SocketAddr) -> io::Result<()> {
        as_std::<std_net::UnixDatagram>(&self.inner).connect_addr(socket_addr)
    }

    /// Creates a new handle to the same socket (a `dup`). The handles share the non-blocking
    /// setting and the timeouts, as std's do.
    pub fn try_clone(&self) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram { inner: self.inner.try_clone()? })
    }

    /// The address the socket is bound to (unnamed if none).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        as_std::<std_net::UnixDatagram>(&self.inner).local_addr()
    }

    /// The address of the connected peer (`NotConnected` if not connected).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        as_std::<std_net::UnixDatagram>(&self.inner).peer_addr()
    }

    /// Receives one datagram, parking until one arrives, and returns its length and the
    /// sender's address. A datagram longer than `buf` is truncated.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let received = recv(&self.inner, |socket| socket.recv_from_with_flags(as_uninit(buf), RECV_FLAGS));
        match received? {
            Some((n, addr)) => Ok((n, std_addr(&addr))),
            None => Ok((0, unnamed())),
        }
    }

    /// Receives one datagram, parking until one arrives, and returns its length. A datagram
    /// longer than `buf` is truncated.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let received = recv(&self.inner, |socket| socket.recv_with_flags(as_uninit(buf), RECV_FLAGS));
        Ok(received?.unwrap_or(0))
    }

    /// Sends a datagram to the socket at `path`, parking while the receiver's queue is full.
    /// Returns the number of bytes sent (all of them).
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let addr = path_addr(path.as_ref())?;
        send(&self.inner, |socket| socket.send_to_with_flags(buf, &addr, SEND_FLAGS))
    }

    /// Sends a datagram to `socket_addr` (a path or, on Linux, an abstract name), parking
    /// while the receiver's queue is full.
    pub fn send_to_addr(&self, buf: &[u8], socket_addr: &SocketAddr) -> io::Result<usize> {
        let addr = sock_addr(socket_addr)?;
        send(&self.inner, |socket| socket.send_to_with_flags(buf, &addr, SEND_FLAGS))
    }

    /// Sends a datagram to the connected peer, parking while its queue is full.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        send(&self.inner, |socket| socket.send_with_flags(buf, SEND_FLAGS))
    }

    /// Sets the read timeout: a receive that waits that long fails with `WouldBlock`, as
    /// std's does on Unix. `None` waits forever.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::ErrorKind;
    /// use std::time::Duration;
    /// use tasklets::net::unix::UnixDatagram;
    ///
    /// let socket = UnixDatagram::unbound().unwrap();
    /// socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    /// let err = socket.recv(&mut [0; 8]).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::WouldBlock);
    /// ```
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(Direction::Read, timeout)
    }

    /// Sets the write timeout: a send that waits that long fails with `WouldBlock`. `None`
    /// waits forever.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(Direction::Write, timeout)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.timeout(Direction::Read))
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.timeout(Direction::Write))
    }

    /// In non-blocking mode, receives and sends that would wait fail with `WouldBlock` instead.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.socket().take_error()
    }

    /// Shuts down the read half, the write half or both. Tasklets parked on the socket wake up:
    /// receives then return 0, sends fail with `BrokenPipe`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.socket().shutdown(how)
    }
}

unix_conversions!(UnixDatagram);
