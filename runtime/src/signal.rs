//! Waiting for Unix signals (SIGINT, SIGTERM, …) in a tasklet.
//!
//! [`wait`] parks the calling tasklet until one of the given signals arrives;
//! [`ctrl_c`] is the common case. The first call installs a process-wide
//! handler for the requested signals. The handler only writes the signal
//! number to a self-pipe (async-signal-safe); a helper thread reads it and
//! wakes the waiting tasklets through their dispatcher's waker
//! ([`RemoteUnparker`]), so a signal wakes an
//! idle `epoll_wait` at once.
//!
//! Every tasklet waiting for a signal when it arrives gets it. Once a signal
//! has been waited for, it stays handled, as with Go's `signal.Notify`: an
//! occurrence that arrives while **nobody** waits for it is queued for the
//! next [`wait`] that includes it (occurrences of one signal coalesce, as
//! the kernel's do), so a loop like `loop { wait(&[Hup])?; reload() }` never
//! dies of a SIGHUP that came during `reload()`. [`reset`] ends that: it
//! restores exactly the disposition the signal had before the first wait
//! (the default action, or `SIG_IGN` under `nohup`). A server that stops on
//! the first Ctrl-C resets it, so that a second one during a slow graceful
//! shutdown terminates the process.
//!
//! ```no_run
//! use tasklet::signal::{self, Signal};
//! tasklet::dispatch(|| {
//!     let server = tasklet::spawn(|| { /* accept loop */ });
//!     let sig = signal::wait(&[Signal::Int, Signal::Term]).unwrap();
//!     log::info!("{sig:?}: shutting down");
//!     server.kill();
//! });
//! ```

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, Thread};

use crate::hub::{self, RemoteUnparker};

/// A signal a tasklet can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGINT` (Ctrl-C).
    Int,
    /// `SIGTERM` (`kill`, service managers).
    Term,
    /// `SIGHUP` (terminal closed; often "reload configuration").
    Hup,
    /// `SIGQUIT` (Ctrl-\).
    Quit,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
}

const ALL: [Signal; 6] = [
    Signal::Int,
    Signal::Term,
    Signal::Hup,
    Signal::Quit,
    Signal::Usr1,
    Signal::Usr2,
];

impl Signal {
    /// The signal number (`libc::SIGINT`, …).
    pub fn as_raw(self) -> i32 {
        match self {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Hup => libc::SIGHUP,
            Signal::Quit => libc::SIGQUIT,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
        }
    }

    /// The signal with this number, if it is one of [`Signal`]'s.
    pub fn from_raw(signo: i32) -> Option<Signal> {
        ALL.into_iter().find(|s| s.as_raw() == signo)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Parks the calling tasklet until one of `signals` is delivered to the
/// process, and returns which one.
///
/// The first wait for a signal installs its handler. From then on, an
/// occurrence that no wait was registered for is queued, and the next wait
/// that includes it returns it at once (see the [module docs](self));
/// before that first wait, a signal has its previous effect:
///
/// ```no_run
/// use tasklet::signal::{self, Signal};
/// # fn reload() {}
/// tasklet::dispatch(|| loop {
///     signal::wait(&[Signal::Hup]).unwrap();
///     reload(); // a SIGHUP meanwhile is kept for the next wait
/// });
/// ```
///
/// Works on a plain thread too (it then blocks the thread). Cancel it like
/// any blocking call, with [`timeout`](crate::timeout) or `JoinHandle::kill`.
///
/// # Errors
/// `InvalidInput` if `signals` is empty; the OS error if the handler or the
/// helper thread cannot be set up; an error if the tasklet is being killed
/// at `dispatch` exit and cannot block.
pub fn wait(signals: &[Signal]) -> io::Result<Signal> {
    let mask = signals.iter().fold(0, |m, s| m | s.bit());
    if mask == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "signal::wait needs at least one signal",
        ));
    }
    let g = global()?;
    let fired = Arc::new(AtomicI32::new(0));
    let id = {
        let mut st = g.lock();
        for s in signals {
            st.install(*s)?;
        }
        if let Some(i) = st.pending.iter().position(|s| mask & s.bit() != 0) {
            return Ok(st.pending.remove(i));
        }
        let id = st.next_id;
        st.next_id += 1;
        st.waiters.push(Waiter {
            id,
            mask,
            fired: fired.clone(),
            wake: None,
        });
        id
    };
    let _guard = Deregister { g, id };
    let in_tasklet = hub::in_dispatcher();
    let _counted = in_tasklet.then(|| {
        TASKLETS_WAITING.fetch_add(1, Ordering::Relaxed);
        Uncount
    });
    loop {
        {
            let mut st = g.lock();
            let signo = fired.load(Ordering::Acquire);
            if signo != 0 {
                return Ok(Signal::from_raw(signo).expect("only known signals are delivered"));
            }
            let wake = if in_tasklet {
                Wake::Tasklet(hub::current_unparker().remote())
            } else {
                Wake::Thread(thread::current())
            };
            if let Some(w) = st.waiters.iter_mut().find(|w| w.id == id) {
                w.wake = Some(wake);
            }
        }
        if in_tasklet {
            hub::park_as(None, "a signal")?;
        } else {
            thread::park();
        }
    }
}

