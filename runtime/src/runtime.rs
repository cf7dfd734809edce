//! The thread-per-core [`Runtime`]: N worker threads, each running its own
//! dispatcher and hub, as in glommio, monoio and seastar.
//!
//! Tasklets never migrate between threads (that is what keeps
//! [`spawn`](crate::spawn) free of `Send`): a worker's tasklets stay on its
//! thread. Connections are spread by the kernel (`SO_REUSEPORT`, see
//! `tasklet::netio::TcpListener::bind_reuse_port`), work crosses workers only
//! as `Send` values — [`spawn_on`], the cross-thread [`sync`](crate::sync)
//! primitives — and [`RemoteJoinHandle`] joins or kills a tasklet on
//! another worker.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use crate::affinity::{self, Place};
use crate::dispatcher::config::Config;
use crate::hub::{HubRef, TaskAddr};
use crate::remote::{self, RemoteJoinHandle};
use crate::sync::Event;
use crate::task::{Interrupt, Unwind};

/// Builds and runs a thread-per-core runtime: `n` worker threads, each
/// running a dispatcher whose first tasklet is the same function.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// let calls = AtomicUsize::new(0);
/// let indexes = tasklet::Runtime::new()
///     .workers(2)
///     .name("demo")
///     .run(|| {
///         calls.fetch_add(1, Ordering::Relaxed);
///         // Runs as the first tasklet of every worker.
///         assert_eq!(tasklet::workers(), 2);
///         let me = tasklet::worker_index().unwrap();
///         assert_eq!(std::thread::current().name(), Some(format!("demo-{me}").as_str()));
///         // Work handed to the other worker, as a Send closure.
///         let other = tasklet::spawn_on(1 - me, move || tasklet::worker_index().unwrap());
///         assert_eq!(other.join().unwrap(), 1 - me);
///         me
///     });
/// assert_eq!(indexes, [0, 1]);
/// assert_eq!(calls.load(Ordering::Relaxed), 2);
/// ```
#[derive(Clone)]
pub struct Runtime {
    workers: Option<usize>,
    pin: bool,
    stack_size: Option<usize>,
    name: String,
    idle_spin: Option<Duration>,
}

impl Default for Runtime {
    fn default() -> Runtime {
        Runtime::new()
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.worker_count())
            .field("pin_to_cores", &self.pin)
            .field("stack_size", &self.stack_size)
            .field("name", &self.name)
            .field("idle_spin", &self.spin_limit())
            .finish()
    }
}

impl Runtime {
    /// A runtime with one worker per CPU this process may run on
    /// ([`std::thread::available_parallelism`], which respects `taskset`
    /// and cgroup CPU quotas), unpinned, threads named `tasklet-0`, ….
    pub fn new() -> Runtime {
        Runtime {
            workers: None,
            pin: false,
            stack_size: None,
            name: "tasklet".to_owned(),
            idle_spin: None,
        }
    }

    /// The number of worker threads.
    ///
    /// # Panics
    /// If `n` is 0.
    #[track_caller]
    pub fn workers(mut self, n: usize) -> Runtime {
        assert!(
            n > 0,
            "tasklet::Runtime::workers: a runtime needs at least one worker (got 0)"
        );
        self.workers = Some(n);
        self
    }

    /// Pins worker `i` to the `i`-th CPU this process may run on (wrapping
    /// around when there are more workers than CPUs), with
    /// `sched_setaffinity`. Off by default. A worker that cannot be pinned
    /// logs a warning and runs unpinned.
    ///
    /// Unpinned workers (no more of them than allowed CPUs, idle spin on)
    /// still start one per CPU, worker `i` on the `i`-th, and move back
    /// to that CPU when the kernel has put them elsewhere and they are about
    /// to spin (at most every 10 ms) — otherwise two workers handing work
    /// to each other tend to end up sharing one CPU, where their spins get
    /// in each other's way. The kernel stays free to move them.
    pub fn pin_to_cores(mut self, pin: bool) -> Runtime {
        self.pin = pin;
        self
    }

    /// The default stack size of every worker's tasklets
    /// ([`Config::stack_size`](crate::Config::stack_size)).
    pub fn stack_size(mut self, bytes: usize) -> Runtime {
        self.stack_size = Some(bytes);
        self
    }

