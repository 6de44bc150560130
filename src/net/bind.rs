//! `BindOptions`: binding a `TcpListener` or a `UdpSocket` with socket options that must
//! be set before `bind`, first of all `SO_REUSEPORT`, which std cannot set.
//!
//! The shape is std's `OpenOptions` (`File::options().read(true).open(path)`):
//! `TcpListener::options().reuse_port(true).bind(addr)`. One type, parameterised by what it
//! binds, so that the TCP-only option (the backlog) exists only for listeners. Peers offer the
//! same options as a socket object instead (tokio's `TcpSocket`: `set_reuseport`, `bind`,
//! `listen`; socket2's `Socket`); an options value binds every address a name resolves to in
//! turn, as std's `bind` does, and cannot be left half-configured.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// Connections a listener queues before `accept` takes them, unless
/// [`BindOptions::backlog`] says otherwise (the kernel caps it at `net.core.somaxconn`).
pub(crate) const DEFAULT_BACKLOG: u32 = 1024;

/// Options for binding a [`TcpListener`](crate::net::TcpListener) or a
/// [`UdpSocket`](crate::net::UdpSocket): made by
/// [`TcpListener::options`](crate::net::TcpListener::options) and
/// [`UdpSocket::options`](crate::net::UdpSocket::options), set with the chained methods, used by
/// `bind`.
///
/// The defaults are exactly what [`TcpListener::bind`](crate::net::TcpListener::bind) and
/// [`UdpSocket::bind`](crate::net::UdpSocket::bind) do:
/// `SO_REUSEADDR` on for listeners (as std on Unix) and off for UDP, no `SO_REUSEPORT`,
/// `IPV6_V6ONLY` left to the system, a listen backlog of 1024.
///
/// # Examples
///
/// Several listeners on one port, one per scheduler thread, with the kernel spreading the
/// connections among them (the shared-nothing server of `docs/multicore.md`):
///
/// ```
/// use tasklets::net::{TcpListener, TcpStream};
///
/// let first = TcpListener::options().reuse_port(true).bind("127.0.0.1:0")?;
/// let addr = first.local_addr()?;
/// let second = TcpListener::options().reuse_port(true).bind(addr)?; // same port
/// assert_eq!(second.local_addr()?, addr);
/// assert!(TcpListener::bind(addr).is_err()); // a listener without SO_REUSEPORT cannot join
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct BindOptions<S> {
    reuse_address: bool,
    reuse_port: bool,
    only_v6: Option<bool>,
    pub(super) backlog: u32,
    kind: PhantomData<fn() -> S>,
}

impl<S> BindOptions<S> {
    pub(super) fn new(reuse_address: bool) -> BindOptions<S> {
        BindOptions {
            reuse_address,
            reuse_port: false,
            only_v6: None,
            backlog: DEFAULT_BACKLOG,
            kind: PhantomData,
        }
    }

    /// Sets `SO_REUSEPORT`: several sockets, each with this option, may bind the same address
    /// and port (if they belong to the same user). The kernel then spreads incoming TCP
    /// connections, or UDP datagrams, among them by a hash of the peer's address and port, so
    /// the split is uneven for few peers (`docs/multicore.md`).
    pub fn reuse_port(&mut self, reuse: bool) -> &mut Self {
        self.reuse_port = reuse;
        self
    }

    /// Sets `SO_REUSEADDR`: bind even though connections of an earlier socket on the address
    /// linger in `TIME_WAIT` (TCP), or share the address (UDP multicast).
    pub fn reuse_address(&mut self, reuse: bool) -> &mut Self {
        self.reuse_address = reuse;
        self
    }

    /// Sets `IPV6_V6ONLY` for an IPv6 address: `true` accepts IPv6 only, `false` IPv4-mapped
    /// addresses too. Ignored for IPv4 addresses.
    pub fn only_v6(&mut self, only: bool) -> &mut Self {
        self.only_v6 = Some(only);
        self
    }

    /// A socket of `ty` for `addr` with the options set, bound.
    pub(super) fn bound(&self, addr: &SocketAddr, ty: Type) -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(*addr), ty, None)?;
        if self.reuse_address {
            socket.set_reuse_address(true)?;
        }
        if self.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if let (Some(only), SocketAddr::V6(_)) = (self.only_v6, addr) {
            socket.set_only_v6(only)?;
        }
        socket.bind(&(*addr).into())?;
        Ok(socket)
    }
}

impl<S> Clone for BindOptions<S> {
    fn clone(&self) -> Self {
        BindOptions { kind: PhantomData, ..*self }
    }
}

impl<S> fmt::Debug for BindOptions<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindOptions")
            .field("reuse_address", &self.reuse_address)
            .field("reuse_port", &self.reuse_port)
            .field("only_v6", &self.only_v6)
            .field("backlog", &self.backlog)
            .finish()
    }
}
