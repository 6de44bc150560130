//! Tasklet handles and the builder that creates tasklets.
//!
//! A [`Tasklet<T>`] is a cheap, clonable, `!Send` handle to a microthread of the calling thread's
//! scheduler; `T` is what the tasklet's closure returns, delivered by [`Tasklet::join`]. The
//! handle does not own the tasklet: the scheduler keeps every unfinished tasklet alive, so
//! dropping all handles neither stops nor frees it (as with `std::thread::JoinHandle`).
//! [`current()`] returns a handle whose result type is erased, `Tasklet<dyn Any>`.

use std::any::Any;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::runqueue::Priority;
use crate::scheduler::{panic_message, scheduler, BlockedOn, Describe, Outcome, State, Task, Wake};
use crate::stack;

/// A handle to a tasklet: a stackful microthread scheduled cooperatively on the calling thread.
///
/// `T` is the type the tasklet's closure returns; [`current()`] gives handles of the erased type
/// `Tasklet<dyn Any>` (also the default), whose [`join`](Tasklet::join) returns `Box<dyn Any>`.
/// Handles are cheap to clone and compare by identity.
///
/// Tasklets never leave the thread that created them, so handles are neither `Send` nor `Sync`:
///
/// ```compile_fail
/// let t = tasklets::spawn(|| 1);
/// std::thread::spawn(move || t.join()); // error: `Rc<..>` cannot be sent between threads
/// ```
///
/// ```compile_fail
/// fn assert_sync<T: Sync>(_: &T) {}
/// assert_sync(&tasklets::current()); // error: handles are not `Sync` either
/// ```
///
/// # Examples
///
/// ```
/// let t = tasklets::spawn(|| {
///     tasklets::schedule();
///     6 * 7
/// });
/// assert!(t.is_scheduled() && !t.is_current());
/// tasklets::run();
/// assert!(!t.is_alive());
/// assert_eq!(t.join().unwrap(), 42);
/// ```
pub struct Tasklet<T: ?Sized + 'static = dyn Any> {
    task: Rc<Task>,
    _result: PhantomData<fn() -> Box<T>>,
}

impl<T: ?Sized> Tasklet<T> {
    pub(crate) fn from_task(task: Rc<Task>) -> Self {
        Tasklet { task, _result: PhantomData }
    }

    /// The tasklet's id, unique in the process (the main tasklet of each thread has one too).
    pub fn id(&self) -> u64 {
        self.task.id()
    }

    /// The name given with [`Builder::name`]; the main tasklet is called `"main"`.
    pub fn name(&self) -> Option<&str> {
        self.task.name()
    }

    /// The tasklet's [`Priority`] (`Normal` unless set with [`Builder::priority`] or
    /// [`set_priority`](Tasklet::set_priority)).
    pub fn priority(&self) -> Priority {
        self.task.priority()
    }

    /// Changes the tasklet's [`Priority`], the main tasklet's included. A tasklet waiting in
    /// the run queue moves to the back of its new level at once; a running, blocked or paused
    /// one uses it the next time it becomes runnable. Setting the priority it already has
    /// changes nothing (not even its place in the queue).
    ///
    /// # Examples
    ///
    /// ```
    /// use tasklets::Priority;
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    ///
    /// let turns = Rc::new(Cell::new(0));
    /// let counter = turns.clone();
    /// let background = tasklets::spawn(move || loop {
    ///     counter.set(counter.get() + 1);
    ///     tasklets::schedule();
    /// });
    /// background.set_priority(Priority::Low);
    /// assert_eq!(background.priority(), Priority::Low);
    /// // Main, at `Normal`, yields 90 times; the low tasklet still gets its bounded share.
    /// for _ in 0..90 {
    ///     tasklets::schedule();
    /// }
    /// assert!(turns.get() >= 90 / (tasklets::STARVATION_LIMIT as usize + 1));
    /// background.kill();
    /// ```
    pub fn set_priority(&self, priority: Priority) {
        scheduler().set_priority(&self.task, priority);
    }

