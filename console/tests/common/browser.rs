//! Headless Chromium for the browser tests: loads a page, lets its scripts run, and returns
//! the rendered DOM. Shared by the console's tests and the workspace's (`tests/browser.rs`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary on `PATH`, if any (`.ci/run` installs the Debian package `chromium`).
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Loads `url` in headless Chromium, lets the page run for `budget_ms` of virtual time, and
/// returns the DOM as rendered. `None` (with a message saying so) when Chromium is missing.
pub fn rendered_dom(url: &str, budget_ms: u32) -> Option<String> {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED: no chromium on PATH, so the page cannot be checked in a browser \
             (`apt-get install -y chromium`; .ci/run installs it)"
        );
        return None;
    };
    let profile =
        std::env::temp_dir().join(format!("tasklets-chromium-{}-{}", std::process::id(), budget_ms));
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--mute-audio",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut dom);
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for chromium").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s loading {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&profile);
    let dom = reader.join().unwrap();
    assert!(!dom.is_empty(), "chromium rendered nothing for {url}");
    Some(dom)
}

/// The opening tags of the elements of `dom` whose tag starts with `prefix`, e.g. `<tr class="tasklet`.
pub fn tags<'a>(dom: &'a str, prefix: &str) -> Vec<&'a str> {
    dom.match_indices(prefix).map(|(at, _)| &dom[at..at + dom[at..].find('>').unwrap_or(0) + 1]).collect()
}
