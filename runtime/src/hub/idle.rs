//! How a hub waits when no tasklet is runnable: a brief, adaptive spin on
//! its cross-thread wake-up queue before it sleeps in `epoll_wait`, and the
//! sleep/wake handshake that lets other threads skip the `eventfd` write
//! while the hub is awake.
//!
//! # Why
//!
//! A cross-thread wake-up of a sleeping dispatcher costs an `eventfd` write
//! on the waking thread and an `epoll_wait` return on the sleeping one: a
//! kernel thread wake-up, several microseconds on a busy machine, twice per
//! cross-worker round trip. Schedulers that hand work between threads keep
//! a worker awake for a moment after it runs dry (Go's spinning Ms in
//! `findrunnable`, crossbeam's `Backoff`), and only wake a thread through
//! the kernel when it is really asleep (tokio's parker skips the driver's
//! wake-up unless the worker is parked on it). The hub does both.
//!
//! # The handshake (no lost wake-ups)
//!
//! One atomic byte in the hub's shared half (`doorbell`) holds `PENDING`
//! (a wake-up, job or release is queued and not yet drained) and
//! `SLEEPING` (the hub is in, or about to enter, a blocking `epoll_wait`),
//! beside the state of a one-item mailbox.
//!
//! - A waker queues its item, then sets `PENDING` with a read-modify-write;
//!   only the waker that turned it on goes on, and it writes the `eventfd`
//!   only if that same read-modify-write saw `SLEEPING`.
//! - The hub, before a blocking `epoll_wait`, sets `SLEEPING` with a
//!   read-modify-write and looks at what it read: if something was pending,
//!   it polls without blocking instead. It clears `SLEEPING` when
//!   `epoll_wait` returns, and clears `PENDING` before it pops the queues.
//!
//! Read-modify-writes of one location are totally ordered, and each reads
//! what the previous one wrote: of the waker's and the hub's, the second
//! sees the first's bit — the hub does not block, or the waker writes the
//! `eventfd`, which ends or pre-empts the `epoll_wait`. A waker that finds
//! `PENDING` already set relies on the one that set it, whose item the hub
//! has not drained yet. This is the parked-state handshake of tokio's
//! `Parker` (EMPTY / PARKED / NOTIFIED in one atomic) and of Go's
//! `nmspinning` re-check.
//!
//! # When the hub spins
//!
//! Only when it helps: the spin limit is non-zero (by default only in a
//! [`Runtime`](crate::Runtime) with more than one worker, see
//! [`DEFAULT_IDLE_SPIN`]) and the hub is *hot* — the last time it drained
//! its queue it found work another thread had sent. A spin that ends with
//! nothing arriving makes the hub cold, so an idle hub spins at most once
//! per burst of cross-thread wake-ups, and a hub that only ever serves its
//! own sockets and timers (a plain `dispatch`, an echo server's worker)
//! never spins. While spinning it also polls its sockets without blocking
//! every [`IO_CHECK`], so readiness events are not held back by the spin.
//!
//! A receive on a channel that finds it empty on a hot hub with no other
//! tasklet runnable spins the same way inside the tasklet, before it parks
//! ([`IdleSpin::wait_budget`], at most [`WAIT_SPIN`]): a value another
//! worker sends meanwhile is then queued and taken, with no park, no
//! switch and no wake-up of this hub at all.
//!
//! And only with a CPU to spare: on oversubscribed CPUs a spinning thread
//! loses the scheduler's favour for woken sleepers and is preempted while
//! it looks awake (so nobody wakes it through the kernel), which makes
//! wake-ups slower, not faster. So every hub of the process stops spinning
//! for a cool-down (1 ms, growing fourfold up to 1 s while it keeps
//! happening) when a spin notices it was taken off its CPU (see
//! [`IdleSpin::spin`]), or when the kernel's CPU pressure
//! (`/proc/pressure/cpu`, read every 10 ms by one hub of the process) says
//! that threads waited for a CPU more than 10 % of a window in which the
//! hubs could spin (see `cpus_to_spare` for why only those windows).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::doorbell::Doorbell;
use crate::affinity::Home;

