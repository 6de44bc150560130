//! Killing a tasklet: the `TaskletExit` unwind, kills deferred across C frames, and the
//! per-tasklet record of who is unwinding.
//!
//! # Killing
//!
//! `kill()` sets the target's `kill_pending` flag and switches to it at once, with the caller
//! first in the run queue; the target's suspension point sees the flag and unwinds with the
//! [`TaskletExit`] payload (`resume_unwind`, so no panic hook runs), which the tasklet's root
//! catches. Destructors on its stack run, including the guards that take it out of wait lists.
//! Then the caller continues. A tasklet that never started is not switched to at all: its
//! closure, stored in its `Task`, is dropped in place and its stack reservation released.
//!
//! # Deferred kills
//!
//! Code called through a C ABI frame (the `tasklets-shims` hooks, reached from std's
//! `extern "C"` call to `recv`) must not unwind: unwinding into a frame that was compiled as
//! a non-unwinding call aborts the process. Such code runs its waits inside
//! [`crate::io::with_kills_deferred`], which counts on the task (`defer_kills`). A kill that
//! finds the tasklet parked there makes the wait return [`Wake::Never`] (so the blocking call
//! fails with an error instead of unwinding) and stays pending; any later wait in the scope
//! fails at once without parking. The kill is delivered at the first switch point outside
//! the scope, or, if the tasklet returns first, by recording it as killed.
//!
//! # Unwinding is per tasklet
//!
//! A kill that finds its target already unwinding (a destructor on its stack blocked) must
//! not start a second unwind (that aborts): the wait fails with [`Wake::Never`] instead.
//! `std::thread::panicking()` cannot say which tasklet is unwinding: its count is per OS
//! thread, so a tasklet suspended mid-unwind makes it true for all others, whose kills were
//! then lost. Each switch therefore records on the task leaving the CPU whether it is
//! unwinding (`Task::unwinding`, `note_unwinding`), and counts such suspended tasks; the
//! current tasklet is unwinding when the thread panics and either no suspended task accounts
//! for it or the tasklet itself was marked. Rejected: a panic hook marking the panicking
//! tasklet (it would replace or have to wrap the user's hook, and `resume_unwind` runs none).

use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::rc::Rc;

use super::task::{Describe, Outcome, State, Task};
use super::{Requeue, Scheduler, Wake};

/// The panic payload that [`Tasklet::kill`](crate::Tasklet::kill) unwinds a tasklet with.
///
/// It is raised with [`std::panic::resume_unwind`], so the panic hook does not run and nothing
/// is printed; the tasklet's root catches it and the tasklet ends as *killed*. Code that catches
/// unwinds inside a tasklet (`catch_unwind`) can recognise it with `payload.is::<TaskletExit>()`
/// and should re-raise it with `resume_unwind`, as Python code re-raises `TaskletExit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskletExit;

impl fmt::Display for TaskletExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tasklet killed")
    }
}

/// Unwinds the current tasklet, `task`, with [`TaskletExit`]. Built with `panic = "abort"`,
/// unwinding is impossible and `resume_unwind` would abort without a word: say why first.
fn unwind_killed(task: &Task) -> ! {
    if cfg!(panic = "abort") {
        let _ = io::Write::write_fmt(
            &mut io::stderr().lock(),
            format_args!("{}\n", kill_under_abort_message(task.id(), task.name())),
        );
    }
    panic::resume_unwind(Box::new(TaskletExit))
}

/// What a `panic = "abort"` build prints before aborting at the kill of a started tasklet.
fn kill_under_abort_message(id: u64, name: Option<&str>) -> String {
    format!(
        "tasklets: tasklet {} was killed, but this program is built with panic = \"abort\": killing a \
         tasklet that has started unwinds its stack, which needs panic = \"unwind\"; aborting",
        Describe(id, name)
    )
}

impl Scheduler {
    /// The current tasklet reaches a switch point with a deferred kill pending: deliver it if
    /// kills are no longer deferred; otherwise fail a wait at once (blocking could only delay
    /// the kill) and let a yield go ahead.
    #[cold]
    pub(super) fn deferred_kill(&self, me: &Task, requeue: Requeue) -> Wake {
        let requeue = if requeue == Requeue::Lent {
            // The wait fails without switching: `current` needs a count of its own again (the
            // wait list keeps the lent one until the waiter's guard removes it).
            // SAFETY: `me` is the running task, alive (see `current`), and came from
            // `Rc::into_raw` of an `Rc<Task>`.
            unsafe { Rc::increment_strong_count(ptr::from_ref(me)) };
            Requeue::No
        } else {
            requeue
        };
        if me.defer_kills.get() == 0 {
            return self.killed(me);
        }
        me.state.set(State::Runnable);
        if requeue == Requeue::No {
            return Wake::Never;
        }
        me.kill_pending.set(false);
        let wake = self.switch(requeue, None);
        me.kill_pending.set(true);
        wake
    }

