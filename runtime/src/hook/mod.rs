//! gevent's `monkey.patch_all()`, done safely: with the `hook` feature the
//! program's blocking libc calls cooperate inside tasklets.
//!
//! The feature defines the libc entry points listed in [`INTERPOSED`] in the
//! final binary. Called **inside a tasklet** on a socket or pipe, a call that
//! would block parks the tasklet on the hub instead of blocking the thread,
//! so unmodified blocking code — `std::net`, `std::thread::sleep`, `ureq`,
//! the sync `redis` client, C client libraries — runs concurrently with
//! every other tasklet. Called anywhere else (a plain thread, the
//! dispatcher's own event loop) or on a regular file, each behaves as
//! libc's does, for the price of one thread-local check.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::{Duration, Instant};
//!
//! tasklet::dispatch(|| {
//!     if !tasklet::hook::is_active() {
//!         return; // built without the feature, or disabled with TASKLET_HOOK=0
//!     }
//!     // Plain std types, plain blocking calls, one thread.
//!     let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let server = tasklet::spawn(move || {
//!         let (mut s, _) = listener.accept().unwrap();
//!         let mut buf = [0; 5];
//!         s.read_exact(&mut buf).unwrap();
//!         s.write_all(&buf).unwrap();
//!     });
//!     let t = Instant::now();
//!     let sleepers: Vec<_> = (0..10)
//!         .map(|_| tasklet::spawn(|| std::thread::sleep(Duration::from_millis(100))))
//!         .collect();
//!     let mut c = std::net::TcpStream::connect(addr).unwrap();
//!     c.write_all(b"hello").unwrap();
//!     let mut buf = [0; 5];
//!     c.read_exact(&mut buf).unwrap();
//!     assert_eq!(&buf, b"hello");
//!     server.join().unwrap();
//!     tasklet::joinall(sleepers);
//!     assert!(t.elapsed() < Duration::from_secs(1)); // the ten sleeps overlapped
//! });
//! ```
//!
//! How it works, in short: the first time a tasklet makes a hooked call on
//! a descriptor, the descriptor is classified. A socket or pipe the program
//! left in blocking mode is switched to `O_NONBLOCK` underneath (hidden:
//! `fcntl(F_GETFL)` still reports what the program set); the call is tried,
//! and on `EAGAIN` the tasklet waits for readiness on the hub, honouring
//! `SO_RCVTIMEO`/`SO_SNDTIMEO`. Descriptors the program made non-blocking
//! itself (all of `tasklet::netio`'s, mio's) are passed straight through.
//! Outside tasklets, a descriptor with hidden `O_NONBLOCK` is waited on
//! with `poll(2)`, so it still blocks there as the program expects.
//!
//! A kill or [`timeout`](crate::timeout) cannot unwind through a libc call
//! (its callers — std's I/O code, C libraries — are compiled as
//! non-unwinding, and unwinding into them aborts the process or corrupts
//! their state). An interrupted hooked call therefore returns an error
//! (`ECANCELED`, or `EINTR` for sleeps), the interrupt stays pending and
//! is raised at the tasklet's next blocking call through the runtime: a
//! `timeout` still returns `Err(Elapsed)`, a killed tasklet still joins as
//! killed. See `docs/hooks.md` for linking (`-Wl,--export-dynamic` for
//! shared libraries) and the limits.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libc::c_int;

use crate::hub::{self, Cancelled, Direction, IoSource};

#[macro_use]
mod sys;
mod sys_fd;
mod sys_poll;

/// The libc functions the `hook` feature interposes.
pub const INTERPOSED: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "recv",
    "recvfrom",
    "recvmsg",
    "send",
    "sendto",
    "sendmsg",
    "connect",
    "accept",
    "accept4",
    "poll",
    "ppoll",
    "select",
    "epoll_wait",
    "nanosleep",
    "clock_nanosleep",
    "usleep",
    "sleep",
    "sched_yield",
    "close",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "ioctl(FIONBIO)",
    "setsockopt(SO_RCVTIMEO, SO_SNDTIMEO)",
    "getaddrinfo",
    "__read_chk",
    "__recv_chk",
    "__recvfrom_chk",
    "__poll_chk",
];

