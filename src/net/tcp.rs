//! TCP: `TcpListener`, `TcpStream` and `Incoming`, as in `std::net`.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::{each_addr, inet, BindOptions, NetSocket};
use crate::reactor::Direction;

/// A TCP socket server, listening for connections: [`std::net::TcpListener`] for tasklets.
///
/// [`accept`](TcpListener::accept) parks the calling tasklet until a connection arrives; the
/// other tasklets of the thread run meanwhile. On a thread without tasklets it blocks like
/// std's.
///
/// The socket is created with `SO_REUSEADDR` (as std does on Unix), close-on-exec, and a
/// backlog of 1024. Accepted streams are close-on-exec too.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use tasklets::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let server = tasklets::spawn(move || -> std::io::Result<String> {
///     let (mut stream, _peer) = listener.accept()?; // parks until the client connects
///     let mut greeting = String::new();
///     stream.read_to_string(&mut greeting)?;
///     Ok(greeting)
/// });
/// let client = tasklets::spawn(move || -> std::io::Result<()> {
///     TcpStream::connect(addr)?.write_all(b"hello")
/// });
/// tasklets::run();
/// client.join().unwrap()?;
/// assert_eq!(server.join().unwrap()?, "hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpListener {
    inner: NetSocket,
}

/// An iterator over the connections of a [`TcpListener`], which never returns `None`: what
/// [`TcpListener::incoming`] returns. Each `next` is an [`accept`](TcpListener::accept).
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

/// A TCP connection: [`std::net::TcpStream`] for tasklets.
///
/// Reads, writes and [`connect`](TcpStream::connect) park the calling tasklet while they
/// would block; the other tasklets of the thread run meanwhile. On a thread without tasklets
/// they block like std's. `Read` and `Write` are implemented for `TcpStream` and for
/// `&TcpStream`, so generic I/O code (`BufReader`, `io::copy`, ...) works unchanged, and one
/// tasklet can read a stream while another writes it.
///
/// Writes to a connection the peer has closed fail with
/// [`BrokenPipe`](io::ErrorKind::BrokenPipe) (or `ConnectionReset`), never with `SIGPIPE`.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use tasklets::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// // An echo server...
/// tasklets::spawn(move || {
///     let (mut stream, _) = listener.accept().unwrap();
///     let mut reader = stream.try_clone().unwrap();
///     std::io::copy(&mut reader, &mut stream).unwrap();
/// });
/// // ...and a client.
/// let client = tasklets::spawn(move || {
///     let mut stream = TcpStream::connect(addr).unwrap();
///     stream.write_all(b"ping").unwrap();
///     stream.shutdown(std::net::Shutdown::Write).unwrap();
///     let mut echo = Vec::new();
///     stream.read_to_end(&mut echo).unwrap();
///     echo
/// });
/// tasklets::run();
/// assert_eq!(client.join().unwrap(), b"ping");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpStream {
    inner: NetSocket,
}

// ---------------------------------------------------------------------------------------------
// TcpListener
// ---------------------------------------------------------------------------------------------

impl TcpListener {
    /// Creates a listener bound to `addr` (as [`std::net::TcpListener::bind`]). Each address
    /// `addr` resolves to is tried in order until one can be bound. Port 0 asks the OS for a
    /// free port: see [`local_addr`](TcpListener::local_addr).
    ///
    /// A host name is resolved without blocking the thread (see the [module](crate::net)
    /// docs, which also explain the `Sync` bound).
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = tasklets::net::TcpListener::bind("127.0.0.1:0")?;
    /// assert_ne!(listener.local_addr()?.port(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind<A: ToSocketAddrs + Sync>(addr: A) -> io::Result<TcpListener> {
        TcpListener::options().bind(addr)
    }

    /// Options for binding a listener (`SO_REUSEPORT`, the backlog, ...): see [`BindOptions`].
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = tasklets::net::TcpListener::options().reuse_port(true).backlog(128).bind("127.0.0.1:0")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn options() -> BindOptions<TcpListener> {
        BindOptions::new(true)
    }

    /// The local address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet(&self.inner.socket().local_addr()?)
    }

    /// A second handle to the same listening socket (as
    /// [`std::net::TcpListener::try_clone`]): connections are accepted through either, and
    /// options (`set_nonblocking`, ...) set on one apply to both.
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        Ok(TcpListener { inner: self.inner.try_clone()? })
    }

    /// Accepts a connection, parking the calling tasklet until one arrives (as
    /// [`std::net::TcpListener::accept`]). Returns the stream and the peer's address.
    ///
    /// Errors are returned, never retried: in particular when the process is out of file
    /// descriptors (`EMFILE`, `ENFILE`), `accept` fails at once and the pending connection
    /// stays queued for a later call. In non-blocking mode, no pending connection is a
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) error.
    ///
    /// # Examples
    ///
    /// ```
    /// use tasklets::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// let client = tasklets::spawn(move || TcpStream::connect(addr).unwrap().local_addr().unwrap());
    /// let (_stream, peer) = listener.accept()?; // main parks; the client tasklet runs
    /// assert_eq!(peer, client.join().unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (socket, addr) = self.inner.read(crate::sys::accept)?;
        let addr = inet(&addr)?;
        Ok((TcpStream { inner: NetSocket::accepted(socket) }, addr))
    }

    /// An iterator over incoming connections: each item is an [`accept`](TcpListener::accept)
    /// (without the peer address). It never returns `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use tasklets::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// for n in 0..3u8 {
    ///     tasklets::spawn(move || TcpStream::connect(addr).unwrap().write_all(&[n]).unwrap());
    /// }
    /// let served = tasklets::spawn(move || listener.incoming().take(3).filter(|s| s.is_ok()).count());
    /// tasklets::run();
    /// assert_eq!(served.join().unwrap(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// Sets the `IP_TTL` option: the time-to-live of packets sent from this socket.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.socket().set_ttl_v4(ttl)
    }

    /// The `IP_TTL` option (see [`set_ttl`](TcpListener::set_ttl)).
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.socket().ttl_v4()
    }

    /// Takes the pending error of the socket (`SO_ERROR`), clearing it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.socket().take_error()
    }

    /// Moves the listener into or out of non-blocking mode (as std): in non-blocking mode
    /// [`accept`](TcpListener::accept) fails with [`WouldBlock`](io::ErrorKind::WouldBlock)
    /// instead of waiting for a connection.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }
}

