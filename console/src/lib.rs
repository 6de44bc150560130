//! # tasklets-console
//!
//! A live web console for [`tasklets`]: one call starts an HTTP server on its own thread that
//! shows every scheduler thread of the process in the browser, refreshed every second, and
//! the same data as JSON for scripts and tests.
//!
//! ```no_run
//! let console = tasklets_console::serve("127.0.0.1:6680")?;
//! println!("console on {}", console.url());
//! // ... spawn tasklets and run them on any number of threads ...
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## What it shows
//!
//! - **Threads**: every thread that has a tasklet scheduler, with its tasklets by state, the
//!   run-queue length, switches and polls per second, tasklets parked on I/O, armed timers, the
//!   thread's CPU use, and whether it is **stalled right now** (which tasklet holds it and for
//!   how long). Stalls come from the schedulers' shared counters, sampled every 100 ms as Go's
//!   `sysmon` does ([`tasklets::monitor::Watcher`]): a stalled scheduler cannot answer for
//!   itself, and its last snapshot is shown as stale.
//! - **Tasklets**: id, name, where it was spawned (file:line), state, what it waits on (the
//!   channel and its balance, the fd and direction, the timer deadline, the joined tasklet),
//!   when it last ran, switches, CPU time, priority; sortable and filterable.
//! - **The wait-for graph**: tasklets, the channels they wait on and the tasklets they join,
//!   with join cycles (tasklets deadlocked on each other while main runs) highlighted.
//! - **Warnings with history**: stalls while they happen and after, the stalls and deadlocks
//!   the schedulers reported, tasklets parked longer than a threshold.
//!
//! ## The JSON endpoint: `GET /api/state`
//!
//! One object (`"version": 1`); durations are milliseconds (floats), instants are relative
//! to the moment the state was built:
//!
//! ```text
//! { "version": 1, "unix_ms": 1733333333000, "refresh_ms": 1000,
//!   "stall_threshold_ms": 100, "parked_threshold_ms": 10000,
//!   "console": { "connections": 1, "peak_connections": 3, "max_connections": 64, "refused": 0,
//!                "served": 12 },
//!   "threads": [ {
//!     "id": 1, "name": "main", "os_tid": 4242, "main_tasklet": 1,
//!     "activity": "idle" | "running" | "stalled" | "main_busy",
//!     "stalled": { "tasklet": 7, "name": "parser", "for_ms": 1520.0 } | null,
//!     "main_busy_ms": null, "switches": 18200, "switches_per_s": 9100.0,
//!     "polls": 700, "polls_per_s": 350.0, "cpu_ms": 1234.5, "cpu_percent": 12.5,
//!     "snapshot": { "age_ms": 3.2, "stale": false } | null,
//!     "stats": { "alive": 14, "runnable": 1, "parked_on_io": 9, "timers": 4, "wakeups": 1747 } | null,
//!     "by_state": { "running": 1, "runnable": 0, "blocked": 13, "paused": 0 },
//!     "tasklets": [ {
//!       "id": 6, "name": "boss", "main": false, "spawned_at": "examples/boss_worker.rs:88",
//!       "state": "running" | "runnable" | "blocked" | "paused", "priority": "normal",
//!       "waiting_on": { "kind": "receive" | "send", "channel": 1, "balance": -3 }
//!                   | { "kind": "io", "fd": 7, "direction": "read" | "write" }
//!                   | { "kind": "sleep" } | { "kind": "join", "tasklet": 7 } | { "kind": "unblock" }
//!                   | null,
//!       "deadline_in_ms": 9990.0 | null, "last_ran_ms_ago": 0.6 | null,
//!       "parked_ms": 120.0 | null, "switches": 78,
//!       "cpu_ms": 0.35 | null (per-tasklet CPU accounting off, the default) } ],
//!     "channels": [ { "id": 1, "balance": -3, "waiters": [2, 3, 5] } ],
//!     "cycles": [ [8, 9] ] } ],
//!   "warnings": [ { "seq": 3, "unix_ms": 1733333332000, "thread": 1, "thread_name": "main",
//!                   "kind": "stall" | "stall_reported" | "deadlock" | "parked",
//!                   "tasklet": 7 | null, "active": true, "message": "..." } ] }
//! ```
//!
//! A channel's balance is counted from the tasklets blocked on it (senders minus receivers),
//! which is what Stackless's `balance` is. `"cycles"` lists tasklets that join each other in a
//! ring: none of them can ever finish. (A deadlock through channels cannot be told apart from a
//! tasklet waiting for work: the runtime does not know who holds a channel's other handles.)
//!
//! ## Safe by default
//!
//! - It binds to loopback addresses only, unless [`Builder::allow_remote`] says otherwise,
//!   and then also refuses requests whose `Host` is not a loopback name (a web page elsewhere
//!   cannot read it by DNS rebinding).
//! - It is read-only: there are no actions (kill, dump) and only `GET` and `HEAD` exist.
//! - Tasklet names are text in the page (`textContent`, never HTML), and JSON escapes `<`, `>`
//!   and `&`; a content security policy forbids any script or resource from elsewhere.
//! - It runs on its own thread, on its own tasklets: a slow or hostile client parks one of
//!   them, never an application scheduler. Connections are bounded ([`Limits`]): at most
//!   `max_connections` at once (more are answered `503` and closed at once), request heads of
//!   at most `max_header_bytes`, read within `header_timeout`, responses written within
//!   `write_timeout`. Memory stays bounded whatever the clients do.
//!
//! ## What it costs
//!
//! Nobody connected: the console thread samples a few atomics every 100 ms; the schedulers do
//! nothing for it. With a client connected, each refresh asks every scheduler for a snapshot,
//! which it takes at its next poll (measured in `docs/benchmarks.md`).
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod http;
mod json;
mod server;
mod state;

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Starts a console with the default settings on `addr` (a loopback address; port 0 picks a
/// free port). See [`Builder::serve`].
///
/// # Errors
/// As [`Builder::serve`].
///
/// # Examples
///
/// ```
/// let console = tasklets_console::serve("127.0.0.1:0")?;
/// assert!(console.local_addr().ip().is_loopback());
/// console.shutdown();
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn serve<A: ToSocketAddrs>(addr: A) -> io::Result<Console> {
    Builder::new().serve(addr)
}

/// Bounds on what clients may make the console hold.
///
/// Build one with struct update syntax: `Limits { max_connections: 16, ..Limits::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are answered `503` and closed (default 64).
    pub max_connections: usize,
    /// Largest request head, in bytes (default 8 KiB): larger gets `431`.
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head, counted from when the console
    /// starts waiting for it, which also bounds an idle keep-alive connection (default 5 s).
    pub header_timeout: Duration,
    /// Time a response may take to be written (default 5 s).
    pub write_timeout: Duration,
    /// Requests served on one connection before it is closed (default 1,000).
    pub max_requests_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_header_bytes: 8 * 1024,
            header_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_requests_per_connection: 1_000,
        }
    }
}

