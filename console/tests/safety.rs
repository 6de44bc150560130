//! Safe by default: loopback only, read-only, bounded against slow and hostile clients, and
//! never in the way of the application's schedulers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tasklets_console::{Builder, Limits};

#[test]
fn it_binds_to_loopback_only_unless_told_otherwise() {
    let err = tasklets_console::serve("0.0.0.0:0").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("loopback"), "{err}");
    let open = Builder::new().allow_remote(true).serve("0.0.0.0:0").unwrap();
    let port = open.local_addr().port();
    let (status, _) = common::get_with_host(([127, 0, 0, 1], port).into(), "/api/state", "console.example:1");
    assert_eq!(status, 200, "allowed remote: any Host");
    open.shutdown();
}

#[test]
fn requests_for_other_hosts_are_refused_against_dns_rebinding() {
    let console = tasklets_console::serve("127.0.0.1:0").unwrap();
    let addr = console.local_addr();
    assert_eq!(common::get_with_host(addr, "/api/state", "attacker.example:80").0, 403);
    assert_eq!(common::get_with_host(addr, "/", "localhost:80").0, 200);
    assert_eq!(common::get_with_host(addr, "/", "[::1]:80").0, 200);
    console.shutdown();
}

#[test]
fn it_is_read_only() {
    let console = tasklets_console::serve("127.0.0.1:0").unwrap();
    let addr = console.local_addr();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (status, body) =
            common::request(addr, &format!("{method} /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
        assert_eq!(status, 405, "{method}: {body}");
    }
    let (status, _) =
        common::request(addr, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(status, 413);
    assert_eq!(common::get(addr, "/nothing-here").0, 404);
    console.shutdown();
}

#[test]
fn a_huge_request_head_gets_431_without_being_buffered() {
    let console = tasklets_console::serve("127.0.0.1:0").unwrap();
    let addr = console.local_addr();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ");
    // Write until the server answers and closes; it never reads more than 8 KiB of it.
    let filler = vec![b'a'; 16 * 1024];
    let mut sent = 0;
    while sent < 1 << 20 && stream.write_all(&filler).is_ok() {
        sent += filler.len();
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let (status, body) = common::parse(&answer);
    assert_eq!(status, 431, "{body}");
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _) = common::request(addr, &format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n"));
    assert_eq!(status, 431);
    console.shutdown();
}

#[test]
fn a_slowloris_client_is_cut_off_and_others_are_served_meanwhile() {
    let limits = Limits { header_timeout: Duration::from_millis(500), ..Limits::default() };
    let console = Builder::new().limits(limits).serve("127.0.0.1:0").unwrap();
    let addr = console.local_addr();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    for byte in b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".iter().cycle().take(200) {
        if slow.write_all(&[*byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // Others are served while the slow client trickles.
        if started.elapsed() < Duration::from_millis(300) {
            assert_eq!(common::get(addr, "/api/state").0, 200);
        }
        let mut buf = [0u8; 64];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(_) => panic!("no answer is due to an incomplete request"),
            Err(_) => {} // nothing yet
        }
    }
    let closed_after = closed_after.expect("the slow client was cut off");
    assert!(
        closed_after >= Duration::from_millis(450) && closed_after < Duration::from_secs(8),
        "{closed_after:?}"
    );
    console.shutdown();
}

/// Raises the soft fd limit to the hard one; returns the soft limit now.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur as u64
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_connections_are_refused_beyond_the_limit_and_the_app_goes_on() {
    let fds = raise_fd_limit();
    let wanted = 10_000u64;
    let n = wanted.min(fds.saturating_sub(500));
    if n < wanted {
        eprintln!("the fd limit is {fds}: opening {n} connections instead of {wanted}");
    }
    let limits = Limits { max_connections: 64, header_timeout: Duration::from_secs(2), ..Limits::default() };
    let console = Builder::new().limits(limits).serve("127.0.0.1:0").unwrap();
    let addr = console.local_addr();
    // The application: two tasklets switching on their own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let app = {
        let stop = stop.clone();
        thread::Builder::new()
            .name("busy app".into())
            .spawn(move || {
                for _ in 0..2 {
                    let stop = stop.clone();
                    tasklets::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            tasklets::time::sleep(Duration::from_micros(500));
                        }
                    });
                }
                tasklets::run();
            })
            .unwrap()
    };
    let handle = loop {
        if let Some(h) =
            tasklets::monitor::schedulers().into_iter().find(|s| s.thread_name() == Some("busy app"))
        {
            break h;
        }
        thread::sleep(Duration::from_millis(1));
    };
    let rss_before = rss_kib();
    let switches_before = handle.counters().switches;
    let mut flood = Vec::with_capacity(n as usize);
    let flood_started = Instant::now();
    for _ in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => flood.push(stream),
            Err(err) => panic!("connection {} failed: {err}", flood.len()),
        }
    }
    let during = handle.counters().switches;
    assert!(during > switches_before + 20, "the app kept switching: {switches_before} -> {during}");
    eprintln!("{} connections in {:?}", flood.len(), flood_started.elapsed());
    let rss_during = rss_kib();
    drop(flood);
    // Once the silent connections time out, the console answers again.
    let state = common::wait_for(addr, "the console to answer after the flood", |s| Some(s.clone()));
    let refused = state["console"]["refused"].as_u64().unwrap();
    assert!(refused >= n / 2, "refused {refused} of {n}");
    assert!(state["console"]["peak_connections"].as_u64().unwrap() <= 64, "{}", state["console"]);
    let grown = rss_during.saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "the process grew by {grown} KiB during the flood");
    stop.store(true, Ordering::Relaxed);
    app.join().unwrap();
    console.shutdown();
}
