//! What the console knows: the sampler (every 100 ms, atomics only: activity, stalls, rates,
//! the schedulers' own events) and the state built for a client (snapshots requested from
//! every scheduler, then one JSON document, cached for half a refresh period).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tasklets::monitor::{self, Activity, EventKind, PublishedSnapshot, SchedulerHandle, Watcher};
use tasklets::{Priority, TaskletInfo, TaskletState, WaitingOn};

use crate::json::Writer;
use crate::{Builder, Handler, Limits};

/// How often the sampler looks at the counters.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Rates (switches/s, polls/s, CPU) are measured over this long.
const RATE_PERIOD: Duration = Duration::from_secs(1);
/// How long a client waits at most for the schedulers' snapshots.
const ANSWER_WAIT: Duration = Duration::from_millis(250);
/// Warnings kept.
const WARNINGS_KEPT: usize = 200;

pub(crate) struct State {
    pub(crate) limits: Limits,
    pub(crate) allow_remote: bool,
    pub(crate) routes: Vec<(String, Handler)>,
    refresh: Duration,
    parked_threshold: Duration,
    own_thread: ThreadId,
    watcher: RefCell<Watcher>,
    threads: RefCell<BTreeMap<u64, Track>>,
    warnings: RefCell<Warnings>,
    cache: RefCell<Option<(Instant, String)>>,
    building: Cell<bool>,
    pub(crate) connections: Cell<usize>,
    pub(crate) peak_connections: Cell<usize>,
    pub(crate) refused: Cell<u64>,
    pub(crate) served: Cell<u64>,
}

/// What the console keeps about one scheduler.
struct Track {
    handle: SchedulerHandle,
    activity: Activity,
    /// The live stall warning, while the thread is stalled.
    stall_warning: Option<u64>,
    /// Counters at the start of the current rate period.
    mark: (Instant, u64, u64, Option<Duration>),
    switches_per_s: Option<f64>,
    polls_per_s: Option<f64>,
    cpu: Option<Duration>,
    cpu_percent: Option<f64>,
    /// The schedulers' own events already turned into warnings.
    events_seen: u64,
    /// Blocked tasklets: what they wait on and since when the console saw them waiting.
    parked: HashMap<u64, Parked>,
}

struct Parked {
    on: Option<WaitingOn>,
    switches: u64,
    since: Instant,
    warned: bool,
}

#[derive(Default)]
struct Warnings {
    seq: u64,
    list: VecDeque<Warning>,
}

struct Warning {
    seq: u64,
    at: SystemTime,
    thread: u64,
    thread_name: String,
    kind: &'static str,
    tasklet: Option<u64>,
    active: bool,
    message: String,
}

impl Warnings {
    fn push(
        &mut self,
        thread: &SchedulerHandle,
        kind: &'static str,
        tasklet: Option<u64>,
        active: bool,
        message: String,
    ) -> u64 {
        self.seq += 1;
        if self.list.len() == WARNINGS_KEPT {
            self.list.pop_front();
        }
        self.list.push_back(Warning {
            seq: self.seq,
            at: SystemTime::now(),
            thread: thread.id(),
            thread_name: thread_name(thread),
            kind,
            tasklet,
            active,
            message,
        });
        self.seq
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut Warning> {
        self.list.iter_mut().find(|w| w.seq == seq)
    }
}

fn thread_name(handle: &SchedulerHandle) -> String {
    handle.thread_name().map_or_else(|| format!("{:?}", handle.thread_id()), str::to_owned)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The thread's CPU time, read from outside (Linux), so that it keeps counting while the
/// thread is stalled; elsewhere the figure of its last snapshot.
fn thread_cpu(handle: &SchedulerHandle) -> Option<Duration> {
    #[cfg(target_os = "linux")]
    if let Some(tid) = handle.os_thread_id() {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok();
        if let Some(ns) = stat.and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok())) {
            return Some(Duration::from_nanos(ns));
        }
    }
    handle.latest_snapshot().and_then(|s| s.thread_cpu)
}

