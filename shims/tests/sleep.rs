//! Sleeping through every hooked sleep call parks the tasklet, not the thread.
//!
//! Time bounds are loose: each asserts only what sequential execution could never meet.

use std::time::{Duration, Instant};

use tasklets::JoinError;

mod common;
use common::{install, ms};

#[test]
fn a_thousand_std_thread_sleeps_of_100_ms_finish_together() {
    install();
    let start = Instant::now();
    let sleepers: Vec<_> = (0..1000).map(|_| tasklets::spawn(|| std::thread::sleep(ms(100)))).collect();
    tasklets::run();
    for s in sleepers {
        s.join().unwrap();
    }
    let took = start.elapsed();
    println!("1,000 tasklets x std::thread::sleep(100 ms): {took:?}");
    assert!(took >= ms(100));
    // One after another they would take 100 s.
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// Runs 50 tasklets that each sleep 100 ms through `sleep_100ms`; they must overlap.
fn fifty_overlap(what: &str, sleep_100ms: fn()) {
    let start = Instant::now();
    let sleepers: Vec<_> = (0..50).map(|_| tasklets::spawn(sleep_100ms)).collect();
    for s in sleepers {
        s.join().unwrap();
    }
    let took = start.elapsed();
    println!("50 tasklets x {what}(100 ms): {took:?}");
    assert!(took >= ms(100), "{what} returned early: {took:?}");
    assert!(took < Duration::from_millis(2500), "{what} is not cooperative: {took:?}");
    // 5 s sequential
}

#[test]
fn every_libc_sleep_call_is_cooperative() {
    install();
    fifty_overlap("nanosleep", || {
        let req = libc::timespec { tv_sec: 0, tv_nsec: 100_000_000 };
        // SAFETY: valid timespec, no remainder asked for.
        assert_eq!(unsafe { libc::nanosleep(&req, std::ptr::null_mut()) }, 0);
    });
    fifty_overlap("usleep", || {
        // SAFETY: plain call.
        assert_eq!(unsafe { libc::usleep(100_000) }, 0);
    });
    fifty_overlap("clock_nanosleep(MONOTONIC, relative)", || {
        let req = libc::timespec { tv_sec: 0, tv_nsec: 100_000_000 };
        // SAFETY: valid timespec.
        assert_eq!(unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &req, std::ptr::null_mut()) }, 0);
    });
    for clock in [libc::CLOCK_MONOTONIC, libc::CLOCK_REALTIME] {
        let start = Instant::now();
        let sleepers: Vec<_> = (0..50)
            .map(|_| {
                tasklets::spawn(move || {
                    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                    // SAFETY: valid timespec.
                    unsafe { libc::clock_gettime(clock, &mut now) };
                    let mut until = libc::timespec { tv_sec: now.tv_sec, tv_nsec: now.tv_nsec + 100_000_000 };
                    if until.tv_nsec >= 1_000_000_000 {
                        until.tv_sec += 1;
                        until.tv_nsec -= 1_000_000_000;
                    }
                    // SAFETY: valid timespec.
                    let r = unsafe {
                        libc::clock_nanosleep(clock, libc::TIMER_ABSTIME, &until, std::ptr::null_mut())
                    };
                    assert_eq!(r, 0);
                })
            })
            .collect();
        for s in sleepers {
            s.join().unwrap();
        }
        let took = start.elapsed();
        println!("50 tasklets x clock_nanosleep({clock}, TIMER_ABSTIME, now + 100 ms): {took:?}");
        assert!(took >= ms(95) && took < Duration::from_millis(2500), "{took:?}");
    }
    let start = Instant::now();
    let sleepers: Vec<_> = (0..20)
        .map(|_| {
            tasklets::spawn(|| {
                // SAFETY: plain call.
                assert_eq!(unsafe { libc::sleep(1) }, 0);
            })
        })
        .collect();
    for s in sleepers {
        s.join().unwrap();
    }
    let took = start.elapsed();
    println!("20 tasklets x sleep(1): {took:?}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn an_invalid_sleep_is_still_refused() {
    install();
    let t = tasklets::spawn(|| {
        let bad = libc::timespec { tv_sec: 0, tv_nsec: 2_000_000_000 };
        // SAFETY: a valid pointer to an out-of-range timespec.
        let r = unsafe { libc::nanosleep(&bad, std::ptr::null_mut()) };
        (r, std::io::Error::last_os_error().raw_os_error())
    });
    assert_eq!(t.join().unwrap(), (-1, Some(libc::EINVAL)));
}

#[test]
fn killing_a_tasklet_in_std_thread_sleep_ends_it_killed_promptly() {
    install();
    let sleeper = tasklets::spawn(|| {
        std::thread::sleep(Duration::from_secs(3600));
        "woke up"
    });
    tasklets::schedule(); // the sleeper parks in the hooked clock_nanosleep
    let start = Instant::now();
    sleeper.kill();
    assert!(matches!(sleeper.join(), Err(JoinError::Killed)));
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn sleeping_on_a_thread_without_tasklets_still_blocks_it() {
    install();
    std::thread::spawn(|| {
        let start = Instant::now();
        std::thread::sleep(ms(50));
        // SAFETY: plain call.
        assert_eq!(unsafe { libc::usleep(20_000) }, 0);
        assert!(start.elapsed() >= ms(70));
        assert!(!tasklets::io::is_cooperative());
    })
    .join()
    .unwrap();
}

#[test]
fn a_killed_tasklet_looping_on_std_sleep_lets_the_thread_run_until_its_loop_ends() {
    install();
    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let laps = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let looping = {
        let (stop, laps) = (stop.clone(), laps.clone());
        tasklets::spawn(move || {
            while !stop.get() {
                std::thread::sleep(ms(1)); // the loop's only blocking call, which cannot fail
                laps.set(laps.get() + 1);
            }
        })
    };
    tasklets::schedule(); // it parks in its first sleep
    looping.kill(); // returns: the killed tasklet's cut-short sleeps yield
    let other = tasklets::spawn(|| 42);
    assert_eq!(other.join().unwrap(), 42, "the thread's other tasklets still run");
    assert!(looping.is_alive(), "documented: the kill cannot land inside hooked calls alone");
    stop.set(true); // the loop's own exit condition ends it...
    assert!(matches!(looping.join(), Err(JoinError::Killed))); // ...as killed
    assert!(laps.get() >= 1);
}