    /// Whether the tasklet has not finished (it is runnable, blocked or paused).
    pub fn is_alive(&self) -> bool {
        self.task.state() != State::Finished
    }

    /// Whether the tasklet waits on a channel or a [`join`](Tasklet::join).
    pub fn is_blocked(&self) -> bool {
        matches!(self.task.state(), State::Blocked(_))
    }

    /// Whether the tasklet is runnable (the current one included) or blocked, as Stackless's
    /// `scheduled`.
    pub fn is_scheduled(&self) -> bool {
        matches!(self.task.state(), State::Runnable | State::Blocked(_))
    }

    /// Whether the tasklet is alive but neither runnable nor blocked: created with
    /// [`Builder::bind`], taken out with [`remove`](Tasklet::remove) or
    /// [`schedule_remove`](crate::schedule_remove). The main tasklet is paused while it is
    /// inside [`run`](crate::run).
    pub fn is_paused(&self) -> bool {
        self.task.state() == State::Paused
    }

    /// Whether this is the thread's main tasklet (the thread's own stack).
    pub fn is_main(&self) -> bool {
        self.task.is_main()
    }

    /// Whether this tasklet is the one running now.
    pub fn is_current(&self) -> bool {
        scheduler().is_current(&self.task)
    }

    /// Appends a paused tasklet to the end of the run queue (Stackless `insert`). Inserting a
    /// runnable tasklet does nothing.
    ///
    /// # Errors
    /// [`StateError::Blocked`] for a blocked tasklet, [`StateError::Dead`] for a finished one.
    pub fn insert(&self) -> Result<(), StateError> {
        scheduler().insert(&self.task)
    }

    /// Takes a runnable tasklet out of the run queue, leaving it paused until
    /// [`insert`](Tasklet::insert) (Stackless `remove`). Removing a paused tasklet does nothing.
    ///
    /// # Errors
    /// [`StateError::Current`] for the running tasklet (use
    /// [`schedule_remove`](crate::schedule_remove)), [`StateError::Blocked`] for a blocked one,
    /// [`StateError::Dead`] for a finished one.
    pub fn remove(&self) -> Result<(), StateError> {
        scheduler().remove(&self.task)
    }

    /// Switches to this tasklet now (inserting it if it is paused). The caller stays runnable
    /// and runs as soon as this tasklet gives up the CPU, before the tasklets queued ahead of
    /// it (Stackless `run`). Running the current tasklet does nothing.
    ///
    /// # Errors
    /// [`StateError::Blocked`] for a blocked tasklet, [`StateError::Dead`] for a finished one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// let log = Rc::new(RefCell::new(Vec::new()));
    /// let (l1, l2) = (log.clone(), log.clone());
    /// tasklets::spawn(move || l1.borrow_mut().push("first in queue"));
    /// let t = tasklets::spawn(move || l2.borrow_mut().push("run now"));
    /// t.run().unwrap();
    /// log.borrow_mut().push("caller");
    /// tasklets::run();
    /// assert_eq!(*log.borrow(), ["run now", "caller", "first in queue"]);
    /// ```
    pub fn run(&self) -> Result<(), StateError> {
        scheduler().run_task(&self.task)
    }

