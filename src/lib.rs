//! # tasklets
//!
//! Stackless Python's programming model for Rust: **tasklets** (stackful microthreads on small
//! guarded stacks), a deterministic cooperative round-robin **scheduler** per OS thread, and
//! Stackless **channels** (rendezvous: `send` blocks until a receiver takes the value).
//!
//! Code in a tasklet is plain blocking-style Rust. It gives up the CPU only where it says so:
//! [`schedule`], a channel operation that has to wait, [`Tasklet::join`]. Everything else runs
//! to completion, so there are no data races between tasklets and no locks are needed; the
//! interleaving is the same on every run.
//!
//! ```
//! use tasklets::Channel;
//!
//! let jobs = Channel::new();
//! let results = Channel::new();
//! for worker in 0..3 {
//!     let (jobs, results) = (jobs.clone(), results.clone());
//!     tasklets::spawn(move || {
//!         for n in &jobs {                      // ends when `jobs` is closed and drained
//!             results.send((worker, n * n)).unwrap();
//!         }
//!     });
//! }
//! let boss = tasklets::spawn({
//!     let jobs = jobs.clone();
//!     move || {
//!         jobs.send_sequence(1..=6).unwrap();    // each send waits for a worker
//!         jobs.close();
//!     }
//! });
//! let squares: Vec<(i32, i32)> = (0..6).map(|_| results.receive().unwrap()).collect();
//! boss.join().unwrap();
//! assert_eq!(squares.iter().map(|&(_, sq)| sq).sum::<i32>(), 91);
//! assert_eq!(squares[0], (0, 1)); // deterministic: worker 0 got job 1
//! ```
//!
//! ## The pieces
//!
//! | Stackless | tasklet |
//! |---|---|
//! | `stackless.tasklet(f)()` | [`spawn`], [`Builder::spawn`] |
//! | `tasklet(f)` + `bind`/`setup`, not inserted | [`Builder::bind`] |
//! | `schedule()`, `schedule_remove()`, `run()`, `getruncount()` | [`schedule`], [`schedule_remove`], [`run`], [`runcount`] |
//! | `getcurrent()`, `getmain()` | [`current`], [`Tasklet::is_main`] |
//! | `t.insert()`, `t.remove()`, `t.run()`, `t.kill()` | [`Tasklet::insert`], [`remove`](Tasklet::remove), [`run`](Tasklet::run), [`kill`](Tasklet::kill) |
//! | `channel()`, `send`, `receive`, `balance`, `preference`, `close`, `open` | [`Channel`] |
//!
//! `docs/stackless.md` in the repository maps every Stackless name.
//!
//! ## Scheduling rules
//!
//! - [`spawn`] and [`Tasklet::insert`] append to the end of the run queue; [`schedule`] puts the
//!   caller at the end and runs the head. The thread's own stack is the *main* tasklet.
//! - [`run`] (main only) runs tasklets until none is runnable, then returns; tasklets blocked on
//!   channels stay blocked.
//! - At a channel rendezvous, the [`Preference`] decides who runs first (see [`Channel`]).
//! - A panic ends its tasklet only; [`Tasklet::join`] returns it as [`JoinError::Panicked`].
//! - When the main tasklet would block with nothing runnable, the operation returns a
//!   *deadlock* error instead of hanging.
//! - When the thread exits, the tasklets still alive are killed: their destructors run.
//! - Killing unwinds: built with `panic = "abort"`, killing a tasklet that has started (by
//!   [`Tasklet::kill`], or at thread exit) prints why and aborts the process, as a panic does
//!   there; a tasklet that never ran is still dropped cleanly.
//! - Every tasklet has a [`Priority`] (`Normal` by default, which is exactly the rules above);
//!   higher levels run first, within a bound that keeps lower levels from starving.
//!
//! ## Blocking I/O, cooperatively
//!
//! [`net`] and [`time`] mirror `std::net` and `std::thread::sleep` name for name. A call is
//! tried first; when it would block, the tasklet parks on the thread's readiness poller and the
//! others run. [`unblock`] runs a blocking function on a small thread pool while the tasklet
//! waits, and [`io::Registration`] parks on any other file descriptor.
//!
//! ```
//! use std::io::{Read, Write};
//! use tasklets::net::{TcpListener, TcpStream};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let server = tasklets::spawn(move || -> std::io::Result<()> {
//!     let (mut conn, _) = listener.accept()?; // parks until the client connects
//!     let mut buf = [0; 5];
//!     conn.read_exact(&mut buf)?;
//!     conn.write_all(&buf)
//! });
//! let mut client = TcpStream::connect(addr)?; // main parks too; the server tasklet runs
//! client.write_all(b"hello")?;
//! let mut echoed = [0; 5];
//! client.read_exact(&mut echoed)?;
//! assert_eq!(&echoed, b"hello");
//! server.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Unmodified blocking code (std's own `std::net`, synchronous crates, C libraries) becomes
//! cooperative too with the companion crate `tasklets-shims` (`shims/` in the repository),
//! which interposes libc's blocking calls, as Stackless's `stacklesssocket.install()` did.
//!
//! ## Seeing and steering
//!
//! [`snapshot`] and [`dump`] list every tasklet of the thread: state, what it waits on, when it
//! last ran, its switches and CPU time. [`dump_on_signal`] prints that for every thread on
//! `kill -QUIT`, as Go does (CPU times need [`set_accounting`]`(true)`: off by default, it costs a
//! clock read per switch). A tasklet that holds the thread longer than the stall threshold is
//! named in a `log::warn!` (on stderr when no logger is active) while it holds it, by the
//! process's sysmon thread; [`run_watchdog`] is Stackless's `run(timeout)`; deadlock errors
//! name the blocked tasklets. [`monitor`] lets another thread watch every scheduler of the
//! process (shared counters, snapshots on request, stalls found while they happen); the
//! companion crate `tasklets-console` (`console/` in the repository) shows all of it live in a
//! browser. `docs/debugging.md` shows them at work.
//!
//! ## Stacks and memory
//!
//! Each tasklet has [`DEFAULT_STACK_SIZE`] (256 KiB) of address space with a guard page below
//! it, taken from a per-thread pool carved out of large mappings; only touched pages cost
//! memory, typically one 4 KiB page for a parked tasklet. On Linux 6.13+ guard pages cost no
//! memory mapping (`MADV_GUARD_INSTALL`), so the tasklet count is not capped by
//! `vm.max_map_count`. Overflowing a stack prints which tasklet overflowed and aborts, as Rust
//! does for threads.
//!
//! ## Threads and cores
//!
//! Each OS thread has its own scheduler, created on first use. Tasklets, their handles and
//! [`Channel`]s never leave their thread (they are `!Send`): moving a suspended stack to another
//! thread is unsound because compiled code caches thread-local addresses. To use every core,
//! run one scheduler per thread and let the threads talk through explicit `Send` types:
//!
//! - [`threads`] starts N scheduler threads (optionally pinned to CPUs), runs a closure on
//!   each, and gives a `Send + Clone` handle per thread that spawns tasklets there from
//!   anywhere; `join` and `shutdown` return each thread's result or panic.
//! - [`sync::channel`] crosses threads: a tasklet that has to wait parks (its thread runs its
//!   other tasklets) and is woken through its thread's poller; a plain thread blocks.
//! - [`net::TcpListener::options`] binds with `SO_REUSEPORT`: a listener per thread on one
//!   port, and the kernel spreads the connections.
//!
//! The boss on this thread, four workers on each of two scheduler threads:
//!
//! ```
//! use tasklets::sync;
//!
//! let (jobs, work) = sync::channel::<u64>(0);
//! let (results, collected) = sync::channel(16);
//! let threads = tasklets::threads::spawn(2, |_| ())?;
//! for thread in &threads {
//!     for _ in 0..4 {
//!         let (work, results) = (work.clone(), results.clone());
//!         thread.spawn(move || {
//!             for n in &work {                     // parks until the boss sends
//!                 results.send(n * n).unwrap();
//!             }
//!         });
//!     }
//! }
//! drop((work, results));
//! let boss = tasklets::spawn(move || {
//!     for n in 1..=100 {
//!         jobs.send(n).unwrap();                   // waits for a free worker
//!     }
//! });                                              // `jobs` dropped: the workers' loops end
//! let sum: u64 = collected.iter().sum();           // ends when every worker is gone
//! boss.join().unwrap();
//! assert_eq!(sum, (1..=100).map(|n| n * n).sum());
//! threads.join();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Each thread stays deterministic on its own; what the threads do to each other is not.
//! `docs/multicore.md` in the repository describes the model, the patterns and their
//! measurements.
//!
//! ## Process exit and kills
//!
//! - `std::process::exit(n)` exits with `n` from anywhere: a tasklet, the main tasklet with
//!   others parked, any thread. Called in a tasklet, the thread's remaining tasklets are not
//!   killed (their destructors do not run) and their stacks are leaked: the process is ending.
//! - [`Tasklet::kill`] of a tasklet waiting in [`unblock`] returns at once; the job runs to its
//!   end on its pool thread and its result is dropped there. Inside
//!   [`io::with_kills_deferred`], use [`io::unblock_unless_killed`].
//! - A kill that finds its target unwinding (a destructor on its stack blocked) fails the wait
//!   instead of starting a second unwind; whether a tasklet unwinds is tracked per tasklet.
//!
//! ## `fork`
//!
//! A child process inherits its parent's epoll instances themselves (not copies), so it never
//! touches them: in the child, the inherited schedulers keep running tasklets, channels and
//! sleeps, their teardown leaves the parent's registrations alone, and a socket wait on them
//! fails with an error that names `fork`. A thread started in the child gets a poller of its
//! own, with working I/O. The runtime's own thread (the sysmon) never holds a lock across a
//! fork, and the child's [`monitor::schedulers`] lists only the forking thread's scheduler and
//! the ones made after the fork. (`tests/fork.rs`; the design is in `src/poller.rs` and
//! `src/monitor.rs`.)
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