/// Who the tasklet is, for messages: `7 'parser'` or `7`.
fn describe(id: u64, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{id} '{name}'"),
        None => id.to_string(),
    }
}

impl State {
    pub(crate) fn new(builder: Builder) -> State {
        State {
            limits: builder.limits,
            allow_remote: builder.allow_remote,
            routes: builder.routes,
            refresh: builder.refresh,
            parked_threshold: builder.parked_threshold,
            own_thread: std::thread::current().id(),
            watcher: RefCell::new(Watcher::new(builder.stall_threshold)),
            threads: RefCell::new(BTreeMap::new()),
            warnings: RefCell::new(Warnings::default()),
            cache: RefCell::new(None),
            building: Cell::new(false),
            connections: Cell::new(0),
            peak_connections: Cell::new(0),
            refused: Cell::new(0),
            served: Cell::new(0),
        }
    }

    /// The sampler tasklet: counters only, every 100 ms, whether anyone looks or not (it
    /// costs the schedulers nothing).
    pub(crate) fn sample_forever(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.sample(Instant::now());
            tasklets::time::sleep(SAMPLE_EVERY);
        }
    }

    fn sample(&self, now: Instant) {
        let handles: Vec<SchedulerHandle> =
            monitor::schedulers().into_iter().filter(|h| h.thread_id() != self.own_thread).collect();
        let mut watcher = self.watcher.borrow_mut();
        let mut threads = self.threads.borrow_mut();
        let mut warnings = self.warnings.borrow_mut();
        threads.retain(|id, track| {
            let alive = handles.iter().any(|h| h.id() == *id);
            if !alive {
                // The thread exited: a stall it was in is over.
                track.activity = Activity::Idle;
                Self::follow_stall(track, &mut warnings);
            }
            alive
        });
        watcher.retain(&handles);
        for handle in handles {
            let track = threads.entry(handle.id()).or_insert_with(|| {
                let c = handle.counters();
                Track {
                    mark: (now, c.switches, c.polls, thread_cpu(&handle)),
                    handle: handle.clone(),
                    activity: Activity::Running,
                    stall_warning: None,
                    switches_per_s: None,
                    polls_per_s: None,
                    cpu: None,
                    cpu_percent: None,
                    events_seen: 0,
                    parked: HashMap::new(),
                }
            });
            track.activity = watcher.observe(&handle, now);
            Self::follow_stall(track, &mut warnings);
            for event in handle.events() {
                if event.seq <= track.events_seen {
                    continue;
                }
                track.events_seen = event.seq;
                let kind = match event.kind {
                    EventKind::Stall => "stall_reported",
                    EventKind::Deadlock => "deadlock",
                    _ => "event",
                };
                warnings.push(&handle, kind, event.tasklet, false, event.message);
            }
            let elapsed = now.saturating_duration_since(track.mark.0);
            if elapsed >= RATE_PERIOD {
                let c = handle.counters();
                let cpu = thread_cpu(&handle);
                let secs = elapsed.as_secs_f64();
                track.switches_per_s = Some(c.switches.saturating_sub(track.mark.1) as f64 / secs);
                track.polls_per_s = Some(c.polls.saturating_sub(track.mark.2) as f64 / secs);
                track.cpu_percent = match (cpu, track.mark.3) {
                    (Some(now_cpu), Some(then)) => {
                        Some(now_cpu.saturating_sub(then).as_secs_f64() / secs * 100.0)
                    }
                    _ => None,
                };
                track.cpu = cpu;
                track.mark = (now, c.switches, c.polls, cpu);
            }
        }
    }

    /// Opens, updates and closes the live warning of a stall.
    fn follow_stall(track: &mut Track, warnings: &mut Warnings) {
        let name_of = |id: u64| {
            track
                .handle
                .latest_snapshot()
                .and_then(|s| s.snapshot.tasklets.iter().find(|t| t.id == id)?.name.clone())
        };
        match (track.activity, track.stall_warning) {
            (Activity::Stalled { tasklet, for_at_least }, None) => {
                let message = format!(
                    "thread '{}' is stalled: tasklet {} has held it for {:.0} ms without giving up the CPU",
                    thread_name(&track.handle),
                    describe(tasklet, name_of(tasklet).as_deref()),
                    ms(for_at_least)
                );
                track.stall_warning =
                    Some(warnings.push(&track.handle, "stall", Some(tasklet), true, message));
            }
            (Activity::Stalled { tasklet, for_at_least }, Some(seq)) => {
                if let Some(w) = warnings.get_mut(seq) {
                    w.message = format!(
                        "thread '{}' is stalled: tasklet {} has held it for {:.0} ms without giving up the CPU",
                        thread_name(&track.handle),
                        describe(tasklet, name_of(tasklet).as_deref()),
                        ms(for_at_least)
                    );
                }
            }
            (_, Some(seq)) => {
                if let Some(w) = warnings.get_mut(seq) {
                    w.active = false;
                    w.message = w.message.replace("is stalled", "was stalled").replace("has held", "held");
                }
                track.stall_warning = None;
            }
            (_, None) => {}
        }
    }

    /// The JSON document of `GET /api/state`: built at most once per half refresh period,
    /// from fresh snapshots of every scheduler that answers in time.
    pub(crate) fn state_json(&self) -> String {
        let fresh_for = self.refresh / 2;
        loop {
            if let Some((built, json)) = &*self.cache.borrow() {
                if built.elapsed() < fresh_for {
                    return json.clone();
                }
            }
            if !self.building.get() {
                break;
            }
            // Another connection is building it: wait for that one.
            tasklets::time::sleep(Duration::from_millis(2));
        }
        self.building.set(true);
        let handles: Vec<SchedulerHandle> =
            monitor::schedulers().into_iter().filter(|h| h.thread_id() != self.own_thread).collect();
        let tickets: Vec<(SchedulerHandle, u64)> =
            handles.iter().map(|h| (h.clone(), h.request_snapshot())).collect();
        // A stalled scheduler, or one whose main runs its own code, cannot answer now: do not
        // wait for it (its last snapshot is shown as it is).
        let busy: Vec<u64> = self
            .threads
            .borrow()
            .values()
            .filter(|t| matches!(t.activity, Activity::Stalled { .. } | Activity::MainBusy { .. }))
            .map(|t| t.handle.id())
            .collect();
        let asked = Instant::now();
        let waiting =
            |(h, t): &(SchedulerHandle, u64)| h.is_alive() && !h.is_answered(*t) && !busy.contains(&h.id());
        while asked.elapsed() < ANSWER_WAIT && tickets.iter().any(waiting) {
            tasklets::time::sleep(Duration::from_millis(1));
        }
        self.sample(Instant::now());
        let json = self.build(Instant::now());
        *self.cache.borrow_mut() = Some((Instant::now(), json.clone()));
        self.building.set(false);
        json
    }

    fn build(&self, now: Instant) -> String {
        let unix_ms = |at: SystemTime| at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut w = Writer::new();
        w.begin_object();
        w.key("version").u64(1);
        w.key("unix_ms").u64(unix_ms(SystemTime::now()));
        w.key("refresh_ms").f64(ms(self.refresh));
        w.key("stall_threshold_ms").f64(ms(self.watcher.borrow().threshold()));
        w.key("parked_threshold_ms").f64(ms(self.parked_threshold));
        w.key("console").begin_object();
        w.key("connections").u64(self.connections.get() as u64);
        w.key("peak_connections").u64(self.peak_connections.get() as u64);
        w.key("max_connections").u64(self.limits.max_connections as u64);
        w.key("refused").u64(self.refused.get());
        w.key("served").u64(self.served.get());
        w.end_object();
        w.key("threads").begin_array();
        let mut threads = self.threads.borrow_mut();
        let mut warnings = self.warnings.borrow_mut();
        for track in threads.values_mut() {
            self.thread_json(&mut w, track, &mut warnings, now);
        }
        w.end_array();
        w.key("warnings").begin_array();
        for warning in warnings.list.iter().rev() {
            w.begin_object();
            w.key("seq").u64(warning.seq);
            w.key("unix_ms").u64(unix_ms(warning.at));
            w.key("thread").u64(warning.thread);
            w.key("thread_name").str(&warning.thread_name);
            w.key("kind").str(warning.kind);
            w.key("tasklet").opt_u64(warning.tasklet);
            w.key("active").bool(warning.active);
            w.key("message").str(&warning.message);
            w.end_object();
        }
        w.end_array();
        w.end_object();
        w.finish()
    }

    fn thread_json(&self, w: &mut Writer, track: &mut Track, warnings: &mut Warnings, now: Instant) {
        let handle = &track.handle;
        let counters = handle.counters();
        w.begin_object();
        w.key("id").u64(handle.id());
        w.key("name").str(&thread_name(handle));
        w.key("os_tid").opt_u64(handle.os_thread_id());
        w.key("main_tasklet").u64(handle.main_tasklet());
        let published = handle.latest_snapshot();
        let name_of = |id: u64| {
            published.as_ref().and_then(|p| p.snapshot.tasklets.iter().find(|t| t.id == id)?.name.clone())
        };
        let (activity, stalled, main_busy) = match track.activity {
            Activity::Idle => ("idle", None, None),
            Activity::Stalled { tasklet, for_at_least } => ("stalled", Some((tasklet, for_at_least)), None),
            Activity::MainBusy { for_at_least } => ("main_busy", None, Some(for_at_least)),
            _ => ("running", None, None),
        };
        w.key("activity").str(activity);
        w.key("stalled");
        match stalled {
            Some((tasklet, held)) => {
                w.begin_object();
                w.key("tasklet").u64(tasklet);
                w.key("name").opt_str(name_of(tasklet).as_deref());
                w.key("for_ms").f64(ms(held));
                w.end_object();
            }
            None => {
                w.null();
            }
        }
        w.key("main_busy_ms").opt_f64(main_busy.map(ms));
        w.key("switches").u64(counters.switches);
        w.key("switches_per_s").opt_f64(track.switches_per_s);
        w.key("polls").u64(counters.polls);
        w.key("polls_per_s").opt_f64(track.polls_per_s);
        w.key("cpu_ms").opt_f64(track.cpu.map(ms));
        w.key("cpu_percent").opt_f64(track.cpu_percent);
        let Some(published) = published.as_deref() else {
            w.key("snapshot").null();
            w.key("stats").null();
            w.key("by_state").null();
            w.key("tasklets").begin_array().end_array();
            w.key("channels").begin_array().end_array();
            w.key("cycles").begin_array().end_array();
            w.end_object();
            return;
        };
        let age = now.saturating_duration_since(published.taken_at);
        w.key("snapshot").begin_object();
        w.key("age_ms").f64(ms(age));
        w.key("stale").bool(age > self.refresh + ANSWER_WAIT);
        w.end_object();
        let snap = &published.snapshot;
        let stats = snap.stats;
        w.key("stats").begin_object();
        w.key("alive").u64(stats.alive as u64);
        w.key("runnable").u64(stats.runnable as u64);
        w.key("parked_on_io").u64(stats.parked_on_io as u64);
        w.key("timers").u64(stats.timers as u64);
        w.key("wakeups").u64(stats.wakeups);
        w.end_object();
        let mut by_state = [0u64; 4];
        for t in &snap.tasklets {
            by_state[state_index(t.state)] += 1;
        }
        w.key("by_state").begin_object();
        for (name, n) in ["running", "runnable", "blocked", "paused"].iter().zip(by_state) {
            w.key(name).u64(n);
        }
        w.end_object();
        // Channels: the blocked tasklets are the channel's waiters (balance = senders - receivers).
        let mut channels: BTreeMap<u64, (i64, Vec<u64>)> = BTreeMap::new();
        for t in &snap.tasklets {
            match t.waiting_on {
                Some(WaitingOn::Send { channel }) => {
                    let c = channels.entry(channel).or_default();
                    c.0 += 1;
                    c.1.push(t.id);
                }
                Some(WaitingOn::Receive { channel }) => {
                    let c = channels.entry(channel).or_default();
                    c.0 -= 1;
                    c.1.push(t.id);
                }
                _ => {}
            }
        }
        self.follow_parked(track, published, warnings, now);
        w.key("tasklets").begin_array();
        for t in &snap.tasklets {
            tasklet_json(
                w,
                t,
                published,
                &channels,
                track.parked.get(&t.id).map(|p| now.saturating_duration_since(p.since)),
            );
        }
        w.end_array();
        w.key("channels").begin_array();
        for (id, (balance, waiters)) in &channels {
            w.begin_object();
            w.key("id").u64(*id);
            w.key("balance").i64(*balance);
            w.key("waiters").begin_array();
            for waiter in waiters {
                w.u64(*waiter);
            }
            w.end_array();
            w.end_object();
        }
        w.end_array();
        w.key("cycles").begin_array();
        for cycle in join_cycles(&snap.tasklets) {
            w.begin_array();
            for id in cycle {
                w.u64(id);
            }
            w.end_array();
        }
        w.end_array();
        w.end_object();
    }

    /// Tracks how long each blocked tasklet has waited on the same thing (a lower bound: since
    /// the console first saw it waiting, or since it last ran when accounting says so), and
    /// warns once per wait that lasts longer than the threshold.
    fn follow_parked(
        &self,
        track: &mut Track,
        published: &PublishedSnapshot,
        warnings: &mut Warnings,
        now: Instant,
    ) {
        let snap = &published.snapshot;
        track
            .parked
            .retain(|id, _| snap.tasklets.iter().any(|t| t.id == *id && t.state == TaskletState::Blocked));
        for t in snap.tasklets.iter().filter(|t| t.state == TaskletState::Blocked) {
            let since = t
                .since_last_ran
                .and_then(|d| published.taken_at.checked_sub(d))
                .unwrap_or(published.taken_at)
                .min(now);
            let entry = track.parked.entry(t.id).or_insert(Parked {
                on: t.waiting_on,
                switches: t.switches,
                since,
                warned: false,
            });
            if entry.on != t.waiting_on || entry.switches != t.switches {
                *entry = Parked { on: t.waiting_on, switches: t.switches, since, warned: false };
            }
            entry.since = entry.since.min(since);
            let parked = now.saturating_duration_since(entry.since);
            if parked >= self.parked_threshold && !entry.warned {
                entry.warned = true;
                let on = t.waiting_on.map_or_else(|| "something".to_owned(), |on| on.to_string());
                let message = format!(
                    "tasklet {} of thread '{}' has been blocked on {on} for {:.1} s",
                    describe(t.id, t.name.as_deref()),
                    thread_name(&track.handle),
                    parked.as_secs_f64()
                );
                warnings.push(&track.handle, "parked", Some(t.id), false, message);
            }
        }
    }
}

