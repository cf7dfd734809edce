//! The per-thread dispatcher: the ready queue, the task registry, the run
//! loop and shutdown.
//!
//! - [`config`]: [`Config`](crate::Config) and [`dispatch`](crate::dispatch), which build a dispatcher and run it;
//! - [`context`]: the thread's current dispatcher and tasklet, and the
//!   switch out of a tasklet that blocks or yields (every blocking call of
//!   the runtime ends there);
//! - [`ready`]: the ready queue;
//! - [`time`]: `sleep`, `yield_now`, `timeout`, `spawn_later` and `spawn_loop`;
//! - [`spawn`]: a tasklet's allocation, coroutine and root frame.

use std::cell::{Cell, RefCell};
use std::io;
use std::panic::{self, AssertUnwindSafe, Location};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corosensei::CoroutineResult;

use crate::hub::{Hub, Wake};
use crate::slots::Slots;
use crate::stack::{self, TaskletStack};
use crate::task::error::JoinError;
use crate::task::header;
use crate::task::header::{self as task, Interrupt, State};
use crate::task::id::TaskletId;
use crate::task::raw::TaskRef;
use crate::task::raw::TypedRef;
use context::{header_at, TaskPtr};
use ready::ReadyQueue;

pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod dump;
pub(crate) mod ready;
mod spawn;
mod stall;
pub(crate) mod time;

static NEXT_DISPATCHER_ID: AtomicU64 = AtomicU64::new(1);

/// How long `dispatch` lets killed tasklets' destructors block at exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Stacks a dispatcher keeps for immediate reuse.
const STACK_CACHE: usize = 64;

/// A dispatcher: one per thread while `dispatch` runs.
pub(crate) struct Dispatcher {
    pub(crate) id: u64,
    /// Tasklets to resume, in order. Invariant: only `Ready` tasklets, each at most once.
    ready: ReadyQueue,
    /// Owns every live tasklet (the ready queue and `current` borrow from it).
    tasks: RefCell<Slots<TaskRef>>,
    pub(crate) hub: Hub,
    stack_size: usize,
    /// Finished tasklets' default-size stacks, reused first (a `Vec` pop, no
    /// pool lookup); the thread's stack pool sits behind it.
    stack_cache: RefCell<Vec<TaskletStack>>,
    shutting_down: Cell<bool>,
    /// Late in shutdown: blocking calls of unwinding tasklets fail at once.
    no_block: Cell<bool>,
    /// During shutdown: some tasklet caught its kill `KILL_ROUNDS` times.
    kill_catchers: Cell<bool>,
    next_timeout: Cell<u64>,
    /// Counters and stall tracking for [`crate::stats`] and deadlock reports.
    pub(crate) obs: stall::DispatcherStats,
}

