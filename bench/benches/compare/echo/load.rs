//! The load generator (the child with `role=client`, on CPU 1): `conns` tasklets
//! (`tasklets::net`), each a closed loop of write `size` bytes → read them back → check them.
//! After every connection is up and a warm-up, it prints `START`, counts round trips and records
//! each one's latency for the measurement window, prints `STOP`, then closes every connection and
//! prints `RESULT ...`.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::common::{emit, percentile, process_cpu};

#[derive(Default)]
struct Load {
    connected: Cell<usize>,
    measuring: Cell<bool>,
    stop: Cell<bool>,
    round_trips: Cell<u64>,
    latencies_ns: RefCell<Vec<u64>>,
    failed: Cell<u64>,
}

/// With `trips > 0`, each connection makes exactly that many round trips, all counted (for
/// the instruction counts under callgrind); otherwise the warm-up and window as above.
pub fn client(port: u16, conns: usize, size: usize, warm_up: Duration, window: Duration, trips: u64) {
    use tasklets::net::TcpStream;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let load = Rc::new(Load::default());
    for i in 0..conns {
        let load = load.clone();
        tasklets::spawn(move || {
            let mut stream = match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("connect: {e}");
                    load.failed.set(load.failed.get() + 1);
                    return;
                }
            };
            stream.set_nodelay(true).expect("nodelay");
            load.connected.set(load.connected.get() + 1);
            let msg: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
            let mut back = vec![0u8; size];
            let mut done = 0;
            while !load.stop.get() && (trips == 0 || done < trips) {
                done += 1;
                let t0 = Instant::now();
                if let Err(e) = stream.write_all(&msg).and_then(|()| stream.read_exact(&mut back)) {
                    if !load.stop.get() {
                        eprintln!("echo: {e}");
                        load.failed.set(load.failed.get() + 1);
                    }
                    return;
                }
                assert!(back == msg, "echo corrupted");
                if load.measuring.get() || trips > 0 {
                    load.round_trips.set(load.round_trips.get() + 1);
                    load.latencies_ns.borrow_mut().push(t0.elapsed().as_nanos() as u64);
                }
            }
        });
    }
    if trips > 0 {
        let (t0, c0) = (Instant::now(), process_cpu());
        tasklets::run();
        let (elapsed, client_cpu) = (t0.elapsed(), process_cpu() - c0);
        return client_result(&load, conns, size, elapsed, client_cpu);
    }
    let ctl = load.clone();
    let controller = tasklets::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ctl.connected.get() + (ctl.failed.get() as usize) < conns && Instant::now() < deadline {
            tasklets::time::sleep(Duration::from_millis(5));
        }
        tasklets::time::sleep(warm_up);
        println!("START");
        std::io::stdout().flush().ok();
        ctl.measuring.set(true);
        let (t0, c0) = (Instant::now(), process_cpu());
        tasklets::time::sleep(window);
        ctl.measuring.set(false);
        let (t1, c1) = (Instant::now(), process_cpu());
        println!("STOP");
        std::io::stdout().flush().ok();
        ctl.stop.set(true);
        (t1 - t0, c1 - c0)
    });
    tasklets::run();
    let (elapsed, client_cpu) = controller.join().expect("controller");
    client_result(&load, conns, size, elapsed, client_cpu);
}

fn client_result(load: &Load, conns: usize, size: usize, elapsed: Duration, client_cpu: Duration) {
    let trips = load.round_trips.get();
    let mut lat = load.latencies_ns.take();
    lat.sort_unstable();
    emit(&[
        ("conns", conns as f64),
        ("size", size as f64),
        ("round_trips", trips as f64),
        ("secs", elapsed.as_secs_f64()),
        ("rps", trips as f64 / elapsed.as_secs_f64()),
        ("p50_us", percentile(&lat, 50.0) as f64 / 1e3),
        ("p99_us", percentile(&lat, 99.0) as f64 / 1e3),
        ("client_cpu_us_per_msg", client_cpu.as_secs_f64() * 1e6 / trips.max(1) as f64),
        ("failed", load.failed.get() as f64),
    ]);
}
