//! tokio under [`block_on`](crate::block_on) (feature `tokio`).
//!
//! tokio's sockets, timers and `tokio::spawn` need a tokio runtime: a reactor
//! (epoll) and a timer wheel driven by some thread, and a "current runtime"
//! set on the thread that creates them. Tasklets cannot drive tokio's reactor
//! (it belongs to tokio's worker threads), so this module keeps one tokio
//! runtime for the process, started lazily in the background on first use.
//! `tasklet::dispatch` *enters its context* for the dispatcher's whole run
//! (every tasklet on the thread shares it, so `tokio::time::sleep(d)` or
//! `tokio::spawn` work anywhere in tasklet code), and [`crate::block_on`]
//! enters it around every poll where the thread is not inside it already
//! (plain threads, dispatchers started another way; see [`enter`]). tokio
//! futures register with that runtime; its worker thread wakes the tasklet
//! through the dispatcher's cross-thread queue when they are ready.
//!
//! Costs of each crossing (see `docs/interop.md` for measurements):
//! - a poll inside `dispatch` tests one thread-local flag; elsewhere it
//!   enters and leaves the runtime's context (a thread-local swap and a
//!   reference count);
//! - every wake-up of a tokio-driven future crosses threads: tokio's worker
//!   pushes onto the dispatcher's wake-up queue and, unless one is already
//!   pending, writes its eventfd to end `epoll_wait` (a syscall on each
//!   side, microseconds end to end);
//! - the socket's data is still read and written on the tasklet's thread,
//!   inside the poll: nothing is copied between threads.
//!
//! The default runtime has one worker thread (named `tasklet-tokio`) that
//! runs tokio's reactor, its timers, and whatever is `tokio::spawn`ed from
//! tasklets. Install your own (more workers, other settings) with
//! [`set_handle`] before the first use.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, EnterGuard, Handle, Runtime};

static HANDLE: OnceLock<Handle> = OnceLock::new();
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The tokio runtime tasklets use: the one passed to [`set_handle`], or
/// else a one-worker runtime with every driver enabled, started on first
/// use and kept for the life of the process.
///
/// ```
/// tasklet::dispatch(|| {
///     // Runs on the background runtime's worker; the tasklet awaits it.
///     let task = tasklet::tokio::handle().spawn(async { 6 * 7 });
///     assert_eq!(tasklet::block_on(task).unwrap(), 42);
/// });
/// ```
///
/// # Panics
/// If the background runtime cannot be started (no threads, no epoll).
pub fn handle() -> &'static Handle {
    HANDLE.get_or_init(|| {
        RUNTIME
            .get_or_init(|| {
                Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("tasklet-tokio")
                    .enable_all()
                    .build()
                    .expect("tasklet: cannot start the background tokio runtime")
            })
            .handle()
            .clone()
    })
}

/// Makes tasklets use `handle`'s runtime instead of starting one.
///
/// Call it once, before the first `dispatch`, `block_on` or [`handle`]
/// under this feature; the runtime must keep running as long as tasklets
/// use it. Gives the handle back if a runtime is already in use.
///
/// ```
/// let rt = tokio::runtime::Builder::new_multi_thread()
///     .worker_threads(2)
///     .enable_all()
///     .build()
///     .unwrap();
/// let _ = tasklet::tokio::set_handle(rt.handle().clone());
/// tasklet::dispatch(|| {
///     tasklet::block_on(tokio::time::sleep(std::time::Duration::from_millis(1)));
/// });
/// ```
pub fn set_handle(handle: Handle) -> Result<(), Handle> {
    HANDLE.set(handle)
}

std::thread_local! {
    /// Whether this thread is inside our runtime's context already: tokio's
    /// context guards must be dropped in the reverse order of their making,
    /// and tasklets interleave, so only the outermost enters.
    static ENTERED: Cell<Level> = const { Cell::new(Level::Outside) };
}

/// How this thread is inside our runtime's context.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Outside,
    /// For a scope that may end while tasklets are parked ([`enter`], a poll).
    Scoped,
    /// For a whole `dispatch`: outlives every tasklet of the thread.
    Dispatch,
}

/// Keeps the tokio runtime's context entered on this thread until dropped
/// (see [`enter`]). Not `Send`.
#[must_use = "the context is left when the guard is dropped"]
pub struct ContextGuard {
    guard: Option<EnterGuard<'static>>,
}

impl Drop for ContextGuard {
    #[inline]
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            drop(g);
            ENTERED.with(|e| e.set(Level::Outside));
        }
    }
}

impl fmt::Debug for ContextGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextGuard")
            .field("outermost", &self.guard.is_some())
            .finish()
    }
}

/// Enters the tokio runtime's context (see [`handle`]) on this thread until
/// the guard is dropped; a no-op if this thread is inside it already.
///
/// Futures that reach for the runtime when they are *created* rather than
/// first polled — `tokio::time::sleep(d)`, `Handle::current()`,
/// `tokio::spawn` outside an async block — need it. `tasklet::dispatch`
/// enters it for the dispatcher's whole run under this feature, and
/// `tasklet::block_on` around every poll; call this on other threads (or
/// in dispatchers started through `Config::dispatch`) that create such
/// futures outside an `async` block.
///
/// ```
/// let _in_tokio = tasklet::tokio::enter();
/// let sleep = tokio::time::sleep(std::time::Duration::from_millis(1));
/// tasklet::block_on(sleep);
/// ```
#[inline]
pub fn enter() -> ContextGuard {
    enter_at(Level::Scoped)
}

#[inline(always)]
fn enter_at(level: Level) -> ContextGuard {
    if ENTERED.with(|e| e.get()) != Level::Outside {
        return ContextGuard { guard: None };
    }
    ENTERED.with(|e| e.set(level));
    ContextGuard {
        guard: Some(handle().enter()),
    }
}

/// The runtime's own `dispatch`, inside the tokio runtime's context.
pub(crate) fn dispatch<F, T>(f: F) -> T
where
    F: FnOnce() -> T,
{
    let _in_tokio = enter_at(Level::Dispatch);
    tasklet_runtime::dispatch(f)
}

/// [`crate::block_on`] with the tokio runtime's context entered around each
/// poll (what `tasklet::block_on` does under the `tokio` feature); inside
/// `dispatch`, whose context outlives the call, one thread-local test.
#[inline(always)]
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    if ENTERED.with(|e| e.get()) == Level::Dispatch {
        return tasklet_runtime::block_on(future);
    }
    block_on_entering(future)
}

fn block_on_entering<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    tasklet_runtime::block_on(std::future::poll_fn(move |cx| {
        let _in_tokio = enter();
        future.as_mut().poll(cx)
    }))
}