/// A request to a route added with [`Builder::route`].
#[derive(Debug)]
pub struct Request<'a> {
    path: &'a str,
    query: &'a str,
}

impl Request<'_> {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.path
    }

    /// The query string (after `?`), possibly empty.
    pub fn query(&self) -> &str {
        self.query
    }

    /// The value of query parameter `name` (not percent-decoded).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }
}

/// What a route answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Response {
    /// `200` with an HTML page.
    pub fn html(body: impl Into<String>) -> Response {
        Response {
            status: 200,
            content_type: "text/html; charset=utf-8".into(),
            body: body.into().into_bytes(),
        }
    }

    /// `200` with a JSON document.
    pub fn json(body: impl Into<String>) -> Response {
        Response { status: 200, content_type: "application/json".into(), body: body.into().into_bytes() }
    }

    /// Any status, content type and body.
    pub fn new(status: u16, content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type: content_type.into(), body: body.into() }
    }
}

type Handler = Arc<dyn Fn(&Request<'_>) -> Response + Send + Sync>;

/// Settings of a console; [`serve`](Builder::serve) starts it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let console = tasklets_console::Builder::new()
///     .refresh(Duration::from_millis(500))
///     .stall_threshold(Duration::from_millis(50))
///     .route("/hello", |_| tasklets_console::Response::json(r#"{"hello":"world"}"#))
///     .serve("127.0.0.1:0")?;
/// println!("open {}", console.url());
/// console.shutdown();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
#[must_use = "a Builder does nothing until serve is called"]
pub struct Builder {
    refresh: Duration,
    stall_threshold: Duration,
    parked_threshold: Duration,
    allow_remote: bool,
    limits: Limits,
    routes: Vec<(String, Handler)>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            refresh: Duration::from_secs(1),
            stall_threshold: tasklets::DEFAULT_STALL_THRESHOLD,
            parked_threshold: Duration::from_secs(10),
            allow_remote: false,
            limits: Limits::default(),
            routes: Vec::new(),
        }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("refresh", &self.refresh)
            .field("stall_threshold", &self.stall_threshold)
            .field("parked_threshold", &self.parked_threshold)
            .field("allow_remote", &self.allow_remote)
            .field("limits", &self.limits)
            .field("routes", &self.routes.iter().map(|(path, _)| path).collect::<Vec<_>>())
            .finish()
    }
}

