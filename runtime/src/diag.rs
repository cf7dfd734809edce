//! Diagnostics that must reach someone: [`report`] sends them through `log`
//! when a logger would show them and to stderr (rate-limited) otherwise;
//! and the process-wide counts the reports and deadlock proofs use.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Threads the runtime started that never run user code (the watchdog,
/// the signal relay); offload threads are counted separately (idle ones).
static RUNTIME_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Records that a runtime helper thread (which runs no user code) started.
pub(crate) fn runtime_thread_started() {
    RUNTIME_THREADS.fetch_add(1, Ordering::Relaxed);
}

/// Whether the calling (dispatcher) thread is the only one in the process
/// that could run user code: every other thread is a runtime helper that
/// never does (watchdog, signal relay, idle offload threads). Then nothing
/// outside this dispatcher can reach a `sync` primitive's endpoint, however
/// its handles were shared. Linux only (`/proc/self/stat`); elsewhere `false`.
pub(crate) fn only_runtime_threads() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // The command name (field 2) may contain spaces: fields after it start at 3.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let Some(threads) = rest
        .split_whitespace()
        .nth(20 - 3)
        .and_then(|s| s.parse::<usize>().ok())
    else {
        return false;
    };
    let (_, idle) = crate::offload::threads::thread_counts();
    threads <= 1 + RUNTIME_THREADS.load(Ordering::Relaxed) + idle
}

pub(crate) static WATCHDOG_WARNINGS: AtomicU64 = AtomicU64::new(0);

/// Counts a watchdog warning (for [`Stats::watchdog_warnings`](crate::Stats::watchdog_warnings)).
pub(crate) fn watchdog_warned() {
    WATCHDOG_WARNINGS.fetch_add(1, Ordering::Relaxed);
}

/// Kinds of diagnostics, rate-limited separately on stderr.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// A tasklet holds its dispatcher too long.
    Watchdog,
    /// … and gave it back.
    WatchdogEnd,
    /// A panic nobody joins.
    UnjoinedPanic,
    /// A stall that may be a deadlock.
    Stall,
}

/// At most one stderr line per kind per this interval (the first always shows).
const STDERR_INTERVAL: Duration = Duration::from_secs(10);

/// Per kind: when a line was last written, and how many were held back since.
static STDERR_STATE: Mutex<[(Option<Instant>, u64); 4]> = Mutex::new([(None, 0); 4]);

/// Reports a diagnostic through `log` when a logger would show it;
/// otherwise (no logger installed: `log::max_level()` is `Off`, or below
/// `level`) writes it to stderr — the first of each kind at once, then at
/// most one per 10 s, saying how many were held back.
pub(crate) fn report(kind: Kind, level: log::Level, msg: fmt::Arguments<'_>) {
    if level <= log::max_level() {
        log::log!(target: "tasklet", level, "{msg}");
        return;
    }
    let now = Instant::now();
    let held_back = {
        let mut st = STDERR_STATE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = &mut st[kind as usize];
        match slot.0 {
            Some(t) if now.saturating_duration_since(t) < STDERR_INTERVAL => {
                slot.1 += 1;
                return;
            }
            _ => {
                slot.0 = Some(now);
                std::mem::take(&mut slot.1)
            }
        }
    };
    let line = if held_back > 0 {
        format!("[{level} tasklet] {msg} ({held_back} similar message(s) held back)\n")
    } else {
        format!("[{level} tasklet] {msg}\n")
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
