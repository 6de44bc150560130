//! The boss/worker server of `examples/boss_worker.rs` and its client, in a file of its own so
//! that the stress tests can run the same server in-process (`tests/stress.rs` includes it with
//! `#[path]`). Not an example of its own: cargo only builds `examples/*.rs` and
//! `examples/*/main.rs`.
//!
//! # The server
//!
//! - The **boss** tasklet accepts connections. Each connection is a *job*. For each one it waits
//!   for a worker to ask for work (a rendezvous on the `idle` channel), then hands the job over on
//!   that worker's reply channel. With every request for work a worker hands in the report of
//!   the job it just finished, so the boss keeps the books of every job it accepted.
//! - A fixed pool of **worker** tasklets talk to the client blocking-style: read a request line,
//!   compute, write the answer, until the client closes (or stays silent longer than the idle
//!   timeout).
//! - **Threads.** The boss runs on the thread that starts the server; the workers are spread
//!   round robin over `Config::threads` scheduler threads: that thread and `threads - 1` more
//!   (`tasklets::threads`). The channels are `tasklets::sync` channels, so a worker on another
//!   thread talks to the boss exactly as one on the boss's thread does: the waiting side parks
//!   and the other thread wakes it through its poller. A connection (`TcpStream` is `Send`)
//!   moves to the worker's thread with the job.
//! - On shutdown the boss stops accepting and collects the last report of every worker, so that
//!   its ledger accounts for every job it accepted.
//!
//! # The protocol
//!
//! One request per line, one answer line per request (`OK ...` or `ERR ...`):
//!
//! | request | answer | how |
//! |---|---|---|
//! | `SUM a b ...` | `OK <sum>` (wrapping `u64`) | computed by the worker |
//! | `HASH <rounds> <word>` | `OK <16 hex digits>`: FNV-1a of `word`, re-hashed `rounds` times | CPU-heavy: runs on the `tasklets::unblock` pool |
//! | `SLEEP <ms>` | `OK <ms>` after `ms` milliseconds | `tasklets::time::sleep` |
//! | `RAND <len> <seed>` | `OK ` and `len` pseudo-random hex digits | a long answer, written as it is generated |
//! | `QUIT` | `OK bye`, then the server closes | |
#![allow(dead_code)]

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklets::net::{TcpListener, TcpStream};
use tasklets::threads::Threads;
use tasklets::{sync, Builder, Tasklet};

/// Most rounds a `HASH` may ask for.
pub const MAX_HASH_ROUNDS: u64 = 100_000_000;
/// Longest `SLEEP`, in milliseconds.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// Longest `RAND` answer, in digits.
pub const MAX_RAND_LEN: u64 = 1 << 30;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker tasklets: at most this many connections are served at once; the others wait in
    /// the listener's backlog.
    pub workers: usize,
    /// A connection that sends no request (or takes no answer) for this long is closed.
    pub idle_timeout: Duration,
    /// Longest request line; a longer one is answered `ERR` and the connection closed.
    pub max_line: usize,
    /// Scheduler threads the workers are spread over: the boss's own and `threads - 1` more.
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config { workers: 8, idle_timeout: Duration::from_secs(10), max_line: 64 * 1024, threads: 1 }
    }
}

/// How a job (a connection) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client closed its side between requests, or sent `QUIT`.
    Closed,
    /// The client sent nothing (or read nothing) for the idle timeout.
    TimedOut,
    /// The connection broke: reset, closed mid-request, or closed while the server wrote.
    Aborted(io::ErrorKind),
    /// The client broke the protocol (a line too long); the server closed the connection.
    Refused,
}

