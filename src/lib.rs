//! # tasklet
//!
//! Stackful coroutines for Rust, in the line of gevent and concurrence: write
//! plain blocking-style code — `read`, `write`, `accept`, `sleep` — and run
//! thousands of such functions concurrently on one thread.
//!
//! This facade re-exports the runtime ([`tasklet_runtime`]) at `tasklet::`
//! (including cooperative files at `tasklet::fs`), the socket layer
//! ([`tasklet_netio`]) at `tasklet::netio`, and its subprocesses at
//! `tasklet::process`.
//!
//! Optional features: `tls` adds `tasklet::netio::tls` (TLS streams on
//! rustls, with the *ring* crypto provider).
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

#![warn(missing_docs)]

pub use tasklet_runtime::*;

// Compile (and run, where not marked `no_run`) the README's examples.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Cooperative sockets: TCP, UDP, Unix sockets and servers (see [`tasklet_netio`]).
pub use tasklet_netio as netio;

/// Subprocesses with cooperative pipes and exit waits (see [`tasklet_netio::process`]).
pub use tasklet_netio::process;
