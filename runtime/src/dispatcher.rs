//! The per-thread dispatcher: ready queue, task registry, the run loop,
//! shutdown, and the scheduling primitives built directly on it
//! (`sleep`, `yield_now`, `timeout`, `spawn_later`, `spawn_loop`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe, Location};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corosensei::CoroutineResult;

use crate::context::{self, header_at, Enter, ReadyQueue, TaskPtr};
use crate::hub::{Hub, TimerAction, Unparker, Wake};
use crate::observe::{self, WaitOn};
use crate::overflow;
use crate::slab::Slab;
use crate::stack::{self, TaskletStack};
use crate::task::{self, Interrupt, JoinError, JoinHandle, State, TaskRef, TaskletId, Unwind};
use crate::timer::TimerKey;

static NEXT_DISPATCHER_ID: AtomicU64 = AtomicU64::new(1);

/// How long `dispatch` lets killed tasklets' destructors block at exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Stacks a dispatcher keeps for immediate reuse.
const STACK_CACHE: usize = 64;

/// Runtime settings for one dispatcher, applied with [`Config::dispatch`].
///
/// ```
/// let v = tasklet::Config::new()
///     .stack_size(64 * 1024)
///     .dispatch(|| tasklet::spawn(|| 5).join().unwrap());
/// assert_eq!(v, 5);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Config {
    stack_size: Option<usize>,
    stack_pool: Option<usize>,
    pub(crate) max_blocking: Option<Option<Duration>>,
    pub(crate) stall_warning: Option<Option<Duration>>,
}

impl Config {
    /// Defaults: stack size from `TASKLET_STACK_SIZE` or 256 KiB.
    pub fn new() -> Config {
        Config::default()
    }

    /// Default stack size in bytes for tasklets spawned without
    /// [`Builder::stack_size`](crate::Builder::stack_size), including the
    /// dispatcher's first tasklet (at least 48 KiB, as there).
    pub fn stack_size(mut self, bytes: usize) -> Config {
        self.stack_size = Some(bytes);
        self
    }

    /// How many freed stacks per size the thread keeps warm for reuse
    /// (default 1024). Stacks freed beyond it return their memory to the OS.
    pub fn stack_pool_size(mut self, stacks: usize) -> Config {
        self.stack_pool = Some(stacks);
        self
    }

    /// How long every tasklet may stay blocked, with no timer armed and no
    /// socket registered, before the dispatcher warns (once) that only
    /// another thread could still wake them — a likely deadlock it cannot
    /// prove (default 10 s, `None` disables). When no other thread exists
    /// that could reach what they wait on, `dispatch` panics instead, at
    /// once; see [`dispatch`].
    pub fn stall_warning(mut self, after: Option<Duration>) -> Config {
        self.stall_warning = Some(after);
        self
    }

    /// Runs a dispatcher on this thread with `f` as its first tasklet; see [`dispatch`].
    ///
    /// # Panics
    /// As [`dispatch`], and if the configured stack size is unusable (larger
    /// than the 1 TiB limit); the message names `Config::stack_size`.
    #[track_caller]
    pub fn dispatch<F, T>(self, f: F) -> T
    where
        F: FnOnce() -> T,
    {
        run_dispatcher(self, Location::caller(), f)
    }
}

/// Runs a dispatcher on the calling thread with `f` as its first tasklet and
/// returns `f`'s value when `f` returns (concurrence's `dispatch`).
///
/// Tasklets still alive when `f` returns are killed and unwound (their
/// destructors run) before `dispatch` returns. If `f` panics, the panic is
/// re-raised from `dispatch` after that cleanup.
///
/// ```
/// use std::time::Duration;
/// let total = tasklet::dispatch(|| {
///     let a = tasklet::spawn(|| { tasklet::sleep(Duration::from_millis(20)); 1 });
///     let b = tasklet::Builder::new().name("b").stack_size(128 * 1024).spawn(|| 2).unwrap();
///     a.join().unwrap() + b.join().unwrap()
/// });
/// assert_eq!(total, 3);
/// ```
///
/// # Panics
/// If this thread already runs a dispatcher (no nesting), if the first
/// tasklet panics, or if every tasklet is blocked with nothing left that
/// could wake them: no timer, no socket, and nothing another thread could
/// reach — either no cross-thread waker exists at all, or no thread other
/// than this one and the runtime's idle helpers exists in the process (like
/// gevent's `LoopExit: This operation would block forever`). The message
/// names every stuck tasklet and what it waits on. When other threads exist
/// the deadlock cannot be proved; the dispatcher then warns once after
/// [`Config::stall_warning`] instead.
#[track_caller]
pub fn dispatch<F, T>(f: F) -> T
where
    F: FnOnce() -> T,
{
    run_dispatcher(Config::default(), Location::caller(), f)
}