    /// The worker threads' name prefix: threads are named `name-0`,
    /// `name-1`, … (default `tasklet`).
    pub fn name(mut self, name: impl Into<String>) -> Runtime {
        self.name = name.into();
        self
    }

    /// How long an idle worker keeps its thread awake watching for work
    /// from the other workers before it sleeps in `epoll_wait` (default
    /// [`DEFAULT_IDLE_SPIN`](crate::DEFAULT_IDLE_SPIN), 50 µs, with more
    /// than one worker; zero with one). `Duration::ZERO` turns it off.
    ///
    /// Handing a value to a sleeping worker (a channel message, a
    /// [`spawn_on`], the result of a [`RemoteJoinHandle`] it waits for)
    /// wakes its thread through the kernel: a system call on the sender and
    /// a thread wake-up on the receiver, several microseconds each. A
    /// worker that is awake or spinning takes the value without either, so
    /// workers that talk to each other often answer in a fraction of that.
    /// The spin is adaptive (see [`Config::idle_spin`](crate::Config::idle_spin)):
    /// a worker spins only after work from another thread arrived, and
    /// stops spinning after one spin that saw nothing, so an idle runtime
    /// sleeps and workers that only serve their own sockets never spin. Set
    /// it to zero when CPU time matters more than cross-worker latency (many
    /// runtimes on few cores, battery-powered machines).
    ///
    /// ```
    /// use std::time::Duration;
    /// let v = tasklet::Runtime::new()
    ///     .workers(2)
    ///     .idle_spin(Duration::ZERO)
    ///     .run(|| tasklet::worker_index().unwrap());
    /// assert_eq!(v, [0, 1]);
    /// ```
    pub fn idle_spin(mut self, spin: Duration) -> Runtime {
        self.idle_spin = Some(spin);
        self
    }

    fn spin_limit(&self) -> Duration {
        self.idle_spin.unwrap_or(if self.worker_count() > 1 {
            crate::DEFAULT_IDLE_SPIN
        } else {
            Duration::ZERO
        })
    }

    fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Starts the workers and runs `f` as the first tasklet of **every**
    /// worker; returns when all of them have returned, with their results
    /// in worker order.
    ///
    /// A worker whose `f` returns early keeps running (its other tasklets
    /// too, and it still serves [`spawn_on`]) until every worker's `f` has
    /// returned; then every worker shuts down as [`dispatch`](crate::dispatch)
    /// does, killing and unwinding the tasklets still alive.
    ///
    /// `run` blocks the calling thread (called from a tasklet, it blocks
    /// that tasklet's whole dispatcher: start runtimes from `main`). `f`
    /// may borrow from the caller: the workers are scoped threads.
    ///
    /// # Panics
    /// If `f` panics on any worker (or a worker cannot start), the other
    /// workers' first tasklets are killed (unwound at their blocking point,
    /// as at `dispatch` exit), every worker shuts down, and `run` re-raises
    /// the first panic.
    pub fn run<F, T>(self, f: F) -> Vec<T>
    where
        F: Fn() -> T + Send + Sync,
        T: Send,
    {
        let n = self.worker_count();
        let mut places = affinity::places(n, self.pin, !self.spin_limit().is_zero());
        let shared = Arc::new(Shared::new(n));
        let f = &f;
        let stack_size = self.stack_size;
        let idle_spin = self.spin_limit();
        let results: Vec<Option<T>> = thread::scope(|s| {
            let mut handles = Vec::with_capacity(n);
            for (i, place) in places.drain(..).enumerate() {
                let sh = shared.clone();
                let spawned = thread::Builder::new()
                    .name(format!("{}-{i}", self.name))
                    .spawn_scoped(s, move || worker(sh, i, f, stack_size, idle_spin, place));
                match spawned {
                    Ok(h) => handles.push(Some(h)),
                    Err(e) => {
                        shared.fail(Box::new(format!(
                            "tasklet::Runtime: cannot start worker thread {i}: {e}"
                        )));
                        handles.push(None);
                    }
                }
            }
            handles
                .into_iter()
                .map(|h| {
                    h.and_then(|h| match h.join() {
                        Ok(v) => v,
                        Err(p) => {
                            shared.fail(p);
                            None
                        }
                    })
                })
                .collect()
        });
        let first_panic = shared
            .panic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = first_panic {
            panic::resume_unwind(p);
        }
        results
            .into_iter()
            .map(|r| r.expect("every worker returned a value when none failed"))
            .collect()
    }
}