fn state_index(state: TaskletState) -> usize {
    match state {
        TaskletState::Running => 0,
        TaskletState::Runnable => 1,
        TaskletState::Blocked => 2,
        _ => 3,
    }
}

fn tasklet_json(
    w: &mut Writer,
    t: &TaskletInfo,
    published: &PublishedSnapshot,
    channels: &BTreeMap<u64, (i64, Vec<u64>)>,
    parked: Option<Duration>,
) {
    w.begin_object();
    w.key("id").u64(t.id);
    w.key("name").opt_str(t.name.as_deref());
    w.key("main").bool(t.is_main);
    match t.spawned_at {
        Some(at) => w.key("spawned_at").str(&format!("{}:{}", at.file(), at.line())),
        None => w.key("spawned_at").null(),
    };
    w.key("state").str(["running", "runnable", "blocked", "paused"][state_index(t.state)]);
    w.key("priority").str(match t.priority {
        Priority::High => "high",
        Priority::Low => "low",
        _ => "normal",
    });
    w.key("waiting_on");
    match t.waiting_on {
        Some(WaitingOn::Send { channel }) | Some(WaitingOn::Receive { channel }) => {
            let kind = if matches!(t.waiting_on, Some(WaitingOn::Send { .. })) { "send" } else { "receive" };
            w.begin_object();
            w.key("kind").str(kind);
            w.key("channel").u64(channel);
            w.key("balance").i64(channels.get(&channel).map_or(0, |c| c.0));
            w.end_object();
        }
        Some(WaitingOn::Io { fd, write }) => {
            w.begin_object();
            w.key("kind").str("io");
            w.key("fd").i64(i64::from(fd));
            w.key("direction").str(if write { "write" } else { "read" });
            w.end_object();
        }
        Some(WaitingOn::Join { tasklet }) => {
            w.begin_object();
            w.key("kind").str("join");
            w.key("tasklet").u64(tasklet);
            w.end_object();
        }
        Some(WaitingOn::Sleep) => {
            w.begin_object().key("kind").str("sleep").end_object();
        }
        Some(WaitingOn::Unblock) => {
            w.begin_object().key("kind").str("unblock").end_object();
        }
        Some(other) => {
            w.begin_object().key("kind").str(&other.to_string()).end_object();
        }
        None => {
            w.null();
        }
    }
    // As of the snapshot, like the rest of what the tasklet was doing.
    let taken = published.taken_at;
    let deadline_in = t.deadline.map(|d| if d >= taken { ms(d - taken) } else { -ms(taken - d) });
    w.key("deadline_in_ms").opt_f64(deadline_in);
    let last_ran = t.since_last_ran.map(|d| d + published.taken_at.elapsed());
    w.key("last_ran_ms_ago").opt_f64(last_ran.map(ms));
    w.key("parked_ms").opt_f64(parked.map(ms));
    w.key("switches").u64(t.switches);
    // Without per-tasklet accounting there is no CPU figure to show (`null`: the page says so).
    w.key("cpu_ms").opt_f64(published.snapshot.accounting.then(|| ms(t.cpu_time)));
    w.end_object();
}