#[track_caller]
fn run_dispatcher<F, T>(config: Config, at: &'static Location<'static>, f: F) -> T
where
    F: FnOnce() -> T,
{
    if context::is_set() {
        panic!(
            "tasklet::dispatch called while this thread already runs a dispatcher: \
             nested dispatch is not supported (use tasklet::spawn inside it)"
        );
    }
    overflow::install();
    context::install_panic_hook();
    #[cfg(feature = "hook")]
    crate::hook::init();
    let _alt = match overflow::AltStack::ensure() {
        Ok(a) => Some(a),
        Err(e) => {
            log::warn!("tasklet: no alternate signal stack ({e}); stack overflows will not be reported by name");
            None
        }
    };
    if let Some(n) = config.stack_pool {
        stack::set_pool_limit(n);
    }
    let stack_size = match stack::round_stack_size(
        config.stack_size.unwrap_or_else(stack::default_stack_size),
    ) {
        Ok(n) => n,
        Err(e) => panic!("tasklet::dispatch: invalid Config::stack_size: {e}"),
    };
    let d = match Dispatcher::new(stack_size, config.stall_warning) {
        Ok(d) => d,
        Err(e) => panic!("tasklet::dispatch: cannot create the event loop: {e}"),
    };
    let _watchdog = crate::watchdog::register(d.id, config.max_blocking);
    let mut out: Option<Result<T, JoinError>> = None;
    let outcome = {
        let _enter = Enter::new(&d);
        let out_ref = &mut out;
        let main = match d.spawn_main(at, f, move |r| *out_ref = Some(r)) {
            Ok(m) => m,
            Err(e) => panic!("tasklet::dispatch: cannot create the first tasklet: {e}"),
        };
        let outcome = d.run(&main);
        d.shutdown();
        outcome
    };
    drop(d);
    if let Err(report) = outcome {
        panic!("tasklet::dispatch: deadlock: {report}");
    }
    match out {
        Some(Ok(v)) => v,
        Some(Err(e)) => match e.try_into_panic() {
            Ok(payload) => panic::resume_unwind(payload),
            Err(e) => panic!("tasklet::dispatch: the first tasklet ended abnormally: {e}"),
        },
        None => panic!("tasklet::dispatch: the first tasklet did not finish"),
    }
}

/// A dispatcher: one per thread while `dispatch` runs.
pub(crate) struct Dispatcher {
    pub(crate) id: u64,
    /// Tasklets to resume, in order. Invariant: only `Ready` tasklets, each at most once.
    ready: ReadyQueue,
    /// Owns every live tasklet (the ready queue and `current` borrow from it).
    tasks: RefCell<Slab<TaskRef>>,
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
    pub(crate) obs: observe::DispatcherStats,
}