/// What the workers of one `run` share.
struct Shared {
    n: usize,
    /// Each worker's hub and first tasklet, set when it starts.
    slots: Vec<OnceLock<Slot>>,
    started: AtomicUsize,
    /// Every worker has registered (or the run failed): `f` may start.
    all_started: Event,
    returned: AtomicUsize,
    /// Every worker's `f` has returned (or the run failed).
    all_returned: Event,
    failed: AtomicBool,
    /// The first panic, re-raised by `run`.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

struct Slot {
    hub: HubRef,
    main: TaskAddr,
}

impl Shared {
    fn new(n: usize) -> Shared {
        Shared {
            n,
            slots: (0..n).map(|_| OnceLock::new()).collect(),
            started: AtomicUsize::new(0),
            all_started: Event::new(),
            returned: AtomicUsize::new(0),
            all_returned: Event::new(),
            failed: AtomicBool::new(false),
            panic: Mutex::new(None),
        }
    }

    /// Worker `worker`'s hub.
    fn hub(&self, worker: usize) -> io::Result<HubRef> {
        if worker >= self.n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "worker {worker} is out of range: this Runtime has {} worker(s) (0..={})",
                    self.n,
                    self.n - 1
                ),
            ));
        }
        match self.slots[worker].get() {
            Some(s) => Ok(s.hub.clone()),
            // Only before every worker registered, which `f` never sees.
            None => Err(io::Error::other(format!("worker {worker} has not started"))),
        }
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// A worker failed with `payload`: keep the first panic, release every
    /// wait and kill every worker's first tasklet.
    fn fail(&self, payload: Box<dyn Any + Send>) {
        {
            let mut first = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(payload);
            }
        }
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.all_started.set();
        self.all_returned.set();
        let me = worker_index();
        for (i, slot) in self.slots.iter().enumerate() {
            if Some(i) == me {
                continue;
            }
            if let Some(s) = slot.get() {
                s.main.kill(&s.hub);
            }
        }
    }
}

thread_local! {
    /// The runtime this thread is a worker of, and its index.
    static WORKER: RefCell<Option<(usize, Arc<Shared>)>> = const { RefCell::new(None) };
}

/// Clears the thread's worker registration when the worker ends.
struct Registered;

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = WORKER.try_with(|w| w.borrow_mut().take());
    }
}

/// One worker thread.
fn worker<F, T>(
    shared: Arc<Shared>,
    index: usize,
    f: &F,
    stack_size: Option<usize>,
    idle_spin: Duration,
    place: Place,
) -> Option<T>
where
    F: Fn() -> T,
{
    let home = match place {
        Place::Pinned(cpu) => {
            if let Err(e) = affinity::pin_current_thread(cpu) {
                log::warn!("tasklet::Runtime: cannot pin worker {index} to CPU {cpu}: {e}");
            }
            None
        }
        Place::Home(home) => match home.go() {
            Ok(true) => Some(home),
            Ok(false) => None,
            Err(e) => {
                log::debug!(
                    "tasklet::Runtime: cannot start worker {index} on CPU {}: {e}",
                    home.cpu()
                );
                None
            }
        },
        Place::Free => None,
    };
    WORKER.with(|w| *w.borrow_mut() = Some((index, shared.clone())));
    let _registered = Registered;
    let mut config = Config::new().idle_spin(idle_spin);
    if let Some(s) = stack_size {
        config = config.stack_size(s);
    }
    let out = panic::catch_unwind(AssertUnwindSafe(|| {
        config.dispatch(|| {
            if let Some(home) = home {
                crate::hub::set_home_cpu(home);
            }
            worker_main(&shared, index, f)
        })
    }));
    match out {
        Ok(v) => v,
        Err(p) => {
            shared.fail(p);
            None
        }
    }
}