/// Starts handling `signals` now, before any [`wait`]: from this call on,
/// each of them is caught and queued for the next `wait` that includes it,
/// instead of having its previous effect (for `SIGINT`/`SIGTERM`, killing
/// the process).
///
/// Call it at start-up, before a server announces that it is listening, so
/// a signal sent in the window between start-up and the first `wait` stops
/// the server cleanly rather than terminating it. [`reset`] undoes it.
///
/// ```no_run
/// use tasklet::signal::{self, Signal};
/// signal::handle(&[Signal::Int, Signal::Term]).unwrap();
/// // ... bind, log "listening" ...
/// tasklet::dispatch(|| {
///     let sig = signal::wait(&[Signal::Int, Signal::Term]).unwrap();
///     log::info!("stopping on {sig:?}");
/// });
/// ```
///
/// # Errors
/// `InvalidInput` if `signals` is empty; the OS error if the handler or the
/// helper thread cannot be set up.
pub fn handle(signals: &[Signal]) -> io::Result<()> {
    if signals.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "signal::handle needs at least one signal",
        ));
    }
    let g = global()?;
    let mut st = g.lock();
    for s in signals {
        st.install(*s)?;
    }
    Ok(())
}

/// Parks the calling tasklet until Ctrl-C (`SIGINT`) is pressed.
///
/// ```no_run
/// tasklet::dispatch(|| {
///     tasklet::signal::ctrl_c().unwrap();
///     println!("bye");
/// });
/// ```
pub fn ctrl_c() -> io::Result<()> {
    wait(&[Signal::Int]).map(|_| ())
}

/// Stops handling `signals`: restores the disposition each had before the
/// first [`wait`] for it installed the handler (the default action, or
/// `SIG_IGN` if the process started with it ignored, or whatever handler
/// was set before), and drops its queued occurrences.
///
/// A signal a wait is registered for right now stays handled until the last
/// such wait ends (it still gets the signal); it is restored then. A later
/// `wait` installs the handler again. Signals never waited for are left
/// alone.
///
/// ```no_run
/// use tasklet::signal::{self, Signal};
/// tasklet::dispatch(|| {
///     signal::ctrl_c().unwrap();
///     // From here a second Ctrl-C terminates at once (default action).
///     signal::reset(&[Signal::Int]).unwrap();
///     log::info!("shutting down slowly");
/// });
/// ```
///
/// # Errors
/// The OS error if a disposition cannot be restored, or if signal handling
/// could not be set up.
pub fn reset(signals: &[Signal]) -> io::Result<()> {
    let g = global()?;
    let mut st = g.lock();
    for s in signals {
        st.pending.retain(|p| p != s);
        if st.installed & s.bit() != 0 {
            st.resetting |= s.bit();
        }
    }
    st.restore_unwaited()
}

