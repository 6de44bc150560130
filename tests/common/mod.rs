//! Helpers shared by the integration tests (each test file includes this module; not every
//! file uses every helper).
#![allow(dead_code)]

use std::cell::RefCell;
use std::process::{Command, Output};
use std::rc::Rc;
use std::time::Duration;

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

/// The environment variable that tells a re-executed test binary which test to run as the
/// child.
const CHILD: &str = "TASKLET_TEST_CHILD";

/// Whether this process is the child running `test` (see [`run_child`]).
pub fn in_child(test: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(test)
}

/// Runs `test` (this binary's test of that name) in a child process, with `envs` set. Tests
/// that measure the process (RSS, open fds, mappings) or that must crash run their body there,
/// so the other tests of the binary, running in parallel threads, cannot disturb them.
pub fn run_child(test: &str, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
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