/// The default idle spin of each worker of a [`Runtime`](crate::Runtime)
/// with more than one worker (see
/// [`Runtime::idle_spin`](crate::Runtime::idle_spin)): 50 µs. Plain
/// [`dispatch`](crate::dispatch) and a one-worker runtime do not spin.
pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_micros(50);

/// For this long the spin only executes `spin_loop` hints between checks;
/// after it, it gives the CPU away (`sched_yield`) between checks, so a
/// spinning worker does not starve the thread it waits for when both share
/// a core.
const PURE_SPIN: Duration = Duration::from_micros(5);

/// How long a tasklet about to park for a value from another thread spins
/// for it first ([`IdleSpin::wait_budget`]): about two cross-worker hops.
pub(crate) const WAIT_SPIN: Duration = Duration::from_micros(2);

/// Hints per check of the clock during the pure spin.
const HINTS: u32 = 32;

/// How often a spinning hub with registered sources polls them (without
/// blocking).
pub(crate) const IO_CHECK: Duration = Duration::from_micros(10);

/// A gap this long between two consecutive clock reads of a spin (about a
/// microsecond apart) means the thread was off its CPU meanwhile for longer
/// than an interrupt takes: another thread ran (it was preempted, or its
/// `sched_yield` let one run), so the CPUs are oversubscribed. The
/// scheduler's time slices are milliseconds long.
const GAP: Duration = Duration::from_micros(100);

/// After a spin saw the CPUs oversubscribed, no hub spins for a cool-down:
/// four times the previous one (up to [`MAX_COOL`]) when it happens again
/// within [`RECENT`] after the previous cool-down ended, else a quarter of
/// it (down to [`MIN_COOL`]).
const MIN_COOL: Duration = Duration::from_millis(1);
const MAX_COOL: Duration = Duration::from_secs(1);
const RECENT: Duration = Duration::from_millis(100);

/// The thread-local half: the spin limit and whether spinning pays.
pub(crate) struct IdleSpin {
    limit: Duration,
    /// Cross-thread work arrived since the last spin that found nothing.
    hot: Cell<bool>,
    /// The CPU a [`Runtime`](crate::Runtime) worker spins on (see
    /// `affinity`), and when it last moved there.
    home: Cell<Option<Home>>,
    moved_home: Cell<Option<Instant>>,
}

/// Whether the CPUs are oversubscribed is a property of the machine, not of
/// one hub: what one spinning hub learns, every hub of the process uses.
/// Times are nanoseconds since [`epoch`]; races between hubs are benign
/// (the worst case is one spin too many or too few).
struct Cooling {
    /// No hub spins before this time.
    until: AtomicU64,
    /// The last cool-down.
    cool: AtomicU64,
    /// When a spin last saw oversubscription (0: never).
    last_gap: AtomicU64,
}

static COOLING: Cooling = Cooling {
    until: AtomicU64::new(0),
    cool: AtomicU64::new(0),
    last_gap: AtomicU64::new(0),
};

/// How often the CPU pressure is read (by whichever hub wants to spin).
const PRESSURE_EVERY: Duration = Duration::from_millis(10);

/// A spinning window ends in a cool-down when threads waited for a CPU
/// during more than this share of it (Linux pressure stall information,
/// `/proc/pressure/cpu`, "some" line).
const MAX_PRESSURE: f64 = 0.10;

/// The CPU pressure as last read, while the hubs were allowed to spin.
struct Pressure {
    /// When it was last read (0: never, or too long ago to compare with).
    read_at: AtomicU64,
    /// The "some" stall total then, in microseconds.
    total: AtomicU64,
}

static PRESSURE: Pressure = Pressure {
    read_at: AtomicU64::new(0),
    total: AtomicU64::new(0),
};

