//! The blocked-dispatcher watchdog (gevent's monitor thread).
//!
//! A tasklet that computes for a long time without reaching a blocking call
//! or [`yield_now`](crate::yield_now) stalls every other tasklet, timer and
//! socket of its dispatcher. The watchdog notices and says so with
//! `log::warn!`, naming the tasklet, how long it has held the dispatcher and
//! how to fix it.
//!
//! # Design
//! The switch path pays for two relaxed stores to a per-dispatcher
//! [`Probe`] reached through a `const` thread-local (no locking, no
//! read-modify-write instruction): [`running`] records the id of the
//! tasklet the dispatcher is about to resume; the returned guard resets it
//! to 0 when the tasklet switches back.
//!
//! One process-wide monitor thread, started with the first watched
//! dispatcher, samples every active probe every `limit / 4`. When it sees a
//! tasklet id it has not marked, it sets the id's top bit with a
//! compare-and-swap; any later switch overwrites the word with a plain
//! store, so finding the mark still there at a later sample proves that the
//! same tasklet has run without interruption since the mark was set. Once
//! that has lasted longer than the limit, the tasklet has not given the
//! dispatcher back: the monitor warns once for that episode, and again
//! (with the total) when it finally yields.
//!
//! Tasklet names live in the tasklet header, which the monitor thread must
//! not touch. So each probe keeps a small `Mutex<HashMap<id, name>>` of its
//! *named* tasklets, written when a named tasklet is registered and when it
//! finishes — off the switch path — and read only by the monitor when it
//! has a stall to report.
//!
//! Probes are allocated once and recycled (leaked, at most one per
//! concurrently running dispatcher), so the monitor holds plain `&'static`
//! references and no `unsafe` is needed.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::task::header::Header;
use crate::util::lock;

/// The watchdog limit when neither [`Config::max_blocking`](crate::Config::max_blocking) nor
/// `TASKLET_MAX_BLOCKING_MS` says otherwise.
pub const DEFAULT_MAX_BLOCKING: Duration = Duration::from_millis(100);

/// What the monitor can see of one dispatcher.
struct Probe {
    /// The running tasklet's id (0 while the dispatcher itself runs or
    /// idles), stored by the dispatcher thread; the monitor may add [`MARK`].
    current: AtomicU64,
    /// Bumped when the probe is (re)assigned to a dispatcher.
    generation: AtomicU64,
    dispatcher: AtomicU64,
    limit_ns: AtomicU64,
    in_use: AtomicBool,
    /// Names of this dispatcher's named, live tasklets.
    names: Mutex<HashMap<u64, Box<str>>>,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            current: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            dispatcher: AtomicU64::new(0),
            limit_ns: AtomicU64::new(0),
            in_use: AtomicBool::new(false),
            names: Mutex::new(HashMap::new()),
        }
    }
}

thread_local! {
    static PROBE: Cell<Option<&'static Probe>> = const { Cell::new(None) };
}

/// Every probe ever allocated (recycled when `in_use` is false).
static PROBES: Mutex<Vec<&'static Probe>> = Mutex::new(Vec::new());

struct Monitor {
    /// Number of probes in use; the monitor sleeps while it is 0.
    active: Mutex<usize>,
    wake: Condvar,
}

fn monitor() -> &'static Monitor {
    static MONITOR: OnceLock<Monitor> = OnceLock::new();
    MONITOR.get_or_init(|| {
        let r = std::thread::Builder::new()
            .name("tasklet-watchdog".into())
            .spawn(monitor_loop);
        match r {
            Ok(_) => crate::diag::runtime_thread_started(),
            Err(e) => log::error!("tasklet: cannot start the watchdog thread: {e}"),
        }
        Monitor {
            active: Mutex::new(0),
            wake: Condvar::new(),
        }
    })
}

/// The limit from `TASKLET_MAX_BLOCKING_MS`, read once.
fn env_limit() -> Option<Duration> {
    static ENV: OnceLock<Option<Duration>> = OnceLock::new();
    *ENV.get_or_init(|| parse_env(std::env::var("TASKLET_MAX_BLOCKING_MS").ok().as_deref()))
}

