//! The timer queue of a scheduler: deadlines at which blocked tasklets are woken.
//!
//! # Design
//!
//! Timers are kept in an ordered map keyed by `(deadline, sequence number)`, so that the next
//! deadline is the first key, expired timers are popped in deadline order (ties in arming
//! order: deterministic), and a timer is cancelled in O(log n) by its key. Go's runtime uses
//! a 4-ary heap with an index stored in each timer for the same operations; an ordered map
//! gives them without that bookkeeping, and cancelling is as common as firing (every
//! `receive_timeout` that succeeds cancels its timer).
//!
//! A tasklet arms at most one timer at a time. Its key is kept in the task, so that:
//! - the [`Alarm`] guard on the blocked frame cancels the timer when the wait ends in any other
//!   way (partner, close, kill), and nothing stays in the queue for a tasklet that is gone;
//! - firing clears the key, which is how the woken frame learns that its deadline passed.
//!
//! Firing wakes the tasklet only if it is still blocked: one that a partner already made
//! runnable (and that has not run yet to cancel its timer) is not queued twice.
//!
//! The scheduler fires expired timers when it goes idle (it waits for the first deadline) and,
//! while tasklets are runnable, once per pass over the run queue, so a busy thread cannot
//! starve its timers.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use crate::scheduler::{scheduler, Task};

/// Identifies an armed timer.
pub(crate) type TimerKey = (Instant, u64);

/// Armed timers of one scheduler.
#[derive(Default)]
pub(crate) struct Timers {
    armed: BTreeMap<TimerKey, Rc<Task>>,
    seq: u64,
}

impl Timers {
    /// Arms a timer for `task` at `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, task: Rc<Task>) -> TimerKey {
        self.seq += 1;
        let key = (deadline, self.seq);
        self.armed.insert(key, task);
        key
    }

    /// Cancels a timer.
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<Rc<Task>> {
        self.armed.remove(&key)
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.armed.first_key_value().map(|(key, _)| key.0)
    }

    /// Takes the earliest timer if its deadline is not after `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Rc<Task>> {
        let entry = self.armed.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    pub(crate) fn len(&self) -> usize {
        self.armed.len()
    }
}

/// A timer armed for the current tasklet, cancelled when dropped (unless it fired).
pub(crate) struct Alarm<'a> {
    task: &'a Task,
}

impl<'a> Alarm<'a> {
    /// Arms a timer that wakes `task` (the current tasklet) at `deadline`.
    pub(crate) fn arm(task: &'a Rc<Task>, deadline: Instant) -> Alarm<'a> {
        let key = scheduler().timers().insert(deadline, task.clone());
        task.set_timer(Some(key));
        Alarm { task }
    }

    /// Whether the deadline passed (the timer fired).
    pub(crate) fn fired(&self) -> bool {
        self.task.timer().is_none()
    }
}

impl Drop for Alarm<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.task.timer() {
            self.task.set_timer(None);
            let cancelled = scheduler().timers().remove(key);
            drop(cancelled);
        }
    }
}
