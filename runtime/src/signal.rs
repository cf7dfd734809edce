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
//! Every tasklet waiting for a signal when it arrives gets it. A signal that
//! arrives while **nobody** waits for it keeps its default effect: the
//! handler is removed and the signal raised again, so a second Ctrl-C during
//! a slow graceful shutdown still terminates the process.
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
use std::sync::atomic::{AtomicI32, Ordering};
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
/// Only signals delivered after the call starts count. Works on a plain
/// thread too (it then blocks the thread). Cancel it like any blocking call,
/// with [`timeout`](crate::timeout) or `JoinHandle::kill`.
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
            hub::park(None)?;
        } else {
            thread::park();
        }
    }
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

/// How many waits (tasklets or threads) are currently registered for `sig`.
///
/// A diagnostic: a signal that arrives while this is 0 has its default
/// effect (see the module docs).
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
    installed: u32,
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
    /// Installs the handler for `sig` unless it is installed already.
    fn install(&mut self, sig: Signal) -> io::Result<()> {
        if self.installed & sig.bit() != 0 {
            return Ok(());
        }
        set_action(sig.as_raw(), handler as *const () as libc::sighandler_t)?;
        self.installed |= sig.bit();
        Ok(())
    }
}

fn set_action(signo: i32, action: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value;
    // the fields are set before use.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = action;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa` is a valid sigaction; `sigemptyset` initialises its mask,
    // and `handler` only performs async-signal-safe operations.
    let r = unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(signo, &sa, std::ptr::null_mut())
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
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
    PIPE_WRITE.store(write_fd, Ordering::Release);
    Ok(Global {
        state: Mutex::new(State {
            next_id: 1,
            waiters: Vec::new(),
            installed: 0,
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
    if !any {
        // Nobody waits: give the signal its default effect (terminate).
        log::debug!("tasklet: {sig:?} with no waiter: re-raising with the default action");
        st.installed &= !sig.bit();
        if set_action(sig.as_raw(), libc::SIG_DFL).is_ok() {
            // SAFETY: raising a signal is always sound; with the default
            // action restored it terminates the process as if unhandled.
            unsafe {
                libc::raise(sig.as_raw());
            }
        }
    }
}

/// Removes a waiter from the list when its wait ends in any way.
struct Deregister {
    g: &'static Global,
    id: u64,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        self.g.lock().waiters.retain(|w| w.id != self.id);
    }
}
