//! The run queue: Stackless round robin within a priority level, and a bounded wait across
//! levels.
//!
//! # The rule
//!
//! Every tasklet has a [`Priority`]: `High`, `Normal` (the default) or `Low`. The queue keeps
//! one FIFO per level, and each level keeps the exact Stackless order: a tasklet made runnable
//! goes to the back of its level (`insert`, a wake-up, `schedule()`), one that Stackless puts
//! first (a channel partner that must run next, a tasklet switched away from by `run`) goes
//! to the front of its level.
//!
//! The next tasklet is the head of the highest non-empty level, with one exception that
//! prevents starvation: each time a level holds runnable tasklets and another level is picked,
//! its *skip count* goes up by one; when a lower level's skip count reaches
//! [`STARVATION_LIMIT`], its head is picked instead of the highest level's. A level's count
//! starts again from zero whenever it is picked, and when it empties. So a level with runnable
//! tasklets is passed over at most `STARVATION_LIMIT` picks in a row (one more when two starved
//! levels are due together: the higher of the two goes first, the other right after):
//! `Normal` gets at least one pick in nine against a busy `High`, and `Low` about one in nine
//! against everything above it.
//!
//! Tasklets that are switched to directly do not go through the queue at all, whatever
//! their level: the target of `Tasklet::run` and the partner a channel hands a value to run
//! exactly when Stackless says they do. Priorities steer only the choice among runnable
//! tasklets.
//!
//! With every tasklet at `Normal` (nobody called `Builder::priority` or
//! `Tasklet::set_priority`), only the `Normal` level is ever used: the order is exactly plain
//! Stackless round robin, and `pop_front` takes a fast path that checks one counter (items at
//! other levels) and pops the `Normal` FIFO.
//!
//! # Rejected alternatives
//!
//! - **Strict priorities** (always the highest level): one busy `High` tasklet that only calls
//!   `schedule()` would starve every other tasklet forever; the talk asks for "shifting
//!   priorities", not for a way to hang the thread.
//! - **Weighted fair queueing / virtual time** (as Linux CFS): fairer in CPU time, but it
//!   reorders tasklets of one level, which breaks the Stackless order that programs and tests
//!   rely on, and it needs a clock read per pick.
//! - **Many numeric levels**: a user picks among three meaningfully; more levels make the
//!   starvation bound longer and the rule harder to state.

use std::collections::VecDeque;
use std::fmt;

/// How a runnable tasklet is chosen relative to others: the head of the highest level with
/// runnable tasklets runs first, and no level waits more than
/// [`STARVATION_LIMIT`](crate::STARVATION_LIMIT) picks of higher levels. Within a level,
/// the order is Stackless round robin. The default is `Normal`; with every tasklet at
/// `Normal`, scheduling is exactly Stackless round robin.
///
/// # Examples
///
/// ```
/// use tasklets::{Builder, Priority};
/// use std::cell::RefCell;
/// use std::rc::Rc;
///
/// let order = Rc::new(RefCell::new(Vec::new()));
/// for (name, priority) in [("low", Priority::Low), ("normal", Priority::Normal), ("high", Priority::High)] {
///     let order = order.clone();
///     Builder::new().priority(priority).spawn(move || order.borrow_mut().push(name))?;
/// }
/// tasklets::run();
/// assert_eq!(*order.borrow(), ["high", "normal", "low"]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Runs before `Normal` and `Low` tasklets (but see the starvation rule).
    High,
    /// The default: plain Stackless round robin.
    #[default]
    Normal,
    /// Runs when no `High` or `Normal` tasklet is runnable, or when its level's turn against
    /// starvation comes.
    Low,
}

impl Priority {
    fn level(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        })
    }
}

/// How many times in a row a level with runnable tasklets may be passed over for higher
/// levels before its head runs (see [`Priority`]).
pub const STARVATION_LIMIT: u32 = 8;

const LEVELS: usize = 3;
const NORMAL: usize = 1;

/// The run queue of one scheduler: one FIFO per priority level (see the module design).
pub(crate) struct RunQueue<T> {
    levels: [VecDeque<T>; LEVELS],
    /// Items queued at `High` or `Low`: while zero, `pop_front` is the `Normal` FIFO's.
    others: usize,
    /// Times each level was passed over while non-empty since it last ran.
    skipped: [u32; LEVELS],
}

impl<T> RunQueue<T> {
    pub(crate) fn new() -> RunQueue<T> {
        RunQueue { levels: Default::default(), others: 0, skipped: [0; LEVELS] }
    }

    /// Appends `item` to the back of its level.
    #[inline]
    pub(crate) fn push_back(&mut self, item: T, priority: Priority) {
        let level = priority.level();
        if level != NORMAL {
            self.add_other();
        }
        self.levels[level].push_back(item);
    }

    /// Puts `item` at the front of its level.
    #[inline]
    pub(crate) fn push_front(&mut self, item: T, priority: Priority) {
        let level = priority.level();
        if level != NORMAL {
            self.add_other();
        }
        self.levels[level].push_front(item);
    }

    fn add_other(&mut self) {
        self.others += 1;
    }

