//! [`StreamServer`]: gevent's `StreamServer` — a handler per connection, a
//! connection limit and a graceful stop.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet_runtime::hub::{self, Unparker};
use tasklet_runtime::signal::{self, Signal};
use tasklet_runtime::JoinHandle;

use crate::{TcpListener, TcpStream, ToSocketAddrs};

/// What a connection handler may return: `()` or a `Result` (with any
/// success value, e.g. a byte count) whose error is logged (at debug level:
/// a peer that resets is business as usual).
pub trait HandlerResult {
    /// Logs the outcome of the handler for the connection from `peer`.
    fn report(self, peer: SocketAddr);
}

impl HandlerResult for () {
    fn report(self, _peer: SocketAddr) {}
}

impl<T, E: fmt::Display> HandlerResult for Result<T, E> {
    fn report(self, peer: SocketAddr) {
        if let Err(e) = self {
            log::debug!("tasklet-netio: connection from {peer} ended with an error: {e}");
        }
    }
}

type Handler = Rc<dyn Fn(TcpStream, SocketAddr)>;

/// A TCP server that runs a handler in a tasklet of its own for every
/// connection (gevent's `StreamServer`).
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
/// use tasklet_netio::{StreamServer, TcpStream};
///
/// tasklet_runtime::dispatch(|| {
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
pub struct StreamServer {
    listener: TcpListener,
    handler: Handler,
    inner: Rc<Inner>,
    grace: Duration,
    signals: bool,
}

impl StreamServer {
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

    /// A server on an existing listener (bound before `dispatch`, inherited…).
    pub fn new<F, R>(listener: TcpListener, handler: F) -> io::Result<StreamServer>
    where
        F: Fn(TcpStream, SocketAddr) -> R + 'static,
        R: HandlerResult,
    {
        let addr = listener.local_addr()?;
        Ok(StreamServer {
            listener,
            handler: Rc::new(move |s, peer| handler(s, peer).report(peer)),
            inner: Rc::new(Inner {
                addr,
                state: RefCell::new(State::default()),
            }),
            grace: Duration::from_secs(1),
            signals: false,
        })
    }

    /// Runs at most `n` handlers at once (at least 1); the accept loop waits
    /// while `n` are running.
    pub fn max_connections(self, n: usize) -> StreamServer {
        self.inner.state.borrow_mut().max = Some(n.max(1));
        self
    }

    /// The grace period used when SIGINT/SIGTERM or
    /// [`serve_forever`](Self::serve_forever)'s stop triggers (default 1 s,
    /// gevent's `stop_timeout`).
    pub fn grace_period(mut self, grace: Duration) -> StreamServer {
        self.grace = grace;
        self
    }

