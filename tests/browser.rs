//! The live pages of the demos in a real browser (headless Chromium; `.ci/run` installs it):
//! `boss_worker --console` shows its tasklets, `network_simulation --ui` draws its network.
//! The binaries are looked up as in `tests/examples.rs` (plain `cargo test` builds them).

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

#[path = "../console/tests/common/browser.rs"]
mod browser;
mod common;

/// A running example, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts example `name` and returns it with the first `http://` URL it prints (on stdout or
/// stderr, as `from_stderr` says).
fn start(name: &str, args: &[&str], from_stderr: bool) -> (Running, String) {
    let mut child = common::target_command(common::example_binary(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(if from_stderr { Stdio::null() } else { Stdio::piped() })
        .stderr(if from_stderr { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .unwrap_or_else(|err| panic!("start {name}: {err}"));
    let lines: Box<dyn BufRead + Send> = if from_stderr {
        Box::new(BufReader::new(child.stderr.take().unwrap()))
    } else {
        Box::new(BufReader::new(child.stdout.take().unwrap()))
    };
    let running = Running(child);
    let mut lines = lines.lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.find("http://").map(|at| line[at..].split_whitespace().next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("{name} printed no URL"));
    // Keep draining its output, so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (running, url)
}

#[test]
fn boss_worker_console_shows_its_tasklets_in_a_browser() {
    if browser::chromium().is_none() {
        browser::rendered_dom("", 0);
        return;
    }
    let (_demo, url) =
        start("boss_worker", &["--console", "127.0.0.1:0", "--clients", "4", "--requests", "1000000"], true);
    let dom = browser::rendered_dom(&url, 3000).unwrap();
    let rows = browser::tags(&dom, "<tr class=\"tasklet");
    assert!(rows.len() >= 14, "{} tasklet rows in {dom}", rows.len());
    for name in ["boss", "worker 0", "worker 7", "client 0", "client 3"] {
        assert!(dom.contains(&format!("<td class=\"name\">{name}</td>")), "{name} in {dom}");
    }
    assert!(dom.contains("examples/boss_worker.rs:"), "spawn locations in {dom}");
    assert_eq!(
        browser::tags(&dom, "<tr class=\"thread").len(),
        1,
        "one scheduler thread (the console's is not listed)"
    );
}

#[test]
fn network_simulation_ui_draws_the_network_in_a_browser() {
    if browser::chromium().is_none() {
        browser::rendered_dom("", 0);
        return;
    }
    let (_sim, url) = start("network_simulation", &["--ui", "127.0.0.1:0"], false);
    assert!(url.ends_with("/simulation"), "{url}");
    let dom = browser::rendered_dom(&url, 2500).unwrap();
    for (name, kind) in [
        ("hub-a", "hub"),
        ("hub-b", "hub"),
        ("alice", "node"),
        ("bob", "node"),
        ("carol", "node"),
        ("dave", "node"),
        ("erin", "node"),
    ] {
        let tag = browser::tags(&dom, &format!("<g class=\"element {kind}"))
            .into_iter()
            .find(|t| t.contains(&format!("data-name=\"{name}\"")));
        assert!(tag.is_some(), "{name} drawn as a {kind} in {dom}");
    }
    assert_eq!(browser::tags(&dom, "<tr class=\"counter\"").len(), 7, "{dom}");
    assert!(browser::tags(&dom, "<line").len() >= 6, "the cables in {dom}");
    // Packets flowed: alice's first packet reached the log of moves.
    assert!(dom.contains("packet 1 enters at alice"), "{dom}");
}