impl Dispatcher {
    /// A dispatcher whose tasklets get `stack_size`-byte stacks by default
    /// (already validated and rounded by `stack::round_stack_size`).
    fn new(stack_size: usize, stall_warning: Option<Option<Duration>>) -> io::Result<Dispatcher> {
        let id = NEXT_DISPATCHER_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Dispatcher {
            id,
            ready: ReadyQueue::new(),
            tasks: RefCell::new(Slab::new()),
            hub: Hub::new(id)?,
            stack_size,
            stack_cache: RefCell::new(Vec::with_capacity(STACK_CACHE)),
            shutting_down: Cell::new(false),
            no_block: Cell::new(false),
            kill_catchers: Cell::new(false),
            next_timeout: Cell::new(0),
            obs: observe::DispatcherStats::new(
                stall_warning.unwrap_or(Some(observe::DEFAULT_STALL_WARNING)),
            ),
        })
    }

    /// The running tasklet. Panics if called from the dispatcher itself.
    pub(crate) fn current_task(&self) -> TaskRef {
        match context::current_task() {
            Some(t) => t,
            None => panic!("{}", context::OUTSIDE),
        }
    }

    /// The running tasklet's header. Panics if called from the dispatcher itself.
    #[inline]
    pub(crate) fn current_header(&self) -> &task::Header {
        match context::current() {
            Some(p) => header_at(self, p),
            None => panic!("{}", context::OUTSIDE),
        }
    }

    /// An unparker for the running tasklet's current wait.
    pub(crate) fn current_unparker(&self) -> Unparker {
        let task = self.current_task();
        let epoch = task.epoch.get();
        Unparker::new(task, epoch)
    }

    /// Wakes the registered tasklet at registry `slot` if it has id `id` and
    /// `epoch` is its current wait (see [`wake`](Self::wake)); `false` if the
    /// tasklet is gone. No reference count is taken.
    #[inline]
    pub(crate) fn wake_slot(&self, slot: usize, id: TaskletId, epoch: u32, reason: Wake) -> bool {
        let p = match self.tasks.borrow().get(slot) {
            Some(t) if t.id == id => t.as_ptr(),
            _ => return false,
        };
        self.wake_ptr(p, epoch, reason)
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
    ) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let stack = match stack_size {
            Some(n) if n != self.stack_size => TaskletStack::new(n)?,
            _ => self.default_stack()?,
        };
        let task = task::new_task(TaskletId::next(), name, stack, at, f);
        self.register(task.erased().clone());
        Ok(JoinHandle::new(task))
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
        let task = task::new_task::<(), _>(
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
    pub(crate) fn wake(&self, task: &TaskRef, epoch: u32, reason: Wake) -> bool {
        self.wake_ptr(task.as_ptr(), epoch, reason)
    }

    /// [`wake`](Self::wake) for a registered tasklet's header pointer.
    #[inline]
    fn wake_ptr(&self, p: TaskPtr, epoch: u32, reason: Wake) -> bool {
        let h = header_at(self, p);
        if h.epoch.get() != epoch {
            return false;
        }
        match h.state.get() {
            State::Blocked => {
                h.wake.set(reason);
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
        if h.unwind_timeout.get().is_none_or(|cur| id < cur) {
            h.unwind_timeout.set(Some(id));
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
            let limit = observe::stall_limit(self);
            if let Err(()) = self.hub.poll_until(self, true, limit) {
                return Err(observe::deadlock_report(self, false));
            }
            observe::after_poll(self)?;
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
        context::set_current(Some(p));
        let _watch = crate::watchdog::running(h);
        let result = match h.coroutine.borrow_mut().as_mut() {
            Some(co) => co.resume(()),
            None => CoroutineResult::Return(()),
        };
        context::set_current(None);
        if let CoroutineResult::Return(()) = result {
            self.finish(p);
        }
    }

    #[inline(never)]
    fn finish(&self, p: TaskPtr) {
        let h = header_at(self, p);
        h.state.set(State::Done);
        // Drop the finished coroutine now: its stack goes back to the pool.
        let co = h.coroutine.borrow_mut().take();
        if let Some(co) = co {
            self.recycle_stack(co.into_stack());
        }
        let joiner = h.joiner.borrow_mut().take();
        if let Some(j) = joiner {
            j.unpark();
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
    /// fail at once (`Err(Interrupted)`) so their remaining destructors still
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
                if self.hub.poll_until(self, true, Some(limit)).is_err() {
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
                    std::mem::forget(co);
                } else {
                    drop(co);
                }
            }
            t.state.set(State::Done);
        }
        let mut tasks = self.tasks.borrow_mut();
        for t in &live {
            tasks.remove(t.slot.get());
        }
    }

    /// Suspends the running tasklet until woken; see [`crate::hub::park`].
    ///
    /// Inlined into its callers (with [`crate::hub::park`]): every function
    /// frame between the switch and the code that resumes running after it
    /// costs a mispredicted return, because the CPU's return-address
    /// predictor still holds the dispatcher's frames after a stack switch.
    #[inline(always)]
    pub(crate) fn park(&self, deadline: Option<Instant>) -> Result<Wake, task::Interrupted> {
        self.park_on(deadline, WaitOn::Parked)
    }

    /// [`park`](Self::park), recording what the tasklet waits on (shown by
    /// [`crate::dump`] and deadlock reports). The record is three stores on
    /// the blocking path; yielding never touches it.
    #[inline(always)]
    pub(crate) fn park_on(
        &self,
        deadline: Option<Instant>,
        why: WaitOn,
    ) -> Result<Wake, task::Interrupted> {
        let h = self.current_header();
        if let Err(e) = h.check_interrupt(self.no_block.get(), false) {
            return Err(self.refuse_to_block(e));
        }
        let epoch = h.epoch.get();
        if h.notified.replace(false) {
            h.epoch.set(epoch.wrapping_add(1));
            return Ok(Wake::Unparked);
        }
        let timer = deadline.map(|dl| self.arm_park_timer(dl, epoch));
        h.wait_on.set(why);
        h.wait_deadline.set(deadline);
        h.wait_since.set(Some(self.obs.clock.get()));
        h.state.set(State::Blocked);
        let counted = h.suspending();
        context::suspend(h.yielder.get());
        h.resumed(counted);
        h.epoch.set(epoch.wrapping_add(1));
        h.notified.set(false);
        let reason = h.wake.replace(Wake::Unparked);
        if let Some(t) = timer {
            if reason != Wake::TimedOut {
                self.cancel_park_timer(t);
            }
        }
        h.check_interrupt(self.no_block.get(), true)?;
        Ok(reason)
    }

    /// The blocking call of an unwinding tasklet late in shutdown fails; it
    /// still yields once, so a destructor that retries in a loop lets the
    /// dispatcher run (and eventually give up on it) instead of spinning.
    #[cold]
    #[inline(never)]
    fn refuse_to_block(&self, e: task::Interrupted) -> task::Interrupted {
        self.yield_now();
        e
    }

    /// Arms the timer that ends the current tasklet's wait `epoch` at `deadline`.
    #[inline(never)]
    fn arm_park_timer(&self, deadline: Instant, epoch: u32) -> TimerKey {
        let task = self.current_task();
        self.hub
            .timers
            .borrow_mut()
            .insert(deadline, TimerAction::Wake(task, epoch))
    }

    #[inline(never)]
    fn cancel_park_timer(&self, key: TimerKey) {
        self.hub.timers.borrow_mut().cancel(key);
    }

    #[inline(always)]
    fn yield_now(&self) {
        let Some(p) = context::current() else {
            context::outside()
        };
        let h = header_at(self, p);
        // `Err` only for an unwinding tasklet late in shutdown: it cannot be
        // unwound again, and yielding is not blocking, so it still yields
        // (a destructor that waits by yielding must let the dispatcher run).
        let _ = h.check_interrupt(self.no_block.get(), false);
        h.state.set(State::Ready);
        self.ready.push_back(p);
        let counted = h.suspending();
        context::suspend(h.yielder.get());
        h.resumed(counted);
        let _ = h.check_interrupt(self.no_block.get(), true);
    }

    /// Yields the running tasklet `h` without checking interrupts or
    /// settling its unwinding state (the caller just settled it, as not
    /// unwinding: it is not counted among the suspended unwinding ones).
    #[cold]
    pub(crate) fn yield_raw(&self, h: &task::Header) {
        let Some(p) = context::current() else {
            context::outside()
        };
        debug_assert!(std::ptr::eq(p.as_ptr(), h));
        h.state.set(State::Ready);
        self.ready.push_back(p);
        context::suspend(h.yielder.get());
    }

    /// Yields without raising a pending interrupt: for `hub::catch_interrupt`,
    /// whose callers cannot unwind, when the tasklet keeps making blocking
    /// calls after its kill (so a retry loop does not hold the dispatcher).
    pub(crate) fn yield_unchecked(&self) {
        let Some(p) = context::current() else {
            return;
        };
        let h = header_at(self, p);
        h.state.set(State::Ready);
        self.ready.push_back(p);
        let counted = h.suspending();
        context::suspend(h.yielder.get());
        h.resumed(counted);
    }

    fn next_timeout_id(&self) -> u64 {
        let id = self.next_timeout.get() + 1;
        self.next_timeout.set(id);
        id
    }
}

/// Suspends the current tasklet for `d` (gevent `sleep`); other tasklets run meanwhile.
///
/// `sleep(Duration::ZERO)` is [`yield_now`].
///
/// ```
/// use std::time::{Duration, Instant};
/// tasklet::dispatch(|| {
///     let t = Instant::now();
///     tasklet::sleep(Duration::from_millis(10));
///     assert!(t.elapsed() >= Duration::from_millis(10));
/// });
/// ```
///
/// # Panics
/// Outside [`dispatch`].
#[inline]
#[track_caller]
pub fn sleep(d: Duration) {
    if d.is_zero() {
        return yield_now();
    }
    match Instant::now().checked_add(d) {
        Some(deadline) => park_until(deadline),
        None => sleep_until_forever(),
    }
}

#[track_caller]
fn sleep_until_forever() {
    let r = context::try_with(|d| loop {
        if d.park_on(None, WaitOn::Sleep).is_err() {
            return;
        }
    });
    if r.is_none() {
        context::outside_api("tasklet::sleep")
    }
}

/// Suspends the current tasklet until `deadline`.
///
/// A deadline that has already passed arms no timer: the tasklet just yields
/// (like [`yield_now`]), so other tasklets still get their turn.
///
/// ```
/// use std::time::{Duration, Instant};
/// tasklet::dispatch(|| {
///     let deadline = Instant::now() + Duration::from_millis(5);
///     tasklet::sleep_until(deadline);
///     assert!(Instant::now() >= deadline);
/// });
/// ```
#[inline]
#[track_caller]
pub fn sleep_until(deadline: Instant) {
    if Instant::now() >= deadline {
        return yield_now();
    }
    park_until(deadline)
}

/// Parks the current tasklet until `deadline` (which is normally in the future).
#[inline]
#[track_caller]
fn park_until(deadline: Instant) {
    let r = context::try_with(
        #[inline(always)]
        |d| loop {
            match d.park_on(Some(deadline), WaitOn::Sleep) {
                Ok(Wake::TimedOut) | Err(_) => return,
                Ok(Wake::Unparked) => {
                    if Instant::now() >= deadline {
                        return;
                    }
                }
            }
        },
    );
    if r.is_none() {
        context::outside_api("tasklet::sleep")
    }
}

/// Lets every other ready tasklet run, then continues (concurrence `Tasklet.yield_`).
///
/// The caller goes to the back of the ready queue; I/O and timers are polled
/// at least once before it runs again.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// tasklet::dispatch(|| {
///     let log = Rc::new(RefCell::new(Vec::new()));
///     let l = log.clone();
///     let h = tasklet::spawn(move || l.borrow_mut().push("child"));
///     log.borrow_mut().push("parent before");
///     tasklet::yield_now();
///     log.borrow_mut().push("parent after");
///     h.join().unwrap();
///     assert_eq!(*log.borrow(), ["parent before", "child", "parent after"]);
/// });
/// ```
#[inline]
pub fn yield_now() {
    // Inlinable, so a loop that yields keeps its registers saved across
    // iterations instead of saving them in a call per yield.
    context::with(
        #[inline(always)]
        |d| d.yield_now(),
    )
}

/// The error of [`timeout`]: the deadline passed before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(_: Elapsed) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "deadline has elapsed")
    }
}

