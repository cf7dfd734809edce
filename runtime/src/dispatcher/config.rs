//! [`Config`] and [`dispatch`]: building a dispatcher, running its first
//! tasklet to completion and shutting it down.

use std::panic::{self, Location};
use std::time::Duration;

use super::Dispatcher;
use crate::dispatcher::context::{self, Enter};
use crate::overflow;
use crate::stack;
use crate::task::error::JoinError;

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
    pub(crate) idle_spin: Option<Duration>,
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

    /// How long one tasklet may run without yielding before the watchdog
    /// logs a warning naming it (`None` disables the watchdog for this
    /// dispatcher).
    ///
    /// Without this setting the limit comes from the environment variable
    /// `TASKLET_MAX_BLOCKING_MS` (milliseconds, `0` disables), or is
    /// [`DEFAULT_MAX_BLOCKING`](crate::DEFAULT_MAX_BLOCKING) (100 ms). The check costs two plain stores
    /// per tasklet switch plus one shared monitor thread.
    ///
    /// ```
    /// use std::time::Duration;
    /// let v = tasklet::Config::new()
    ///     .max_blocking(Some(Duration::from_millis(500)))
    ///     .dispatch(|| 1);
    /// assert_eq!(v, 1);
    /// ```
    pub fn max_blocking(mut self, limit: Option<Duration>) -> Config {
        self.max_blocking = Some(limit.filter(|d| !d.is_zero()));
        self
    }

    /// How long the dispatcher keeps its thread awake, when no tasklet is
    /// runnable, watching for wake-ups from other threads before it sleeps
    /// in `epoll_wait` (default: zero, no spin; a multi-worker
    /// [`Runtime`](crate::Runtime) sets it, see
    /// [`Runtime::idle_spin`](crate::Runtime::idle_spin)).
    ///
    /// A wake-up that finds the thread asleep costs a system call on the
    /// waking thread and a kernel thread wake-up here, several microseconds
    /// each; one that finds it awake costs neither. The spin is adaptive: it
    /// happens only after wake-ups from other threads have arrived (channel
    /// messages, `spawn_on`, `unblock` results), one spin that sees nothing
    /// arrive stops spinning until the next such wake-up, and no dispatcher
    /// spins while the CPUs are oversubscribed (Linux CPU pressure, or a
    /// spin that finds itself preempted), where spinning would slow
    /// wake-ups down. So a dispatcher that only serves sockets and timers
    /// never spins, and an idle one burns at most one `idle_spin` of CPU per
    /// burst of cross-thread work. Sockets are still polled (without
    /// blocking) while it spins.
    ///
    /// ```
    /// use std::time::Duration;
    /// let v = tasklet::Config::new()
    ///     .idle_spin(Duration::from_micros(20))
    ///     .dispatch(|| tasklet::unblock(|| 6 * 7));
    /// assert_eq!(v, 42);
    /// ```
    pub fn idle_spin(mut self, spin: Duration) -> Config {
        self.idle_spin = Some(spin);
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
    crate::task::header::install_panic_hook();
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
    let idle_spin = config.idle_spin.unwrap_or(Duration::ZERO);
    let d = match Dispatcher::new(stack_size, config.stall_warning, idle_spin) {
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
    // Stacks freed by the exit wait in release batches: release them now.
    stack::release_freed();
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
