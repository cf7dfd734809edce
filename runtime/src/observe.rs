//! Seeing inside a dispatcher: what every tasklet waits on ([`dump`]),
//! cheap counters ([`stats`]), deadlock and stall reports, and diagnostics
//! that reach stderr when no `log` logger is installed.
//!
//! # Costs
//! The switch path is untouched: a yield stores nothing here. A park stores
//! what it waits on, its deadline and the dispatcher's clock into the
//! tasklet's header (three plain stores on the blocking path); the clock is
//! read once per hub poll. Counters are plain (non-atomic) per-dispatcher
//! cells; the only one on the switch path is the ready queue's push count
//! (one `add` to memory per yield), which doubles as the switch count.

use std::cell::Cell;
use std::fmt;
use std::io::Write as _;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::context;
use crate::dispatcher::Dispatcher;
use crate::task::{Header, JoinHandle, State, TaskletId};

/// Default of [`Config::stall_warning`](crate::Config::stall_warning).
pub(crate) const DEFAULT_STALL_WARNING: Duration = Duration::from_secs(10);

/// How long everything must have been blocked (no timer, no socket) before
/// the dispatcher counts the process's threads to prove a deadlock. Waits
/// that another thread ends sooner never pay for the check.
const PROOF_DELAY: Duration = Duration::from_millis(50);

/// Longest interval between two deadlock proofs while a stall lasts.
const MAX_PROOF_INTERVAL: Duration = Duration::from_secs(60);

/// At most this many tasklets are listed in a deadlock or stall report.
const REPORT_LIMIT: usize = 32;

/// What a parked tasklet waits on, as recorded in its header by every park.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitOn {
    /// A bare [`crate::hub::park`] (no reason given).
    Parked,
    /// `sleep`/`sleep_until` (the deadline is recorded separately).
    Sleep,
    /// `JoinHandle::join` of this tasklet.
    Join(TaskletId),
    /// Readiness of a file descriptor.
    Io { fd: RawFd, write: bool },
    /// A `sync::channel` (`send` or receive) at this address.
    Channel { send: bool, addr: usize },
    /// Another `sync` primitive (its name) at this address.
    Sync(&'static str, usize),
    /// `unblock`: a call running on an offload thread.
    Offload,
    /// A reason given to [`crate::hub::park_as`].
    Other(&'static str),
}

/// What a blocked tasklet waits on (see [`TaskletInfo::wait`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitReason {
    /// `sleep` or `sleep_until` ([`TaskletInfo::deadline`] says until when).
    Sleep,
    /// `JoinHandle::join` of the tasklet with this id.
    Join(TaskletId),
    /// A socket or other file descriptor to become readable.
    Readable {
        /// The file descriptor.
        fd: RawFd,
        /// The peer's address (or, for a listener, `local <address>`), where known.
        peer: Option<String>,
    },
    /// A file descriptor to become writable.
    Writable {
        /// The file descriptor.
        fd: RawFd,
        /// The peer's address, where known.
        peer: Option<String>,
    },
    /// Room in (`send`) or a value from a [`sync::channel`](crate::sync::channel).
    Channel {
        /// `true` for a send, `false` for a receive.
        send: bool,
        /// The channel's address: equal addresses are the same channel.
        addr: usize,
    },
    /// Another [`sync`](crate::sync) primitive (`"sync::Event"`, `"sync::Mutex"`…).
    Sync {
        /// The primitive's type.
        kind: &'static str,
        /// Its address: equal addresses are the same primitive.
        addr: usize,
    },
    /// An [`unblock`](crate::unblock) call running on an offload thread.
    Offload,
    /// A bare [`hub::park`](crate::hub::park).
    Parked,
    /// A reason given to [`hub::park_as`](crate::hub::park_as).
    Other(&'static str),
}

impl WaitReason {
    fn from_wait_on(w: WaitOn, peers: bool) -> WaitReason {
        match w {
            WaitOn::Parked => WaitReason::Parked,
            WaitOn::Sleep => WaitReason::Sleep,
            WaitOn::Join(id) => WaitReason::Join(id),
            WaitOn::Io { fd, write } => {
                let peer = if peers { peer_of(fd) } else { None };
                if write {
                    WaitReason::Writable { fd, peer }
                } else {
                    WaitReason::Readable { fd, peer }
                }
            }
            WaitOn::Channel { send, addr } => WaitReason::Channel { send, addr },
            WaitOn::Sync(kind, addr) => WaitReason::Sync { kind, addr },
            WaitOn::Offload => WaitReason::Offload,
            WaitOn::Other(s) => WaitReason::Other(s),
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fd_peer = |f: &mut fmt::Formatter<'_>, what: &str, fd: &RawFd, p: &Option<String>| {
            write!(f, "{what} fd {fd}")?;
            match p {
                Some(p) => write!(f, " ({p})"),
                None => Ok(()),
            }
        };
        match self {
            WaitReason::Sleep => f.write_str("sleep"),
            WaitReason::Join(id) => write!(f, "join of tasklet {id}"),
            WaitReason::Readable { fd, peer } => fd_peer(f, "readable", fd, peer),
            WaitReason::Writable { fd, peer } => fd_peer(f, "writable", fd, peer),
            WaitReason::Channel { send: true, addr } => write!(f, "channel send {addr:#x}"),
            WaitReason::Channel { send: false, addr } => write!(f, "channel receive {addr:#x}"),
            WaitReason::Sync { kind, addr } => write!(f, "{kind} {addr:#x}"),
            WaitReason::Offload => f.write_str("unblock (offload thread)"),
            WaitReason::Parked => f.write_str("hub::park"),
            WaitReason::Other(s) => f.write_str(s),
        }
    }
}

/// The peer (or, failing that, local) address of a socket, for dumps.
fn peer_of(fd: RawFd) -> Option<String> {
    // SAFETY: `fd` belongs to an `IoSource` that a tasklet is parked on, so
    // it stays open while the dump runs (the dump runs on the same thread,
    // in another tasklet, and does not switch). The std wrappers are never
    // dropped (`ManuallyDrop`), so the fd is only borrowed, never closed;
    // `getpeername`/`getsockname` on a non-socket just fail.
    let tcp = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    if let Ok(a) = tcp.peer_addr() {
        return Some(a.to_string());
    }
    if let Ok(a) = tcp.local_addr() {
        return Some(format!("local {a}"));
    }
    // SAFETY: as above.
    let unix = ManuallyDrop::new(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) });
    let show = |a: std::os::unix::net::SocketAddr| {
        a.as_pathname().map(|p| format!("unix {}", p.display()))
    };
    if let Some(s) = unix.peer_addr().ok().and_then(show) {
        return Some(s);
    }
    unix.local_addr()
        .ok()
        .and_then(show)
        .map(|s| format!("local {s}"))
}