/// Whether the CPUs have time to spare, as far as the last
/// [`PRESSURE_EVERY`] of spinning tells; `false` after it started a
/// cool-down (see [`cool_down`]).
///
/// Only windows in which spinning was allowed are judged. While the hubs
/// sleep instead, their own kernel wake-ups make stall (a woken worker
/// often waits for the CPU of the thread that woke it): judged, that would
/// keep spinning off on a machine with CPUs to spare — a feedback loop. So
/// a read after a gap (the first one, or the first after a cool-down or an
/// idle stretch) only starts a window, and the window is judged at the
/// next read. Under load that lasts, every probe window ends in a longer
/// cool-down, so spinning stays off but for about 1 % of the time.
fn cpus_to_spare(now: u64) -> bool {
    let every = PRESSURE_EVERY.as_nanos() as u64;
    let at = PRESSURE.read_at.load(Ordering::Relaxed);
    // One hub reads at a time; the others go on with the current verdict
    // (spinning allowed: a cool-down would have stopped them earlier).
    if (at != 0 && now.saturating_sub(at) < every)
        || PRESSURE
            .read_at
            .compare_exchange(at, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return true;
    }
    let Some(total) = read_cpu_pressure() else {
        return true;
    };
    let before = PRESSURE.total.swap(total, Ordering::Relaxed);
    if at == 0 || before == 0 || now.saturating_sub(at) > 3 * every {
        return true;
    }
    let stalled_ns = total.saturating_sub(before).saturating_mul(1000);
    if (stalled_ns as f64) < MAX_PRESSURE * now.saturating_sub(at) as f64 {
        return true;
    }
    cool_down(now);
    // The next read after the cool-down starts a new window.
    PRESSURE.read_at.store(0, Ordering::Relaxed);
    false
}

/// The "some" stall total of `/proc/pressure/cpu`, in microseconds. The
/// file is opened once and read with `pread`.
fn read_cpu_pressure() -> Option<u64> {
    use std::os::unix::fs::FileExt;
    static FILE: OnceLock<Option<std::fs::File>> = OnceLock::new();
    let file = FILE
        .get_or_init(|| std::fs::File::open("/proc/pressure/cpu").ok())
        .as_ref()?;
    let mut buf = [0u8; 256];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse_pressure(std::str::from_utf8(&buf[..n]).ok()?).map(|(_, total)| total)
}

/// (avg10, total) from the "some" line of a PSI file.
fn parse_pressure(text: &str) -> Option<(f64, u64)> {
    let some = text.lines().find(|l| l.starts_with("some "))?;
    let field = |name: &str| {
        some.split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
    };
    Some((field("avg10")?.parse().ok()?, field("total")?.parse().ok()?))
}

/// The process's time origin for [`COOLING`].
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `t` in nanoseconds since [`epoch`] (at least 1).
fn nanos(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos().max(1) as u64
}

/// Spin even when the CPUs look oversubscribed (see [`force_idle_spin`]).
static FORCE: AtomicBool = AtomicBool::new(false);

/// Makes every hub of the process spin whenever its spin limit and the
/// cross-thread traffic say so, ignoring CPU pressure and oversubscription:
/// for tests of the wake-up handshake on a loaded machine. Not for
/// production use (spinning on busy CPUs slows wake-ups down).
#[doc(hidden)]
pub fn force_idle_spin(on: bool) {
    FORCE.store(on, Ordering::Relaxed);
}

/// What ended a spin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpinEnd {
    /// Another thread queued work (`pending` is set).
    Woken,
    /// A socket poll made a tasklet runnable.
    Io,
    /// The time ran out with nothing to do.
    Expired,
}

impl IdleSpin {
    pub(crate) fn new(limit: Duration) -> IdleSpin {
        IdleSpin {
            limit,
            hot: Cell::new(false),
            home: Cell::new(None),
            moved_home: Cell::new(None),
        }
    }

    /// Gives the hub's thread a home CPU: before it spins, it moves back
    /// there if the kernel put it elsewhere (see `affinity` for why).
    pub(crate) fn set_home(&self, home: Home) {
        self.home.set(Some(home));
    }

    /// Before a spin: back to the home CPU if the thread is away from it
    /// (a `sched_getcpu` per spin; the move at most once per
    /// [`Home::MIN_INTERVAL`], so a worker the kernel keeps moving away
    /// does not fight it).
    #[inline]
    fn stay_home(&self) {
        if let Some(home) = self.home.get() {
            if home.away() {
                self.go_home(home);
            }
        }
    }

    #[cold]
    fn go_home(&self, home: Home) {
        let now = Instant::now();
        if let Some(at) = self.moved_home.get() {
            if now.saturating_duration_since(at) < Home::MIN_INTERVAL {
                return;
            }
        }
        self.moved_home.set(Some(now));
        match home.go() {
            Ok(true) => {}
            // Not allowed there any more (`taskset -p`): stay put for good.
            Ok(false) => self.home.set(None),
            Err(e) => log::debug!(
                "tasklet: cannot move a worker back to CPU {}: {e}",
                home.cpu()
            ),
        }
    }

