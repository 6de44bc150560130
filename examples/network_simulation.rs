//! Listings 4 and 5 of the Linux Magazine article "Programming with Stackless Python",
//! reconstructed: a network simulation in which every element (a node or a hub) is an actor
//! with a name, one input channel and a tasklet that loops receiving packets from it.
//!
//! - A **node** takes the packets addressed to it and forwards the others out of its other
//!   links (a node with a single link only sends what it originates).
//! - A **hub** forwards each packet to all connected devices except the one it came from. As
//!   in Listing 5 it sends on a link only when someone listens there (`balance() < 0`), so it
//!   never blocks; while it waits it picks up incoming packets (`balance() > 0`) and calls
//!   `schedule()`.
//!
//! ```text
//!   alice ──┐                 ┌── carol ── dave
//!           hub-a ───── hub-b ┤
//!   bob ────┘                 └── erin
//! ```
//!
//! The main tasklet injects packets into their source nodes: first one at a time, letting the
//! network settle with `run()` after each, then a burst in which hubs find devices busy and hold
//! packets. (Two of the article's hubs that each hold a packet for the other would wait for each
//! other for ever, both calling `schedule()`, neither listening; so a burst never crosses the hub
//! link in both directions at once.) At the end main closes every input channel, which ends the
//! element loops, and joins the tasklets to report what each element did. The output is the
//! same on every run.
//!
//! Run it with `cargo run --release --example network_simulation`.
//!
//! With `--ui ADDR` it keeps running, injecting the same packets round after round at a pace a
//! person can follow, and serves a page at `http://ADDR/simulation` that draws the network and
//! animates each packet as it is forwarded (a hub forwards only to devices that listen:
//! `balance() < 0`), with counters per element; the web console of all tasklets is at
//! `http://ADDR/`. Without `--ui` the output is exactly the one above.
//!
//! ```sh
//! cargo run --release --example network_simulation -- --ui 127.0.0.1:6680
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use tasklets::{Channel, Tasklet};

#[path = "shared/network_ui.rs"]
mod ui;

const HUBS: [&str; 2] = ["hub-a", "hub-b"];
const NODES: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];
/// The cables of the network, each joining two elements in both directions.
const CABLES: [(&str, &str); 6] = [
    ("hub-a", "alice"),
    ("hub-a", "bob"),
    ("hub-a", "hub-b"),
    ("hub-b", "carol"),
    ("hub-b", "erin"),
    ("carol", "dave"),
];

#[derive(Debug, Clone, Copy)]
struct Packet {
    id: u32,
    from: &'static str,
    to: &'static str,
    payload: &'static str,
    /// The element the packet came from on its last hop; `None` when it was just injected.
    via: Option<&'static str>,
}

const PACKETS: [Packet; 4] = [
    Packet { id: 1, from: "alice", to: "dave", payload: "hello dave", via: None },
    Packet { id: 2, from: "dave", to: "bob", payload: "hi bob, dave here", via: None },
    Packet { id: 3, from: "erin", to: "carol", payload: "lunch?", via: None },
    Packet { id: 4, from: "bob", to: "mallory", payload: "anyone there?", via: None },
];

/// One end of a cable: the element at the other end and its input channel.
struct Link {
    peer: &'static str,
    channel: Channel<Packet>,
}

/// The links of element `name`, in the order of [`CABLES`].
fn links_of(name: &str, channels: &BTreeMap<&'static str, Channel<Packet>>) -> Vec<Link> {
    CABLES
        .iter()
        .filter_map(|&(a, b)| {
            if a == name {
                Some(b)
            } else if b == name {
                Some(a)
            } else {
                None
            }
        })
        .map(|peer| Link { peer, channel: channels[peer].clone() })
        .collect()
}

/// An element of the network (the article's `Actor`): a name, one input channel, and what to
/// do with each packet received on it.
trait Actor: 'static {
    fn name(&self) -> &'static str;
    fn in_channel(&self) -> &Channel<Packet>;
    fn action(&mut self, packet: Packet);
}

