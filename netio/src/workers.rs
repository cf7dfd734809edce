//! One listening address shared by the workers of a multi-threaded server.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::addr::each_addr;
use crate::{sys, TcpListener, ToSocketAddrs};

/// The TCP listeners of a server that runs on several
/// [`Runtime`](tasklet_runtime::Runtime) workers: one bound up front, then one per
/// worker, all on the same address.
///
/// [`bind`](Self::bind) binds the first listener at once, before any worker
/// starts, so a bad address or a port in use fails there, and port 0
/// resolves to the one port every worker then shares. Each worker then
/// calls [`listener`](Self::listener) for its own: the first caller takes
/// the listener bound up front, the others bind new ones to the same
/// address. With more than one worker every listener sets `SO_REUSEPORT`
/// (see [`TcpListener::bind_reuse_port`]) and the kernel spreads incoming
/// connections over them; with one worker the listener is bound plainly.
/// Either way a second server started on a port that one already listens
/// on fails with `AddrInUse` instead of sharing it: before its first
/// `SO_REUSEPORT` listener, `bind` checks the address with a plain bind
/// (no listen), which fails wherever anything listens.
///
/// ```
/// use tasklet::netio::WorkerListeners;
///
/// let listeners = WorkerListeners::bind("127.0.0.1:0", 2).unwrap();
/// let addr = listeners.local_addr();
/// let ports = tasklet::Runtime::new().workers(2).run(move || {
///     // On each worker: its own listener (for a `StreamServer`, say).
///     let listener = listeners.listener().unwrap();
///     listener.local_addr().unwrap().port()
/// });
/// assert_eq!(ports, [addr.port(), addr.port()]);
/// ```
#[derive(Debug)]
pub struct WorkerListeners {
    first: Mutex<Option<TcpListener>>,
    addr: SocketAddr,
}

impl WorkerListeners {
    /// Binds the first listener to `addr` for a server of `workers` workers
    /// (with `SO_REUSEPORT` if `workers` is more than one). Fails with
    /// `AddrInUse` if anything listens on `addr` already, `SO_REUSEPORT` or
    /// not.
    pub fn bind<A: ToSocketAddrs>(addr: A, workers: usize) -> io::Result<WorkerListeners> {
        let first = if workers > 1 {
            // SO_REUSEPORT alone would join a server already listening
            // there (same user) and silently share its connections: check
            // with a plain bind first, then take the port it resolved.
            each_addr(addr, |a| {
                let free = sys::probe_bind(a)?;
                TcpListener::bind_reuse_port(free)
            })?
        } else {
            TcpListener::bind(addr)?
        };
        Ok(WorkerListeners {
            addr: first.local_addr()?,
            first: Mutex::new(Some(first)),
        })
    }

    /// The address every listener is bound to (with port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A listener for the calling worker: the one bound by
    /// [`bind`](Self::bind) the first time, a new `SO_REUSEPORT` listener on
    /// [`local_addr`](Self::local_addr) after that. Call it once per worker.
    pub fn listener(&self) -> io::Result<TcpListener> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        match first {
            Some(listener) => Ok(listener),
            None => TcpListener::bind_reuse_port(self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_gets_a_listener_on_the_one_port() {
        let listeners = WorkerListeners::bind("127.0.0.1:0", 3).unwrap();
        let addr = listeners.local_addr();
        assert_ne!(addr.port(), 0);
        let all: Vec<TcpListener> = (0..3).map(|_| listeners.listener().unwrap()).collect();
        for l in &all {
            assert_eq!(l.local_addr().unwrap(), addr);
        }
    }

    #[test]
    fn one_worker_binds_plainly_so_a_second_server_on_the_port_fails() {
        let listeners = WorkerListeners::bind("127.0.0.1:0", 1).unwrap();
        let first = listeners.listener().unwrap();
        let err = TcpListener::bind_reuse_port(first.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_second_multi_worker_server_on_the_port_fails_instead_of_sharing_it() {
        let first = WorkerListeners::bind("127.0.0.1:0", 2).unwrap();
        let addr = first.local_addr();
        let _listening = (first.listener().unwrap(), first.listener().unwrap());
        for workers in [1, 2] {
            let err = WorkerListeners::bind(addr, workers).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{workers} worker(s)");
        }
        // A server that is gone leaves the port free for the next one.
        drop(_listening);
        let again = WorkerListeners::bind(addr, 2).unwrap();
        assert_eq!(again.local_addr(), addr);
    }

    #[test]
    fn a_port_in_use_fails_at_bind_before_any_worker_starts() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = WorkerListeners::bind(taken.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
