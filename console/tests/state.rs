//! `GET /api/state` checked against the truth: tasklets blocked on channels, fds, timers and
//! joins on an application thread, a stalled thread, a join cycle.

mod common;

use std::cell::RefCell;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tasklets::{Channel, Tasklet};

use common::{thread as thread_named, wait_for};

/// Ids and spawn lines of the application's tasklets, sent to the test by the app thread.
#[derive(Debug, Default)]
struct Truth {
    receivers: Vec<(u64, u32)>,
    sender: (u64, u32),
    reader: (u64, u32, i32),
    sleeper: (u64, u32),
    joiner: (u64, u32),
    cycle: (u64, u64),
}

/// The app: two receivers on one channel (balance -2), a sender on another (balance 1), a
/// reader parked on a socket, a sleeper with a 60 s deadline, a joiner of the sleeper, and two
/// tasklets joining each other. Runs until `stop` receives.
fn app(truth: mpsc::Sender<Truth>, stop: std::os::unix::net::UnixStream) {
    let mut t = Truth::default();
    let rx = Channel::<u8>::new();
    for _ in 0..2 {
        let rx = rx.clone();
        let task = tasklets::Builder::new().name("receiver").spawn(move || rx.receive().ok()).unwrap();
        t.receivers.push((task.id(), line!() - 1));
    }
    let tx = Channel::<u8>::new();
    let sender = {
        let tx = tx.clone();
        tasklets::Builder::new().name("sender").spawn(move || tx.send(1).ok()).unwrap()
    };
    t.sender = (sender.id(), line!() - 2);
    let stop = tasklets::net::unix::UnixStream::from(stop);
    let fd = stop.as_raw_fd();
    let sleeper = tasklets::Builder::new()
        .name("sleeper")
        .spawn(|| tasklets::time::sleep(Duration::from_secs(60)))
        .unwrap();
    t.sleeper = (sleeper.id(), line!() - 2);
    let joiner = tasklets::Builder::new().name("<script>alert(1)</script>").spawn({
        let sleeper = sleeper.clone();
        move || sleeper.join().is_ok()
    });
    t.joiner = (joiner.as_ref().unwrap().id(), line!() - 4);
    let slot: Rc<RefCell<Option<Tasklet<()>>>> = Rc::default();
    let first = {
        let slot = slot.clone();
        tasklets::Builder::new()
            .name("ring a")
            .bind(move || drop(slot.borrow_mut().take().unwrap().join()))
            .unwrap()
    };
    let second = tasklets::Builder::new().name("ring b").spawn({
        let first = first.clone();
        move || drop(first.join())
    });
    t.cycle = (first.id(), second.as_ref().unwrap().id());
    *slot.borrow_mut() = second.ok();
    first.insert().unwrap();
    let reader = tasklets::Builder::new()
        .name("reader")
        .spawn(move || {
            let _ = (&stop).read(&mut [0u8; 1]); // until the test closes its end
            rx.close();
            tx.close();
            sleeper.kill();
        })
        .unwrap();
    t.reader = (reader.id(), line!() - 7, fd);
    truth.send(t).unwrap();
    tasklets::run();
    // The ring stays blocked for ever; the thread's exit kills it.
}

