//! Seeing inside a dispatcher: what every tasklet waits on ([`dump`], made
//! in `dispatcher/dump.rs`), cheap counters ([`stats`]), and a dump on a
//! signal. Stall and deadlock reports live in `dispatcher/stall.rs`,
//! diagnostics that reach stderr in `diag.rs`.
//!
//! # Costs
//! The switch path is untouched: a yield stores nothing here. A park stores
//! what it waits on, its deadline and the dispatcher's clock into the
//! tasklet's header (three plain stores on the blocking path); the clock is
//! read once per hub poll. Counters are plain (non-atomic) per-dispatcher
//! cells; the only one on the switch path is the ready queue's push count
//! (one `add` to memory per yield), which doubles as the switch count.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::Ordering;

use crate::diag::WATCHDOG_WARNINGS;
use crate::dispatcher::context;
pub use crate::dispatcher::dump::{dump, Dump, TaskletInfo, TaskletState, WaitReason};
use crate::task::JoinHandle;

/// Spawns a tasklet that writes a [`dump`] to stderr each time the process
/// receives `sig` (like Go's `SIGQUIT` goroutine dump; `SIGUSR1` is the
/// usual choice). Kill the returned handle to stop. The tasklet keeps a
/// signal wait registered, which counts as a socket: a dispatcher with it
/// never reports a deadlock.
///
/// ```no_run
/// tasklet::dispatch(|| {
///     let _dumper = tasklet::dump_on_signal(tasklet::signal::Signal::Usr1);
///     // … serve; then `kill -USR1 <pid>` prints every tasklet to stderr.
/// });
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch).
#[track_caller]
pub fn dump_on_signal(sig: crate::signal::Signal) -> JoinHandle<()> {
    if !context::is_set() {
        context::outside_api("tasklet::dump_on_signal");
    }
    crate::task::Builder::new()
        .name("dump-on-signal")
        .spawn(move || loop {
            match crate::signal::wait(&[sig]) {
                Ok(_) => {
                    let text = dump().to_string();
                    // One write, so the dump is not interleaved with other output.
                    let _ = std::io::stderr().lock().write_all(text.as_bytes());
                }
                Err(e) => {
                    log::error!("tasklet::dump_on_signal: cannot wait for {sig:?}: {e}");
                    return;
                }
            }
        })
        .unwrap_or_else(|e| panic!("tasklet::dump_on_signal: cannot spawn its tasklet: {e}"))
}

/// Cheap counters of the current dispatcher (and of the process's offload
/// threads and watchdog): see [`stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Live tasklets (including the first one and the caller).
    pub live: usize,
    /// Tasklets spawned since `dispatch` began (including the first one).
    pub spawned: u64,
    /// Tasklet resumptions (switches into a tasklet).
    pub switches: u64,
    /// `epoll_wait` calls.
    pub hub_polls: u64,
    /// Readiness events those calls returned.
    pub hub_events: u64,
    /// Armed timers (sleeps, deadlines, `timeout` scopes).
    pub timers_armed: usize,
    /// The most tasklets that were ready at once (the longest pass over the ready queue).
    pub ready_high_water: u64,
    /// Freed stacks kept warm for reuse on this thread.
    pub stacks_cached: usize,
    /// Offload threads running an [`unblock`](crate::unblock) call (whole process).
    pub offload_busy: usize,
    /// Offload threads idle, waiting for a call (whole process).
    pub offload_idle: usize,
    /// Watchdog warnings about a tasklet holding its dispatcher (whole process).
    pub watchdog_warnings: u64,
    /// Stall warnings of this dispatcher (see [`Config::stall_warning`](crate::Config::stall_warning)).
    pub stall_warnings: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, u64); 12] = [
            ("live", self.live as u64),
            ("spawned", self.spawned),
            ("switches", self.switches),
            ("hub_polls", self.hub_polls),
            ("hub_events", self.hub_events),
            ("timers_armed", self.timers_armed as u64),
            ("ready_high_water", self.ready_high_water),
            ("stacks_cached", self.stacks_cached as u64),
            ("offload_busy", self.offload_busy as u64),
            ("offload_idle", self.offload_idle as u64),
            ("watchdog_warnings", self.watchdog_warnings),
            ("stall_warnings", self.stall_warnings),
        ];
        for (k, v) in rows {
            writeln!(f, "{k} {v}")?;
        }
        Ok(())
    }
}

/// Reads the current dispatcher's counters (see [`Stats`]). Counting costs
/// the runtime nothing measurable: plain per-dispatcher cells, the switch
/// count added once per pass over the ready queue.
///
/// ```
/// tasklet::dispatch(|| {
///     let before = tasklet::stats();
///     tasklet::spawn(|| ()).join().unwrap();
///     let after = tasklet::stats();
///     assert_eq!(after.spawned, before.spawned + 1);
///     assert!(after.switches > before.switches);
/// });
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch).
#[track_caller]
pub fn stats() -> Stats {
    let Some(mut s) = context::try_with(|d| Stats {
        live: d.task_count(),
        spawned: d.obs.spawned.get(),
        switches: d.ready_counts().0,
        hub_polls: d.obs.polls.get(),
        hub_events: d.obs.events.get(),
        timers_armed: d.hub.timer_count(),
        ready_high_water: d.ready_counts().1,
        stacks_cached: d.stacks_cached(),
        stall_warnings: d.obs.stall_warnings.get(),
        ..Stats::default()
    }) else {
        context::outside_api("tasklet::stats")
    };
    let (busy, idle) = crate::offload::thread_counts();
    s.offload_busy = busy;
    s.offload_idle = idle;
    s.watchdog_warnings = WATCHDOG_WARNINGS.load(Ordering::Relaxed);
    s
}
