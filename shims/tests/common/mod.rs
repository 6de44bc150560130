//! Helpers shared by the shims' integration tests (not every file uses every helper).
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Turns the shims on (every test of a binary does; it is process-wide and idempotent).
pub fn install() {
    tasklets_shims::install().expect("the tests run on dynamically linked glibc x86_64");
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

/// Runs `test` (this binary's test of that name) alone in a child process and asserts that it
/// passed. For tests that count the process's fds or that must not share the process-wide
/// install flag with tests running in parallel.
pub fn run_in_child(test: &str) {
    let out: Output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .expect("re-executing the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child did not run its test:\n{stdout}");
    print!("{stdout}");
}
