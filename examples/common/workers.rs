//! Start-up shared by the all-cores servers (`echo_server`, `http_hello`).

use std::process::ExitCode;

use tasklet::netio::WorkerListeners;
use tasklet::signal::{self, Signal};

/// `--workers N`, or every CPU this process may run on when not given.
pub fn count(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Binds `addr` for `workers` workers (before any starts, so a bad address
/// fails at once; each worker then accepts on its own listener on it) and
/// catches SIGINT/SIGTERM from here on: one that arrives before the
/// program's signal waiter runs is queued for it, so it still stops the
/// server cleanly. On failure, prints why (prefixed with `name`) and
/// returns the exit code.
pub fn bind(name: &str, addr: &str, workers: usize) -> Result<WorkerListeners, ExitCode> {
    let listeners = WorkerListeners::bind(addr, workers).map_err(|e| {
        eprintln!("{name}: cannot listen on {addr}: {e}");
        ExitCode::FAILURE
    })?;
    signal::handle(&[Signal::Int, Signal::Term]).map_err(|e| {
        eprintln!("{name}: cannot handle SIGINT/SIGTERM: {e}");
        ExitCode::FAILURE
    })?;
    Ok(listeners)
}
