//! [`StreamServer`]: a handler tasklet per accepted connection, and the
//! accept loop behind it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use tasklet_runtime::hub::{self, Unparker};
use tasklet_runtime::signal::{self, Signal};

use super::handle::{Inner, ServerHandle};
use super::{HandlerResult, Listener};
use crate::{TcpListener, TcpStream, ToSocketAddrs, UnixListener, UnixStream};

type Handler<L> = Rc<dyn Fn(<L as Listener>::Stream, <L as Listener>::Addr)>;

/// A server that runs a handler in a tasklet of its own for every
/// connection (gevent's `StreamServer`), over a [`TcpListener`] (the
/// default), a [`UnixListener`] ([`bind_unix`](StreamServer::bind_unix)) or
/// any [`Listener`].
///
/// - [`max_connections`](Self::max_connections) bounds how many handlers run
///   at once: at the limit the accept loop waits for one to finish (new
///   clients queue in the listen backlog; none is dropped).
/// - [`ServerHandle::stop`] stops gracefully: the listener closes at once,
///   running handlers get a grace period to finish, then the rest are
///   killed (unwound at their blocking point, so their sockets close).
/// - [`stop_on_signals`](Self::stop_on_signals) makes SIGINT/SIGTERM
///   trigger that stop.
/// - Accept errors never end the server: running out of file descriptors
///   (`EMFILE`/`ENFILE`) logs one warning and backs off (no busy loop);
///   an aborted connection (`ECONNABORTED`) is skipped.
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use tasklet::netio::{StreamServer, TcpStream};
///
/// tasklet::dispatch(|| {
///     let server = StreamServer::bind("127.0.0.1:0", |mut s: TcpStream, _peer| {
///         let mut buf = [0; 1024];
///         loop {
///             let n = s.read(&mut buf)?;
///             if n == 0 {
///                 return Ok::<_, std::io::Error>(());
///             }
///             s.write_all(&buf[..n])?;
///         }
///     })
///     .unwrap()
///     .max_connections(1000);
///     let handle = server.start();
///
///     let mut c = TcpStream::connect(handle.local_addr()).unwrap();
///     c.write_all(b"hi").unwrap();
///     let mut b = [0; 2];
///     c.read_exact(&mut b).unwrap();
///     assert_eq!(&b, b"hi");
///
///     // The client is still connected: after the grace period it is closed.
///     let killed = handle.stop(Duration::from_millis(50));
///     assert_eq!(killed, 1);
///     assert_eq!(c.read(&mut b).unwrap(), 0);
/// });
/// ```
pub struct StreamServer<L: Listener = TcpListener> {
    pub(super) listener: L,
    handler: Handler<L>,
    pub(super) inner: Rc<Inner<L::Addr>>,
    grace: Duration,
    signals: bool,
}

impl StreamServer<TcpListener> {
    /// Binds a listener to `addr` and prepares a server that calls
    /// `handler(stream, peer)` in a new tasklet per connection.
    pub fn bind<A, F, R>(addr: A, handler: F) -> io::Result<StreamServer>
    where
        A: ToSocketAddrs,
        F: Fn(TcpStream, SocketAddr) -> R + 'static,
        R: HandlerResult,
    {
        StreamServer::new(TcpListener::bind(addr)?, handler)
    }

    /// Like [`bind`](Self::bind), on a listener bound with
    /// [`TcpListener::bind_reuse_port`]: run one such server per
    /// [`Runtime`](tasklet_runtime::Runtime) worker on the same address and
    /// the kernel spreads the connections over the workers. With
    /// [`stop_on_signals`](Self::stop_on_signals), SIGINT/SIGTERM stops
    /// every worker's server. `SO_REUSEPORT` would also let it join another
    /// server already listening there; bind the listeners with
    /// [`WorkerListeners`](crate::WorkerListeners) and pass each worker's to
    /// [`new`](Self::new) to have that refused with `AddrInUse`.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::time::Duration;
    /// use tasklet::netio::{StreamServer, TcpListener, TcpStream};
    ///
    /// let addr = TcpListener::bind_reuse_port("127.0.0.1:0").unwrap().local_addr().unwrap();
    /// tasklet::Runtime::new().workers(2).run(move || {
    ///     let server = StreamServer::bind_reuse_port(addr, |mut s: TcpStream, _| {
    ///         let _ = s.write_all(&[tasklet::worker_index().unwrap() as u8]);
    ///     })
    ///     .unwrap()
    ///     .start();
    ///     let mut c = TcpStream::connect(addr).unwrap();
    ///     let mut b = [0];
    ///     c.read_exact(&mut b).unwrap(); // served by one of the two workers
    ///     assert!(b[0] < 2);
    ///     server.stop(Duration::from_millis(100));
    /// });
    /// ```
    pub fn bind_reuse_port<A, F, R>(addr: A, handler: F) -> io::Result<StreamServer>
    where
        A: ToSocketAddrs,
        F: Fn(TcpStream, SocketAddr) -> R + 'static,
        R: HandlerResult,
    {
        StreamServer::new(TcpListener::bind_reuse_port(addr)?, handler)
    }
}