impl Dispatcher {
    /// A dispatcher whose tasklets get `stack_size`-byte stacks by default
    /// (already validated and rounded by `stack::round_stack_size`).
    fn new(
        stack_size: usize,
        stall_warning: Option<Option<Duration>>,
        idle_spin: Duration,
    ) -> io::Result<Dispatcher> {
        let id = NEXT_DISPATCHER_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Dispatcher {
            id,
            ready: ReadyQueue::new(),
            tasks: RefCell::new(Slots::new()),
            hub: Hub::new(id, idle_spin)?,
            stack_size,
            stack_cache: RefCell::new(Vec::with_capacity(STACK_CACHE)),
            shutting_down: Cell::new(false),
            no_block: Cell::new(false),
            kill_catchers: Cell::new(false),
            next_timeout: Cell::new(0),
            obs: stall::DispatcherStats::new(
                stall_warning.unwrap_or(Some(stall::DEFAULT_STALL_WARNING)),
            ),
        })
    }

    /// Wakes the registered tasklet at registry `slot` if it has id `id` and
    /// `epoch` is its current wait (see [`unpark`](Self::unpark)); `false` if the
    /// tasklet is gone. No reference count is taken.
    #[inline]
    pub(crate) fn unpark_slot(&self, slot: usize, id: TaskletId, epoch: u32, reason: Wake) -> bool {
        let p = match self.tasks.borrow().get(slot) {
            Some(t) if t.id == id => t.as_ptr(),
            _ => return false,
        };
        self.unpark_ptr(p, epoch, reason)
    }

    /// Kills the registered tasklet at registry `slot` if it has id `id`
    /// (a cross-thread kill, see `hub::TaskAddr::kill`).
    pub(crate) fn kill_slot(&self, slot: usize, id: TaskletId) {
        let task = match self.tasks.borrow().get(slot) {
            Some(t) if t.id == id => t.clone(),
            _ => return,
        };
        self.interrupt(&task, Interrupt::Kill);
    }

    /// Whether no tasklet is waiting to run.
    #[inline]
    pub(crate) fn ready_is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Whether `dispatch`'s first tasklet has returned and the rest are
    /// being killed (a tasklet spawned now is killed before it runs).
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Number of live tasklets.
    pub(crate) fn task_count(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Every live tasklet, in registry order (for dumps and reports).
    pub(crate) fn for_each_task(&self, mut f: impl FnMut(&task::Header)) {
        for (_, t) in self.tasks.borrow().iter() {
            f(t);
        }
    }

    /// The live tasklet with this id.
    pub(crate) fn find(&self, id: TaskletId) -> Option<TaskRef> {
        self.tasks
            .borrow()
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(_, t)| t.clone())
    }

    /// Tasklets queued to run so far, and the longest ready queue a pass took.
    pub(crate) fn ready_counts(&self) -> (u64, u64) {
        (self.ready.pushed(), self.ready.high_water())
    }

    /// Stacks kept warm: the dispatcher's cache plus the thread's pool.
    pub(crate) fn stacks_cached(&self) -> usize {
        self.stack_cache.borrow().len() + stack::pooled_warm()
    }

    fn register(&self, task: TaskRef) {
        let p = task.as_ptr();
        crate::watchdog::named(&task);
        if self.shutting_down.get() {
            task.interrupt.set(Some(Interrupt::Kill));
        }
        let slot = self.tasks.borrow_mut().insert(task);
        header_at(self, p).slot.set(slot);
        self.obs.spawned.set(self.obs.spawned.get() + 1);
        self.ready.push_back(p);
    }

    pub(crate) fn spawn<F, T>(
        &self,
        name: Option<String>,
        stack_size: Option<usize>,
        at: &'static Location<'static>,
        f: F,
    ) -> io::Result<TypedRef<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let stack = match stack_size {
            Some(n) if n != self.stack_size => TaskletStack::new(n)?,
            _ => self.default_stack()?,
        };
        let task = spawn::new_task(TaskletId::next(), name, stack, at, f);
        self.register(task.erased().clone());
        Ok(task)
    }

    fn spawn_main<F, T, D>(
        &self,
        at: &'static Location<'static>,
        f: F,
        deliver: D,
    ) -> io::Result<TaskRef>
    where
        F: FnOnce() -> T,
        D: FnOnce(Result<T, JoinError>),
    {
        let stack = self.default_stack()?;
        let task = spawn::new_task::<(), _>(
            TaskletId::next(),
            Some("main".to_owned()),
            stack,
            at,
            move || {
                deliver(panic::catch_unwind(AssertUnwindSafe(f)).map_err(JoinError::from_payload))
            },
        );
        let task: TaskRef = task.erased().clone();
        self.register(task.clone());
        Ok(task)
    }

    /// A stack of the dispatcher's default size, from the cache if possible.
    #[inline]
    fn default_stack(&self) -> io::Result<TaskletStack> {
        match self.stack_cache.borrow_mut().pop() {
            Some(s) => Ok(s),
            None => TaskletStack::new(self.stack_size),
        }
    }

    /// Keeps a finished tasklet's stack for the next spawn, or returns it to the pool.
    #[inline]
    fn recycle_stack(&self, stack: TaskletStack) {
        let mut cache = self.stack_cache.borrow_mut();
        if stack.size() == self.stack_size && cache.len() < STACK_CACHE {
            cache.push(stack);
        } else {
            drop(cache);
            drop(stack);
        }
    }

    /// Makes a blocked tasklet ready if `epoch` is its current wait.
    pub(crate) fn unpark(&self, task: &TaskRef, epoch: u32, reason: Wake) -> bool {
        self.unpark_ptr(task.as_ptr(), epoch, reason)
    }

    /// [`unpark`](Self::unpark) for a registered tasklet's header pointer.
    #[inline]
    fn unpark_ptr(&self, p: TaskPtr, epoch: u32, reason: Wake) -> bool {
        let h = header_at(self, p);
        if h.epoch.get() != epoch {
            return false;
        }
        match h.state.get() {
            State::Blocked => {
                h.wake_reason.set(reason);
                h.state.set(State::Ready);
                self.ready.push_back(p);
                true
            }
            State::Ready | State::Running => {
                h.notified.set(true);
                true
            }
            State::Done => false,
        }
    }

    /// Requests that `task` unwind at its next blocking point, waking it if parked.
    pub(crate) fn interrupt(&self, task: &TaskRef, what: Interrupt) {
        let h: &task::Header = task;
        if h.state.get() == State::Done {
            return;
        }
        let replace = match (h.interrupt.get(), what) {
            (None, _) => true,
            (Some(Interrupt::Kill), _) => false,
            (Some(Interrupt::Timeout(_)), Interrupt::Kill) => true,
            // An outer (older, smaller id) timeout overrides an inner one.
            (Some(Interrupt::Timeout(cur)), Interrupt::Timeout(new)) => new < cur,
        };
        if replace {
            h.interrupt.set(Some(what));
        }
        if h.state.get() == State::Blocked {
            h.state.set(State::Ready);
            self.ready.push_back(task.as_ptr());
        }
    }

    /// Ends the `timeout` scope `id` of `task`, opened while it was
    /// unwinding: its blocking calls fail from now on (see
    /// `Header::unwind_timeout`); the outermost such scope wins.
    pub(crate) fn interrupt_unwinding(&self, task: &TaskRef, id: u64) {
        let h: &task::Header = task;
        if h.state.get() == State::Done {
            return;
        }
        if h.unwind_timeout.get().is_none_or(|cur| id < cur.get()) {
            // Scope ids start at 1 (`next_timeout_id`).
            h.unwind_timeout.set(std::num::NonZeroU64::new(id));
        }
        // Route the tasklet's next check to the slow path.
        if h.interrupt.get().is_none() {
            h.interrupt.set(Some(Interrupt::Timeout(id)));
        }
        if h.state.get() == State::Blocked {
            h.state.set(State::Ready);
            self.ready.push_back(task.as_ptr());
        }
    }

    /// Notes that a tasklet caught its kill [`task::KILL_ROUNDS`] times; at
    /// `dispatch` exit such tasklets are abandoned (see `shutdown`).
    pub(crate) fn kill_caught_too_often(&self) {
        if self.shutting_down.get() {
            self.kill_catchers.set(true);
        }
    }

    /// Runs until the main tasklet finishes. `Err` reports a deadlock
    /// (naming every stuck tasklet and what it waits on).
    fn run(&self, main: &TaskRef) -> Result<(), String> {
        loop {
            self.run_passes(main);
            if main.state.get() == State::Done {
                return Ok(());
            }
            // One clock read for the stall tracking and the poll.
            let now = Instant::now();
            let limit = stall::stall_limit(self, now);
            if let Err(()) = self.hub.poll_until(self, true, limit, now) {
                return Err(stall::deadlock_report(self, false));
            }
            stall::after_poll(self)?;
        }
    }

    /// Runs passes over the ready queue for as long as tasklets are ready
    /// and the hub has nothing that could fire (no timer, no socket, no
    /// cross-thread wake-up), so polling it would be wasted; returns when the
    /// hub needs a poll, nothing is ready, or `main` finished.
    fn run_passes(&self, main: &TaskRef) {
        loop {
            self.run_pass();
            if self.ready_is_empty() || main.state.get() == State::Done || !self.hub.is_idle() {
                return;
            }
        }
    }

    /// Resumes every tasklet that was ready when the pass began.
    #[inline]
    fn run_pass(&self) {
        for p in self.ready.take() {
            self.run_task(p);
        }
    }

    #[inline(always)]
    fn run_task(&self, p: TaskPtr) {
        let h = header_at(self, p);
        if h.state.get() != State::Ready {
            return;
        }
        h.state.set(State::Running);
        header::set_current(Some(p));
        let _watch = crate::watchdog::running(h);
        let result = match h.coroutine.borrow_mut().as_mut() {
            #[cfg(not(tasklet_tsan))]
            Some(co) => co.resume(()),
            // ThreadSanitizer builds: run it as its own TSan fiber.
            #[cfg(tasklet_tsan)]
            Some(co) => h.tsan_fiber.run(|| h.describe(), || co.resume(())),
            None => CoroutineResult::Return(()),
        };
        header::set_current(None);
        if let CoroutineResult::Return(()) = result {
            self.finish(p);
        }
    }

    #[inline(never)]
    fn finish(&self, p: TaskPtr) {
        let h = header_at(self, p);
        h.state.set(State::Done);
        self.cancel_park_timer(h);
        // Drop the finished coroutine now: its stack goes back to the pool.
        let co = h.coroutine.borrow_mut().take();
        if let Some(co) = co {
            self.recycle_stack(co.into_stack());
        }
        #[cfg(tasklet_tsan)]
        h.tsan_fiber.destroy();
        if let Some(j) = h.joiner.take() {
            self.unpark_slot(j.slot as usize, j.id, j.epoch, Wake::Unparked);
        }
        crate::watchdog::finished(h);
        // Last: this may drop the final strong reference to the tasklet, so
        // `h` must not be used after it.
        let slot = h.slot.get();
        let task = self.tasks.borrow_mut().remove(slot);
        drop(task);
    }

    /// Kills every remaining tasklet and runs them until they have unwound.
    ///
    /// Their destructors may block (flush a socket, wait for a lock held by
    /// another dying tasklet), so the hub keeps serving them for up to
    /// [`SHUTDOWN_GRACE`]. After that, blocking calls in unwinding tasklets
    /// fail at once (`Err(Cancelled)`) so their remaining destructors still
    /// run; a tasklet that is still alive after that is abandoned with an
    /// error log (its stack is leaked, never freed while in use).
    fn shutdown(&self) {
        self.shutting_down.set(true);
        let grace = Instant::now() + SHUTDOWN_GRACE;
        let hard = grace + SHUTDOWN_GRACE;
        for round in 0.. {
            let live = self.live_tasks();
            if live.is_empty() {
                break;
            }
            if round >= 64 {
                self.ready.clear();
                self.abandon(live, "keep catching their kill unwind");
                break;
            }
            for t in &live {
                self.interrupt(t, Interrupt::Kill);
            }
            drop(live);
            loop {
                self.run_pass();
                if self.kill_catchers.replace(false) {
                    self.abandon_kill_catchers();
                }
                if self.task_count() == 0 {
                    break;
                }
                let now = Instant::now();
                if now >= hard {
                    // Still unwinding although every blocking call fails (and
                    // yields) by now: a destructor that loops forever.
                    self.ready.clear();
                    self.abandon(self.live_tasks(), "are still running destructors");
                    return;
                }
                if now >= grace && !self.no_block.replace(true) {
                    log::warn!(
                        "tasklet: {} tasklet(s) still unwinding {SHUTDOWN_GRACE:?} after \
                         dispatch returned; their blocking calls now fail",
                        self.task_count()
                    );
                }
                if self.ready.is_empty() && self.no_block.get() {
                    // Kill again: parked ones wake up and their calls fail.
                    break;
                }
                let limit = if self.no_block.get() { hard } else { grace };
                if self.hub.poll_until(self, true, Some(limit), now).is_err() {
                    // Nothing can wake the parked ones: stop waiting for them.
                    self.no_block.set(true);
                    break;
                }
            }
        }
        self.ready.clear();
    }

    /// Abandons the tasklets (all ready: they yield before each re-raise)
    /// that caught their kill [`task::KILL_ROUNDS`] times.
    #[cold]
    fn abandon_kill_catchers(&self) {
        let mut catchers = Vec::new();
        for p in self.ready.take() {
            let h = header_at(self, p);
            if h.kill_raises.get() >= task::KILL_ROUNDS {
                catchers.push(self.tasks.borrow().get(h.slot.get()).cloned());
            } else {
                self.ready.push_back(p);
            }
        }
        let catchers: Vec<TaskRef> = catchers.into_iter().flatten().collect();
        if !catchers.is_empty() {
            self.abandon(catchers, "keep catching their kill unwind");
        }
    }

    /// Every registered tasklet.
    fn live_tasks(&self) -> Vec<TaskRef> {
        self.tasks.borrow().iter().map(|(_, t)| t.clone()).collect()
    }

    /// Gives up on tasklets that outlived dispatch's exit (`why` ends the
    /// log line: they keep catching their kill, or their destructors never
    /// finish). None of them may be in the ready queue.
    fn abandon(&self, live: Vec<TaskRef>, why: &str) {
        log::error!(
            "tasklet: {} tasklet(s) still alive at dispatcher exit: they {why}; abandoning them \
             (their stacks are leaked, never resumed)",
            live.len()
        );
        for t in &live {
            let co = t.coroutine.borrow_mut().take();
            if let Some(co) = co {
                if co.started() {
                    // Unwinding it again could abort (it may be suspended in
                    // a destructor), so its stack is leaked instead: the
                    // coroutine is never resumed, so nothing on it runs or
                    // reads its captures again (spawned tasklets capture only
                    // `'static` data; the first tasklet, which may borrow from
                    // `dispatch`'s caller, has normally finished by now).
                    #[cfg(feature = "sanitizer")]
                    crate::sanitizer::keep_abandoned(&t.stack_info, t.as_ptr().as_ptr().cast());
                    std::mem::forget(co);
                } else {
                    drop(co);
                }
            }
            t.state.set(State::Done);
            self.cancel_park_timer(t);
        }
        let mut tasks = self.tasks.borrow_mut();
        for t in &live {
            tasks.remove(t.slot.get());
        }
    }
}
