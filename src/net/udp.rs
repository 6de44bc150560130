//! UDP: `UdpSocket`, as in `std::net`.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::Type;

use super::{each_addr, inet, resolve, BindOptions, NetSocket};
use crate::reactor::Direction;

/// A UDP socket: [`std::net::UdpSocket`] for tasklets.
///
/// Receiving parks the calling tasklet until a datagram arrives (sending, until there is room
/// in the send buffer); the other tasklets of the thread run meanwhile. On a thread without
/// tasklets the calls block like std's.
///
/// # Examples
///
/// ```
/// use tasklets::net::UdpSocket;
///
/// let server = UdpSocket::bind("127.0.0.1:0")?;
/// let server_addr = server.local_addr()?;
/// // The server answers one datagram, upper-cased.
/// tasklets::spawn(move || {
///     let mut buf = [0; 64];
///     let (n, from) = server.recv_from(&mut buf).unwrap(); // parks until a datagram comes
///     server.send_to(&buf[..n].to_ascii_uppercase(), from).unwrap();
/// });
/// let client = UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"hello", server_addr)?;
/// let mut buf = [0; 64];
/// let (n, from) = client.recv_from(&mut buf)?; // main parks; the server tasklet runs
/// assert_eq!((&buf[..n], from), (&b"HELLO"[..], server_addr));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UdpSocket {
    inner: NetSocket,
}

impl UdpSocket {
    /// Creates a socket bound to `addr` (as [`std::net::UdpSocket::bind`]). Each address
    /// `addr` resolves to is tried in order until one can be bound. Port 0 asks the OS for a
    /// free port: see [`local_addr`](UdpSocket::local_addr).
    ///
    /// A host name is resolved without blocking the thread (see the [module](crate::net)
    /// docs, which also explain the `Sync` bound).
    pub fn bind<A: ToSocketAddrs + Sync>(addr: A) -> io::Result<UdpSocket> {
        UdpSocket::options().bind(addr)
    }

    /// Options for binding a UDP socket (`SO_REUSEPORT`, ...): see [`BindOptions`].
    pub fn options() -> BindOptions<UdpSocket> {
        BindOptions::new(false)
    }