    /// Whether this hub never spins (no clock reads needed for it).
    #[inline]
    pub(crate) fn is_off(&self) -> bool {
        self.limit.is_zero()
    }

    /// Notes that a drain found work from another thread.
    #[inline]
    pub(crate) fn note_remote(&self) {
        if !self.limit.is_zero() {
            self.hot.set(true);
        }
    }

    /// How long to spin before blocking for up to `timeout` (`None`:
    /// forever); `None` when spinning does not pay.
    #[inline]
    pub(crate) fn budget(&self, timeout: Option<Duration>) -> Option<Duration> {
        if !self.hot.get() || !may_spin(Instant::now()) {
            return None;
        }
        let t = timeout.map_or(self.limit, |t| t.min(self.limit));
        if t.is_zero() {
            return None;
        }
        self.stay_home();
        Some(t)
    }

    /// How long a tasklet of this hub's dispatcher that is about to park
    /// for a value another thread sends may spin for it first, when no
    /// other tasklet is runnable (`ready_is_empty`): the hub's spin
    /// budget, capped at [`WAIT_SPIN`] — only while the hub is hot and the
    /// CPUs have time to spare. A value that comes meanwhile is taken
    /// without parking, so its sender need not wake this hub at all. (The
    /// home CPU is left to the hub's own spin: one clock read here, no
    /// `sched_getcpu`.)
    #[inline]
    pub(crate) fn wait_budget(&self, ready_is_empty: impl FnOnce() -> bool) -> Option<WaitSpin> {
        if !self.hot.get() || !ready_is_empty() {
            return None;
        }
        self.wait_budget_slow()
    }

    #[cold]
    fn wait_budget_slow(&self) -> Option<WaitSpin> {
        let start = Instant::now();
        let t = WAIT_SPIN.min(self.limit);
        (!t.is_zero() && may_spin(start)).then(|| WaitSpin {
            start,
            end: start + t,
        })
    }

    /// Spins for up to `budget` until `pending` is set (checked with a plain
    /// load: the drain's swap is what synchronises) or `poll_io`, called
    /// every [`IO_CHECK`] when `io_live`, reports a runnable tasklet.
    ///
    /// A spin is only worth it with a CPU to spare: a thread that spins
    /// while others wait for a CPU uses up its share, and when the wake-up
    /// it waits for comes (without a kernel wake-up, since it looks
    /// awake) it may be waiting for the scheduler instead — milliseconds,
    /// where a sleeping thread would have been woken at once. So a spin
    /// that finds itself taken off the CPU (a [`GAP`] between two clock
    /// reads) gives up at once, and the hub stops spinning for a cool-down
    /// that grows while that keeps happening.
    pub(crate) fn spin(
        &self,
        budget: Duration,
        pending: &Doorbell,
        io_live: bool,
        mut poll_io: impl FnMut() -> bool,
    ) -> SpinEnd {
        let start = Instant::now();
        let deadline = start + budget;
        let pure_until = start + PURE_SPIN.min(budget);
        let mut next_io = start + IO_CHECK;
        let mut last = start;
        loop {
            for _ in 0..HINTS {
                if pending.is_pending(Ordering::Relaxed) {
                    return SpinEnd::Woken;
                }
                std::hint::spin_loop();
            }
            let now = Instant::now();
            if now.duration_since(last) > GAP && !FORCE.load(Ordering::Relaxed) {
                cool_down(nanos(now));
                return if pending.is_pending(Ordering::Relaxed) {
                    SpinEnd::Woken
                } else {
                    SpinEnd::Expired
                };
            }
            last = now;
            if now >= deadline {
                break;
            }
            if io_live && now >= next_io {
                if poll_io() {
                    return SpinEnd::Io;
                }
                last = Instant::now();
                next_io = last + IO_CHECK;
            }
            if now >= pure_until {
                std::thread::yield_now();
            }
        }
        if pending.is_pending(Ordering::Relaxed) {
            return SpinEnd::Woken;
        }
        // Nothing came: stay cold until the next cross-thread wake-up.
        // (`hot` is only set again by a drain that finds work.)
        self.hot.set(false);
        SpinEnd::Expired
    }
}

