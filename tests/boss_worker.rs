//! Runs the network examples' binaries: `boss_worker` as the README's main demo (no
//! arguments) and in `--serve` mode driven by plain std clients, and `echo_server` loaded by
//! `echo_load`. Loopback only.
//!
//! The binaries are looked up next to this test's own, as `tests/examples.rs` does: plain
//! `cargo test` builds them, `cargo test --test boss_worker` alone does not (a missing or stale
//! binary fails the test with what to run).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Output, Stdio};
use std::time::Duration;

#[path = "../examples/shared/boss_worker.rs"]
mod boss_worker;

/// How long a run may take (the demo takes a few seconds).
const TIME_LIMIT: Duration = Duration::from_secs(120);

mod common;

/// Runs example `name` with `args`, killing it if it exceeds [`TIME_LIMIT`].
fn run_example(name: &str, args: &[&str]) -> Output {
    common::run_example(name, args, TIME_LIMIT)
}

/// A server example running in the background, killed when dropped.
struct Background {
    child: Child,
    addr: SocketAddr,
    /// Kept open so that the server can go on writing to its stdout.
    _stdout: BufReader<ChildStdout>,
}

impl Background {
    /// Starts example `name` with `args` and reads the address it serves from the first line
    /// of its stdout (`... on ADDR ...`).
    fn start(name: &str, args: &[&str]) -> Background {
        let mut child = common::target_command(common::example_binary(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start example {name}: {err}"));
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first).expect("the server's first line");
        let addr = first
            .split_whitespace()
            .find_map(|word| word.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        assert!(addr.ip().is_loopback(), "{first}");
        Background { child, addr, _stdout: stdout }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line_of<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key:?} line in:\n{stdout}"))
}

/// The README's main demo: `cargo run --release --example boss_worker` with no arguments runs
/// the server and its clients, prints the report and exits 0. (A debug build runs a smaller
/// load.)
#[test]
fn boss_worker_demo_runs_and_reports() {
    let args: &[&str] = if cfg!(debug_assertions) { &["--clients", "8", "--requests", "300"] } else { &[] };
    let output = run_example("boss_worker", args);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 report");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "exit {}: {stdout}\n{stderr}", output.status);
    let connections = if cfg!(debug_assertions) { 8 * 3 } else { 32 * 15 };
    assert!(stdout.starts_with("boss_worker: 8 workers on 127.0.0.1:"), "{stdout}");
    assert_eq!(line_of(&stdout, "connections"), format!("connections   {connections}"));
    assert!(line_of(&stdout, "requests/s").split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() > 0.0);
    let latency = line_of(&stdout, "latency");
    assert!(latency.contains("p50 ") && latency.contains("p99 "), "{latency}");
    assert_eq!(line_of(&stdout, "errors"), "errors        0");
    let boss = line_of(&stdout, "boss  ");
    assert!(
        boss.starts_with(&format!("boss          {connections} jobs accepted, {connections} finished")),
        "{boss}"
    );
    assert!(stderr.contains("requests/s"), "a progress line on stderr: {stderr}");
}

/// `boss_worker --threads 2`: the boss and the clients on the main thread, the workers spread
/// over it and a second scheduler thread, fed through `sync` channels; every job accounted for,
/// and both threads served some.
#[test]
fn boss_worker_demo_runs_over_two_threads() {
    let args: &[&str] = if cfg!(debug_assertions) {
        &["--threads", "2", "--clients", "8", "--requests", "300"]
    } else {
        &["--threads", "2"]
    };
    let output = run_example("boss_worker", args);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 report");
    println!("{stdout}");
    assert!(
        output.status.success(),
        "exit {}: {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let connections = if cfg!(debug_assertions) { 8 * 3 } else { 32 * 15 };
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("boss_worker: 8 workers on 127.0.0.1:") && first.contains(" over 2 threads;"),
        "{first}"
    );
    assert_eq!(line_of(&stdout, "errors"), "errors        0");
    assert!(line_of(&stdout, "boss  ")
        .starts_with(&format!("boss          {connections} jobs accepted, {connections} finished")));
    let threads = line_of(&stdout, "threads");
    let per_thread: Vec<u64> = threads
        .split_once("jobs per thread: ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(|list| list.split(", ").map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| panic!("{threads}"));
    assert_eq!(per_thread.len(), 2, "{threads}");
    assert_eq!(per_thread.iter().sum::<u64>(), connections as u64, "{threads}");
    assert!(per_thread.iter().all(|&n| n > 0), "a thread's workers got no job: {threads}");
}

#[test]
fn boss_worker_flags_shape_the_run() {
    let output = run_example(
        "boss_worker",
        &["--workers", "2", "--clients", "5", "--requests=30", "--per-connection", "7"],
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 report");
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("boss_worker: 2 workers on 127.0.0.1:"), "{stdout}");
    // 30 requests in connections of 7: 5 connections per client.
    assert_eq!(line_of(&stdout, "connections"), "connections   25");
    assert!(line_of(&stdout, "requests ").starts_with("requests      150 in "), "{stdout}");
    assert!(
        line_of(&stdout, "boss  ").starts_with("boss          25 jobs accepted, 25 finished"),
        "{stdout}"
    );
}

#[test]
fn boss_worker_rejects_bad_arguments() {
    for args in [
        &["--workers"][..],
        &["--workers", "0"],
        &["--threads", "0"],
        &["--clients", "x"],
        &["--verbose"],
        &["extra"],
    ] {
        let output = run_example("boss_worker", args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("usage: boss_worker"), "{args:?}");
    }
    let help = run_example("boss_worker", &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--serve ADDR"));
}

/// Sends `request` on a std connection and returns the answer line without its newline.
fn call(reader: &mut BufReader<TcpStream>, request: &str) -> String {
    reader.get_mut().write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    assert_eq!(answer.pop(), Some('\n'), "{request}: answer cut short: {answer:?}");
    answer
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    BufReader::new(stream)
}

/// `boss_worker --serve`: only the server, speaking the line protocol to any client (here plain
/// std sockets), surviving a reset and a silent client (closed after the idle timeout).
#[test]
fn boss_worker_serve_mode_speaks_the_protocol() {
    use boss_worker::Request;
    let server = Background::start(
        "boss_worker",
        &["--serve", "127.0.0.1:0", "--workers", "2", "--idle-timeout", "1"],
    );
    let addr = server.addr;

    let mut client = connect(addr);
    for request in [
        Request::Sum(vec![1, 2, 3]),
        Request::Sum(vec![u64::MAX, 2]),
        Request::Hash { rounds: 1000, word: "tasklet".into() },
        Request::Sleep { ms: 20 },
        Request::Rand { len: 100_000, seed: 7 },
    ] {
        assert_eq!(call(&mut client, &request.line()), request.expected(), "{}", request.line());
    }
    assert_eq!(call(&mut client, "sum 40 2"), "OK 42", "commands are case-insensitive");
    assert!(call(&mut client, "FROB 1").starts_with("ERR unknown command"));
    assert_eq!(call(&mut client, "SUM 1 x"), r#"ERR SUM: not a number: "x""#);
    assert_eq!(call(&mut client, "HASH 5"), "ERR HASH needs a word");
    assert_eq!(call(&mut client, ""), "ERR empty request");
    assert!(call(&mut client, "SLEEP 99999999").starts_with("ERR SLEEP: at most"));
    assert_eq!(call(&mut client, "QUIT"), "OK bye");
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0, "the server closes after QUIT");

    // A client that resets mid-request, and one that never sends (closed after 1 s).
    let reset = TcpStream::connect(addr).unwrap();
    (&reset).write_all(b"SUM 1 2").unwrap();
    socket2::SockRef::from(&reset).set_linger(Some(Duration::ZERO)).unwrap();
    drop(reset);
    let silent = TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!((&silent).read(&mut [0u8; 1]).unwrap(), 0, "the idle timeout closes a silent client");

    // Still serving.
    let mut client = connect(addr);
    assert_eq!(call(&mut client, "SUM 2 3"), "OK 5");
    client.get_ref().shutdown(Shutdown::Write).unwrap();
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
}

/// `echo_server` on a free port, loaded by `echo_load` with small and large messages: every
/// byte verified, exit 0, a report with throughput and latency percentiles.
#[test]
fn echo_load_against_echo_server() {
    let server = Background::start("echo_server", &["127.0.0.1:0"]);
    let addr = server.addr.to_string();
    for (connections, round_trips, size) in [("50", "200", "64"), ("4", "3", "1500000")] {
        let output = run_example(
            "echo_load",
            &[&addr, "--connections", connections, "--round-trips", round_trips, "--size", size],
        );
        let stdout = String::from_utf8(output.stdout).expect("UTF-8 report");
        println!("{stdout}");
        assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        let trips: usize = connections.parse::<usize>().unwrap() * round_trips.parse::<usize>().unwrap();
        let bytes = trips * size.parse::<usize>().unwrap();
        assert!(
            line_of(&stdout, "round trips").starts_with(&format!("round trips  {} in ", thousands(trips)))
        );
        assert!(line_of(&stdout, "throughput")
            .contains(&format!("({} bytes sent and verified)", thousands(bytes))));
        assert!(line_of(&stdout, "latency").contains("p99 "));
        assert_eq!(line_of(&stdout, "errors"), "errors       0");
    }
    // Nothing listening: an error, exit 1.
    drop(server);
    let output = run_example("echo_load", &[&addr, "--connections", "2", "--round-trips", "1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("errors       2"));
}

/// `echo_server --threads 2`: two scheduler threads, each with its own `SO_REUSEPORT` listener
/// on one port, loaded by `echo_load`: every byte verified.
#[test]
fn echo_load_against_echo_server_on_two_threads() {
    let server = Background::start("echo_server", &["127.0.0.1:0", "--threads", "2"]);
    let addr = server.addr.to_string();
    let output =
        run_example("echo_load", &[&addr, "--connections", "64", "--round-trips", "200", "--size", "64"]);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 report");
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(line_of(&stdout, "round trips").starts_with(&format!("round trips  {} in ", thousands(64 * 200))));
    assert_eq!(line_of(&stdout, "errors"), "errors       0");
    let threads = std::fs::read_dir(format!("/proc/{}/task", server.child.id())).map(|d| d.count());
    assert!(threads.as_ref().is_ok_and(|&n| n >= 3), "main and two scheduler threads: {threads:?}");
}

#[test]
fn echo_server_rejects_bad_arguments() {
    for args in [&["--threads"][..], &["--threads", "0"], &["--threads", "x"], &["--verbose"]] {
        let output = run_example("echo_server", args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("usage: echo_server"), "{args:?}");
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