impl BindOptions<TcpListener> {
    /// Sets how many connections the kernel queues before `accept` takes them (default
    /// 1024; the kernel caps it at `net.core.somaxconn`).
    pub fn backlog(&mut self, backlog: u32) -> &mut Self {
        self.backlog = backlog;
        self
    }

    /// Creates a listener bound to `addr` with these options, as [`TcpListener::bind`] does
    /// with the defaults: each address `addr` resolves to is tried in order until one can be
    /// bound.
    pub fn bind<A: ToSocketAddrs + Sync>(&self, addr: A) -> io::Result<TcpListener> {
        each_addr(&addr, |addr| {
            let socket = self.bound(addr, Type::STREAM)?;
            socket.listen(i32::try_from(self.backlog).unwrap_or(i32::MAX))?;
            Ok(TcpListener { inner: NetSocket::new(socket)? })
        })
    }
}

impl<'a> Iterator for Incoming<'a> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

impl std::iter::FusedIterator for Incoming<'_> {}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut res = f.debug_struct("TcpListener");
        if let Ok(addr) = self.local_addr() {
            res.field("addr", &addr);
        }
        res.field("fd", &self.as_raw_fd()).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// TcpStream
// ---------------------------------------------------------------------------------------------

impl TcpStream {
    /// Opens a connection to `addr` (as [`std::net::TcpStream::connect`]), parking the
    /// calling tasklet until it is established. Each address `addr` resolves to is tried in
    /// order; the error of the last one is returned if none accepts.
    ///
    /// A host name is resolved without blocking the thread (see the [module](crate::net)
    /// docs, which also explain the `Sync` bound). An address that cannot be parsed is an
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) error, a closed port
    /// [`ConnectionRefused`](io::ErrorKind::ConnectionRefused).
    ///
    /// # Examples
    ///
    /// ```
    /// use tasklets::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let stream = TcpStream::connect(listener.local_addr()?)?;
    /// assert_eq!(stream.peer_addr()?, listener.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<A: ToSocketAddrs + Sync>(addr: A) -> io::Result<TcpStream> {
        each_addr(&addr, |addr| connect(addr, None))
    }

    /// Opens a connection to `addr` with a timeout (as
    /// [`std::net::TcpStream::connect_timeout`]): if it is not established within `timeout`,
    /// the attempt fails with [`TimedOut`](io::ErrorKind::TimedOut). A zero `timeout` is an
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) error.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasklets::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    /// assert_eq!(stream.peer_addr()?, addr);
    /// let zero = TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err();
    /// assert_eq!(zero.kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot set a 0 duration timeout"));
        }
        connect(addr, Some(timeout))
    }

    /// The address of the remote end (`NotConnected` if there is none).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet(&self.inner.socket().peer_addr()?)
    }

    /// The address of the local end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet(&self.inner.socket().local_addr()?)
    }

    /// Shuts down the read half, the write half or both (as
    /// [`std::net::TcpStream::shutdown`]). After `Shutdown::Write` the peer reads end of file
    /// once it has read what was sent; this side can still read.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.socket().shutdown(how)
    }

    /// A second handle to the same connection (as [`std::net::TcpStream::try_clone`]): both
    /// read and write the same stream of bytes, and options set on one (timeouts,
    /// non-blocking mode) apply to both. Typical use: one tasklet reads while another writes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use tasklets::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = TcpStream::connect(listener.local_addr()?)?;
    /// let (server, _) = listener.accept()?;
    /// let mut writer = server.try_clone()?;
    /// tasklets::spawn(move || writer.write_all(b"from the clone").unwrap());
    /// let mut buf = [0; 14];
    /// client.read_exact(&mut buf)?; // main parks; the writer tasklet runs
    /// assert_eq!(&buf, b"from the clone");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream { inner: self.inner.try_clone()? })
    }

    /// Sets the read timeout (as [`std::net::TcpStream::set_read_timeout`]): a read, or a
    /// [`peek`](TcpStream::peek), that waits that long fails with
    /// [`WouldBlock`](io::ErrorKind::WouldBlock), as std's does on Unix. `None` waits forever;
    /// a zero duration is an [`InvalidInput`](io::ErrorKind::InvalidInput) error. Only the
    /// calling tasklet waits: the others run meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use std::time::Duration;
    /// use tasklets::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let mut stream = TcpStream::connect(listener.local_addr()?)?;
    /// stream.set_read_timeout(Some(Duration::from_millis(10)))?;
    /// let err = stream.read(&mut [0; 16]).unwrap_err(); // the server never writes
    /// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(Direction::Read, dur)
    }

    /// Sets the write timeout (as [`std::net::TcpStream::set_write_timeout`]): a write that
    /// waits that long for room in the send buffer fails with
    /// [`WouldBlock`](io::ErrorKind::WouldBlock). `None` waits forever; a zero duration is an
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) error.
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(Direction::Write, dur)
    }

    /// The read timeout (see [`set_read_timeout`](TcpStream::set_read_timeout)).
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.timeout(Direction::Read))
    }

    /// The write timeout (see [`set_write_timeout`](TcpStream::set_write_timeout)).
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.timeout(Direction::Write))
    }

    /// Reads without consuming (as [`std::net::TcpStream::peek`]): the next read returns the
    /// same bytes. Waits like a read, and honours the read timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use tasklets::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = TcpStream::connect(listener.local_addr()?)?;
    /// let (mut server, _) = listener.accept()?;
    /// client.write_all(b"abc")?;
    /// let mut buf = [0; 3];
    /// assert_eq!(server.peek(&mut buf)?, 3);
    /// server.read_exact(&mut buf)?;
    /// assert_eq!(&buf, b"abc");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.recv(buf, libc::MSG_PEEK)
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm when `true`).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.socket().set_tcp_nodelay(nodelay)
    }

    /// The `TCP_NODELAY` option (see [`set_nodelay`](TcpStream::set_nodelay)).
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.socket().tcp_nodelay()
    }

    /// Sets the `IP_TTL` option: the time-to-live of packets sent from this socket.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.socket().set_ttl_v4(ttl)
    }

    /// The `IP_TTL` option (see [`set_ttl`](TcpStream::set_ttl)).
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.socket().ttl_v4()
    }

    /// Takes the pending error of the socket (`SO_ERROR`), clearing it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.socket().take_error()
    }

    /// Moves the stream into or out of non-blocking mode (as
    /// [`std::net::TcpStream::set_nonblocking`]): in non-blocking mode reads and writes that
    /// would wait fail with [`WouldBlock`](io::ErrorKind::WouldBlock) at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use tasklets::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let mut stream = TcpStream::connect(listener.local_addr()?)?;
    /// stream.set_nonblocking(true)?;
    /// let err = stream.read(&mut [0; 16]).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }
}