const UNINIT: u8 = 0;
const ACTIVE: u8 = 1;
const DISABLED: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// Reads `TASKLET_HOOK` and logs which calls are interposed (once per process).
pub(crate) fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let off = std::env::var("TASKLET_HOOK")
            .map(|v| matches!(v.trim(), "0" | "off" | "false" | "no"))
            .unwrap_or(false);
        if off {
            STATE.store(DISABLED, Ordering::Release);
            log::info!("tasklet::hook: disabled by TASKLET_HOOK; libc calls block as usual");
            return;
        }
        STATE.store(ACTIVE, Ordering::Release);
        let libs = if covers_shared_libraries() {
            "shared libraries covered"
        } else {
            "shared libraries NOT covered (link the executable with -Wl,--export-dynamic)"
        };
        log::info!(
            "tasklet::hook: interposing {} inside tasklets; {libs}",
            INTERPOSED.join(", ")
        );
    });
}

/// Whether the hooks are in force: the `hook` feature is compiled in and
/// not disabled by the environment variable `TASKLET_HOOK=0`.
///
/// ```
/// // Built with `--features hook`, this is true unless TASKLET_HOOK=0.
/// let _ = tasklet::hook::is_active();
/// ```
pub fn is_active() -> bool {
    init();
    STATE.load(Ordering::Acquire) == ACTIVE
}

/// Whether shared libraries the program loads (C client libraries, say)
/// call the hooks too: true when the executable exports the interposed
/// symbols (linked with `-Wl,--export-dynamic`). The program's own Rust code,
/// std included, is covered either way.
pub fn covers_shared_libraries() -> bool {
    sys::exported()
}

/// Whether a hooked call should cooperate: a tasklet runs on this thread.
#[inline(always)]
fn cooperative() -> bool {
    hub::in_tasklet() && STATE.load(Ordering::Relaxed) == ACTIVE
}

// ------------------------------------------------------------ per-fd state

/// A socket or pipe we switched to `O_NONBLOCK` underneath the program.
const MANAGED: u32 = 1;
/// Classified and left alone: not a socket/pipe, a standard stream, or
/// non-blocking by the program's own choice when classified.
const PASS: u32 = 2;
/// The program itself asked for non-blocking mode (only with `MANAGED`).
const USER_NB: u32 = 4;
/// `SO_RCVTIMEO` / `SO_SNDTIMEO` is set to a non-zero value.
const RCVTIMEO: u32 = 8;
const SNDTIMEO: u32 = 16;
/// The low byte holds the flags; the rest counts closes of the descriptor
/// number, so a hub registration made for an earlier file is never reused.
const FLAGS: u32 = 0xff;
const GEN_ONE: u32 = 0x100;

const CHUNK: usize = 4096;
const CHUNKS: usize = 256;
/// Flags of descriptors 0..1M, allocated 4096 at a time on first use.
static TABLE: [OnceLock<Box<[AtomicU32]>>; CHUNKS] = [const { OnceLock::new() }; CHUNKS];

fn slot(fd: c_int) -> Option<&'static AtomicU32> {
    let i = usize::try_from(fd).ok()?;
    TABLE.get(i / CHUNK)?.get().map(|c| &c[i % CHUNK])
}

fn slot_alloc(fd: c_int) -> Option<&'static AtomicU32> {
    let i = usize::try_from(fd).ok()?;
    let Some(chunk) = TABLE.get(i / CHUNK) else {
        warn_once(
            &BIG_FD,
            "descriptors above 1048575 are not made cooperative (they block the dispatcher)",
        );
        return None;
    };
    let c = chunk.get_or_init(|| (0..CHUNK).map(|_| AtomicU32::new(0)).collect());
    Some(&c[i % CHUNK])
}