/// What a worker tells the boss about a finished job.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub job: u64,
    pub worker: usize,
    /// The scheduler thread the worker runs on (0: the boss's).
    pub thread: usize,
    pub peer: SocketAddr,
    /// Requests answered (`ERR` answers included).
    pub requests: u64,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// The boss's books: every accepted job and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Connections accepted and handed to a worker as jobs.
    pub accepted: u64,
    /// Jobs whose report came back (equals `accepted` after shutdown).
    pub finished: u64,
    pub closed: u64,
    pub timed_out: u64,
    pub aborted: u64,
    pub refused: u64,
    /// Requests answered over all finished jobs.
    pub requests: u64,
    /// `accept` calls that failed (out of file descriptors, typically).
    pub accept_errors: u64,
    /// Finished jobs by the scheduler thread of their worker.
    pub by_thread: Vec<u64>,
}

impl Ledger {
    fn record(&mut self, report: JobReport) {
        self.finished += 1;
        self.requests += report.requests;
        if self.by_thread.len() <= report.thread {
            self.by_thread.resize(report.thread + 1, 0);
        }
        self.by_thread[report.thread] += 1;
        match report.outcome {
            Outcome::Closed => self.closed += 1,
            Outcome::TimedOut => self.timed_out += 1,
            Outcome::Aborted(_) => self.aborted += 1,
            Outcome::Refused => self.refused += 1,
        }
    }
}

/// A connection on its way from the boss to a worker.
struct Job {
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
}

/// A worker asking the boss for work, with the report of the job it just finished.
struct Ready {
    finished: Option<JobReport>,
    reply: sync::Sender<Option<Job>>,
}

/// A running boss/worker server: the boss on the thread that started it, the workers there and
/// on the server's other scheduler threads.
pub struct Server {
    addr: SocketAddr,
    stopping: Rc<Cell<bool>>,
    boss: Tasklet<Ledger>,
    /// The scheduler threads beyond the boss's own (none with `threads: 1`).
    threads: Option<Threads<()>>,
}

impl Server {
    /// Starts the boss on the calling thread, serving `listener`, and `config.workers`
    /// workers spread over that thread and `config.threads - 1` new scheduler threads. The
    /// tasklets of the calling thread run while it runs them (`tasklets::run`, a `join`, ...).
    pub fn start(listener: TcpListener, config: Config) -> io::Result<Server> {
        assert!(config.workers > 0, "a server needs at least one worker");
        assert!(config.threads > 0, "a server needs at least one thread");
        let addr = listener.local_addr()?;
        let threads = match config.threads {
            1 => None,
            n => Some(tasklets::threads::Builder::new(n - 1).name("worker-thread").spawn(|_| ())?),
        };
        let (idle, ready) = sync::channel(0);
        for worker in 0..config.workers {
            let (idle, worker_config) = (idle.clone(), config.clone());
            let body = move || work(worker, idle, worker_config);
            match (worker % config.threads, &threads) {
                (0, _) | (_, None) => drop(Builder::new().name(format!("worker {worker}")).spawn(body)?),
                (t, Some(threads)) => drop(threads.thread(t - 1).spawn(body)),
            }
        }
        drop(idle);
        let stopping = Rc::new(Cell::new(false));
        let boss = {
            let stopping = stopping.clone();
            Builder::new().name("boss").spawn(move || boss(listener, ready, config.workers, stopping))?
        };
        log::info!("boss: serving {addr} with {} workers on {} threads", config.workers, config.threads);
        Ok(Server { addr, stopping, boss, threads })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, waits for the workers to finish the jobs they have, and returns the
    /// boss's ledger. Call it from a tasklet of the server's thread (the main one included).
    /// Connections not yet accepted are closed.
    pub fn shutdown(self) -> Ledger {
        self.stopping.set(true);
        // The boss is most likely parked in `accept`: a connection of our own wakes it.
        if let Err(err) = TcpStream::connect(self.addr) {
            log::warn!("boss: cannot wake the acceptor ({err}); waiting for a client to");
        }
        let ledger = self.boss.join().expect("the boss does not panic");
        if let Some(threads) = self.threads {
            threads.join(); // the workers have returned: their threads end
        }
        ledger
    }

    /// Serves until the process ends.
    pub fn wait(self) -> Ledger {
        self.boss.join().expect("the boss does not panic")
    }
}

fn boss(
    listener: TcpListener,
    idle: sync::Receiver<Ready>,
    workers: usize,
    stopping: Rc<Cell<bool>>,
) -> Ledger {
    let mut ledger = Ledger::default();
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) => {
                ledger.accept_errors += 1;
                if stopping.get() {
                    break;
                }
                // EMFILE and friends: the connection stays queued, so try again a bit later.
                log::warn!("boss: accept failed: {err}");
                tasklets::time::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if stopping.get() {
            log::debug!("boss: shutting down; closing {peer}");
            break;
        }
        ledger.accepted += 1;
        let job = Job { id: ledger.accepted, stream, peer };
        log::debug!("boss: job {} from {peer}", job.id);
        // Wait for a free worker: it hands in its last report and takes the job.
        let ready = idle.receive().expect("the workers outlive the boss");
        if let Some(report) = ready.finished {
            ledger.record(report);
        }
        if ready.reply.send(Some(job)).is_err() {
            unreachable!("a worker waits on its reply channel after asking for work");
        }
    }
    drop(listener);
    // Every worker comes back once more: with the report of its last job, if any.
    for _ in 0..workers {
        let ready = idle.receive().expect("the workers outlive the boss");
        if let Some(report) = ready.finished {
            ledger.record(report);
        }
        let _ = ready.reply.send(None);
    }
    log::info!("boss: stopped; {ledger:?}");
    ledger
}

