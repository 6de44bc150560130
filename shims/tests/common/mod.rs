//! Helpers shared by the shims' integration tests (not every file uses every helper).
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Turns the shims on (every test of a binary does; it is process-wide and idempotent).
pub fn install() {
    tasklets_shims::install()
        .expect("the tests run on dynamically linked glibc (x86_64, aarch64 or riscv64)");
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The environment variable that tells a re-executed test binary which test to run as the
/// child.
const CHILD: &str = "TASKLET_SHIMS_TEST_CHILD";

/// Whether this process is the child running `test` (see [`run_in_child`]).
pub fn in_child(test: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(test)
}

/// The environment variable naming the command that runs binaries built for the target, for
/// cross-testing without binfmt_misc (`.ci/cross` sets it to its qemu-user command: the kernel
/// cannot execute a foreign binary by itself, so a re-executed test binary or an example
/// must be started through the emulator, exactly as cargo's runner starts the test binary).
pub const RUNNER: &str = "TASKLETS_TEST_RUNNER";

/// A `Command` for `program`, a binary built for the target: run through [`RUNNER`] when it
/// is set, directly otherwise.
pub fn target_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match std::env::var(RUNNER) {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().expect("a non-empty runner"));
            cmd.args(words).arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

/// Runs `test` (this binary's test of that name) alone in a child process and asserts that it
/// passed. For tests that count the process's fds or that must not share the process-wide
/// install flag with tests running in parallel.
pub fn run_in_child(test: &str) {
    run_in_child_with(test, &[]);
}

/// [`run_in_child`], with these environment variables set in the child.
pub fn run_in_child_with(test: &str, env: &[(&str, &str)]) {
    let out: Output = target_command(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .envs(env.iter().copied())
        .output()
        .expect("re-executing the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child did not run its test:\n{stdout}");
    print!("{stdout}");
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: reading the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub fn set_errno(value: i32) {
    // SAFETY: writing the calling thread's errno slot.
    unsafe { *libc::__errno_location() = value }
}

/// What a C call returned, and `errno` after it (0 if the call left it alone: it is cleared
/// first).
pub type Outcome = (i64, i32);

/// Makes a C call with `errno` cleared first and returns what it returned and `errno`.
pub fn outcome(call: impl FnOnce() -> i64) -> Outcome {
    set_errno(0);
    let r = call();
    (r, errno())
}

/// Runs `f` on a fresh thread that never uses the runtime: every hook forwards it to the
/// kernel, so what it observes is glibc's behaviour (glibc's socket and sleep functions are
/// thin wrappers of these system calls). Fails the test if `f` takes more than 20 s.
pub fn glibc<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    bounded("on a plain thread", move || {
        assert!(!tasklets::io::is_cooperative());
        let r = f();
        assert!(!tasklets::io::is_cooperative(), "the hooks gave a plain thread a scheduler");
        r
    })
}

/// Runs `f` in a tasklet on a fresh thread (so its hooked calls take the cooperative path)
/// and returns what `f` returned. Fails the test if `f` takes more than 20 s (a hang).
pub fn shimmed<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    install();
    bounded("in a tasklet", move || {
        let t = tasklets::spawn(f);
        t.join().unwrap()
    })
}

/// Runs `f` on a fresh thread and waits at most 20 s for it: a call that hangs fails the test
/// instead of hanging the suite (the stuck thread is left behind; the test binary exits).
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(()) => thread.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Ok(_) => unreachable!(),
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the call hung {what} (20 s)"),
    }
}

/// Runs `probe` on a plain thread (glibc's behaviour) and in a tasklet, asserts that both
/// observed the same, and returns it.
pub fn same_as_glibc<T: Send + PartialEq + std::fmt::Debug + 'static>(probe: fn() -> T) -> T {
    let expected = glibc(probe);
    assert_eq!(shimmed(probe), expected, "in a tasklet (left) and on a plain thread (right)");
    expected
}

/// A connected pair of TCP sockets on loopback (client, server).
pub fn tcp_pair_fds() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client.into(), server.into())
}

/// `setsockopt(fd, SOL_SOCKET, opt, value)` for a plain-data `value` (an `int`, a `timeval`).
pub fn set_option<T>(fd: libc::c_int, opt: libc::c_int, value: T) {
    // SAFETY: `value` is valid for its size, which is what is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt {opt}");
}

/// `timeout` as a `timeval` (for `SO_RCVTIMEO`/`SO_SNDTIMEO`).
pub fn timeval(timeout: Duration) -> libc::timeval {
    libc::timeval { tv_sec: timeout.as_secs() as _, tv_usec: timeout.subsec_micros() as _ }
}

/// Whether this kernel (or emulator) has `process_vm_readv`, through which the shims read and
/// write their callers' memory safely. Without it (qemu-user 7.2 answers `ENOSYS`) the shims
/// copy directly, as documented, so a bad pointer faults in the hook as it would in most C
/// libraries, and a test that passes bad pointers on purpose must leave those calls out.
pub fn process_vm_readv_works() -> bool {
    let source = 7u64;
    let mut copy = 0u64;
    let local = libc::iovec { iov_base: (&mut copy as *mut u64).cast(), iov_len: 8 };
    let remote = libc::iovec { iov_base: (&source as *const u64).cast_mut().cast(), iov_len: 8 };
    // SAFETY: both iovecs describe 8 valid bytes of this process.
    let r = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    r == 8 && copy == 7
}