/// Scheduling state of a tasklet in a [`Dump`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskletState {
    /// Running right now (the tasklet that called [`dump`]).
    Running,
    /// Ready to run, waiting for its turn.
    Ready,
    /// Parked: see [`TaskletInfo::wait`].
    Blocked,
}

impl fmt::Display for TaskletState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskletState::Running => "running",
            TaskletState::Ready => "ready",
            TaskletState::Blocked => "blocked",
        })
    }
}

/// One tasklet in a [`Dump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TaskletInfo {
    /// Its id.
    pub id: TaskletId,
    /// Its name ([`Builder::name`](crate::Builder::name); the first tasklet is `main`).
    pub name: Option<String>,
    /// Running, ready or blocked.
    pub state: TaskletState,
    /// What it waits on, when blocked.
    pub wait: Option<WaitReason>,
    /// When its wait ends by itself (a sleep, a timeout on the blocking call).
    pub deadline: Option<Instant>,
    /// How long it has been blocked (measured from the dispatcher's last hub
    /// poll before it parked, so it can read slightly long).
    pub waiting_for: Option<Duration>,
    /// Where it was spawned.
    pub spawned_at: &'static Location<'static>,
}

impl TaskletInfo {
    fn of(h: &Header, now: Instant, peers: bool) -> TaskletInfo {
        let state = match h.state.get() {
            State::Running => TaskletState::Running,
            State::Ready | State::Done => TaskletState::Ready,
            State::Blocked => TaskletState::Blocked,
        };
        let blocked = state == TaskletState::Blocked;
        TaskletInfo {
            id: h.id,
            name: h.name.as_deref().map(str::to_owned),
            state,
            wait: blocked.then(|| WaitReason::from_wait_on(h.wait_on.get(), peers)),
            deadline: if blocked { h.wait_deadline.get() } else { None },
            waiting_for: if blocked {
                h.wait_since.get().map(|s| now.saturating_duration_since(s))
            } else {
                None
            },
            spawned_at: h.spawned_at,
        }
    }

    /// `tasklet 7 'name'`, as reports name it.
    fn title(&self) -> String {
        match &self.name {
            Some(n) => format!("tasklet {} '{n}'", self.id),
            None => format!("tasklet {}", self.id),
        }
    }
}

impl fmt::Display for TaskletInfo {
    /// Go's goroutine-dump shape: `tasklet 7 'name' [what, for how long]:`
    /// then `    spawned at file:line:col`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [", self.title())?;
        match &self.wait {
            Some(w) => write!(f, "{w}")?,
            None => write!(f, "{}", self.state)?,
        }
        if let Some(d) = self.waiting_for {
            write!(f, ", {}", Human(d))?;
        }
        if let Some(dl) = self.deadline {
            let left = dl.saturating_duration_since(Instant::now());
            write!(f, ", ends in {}", Human(left))?;
        }
        write!(f, "]:\n    spawned at {}", self.spawned_at)
    }
}