fn work(worker: usize, idle: sync::Sender<Ready>, config: Config) {
    let (reply_to, reply) = sync::channel(0);
    let mut finished = None;
    loop {
        if idle.send(Ready { finished: finished.take(), reply: reply_to.clone() }).is_err() {
            return;
        }
        match reply.receive() {
            Ok(Some(job)) => finished = Some(serve(worker, job, &config)),
            _ => return,
        }
    }
}

/// Serves one job to its end and reports how it went.
fn serve(worker: usize, job: Job, config: &Config) -> JobReport {
    let start = Instant::now();
    let mut requests = 0;
    let outcome = match talk(&job.stream, config, &mut requests) {
        Ok(outcome) => outcome,
        Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            Outcome::TimedOut
        }
        Err(err) => Outcome::Aborted(err.kind()),
    };
    let report = JobReport {
        job: job.id,
        worker,
        thread: worker % config.threads,
        peer: job.peer,
        requests,
        outcome,
        elapsed: start.elapsed(),
    };
    log::debug!(
        "worker {worker}: job {} from {}: {:?} after {} requests in {:?}",
        report.job,
        report.peer,
        report.outcome,
        report.requests,
        report.elapsed
    );
    report
}

/// The conversation with one client.
fn talk(stream: &TcpStream, config: &Config, requests: &mut u64) -> io::Result<Outcome> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(config.idle_timeout))?;
    stream.set_write_timeout(Some(config.idle_timeout))?;
    let mut reader = BufReader::with_capacity(8 * 1024, stream);
    let mut writer = stream;
    let mut line = Vec::new();
    let mut answer = String::new();
    loop {
        line.clear();
        let n = (&mut reader).take(config.max_line as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(Outcome::Closed);
        }
        if line.last() != Some(&b'\n') {
            if line.len() > config.max_line {
                writer.write_all(b"ERR line too long\n")?;
                *requests += 1;
                return Ok(Outcome::Refused);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-request"));
        }
        let text = String::from_utf8_lossy(&line);
        let request = text.trim_end_matches(['\n', '\r']);
        answer.clear();
        let quit = match parse(request) {
            Ok(Request::Rand { len, seed }) => {
                write_rand(&mut writer, len, seed)?;
                false
            }
            Ok(request) => {
                let quit = request == Request::Quit;
                execute(request, &mut answer);
                quit
            }
            Err(message) => {
                let _ = writeln!(answer, "ERR {message}");
                false
            }
        };
        if !answer.is_empty() {
            writer.write_all(answer.as_bytes())?;
        }
        *requests += 1;
        if quit {
            return Ok(Outcome::Closed);
        }
    }
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Sum(Vec<u64>),
    Hash { rounds: u64, word: String },
    Sleep { ms: u64 },
    Rand { len: u64, seed: u64 },
    Quit,
}