    /// Delivers a kill that is pending on the current tasklet now, if kills are not deferred
    /// there: the tasklet unwinds, or gets [`Wake::Never`] if it is already unwinding (the
    /// caller fails its operation). [`Wake::Woken`] when no kill can be delivered. For
    /// operations that let a wait complete before its kill (see `sync`).
    #[inline]
    pub(crate) fn deliver_pending_kill(&self) -> Wake {
        let me = self.current();
        if me.kill_pending.get() && me.defer_kills.get() == 0 {
            return self.killed(me);
        }
        Wake::Woken
    }

    /// The current tasklet was resumed to be killed: unwind it, unless it is already unwinding.
    #[cold]
    pub(super) fn killed(&self, me: &Task) -> Wake {
        if me.defer_kills.get() > 0 {
            // Inside `with_kills_deferred`: fail the wait, keep the kill for later.
            me.state.set(State::Runnable);
            return Wake::Never;
        }
        me.kill_pending.set(false);
        if self.is_unwinding(me) {
            // Killed again while unwinding (a destructor blocked): do not start a second
            // unwind, which would abort; let the blocking operation fail instead.
            me.state.set(State::Runnable);
            return Wake::Never;
        }
        unwind_killed(me)
    }

    /// Records whether `me`, about to switch away, is unwinding, and counts it among the
    /// suspended unwinders if so (the caller uncounts it once resumed). `std::thread::panicking`
    /// is per OS thread: while some switched-away tasklet is unwinding it is true for every
    /// tasklet. So it says `me` is unwinding only when no suspended task is; otherwise (two
    /// unwinds at once on one thread) `me` keeps what was known at its previous switch.
    #[inline(always)]
    pub(super) fn note_unwinding(&self, me: &Task) -> bool {
        if !std::thread::panicking() {
            me.unwinding.set(false);
            return false;
        }
        self.note_unwinding_slow(me)
    }

    #[cold]
    fn note_unwinding_slow(&self, me: &Task) -> bool {
        if self.suspended_unwinding.get() == 0 {
            me.unwinding.set(true);
        }
        if me.unwinding.get() {
            self.suspended_unwinding.set(self.suspended_unwinding.get() + 1);
        }
        me.unwinding.get()
    }

    /// Whether the current tasklet `me` is unwinding: the thread is panicking and the unwind is
    /// not (only) a switched-away tasklet's (see `note_unwinding`).
    pub(super) fn is_unwinding(&self, me: &Task) -> bool {
        std::thread::panicking() && (self.suspended_unwinding.get() == 0 || me.unwinding.get())
    }

    /// `kill()`: unwinds `task` now (see the module comment).
    #[track_caller]
    pub(crate) fn kill(&self, task: &Rc<Task>) {
        if task.state.get() == State::Finished {
            return;
        }
        assert!(!task.is_main(), "tasklets::Tasklet::kill: the main tasklet cannot be killed");
        if self.is_current(task) {
            unwind_killed(task);
        }
        if task.state.get() == State::Runnable {
            self.unqueue(task);
        }
        if let Some(start) = task.start.take() {
            // Never ran: drop the closure in place (in the task), nothing to unwind. A
            // destructor that panics must not leave a started-looking task behind (a later
            // switch to it would run a dropped closure): finish it first, then re-raise.
            // SAFETY: `create` wrote the closure there with this drop function; with `start`
            // now `None` nothing else will read or drop it.
            let dropped =
                panic::catch_unwind(AssertUnwindSafe(|| unsafe { (start.drop)(task.closure.ptr()) }));
            self.finish(task, Outcome::Killed);
            self.reap(task.clone());
            if let Err(payload) = dropped {
                panic::resume_unwind(payload);
            }
            return;
        }
        task.kill_pending.set(true);
        self.switch_now(task.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run;
    use crate::scheduler::scheduler;
    use std::cell::Cell;

    /// `panic = "abort"` builds aborted silently at a kill: the message printed first says why
    /// (the abort path itself needs a `panic = "abort"` build, which the suite does not make).
    #[test]
    fn kill_under_panic_abort_says_why_before_aborting() {
        let message = kill_under_abort_message(7, Some("worker"));
        assert!(message.contains("tasklet 7 'worker' was killed"), "{message}");
        assert!(message.contains("panic = \"abort\"") && message.contains("panic = \"unwind\""), "{message}");
    }

    /// Killing a never-started tasklet drops its closure in place; a panicking destructor
    /// propagates to the killer and still leaves the tasklet finished, its stack released.
    #[test]
    fn kill_before_start_drops_the_closure_even_if_its_drop_panics() {
        struct Bomb(Rc<Cell<u32>>);
        impl Drop for Bomb {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
                panic!("bomb");
            }
        }
        let drops = Rc::new(Cell::new(0));
        let bomb = Bomb(drops.clone());
        let t = crate::spawn(move || {
            let _bomb = &bomb;
            unreachable!("never runs");
        });
        let live = scheduler().tasks.borrow().live;
        let caught = panic::catch_unwind(AssertUnwindSafe(|| t.kill()));
        assert!(caught.is_err());
        assert_eq!(drops.get(), 1);
        assert!(!t.is_alive());
        assert_eq!(scheduler().tasks.borrow().live, live - 1);
        run(); // nothing left to run; it must not be switched to
        assert!(t.join().unwrap_err().is_killed());
    }
}