impl StreamServer<UnixListener> {
    /// Binds a Unix listener to the socket file `path` (which must not
    /// exist) and prepares a server that calls `handler(stream, peer)` in a
    /// new tasklet per connection. The file stays after the server stops:
    /// remove it as with std's `UnixListener`.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::time::Duration;
    /// use tasklet::netio::{StreamServer, UnixStream};
    /// let path = std::env::temp_dir().join(format!("tasklet-srv-{}.sock", std::process::id()));
    /// let _ = std::fs::remove_file(&path);
    /// tasklet::dispatch(|| {
    ///     let handle = StreamServer::bind_unix(&path, |mut s: UnixStream, _peer| {
    ///         s.write_all(b"hello")
    ///     })
    ///     .unwrap()
    ///     .start();
    ///     let mut c = UnixStream::connect(&path).unwrap();
    ///     let mut buf = String::new();
    ///     c.read_to_string(&mut buf).unwrap();
    ///     assert_eq!(buf, "hello");
    ///     handle.stop(Duration::from_secs(1));
    /// });
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn bind_unix<P, F, R>(path: P, handler: F) -> io::Result<StreamServer<UnixListener>>
    where
        P: AsRef<Path>,
        F: Fn(UnixStream, UnixSocketAddr) -> R + 'static,
        R: HandlerResult,
    {
        StreamServer::new(UnixListener::bind(path)?, handler)
    }
}

impl<L: Listener> StreamServer<L> {
    /// A server on an existing listener (bound before `dispatch`, inherited…).
    pub fn new<F, R>(listener: L, handler: F) -> io::Result<StreamServer<L>>
    where
        F: Fn(L::Stream, L::Addr) -> R + 'static,
        R: HandlerResult,
    {
        let addr = listener.local_addr()?;
        Ok(StreamServer {
            listener,
            handler: Rc::new(move |s, peer: L::Addr| handler(s, peer.clone()).report(&peer)),
            inner: Rc::new(Inner::new(addr)),
            grace: Duration::from_secs(1),
            signals: false,
        })
    }

    /// Runs at most `n` handlers at once (at least 1); the accept loop waits
    /// while `n` are running.
    pub fn max_connections(self, n: usize) -> StreamServer<L> {
        self.inner.state.borrow_mut().max = Some(n.max(1));
        self
    }

    /// The grace period used when SIGINT/SIGTERM or
    /// [`serve_forever`](Self::serve_forever)'s stop triggers (default 1 s,
    /// gevent's `stop_timeout`).
    pub fn grace_period(mut self, grace: Duration) -> StreamServer<L> {
        self.grace = grace;
        self
    }

