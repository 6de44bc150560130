//! The parent side of the echo cases: the server child, the load generator child, and what
//! the parent measures around them (`perf` samples, or callgrind's instruction counts).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::case::{parse_result, watchdog, Job, Record};
use crate::report;

/// The server child's command-line arguments.
fn server_args(job: &Job) -> [&str; 5] {
    ["--child", job.case, job.imp, "cpus=0", "role=server"]
}

/// The load generator child's command-line arguments, less its parameters.
fn client_args(job: &Job, port: u16) -> Vec<String> {
    let fixed = ["--child", job.case, "tasklet", "cpus=1", "role=client"];
    fixed.iter().map(|a| a.to_string()).chain([format!("port={port}")]).collect()
}

/// One echo measurement: a server child on CPU 0, the load generator child on CPU 1, the
/// parent relaying START/STOP from the generator to the server.
pub fn echo(exe: &Path, job: &Job, record: &mut Record) {
    // With perf, the server runs under `perf record` sampling its CPU clock at 10 kHz, which
    // splits its CPU time into user and kernel far more finely than the 250 Hz tick does.
    let out_dir = report::target_dir().join("compare");
    std::fs::create_dir_all(&out_dir).ok();
    let perf_data = out_dir.join(format!("perf-{}.data", job.imp));
    let mut server = if perf_works() {
        let mut c = Command::new("perf");
        c.args(["record", "-q", "-k", "CLOCK_MONOTONIC", "-e", "cpu-clock", "-c", "100000", "-o"])
            .arg(&perf_data)
            .arg("--")
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let mut server = server
        .args(server_args(job))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the echo server");
    let server_done = watchdog(server.id(), Duration::from_secs(180));
    let mut server_in = server.stdin.take().expect("server stdin");
    let mut server_out = BufReader::new(server.stdout.take().expect("server stdout"));
    let mut line = String::new();
    server_out.read_line(&mut line).expect("server port");
    let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok()) else {
        record.note = format!("server said {line:?}");
        server.kill().ok();
        server.wait().ok();
        return;
    };
    let mut args = client_args(job, port);
    args.extend(job.params.iter().map(|(k, v)| format!("{k}={v}")));
    let mut client = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the load generator");
    let client_done = watchdog(client.id(), Duration::from_secs(150));
    let client_out = BufReader::new(client.stdout.take().expect("client stdout"));
    let mut client_result = None;
    for line in client_out.lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "START" => writeln!(server_in, "start").and_then(|()| server_in.flush()).unwrap_or(()),
            "STOP" => writeln!(server_in, "stop").and_then(|()| server_in.flush()).unwrap_or(()),
            l if l.starts_with("RESULT") => client_result = parse_result(l),
            _ => {}
        }
    }
    let client_status = client.wait().expect("wait for the load generator");
    client_done.send(()).ok();
    let mut rest = String::new();
    if client_result.is_some() {
        // The server prints its RESULT line after `stop`.
        server_out.read_line(&mut rest).ok();
    }
    drop(server_in); // the server exits when its stdin closes
    let server_status = server.wait().expect("wait for the echo server");
    server_done.send(()).ok();
    let server_result = parse_result(&rest);
    match (client_result, server_result) {
        (Some(c), Some(s)) if client_status.success() => {
            let trips = c.get("round_trips").copied().unwrap_or(0.0).max(1.0);
            let user = s.get("user_s").copied().unwrap_or(f64::NAN);
            let sys = s.get("sys_s").copied().unwrap_or(f64::NAN);
            // getrusage's user + system is the exact run time; only its split is tick-sampled.
            let cpu = user + sys;
            let window = (s.get("mono_start_s").copied(), s.get("mono_stop_s").copied());
            let samples = match window {
                (Some(t0), Some(t1)) if perf_works() => perf_samples(&perf_data, t0, t1),
                _ => None,
            };
            std::fs::remove_file(&perf_data).ok();
            record.metrics.extend(c);
            record.metrics.extend(s);
            record.metrics.insert("user_us_per_msg_rusage".into(), user * 1e6 / trips);
            record.metrics.insert("sys_us_per_msg_rusage".into(), sys * 1e6 / trips);
            let user_share = match samples {
                Some((u, k)) if u + k > 0 => {
                    record.metrics.insert("perf_user_samples".into(), u as f64);
                    record.metrics.insert("perf_kernel_samples".into(), k as f64);
                    u as f64 / (u + k) as f64
                }
                _ => user / cpu,
            };
            record.metrics.insert("user_us_per_msg".into(), cpu * user_share * 1e6 / trips);
            record.metrics.insert("sys_us_per_msg".into(), cpu * (1.0 - user_share) * 1e6 / trips);
            record.metrics.insert("cpu_us_per_msg".into(), cpu * 1e6 / trips);
            record.ok = record.get("failed") == Some(0.0);
            if !record.ok {
                record.note = "some connections failed".into();
            }
        }
        _ => record.note = format!("load generator {client_status}, server {server_status}"),
    }
}