/// Connects a new socket to `addr`, within `timeout` if there is one.
fn connect(addr: &SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
    let stream = TcpStream { inner: NetSocket::new(socket)? };
    let socket = stream.inner.socket();
    match socket.connect(&(*addr).into()) {
        Ok(()) => return Ok(stream),
        // In progress; an interrupted connect goes on in the background the same way.
        Err(err)
            if err.raw_os_error() == Some(libc::EINPROGRESS) || err.kind() == io::ErrorKind::Interrupted => {}
        Err(err) => return Err(err),
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        // Writable means established or failed (wake-ups may also be spurious).
        match stream.inner.source().wait(Direction::Write, deadline) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out"));
            }
            Err(err) => return Err(err),
        }
        if let Some(err) = socket.take_error()? {
            return Err(err);
        }
        match socket.peer_addr() {
            Ok(_) => return Ok(stream),
            Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => continue, // not yet
            Err(err) => return Err(err),
        }
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_stream(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.inner.recv_vectored(bufs)
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.send(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner.send_vectored(bufs)
    }

    /// Does nothing: a TCP stream has no user-space buffer.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    /// Does nothing: a TCP stream has no user-space buffer.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut res = f.debug_struct("TcpStream");
        if let Ok(addr) = self.local_addr() {
            res.field("addr", &addr);
        }
        if let Ok(peer) = self.peer_addr() {
            res.field("peer", &peer);
        }
        res.field("fd", &self.as_raw_fd()).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

conversions!(TcpListener);
conversions!(TcpStream);