/// Starts the actor's tasklet, which handles packets until its input channel is closed and
/// then returns the actor.
fn start<A: Actor>(mut actor: A) -> Tasklet<A> {
    tasklets::Builder::new()
        .name(actor.name())
        .spawn(move || {
            ui::record_listening([(actor.name(), true)]);
            while let Ok(packet) = actor.in_channel().receive() {
                ui::record_listening([(actor.name(), false)]);
                actor.action(packet);
                ui::record_listening([(actor.name(), true)]);
            }
            actor
        })
        .expect("a tasklet stack is available")
}

struct Node {
    name: &'static str,
    in_channel: Channel<Packet>,
    links: Vec<Link>,
    received: Vec<Packet>,
}

impl Node {
    fn new(name: &'static str, channels: &BTreeMap<&'static str, Channel<Packet>>) -> Node {
        Node {
            name,
            in_channel: channels[name].clone(),
            links: links_of(name, channels),
            received: Vec::new(),
        }
    }
}

impl Actor for Node {
    fn name(&self) -> &'static str {
        self.name
    }

    fn in_channel(&self) -> &Channel<Packet> {
        &self.in_channel
    }

    fn action(&mut self, packet: Packet) {
        if packet.to == self.name {
            println!(
                "  {} receives packet {} from {}: {:?}",
                self.name, packet.id, packet.from, packet.payload
            );
            self.received.push(packet);
            ui::record_received(self.name, packet.id);
            return;
        }
        let onward: Vec<&Link> = self.links.iter().filter(|link| Some(link.peer) != packet.via).collect();
        if onward.is_empty() {
            println!("  {} ignores packet {} (for {})", self.name, packet.id, packet.to);
            ui::record_ignored(self.name, packet.id);
        }
        for link in onward {
            println!("  {} forwards packet {} to {}", self.name, packet.id, link.peer);
            // A plain blocking send: a hub picks it up even while it is busy sending.
            link.channel.send(Packet { via: Some(self.name), ..packet }).expect("the network is running");
            ui::record_forwarded(self.name, link.peer, packet.id);
        }
    }
}

struct Hub {
    name: &'static str,
    in_channel: Channel<Packet>,
    links: Vec<Link>,
    /// Packets received but not yet sent to every link.
    pending: VecDeque<Packet>,
    forwarded: usize,
}

impl Hub {
    fn new(name: &'static str, channels: &BTreeMap<&'static str, Channel<Packet>>) -> Hub {
        Hub {
            name,
            in_channel: channels[name].clone(),
            links: links_of(name, channels),
            pending: VecDeque::new(),
            forwarded: 0,
        }
    }
}

impl Actor for Hub {
    fn name(&self) -> &'static str {
        self.name
    }

    fn in_channel(&self) -> &Channel<Packet> {
        &self.in_channel
    }

    /// Listing 5: dispatch the packet to all connected devices without ever blocking.
    fn action(&mut self, packet: Packet) {
        self.pending.push_back(packet);
        while let Some(packet) = self.pending.pop_front() {
            // The links still to serve, each with whether we said it was busy.
            let mut waiting: VecDeque<(&Link, bool)> = self
                .links
                .iter()
                .filter(|link| Some(link.peer) != packet.via)
                .map(|link| (link, false))
                .collect();
            while let Some((link, reported)) = waiting.pop_front() {
                if link.channel.balance() < 0 {
                    // Someone listens: the send completes at once.
                    println!("  {} forwards packet {} to {}", self.name, packet.id, link.peer);
                    link.channel
                        .send(Packet { via: Some(self.name), ..packet })
                        .expect("a receiver is waiting");
                    self.forwarded += 1;
                    ui::record_forwarded(self.name, link.peer, packet.id);
                } else {
                    // The device is busy: try it again later, meanwhile take what is sent to us.
                    if !reported {
                        println!("  {} holds packet {}: {} is busy", self.name, packet.id, link.peer);
                        ui::record_held(self.name, link.peer, packet.id);
                    }
                    waiting.push_back((link, true));
                    if self.in_channel.balance() > 0 {
                        self.pending.push_back(self.in_channel.receive().expect("a sender is waiting"));
                    }
                    tasklets::schedule();
                }
            }
        }
    }
}