/// Whether `perf record` can sample the CPU clock here (a software event: no PMU needed).
fn perf_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        let data = std::env::temp_dir().join(format!("compare-perf-probe-{}.data", std::process::id()));
        let ok = Command::new("perf")
            .args(["record", "-q", "-k", "CLOCK_MONOTONIC", "-e", "cpu-clock", "-c", "100000", "-o"])
            .arg(&data)
            .args(["--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        std::fs::remove_file(&data).ok();
        ok
    })
}

/// User-mode and kernel-mode CPU-clock samples of a `perf record` file between two
/// `CLOCK_MONOTONIC` times (a kernel address has its top bit set).
fn perf_samples(data: &Path, t0: f64, t1: f64) -> Option<(u64, u64)> {
    let out = Command::new("perf")
        .args(["script", "--ns", "-F", "time,ip", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let (mut user, mut kernel) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((time, ip)) = line.split_once(':') else { continue };
        let (Ok(time), Ok(ip)) = (time.trim().parse::<f64>(), u64::from_str_radix(ip.trim(), 16)) else {
            continue;
        };
        if time < t0 || time > t1 {
            continue;
        }
        if ip >> 63 == 1 {
            kernel += 1;
        } else {
            user += 1;
        }
    }
    Some((user, kernel))
}

/// User-space instructions per echoed message of one server, counted by callgrind: the server
/// runs under `valgrind --tool=callgrind` twice, for two numbers of round trips, and the
/// difference of the totals divided by the difference of the messages leaves out start-up,
/// connection set-up and teardown. Deterministic, so it is the noise-free companion of the
/// tick-sampled user CPU time.
pub fn echo_ir(exe: &Path, job: &Job, record: &mut Record) {
    let trips: Vec<u64> = job.get("trips").split(',').filter_map(|t| t.parse().ok()).collect();
    let mut points = Vec::new();
    for &t in &trips {
        let mut server = match Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(exe)
            .args(server_args(job))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(s) => s,
            Err(e) => {
                record.note = format!("valgrind: {e}");
                return;
            }
        };
        let server_done = watchdog(server.id(), Duration::from_secs(600));
        let server_in = server.stdin.take().expect("server stdin");
        let mut server_out = BufReader::new(server.stdout.take().expect("server stdout"));
        let mut server_err = server.stderr.take().expect("server stderr");
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut server_err, &mut text).ok();
            text
        });
        let mut line = String::new();
        server_out.read_line(&mut line).ok();
        let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok()) else {
            record.note = format!("server under valgrind said {line:?}");
            server.kill().ok();
            server.wait().ok();
            return;
        };
        let client = Command::new(exe)
            .args(client_args(job, port))
            .arg(format!("conns={}", job.get("conns")))
            .arg(format!("size={}", job.get("size")))
            .args(["warm_ms=0", "window_ms=0"])
            .arg(format!("trips={t}"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the load generator");
        drop(server_in);
        server.wait().ok();
        server_done.send(()).ok();
        let stderr = err_reader.join().unwrap_or_default();
        let collected = stderr
            .lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok());
        let msgs = parse_result(&String::from_utf8_lossy(&client.stdout))
            .and_then(|m| m.get("round_trips").copied());
        match (collected, msgs) {
            (Some(ir), Some(msgs)) => points.push((msgs, ir)),
            _ => {
                record.note = format!("no instruction count (load generator {})", client.status);
                return;
            }
        }
    }
    if let [(m1, i1), (m2, i2)] = points[..] {
        record.metrics.insert("msgs_1".into(), m1);
        record.metrics.insert("ir_1".into(), i1);
        record.metrics.insert("msgs_2".into(), m2);
        record.metrics.insert("ir_2".into(), i2);
        record.metrics.insert("ir_per_msg".into(), (i2 - i1) / (m2 - m1));
        record.ok = true;
    } else {
        record.note = "needs two trip counts".into();
    }
}