    /// Kills the tasklet now: its stack unwinds with the [`TaskletExit`](crate::TaskletExit)
    /// payload, running destructors; a blocked tasklet leaves its channel first (the balance
    /// moves back toward 0). The caller continues as soon as the killed tasklet gives up the
    /// CPU: normally when it has finished unwinding; if one of its destructors blocks (on a
    /// channel, say), the kill completes when that operation does, as in Stackless, and a second
    /// `kill()` meanwhile makes that operation fail (with a `Deadlock` error) rather than start
    /// a second unwind. Killing a finished tasklet does nothing; killing the current tasklet
    /// ends it (this call then does not return); a tasklet that never ran is dropped without
    /// running.
    ///
    /// # Panics
    /// Panics when called on the main tasklet, which cannot be killed. Built with
    /// `panic = "abort"`, killing a started tasklet prints why and aborts the process, since
    /// the kill is an unwind.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = tasklets::Channel::<i32>::new();
    /// let rx = ch.clone();
    /// let t = tasklets::spawn(move || rx.receive());
    /// tasklets::run(); // t blocks in receive
    /// assert_eq!(ch.balance(), -1);
    /// t.kill();
    /// assert_eq!(ch.balance(), 0);
    /// assert!(t.join().unwrap_err().is_killed());
    /// ```
    #[track_caller]
    pub fn kill(&self) {
        scheduler().kill(&self.task)
    }

    /// Waits for the tasklet to finish and takes its outcome (once; later joins of other
    /// handles of the same tasklet get [`JoinError::Taken`]).
    fn wait(&self) -> Result<Box<dyn Any>, JoinError> {
        let sched = scheduler();
        if !self.is_alive() {
            return outcome_to_result(&self.task);
        }
        if self.task.is_main() || sched.is_current(&self.task) {
            return Err(JoinError::Deadlock);
        }
        let me = sched.current_rc();
        me.set_state(State::Blocked(BlockedOn::Join(self.task.id())));
        self.task.add_joiner(me.clone());
        let registration = JoinRegistration { target: &self.task, joiner: &me };
        let wake = sched.park();
        drop(registration);
        match wake {
            Wake::Woken => outcome_to_result(&self.task),
            Wake::Never => Err(JoinError::Deadlock),
        }
    }

    /// Erases the result type, e.g. to keep handles of different tasklets in one collection.
    pub fn into_any(self) -> Tasklet {
        Tasklet::from_task(self.task)
    }
}

/// Takes a joiner out of its target's list when the join ends in any way but the target
/// finishing (killed while joining, deadlock).
struct JoinRegistration<'a> {
    target: &'a Task,
    joiner: &'a Task,
}

impl Drop for JoinRegistration<'_> {
    fn drop(&mut self) {
        self.target.remove_joiner(self.joiner);
    }
}

fn outcome_to_result(task: &Task) -> Result<Box<dyn Any>, JoinError> {
    match task.take_outcome() {
        Some(Outcome::Returned(value)) => Ok(value),
        Some(Outcome::ReturnedZst(again)) => Ok(again()),
        Some(Outcome::Panicked(payload)) => Err(JoinError::Panicked(payload)),
        Some(Outcome::Killed) => Err(JoinError::Killed),
        Some(Outcome::Taken) => Err(JoinError::Taken),
        None => unreachable!("a finished tasklet has an outcome"),
    }
}

impl<T: ?Sized + Joinable> Tasklet<T> {
    /// Waits for the tasklet to finish and returns what its closure returned (boxed as
    /// `Box<dyn Any>` for the erased handles that [`current()`] gives).
    ///
    /// A blocked tasklet waits; the main tasklet runs the others meanwhile.
    ///
    /// # Errors
    /// [`JoinError::Panicked`] with the panic payload, [`JoinError::Killed`],
    /// [`JoinError::Taken`] when another handle already took the result, and
    /// [`JoinError::Deadlock`] when the main tasklet would wait with nothing runnable (the
    /// target is blocked forever or paused), or a tasklet joins itself or the main tasklet.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = tasklets::spawn(|| panic!("boom"));
    /// let err = t.join().unwrap_err();
    /// assert!(err.is_panic());
    /// assert_eq!(err.to_string(), "tasklet panicked: boom");
    /// ```
    pub fn join(self) -> Result<T::Output, JoinError> {
        self.wait().map(T::from_any)
    }
}

/// Result types a [`Tasklet`] handle can be joined for: every `'static` type (the value comes
/// back as it was returned) and `dyn Any` (the value comes back boxed). Sealed.
pub trait Joinable: sealed::Sealed + 'static {
    /// What [`Tasklet::join`] returns on success.
    type Output;
    #[doc(hidden)]
    fn from_any(value: Box<dyn Any>) -> Self::Output;
}