/// Injects the packets of one round (ids offset by `first_id - 1`): one at a time, letting the
/// network settle after each, then a burst. With `pace`, main sleeps that long after each
/// packet, so that a person watching the UI can follow.
fn inject_round(channels: &BTreeMap<&'static str, Channel<Packet>>, first_id: u32, pace: Option<Duration>) {
    let rest = |pace: Option<Duration>| {
        if let Some(pace) = pace {
            tasklets::time::sleep(pace);
        }
    };
    for packet in PACKETS {
        let packet = Packet { id: packet.id + first_id - 1, ..packet };
        println!("packet {}: {} -> {} {:?}", packet.id, packet.from, packet.to, packet.payload);
        ui::record_injected(packet.from, packet.id);
        channels[packet.from].send(packet).expect("the source node is listening");
        tasklets::run(); // until every element waits again
        rest(pace);
    }

    // A burst: the next packet arrives while the previous ones are still on their way, so the
    // hubs find busy devices and hold packets. All of it flows from hub-a to hub-b.
    println!("burst: alice -> erin, packets {} to {}", first_id + 4, first_id + 6);
    for (id, payload) in (first_id + 4..).zip(["one", "two", "three"]) {
        let packet = Packet { id, from: "alice", to: "erin", payload, via: None };
        ui::record_injected(packet.from, packet.id);
        channels[packet.from].send(packet).expect("alice takes every packet");
    }
    tasklets::run();
    rest(pace);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ui_addr = match args.as_slice() {
        [] => None,
        [flag, addr] if flag == "--ui" => Some(addr.clone()),
        _ => {
            eprintln!("usage: network_simulation [--ui ADDR]");
            return ExitCode::from(2);
        }
    };
    let _console = match ui_addr.map(|addr| ui::serve(&addr, &HUBS, &NODES, &CABLES)).transpose() {
        Ok(console) => console.inspect(|c| println!("network_simulation: UI on {}simulation", c.url())),
        Err(err) => {
            eprintln!("network_simulation: cannot serve the UI: {err}");
            return ExitCode::FAILURE;
        }
    };
    let channels: BTreeMap<&'static str, Channel<Packet>> =
        HUBS.iter().chain(&NODES).map(|&name| (name, Channel::new())).collect();
    let hubs: Vec<Tasklet<Hub>> = HUBS.iter().map(|&name| start(Hub::new(name, &channels))).collect();
    let nodes: Vec<Tasklet<Node>> = NODES.iter().map(|&name| start(Node::new(name, &channels))).collect();
    tasklets::run(); // every element starts and waits on its input channel

    if ui::enabled() {
        // Round after round, until the process is killed.
        for round in 0.. {
            inject_round(&channels, round * 10 + 1, Some(Duration::from_millis(1500)));
        }
    }
    inject_round(&channels, 1, None);

    println!("shutting down");
    for channel in channels.values() {
        channel.close(); // wakes the element waiting on it with `Closed`
    }
    tasklets::run();
    for hub in hubs {
        let hub = hub.join().expect("the hub stopped");
        println!("{} forwarded {} packet(s)", hub.name, hub.forwarded);
    }
    for node in nodes {
        let node = node.join().expect("the node stopped");
        let ids: Vec<u32> = node.received.iter().map(|packet| packet.id).collect();
        println!("{} received {} packet(s) {ids:?}", node.name, ids.len());
    }
    ExitCode::SUCCESS
}