    /// Stops the server gracefully (with the [grace period](Self::grace_period))
    /// when the process receives SIGINT or SIGTERM. The signals are then
    /// [reset](tasklet_runtime::signal::reset): a second one during the
    /// grace period terminates the process.
    pub fn stop_on_signals(mut self, on: bool) -> StreamServer {
        self.signals = on;
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A handle to the server, usable before and after [`start`](Self::start).
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            inner: self.inner.clone(),
        }
    }

    /// Starts accepting in a new tasklet and returns at once.
    ///
    /// # Panics
    /// Outside a dispatcher.
    pub fn start(self) -> ServerHandle {
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
            let h = handle.clone();
            let sig = tasklet_runtime::spawn(move || {
                match signal::wait(&[Signal::Int, Signal::Term]) {
                    Ok(s) => {
                        log::info!(
                        "tasklet-netio: {s:?} received: stopping the server on {} (grace {grace:?})",
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

impl fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServer")
            .field("addr", &self.inner.addr)
            .field("max_connections", &self.inner.state.borrow().max)
            .finish()
    }
}

/// A handle to a running [`StreamServer`] (cheap to clone, not `Send`).
#[derive(Clone)]
pub struct ServerHandle {
    inner: Rc<Inner>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// How many connection handlers are running.
    pub fn connections(&self) -> usize {
        self.inner.state.borrow().conns.len()
    }

    /// Whether the server has fully stopped.
    pub fn is_stopped(&self) -> bool {
        self.inner.state.borrow().stopped
    }

    /// Stops the server: closes the listener, waits up to `grace` for the
    /// running handlers to finish, then kills the rest and waits for them to
    /// unwind. Returns how many handlers were killed.
    ///
    /// If another tasklet is already stopping the server, waits for that stop
    /// to complete and returns 0. Do not call it from a connection handler of
    /// the same server (it would wait for itself): spawn a tasklet for it.
    pub fn stop(&self, grace: Duration) -> usize {
        {
            let mut st = self.inner.state.borrow_mut();
            if st.stopping {
                drop(st);
                self.wait();
                return 0;
            }
            st.stopping = true;
        }
        let (acceptor, sig) = {
            let mut st = self.inner.state.borrow_mut();
            (st.acceptor.take(), st.signal_task.take())
        };
        if let Some(sig) = sig {
            sig.kill();
        }
        if let Some(acc) = acceptor {
            acc.kill();
            let _ = acc.join(); // the listener is closed once it has unwound
        }
        let deadline = Instant::now().checked_add(grace);
        self.wait_drained(deadline);
        let n = {
            let st = self.inner.state.borrow();
            for h in st.conns.values() {
                h.kill();
            }
            st.conns.len()
        };
        if n > 0 {
            log::info!(
                "tasklet-netio: server on {}: killing {n} connection(s) still open after {grace:?}",
                self.inner.addr
            );
            self.wait_drained(None);
        }
        let waiters = {
            let mut st = self.inner.state.borrow_mut();
            st.stopped = true;
            std::mem::take(&mut st.done_waiters)
        };
        for w in waiters {
            w.unpark();
        }
        n
    }

    /// Parks until the server has stopped.
    pub fn wait(&self) {
        loop {
            {
                let mut st = self.inner.state.borrow_mut();
                if st.stopped {
                    return;
                }
                st.done_waiters.push(hub::current_unparker());
            }
            if hub::park(None).is_err() {
                return;
            }
        }
    }

    /// Parks until no handler runs or `deadline` passes.
    fn wait_drained(&self, deadline: Option<Instant>) {
        loop {
            {
                let mut st = self.inner.state.borrow_mut();
                if st.conns.is_empty() {
                    return;
                }
                st.drain_waiters.push(hub::current_unparker());
            }
            match hub::park(deadline) {
                Ok(hub::Wake::Unparked) => {}
                Ok(hub::Wake::TimedOut) | Err(_) => return,
            }
        }
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.inner.addr)
            .field("connections", &self.connections())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

struct Inner {
    addr: SocketAddr,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    max: Option<usize>,
    next_id: u64,
    conns: HashMap<u64, JoinHandle<()>>,
    acceptor: Option<JoinHandle<()>>,
    signal_task: Option<JoinHandle<()>>,
    /// The accept loop, parked while at the connection limit.
    accept_waiter: Option<Unparker>,
    /// `stop` waiting for the handlers to finish.
    drain_waiters: Vec<Unparker>,
    /// `wait` callers.
    done_waiters: Vec<Unparker>,
    stopping: bool,
    stopped: bool,
}

/// Removes a connection from the server when its handler ends in any way.
struct ConnGuard {
    inner: Rc<Inner>,
    id: u64,
}

impl Drop for ConnGuard {
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

fn accept_loop(listener: TcpListener, handler: Handler, inner: Rc<Inner>) {
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
                            "tasklet-netio: server on {}: accept failed: {e}; backing off until \
                             resources free up",
                            inner.addr
                        );
                        warned = true;
                    }
                    tasklet_runtime::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Some(libc::ECONNABORTED)
                | Some(libc::EPROTO)
                | Some(libc::EINTR)
                | Some(libc::EPERM) => {
                    log::debug!(
                        "tasklet-netio: server on {}: accept: {e} (skipped)",
                        inner.addr
                    );
                }
                _ => {
                    log::error!(
                        "tasklet-netio: server on {}: accept failed: {e}",
                        inner.addr
                    );
                    tasklet_runtime::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
}