static BIG_FD: AtomicBool = AtomicBool::new(false);
static NO_WAIT: AtomicBool = AtomicBool::new(false);

fn warn_once(flag: &AtomicBool, msg: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        log::warn!("tasklet::hook: {msg}");
    }
}

fn flags(fd: c_int) -> u32 {
    slot(fd).map_or(0, |s| s.load(Ordering::Acquire))
}

/// Whether `st` describes a descriptor that looks blocking to the program
/// but is non-blocking underneath: the hooks must do the waiting.
#[inline]
fn hidden_nonblocking(st: u32) -> bool {
    st & (MANAGED | USER_NB) == MANAGED
}

/// The descriptor's flags, classifying it first if it is new.
fn classify(fd: c_int) -> u32 {
    let Some(s) = slot_alloc(fd) else {
        return PASS;
    };
    let st = s.load(Ordering::Acquire);
    if st & (MANAGED | PASS) != 0 {
        return st;
    }
    let class = if fd < 3 {
        // The standard streams share their file description with other
        // processes (the shell, a parent): never change their mode.
        PASS
    } else {
        match sys::get_fl(fd) {
            // A bad descriptor: let the call itself report it.
            None => return st | PASS,
            Some(fl) if fl & libc::O_NONBLOCK != 0 => PASS,
            Some(fl) => {
                if sys::is_socket_or_pipe(fd) && sys::set_fl(fd, fl | libc::O_NONBLOCK) {
                    MANAGED
                } else {
                    PASS
                }
            }
        }
    };
    match s.compare_exchange(st, st | class, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => st | class,
        // Closed or reconfigured meanwhile (another thread): treat as foreign.
        Err(_) => PASS,
    }
}

/// The descriptor number was closed (or replaced by `dup2`): forget it.
fn forget(fd: c_int) {
    if let Some(s) = slot(fd) {
        let _ = s.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some((v & !FLAGS).wrapping_add(GEN_ONE))
        });
    }
    if hub::in_tasklet() {
        let entry = REGS
            .try_with(|r| {
                r.try_borrow_mut()
                    .ok()
                    .and_then(|mut r| r.get_mut(fd as usize).and_then(Option::take))
            })
            .ok()
            .flatten();
        if let Some(e) = entry {
            // Wakes tasklets waiting on it: they retry and see EBADF.
            e.src.deregister();
        }
    }
}

/// A descriptor just created by `accept`/`dup`: fresh flags, `extra` added.
fn fresh(fd: c_int, extra: u32) {
    if fd < 0 {
        return;
    }
    forget(fd);
    if extra != 0 {
        if let Some(s) = slot_alloc(fd) {
            s.fetch_or(extra, Ordering::AcqRel);
        }
    }
}

fn set_flag(fd: c_int, flag: u32, on: bool) {
    if let Some(s) = slot_alloc(fd) {
        if on {
            s.fetch_or(flag, Ordering::AcqRel);
        } else {
            s.fetch_and(!flag, Ordering::AcqRel);
        }
    }
}

// ------------------------------------------------------- hub registrations

/// A descriptor the hooks wait on; never closes it.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

struct Entry {
    gen: u32,
    src: Rc<IoSource<Fd>>,
}

