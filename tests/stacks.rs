//! Guarded stacks: overflow reports, guard pages that cost no mapping, the mprotect fallback
//! running out of mappings, and memory given back after a burst.
//!
//! Each test that measures the process (RSS, mapping count) or that must crash runs its body in
//! a child process: the test binary re-executes itself with `TASKLET_STACKS_CHILD` naming the
//! test, so the parallel tests of this binary cannot disturb the figures.

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;

mod common;
use common::{in_child, run_child};

/// Recurses with a 1 KiB frame until the stack runs out.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth as u8; 1024]);
    if depth == 0 {
        0
    } else {
        recurse(depth - 1).wrapping_add(frame[7] as u64)
    }
}

fn status_line(key: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn rss_kib() -> usize {
    status_line("VmRSS:")
}

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

fn assert_overflow_report(out: &Output, name: &str, kib: usize) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc_sigabrt()), "child should abort; stderr:\n{stderr}");
    let expected = format!("tasklet '{name}' (id ");
    assert!(stderr.contains(&expected), "stderr lacks {expected:?}:\n{stderr}");
    let expected = format!("has overflowed its {kib} KiB stack");
    assert!(stderr.contains(&expected), "stderr lacks {expected:?}:\n{stderr}");
    assert!(stderr.contains("fatal runtime error: stack overflow"), "stderr:\n{stderr}");
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn stack_overflow_names_the_tasklet_and_aborts() {
    const NAME: &str = "stack_overflow_names_the_tasklet_and_aborts";
    if in_child(NAME) {
        tasklets::Builder::new().name("deep").stack_size(64 * 1024).spawn(|| recurse(u64::MAX)).unwrap();
        tasklets::run();
        unreachable!("the tasklet overflows its stack");
    }
    let out = run_child(NAME, &[]);
    assert_overflow_report(&out, "deep", 64);
}

/// A fault that is not a tasklet stack overflow still reaches the previous handler (here:
/// std's, which reports the main thread's own overflow).
#[test]
fn main_thread_overflow_still_reported_by_std() {
    const NAME: &str = "main_thread_overflow_still_reported_by_std";
    if in_child(NAME) {
        let _ = tasklets::current(); // installs our handler
        std::thread::Builder::new()
            .name("small".into())
            .stack_size(256 * 1024)
            .spawn(|| {
                let _ = tasklets::current();
                recurse(u64::MAX)
            })
            .unwrap()
            .join()
            .unwrap();
        unreachable!();
    }
    let out = run_child(NAME, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.signal().is_some(), "child should die of a signal; stderr:\n{stderr}");
    assert!(stderr.contains("thread 'small'"), "stderr:\n{stderr}");
    assert!(stderr.contains("has overflowed its stack"), "stderr:\n{stderr}");
    assert!(!stderr.contains("tasklet '"), "not a tasklet overflow:\n{stderr}");
}

/// Pooled stacks whose pages were given back (trimmed with one MADV_DONTNEED across adjacent
/// slots, guard pages included) keep their guards.
#[test]
fn guard_pages_survive_trimming() {
    const NAME: &str = "guard_pages_survive_trimming";
    if in_child(NAME) {
        for _ in 0..1000 {
            tasklets::spawn(|| black_box(recurse(16)));
        }
        tasklets::run();
        tasklets::run(); // the idle epoch: every free stack beyond the hot ones is trimmed
        for _ in 0..999 {
            tasklets::spawn(|| black_box(recurse(16)));
        }
        // Reuses a trimmed stack (the pool is LIFO: the 1000th pop reaches the cold ones).
        tasklets::Builder::new().name("after-trim").spawn(|| recurse(u64::MAX)).unwrap();
        tasklets::run();
        unreachable!();
    }
    let out = run_child(NAME, &[]);
    assert_overflow_report(&out, "after-trim", tasklets::DEFAULT_STACK_SIZE / 1024);
}