/// How many waits (tasklets or threads) are currently registered for `sig`.
///
/// A diagnostic: a signal that was waited for before and arrives while this
/// is 0 is queued for the next wait (see the module docs).
pub fn waiting(sig: Signal) -> usize {
    match global() {
        Ok(g) => g
            .lock()
            .waiters
            .iter()
            .filter(|w| w.mask & sig.bit() != 0)
            .count(),
        Err(_) => 0,
    }
}

enum Wake {
    Tasklet(RemoteUnparker),
    Thread(Thread),
}

impl Wake {
    fn wake(&self) {
        match self {
            Wake::Tasklet(u) => u.unpark(),
            Wake::Thread(t) => t.unpark(),
        }
    }
}

struct Waiter {
    id: u64,
    mask: u32,
    fired: Arc<AtomicI32>,
    wake: Option<Wake>,
}

struct State {
    next_id: u64,
    waiters: Vec<Waiter>,
    /// Signals with the handler installed.
    installed: u32,
    /// Installed signals to restore once no wait is registered for them
    /// ([`reset`]).
    resetting: u32,
    /// What each installed signal's disposition was before, by `Signal`
    /// discriminant.
    previous: [Option<libc::sigaction>; ALL.len()],
    /// Occurrences no wait has taken yet, oldest first, each signal at most
    /// once.
    pending: Vec<Signal>,
}

struct Global {
    state: Mutex<State>,
}

/// The self-pipe's write end, read by the signal handler.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

impl Global {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent
        // (every update is a single push/retain), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Installs the handler for `sig` unless it is installed already,
    /// keeping the disposition it replaces; cancels a pending [`reset`].
    fn install(&mut self, sig: Signal) -> io::Result<()> {
        self.resetting &= !sig.bit();
        if self.installed & sig.bit() != 0 {
            return Ok(());
        }
        let previous = install_handler(sig.as_raw())?;
        self.previous[sig as usize] = Some(previous);
        self.installed |= sig.bit();
        Ok(())
    }

    /// Restores the signals being [`reset`] that no wait is registered for.
    fn restore_unwaited(&mut self) -> io::Result<()> {
        let waited = self.waiters.iter().fold(0, |m, w| m | w.mask);
        let mut result = Ok(());
        for sig in ALL {
            if self.resetting & !waited & sig.bit() == 0 {
                continue;
            }
            let Some(previous) = self.previous[sig as usize].take() else {
                continue;
            };
            // SAFETY: `previous` is the sigaction the kernel returned when
            // the handler was installed, so it is valid to set again.
            if unsafe { libc::sigaction(sig.as_raw(), &previous, std::ptr::null_mut()) } < 0 {
                self.previous[sig as usize] = Some(previous);
                result = Err(io::Error::last_os_error());
                continue;
            }
            self.resetting &= !sig.bit();
            self.installed &= !sig.bit();
            self.pending.retain(|p| *p != sig);
        }
        result
    }
}

/// Installs [`handler`] for `signo`; returns the disposition it replaced.
fn install_handler(signo: i32) -> io::Result<libc::sigaction> {
    // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value;
    // the fields are set before use.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above, a valid value for the kernel to overwrite.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as *const () as libc::sighandler_t;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa` is a valid sigaction; `sigemptyset` initialises its mask,
    // `old` is a valid place for the previous action, and `handler` only
    // performs async-signal-safe operations.
    let r = unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(signo, &sa, &mut old)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(old)
    }
}

/// The signal handler: writes the signal number to the self-pipe.
extern "C" fn handler(signo: libc::c_int) {
    // SAFETY: reading and restoring errno and calling `write` on a
    // non-blocking pipe are async-signal-safe; the byte lives on this stack.
    unsafe {
        let errno = *libc::__errno_location();
        let fd = PIPE_WRITE.load(Ordering::Relaxed);
        if fd >= 0 {
            let b = signo as u8;
            // A full pipe (thousands of pending signals) drops this one: fine.
            let _ = libc::write(fd, (&b as *const u8).cast(), 1);
        }
        *libc::__errno_location() = errno;
    }
}

