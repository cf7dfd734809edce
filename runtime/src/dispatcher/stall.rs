//! Stall and deadlock detection: the dispatcher's counters, how long the
//! next poll may block while everything is blocked, and the proof (or
//! warning) that nothing can wake the blocked tasklets any more.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::dump::{list_blocked, Human};
use super::Dispatcher;
use crate::diag::{only_runtime_threads, report, Kind};

/// Default of [`Config::stall_warning`](crate::Config::stall_warning).
pub(crate) const DEFAULT_STALL_WARNING: Duration = Duration::from_secs(10);

/// How long everything must have been blocked (no timer, no socket) before
/// the dispatcher counts the process's threads to prove a deadlock. Waits
/// that another thread ends sooner never pay for the check.
const PROOF_DELAY: Duration = Duration::from_millis(50);

/// Longest interval between two deadlock proofs while a stall lasts.
const MAX_PROOF_INTERVAL: Duration = Duration::from_secs(60);

/// At most this many tasklets are listed in a deadlock or stall report.
pub(super) const REPORT_LIMIT: usize = 32;

/// A dispatcher's counters and stall tracking (plain cells: one thread).
pub(crate) struct DispatcherStats {
    pub(crate) spawned: Cell<u64>,
    pub(crate) polls: Cell<u64>,
    pub(crate) events: Cell<u64>,
    pub(crate) stall_warnings: Cell<u64>,
    /// The time of the latest hub poll: dates the waits that begin after it.
    pub(crate) clock: Cell<Instant>,
    /// When every tasklet became blocked with no timer or socket (a stall).
    stall_since: Cell<Option<Instant>>,
    /// When to try the next deadlock proof during a stall.
    next_proof: Cell<Option<Instant>>,
    stall_warned: Cell<bool>,
    warn_after: Option<Duration>,
}

impl DispatcherStats {
    pub(crate) fn new(warn_after: Option<Duration>) -> DispatcherStats {
        DispatcherStats {
            spawned: Cell::new(0),
            polls: Cell::new(0),
            events: Cell::new(0),
            stall_warnings: Cell::new(0),
            clock: Cell::new(Instant::now()),
            stall_since: Cell::new(None),
            next_proof: Cell::new(None),
            stall_warned: Cell::new(false),
            warn_after,
        }
    }
}

/// Whether every tasklet is blocked and the hub holds nothing that could
/// fire (no timer, no socket): only an unparker can end that. A tasklet
/// waiting for a Unix signal (of this dispatcher or another: the count is
/// per process) waits on the world outside, like one waiting on a socket:
/// that is not a stall.
fn stalled(d: &Dispatcher) -> bool {
    d.ready_is_empty() && d.hub.is_quiet() && !crate::signal::tasklets_waiting()
}

/// How long the next hub poll may block, given the stall tracking: until
/// the next deadlock proof or the stall warning is due. `now`: the clock
/// read the poll will use.
pub(crate) fn stall_limit(d: &Dispatcher, now: Instant) -> Option<Instant> {
    let o = &d.obs;
    if !stalled(d) {
        o.stall_since.set(None);
        return None;
    }
    let since = match o.stall_since.get() {
        Some(s) => s,
        None => {
            o.stall_since.set(Some(now));
            o.next_proof.set(Some(now + PROOF_DELAY));
            now
        }
    };
    let warn_at = match (o.warn_after, o.stall_warned.get()) {
        (Some(w), false) => since.checked_add(w),
        _ => None,
    };
    match (o.next_proof.get(), warn_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// After a poll during a stall: proves a deadlock (`Err` with the report)
/// or warns once when the stall has lasted [`Config::stall_warning`](crate::Config::stall_warning).
pub(crate) fn after_poll(d: &Dispatcher) -> Result<(), String> {
    let o = &d.obs;
    if !stalled(d) {
        o.stall_since.set(None);
        return Ok(());
    }
    let Some(since) = o.stall_since.get() else {
        return Ok(());
    };
    let now = Instant::now();
    if matches!(o.next_proof.get(), Some(t) if now >= t) {
        if !d.hub.remote_pending() && only_runtime_threads() {
            return Err(deadlock_report(d, true));
        }
        // Other threads exist; try again later, less and less often.
        let wait = now
            .saturating_duration_since(since)
            .clamp(PROOF_DELAY, MAX_PROOF_INTERVAL);
        o.next_proof.set(Some(now + wait));
    }
    if let Some(w) = o.warn_after {
        if !o.stall_warned.get() && now.saturating_duration_since(since) >= w {
            o.stall_warned.set(true);
            o.stall_warnings.set(o.stall_warnings.get() + 1);
            report(
                Kind::Stall,
                log::Level::Warn,
                format_args!(
                    "tasklet: dispatcher {}: every tasklet has been blocked for {} with no \
                     timer armed and no socket registered; only another thread can still wake \
                     them (other threads exist, so this cannot be proved a deadlock). If none \
                     will, this is a deadlock:\n{}",
                    d.id,
                    Human(now.saturating_duration_since(since)),
                    list_blocked(d)
                ),
            );
        }
    }
    Ok(())
}

/// The text of a deadlock panic: why, then every stuck tasklet (up to
/// [`REPORT_LIMIT`]) and what it waits on.
pub(crate) fn deadlock_report(d: &Dispatcher, threads_proof: bool) -> String {
    let why = if threads_proof {
        "every tasklet is blocked and nothing can wake them: no timer, no socket, and no other \
         thread in the process that could reach what they wait on"
    } else {
        "every tasklet is blocked and nothing can wake them: no timer, no socket, no \
         cross-thread waker"
    };
    format!(
        "{why} (gevent: \"this operation would block forever\"):\n{}",
        list_blocked(d)
    )
}