/// Runs `f` in the current tasklet, interrupting it if it takes longer than `d`
/// (gevent `Timeout`).
///
/// Whatever blocking call `f` is in when `d` passes (sleep, socket I/O, join,
/// a channel…) is interrupted and `f` is unwound, running destructors; the
/// result is then `Err(Elapsed)`. Cooperative: code that never blocks cannot
/// be interrupted. Timeouts nest; the outermost expired one wins.
///
/// The interruption is a panic payload raised with `resume_unwind` (nothing is
/// printed). If code inside `f` catches it with `catch_unwind` and carries on,
/// its next blocking call raises it again (after a yield), and `timeout` still returns
/// `Err(Elapsed)`: rethrow payloads you do not recognise.
///
/// ```
/// use std::time::Duration;
/// tasklet::dispatch(|| {
///     let r = tasklet::timeout(Duration::from_millis(10), || tasklet::sleep(Duration::from_secs(10)));
///     assert!(r.is_err());
///     let r = tasklet::timeout(Duration::from_secs(10), || 7);
///     assert_eq!(r, Ok(7));
/// });
/// ```
#[track_caller]
pub fn timeout<F, T>(d: Duration, f: F) -> Result<T, Elapsed>
where
    F: FnOnce() -> T,
{
    let Some(deadline) = Instant::now().checked_add(d) else {
        return Ok(f());
    };
    timeout_at(deadline, f)
}

