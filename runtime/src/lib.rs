//! # tasklet-runtime
//!
//! Stackful coroutines — **tasklets** — for plain, blocking-style Rust.
//! Thousands of sequential functions that `sleep`, `join` or wait on sockets
//! run concurrently on one thread: each is a tasklet with its own stack
//! (switched with [`corosensei`]), a per-thread **dispatcher** runs the ready
//! ones cooperatively, and when one would block it yields to the **hub**, an
//! event loop on `mio` (epoll) plus timers, which resumes it when its event
//! fires. No `async`, no callbacks, no function colouring.
//!
//! Most users depend on the facade crate `tasklet`, which re-exports this
//! crate at `tasklet::` and the socket layer at `tasklet::netio`.
//!
//! ```
//! use std::time::Duration;
//! let total = tasklet::dispatch(|| {
//!     let a = tasklet::spawn(|| { tasklet::sleep(Duration::from_millis(20)); 1 });
//!     let b = tasklet::Builder::new().name("b").stack_size(128 * 1024).spawn(|| 2).unwrap();
//!     a.join().unwrap() + b.join().unwrap()
//! });
//! assert_eq!(total, 3);
//! ```
//!
//! ## Rules of the road
//! - One dispatcher per OS thread ([`dispatch`]); tasklets never leave it, so
//!   [`spawn`] needs no `Send`. Tasklet APIs called outside `dispatch` panic
//!   with a message that says so.
//! - Scheduling is cooperative: a tasklet runs until it blocks (sleep, join,
//!   I/O, a channel) or calls [`yield_now`]. Long CPU work and blocking
//!   third-party calls belong in [`unblock`], which runs them on a thread
//!   pool while the tasklet parks; a watchdog logs a warning naming any
//!   tasklet that holds its dispatcher longer than 100 ms
//!   ([`Config::max_blocking`]).
//! - [`fs`] is `std::fs` for tasklets: file operations run on the offload
//!   threads while the tasklet parks, with read-ahead and write-behind.
//! - [`block_on`] runs an `async` library's future from tasklet code,
//!   parking only the calling tasklet between wake-ups (wakers work from
//!   any thread); see `docs/interop.md`.
//! - [`sync`] has channels, events, one-shot results, semaphores and
//!   mutexes that park tasklets (and work across threads); [`Pool`] and
//!   [`Group`] manage sets of tasklets.
//! - `std::thread_local!` is **shared by every tasklet of a dispatcher**
//!   (they all run on its thread): per-tasklet state goes in
//!   [`tasklet_local!`], whose values are dropped when the tasklet ends or
//!   is killed.
//! - Waiting for the first of several things: [`select!`] /
//!   [`sync::Select`] (channels, tasklets, events, results, a deadline),
//!   [`wait_any`] and [`iwait`] over tasklets; bounded joins that keep the
//!   handle: [`JoinHandle::wait_timeout`], [`JoinHandle::join_timeout`],
//!   [`JoinHandle::kill_and_wait`], [`killall`].
//! - A panic in a tasklet is caught at its root: [`JoinHandle::join`] returns
//!   it, and if nobody joins it is logged with `log::error!`. The dispatcher
//!   and other tasklets carry on.
//! - [`JoinHandle::kill`] and [`timeout`] interrupt a tasklet at its blocking
//!   point by unwinding it with a private payload (destructors run, nothing is
//!   printed). If your code uses `catch_unwind`, rethrow payloads you do not
//!   recognise with `resume_unwind`; a swallowed kill is raised again at the
//!   next blocking call. Destructors that run during that unwinding may block
//!   (flush a socket, take a lock); at `dispatch` exit only for a one-second
//!   grace period, after which their blocking calls fail instead of holding
//!   up the exit.
//!
//! See `docs/architecture.md` in the repository for the design.

#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(all(
    feature = "hook",
    not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))
))]
compile_error!("tasklet's `hook` feature supports Linux on x86_64 and aarch64 only");

mod affinity;
mod block_on;
mod blocks;
mod diag;
mod dispatcher;
pub mod fs;
#[cfg(feature = "hook")]
pub mod hook;
pub mod hub;
mod local;
mod observe;
mod offload;
mod overflow;
mod pool;
mod remote;
mod runtime;
#[cfg(feature = "sanitizer")]
mod sanitizer;
mod shim;
pub mod signal;
mod slots;
mod stack;
pub mod sync;
mod task;
mod timer;
// ThreadSanitizer builds only (`-Zsanitizer=thread`; see build.rs).
#[cfg(tasklet_tsan)]
mod tsan;
mod util;
mod watchdog;

pub use block_on::block_on;
pub use dispatcher::config::{dispatch, Config};
pub use dispatcher::time::{
    sleep, sleep_until, spawn_later, spawn_loop, timeout, timeout_at, yield_now, Elapsed,
};
#[doc(hidden)]
pub use hub::idle::force_idle_spin as __force_idle_spin;
pub use hub::idle::DEFAULT_IDLE_SPIN;
pub use local::{AccessError, LocalKey};
pub use observe::{
    dump, dump_on_signal, stats, Dump, Stats, TaskletInfo, TaskletState, WaitReason,
};
pub use offload::{unblock, IDLE_TIMEOUT as UNBLOCK_IDLE_TIMEOUT};
pub use pool::{Group, ImapUnordered, Pool};
pub use remote::RemoteJoinHandle;
pub use runtime::{spawn_on, try_spawn_on, worker_index, workers, Runtime, RuntimeHandle};
pub use task::{
    current, joinall, lookup, spawn, Builder, JoinError, JoinHandle, Tasklet, TaskletId,
};
pub use task::{iwait, killall, wait_any, Iwait, JoinTimeoutError};
pub use watchdog::DEFAULT_MAX_BLOCKING;