/// The first tasklet of a worker: registers, waits for the others, runs
/// `f`, then keeps the worker up until every `f` has returned. `None`: the
/// run failed (here: the panic is recorded at once, so the other workers
/// are stopped while this one shuts down).
fn worker_main<F, T>(shared: &Shared, index: usize, f: &F) -> Option<T>
where
    F: Fn() -> T,
{
    let slot = Slot {
        hub: HubRef::current().expect("a worker's first tasklet runs in its dispatcher"),
        main: TaskAddr::current().expect("a worker's first tasklet is a tasklet"),
    };
    let _ = shared.slots[index].set(slot);
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        if shared.started.fetch_add(1, Ordering::AcqRel) + 1 == shared.n {
            shared.all_started.set();
        }
        shared.all_started.wait();
        if shared.failed() {
            return None;
        }
        let v = f();
        if shared.returned.fetch_add(1, Ordering::AcqRel) + 1 == shared.n {
            shared.all_returned.set();
        }
        shared.all_returned.wait();
        (!shared.failed()).then_some(v)
    }));
    match r {
        Ok(v) => v,
        // Killed because another worker failed: that one's panic is re-raised.
        Err(p) if shared.failed() && is_kill(p.as_ref()) => None,
        Err(p) => {
            shared.fail(p);
            None
        }
    }
}

/// Whether a panic payload is the runtime's kill unwind.
fn is_kill(p: &(dyn Any + Send)) -> bool {
    matches!(p.downcast_ref::<Unwind>(), Some(Unwind(Interrupt::Kill, _)))
}

/// The index of the [`Runtime`] worker running the calling thread (`0..workers()`),
/// or `None` outside a `Runtime` (under plain [`dispatch`](crate::dispatch),
/// on an offload thread, on any other thread).
///
/// ```
/// assert_eq!(tasklet::worker_index(), None);
/// assert_eq!(tasklet::dispatch(tasklet::worker_index), None);
/// let v = tasklet::Runtime::new().workers(3).run(|| tasklet::worker_index().unwrap());
/// assert_eq!(v, [0, 1, 2]);
/// ```
pub fn worker_index() -> Option<usize> {
    WORKER
        .try_with(|w| w.borrow().as_ref().map(|(i, _)| *i))
        .ok()
        .flatten()
}

/// The number of workers of the calling thread's [`Runtime`]; 1 outside one
/// (under plain [`dispatch`](crate::dispatch) there is one dispatcher).
pub fn workers() -> usize {
    WORKER
        .try_with(|w| w.borrow().as_ref().map_or(1, |(_, s)| s.n))
        .unwrap_or(1)
}

/// Runs `f` as a new tasklet on worker `worker` of the calling thread's
/// [`Runtime`], and returns a `Send` handle to it.
///
/// `f` and its result cross threads, so both are `Send`. The tasklet starts
/// at that worker's next poll (at once if it is the calling worker). Join it
/// from a tasklet (parks it), a plain thread (blocks it) or `async` code (it
/// is a `Future`), or kill it from anywhere. Under plain
/// [`dispatch`](crate::dispatch) the only worker is 0, the dispatcher itself.
/// If the worker has already shut down, the handle reports the tasklet killed.
///
/// ```
/// tasklet::Runtime::new().workers(2).run(|| {
///     if tasklet::worker_index() == Some(0) {
///         let h = tasklet::spawn_on(1, || std::thread::current().name().map(str::to_owned));
///         assert_eq!(h.join().unwrap().as_deref(), Some("tasklet-1"));
///     }
/// });
/// ```
///
/// # Panics
/// If `worker` is out of range (`>= workers()`), or outside a `Runtime`
/// worker or dispatcher; [`try_spawn_on`] returns those as errors.
#[track_caller]
pub fn spawn_on<F, T>(worker: usize, f: F) -> RemoteJoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match try_spawn_on(worker, f) {
        Ok(h) => h,
        Err(e) => panic!("tasklet::spawn_on: {e}"),
    }
}

/// [`spawn_on`], with a bad worker index (or a call outside any runtime or
/// dispatcher) as an `ErrorKind::InvalidInput` error instead of a panic.
///
/// ```
/// tasklet::Runtime::new().workers(2).run(|| {
///     let e = tasklet::try_spawn_on(2, || ()).unwrap_err();
///     assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
///     assert!(e.to_string().contains("out of range"), "{e}");
/// });
/// ```
#[track_caller]
pub fn try_spawn_on<F, T>(worker: usize, f: F) -> io::Result<RemoteJoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let hub = target_hub(worker)?;
    Ok(remote::spawn_remote(hub, f))
}

