//! `std::process::exit(n)` exits with `n` wherever it is called: in a tasklet, on the main
//! thread with tasklets parked (on a channel, in a sleep, in a socket read), on a plain thread
//! and on a scheduler thread of `tasklets::threads`.
//!
//! It used to abort with "fatal runtime error: thread local panicked on drop" (status 134):
//! glibc's `exit` runs the calling thread's thread-local destructors on the calling (tasklet)
//! stack, and the scheduler's teardown then killed the current tasklet by unwinding out of that
//! destructor.
//!
//! `harness = false`: each scenario runs in a child process (this binary again, with
//! `TASKLETS_EXIT_SCENARIO` set) on its real main thread, and the parent checks the status and
//! stderr.

use std::io::Read;
use std::time::Duration;

use tasklets::Channel;

mod common;

const SCENARIO: &str = "TASKLETS_EXIT_SCENARIO";

/// Parks a few tasklets: on a channel receive, in a sleep, in a socket read.
fn park_tasklets() -> (Channel<u32>, std::net::TcpStream, Vec<tasklets::Tasklet<()>>) {
    let ch = Channel::<u32>::new();
    let listener = tasklets::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::net::TcpStream::connect(addr).unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    let rx = ch.clone();
    let tasks = vec![
        tasklets::spawn(move || {
            let _ = rx.receive();
        }),
        tasklets::spawn(|| tasklets::time::sleep(Duration::from_secs(60))),
        tasklets::spawn(move || {
            let mut buf = [0u8; 16];
            let _ = stream.read(&mut buf);
        }),
    ];
    for _ in 0..3 {
        tasklets::schedule();
    }
    assert!(tasks.iter().all(|t| t.is_alive()));
    (ch, peer, tasks)
}

fn scenario(name: &str) {
    match name {
        "in_tasklet" => {
            let _parked = park_tasklets();
            let t = tasklets::spawn(|| std::process::exit(7));
            let _ = t.join();
        }
        "in_tasklet_mid_channel" => {
            let _parked = park_tasklets();
            let ch = Channel::<u32>::new();
            let rx = ch.clone();
            tasklets::spawn(move || {
                let _ = rx.receive_timeout(Duration::from_millis(1));
                std::process::exit(8)
            });
            let _ = ch.receive();
        }
        "main_with_parked" => {
            let _parked = park_tasklets();
            std::process::exit(9);
        }
        "plain_thread_tasklet" => {
            std::thread::spawn(|| {
                let _parked = park_tasklets();
                tasklets::spawn(|| std::process::exit(10)).join().ok();
            })
            .join()
            .unwrap();
        }
        "plain_thread_main" => {
            std::thread::spawn(|| {
                let _parked = park_tasklets();
                std::process::exit(11);
            })
            .join()
            .unwrap();
        }
        "scheduler_thread" => {
            let threads = tasklets::threads::spawn(2, |_| {
                let _parked = park_tasklets();
                tasklets::spawn(|| std::process::exit(12)).join().ok();
            })
            .unwrap();
            threads.join();
        }
        other => panic!("unknown scenario {other}"),
    }
    std::process::exit(100);
}

fn main() {
    if let Ok(name) = std::env::var(SCENARIO) {
        scenario(&name);
        return;
    }
    let cases = [
        ("in_tasklet", 7),
        ("in_tasklet_mid_channel", 8),
        ("main_with_parked", 9),
        ("plain_thread_tasklet", 10),
        ("plain_thread_main", 11),
        ("scheduler_thread", 12),
    ];
    let mut failed = 0;
    for (name, code) in cases {
        let out =
            common::target_command(std::env::current_exe().unwrap()).env(SCENARIO, name).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ok = out.status.code() == Some(code) && !stderr.contains("fatal runtime error");
        println!("test exit_from_{name}_exits_with_the_given_code ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed += 1;
            println!("  expected code {code}, got {:?}; stderr:\n{stderr}", out.status);
        }
    }
    assert_eq!(failed, 0, "{failed} exit scenario(s) failed");
}