thread_local! {
    /// This thread's hub registrations, by descriptor number.
    static REGS: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// The calling thread's hub source for `fd` (registered lazily by its first wait).
fn source(fd: c_int) -> Option<Rc<IoSource<Fd>>> {
    let gen = slot_alloc(fd)?.load(Ordering::Acquire) & !FLAGS;
    let i = usize::try_from(fd).ok()?;
    REGS.try_with(|r| {
        let mut r = r.try_borrow_mut().ok()?;
        if r.len() <= i {
            r.resize_with(i + 1, || None);
        }
        if let Some(e) = &r[i] {
            if e.gen == gen {
                return Some(e.src.clone());
            }
        }
        let src = Rc::new(IoSource::new(Fd(fd)));
        if let Some(old) = r[i].replace(Entry {
            gen,
            src: src.clone(),
        }) {
            old.src.deregister();
        }
        Some(src)
    })
    .ok()
    .flatten()
}

/// Why a wait in a tasklet ended without readiness.
enum Stop {
    TimedOut,
    Interrupted,
    Errno(c_int),
}

impl Stop {
    /// Sets errno for a failed call; `timed_out` is the errno a timeout gives.
    fn fail(self, timed_out: c_int) -> isize {
        sys::set_errno(match self {
            Stop::TimedOut => timed_out,
            Stop::Interrupted => {
                interrupted();
                libc::ECANCELED
            }
            Stop::Errno(e) => e,
        });
        -1
    }
}

thread_local! {
    /// The tasklet whose hooked calls were last interrupted, and how many
    /// times in a row.
    static INTERRUPTED: std::cell::Cell<(Option<crate::TaskletId>, u32)> =
        const { std::cell::Cell::new((None, 0)) };
}

/// A hooked call is failing because of a kill or timeout: after many in a
/// row from one tasklet, say loudly that it retries instead of giving up.
fn interrupted() {
    let Some(id) = crate::dispatcher::context::current_task().map(|t| t.id) else {
        return;
    };
    let _ = INTERRUPTED.try_with(|c| {
        let (last, n) = c.get();
        let n = if last == Some(id) {
            n.saturating_add(1)
        } else {
            1
        };
        c.set((Some(id), n));
        if n == 1000 {
            log::warn!(
                "tasklet::hook: tasklet {id:?} was killed or timed out, but keeps making blocking \
                 calls that fail with ECANCELED (a kill cannot unwind through a libc call): \
                 does it retry failed calls in a loop? It yields at each call; dispatch exit \
                 abandons it"
            );
        }
    });
}

fn stop_of(e: io::Error) -> Stop {
    if e.kind() == io::ErrorKind::TimedOut {
        Stop::TimedOut
    } else if e.get_ref().is_some_and(|x| x.is::<Cancelled>()) {
        Stop::Interrupted
    } else {
        Stop::Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// Parks the calling tasklet until `fd` is ready for `dir`.
fn wait_fd(fd: c_int, dir: Direction, deadline: Option<Instant>) -> Result<(), Stop> {
    let Some(src) = source(fd) else {
        return Err(Stop::Errno(libc::EAGAIN));
    };
    match hub::catch_interrupt(|| src.wait(dir, deadline)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(stop_of(e)),
        Err(Cancelled) => Err(Stop::Interrupted),
    }
}

/// The deadline `SO_RCVTIMEO`/`SO_SNDTIMEO` gives a call starting now.
fn sock_deadline(fd: c_int, st: u32, dir: Direction) -> Option<Instant> {
    let (bit, opt) = match dir {
        Direction::Read => (RCVTIMEO, libc::SO_RCVTIMEO),
        Direction::Write => (SNDTIMEO, libc::SO_SNDTIMEO),
    };
    if st & bit == 0 {
        return None;
    }
    let d = sys::sock_timeout(fd, opt)?;
    Instant::now().checked_add(d)
}

fn poll_events(dir: Direction) -> i16 {
    match dir {
        Direction::Read => libc::POLLIN,
        Direction::Write => libc::POLLOUT,
    }
}

// ------------------------------------------------------------- the calls

/// A read- or write-like call: `op` is the real call (returns -1 and sets
/// errno on failure); `dontwait` is set for `MSG_DONTWAIT`.
#[inline]
fn io(fd: c_int, dir: Direction, dontwait: bool, mut op: impl FnMut() -> isize) -> isize {
    if !cooperative() {
        let r = op();
        if r < 0 && !dontwait && sys::errno() == libc::EAGAIN {
            return block_outside(fd, dir, op);
        }
        return r;
    }
    let st = classify(fd);
    if !hidden_nonblocking(st) || dontwait {
        return op();
    }
    io_in_tasklet(fd, st, dir, op)
}

fn io_in_tasklet(fd: c_int, st: u32, dir: Direction, mut op: impl FnMut() -> isize) -> isize {
    let mut deadline = None;
    let mut first = true;
    loop {
        let r = op();
        if r >= 0 || sys::errno() != libc::EAGAIN {
            return r;
        }
        if first {
            first = false;
            deadline = sock_deadline(fd, st, dir);
        }
        if let Err(stop) = wait_fd(fd, dir, deadline) {
            return stop.fail(libc::EAGAIN);
        }
    }
}

/// `EAGAIN` outside a tasklet: if the program thinks the descriptor is
/// blocking (we made it non-blocking in a tasklet), block in `poll(2)`.
#[cold]
#[inline(never)]
fn block_outside(fd: c_int, dir: Direction, mut op: impl FnMut() -> isize) -> isize {
    let st = flags(fd);
    if !hidden_nonblocking(st) {
        sys::set_errno(libc::EAGAIN);
        return -1;
    }
    let deadline = sock_deadline(fd, st, dir);
    loop {
        match sys::poll_one(fd, poll_events(dir), deadline) {
            0 => {
                sys::set_errno(libc::EAGAIN);
                return -1;
            }
            r if r < 0 => return -1,
            _ => {}
        }
        let r = op();
        if r >= 0 || sys::errno() != libc::EAGAIN {
            return r;
        }
    }
}

/// `accept`/`accept4`: `op(flags)` is the real `accept4`.
fn accept(fd: c_int, flags: c_int, mut op: impl FnMut(c_int) -> c_int) -> c_int {
    let user_nb = flags & libc::SOCK_NONBLOCK != 0;
    let mark = if user_nb { PASS } else { 0 };
    if !cooperative() {
        let r = io(fd, Direction::Read, false, || op(flags) as isize) as c_int;
        fresh(r, mark);
        return r;
    }
    let st = classify(fd);
    if !hidden_nonblocking(st) {
        let r = op(flags);
        fresh(r, mark);
        return r;
    }
    // Accept straight into non-blocking mode: saves classifying the new
    // connection (three system calls) on its first use.
    let r = io_in_tasklet(fd, st, Direction::Read, || {
        op(flags | libc::SOCK_NONBLOCK) as isize
    }) as c_int;
    fresh(r, if user_nb { PASS } else { MANAGED });
    r
}

/// `connect`: `op` is the real call.
fn connect(fd: c_int, op: impl FnOnce() -> c_int) -> c_int {
    let coop = cooperative();
    let st = if coop { classify(fd) } else { flags(fd) };
    let r = op();
    if r == 0 || sys::errno() != libc::EINPROGRESS || !hidden_nonblocking(st) {
        return r;
    }
    let deadline = sock_deadline(fd, st, Direction::Write);
    loop {
        if coop {
            if let Err(stop) = wait_fd(fd, Direction::Write, deadline) {
                return stop.fail(libc::EINPROGRESS) as c_int;
            }
        }
        let timeout = if coop { Some(Instant::now()) } else { deadline };
        match sys::poll_one(fd, libc::POLLOUT, timeout) {
            n if n > 0 => break,
            0 if !coop => {
                sys::set_errno(libc::EINPROGRESS);
                return -1;
            }
            0 => {}
            _ => return -1,
        }
    }
    match sys::so_error(fd) {
        Ok(0) => 0,
        Ok(e) | Err(e) => {
            sys::set_errno(e);
            -1
        }
    }
}

/// `poll`/`ppoll`/`select`/`epoll_wait` in a tasklet: `check` is the real
/// call with a zero timeout; `fds` the descriptors and directions to wait on.
fn poll_in_tasklet(
    fds: &[(c_int, Direction)],
    timeout: Option<Duration>,
    mut check: impl FnMut() -> c_int,
    mut block: impl FnMut(Option<Instant>) -> c_int,
) -> c_int {
    let r = check();
    if r != 0 || timeout == Some(Duration::ZERO) {
        return r;
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let mut srcs = Vec::with_capacity(fds.len());
        for &(fd, dir) in fds {
            match source(fd) {
                Some(s) => srcs.push((s, dir)),
                None => {
                    warn_once(
                        &NO_WAIT,
                        "a descriptor could not be registered with the hub; poll blocks the thread",
                    );
                    return block(deadline);
                }
            }
        }
        let refs: Vec<(&IoSource<Fd>, Direction)> = srcs.iter().map(|(s, d)| (&**s, *d)).collect();
        match hub::catch_interrupt(|| hub::wait_any(&refs, deadline)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                match stop_of(e) {
                    Stop::TimedOut => return check(),
                    Stop::Interrupted => return Stop::Interrupted.fail(0) as c_int,
                    // Not pollable through epoll (rare): wait the plain way.
                    Stop::Errno(_) => {
                        warn_once(&NO_WAIT, "a descriptor could not be registered with the hub; poll blocks the thread");
                        return block(deadline);
                    }
                }
            }
            Err(Cancelled) => return Stop::Interrupted.fail(0) as c_int,
        }
        let r = check();
        if r != 0 || deadline.is_some_and(|d| Instant::now() >= d) {
            return r;
        }
    }
}

/// The directions a `pollfd`'s requested events wait for.
fn poll_dirs(fds: &[libc::pollfd]) -> Vec<(c_int, Direction)> {
    let mut v = Vec::with_capacity(fds.len());
    for p in fds.iter().filter(|p| p.fd >= 0) {
        let out = p.events & (libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND) != 0;
        if out {
            v.push((p.fd, Direction::Write));
        }
        if p.events & !(libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND) != 0 || !out {
            v.push((p.fd, Direction::Read));
        }
    }
    v
}

/// A sleep in a tasklet. `Err` if a kill or timeout interrupted it.
fn sleep_in_tasklet(d: Duration) -> Result<(), Cancelled> {
    hub::catch_interrupt(|| {
        if d.is_zero() {
            crate::yield_now()
        } else {
            crate::sleep(d)
        }
    })
    .inspect_err(|_| interrupted())
}

/// `fcntl(F_GETFL)` result as the program should see it.
fn visible_fl(fd: c_int, fl: c_int) -> c_int {
    let st = flags(fd);
    if st & MANAGED == 0 || fl < 0 {
        return fl;
    }
    let fl = fl & !libc::O_NONBLOCK;
    if st & USER_NB != 0 {
        fl | libc::O_NONBLOCK
    } else {
        fl
    }
}

/// The program sets or clears non-blocking mode (`fcntl(F_SETFL)`,
/// `ioctl(FIONBIO)`): `op(nonblocking)` applies it for real.
fn set_nonblocking(fd: c_int, on: bool, op: impl FnOnce(bool) -> c_int) -> c_int {
    let st = flags(fd);
    if st & MANAGED != 0 {
        let r = op(true);
        if r >= 0 {
            set_flag(fd, USER_NB, on);
        }
        r
    } else {
        let r = op(on);
        if r >= 0 && st & PASS != 0 {
            // Classify again on the next use in a tasklet.
            set_flag(fd, PASS, false);
        }
        r
    }
}

/// `setsockopt` succeeded: track the socket timeouts.
fn after_setsockopt(fd: c_int, level: c_int, name: c_int, nonzero: bool) {
    if level != libc::SOL_SOCKET {
        return;
    }
    match name {
        libc::SO_RCVTIMEO => set_flag(fd, RCVTIMEO, nonzero),
        libc::SO_SNDTIMEO => set_flag(fd, SNDTIMEO, nonzero),
        _ => {}
    }
}

/// `dup*` made `new` a copy of `old`: same file description, same state.
fn after_dup(old: c_int, new: c_int) {
    if new < 0 || new == old {
        return;
    }
    let inherited = flags(old) & (MANAGED | PASS | USER_NB | RCVTIMEO | SNDTIMEO);
    fresh(new, inherited);
}
