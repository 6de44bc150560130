//! The console's page in a real browser (headless Chromium): the DOM after its scripts ran
//! shows the tasklet rows, a stalled thread marked as such, and a hostile tasklet name as text.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

#[test]
fn the_page_shows_tasklets_and_a_stalled_thread_and_escapes_names() {
    if browser::chromium().is_none() {
        browser::rendered_dom("", 0); // prints why it is skipped
        return;
    }
    let console = tasklets_console::Builder::new()
        .refresh(Duration::from_millis(200))
        .stall_threshold(Duration::from_millis(100))
        .serve("127.0.0.1:0")
        .unwrap();
    let addr = console.local_addr();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    // The hog stalls only once the console holds a snapshot of all the tasklets: a stalled
    // thread cannot answer a snapshot request, so under load the page could otherwise show a
    // thread that stalled before it was ever seen.
    let stall = Arc::new(AtomicBool::new(false));
    let stall_now = Arc::clone(&stall);
    let app = thread::Builder::new()
        .name("browser-app".into())
        .spawn(move || {
            let ch = tasklets::Channel::<u8>::new();
            for i in 0..3 {
                let ch = ch.clone();
                tasklets::Builder::new()
                    .name(format!("waiter {i}"))
                    .spawn(move || ch.receive().ok())
                    .unwrap();
            }
            let script = ch.clone();
            tasklets::Builder::new()
                .name("<script>alert(1)</script>")
                .spawn(move || script.receive().ok())
                .unwrap();
            tasklets::Builder::new()
                .name("hog")
                .spawn(move || {
                    while !stall_now.load(Ordering::Acquire) {
                        tasklets::time::sleep(Duration::from_millis(10));
                    }
                    let _ = release_rx.recv_timeout(Duration::from_secs(60)); // stalls the thread
                    ch.close();
                })
                .unwrap();
            tasklets::run();
        })
        .unwrap();
    // All six tasklets, with the waiters already parked on the channel: a snapshot taken before
    // they first ran (seen under qemu-user) would otherwise be the one the stalled thread
    // leaves behind.
    common::wait_for(addr, "a snapshot of the tasklets", |s| {
        let tasklets = common::thread(s, "browser-app")?["tasklets"].as_array()?;
        let blocked = tasklets.iter().filter(|t| t["state"] == "blocked").count();
        (tasklets.len() >= 6 && blocked >= 4).then_some(())
    });
    stall.store(true, Ordering::Release);
    common::wait_for(addr, "the stall", |s| {
        (common::thread(s, "browser-app")?["activity"] == "stalled").then_some(())
    });
    let dom = browser::rendered_dom(&format!("http://{addr}/"), 3000).unwrap();
    release_tx.send(()).unwrap();
    app.join().unwrap();
    console.shutdown();

    let rows = browser::tags(&dom, "<tr class=\"tasklet");
    assert!(rows.len() >= 6, "tasklet rows: {rows:?}\n{dom}");
    for name in ["waiter 0", "waiter 1", "waiter 2", "hog"] {
        assert!(dom.contains(&format!("<td class=\"name\">{name}</td>")), "{name} in {dom}");
    }
    let stalled = browser::tags(&dom, "<tr class=\"thread stalled");
    assert_eq!(stalled.len(), 1, "{dom}");
    assert!(dom.contains("stalled: tasklet") && dom.contains("'hog'"), "{dom}");
    // The name is text, not markup: escaped in the DOM, and no script element carries it.
    assert!(dom.contains("<td class=\"name\">&lt;script&gt;alert(1)&lt;/script&gt;</td>"), "{dom}");
    assert!(!dom.contains("<script>alert(1)</script>"), "{dom}");
    assert!(dom.contains("receive on channel"), "{dom}");
}