/// Like [`timeout`], with an absolute deadline.
#[track_caller]
pub fn timeout_at<F, T>(deadline: Instant, f: F) -> Result<T, Elapsed>
where
    F: FnOnce() -> T,
{
    let Some((task, id, key, during_unwind)) = context::try_with(|d| {
        let task = d.current_task();
        // A scope opened while the tasklet unwinds (in a destructor) cannot
        // be raised: that unwind would leave the destructor (an abort). Its
        // expiry makes the scope's blocking calls fail instead.
        let during_unwind = task.settle(false) != task::Unwinding::No;
        let id = d.next_timeout_id();
        let action = if during_unwind {
            TimerAction::InterruptUnwinding(task.clone(), id)
        } else {
            TimerAction::Interrupt(task.clone(), id)
        };
        let key = d.hub.timers.borrow_mut().insert(deadline, action);
        (task, id, key, during_unwind)
    }) else {
        context::outside_api("tasklet::timeout")
    };
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    context::with(|d| d.hub.timers.borrow_mut().cancel(key));
    let mine = Some(Interrupt::Timeout(id));
    let mut expired = false;
    if task.interrupt.get() == mine {
        task.interrupt.set(None);
        expired = true;
    }
    if during_unwind && task.unwind_timeout.get() == Some(id) {
        task.unwind_timeout.set(None);
        expired = true;
    }
    match r {
        Ok(v) if expired => {
            // Expired, but its blocking calls failed rather than unwound.
            drop(v);
            Err(Elapsed(()))
        }
        Ok(v) => Ok(v),
        Err(payload) => {
            if matches!(payload.downcast_ref::<Unwind>(), Some(Unwind(i, _)) if Some(*i) == mine) {
                // This scope's own unwind is over. It was raised while the
                // tasklet was known not to be unwinding, which it is again.
                // A kill or an outer timeout that replaced this scope's
                // interrupt while a destructor blocked during the unwind
                // stays pending.
                drop(payload);
                task.unwinding.set(task::Unwinding::No);
                Err(Elapsed(()))
            } else {
                task::reraise(payload)
            }
        }
    }
}

