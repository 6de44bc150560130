//! valgrind memcheck used to be unusable on tasklet code: switches onto stacks it did not know
//! looked like huge stack-pointer jumps, so every access there was reported (thousands of
//! false errors) and the scheduler tests crashed it. Tasklet stacks are now registered with
//! its client requests (`src/valgrind.rs`): memcheck must run this binary's workload clean.
//! Skipped, saying so, where `valgrind` is not installed.

use std::io::{Read, Write};
use std::process::Command;

use tasklets::net::{TcpListener, TcpStream};
use tasklets::Channel;

mod common;

const WORKLOAD: &str = "memcheck_workload_child";

/// The workload memcheck runs: tasklets on their own stacks switching through channels, a
/// sleep, a socket round trip through the poller, a panic unwound on a tasklet stack, and
/// stacks freed and reused.
#[test]
fn memcheck_workload_child() {
    if !common::in_child(WORKLOAD) {
        return;
    }
    for _round in 0..2 {
        let ch = Channel::<Vec<u64>>::new();
        let mut handles = Vec::new();
        for i in 0..8u64 {
            let ch = ch.clone();
            handles.push(tasklets::spawn(move || {
                let mut v: Vec<u64> = (0..64).map(|x| x * i).collect();
                for _ in 0..10 {
                    ch.send(v.clone()).unwrap();
                    v.push(i);
                    tasklets::schedule();
                }
            }));
        }
        let mut sum = 0u64;
        for _ in 0..80 {
            sum += ch.receive().unwrap().iter().sum::<u64>();
        }
        assert!(sum > 0);
        for h in handles {
            h.join().unwrap();
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tasklets::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let client = tasklets::spawn(move || {
        tasklets::time::sleep(std::time::Duration::from_millis(5));
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    });
    client.join().unwrap();
    server.join().unwrap();
    let panicked = tasklets::spawn(|| -> () { panic!("unwound on a tasklet stack") });
    assert!(panicked.join().is_err());
}

#[test]
fn memcheck_runs_clean_on_tasklet_stacks() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("SKIPPED: valgrind is not installed (apt-get install -y valgrind)");
        return;
    }
    let out = Command::new("valgrind")
        .args(["--tool=memcheck", "--error-exitcode=99", "--errors-for-leak-kinds=none", "-q"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", WORKLOAD, "--nocapture", "--test-threads=1"])
        .env(common::CHILD, WORKLOAD)
        .output()
        .expect("run valgrind");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "memcheck reported errors ({:?}):\n{stderr}\nstdout:\n{stdout}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "the workload did not run:\n{stdout}\n{stderr}");
}