#[test]
fn guard_pages_add_no_mappings() {
    const NAME: &str = "guard_pages_add_no_mappings";
    if in_child(NAME) {
        let before = map_count();
        let ch = tasklets::Channel::<()>::new();
        for _ in 0..20_000 {
            let ch = ch.clone();
            tasklets::Builder::new().stack_size(16 * 1024).spawn(move || ch.receive()).unwrap();
        }
        tasklets::run();
        assert_eq!(ch.balance(), -20_000);
        let after = map_count();
        println!("mappings before {before}, with 20,000 parked tasklets {after}");
        // Regions grow geometrically: a handful of mappings, not two per stack.
        assert!(after - before < 64, "{before} -> {after} mappings");
        return;
    }
    let out = run_child(NAME, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// On kernels without MADV_GUARD_INSTALL the fallback is an mprotect guard per stack, two
/// mappings each; running out of mappings must be a clear error, not a crash.
#[test]
fn mprotect_fallback_out_of_mappings_is_a_clear_error() {
    const NAME: &str = "mprotect_fallback_out_of_mappings_is_a_clear_error";
    if in_child(NAME) {
        let mut tasklets = Vec::new();
        let err = loop {
            match tasklets::Builder::new().stack_size(16 * 1024).bind(|| ()) {
                Ok(t) => tasklets.push(t),
                Err(err) => break err,
            }
            assert!(
                tasklets.len() < 200_000,
                "the map count (or TASKLET_MAX_MPROTECT_GUARDS) should have run out"
            );
        };
        println!("bound {} tasklets, then: {err}", tasklets.len());
        assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory);
        assert!(err.to_string().contains("vm.max_map_count"), "{err}");
        // The runtime stays usable: kill them all (they never ran) and spawn again.
        for t in &tasklets {
            t.kill();
        }
        let t = tasklets::Builder::new().stack_size(16 * 1024).spawn(|| 7).unwrap();
        assert_eq!(t.join().unwrap(), 7);
        return;
    }
    // Each mprotect guard costs two mappings: on a machine whose vm.max_map_count is raised
    // beyond what 200,000 binds exhaust (1,048,576 on recent distributions), the allocator's
    // test limit stands in for the kernel's, so the test stays bounded everywhere.
    let max_map_count: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut envs = vec![("TASKLET_STACK_GUARD", "mprotect")];
    if max_map_count == 0 || max_map_count > 300_000 {
        envs.push(("TASKLET_MAX_MPROTECT_GUARDS", "30000"));
    }
    let out = run_child(NAME, &envs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    print!("{stdout}");
}

#[test]
fn burst_memory_is_given_back_when_run_returns() {
    const NAME: &str = "burst_memory_is_given_back_when_run_returns";
    if in_child(NAME) {
        const N: usize = 2_000;
        let ch = tasklets::Channel::<()>::new();
        // Warm up the runtime itself so the baseline includes it.
        tasklets::spawn(|| ());
        tasklets::run();
        let base = rss_kib();
        for _ in 0..N {
            let ch = ch.clone();
            tasklets::spawn(move || {
                black_box(recurse(100)); // ~100 KiB of stack touched
                ch.receive()
            });
        }
        tasklets::run();
        let parked = rss_kib();
        ch.close(); // wakes all blocked receivers
        tasklets::run();
        let after = rss_kib();
        println!(
            "RSS: base {base} KiB, {N} parked after 100 KiB deep calls {parked} KiB, after the burst {after} KiB"
        );
        assert!(parked - base > N * 90, "the burst touched ~100 KiB per stack");
        assert!(after - base < (parked - base) / 10, "the burst's stack pages were given back");
        return;
    }
    let out = run_child(NAME, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    print!("{stdout}");
}

/// Every spawn wrote its closure and first frame at the top of a fresh stack, so a burst of
/// N spawns touched N stack pages before any ran (4 KiB or more per tasklet, and the cache
/// misses with them). Issue 14: a tasklet that has not started has no stack; one that runs to
/// completion hands its warm stack to the next.
#[test]
fn a_burst_of_spawns_touches_no_stack_page_per_tasklet() {
    const NAME: &str = "a_burst_of_spawns_touches_no_stack_page_per_tasklet";
    if in_child(NAME) {
        const N: usize = 20_000;
        tasklets::spawn(|| ());
        tasklets::run();
        let base = rss_kib();
        let ran = std::rc::Rc::new(std::cell::Cell::new(0));
        let tasklets: Vec<_> = (0..N)
            .map(|_| {
                let ran = ran.clone();
                tasklets::spawn(move || ran.set(ran.get() + 1))
            })
            .collect();
        let spawned = rss_kib();
        let peak = std::rc::Rc::new(std::cell::Cell::new(0));
        let p = peak.clone();
        tasklets::spawn(move || p.set(rss_kib())); // runs last, before run() trims the pool
        tasklets::run();
        assert_eq!(ran.get(), N);
        assert!(tasklets.iter().all(|t| !t.is_alive()));
        println!("RSS: base {base} KiB, {N} spawned {spawned} KiB, all run {} KiB", peak.get());
        // Each `Task` is a few hundred bytes; a stack page would be 4 KiB.
        assert!(spawned - base < N * 2, "spawning touched stack pages: {} KiB", spawned - base);
        assert!(peak.get() - base < N * 2, "running touched a stack per tasklet: {} KiB", peak.get() - base);
        return;
    }
    let out = run_child(NAME, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    print!("{stdout}");
}

/// Bytes of address space this process maps now.
fn mapped_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (start, end) = line.split_once(' ')?.0.split_once('-')?;
            Some(u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?)
        })
        .sum()
}

/// ENOMEM while reserving stacks always blamed vm.max_map_count ("run on Linux 6.13 or
/// newer"), also when the cause was RLIMIT_AS: the error names the address-space limit, and a
/// smaller stack still fits afterwards (the region is retried smaller).
#[test]
fn out_of_address_space_names_rlimit_as_not_the_map_count() {
    const NAME: &str = "out_of_address_space_names_rlimit_as_not_the_map_count";
    if in_child(NAME) {
        // Room for the runtime and a few small regions, never for a 1 GiB stack.
        let limit = mapped_bytes() + 256 * 1024 * 1024;
        let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
        // SAFETY: setrlimit reads the struct it is given; this child process owns its limits.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
        let err = tasklets::Builder::new().stack_size(tasklets::MAX_STACK_SIZE).spawn(|| ()).unwrap_err();
        println!("1 GiB stack under RLIMIT_AS: {err}");
        assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory);
        let text = err.to_string();
        assert!(text.contains("RLIMIT_AS"), "{text}");
        assert!(!text.contains("6.13"), "blames the map count: {text}");
        // 16 slots of 32 MiB do not fit in what is left: the region is retried smaller.
        let t = tasklets::Builder::new().stack_size(32 * 1024 * 1024).spawn(|| 7).unwrap();
        assert_eq!(t.join().unwrap(), 7);
        return;
    }
    let out = run_child(NAME, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    print!("{stdout}");
}