    /// Takes the next tasklet to run (see the rule in the module design).
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.others == 0 {
            self.skipped[NORMAL] = 0; // picked (or empty): its count starts again
            return self.levels[NORMAL].pop_front();
        }
        self.pick()
    }

    #[cold]
    fn pick(&mut self) -> Option<T> {
        let highest = (0..LEVELS).find(|&l| !self.levels[l].is_empty())?;
        // A starved lower level goes first, the higher of two starved ones before the other.
        let chosen = (highest + 1..LEVELS)
            .find(|&l| !self.levels[l].is_empty() && self.skipped[l] >= STARVATION_LIMIT)
            .unwrap_or(highest);
        let item = self.levels[chosen].pop_front();
        if chosen != NORMAL {
            self.others -= 1;
        }
        for level in 0..LEVELS {
            self.skipped[level] = if level == chosen || self.levels[level].is_empty() {
                0
            } else {
                self.skipped[level].saturating_add(1)
            };
        }
        item
    }

    /// Runnable tasklets queued, over all levels.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.levels[NORMAL].len() + self.others
    }

    /// Removes and returns the first queued item for which `matches` holds.
    pub(crate) fn remove_first(&mut self, mut matches: impl FnMut(&T) -> bool) -> Option<T> {
        for (level, queue) in self.levels.iter_mut().enumerate() {
            if let Some(pos) = queue.iter().position(&mut matches) {
                let item = queue.remove(pos);
                if level != NORMAL {
                    self.others -= 1;
                }
                if queue.is_empty() {
                    self.skipped[level] = 0;
                }
                return item;
            }
        }
        None
    }
}

impl<T> fmt::Debug for RunQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunQueue")
            .field("high", &self.levels[0].len())
            .field("normal", &self.levels[1].len())
            .field("low", &self.levels[2].len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    /// Pops everything, requeueing each popped item at the back of its level `rounds` times
    /// (a tasklet that calls `schedule()`), and returns the order of picks.
    fn run(queue: &mut RunQueue<(char, Priority, u32)>) -> String {
        let mut order = String::new();
        while let Some((name, priority, left)) = queue.pop_front() {
            order.push(name);
            if left > 1 {
                queue.push_back((name, priority, left - 1), priority);
            }
        }
        order
    }

    #[test]
    fn one_level_is_plain_round_robin() {
        let mut q = RunQueue::new();
        for name in ['a', 'b', 'c'] {
            q.push_back((name, Normal, 3), Normal);
        }
        assert_eq!(run(&mut q), "abcabcabc");
        // Any single level behaves the same.
        for name in ['a', 'b'] {
            q.push_back((name, Low, 2), Low);
        }
        assert_eq!(run(&mut q), "abab");
    }

    #[test]
    fn push_front_goes_first_within_its_level_only() {
        let mut q = RunQueue::new();
        q.push_back(('h', High, 1), High);
        q.push_back(('n', Normal, 1), Normal);
        q.push_front(('f', Normal, 1), Normal);
        assert_eq!(run(&mut q), "hfn");
    }

    #[test]
    fn higher_levels_run_first() {
        let mut q = RunQueue::new();
        q.push_back(('l', Low, 1), Low);
        q.push_back(('n', Normal, 1), Normal);
        q.push_back(('h', High, 1), High);
        q.push_back(('i', High, 1), High);
        assert_eq!(run(&mut q), "hinl");
    }

    #[test]
    fn a_busy_high_tasklet_cannot_starve_normal_or_low() {
        let mut q = RunQueue::new();
        q.push_back(('H', High, 30), High);
        q.push_back(('n', Normal, 2), Normal);
        q.push_back(('l', Low, 1), Low);
        // n waits 8 picks of H, then runs; l has then been passed over 9 times and runs next;
        // n, passed over for l, waits 7 more picks of H.
        let order = run(&mut q);
        assert_eq!(&order[..10], "HHHHHHHHnl", "{order}");
        assert_eq!(&order[10..18], "HHHHHHHn", "{order}");
        assert_eq!(order.len(), 33);
    }

    #[test]
    fn low_gets_one_pick_in_nine_against_busy_higher_levels() {
        let mut q = RunQueue::new();
        q.push_back(('H', High, 1000), High);
        q.push_back(('N', Normal, 1000), Normal);
        q.push_back(('l', Low, 1000), Low);
        let order = run(&mut q);
        let window: String = order.chars().take(900).collect();
        let lows = window.matches('l').count();
        let normals = window.matches('N').count();
        assert!(lows >= 900 / 9 - 1, "low ran {lows} times in 900 picks: {window}");
        assert!(normals >= 900 / 9 - 1, "normal ran {normals} times in 900 picks");
        // And it is bounded: no run of more than STARVATION_LIMIT picks without an `l` while
        // `l` is runnable.
        let longest_gap = window.split('l').map(str::len).max().unwrap();
        assert!(longest_gap <= STARVATION_LIMIT as usize + 1, "gap {longest_gap}: {window}");
    }

    #[test]
    fn skip_counts_restart_when_a_level_empties() {
        let mut q = RunQueue::new();
        q.push_back(('H', High, 5), High);
        q.push_back(('n', Normal, 1), Normal);
        assert_eq!(run(&mut q), "HHHHHn");
        // n's level emptied; a new normal tasklet waits a full 8 picks again.
        q.push_back(('H', High, 20), High);
        q.push_back(('m', Normal, 1), Normal);
        let order = run(&mut q);
        assert_eq!(&order[..9], "HHHHHHHHm", "{order}");
    }

    #[test]
    fn remove_first_finds_an_item_on_any_level() {
        let mut q = RunQueue::new();
        q.push_back(1, Normal);
        q.push_back(2, Low);
        q.push_back(3, High);
        assert_eq!(q.len(), 3);
        assert_eq!(q.remove_first(|&x| x == 2), Some(2));
        assert_eq!(q.remove_first(|&x| x == 2), None);
        assert_eq!((q.pop_front(), q.pop_front(), q.pop_front()), (Some(3), Some(1), None));
    }
}