fn parse_env(v: Option<&str>) -> Option<Duration> {
    match v.map(str::trim) {
        None | Some("") => Some(DEFAULT_MAX_BLOCKING),
        Some(s) => match s.parse::<u64>() {
            Ok(0) => None,
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => {
                log::warn!(
                    "tasklet: ignoring TASKLET_MAX_BLOCKING_MS={s:?} (expected milliseconds, 0 disables); \
                     using {} ms",
                    DEFAULT_MAX_BLOCKING.as_millis()
                );
                Some(DEFAULT_MAX_BLOCKING)
            }
        },
    }
}

/// Watches the calling thread's dispatcher until dropped.
pub(crate) struct Watch {
    probe: Option<&'static Probe>,
}

/// Starts watching the dispatcher `dispatcher` on this thread with the
/// configured limit (`None`: from the environment / default).
pub(crate) fn register(dispatcher: u64, config: Option<Option<Duration>>) -> Watch {
    let Some(limit) = config.unwrap_or_else(env_limit) else {
        return Watch { probe: None };
    };
    let mon = monitor();
    let probe = {
        let mut all = lock(&PROBES);
        match all.iter().find(|p| !p.in_use.load(Relaxed)) {
            Some(p) => *p,
            None => {
                let p: &'static Probe = Box::leak(Box::new(Probe::new()));
                all.push(p);
                p
            }
        }
    };
    probe.current.store(0, Relaxed);
    probe.dispatcher.store(dispatcher, Relaxed);
    probe
        .limit_ns
        .store(limit.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    probe.generation.fetch_add(1, Relaxed);
    lock(&probe.names).clear();
    // Published under the PROBES lock, which the monitor takes to list probes.
    {
        let _all = lock(&PROBES);
        probe.in_use.store(true, Relaxed);
    }
    PROBE.with(|c| c.set(Some(probe)));
    *lock(&mon.active) += 1;
    mon.wake.notify_one();
    Watch { probe: Some(probe) }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(probe) = self.probe else { return };
        PROBE.with(|c| c.set(None));
        probe.current.store(0, Relaxed);
        lock(&probe.names).clear();
        {
            let _all = lock(&PROBES);
            probe.in_use.store(false, Relaxed);
        }
        *lock(&monitor().active) -= 1;
    }
}

/// Marks `h`'s tasklet as running until the guard drops (the switch hook).
#[inline]
pub(crate) fn running(h: &Header) -> Running {
    Running(PROBE.with(|c| {
        let p = c.get()?;
        p.current.store(h.id.as_u64(), Relaxed);
        Some(p)
    }))
}

/// Returned by [`running`]: the tasklet switched back when this drops.
pub(crate) struct Running(Option<&'static Probe>);

impl Drop for Running {
    #[inline]
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.current.store(0, Relaxed);
        }
    }
}

/// Remembers a named tasklet's name for reports (called at registration).
pub(crate) fn named(h: &Header) {
    if let Some(name) = &h.name {
        PROBE.with(|c| {
            if let Some(p) = c.get() {
                lock(&p.names).insert(h.id.as_u64(), name.clone());
            }
        });
    }
}

/// Forgets a finished tasklet's name.
pub(crate) fn finished(h: &Header) {
    if h.name.is_some() {
        PROBE.with(|c| {
            if let Some(p) = c.get() {
                lock(&p.names).remove(&h.id.as_u64());
            }
        });
    }
}

/// The monitor's view of one probe.
/// Set by the monitor in [`Probe::current`] on a running tasklet's id;
/// cleared by the dispatcher's next switch (tasklet ids stay below 2^63).
const MARK: u64 = 1 << 63;

/// What the monitor remembers of the episode it marked on one probe.
struct Track {
    generation: u64,
    /// The marked tasklet id (without [`MARK`]).
    tasklet: u64,
    /// When the mark was set: the tasklet has run at least since then.
    since: Instant,
    /// Set once the episode was reported: how the tasklet was described.
    warned: Option<String>,
}