mod sealed {
    pub trait Sealed {}
    impl<T: 'static> Sealed for T {}
    impl Sealed for dyn std::any::Any {}
}

impl<T: 'static> Joinable for T {
    type Output = T;
    fn from_any(value: Box<dyn Any>) -> T {
        match value.downcast::<T>() {
            Ok(value) => *value,
            Err(_) => unreachable!("a typed handle's tasklet returns its type"),
        }
    }
}

impl Joinable for dyn Any {
    type Output = Box<dyn Any>;
    fn from_any(value: Box<dyn Any>) -> Box<dyn Any> {
        value
    }
}

impl<T: ?Sized> Clone for Tasklet<T> {
    fn clone(&self) -> Self {
        Tasklet::from_task(self.task.clone())
    }
}

impl<T: ?Sized, U: ?Sized> PartialEq<Tasklet<U>> for Tasklet<T> {
    fn eq(&self, other: &Tasklet<U>) -> bool {
        Rc::ptr_eq(&self.task, &other.task)
    }
}

impl<T: ?Sized> Eq for Tasklet<T> {}

impl<T: ?Sized> fmt::Debug for Tasklet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasklet")
            .field("id", &self.task.id())
            .field("name", &self.task.name())
            .field("state", &self.task.state())
            .finish()
    }
}

/// Why [`Tasklet::insert`], [`remove`](Tasklet::remove) or [`run`](Tasklet::run) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// The tasklet is blocked on a channel or a join; only its partner can make it runnable.
    Blocked,
    /// The tasklet has finished.
    Dead,
    /// The tasklet is the running one.
    Current,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateError::Blocked => "the tasklet is blocked",
            StateError::Dead => "the tasklet has finished",
            StateError::Current => "the tasklet is the current one",
        })
    }
}

impl std::error::Error for StateError {}

/// Why [`Tasklet::join`] did not return a value.
#[non_exhaustive]
pub enum JoinError {
    /// The tasklet panicked; this is the payload, as `std::thread::JoinHandle::join` gives it.
    Panicked(Box<dyn Any + Send>),
    /// The tasklet was killed.
    Killed,
    /// Another handle already took the result.
    Taken,
    /// The main tasklet would wait with nothing runnable to finish the target, or a tasklet
    /// tried to join itself or the main tasklet.
    Deadlock,
}

impl JoinError {
    /// Whether the tasklet panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// Whether the tasklet was killed.
    pub fn is_killed(&self) -> bool {
        matches!(self, JoinError::Killed)
    }

    /// The panic payload, to re-raise with [`std::panic::resume_unwind`].
    ///
    /// # Errors
    /// Gives the error back when it is not a panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send>, JoinError> {
        match self {
            JoinError::Panicked(payload) => Ok(payload),
            other => Err(other),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(payload) => {
                f.debug_tuple("Panicked").field(&panic_message(&**payload)).finish()
            }
            JoinError::Killed => f.write_str("Killed"),
            JoinError::Taken => f.write_str("Taken"),
            JoinError::Deadlock => f.write_str("Deadlock"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(payload) => write!(f, "tasklet panicked: {}", panic_message(&**payload)),
            JoinError::Killed => f.write_str("tasklet was killed"),
            JoinError::Taken => f.write_str("tasklet result was already taken by another join"),
            JoinError::Deadlock => {
                f.write_str("deadlock: the joined tasklet can never finish while the caller waits")
            }
        }
    }
}

impl std::error::Error for JoinError {}

/// Configures a tasklet before creating it: name and stack size.
///
/// # Examples
///
/// ```
/// let t = tasklets::Builder::new()
///     .name("worker")
///     .stack_size(64 * 1024)
///     .bind(|| "bound, not scheduled")?;
/// assert!(t.is_paused() && t.is_alive());
/// t.insert().unwrap();
/// tasklets::run();
/// assert_eq!(t.join().unwrap(), "bound, not scheduled");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a Builder does nothing until spawn or bind is called"]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
    priority: Priority,
}