/// A duration for people: `850 µs`, `12 ms`, `3.4 s`, `5 min`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d < Duration::from_millis(1) {
            write!(f, "{} µs", d.as_micros())
        } else if d < Duration::from_secs(1) {
            write!(f, "{} ms", d.as_millis())
        } else if d < Duration::from_secs(120) {
            write!(f, "{:.1} s", d.as_secs_f64())
        } else {
            write!(f, "{} min", d.as_secs() / 60)
        }
    }
}

/// Every tasklet of a dispatcher at one moment: see [`dump`].
#[derive(Clone, Debug)]
pub struct Dump {
    dispatcher: u64,
    tasklets: Vec<TaskletInfo>,
}

impl Dump {
    /// The tasklets, in registry order (the first tasklet, `main`, usually first).
    pub fn tasklets(&self) -> &[TaskletInfo] {
        &self.tasklets
    }

    /// The dispatcher's number (as in log lines and watchdog warnings).
    pub fn dispatcher_id(&self) -> u64 {
        self.dispatcher
    }
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dispatcher {}: {} tasklet(s)",
            self.dispatcher,
            self.tasklets.len()
        )?;
        for t in &self.tasklets {
            write!(f, "\n{t}\n")?;
        }
        Ok(())
    }
}

/// Lists every tasklet of the current dispatcher: id, name, state, what it
/// waits on (sleep, readable/writable fd with the peer's address, channel,
/// event, mutex, join of another tasklet, offload call…), for how long, and
/// where it was spawned. Its `Display` reads like Go's goroutine dump:
///
/// ```text
/// dispatcher 1: 2 tasklet(s)
///
/// tasklet 1 'main' [running]:
///     spawned at src/main.rs:4:5
///
/// tasklet 2 'reader' [readable fd 7 (127.0.0.1:50312), 2.1 s]:
///     spawned at src/main.rs:9:17
/// ```
///
/// Costs one pass over the tasklets (and a `getpeername` per socket wait);
/// nothing is recorded for it while tasklets run. See also
/// [`dump_on_signal`] and the `tasklet::netio::console` operator console.
///
/// ```
/// use std::time::Duration;
/// tasklet::dispatch(|| {
///     let h = tasklet::Builder::new()
///         .name("sleeper")
///         .spawn(|| tasklet::sleep(Duration::from_secs(60)))
///         .unwrap();
///     tasklet::yield_now();
///     let dump = tasklet::dump();
///     let t = dump.tasklets().iter().find(|t| t.id == h.id()).unwrap();
///     assert_eq!(t.wait, Some(tasklet::WaitReason::Sleep));
///     assert!(dump.to_string().contains("tasklet 2 'sleeper' [sleep") || dump.to_string().contains("'sleeper' [sleep"));
///     h.kill();
/// });
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch).
#[track_caller]
pub fn dump() -> Dump {
    match context::try_with(|d| dump_of(d, true)) {
        Some(dump) => dump,
        None => context::outside_api("tasklet::dump"),
    }
}

fn dump_of(d: &Dispatcher, peers: bool) -> Dump {
    let now = Instant::now();
    let mut tasklets = Vec::with_capacity(d.task_count());
    d.for_each_task(|h| tasklets.push(TaskletInfo::of(h, now, peers)));
    Dump {
        dispatcher: d.id,
        tasklets,
    }
}

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
/// fire (no timer, no socket): only an unparker can end that.
fn stalled(d: &Dispatcher) -> bool {
    d.ready_is_empty() && d.hub.is_quiet()
}

/// How long the next hub poll may block, given the stall tracking: until
/// the next deadlock proof or the stall warning is due.
pub(crate) fn stall_limit(d: &Dispatcher) -> Option<Instant> {
    let o = &d.obs;
    if !stalled(d) {
        o.stall_since.set(None);
        return None;
    }
    let since = match o.stall_since.get() {
        Some(s) => s,
        None => {
            let now = Instant::now();
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

/// One line per blocked tasklet (`  tasklet 2 'a' waits on channel receive 0x… for 51 ms, spawned at …`).
fn list_blocked(d: &Dispatcher) -> String {
    let dump = dump_of(d, false);
    let mut out = String::new();
    for (shown, t) in dump.tasklets.iter().enumerate() {
        if shown == REPORT_LIMIT {
            out.push_str(&format!(
                "  … and {} more (tasklet::dump() lists them all)\n",
                dump.tasklets.len() - shown
            ));
            break;
        }
        let what = match &t.wait {
            Some(w) => format!("waits on {w}"),
            None => t.state.to_string(),
        };
        let since = match t.waiting_for {
            Some(d) => format!(" for {}", Human(d)),
            None => String::new(),
        };
        out.push_str(&format!(
            "  {} {what}{since}, spawned at {}\n",
            t.title(),
            t.spawned_at
        ));
    }
    out
}

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
fn only_runtime_threads() -> bool {
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
    let (_, idle) = crate::offload::thread_counts();
    threads <= 1 + RUNTIME_THREADS.load(Ordering::Relaxed) + idle
}

static WATCHDOG_WARNINGS: AtomicU64 = AtomicU64::new(0);

/// Counts a watchdog warning (for [`Stats::watchdog_warnings`]).
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