impl Builder {
    /// The defaults: refresh every second, stall threshold 100 ms, parked threshold 10 s,
    /// loopback only, [`Limits::default`].
    pub fn new() -> Builder {
        Builder::default()
    }

    /// How often the page refreshes (and how old a served state may be), clamped to
    /// 100 ms ..= 1 s.
    pub fn refresh(mut self, every: Duration) -> Builder {
        self.refresh = every.clamp(Duration::from_millis(100), Duration::from_secs(1));
        self
    }

    /// A tasklet that holds its thread this long without giving up the CPU marks the thread
    /// as stalled (default 100 ms).
    pub fn stall_threshold(mut self, threshold: Duration) -> Builder {
        self.stall_threshold = threshold;
        self
    }

    /// A tasklet blocked this long gets a warning (default 10 s).
    pub fn parked_threshold(mut self, threshold: Duration) -> Builder {
        self.parked_threshold = threshold;
        self
    }

    /// Allows binding to addresses other than loopback ones (off by default). Anyone who can
    /// reach the port then sees tasklet names and spawn locations.
    pub fn allow_remote(mut self, allow: bool) -> Builder {
        self.allow_remote = allow;
        self
    }

    /// Bounds on connections (see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Builder {
        self.limits = limits;
        self
    }

    /// Serves `handler`'s answers at `path` (exact match, `GET`), on the console's thread: it
    /// must not block (it runs between the console's tasklets). The network simulation
    /// example serves its own page this way.
    pub fn route(
        mut self,
        path: impl Into<String>,
        handler: impl Fn(&Request<'_>) -> Response + Send + Sync + 'static,
    ) -> Builder {
        self.routes.push((path.into(), Arc::new(handler)));
        self
    }

    /// Binds `addr` and starts the console's thread (`tasklets-console`).
    ///
    /// # Errors
    /// `InvalidInput` when `addr` is not a loopback address and [`allow_remote`] was not set;
    /// the error of `bind` otherwise.
    ///
    /// [`allow_remote`]: Builder::allow_remote
    pub fn serve<A: ToSocketAddrs>(self, addr: A) -> io::Result<Console> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"));
        }
        if !self.allow_remote {
            if let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the console binds to loopback addresses only; {remote} is not one \
                         (Builder::allow_remote(true) allows it)"
                    ),
                ));
            }
        }
        let listener = bind(&addrs)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("tasklets-console".into())
                .spawn(move || server::run(listener, self, stop))?
        };
        Ok(Console { addr: local, stop, thread: Some(thread) })
    }
}

/// Listens on the first of `addrs` that can be bound, with a backlog of 1,024 connections
/// (std's is 128: a burst of clients, or a flood that the console refuses one by one, would
/// overflow it and leave clients waiting a second for their SYN to be retransmitted).
fn bind(addrs: &[SocketAddr]) -> io::Result<std::net::TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
    for addr in addrs {
        let socket = socket2::Socket::new(socket2::Domain::for_address(*addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        match socket.bind(&(*addr).into()).and_then(|()| socket.listen(1024)) {
            Ok(()) => return Ok(socket.into()),
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// A running console. Dropping it leaves the console running for the rest of the process;
/// [`shutdown`](Console::shutdown) stops it.
#[derive(Debug)]
pub struct Console {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Console {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL, `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops the console: closes its listener and its connections, and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor; it sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