/// Spawns a tasklet that runs `f` after `delay` (Twisted `callLater`, gevent
/// `spawn_later`). Killing it before then cancels it.
///
/// ```
/// use std::time::Duration;
/// tasklet::dispatch(|| {
///     let h = tasklet::spawn_later(Duration::from_millis(5), || "later");
///     assert_eq!(h.join().unwrap(), "later");
/// });
/// ```
#[track_caller]
pub fn spawn_later<F, T>(delay: Duration, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    task::spawn(move || {
        sleep(delay);
        f()
    })
}

/// Spawns a tasklet that calls `f` until it returns `ControlFlow::Break` or
/// the tasklet is killed (concurrence `Tasklet.loop`).
///
/// If an iteration did not block, the tasklet yields before the next one, so a
/// busy loop cannot starve the others.
///
/// ```
/// use std::ops::ControlFlow;
/// tasklet::dispatch(|| {
///     let mut n = 0;
///     let h = tasklet::spawn_loop(move || {
///         n += 1;
///         if n == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
///     });
///     h.join().unwrap();
/// });
/// ```
#[track_caller]
pub fn spawn_loop<F>(mut f: F) -> JoinHandle<()>
where
    F: FnMut() -> ControlFlow<()> + 'static,
{
    task::spawn(move || loop {
        let before = context::with(|d| d.current_header().epoch.get());
        if f().is_break() {
            return;
        }
        let after = context::with(|d| d.current_header().epoch.get());
        if before == after {
            yield_now();
        }
    })
}
