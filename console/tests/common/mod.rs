//! A plain HTTP client for the tests (std sockets, one request per connection).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// `GET path` with `Host: host`; returns the status and the body.
pub fn get_with_host(addr: SocketAddr, path: &str, host: &str) -> (u16, String) {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
}

/// `GET path` to the console at `addr`.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_with_host(addr, path, &addr.to_string())
}

/// Sends raw bytes and reads the whole answer.
pub fn request(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the console");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    parse(&answer)
}

/// Splits an HTTP answer into its status and body.
pub fn parse(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// `GET /api/state`, parsed.
pub fn state(addr: SocketAddr) -> serde_json::Value {
    let (status, body) = get(addr, "/api/state");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("{err}: {body}"))
}

/// The thread named `name` in a state document.
pub fn thread<'a>(state: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    state["threads"].as_array()?.iter().find(|t| t["name"] == name)
}

/// Polls the state until `check` finds what it wants (10 s at most).
pub fn wait_for<T>(
    addr: SocketAddr,
    what: &str,
    mut check: impl FnMut(&serde_json::Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = state(addr);
        if let Some(found) = check(&state) {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last state: {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
