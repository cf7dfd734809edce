//! tokio under [`block_on`](crate::block_on) (feature `tokio`).
//!
//! tokio's sockets, timers and `tokio::spawn` need a tokio runtime: a reactor
//! (epoll) and a timer wheel driven by some thread, and a "current runtime"
//! set on the thread that creates them. Tasklets cannot drive tokio's reactor
//! (it belongs to tokio's worker threads), so this module keeps one tokio
//! runtime for the process, started lazily in the background on first use,
//! and [`crate::block_on`] *enters its context around every poll*. tokio
//! futures then register with that runtime; its worker thread wakes the
//! tasklet through the dispatcher's cross-thread queue when they are ready.
//!
//! Costs of each crossing (see `docs/interop.md` for measurements):
//! - every poll enters and leaves the runtime's context (a thread-local swap
//!   and a reference count: tens of nanoseconds);
//! - every wake-up of a tokio-driven future crosses threads: tokio's worker
//!   pushes onto the dispatcher's wake-up queue and, unless one is already
//!   pending, writes its eventfd to end `epoll_wait` (one syscall on each
//!   side, a few microseconds end to end);
//! - the socket's data is still read and written on the tasklet's thread,
//!   inside the poll: there is no copy between threads.
//!
//! The default runtime has one worker thread (named `tasklet-tokio`) that
//! runs tokio's reactor, its timers, and whatever is `tokio::spawn`ed from
//! tasklets. Install your own (more workers, other settings) with
//! [`set_handle`] before the first `block_on`.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

static HANDLE: OnceLock<Handle> = OnceLock::new();
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The tokio runtime `block_on` enters: the one passed to [`set_handle`], or
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

/// Makes `block_on` use `handle` instead of starting its own runtime.
///
/// Call it once, before the first `block_on` (or [`handle`]); the runtime
/// must keep running as long as tasklets use it. Gives the handle back if a
/// runtime is already in use.
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
    /// Whether a poll on this thread is inside our runtime's context already
    /// (a `block_on` nested in a poll): tokio's context guards must be
    /// dropped in the order they were made, and tasklets interleave.
    static ENTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct Entered(#[allow(dead_code)] Option<tokio::runtime::EnterGuard<'static>>);

impl Drop for Entered {
    fn drop(&mut self) {
        if self.0.is_some() {
            ENTERED.with(|e| e.set(false));
        }
    }
}

#[inline]
fn enter() -> Entered {
    if ENTERED.with(|e| e.replace(true)) {
        return Entered(None);
    }
    Entered(Some(handle().enter()))
}

/// [`crate::block_on`] with the tokio runtime's context entered around each
/// poll (what `tasklet::block_on` does under the `tokio` feature).
#[inline]
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    tasklet_runtime::block_on(std::future::poll_fn(move |cx| {
        let _in_tokio = enter();
        future.as_mut().poll(cx)
    }))
}