mod blocking;
mod channel;
mod clock;
mod context;
mod debug;
pub mod io;
pub mod monitor;
pub mod net;
mod poller;
mod reactor;
mod registrations;
mod runqueue;
mod scheduler;
mod stack;
pub mod sync;
mod sys;
mod tasklet;
pub mod threads;
pub mod time;
mod timer;
mod valgrind;

pub use blocking::{unblock, IDLE_TIMEOUT, MAX_THREADS};
pub use channel::{
    Channel, IntoIter, Iter, Preference, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};
pub use debug::{
    dump, dump_on_signal, set_accounting, set_stall_threshold, snapshot, SchedulerStats, Snapshot,
    TaskletInfo, TaskletState, WaitingOn,
};
pub use runqueue::{Priority, STARVATION_LIMIT};
pub use scheduler::{
    run, run_watchdog, runcount, schedule, schedule_remove, set_default_stack_size, DeadlockError,
    TaskletExit, DEFAULT_STALL_THRESHOLD,
};
pub use stack::{DEFAULT_STACK_SIZE, MAX_STACK_SIZE, MIN_STACK_SIZE};
pub use tasklet::{current, spawn, Builder, JoinError, Joinable, StateError, Tasklet};

/// The README's example compiles and runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// So do the examples of `docs/multicore.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/multicore.md")]
struct MulticoreDoctests;
