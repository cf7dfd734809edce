//! [`dump`]: every tasklet of a dispatcher, its state and what it waits on.

use std::fmt;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::panic::Location;
use std::time::{Duration, Instant};

use super::context;
use super::stall::REPORT_LIMIT;
use super::Dispatcher;
use crate::task::header::{Header, State, WaitOn};
use crate::task::id::TaskletId;

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
pub(super) struct Human(pub(super) Duration);

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
/// [`dump_on_signal`](crate::dump_on_signal) and the `tasklet::netio::console` operator console.
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

/// One line per blocked tasklet (`  tasklet 2 'a' waits on channel receive 0x… for 51 ms, spawned at …`).
pub(super) fn list_blocked(d: &Dispatcher) -> String {
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