    /// Stops the server gracefully (with the [grace period](Self::grace_period))
    /// when the process receives SIGINT or SIGTERM. The signals are then
    /// [reset](tasklet_runtime::signal::reset): a second one during the
    /// grace period terminates the process.
    pub fn stop_on_signals(mut self, on: bool) -> StreamServer<L> {
        self.signals = on;
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> L::Addr {
        self.inner.addr.clone()
    }

    /// A handle to the server, usable before and after [`start`](Self::start).
    pub fn handle(&self) -> ServerHandle<L::Addr> {
        ServerHandle {
            inner: self.inner.clone(),
        }
    }

    /// Starts accepting in a new tasklet and returns at once.
    ///
    /// # Panics
    /// Outside a dispatcher.
    pub fn start(self) -> ServerHandle<L::Addr> {
        let handle = self.handle();
        let StreamServer {
            listener,
            handler,
            inner,
            grace,
            signals,
        } = self;
        let acc_inner = inner.clone();
        let acceptor = tasklet_runtime::spawn(move || accept_loop(listener, handler, acc_inner));
        inner.state.borrow_mut().acceptor = Some(acceptor);
        if signals {
            // Caught from now on, so a signal that arrives before the waiter
            // below first runs still stops the server instead of killing
            // the process.
            if let Err(e) = signal::handle(&[Signal::Int, Signal::Term]) {
                log::warn!("tasklet-netio: cannot handle SIGINT/SIGTERM: {e}");
            }
            let h = handle.clone();
            let sig = tasklet_runtime::spawn(move || {
                match signal::wait(&[Signal::Int, Signal::Term]) {
                    Ok(s) => {
                        log::info!(
                            "tasklet-netio: {s:?} received: stopping the server on {:?} \
                             (grace {grace:?})",
                            h.inner.addr
                        );
                        // A second signal during the grace period ends the
                        // process (it would be queued otherwise).
                        if let Err(e) = signal::reset(&[Signal::Int, Signal::Term]) {
                            log::warn!("tasklet-netio: cannot reset SIGINT/SIGTERM: {e}");
                        }
                        // Detach ourselves first: `stop` kills the signal tasklet.
                        drop(h.inner.state.borrow_mut().signal_task.take());
                        h.stop(grace);
                    }
                    Err(e) => log::error!("tasklet-netio: cannot wait for SIGINT/SIGTERM: {e}"),
                }
            });
            inner.state.borrow_mut().signal_task = Some(sig);
        }
        handle
    }

    /// Starts the server and parks until it has stopped — through a
    /// [`ServerHandle::stop`] elsewhere, or SIGINT/SIGTERM if
    /// [`stop_on_signals`](Self::stop_on_signals) is set.
    pub fn serve_forever(self) {
        self.start().wait();
    }
}

impl<L: Listener> fmt::Debug for StreamServer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServer")
            .field("addr", &self.inner.addr)
            .field("max_connections", &self.inner.state.borrow().max)
            .finish()
    }
}

/// Removes a connection from the server when its handler ends in any way.
struct ConnGuard<A> {
    inner: Rc<Inner<A>>,
    id: u64,
}

impl<A> Drop for ConnGuard<A> {
    fn drop(&mut self) {
        let (handle, wake) = {
            let mut st = self.inner.state.borrow_mut();
            let handle = st.conns.remove(&self.id);
            let mut wake: Vec<Unparker> = st.accept_waiter.take().into_iter().collect();
            if st.conns.is_empty() {
                wake.append(&mut st.drain_waiters);
            }
            (handle, wake)
        };
        // Dropping our own handle detaches us: a panic is then logged by the runtime.
        drop(handle);
        for w in wake {
            w.unpark();
        }
    }
}

fn accept_loop<L: Listener>(listener: L, handler: Handler<L>, inner: Rc<Inner<L::Addr>>) {
    let mut backoff = Duration::from_millis(10);
    let mut warned = false;
    loop {
        // At the connection limit: wait for a handler to finish.
        loop {
            {
                let mut st = inner.state.borrow_mut();
                match st.max {
                    Some(m) if st.conns.len() >= m => {
                        st.accept_waiter = Some(hub::current_unparker());
                    }
                    _ => break,
                }
            }
            if hub::park(None).is_err() {
                return;
            }
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                warned = false;
                backoff = Duration::from_millis(10);
                let id = {
                    let mut st = inner.state.borrow_mut();
                    st.next_id += 1;
                    st.next_id
                };
                let guard = ConnGuard {
                    inner: inner.clone(),
                    id,
                };
                let h = handler.clone();
                let task = tasklet_runtime::spawn(move || {
                    let _guard = guard;
                    h(stream, peer);
                });
                inner.state.borrow_mut().conns.insert(id, task);
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS)
                | Some(libc::ENOMEM) => {
                    if !warned {
                        log::warn!(
                            "tasklet-netio: server on {:?}: accept failed: {e}; backing off \
                             until resources free up",
                            inner.addr
                        );
                        warned = true;
                    }
                    tasklet_runtime::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                // ECONNREFUSED, EHOSTUNREACH, ENETUNREACH: a datagram
                // socket's report of an ICMP error for an earlier `send_to`.
                Some(libc::ECONNABORTED)
                | Some(libc::EPROTO)
                | Some(libc::EINTR)
                | Some(libc::EPERM)
                | Some(libc::ECONNREFUSED)
                | Some(libc::EHOSTUNREACH)
                | Some(libc::ENETUNREACH) => {
                    log::debug!(
                        "tasklet-netio: server on {:?}: accept: {e} (skipped)",
                        inner.addr
                    );
                }
                _ => {
                    log::error!(
                        "tasklet-netio: server on {:?}: accept failed: {e}",
                        inner.addr
                    );
                    tasklet_runtime::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
}