fn monitor_loop() {
    let mon = monitor();
    let mut tracks: HashMap<usize, Track> = HashMap::new();
    loop {
        {
            let mut active = lock(&mon.active);
            while *active == 0 {
                tracks.clear();
                active = mon
                    .wake
                    .wait(active)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        let probes: Vec<(usize, &'static Probe)> = {
            let all = lock(&PROBES);
            all.iter()
                .copied()
                .enumerate()
                .filter(|(_, p)| p.in_use.load(Relaxed))
                .collect()
        };
        let mut interval = Duration::from_millis(250);
        let now = Instant::now();
        for (i, p) in probes {
            let limit = Duration::from_nanos(p.limit_ns.load(Relaxed));
            interval = interval.min(limit / 4);
            check(i, p, limit, now, &mut tracks);
        }
        std::thread::sleep(interval.max(Duration::from_millis(1)));
    }
}

fn check(i: usize, p: &Probe, limit: Duration, now: Instant, tracks: &mut HashMap<usize, Track>) {
    let generation = p.generation.load(Relaxed);
    let cur = p.current.load(Relaxed);
    let tasklet = cur & !MARK;
    let same_episode = cur & MARK != 0
        && matches!(tracks.get(&i), Some(t) if t.generation == generation && t.tasklet == tasklet);
    if !same_episode {
        // The tracked episode (if any) is over: the dispatcher switched.
        if let Some(t) = tracks.remove(&i) {
            if let (Some(who), true) = (&t.warned, t.generation == generation) {
                let held = now.saturating_duration_since(t.since);
                crate::diag::report(
                    crate::diag::Kind::WatchdogEnd,
                    log::Level::Warn,
                    format_args!(
                        "tasklet {} gave dispatcher {} back after holding it for about {} ms \
                         (watchdog limit {} ms)",
                        who,
                        p.dispatcher.load(Relaxed),
                        held.as_millis(),
                        limit.as_millis()
                    ),
                );
            }
        }
        // Mark a running tasklet; if the dispatcher switched meanwhile, the
        // exchange fails and the next sample starts over.
        if tasklet != 0
            && p.current
                .compare_exchange(cur, tasklet | MARK, Relaxed, Relaxed)
                .is_ok()
        {
            tracks.insert(
                i,
                Track {
                    generation,
                    tasklet,
                    since: now,
                    warned: None,
                },
            );
        }
        return;
    }
    let Some(t) = tracks.get_mut(&i) else { return };
    let held = now.saturating_duration_since(t.since);
    if t.warned.is_none() && held >= limit {
        let who = describe(p, tasklet);
        crate::diag::watchdog_warned();
        crate::diag::report(
            crate::diag::Kind::Watchdog,
            log::Level::Warn,
            format_args!(
            "tasklet {} has held dispatcher {} for {} ms without yielding: every other tasklet, \
             timer and socket on that thread is stalled. Break long computations up with \
             tasklet::yield_now(), or move blocking calls and CPU-heavy work to \
             tasklet::unblock(|| ...). (watchdog limit {} ms: Config::max_blocking or \
             TASKLET_MAX_BLOCKING_MS, 0 disables)",
            who,
            p.dispatcher.load(Relaxed),
            held.as_millis(),
            limit.as_millis()
        ),
        );
        t.warned = Some(who);
    }
}

fn describe(p: &Probe, id: u64) -> String {
    match lock(&p.names).get(&id) {
        Some(n) => format!("'{n}' (id {id})"),
        None => format!("#{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_parsing() {
        assert_eq!(parse_env(None), Some(DEFAULT_MAX_BLOCKING));
        assert_eq!(parse_env(Some("0")), None);
        assert_eq!(parse_env(Some(" 250 ")), Some(Duration::from_millis(250)));
        assert_eq!(parse_env(Some("soon")), Some(DEFAULT_MAX_BLOCKING));
    }
}