/// Tasklets that join each other in a ring (each waits for the next to finish): every cycle
/// once, starting from its smallest id.
fn join_cycles(tasklets: &[TaskletInfo]) -> Vec<Vec<u64>> {
    let joins: HashMap<u64, u64> = tasklets
        .iter()
        .filter_map(|t| match t.waiting_on {
            Some(WaitingOn::Join { tasklet }) => Some((t.id, tasklet)),
            _ => None,
        })
        .collect();
    let mut cycles = Vec::new();
    let mut done: HashMap<u64, ()> = HashMap::new();
    let mut starts: Vec<u64> = joins.keys().copied().collect();
    starts.sort_unstable();
    for start in starts {
        let mut path = Vec::new();
        let mut at = start;
        while let Some(&next) = joins.get(&at) {
            if done.contains_key(&at) {
                break;
            }
            if let Some(pos) = path.iter().position(|&p| p == at) {
                let mut cycle: Vec<u64> = path[pos..].to_vec();
                let min = cycle.iter().enumerate().min_by_key(|(_, id)| **id).map_or(0, |(i, _)| i);
                cycle.rotate_left(min);
                cycles.push(cycle);
                break;
            }
            path.push(at);
            at = next;
        }
        for p in path {
            done.insert(p, ());
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_cycles_are_found_once() {
        let snapshot = {
            // Tasklets joining in a ring of 3 (2 -> 3 -> 4 -> 2) and a chain (5 -> 2).
            let t = |id: u64, joins: u64| {
                let mut info = tasklets::snapshot().tasklets.remove(0);
                info.id = id;
                info.waiting_on = Some(WaitingOn::Join { tasklet: joins });
                info
            };
            vec![t(5, 2), t(3, 4), t(2, 3), t(4, 2), t(7, 8)]
        };
        assert_eq!(join_cycles(&snapshot), vec![vec![2, 3, 4]]);
    }
}