impl Request {
    /// The request line, without its newline.
    pub fn line(&self) -> String {
        match self {
            Request::Sum(numbers) => {
                let mut line = String::from("SUM");
                for n in numbers {
                    let _ = write!(line, " {n}");
                }
                line
            }
            Request::Hash { rounds, word } => format!("HASH {rounds} {word}"),
            Request::Sleep { ms } => format!("SLEEP {ms}"),
            Request::Rand { len, seed } => format!("RAND {len} {seed}"),
            Request::Quit => "QUIT".into(),
        }
    }

    /// The answer the server must give, without its newline (computed here: a `HASH` with
    /// many rounds costs as much as on the server).
    pub fn expected(&self) -> String {
        match self {
            Request::Sum(numbers) => format!("OK {}", numbers.iter().fold(0u64, |s, &n| s.wrapping_add(n))),
            Request::Hash { rounds, word } => format!("OK {:016x}", hash(word, *rounds)),
            Request::Sleep { ms } => format!("OK {ms}"),
            Request::Rand { len, seed } => {
                let mut answer = Vec::with_capacity(*len as usize + 3);
                answer.extend_from_slice(b"OK ");
                let mut digits = RandHex::new(*seed);
                let start = answer.len();
                answer.resize(start + *len as usize, 0);
                digits.fill(&mut answer[start..]);
                String::from_utf8(answer).expect("hex digits")
            }
            Request::Quit => "OK bye".into(),
        }
    }
}

/// Parses a request line (without its newline).
pub fn parse(line: &str) -> Result<Request, String> {
    let mut words = line.split_ascii_whitespace();
    let command = words.next().ok_or("empty request")?;
    let number = |word: Option<&str>, what: &str| -> Result<u64, String> {
        let word = word.ok_or(format!("{command} needs {what}"))?;
        word.parse().map_err(|_| format!("{command}: not a number: {word:?}"))
    };
    let request = match command.to_ascii_uppercase().as_str() {
        "SUM" => Request::Sum(words.by_ref().map(|w| number(Some(w), "numbers")).collect::<Result<_, _>>()?),
        "HASH" => {
            let rounds = number(words.next(), "a round count")?;
            if rounds > MAX_HASH_ROUNDS {
                return Err(format!("HASH: at most {MAX_HASH_ROUNDS} rounds"));
            }
            let word = words.next().ok_or("HASH needs a word")?.to_string();
            Request::Hash { rounds, word }
        }
        "SLEEP" => {
            let ms = number(words.next(), "milliseconds")?;
            if ms > MAX_SLEEP_MS {
                return Err(format!("SLEEP: at most {MAX_SLEEP_MS} ms"));
            }
            Request::Sleep { ms }
        }
        "RAND" => {
            let len = number(words.next(), "a length")?;
            if len > MAX_RAND_LEN {
                return Err(format!("RAND: at most {MAX_RAND_LEN} digits"));
            }
            Request::Rand { len, seed: number(words.next(), "a seed")? }
        }
        "QUIT" => Request::Quit,
        _ => return Err(format!("unknown command {command:?} (SUM, HASH, SLEEP, RAND, QUIT)")),
    };
    match words.next() {
        Some(extra) => Err(format!("{command}: unexpected {extra:?}")),
        None => Ok(request),
    }
}