impl Builder {
    /// A builder with no name and the thread's default stack size.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the tasklet (shown in `Debug`, logs, panics and stack overflow reports).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Usable stack size in bytes, rounded up to whole pages and to at least
    /// [`MIN_STACK_SIZE`](crate::MIN_STACK_SIZE). The default is the thread's
    /// ([`set_default_stack_size`](crate::set_default_stack_size)), initially
    /// [`DEFAULT_STACK_SIZE`](crate::DEFAULT_STACK_SIZE).
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.stack_size = Some(size);
        self
    }

    /// The tasklet's [`Priority`]; `Normal` by default (priorities are not inherited from the
    /// spawning tasklet).
    pub fn priority(mut self, priority: Priority) -> Builder {
        self.priority = priority;
        self
    }

    /// Creates the tasklet and appends it to the end of the run queue (Stackless
    /// `tasklet(f)()`).
    ///
    /// # Errors
    /// When no stack can be had: the stack size is over [`MAX_STACK_SIZE`](crate::MAX_STACK_SIZE)
    /// (`InvalidInput`), address space is exhausted, or guard pages cannot be installed (the
    /// message names the cause and the fix).
    #[track_caller]
    pub fn spawn<F, T>(self, f: F) -> io::Result<Tasklet<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let t = self.bind(f)?;
        scheduler().push_back(t.task.clone());
        Ok(t)
    }

    /// Creates the tasklet paused, not scheduled (Stackless `bind` + `setup` without `insert`);
    /// [`Tasklet::insert`] or [`Tasklet::run`] starts it.
    ///
    /// # Errors
    /// As [`Builder::spawn`].
    #[track_caller]
    pub fn bind<F, T>(self, f: F) -> io::Result<Tasklet<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let sched = scheduler();
        // The default size was rounded when it was set.
        let size = match self.stack_size {
            Some(size) => stack::usable_size(size)?,
            None => sched.default_stack_size(),
        };
        let task = sched.create(f, self.name, size)?;
        task.set_spawned_at(std::panic::Location::caller());
        if self.priority != Priority::Normal {
            sched.set_priority(&task, self.priority); // not queued yet: only records it
        }
        Ok(Tasklet::from_task(task))
    }
}

/// Creates a tasklet running `f` and appends it to the end of the calling thread's run queue
/// (Stackless `tasklet(f)()`). It starts when the current tasklet gives up the CPU
/// ([`schedule`](crate::schedule), a blocking channel operation, [`run`](crate::run)).
///
/// # Panics
/// Panics where `std::thread::spawn` would: when no stack can be had (see [`Builder::spawn`]
/// for the error that explains why).
///
/// # Examples
///
/// ```
/// let t = tasklets::spawn(|| "hello from a tasklet".len());
/// tasklets::run();
/// assert_eq!(t.join().unwrap(), 20);
/// ```
#[track_caller]
pub fn spawn<F, T>(f: F) -> Tasklet<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    match Builder::new().spawn(f) {
        Ok(t) => t,
        Err(err) => panic!("failed to spawn tasklet: {err}"),
    }
}

/// A handle to the running tasklet; on a thread that never spawned one, the main tasklet.
///
/// # Examples
///
/// ```
/// let main = tasklets::current();
/// assert!(main.is_main() && main.is_current());
/// let t = tasklets::spawn(|| tasklets::current().is_main());
/// tasklets::run();
/// assert_eq!(t.join().unwrap(), false);
/// ```
pub fn current() -> Tasklet {
    Tasklet::from_task(scheduler().current_rc())
}

impl<T: ?Sized> fmt::Display for Tasklet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tasklet {}", Describe(self.task.id(), self.task.name()))
    }
}
