//! The live view of `network_simulation --ui ADDR`: what the simulation's tasklets record as
//! they work (packets injected, forwarded, delivered, held, ignored; who listens), served with
//! a page by the web console (`tasklets-console`) on its own thread.
//!
//! Without `--ui` nothing is recorded: every `record_*` call is a no-op and the simulation's
//! output is the same as it always was.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The page: inline SVG, script and style; nothing loaded from elsewhere.
const PAGE: &str = include_str!("network_ui.html");

/// Events kept for pages that fall behind.
const EVENTS_KEPT: usize = 1_000;

#[derive(Default)]
struct Counters {
    injected: u64,
    received: u64,
    forwarded: u64,
    held: u64,
    ignored: u64,
}

struct Event {
    seq: u64,
    kind: &'static str,
    from: &'static str,
    to: &'static str,
    packet: u32,
}

#[derive(Default)]
struct Sim {
    elements: Vec<(&'static str, &'static str)>,
    cables: Vec<(&'static str, &'static str)>,
    counters: BTreeMap<&'static str, Counters>,
    listening: BTreeMap<&'static str, bool>,
    events: VecDeque<Event>,
    seq: u64,
}

static SIM: OnceLock<Arc<Mutex<Sim>>> = OnceLock::new();

fn with_sim(f: impl FnOnce(&mut Sim)) {
    if let Some(sim) = SIM.get() {
        f(&mut sim.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Starts recording, and serves the console with the simulation's page at `/simulation` (and
/// its data at `/simulation/state?after=SEQ`) on `addr`.
pub fn serve(
    addr: &str,
    hubs: &[&'static str],
    nodes: &[&'static str],
    cables: &[(&'static str, &'static str)],
) -> std::io::Result<tasklets_console::Console> {
    let sim = Arc::new(Mutex::new(Sim {
        elements: hubs.iter().map(|&h| (h, "hub")).chain(nodes.iter().map(|&n| (n, "node"))).collect(),
        cables: cables.to_vec(),
        ..Sim::default()
    }));
    let _ = SIM.set(sim.clone());
    tasklets_console::Builder::new()
        .refresh(std::time::Duration::from_millis(500))
        .route("/simulation", |_| tasklets_console::Response::html(PAGE))
        .route("/simulation/state", move |request| {
            let after = request.param("after").and_then(|a| a.parse().ok()).unwrap_or(0);
            tasklets_console::Response::json(state_json(
                &sim.lock().unwrap_or_else(|p| p.into_inner()),
                after,
            ))
        })
        .serve(addr)
}

fn push(sim: &mut Sim, kind: &'static str, from: &'static str, to: &'static str, packet: u32) {
    sim.seq += 1;
    if sim.events.len() == EVENTS_KEPT {
        sim.events.pop_front();
    }
    sim.events.push_back(Event { seq: sim.seq, kind, from, to, packet });
}

/// Main put packet `packet` into the source node `to`.
pub fn record_injected(to: &'static str, packet: u32) {
    with_sim(|sim| {
        sim.counters.entry(to).or_default().injected += 1;
        push(sim, "inject", "", to, packet);
    });
}

/// `from` sent packet `packet` to `to`, which was listening.
pub fn record_forwarded(from: &'static str, to: &'static str, packet: u32) {
    with_sim(|sim| {
        sim.counters.entry(from).or_default().forwarded += 1;
        push(sim, "forward", from, to, packet);
    });
}

/// Node `at` received packet `packet`, addressed to it.
pub fn record_received(at: &'static str, packet: u32) {
    with_sim(|sim| {
        sim.counters.entry(at).or_default().received += 1;
        push(sim, "deliver", at, at, packet);
    });
}

/// Hub `at` holds packet `packet`: `busy` does not listen.
pub fn record_held(at: &'static str, busy: &'static str, packet: u32) {
    with_sim(|sim| {
        sim.counters.entry(at).or_default().held += 1;
        push(sim, "hold", at, busy, packet);
    });
}

/// Node `at` dropped packet `packet`: not for it and nowhere to send it.
pub fn record_ignored(at: &'static str, packet: u32) {
    with_sim(|sim| {
        sim.counters.entry(at).or_default().ignored += 1;
        push(sim, "ignore", at, at, packet);
    });
}

/// Who listens now (a tasklet blocked receiving on the element's channel: `balance() < 0`).
pub fn record_listening(listening: impl IntoIterator<Item = (&'static str, bool)>) {
    with_sim(|sim| sim.listening.extend(listening));
}

/// Whether the UI is on (recording costs something only then).
pub fn enabled() -> bool {
    SIM.get().is_some()
}

fn state_json(sim: &Sim, after: u64) -> String {
    let mut out = String::from("{\"elements\":[");
    for (i, (name, kind)) in sim.elements.iter().enumerate() {
        let c = sim.counters.get(name);
        let n = |f: fn(&Counters) -> u64| c.map_or(0, f);
        let _ = write!(
            out,
            "{}{{\"name\":\"{name}\",\"kind\":\"{kind}\",\"listening\":{},\"injected\":{},\"received\":{},\"forwarded\":{},\"held\":{},\"ignored\":{}}}",
            if i > 0 { "," } else { "" },
            sim.listening.get(name).copied().unwrap_or(false),
            n(|c| c.injected),
            n(|c| c.received),
            n(|c| c.forwarded),
            n(|c| c.held),
            n(|c| c.ignored),
        );
    }
    out.push_str("],\"cables\":[");
    for (i, (a, b)) in sim.cables.iter().enumerate() {
        let _ = write!(out, "{}[\"{a}\",\"{b}\"]", if i > 0 { "," } else { "" });
    }
    let _ = write!(out, "],\"seq\":{},\"events\":[", sim.seq);
    let mut first = true;
    for e in sim.events.iter().filter(|e| e.seq > after) {
        let _ = write!(
            out,
            "{}{{\"seq\":{},\"kind\":\"{}\",\"from\":\"{}\",\"to\":\"{}\",\"packet\":{}}}",
            if first { "" } else { "," },
            e.seq,
            e.kind,
            e.from,
            e.to,
            e.packet
        );
        first = false;
    }
    out.push_str("]}");
    out
}