/// Whether the hubs may spin at `now`: not forced off by a cool-down, and
/// the CPU pressure leaves time to spare (see [`cpus_to_spare`]).
fn may_spin(now: Instant) -> bool {
    if FORCE.load(Ordering::Relaxed) {
        return true;
    }
    let now = nanos(now);
    let until = COOLING.until.load(Ordering::Relaxed);
    if until != 0 && now < until {
        return false;
    }
    cpus_to_spare(now)
}

/// A spin granted to a waiting tasklet by [`IdleSpin::wait_budget`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitSpin {
    start: Instant,
    end: Instant,
}

impl WaitSpin {
    /// Ends the spin at `deadline` if that comes first.
    pub(crate) fn until(self, deadline: Option<Instant>) -> WaitSpin {
        WaitSpin {
            end: deadline.map_or(self.end, |d| d.min(self.end)),
            ..self
        }
    }

    /// Spins until `ready` says the value came (`true`) or the spin's end.
    /// Like the hub's spin, one that finds itself taken off its CPU gives
    /// up at once and starts the cool-down.
    pub(crate) fn spin(self, mut ready: impl FnMut() -> bool) -> bool {
        let mut last = self.start;
        loop {
            for _ in 0..HINTS {
                if ready() {
                    return true;
                }
                std::hint::spin_loop();
            }
            let now = Instant::now();
            if now.duration_since(last) > GAP && !FORCE.load(Ordering::Relaxed) {
                cool_down(nanos(now));
                return false;
            }
            if now >= self.end {
                return false;
            }
            last = now;
        }
    }
}

/// The CPUs were found oversubscribed at `now` (nanoseconds since
/// [`epoch`]): a spin was taken off its CPU, or a spinning window saw too
/// much CPU pressure. No hub spins for a cool-down: longer than last time
/// if that was recent (the CPUs stay oversubscribed), else shorter (a
/// passing burst of load).
fn cool_down(now: u64) {
    let last = COOLING.last_gap.swap(now, Ordering::Relaxed);
    let prev = COOLING.cool.load(Ordering::Relaxed);
    let recent = RECENT.as_nanos() as u64 + prev;
    let (min, max) = (MIN_COOL.as_nanos() as u64, MAX_COOL.as_nanos() as u64);
    let cool = if last != 0 && now.saturating_sub(last) < recent {
        (prev * 4).clamp(min, max)
    } else {
        (prev / 4).max(min)
    };
    COOLING.cool.store(cool, Ordering::Relaxed);
    COOLING.until.store(now + cool, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_some_line_of_a_pressure_file() {
        let text = "some avg10=95.06 avg60=96.41 avg300=98.10 total=9312290243\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_pressure(text), Some((95.06, 9_312_290_243)));
        assert_eq!(parse_pressure("full avg10=1.00 total=5\n"), None);
        assert_eq!(parse_pressure("some avg10=x total=5\n"), None);
        assert_eq!(parse_pressure(""), None);
    }

    #[test]
    fn a_cold_hub_does_not_spin_and_cross_thread_work_heats_it() {
        let spin = IdleSpin::new(Duration::from_micros(50));
        assert_eq!(spin.budget(None), None);
        spin.note_remote();
        force_idle_spin(true);
        assert_eq!(spin.budget(None), Some(Duration::from_micros(50)));
        assert_eq!(
            spin.budget(Some(Duration::from_micros(20))),
            Some(Duration::from_micros(20))
        );
        // Nothing arrives: the spin expires and the hub turns cold.
        let pending = Doorbell::new();
        assert_eq!(
            spin.spin(Duration::from_micros(20), &pending, false, || false),
            SpinEnd::Expired
        );
        assert_eq!(spin.budget(None), None);
        spin.note_remote();
        pending.ring();
        assert_eq!(
            spin.spin(Duration::from_micros(20), &pending, false, || false),
            SpinEnd::Woken
        );
        // A zero limit never spins.
        let off = IdleSpin::new(Duration::ZERO);
        off.note_remote();
        assert_eq!(off.budget(None), None);
    }
}
