//! # tasklet
//!
//! Stackful coroutines for Rust, in the line of gevent and concurrence: write
//! plain blocking-style code — `read`, `write`, `accept`, `sleep` — and run
//! thousands of such functions concurrently on one thread.
//!
//! This crate is the one dependency a user needs: the runtime (tasklets,
//! dispatcher, hub, timers, sync primitives, offload, cooperative files at
//! [`fs`]) is at `tasklet::`, the socket layer at [`tasklet::netio`](netio),
//! and subprocesses at [`tasklet::process`](process). (They are defined in
//! the crates `tasklet-runtime` and `tasklet-netio`; don't depend on those
//! directly.)
//!
//! Optional features: `codec` (on by default) adds `tasklet::netio::codec`
//! and `tasklet::netio::protocol`; `tls` adds `tasklet::netio::tls` (TLS
//! streams on rustls, with the *ring* crypto provider); `tokio` and
//! `futures-io` connect tasklets to `async` code ([`block_on`], and the
//! `tokio` module with that feature).
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

#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub use tasklet_runtime::*;

// Compile (and run, where not marked `no_run`) the README's examples.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[cfg(feature = "tokio")]
pub mod tokio;

/// Runs `future` to completion and returns its output; under the `tokio`
/// feature, with the context of a tokio runtime entered around each poll so
/// tokio's sockets, timers and `tokio::spawn` work (see [`tokio`](mod@tokio)).
///
/// Otherwise exactly the runtime's [`block_on`](tasklet_runtime::block_on): inside a tasklet it
/// polls the future on the dispatcher and parks only the calling tasklet
/// between wake-ups (the `Waker` works from any thread); outside a
/// dispatcher it blocks the thread. Kill and timeout drop the future in the
/// tasklet; a panic in it reaches `join`.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// tasklet::dispatch(|| {
///     let t0 = Instant::now();
///     let sleepers: Vec<_> = (0..100)
///         .map(|_| tasklet::spawn(|| tasklet::block_on(tokio::time::sleep(Duration::from_millis(50)))))
///         .collect();
///     tasklet::joinall(sleepers);
///     assert!(t0.elapsed() < Duration::from_secs(5)); // ~50 ms, not 5 s
/// });
/// ```
#[cfg(feature = "tokio")]
#[inline]
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    self::tokio::block_on(future)
}

/// Runs a dispatcher on this thread until `f` — its first tasklet — returns;
/// under the `tokio` feature, inside the context of the tokio runtime (see
/// [`tokio`](mod@tokio)), so tokio's timers, sockets and `tokio::spawn` work
/// anywhere in the tasklets.
///
/// Otherwise exactly the runtime's [`dispatch`](tasklet_runtime::dispatch).
///
/// ```
/// let v = tasklet::dispatch(|| {
///     let sleep = tokio::time::sleep(std::time::Duration::from_millis(1));
///     tasklet::block_on(sleep);
///     7
/// });
/// assert_eq!(v, 7);
/// ```
///
/// # Panics
/// As the runtime's [`dispatch`](tasklet_runtime::dispatch).
#[cfg(feature = "tokio")]
pub fn dispatch<F, T>(f: F) -> T
where
    F: FnOnce() -> T,
{
    self::tokio::dispatch(f)
}

// A module with a glob re-export, not `pub use tasklet_netio as netio`: rustdoc
// renders (and searches) `tasklet::netio::*` pages only for a module, and rustc
// names the types `tasklet::netio::TcpStream` in diagnostics only this way (a
// renamed crate re-export prints as `tasklet::tasklet_netio::TcpStream`).
// tests/facade_docs.rs checks both.
pub mod netio {
    // An inner attribute: the overview's links resolve inside this module.
    #![doc = include_str!("../netio/src/overview.md")]
    #[doc(inline)]
    pub use tasklet_netio::*;
}

/// Subprocesses with cooperative pipes and exit waits (also at `tasklet::netio::process`).
#[doc(inline)]
pub use tasklet_netio::process;

/// The operator console (`tasklet::console::serve(path)`): `dump`, `stats`
/// and `kill ID` over a mode-0600 Unix socket. It lives in the socket layer
/// (`tasklet::netio::console`, it is a socket server) and is re-exported here
/// under the name operators look for.
pub use tasklet_netio::console;
/// libc hooks (feature `hook`): blocking std and C code cooperates inside
/// tasklets. See `docs/hooks.md`.
#[cfg(feature = "hook")]
pub use tasklet_runtime::hook;
