//! Helpers shared by the integration tests (each test file includes this module; not every
//! file uses every helper).
#![allow(dead_code)]

use std::cell::RefCell;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// A shared trace of what happened, in order.
#[derive(Clone, Default)]
pub struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    pub fn new() -> Log {
        Log::default()
    }

    pub fn push(&self, entry: impl Into<String>) {
        self.0.borrow_mut().push(entry.into());
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.borrow_mut())
    }

    pub fn contains(&self, entry: &str) -> bool {
        self.0.borrow().iter().any(|e| e == entry)
    }

    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
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

/// The environment variable that tells a re-executed test binary which test to run as the
/// child.
pub const CHILD: &str = "TASKLET_TEST_CHILD";

/// Whether this process is the child running `test` (see [`run_child`]).
pub fn in_child(test: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(test)
}

/// Runs `test` (this binary's test of that name) in a child process, with `envs` set. Tests
/// that measure the process (RSS, open fds, mappings) or that must crash run their body there,
/// so the other tests of the binary, running in parallel threads, cannot disturb them.
pub fn run_child(test: &str, envs: &[(&str, &str)]) -> Output {
    let mut cmd = target_command(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1", "--include-ignored"]).env(CHILD, test);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("re-executing the test binary")
}

/// Asserts that a child made by [`run_child`] ran its one test and passed.
pub fn assert_child_ok(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child did not run its test:\n{stdout}");
}

/// [`run_child`] without extra environment, asserting success; prints the child's output.
pub fn run_in_child(test: &str) {
    let out = run_child(test, &[]);
    assert_child_ok(&out);
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The path of example `name`'s binary, checked to exist and to be newer than every source
/// file it was built from (as listed in the dep-info file cargo writes beside it).
pub fn example_binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let rebuild = "build the examples first: `cargo test --release` builds them (`--test examples` alone \
                   does not), or run `cargo build --release --examples` (without --release for a debug test)";
    let built = match fs::metadata(&binary).and_then(|m| m.modified()) {
        Ok(built) => built,
        Err(_) => panic!("example binary {} not found; {rebuild}", binary.display()),
    };
    let dep_info = binary.with_extension("d");
    if let Ok(text) = fs::read_to_string(&dep_info) {
        for source in dep_info_sources(&text) {
            let changed = fs::metadata(&source).and_then(|m| m.modified()).unwrap_or(SystemTime::now());
            assert!(
                changed <= built,
                "example binary {} is older than {}; {rebuild}",
                binary.display(),
                source
            );
        }
    }
    binary
}

/// The source files of a Makefile-style dep-info file (`target: src1 src2 ...`, spaces in
/// paths escaped with a backslash).
fn dep_info_sources(text: &str) -> Vec<String> {
    let Some(first_line) = text.lines().next() else { return Vec::new() };
    let Some((_, deps)) = first_line.split_once(": ") else { return Vec::new() };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => sources.extend((!current.is_empty()).then(|| std::mem::take(&mut current))),
            c => current.push(c),
        }
    }
    sources.extend((!current.is_empty()).then_some(current));
    sources
}

/// Runs example `name` with `args`, killing it if it exceeds `time_limit`.
pub fn run_example(name: &str, args: &[&str], time_limit: Duration) -> Output {
    let mut child = target_command(example_binary(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start example {name}: {err}"));
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout_pipe = child.stdout.take().expect("piped stdout");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let stdout = thread::spawn(move || {
        let mut buf = Vec::new();
        stdout_pipe.read_to_end(&mut buf).map(|_| buf)
    });
    let stderr = thread::spawn(move || {
        let mut buf = Vec::new();
        stderr_pipe.read_to_end(&mut buf).map(|_| buf)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the example") {
            break status;
        }
        if started.elapsed() > time_limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example {name} {args:?} did not finish within {time_limit:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader").expect("reading stdout"),
        stderr: stderr.join().expect("stderr reader").expect("reading stderr"),
    }
}