fn global() -> io::Result<&'static Global> {
    static GLOBAL: OnceLock<Result<Global, String>> = OnceLock::new();
    GLOBAL
        .get_or_init(|| start().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(format!("cannot set up signal handling: {e}")))
}

fn start() -> io::Result<Global> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let [read_fd, write_fd] = fds;
    // SAFETY: fcntl on the pipe's write end we just created.
    if unsafe { libc::fcntl(write_fd, libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: both fds are ours and closed exactly once here.
        unsafe {
            libc::close(read_fd);
            libc::close(write_fd);
        }
        return Err(e);
    }
    thread::Builder::new()
        .name("tasklet-signal".into())
        .spawn(move || relay(read_fd))?;
    crate::diag::runtime_thread_started();
    PIPE_WRITE.store(write_fd, Ordering::Release);
    Ok(Global {
        state: Mutex::new(State {
            next_id: 1,
            waiters: Vec::new(),
            installed: 0,
            resetting: 0,
            previous: [None; ALL.len()],
            pending: Vec::new(),
        }),
    })
}

/// The helper thread: turns bytes from the self-pipe into wake-ups.
fn relay(read_fd: RawFd) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reading into a valid local buffer from the pipe we own.
        let n = unsafe { libc::read(read_fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("tasklet: signal relay stopped: {e}");
            return;
        }
        if n == 0 {
            return;
        }
        let Some(g) = global().ok() else { return };
        for &b in &buf[..n as usize] {
            if let Some(sig) = Signal::from_raw(b as i32) {
                deliver(g, sig);
            }
        }
    }
}

fn deliver(g: &Global, sig: Signal) {
    let mut st = g.lock();
    let mut any = false;
    st.waiters.retain(|w| {
        if w.mask & sig.bit() == 0 {
            return true;
        }
        any = true;
        w.fired.store(sig.as_raw(), Ordering::Release);
        if let Some(wake) = &w.wake {
            wake.wake();
        }
        // Delivered: a waiter that has not run yet no longer counts as waiting.
        false
    });
    if any {
        // The waits that got it are over: a reset may take effect now.
        if let Err(e) = st.restore_unwaited() {
            log::error!("tasklet: cannot restore the disposition of {sig:?}: {e}");
        }
    } else if st.installed & sig.bit() != 0 && !st.pending.contains(&sig) {
        // Nobody waits: keep it for the next wait (unless it arrived just
        // before a reset restored the previous disposition: then drop it).
        log::debug!("tasklet: {sig:?} with no waiter: queued for the next wait");
        st.pending.push(sig);
    }
}

/// Removes a waiter from the list when its wait ends in any way.
struct Deregister {
    g: &'static Global,
    id: u64,
}

/// Tasklets (of any dispatcher) parked in [`wait`]: a signal from outside
/// the process can still wake them, so a dispatcher whose every tasklet is
/// blocked is not deadlocked while one of them waits here (the relay
/// thread that delivers the signal is the runtime's own).
static TASKLETS_WAITING: AtomicUsize = AtomicUsize::new(0);

/// Whether some tasklet waits for a signal (see [`TASKLETS_WAITING`]).
pub(crate) fn tasklets_waiting() -> bool {
    TASKLETS_WAITING.load(Ordering::Relaxed) > 0
}

/// Uncounts a tasklet from [`TASKLETS_WAITING`] when its wait ends.
struct Uncount;

impl Drop for Uncount {
    fn drop(&mut self) {
        TASKLETS_WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Deregister {
    fn drop(&mut self) {
        let mut st = self.g.lock();
        st.waiters.retain(|w| w.id != self.id);
        if st.resetting != 0 {
            if let Err(e) = st.restore_unwaited() {
                log::error!("tasklet: cannot restore a signal disposition: {e}");
            }
        }
    }
}