/// Worker `worker`'s hub, for the calling thread (a worker, or a plain
/// dispatcher). Borrows the runtime's shared state in place rather than
/// through a `RuntimeHandle` (whose `Arc` every `spawn_on` would otherwise
/// count up and down, on a cache line all workers share).
fn target_hub(worker: usize) -> io::Result<HubRef> {
    let in_runtime = WORKER
        .try_with(|w| w.borrow().as_ref().map(|(_, s)| s.hub(worker)))
        .ok()
        .flatten();
    if let Some(hub) = in_runtime {
        return hub;
    }
    match HubRef::current() {
        Some(h) => single_hub(&h, worker),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "called outside a tasklet::Runtime worker and outside tasklet::dispatch (from another \
             thread, use a RuntimeHandle)",
        )),
    }
}

/// Worker `worker` of a plain dispatcher (`h`): only 0 exists.
fn single_hub(h: &HubRef, worker: usize) -> io::Result<HubRef> {
    if worker == 0 {
        return Ok(h.clone());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "worker {worker} is out of range: outside a tasklet::Runtime the only worker is \
             0 (the dispatcher)"
        ),
    ))
}

/// A `Send + Sync` handle to a running [`Runtime`] (or to one plain
/// [`dispatch`](crate::dispatch)er), for threads that are not its workers:
/// an admin thread, an `unblock` closure, a tokio task. Cheap to clone.
///
/// It does not keep the workers alive: once the runtime has shut down,
/// [`spawn_on`](RuntimeHandle::spawn_on) returns handles that report the
/// tasklet killed.
///
/// ```
/// tasklet::Runtime::new().workers(2).run(|| {
///     if tasklet::worker_index() != Some(0) {
///         return;
///     }
///     let rt = tasklet::RuntimeHandle::current().unwrap();
///     // A plain thread hands work to worker 1 and waits for it.
///     let v = std::thread::spawn(move || {
///         assert_eq!(rt.workers(), 2);
///         rt.spawn_on(1, || tasklet::worker_index()).join().unwrap()
///     });
///     while !v.is_finished() {
///         tasklet::sleep(std::time::Duration::from_millis(1));
///     }
///     assert_eq!(v.join().unwrap(), Some(1));
/// });
/// ```
#[derive(Clone)]
pub struct RuntimeHandle {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Runtime(Arc<Shared>),
    /// A plain dispatcher: worker 0.
    Single(HubRef),
}

impl RuntimeHandle {
    /// The runtime the calling thread is a worker of; under plain
    /// [`dispatch`](crate::dispatch), that dispatcher (one worker, index 0);
    /// `None` on any other thread.
    pub fn current() -> Option<RuntimeHandle> {
        let rt = WORKER
            .try_with(|w| w.borrow().as_ref().map(|(_, s)| s.clone()))
            .ok()
            .flatten();
        let target = match rt {
            Some(shared) => Target::Runtime(shared),
            None => Target::Single(HubRef::current()?),
        };
        Some(RuntimeHandle { target })
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        match &self.target {
            Target::Runtime(s) => s.n,
            Target::Single(_) => 1,
        }
    }

    /// [`spawn_on`](crate::spawn_on) from any thread.
    ///
    /// # Panics
    /// If `worker` is out of range; [`try_spawn_on`](Self::try_spawn_on)
    /// returns that as an error.
    #[track_caller]
    pub fn spawn_on<F, T>(&self, worker: usize, f: F) -> RemoteJoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.try_spawn_on(worker, f) {
            Ok(h) => h,
            Err(e) => panic!("tasklet::RuntimeHandle::spawn_on: {e}"),
        }
    }

    /// [`try_spawn_on`](crate::try_spawn_on) from any thread.
    #[track_caller]
    pub fn try_spawn_on<F, T>(&self, worker: usize, f: F) -> io::Result<RemoteJoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let hub = match &self.target {
            Target::Runtime(shared) => shared.hub(worker)?,
            Target::Single(h) => single_hub(h, worker)?,
        };
        Ok(remote::spawn_remote(hub, f))
    }
}

impl fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("workers", &self.workers())
            .finish()
    }
}