fn tasklet(thread: &Value, id: u64) -> &Value {
    thread["tasklets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("tasklet {id}"))
}

fn spawned_at(line: u32) -> String {
    format!("{}:{line}", file!())
}

#[test]
fn the_state_reports_what_each_tasklet_waits_on() {
    let console =
        tasklets_console::Builder::new().refresh(Duration::from_millis(200)).serve("127.0.0.1:0").unwrap();
    let addr = console.local_addr();
    let (truth_tx, truth_rx) = mpsc::channel();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let app = thread::Builder::new().name("app".into()).spawn(move || app(truth_tx, theirs)).unwrap();
    let truth = truth_rx.recv().unwrap();
    let app_thread = wait_for(addr, "the app idle with its tasklets blocked", |s| {
        let t = thread_named(s, "app")?;
        (t["activity"] == "idle" && t["stats"]["alive"] == 9 && t["by_state"]["blocked"] == 8)
            .then(|| t.clone())
    });
    assert_eq!(app_thread["stalled"], Value::Null);
    assert_eq!(app_thread["stats"]["parked_on_io"], 1);
    assert_eq!(app_thread["stats"]["timers"], 1);
    assert_eq!(app_thread["snapshot"]["stale"], false);
    assert!(app_thread["os_tid"].as_u64().is_some());

    for (id, line) in &truth.receivers {
        let t = tasklet(&app_thread, *id);
        assert_eq!(t["state"], "blocked");
        assert_eq!(t["waiting_on"]["kind"], "receive");
        assert_eq!(t["waiting_on"]["balance"], -2);
        assert_eq!(t["spawned_at"], spawned_at(*line));
    }
    let channel = tasklet(&app_thread, truth.receivers[0].0)["waiting_on"]["channel"].clone();
    let channels = app_thread["channels"].as_array().unwrap();
    let listed = channels.iter().find(|c| c["id"] == channel).unwrap();
    assert_eq!(listed["balance"], -2);
    assert_eq!(listed["waiters"], serde_json::json!([truth.receivers[0].0, truth.receivers[1].0]));

    let sender = tasklet(&app_thread, truth.sender.0);
    assert_eq!(
        (&sender["waiting_on"]["kind"], &sender["waiting_on"]["balance"]),
        (&Value::from("send"), &Value::from(1))
    );
    assert_eq!(sender["spawned_at"], spawned_at(truth.sender.1));

    let reader = tasklet(&app_thread, truth.reader.0);
    assert_eq!(
        reader["waiting_on"],
        serde_json::json!({"kind": "io", "fd": truth.reader.2, "direction": "read"})
    );
    assert_eq!(reader["spawned_at"], spawned_at(truth.reader.1));

    let sleeper = tasklet(&app_thread, truth.sleeper.0);
    assert_eq!(sleeper["waiting_on"]["kind"], "sleep");
    let left = sleeper["deadline_in_ms"].as_f64().unwrap();
    assert!(left > 40_000.0 && left <= 60_000.0, "{left}");
    assert_eq!(sleeper["spawned_at"], spawned_at(truth.sleeper.1));

    let joiner = tasklet(&app_thread, truth.joiner.0);
    assert_eq!(joiner["name"], "<script>alert(1)</script>");
    assert_eq!(joiner["waiting_on"], serde_json::json!({"kind": "join", "tasklet": truth.sleeper.0}));
    assert_eq!(joiner["spawned_at"], spawned_at(truth.joiner.1));

    let (a, b) = truth.cycle;
    assert_eq!(app_thread["cycles"], serde_json::json!([[a.min(b), a.max(b)]]));
    let main = tasklet(&app_thread, app_thread["main_tasklet"].as_u64().unwrap());
    assert_eq!((&main["main"], &main["spawned_at"]), (&Value::Bool(true), &Value::Null));

    // The raw JSON escapes the markup of the name.
    let (_, raw) = common::get(addr, "/api/state");
    assert!(!raw.contains("<script>") && raw.contains("\\u003cscript\\u003e"));

    drop(ours); // the reader wakes, closes the channels, kills the sleeper
    app.join().unwrap();
    wait_for(addr, "the app's scheduler to be gone", |s| thread_named(s, "app").is_none().then_some(()));
    console.shutdown();
}

#[test]
fn a_stalled_thread_is_marked_with_the_tasklet_that_holds_it() {
    let console = tasklets_console::Builder::new()
        .refresh(Duration::from_millis(100))
        .stall_threshold(Duration::from_millis(100))
        .serve("127.0.0.1:0")
        .unwrap();
    let addr = console.local_addr();
    let (id_tx, id_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let stuck = thread::Builder::new()
        .name("stuck".into())
        .spawn(move || {
            let hog = tasklets::Builder::new()
                .name("hog")
                .spawn(move || {
                    tasklets::time::sleep(Duration::from_millis(200));
                    let _ = go_rx.recv_timeout(Duration::from_secs(20)); // native wait: a stall
                })
                .unwrap();
            id_tx.send(hog.id()).unwrap();
            tasklets::run();
        })
        .unwrap();
    let hog = id_rx.recv().unwrap();
    let stalled = wait_for(addr, "the stall", |s| {
        let t = thread_named(s, "stuck")?;
        (t["activity"] == "stalled").then(|| (t.clone(), s["warnings"].clone()))
    });
    let (thread, warnings) = stalled;
    assert_eq!(thread["stalled"]["tasklet"], hog);
    assert_eq!(thread["stalled"]["name"], "hog");
    assert!(thread["stalled"]["for_ms"].as_f64().unwrap() >= 100.0);
    let live = warnings.as_array().unwrap().iter().find(|w| w["kind"] == "stall" && w["active"] == true);
    let live = live.expect("a live stall warning");
    assert_eq!(live["tasklet"], hog);
    assert!(live["message"].as_str().unwrap().contains("'hog'"), "{live}");
    // It cannot answer: its last snapshot (from before the stall) turns stale.
    wait_for(addr, "a stale snapshot", |s| {
        (thread_named(s, "stuck")?["snapshot"]["stale"] == true).then_some(())
    });
    go_tx.send(()).unwrap();
    stuck.join().unwrap();
    let ended = wait_for(addr, "the stall warning to end", |s| {
        s["warnings"].as_array()?.iter().find(|w| w["kind"] == "stall" && w["active"] == false).cloned()
    });
    assert!(ended["message"].as_str().unwrap().contains("was stalled"), "{ended}");
    console.shutdown();
}
