//! `TcpListener::options()` / `UdpSocket::options()`: `SO_REUSEPORT` and the other options set
//! before `bind`, and the kernel spreading connections and datagrams over the sockets that
//! share a port, one per scheduler thread. Loopback only.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tasklets::net::{TcpListener, TcpStream, UdpSocket};

const DEADLINE: Duration = Duration::from_secs(20);

/// Waits (bounded) until `done` holds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn tcp_listeners_share_a_port_only_with_reuse_port() {
    let first = TcpListener::options().reuse_port(true).bind("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    let second = TcpListener::options().reuse_port(true).bind(addr).unwrap();
    assert_eq!(second.local_addr().unwrap(), addr);
    for listener in [&first, &second] {
        let socket = SockRef::from(listener);
        assert!(socket.reuse_port().unwrap());
        assert!(socket.reuse_address().unwrap(), "listeners keep std's SO_REUSEADDR");
    }
    let err = TcpListener::bind(addr).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "a listener without SO_REUSEPORT cannot join");
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(!SockRef::from(&plain).reuse_port().unwrap(), "the default is off");
    let err = TcpListener::options().reuse_port(true).bind(plain.local_addr().unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "nor can one join a listener without it");
}

#[test]
fn bind_options_set_what_they_say() {
    let listener = TcpListener::options().reuse_address(false).backlog(1).bind("127.0.0.1:0").unwrap();
    assert!(!SockRef::from(&listener).reuse_address().unwrap());
    // A tiny backlog still accepts.
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket = SockRef::from(&udp);
    assert!(!socket.reuse_address().unwrap() && !socket.reuse_port().unwrap(), "std's UDP defaults");
    let options = UdpSocket::options().reuse_address(true).clone();
    assert!(SockRef::from(&options.bind("127.0.0.1:0").unwrap()).reuse_address().unwrap());
    // IPv6 only where the machine has IPv6 loopback.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = TcpListener::options().only_v6(true).bind("[::1]:0").unwrap();
        assert!(SockRef::from(&v6).only_v6().unwrap());
        let v4 = TcpListener::options().only_v6(true).bind("127.0.0.1:0").unwrap();
        assert!(v4.local_addr().unwrap().is_ipv4(), "ignored for IPv4");
    }
    // Errors are std's: a bad address, an address in use.
    assert_eq!(TcpListener::options().bind("no port").unwrap_err().kind(), ErrorKind::InvalidInput);
}

/// One listener per scheduler thread on one port: every connection is accepted exactly once,
/// and the kernel spreads them over both threads.
#[test]
fn connections_spread_over_reuse_port_listeners_on_scheduler_threads() {
    const CONNECTIONS: usize = 64;
    let first = TcpListener::options().reuse_port(true).bind("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    let second = TcpListener::options().reuse_port(true).bind(addr).unwrap();
    let listeners = Arc::new(Mutex::new(vec![Some(first), Some(second)]));
    let accepted: Arc<Vec<AtomicUsize>> = Arc::new((0..2).map(|_| AtomicUsize::new(0)).collect());
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let threads = {
        let (listeners, accepted, peers) = (listeners.clone(), accepted.clone(), peers.clone());
        tasklets::threads::spawn(2, move |index| {
            let listener = listeners.lock().unwrap()[index].take().unwrap();
            loop {
                let (_stream, peer) = listener.accept().unwrap();
                assert!(peers.lock().unwrap().insert(peer), "{peer} accepted twice");
                accepted[index].fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap()
    };
    let total = || accepted.iter().map(|a| a.load(Ordering::SeqCst)).sum::<usize>();
    let clients: Vec<std::net::TcpStream> =
        (0..CONNECTIONS).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    wait_until("every connection is accepted", || total() == CONNECTIONS);
    let counts: Vec<usize> = accepted.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    println!("connections per thread: {counts:?}");
    // The kernel picks by a hash of the 4-tuple: all 64 on one listener has odds of 2^-63.
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    for result in threads.shutdown() {
        assert!(result.unwrap_err().is_killed(), "the acceptors loop until killed");
    }
    drop(clients);
}

/// Two UDP sockets on one port, each served by a tasklet on its own scheduler thread: every
/// datagram (from 64 client sockets, so 64 source ports) is received exactly once, and both
/// sockets get some.
#[test]
fn datagrams_spread_over_reuse_port_udp_sockets() {
    const CLIENTS: usize = 64;
    let first = UdpSocket::options().reuse_port(true).bind("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    let second = UdpSocket::options().reuse_port(true).bind(addr).unwrap();
    assert_eq!(UdpSocket::bind(addr).unwrap_err().kind(), ErrorKind::AddrInUse);
    let sockets = Arc::new(Mutex::new(vec![Some(first), Some(second)]));
    let received = Arc::new(Mutex::new(Vec::new()));
    let threads = {
        let (sockets, received) = (sockets.clone(), received.clone());
        tasklets::threads::spawn(2, move |index| {
            let socket = sockets.lock().unwrap()[index].take().unwrap();
            let mut buf = [0; 16];
            loop {
                let (n, _) = socket.recv_from(&mut buf).unwrap();
                let id = u32::from_le_bytes(buf[..n].try_into().unwrap());
                received.lock().unwrap().push((index, id));
            }
        })
        .unwrap()
    };
    let clients: Vec<std::net::UdpSocket> =
        (0..CLIENTS).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for (id, client) in clients.iter().enumerate() {
        client.send_to(&(id as u32).to_le_bytes(), addr).unwrap();
    }
    wait_until("every datagram arrived", || received.lock().unwrap().len() >= CLIENTS);
    let received = received.lock().unwrap().clone();
    let ids: HashSet<u32> = received.iter().map(|&(_, id)| id).collect();
    assert_eq!((received.len(), ids.len()), (CLIENTS, CLIENTS), "each datagram exactly once");
    let per_socket = [0, 1].map(|i| received.iter().filter(|&&(index, _)| index == i).count());
    println!("datagrams per socket: {per_socket:?}");
    assert!(per_socket.iter().all(|&n| n > 0), "{per_socket:?}");
    threads.shutdown();
}