/// Computes the answer to every request but `RAND` (streamed by [`write_rand`]).
fn execute(request: Request, answer: &mut String) {
    match request {
        Request::Sum(numbers) => {
            let _ = writeln!(answer, "OK {}", numbers.iter().fold(0u64, |s, &n| s.wrapping_add(n)));
        }
        Request::Hash { rounds, word } => {
            // Milliseconds of CPU for a large round count: on the pool, so that the other
            // tasklets of this thread keep running meanwhile.
            let digest = tasklets::unblock(move || hash(&word, rounds));
            let _ = writeln!(answer, "OK {digest:016x}");
        }
        Request::Sleep { ms } => {
            tasklets::time::sleep(Duration::from_millis(ms));
            let _ = writeln!(answer, "OK {ms}");
        }
        Request::Quit => answer.push_str("OK bye\n"),
        Request::Rand { .. } => unreachable!("RAND is streamed"),
    }
}

/// Writes the `RAND` answer chunk by chunk, generating each chunk just before it is written.
fn write_rand(writer: &mut &TcpStream, len: u64, seed: u64) -> io::Result<()> {
    let mut digits = RandHex::new(seed);
    let mut chunk = vec![0u8; 64 * 1024];
    chunk[..3].copy_from_slice(b"OK ");
    let mut head = 3;
    let mut left = len;
    loop {
        let take = left.min((chunk.len() - head) as u64) as usize;
        digits.fill(&mut chunk[head..head + take]);
        left -= take as u64;
        let mut end = head + take;
        if left == 0 && end < chunk.len() {
            chunk[end] = b'\n';
            end += 1;
            writer.write_all(&chunk[..end])?;
            return Ok(());
        }
        writer.write_all(&chunk[..end])?;
        head = 0;
        if left == 0 {
            return writer.write_all(b"\n");
        }
    }
}

/// FNV-1a of `word`, then re-hashed `rounds` times (each round hashes the previous digest).
pub fn hash(word: &str, rounds: u64) -> u64 {
    let fnv =
        |h: u64, bytes: &[u8]| bytes.iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut h = fnv(0xcbf2_9ce4_8422_2325, word.as_bytes());
    for _ in 0..rounds {
        h = fnv(0xcbf2_9ce4_8422_2325, &h.to_le_bytes());
    }
    h
}

/// The digits of a `RAND` answer: lowercase hex of an xorshift64 stream.
pub struct RandHex {
    state: u64,
}

impl RandHex {
    pub fn new(seed: u64) -> RandHex {
        RandHex { state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 }
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for digit in out {
            let x = &mut self.state;
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *digit = b"0123456789abcdef"[(*x >> 60) as usize];
        }
    }
}

/// A blocking-style client of the server (usable from any tasklet, or a plain thread).
pub struct Client {
    reader: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Client {
    pub fn connect<A: ToSocketAddrs + Sync>(addr: A) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Client { reader: BufReader::new(stream), line: Vec::new() })
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Sends `request` (a line without its newline) and returns the answer line without its
    /// newline. An answer cut short by the server closing is an `UnexpectedEof` error.
    pub fn call(&mut self, request: &str) -> io::Result<&[u8]> {
        let mut out = Vec::with_capacity(request.len() + 1);
        out.extend_from_slice(request.as_bytes());
        out.push(b'\n');
        self.reader.get_ref().write_all(&out)?;
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line)?;
        if self.line.pop() != Some(b'\n') {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        Ok(&self.line)
    }

    /// Sends `request` and checks that the answer is `expected`.
    pub fn check(&mut self, request: &str, expected: &str) -> io::Result<()> {
        let answer = self.call(request)?;
        if answer == expected.as_bytes() {
            return Ok(());
        }
        let mut shown = String::from_utf8_lossy(answer).into_owned();
        if shown.len() > 80 {
            shown.truncate(77);
            shown.push_str("...");
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, format!("{request:.40}: wrong answer {shown:?}")))
    }
}