    /// Receives one datagram, parking until one arrives (as
    /// [`std::net::UdpSocket::recv_from`]). Returns its length and sender; the part of a
    /// datagram that does not fit in `buf` is discarded. Honours the read timeout and
    /// non-blocking mode.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf, 0)
    }

    /// Like [`recv_from`](UdpSocket::recv_from), but the datagram stays queued: the next
    /// receive returns it again.
    ///
    /// # Examples
    ///
    /// ```
    /// use tasklets::net::UdpSocket;
    ///
    /// let socket = UdpSocket::bind("127.0.0.1:0")?;
    /// socket.send_to(b"again", socket.local_addr()?)?;
    /// let mut buf = [0; 16];
    /// let (n, _) = socket.peek_from(&mut buf)?;
    /// assert_eq!(&buf[..n], b"again");
    /// let (n, _) = socket.recv_from(&mut buf)?;
    /// assert_eq!(&buf[..n], b"again");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf, libc::MSG_PEEK)
    }

    /// Sends `buf` as one datagram to `addr` (as [`std::net::UdpSocket::send_to`]); only the
    /// first address `addr` resolves to is used. Returns the number of bytes sent.
    ///
    /// A host name is resolved without blocking the thread, on the pool: pass a
    /// [`SocketAddr`] where datagrams are sent often.
    pub fn send_to<A: ToSocketAddrs + Sync>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        match resolve(&addr)?.first() {
            Some(addr) => self.inner.send_to(buf, addr),
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")),
        }
    }

    /// The address of the peer set by [`connect`](UdpSocket::connect) (`NotConnected` if
    /// there is none).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet(&self.inner.socket().peer_addr()?)
    }

    /// The local address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet(&self.inner.socket().local_addr()?)
    }

    /// A second handle to the same socket (as [`std::net::UdpSocket::try_clone`]): both
    /// send and receive through it, and options set on one (timeouts, non-blocking mode)
    /// apply to both.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket { inner: self.inner.try_clone()? })
    }

    /// Sets the read timeout (as [`std::net::UdpSocket::set_read_timeout`]): a receive that
    /// waits that long fails with [`WouldBlock`](io::ErrorKind::WouldBlock), as std's does on
    /// Unix. `None` waits forever; a zero duration is an
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) error. Only the calling tasklet waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasklets::net::UdpSocket;
    ///
    /// let socket = UdpSocket::bind("127.0.0.1:0")?;
    /// socket.set_read_timeout(Some(Duration::from_millis(10)))?;
    /// let err = socket.recv_from(&mut [0; 16]).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(Direction::Read, dur)
    }

    /// Sets the write timeout (as [`std::net::UdpSocket::set_write_timeout`]): a send that
    /// waits that long for room in the send buffer fails with
    /// [`WouldBlock`](io::ErrorKind::WouldBlock). `None` waits forever; a zero duration is an
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) error.
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(Direction::Write, dur)
    }

    /// The read timeout (see [`set_read_timeout`](UdpSocket::set_read_timeout)).
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.timeout(Direction::Read))
    }

    /// The write timeout (see [`set_write_timeout`](UdpSocket::set_write_timeout)).
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.timeout(Direction::Write))
    }

    /// Sets `SO_BROADCAST`: whether datagrams may be sent to a broadcast address.
    pub fn set_broadcast(&self, broadcast: bool) -> io::Result<()> {
        self.inner.socket().set_broadcast(broadcast)
    }

    /// The `SO_BROADCAST` option (see [`set_broadcast`](UdpSocket::set_broadcast)).
    pub fn broadcast(&self) -> io::Result<bool> {
        self.inner.socket().broadcast()
    }

    /// Sets `IP_MULTICAST_LOOP`: whether multicast datagrams sent from this socket are looped
    /// back to the local host.
    pub fn set_multicast_loop_v4(&self, multicast_loop_v4: bool) -> io::Result<()> {
        self.inner.socket().set_multicast_loop_v4(multicast_loop_v4)
    }

    /// The `IP_MULTICAST_LOOP` option (see
    /// [`set_multicast_loop_v4`](UdpSocket::set_multicast_loop_v4)).
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.inner.socket().multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL`: the time-to-live of multicast datagrams sent from this socket
    /// (1, the default, keeps them on the local network).
    pub fn set_multicast_ttl_v4(&self, multicast_ttl_v4: u32) -> io::Result<()> {
        self.inner.socket().set_multicast_ttl_v4(multicast_ttl_v4)
    }

    /// The `IP_MULTICAST_TTL` option (see
    /// [`set_multicast_ttl_v4`](UdpSocket::set_multicast_ttl_v4)).
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.inner.socket().multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP`: whether multicast datagrams sent from this socket are
    /// looped back to the local host.
    pub fn set_multicast_loop_v6(&self, multicast_loop_v6: bool) -> io::Result<()> {
        self.inner.socket().set_multicast_loop_v6(multicast_loop_v6)
    }

    /// The `IPV6_MULTICAST_LOOP` option (see
    /// [`set_multicast_loop_v6`](UdpSocket::set_multicast_loop_v6)).
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.inner.socket().multicast_loop_v6()
    }

    /// Sets the `IP_TTL` option: the time-to-live of datagrams sent from this socket.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.socket().set_ttl_v4(ttl)
    }

    /// The `IP_TTL` option (see [`set_ttl`](UdpSocket::set_ttl)).
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.socket().ttl_v4()
    }

    /// Joins the IPv4 multicast group `multiaddr` on the interface with address `interface`
    /// (`Ipv4Addr::UNSPECIFIED`: the system's choice).
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner.socket().join_multicast_v4(multiaddr, interface)
    }

    /// Joins the IPv6 multicast group `multiaddr` on the interface with index `interface` (0:
    /// the system's choice).
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner.socket().join_multicast_v6(multiaddr, interface)
    }

    /// Leaves an IPv4 multicast group (see [`join_multicast_v4`](UdpSocket::join_multicast_v4)).
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner.socket().leave_multicast_v4(multiaddr, interface)
    }

    /// Leaves an IPv6 multicast group (see [`join_multicast_v6`](UdpSocket::join_multicast_v6)).
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner.socket().leave_multicast_v6(multiaddr, interface)
    }

    /// Takes the pending error of the socket (`SO_ERROR`), clearing it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.socket().take_error()
    }

    /// Sets the peer (as [`std::net::UdpSocket::connect`]): [`send`](UdpSocket::send) goes
    /// there and [`recv`](UdpSocket::recv) only accepts datagrams from there. Each address
    /// `addr` resolves to is tried in order until one is accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// use tasklets::net::UdpSocket;
    ///
    /// let a = UdpSocket::bind("127.0.0.1:0")?;
    /// let b = UdpSocket::bind("127.0.0.1:0")?;
    /// a.connect(b.local_addr()?)?;
    /// b.connect(a.local_addr()?)?;
    /// a.send(b"hi")?;
    /// let mut buf = [0; 8];
    /// let n = b.recv(&mut buf)?;
    /// assert_eq!(&buf[..n], b"hi");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<A: ToSocketAddrs + Sync>(&self, addr: A) -> io::Result<()> {
        each_addr(&addr, |addr| self.inner.socket().connect(&(*addr).into()))
    }

    /// Sends `buf` as one datagram to the peer set by [`connect`](UdpSocket::connect).
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.send(buf)
    }

    /// Receives one datagram from the peer set by [`connect`](UdpSocket::connect), parking
    /// until one arrives; the part that does not fit in `buf` is discarded.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.recv(buf, 0)
    }

    /// Like [`recv`](UdpSocket::recv), but the datagram stays queued.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.recv(buf, libc::MSG_PEEK)
    }

    /// Moves the socket into or out of non-blocking mode (as
    /// [`std::net::UdpSocket::set_nonblocking`]): in non-blocking mode a receive with nothing
    /// queued (or a send with no room) fails with [`WouldBlock`](io::ErrorKind::WouldBlock)
    /// at once.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking);
        Ok(())
    }
}

impl BindOptions<UdpSocket> {
    /// Creates a socket bound to `addr` with these options, as [`UdpSocket::bind`] does with
    /// the defaults: each address `addr` resolves to is tried in order until one can be bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use tasklets::net::UdpSocket;
    ///
    /// let a = UdpSocket::options().reuse_port(true).bind("127.0.0.1:0")?;
    /// let b = UdpSocket::options().reuse_port(true).bind(a.local_addr()?)?;
    /// assert_eq!(a.local_addr()?, b.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind<A: ToSocketAddrs + Sync>(&self, addr: A) -> io::Result<UdpSocket> {
        each_addr(&addr, |addr| Ok(UdpSocket { inner: NetSocket::new(self.bound(addr, Type::DGRAM)?)? }))
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut res = f.debug_struct("UdpSocket");
        if let Ok(addr) = self.local_addr() {
            res.field("addr", &addr);
        }
        res.field("fd", &self.as_raw_fd()).finish()
    }
}

conversions!(UdpSocket);
