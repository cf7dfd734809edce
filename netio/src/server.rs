//! gevent's servers: [`StreamServer`] (a handler per connection, over TCP or
//! Unix listeners) and [`DatagramServer`] (a handler per datagram, over UDP
//! or Unix datagram sockets), with a limit on running handlers and a
//! graceful stop. Both run on one accept loop, generic over [`Listener`].

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tasklet_runtime::hub::{self, Unparker};
use tasklet_runtime::signal::{self, Signal};
use tasklet_runtime::sync::Event;
use tasklet_runtime::JoinHandle;

use crate::UnixStream;
use crate::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket, UnixDatagram, UnixListener};

/// What a connection handler may return: `()` or a `Result` (with any
/// success value, e.g. a byte count) whose error is logged (at debug level:
/// a peer that resets is business as usual).
pub trait HandlerResult {
    /// Logs the outcome of the handler for the connection (or datagram)
    /// from `peer`.
    fn report(self, peer: &dyn fmt::Debug);
}

impl HandlerResult for () {
    fn report(self, _peer: &dyn fmt::Debug) {}
}

impl<T, E: fmt::Display> HandlerResult for Result<T, E> {
    fn report(self, peer: &dyn fmt::Debug) {
        if let Err(e) = self {
            log::debug!("tasklet-netio: handler for {peer:?} ended with an error: {e}");
        }
    }
}

/// A source of connections for [`StreamServer`]: a listening socket whose
/// `accept` parks the tasklet until a peer connects. Implemented for
/// [`TcpListener`] and [`UnixListener`]; implement it to serve another
/// kind of listener (an inherited fd, a wrapper that filters peers…).
pub trait Listener: 'static {
    /// The connected stream handed to the handler.
    type Stream: 'static;
    /// The peer's (and the listener's) address.
    type Addr: Clone + fmt::Debug + 'static;

    /// Accepts a connection, parking until one arrives. Errors are logged
    /// by the server, which goes on (backing off when out of resources).
    fn accept(&self) -> io::Result<(Self::Stream, Self::Addr)>;

    /// The address the listener is bound to.
    fn local_addr(&self) -> io::Result<Self::Addr>;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    type Addr = SocketAddr;

    fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    type Addr = UnixSocketAddr;

    fn accept(&self) -> io::Result<(UnixStream, UnixSocketAddr)> {
        UnixListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<UnixSocketAddr> {
        UnixListener::local_addr(self)
    }
}

/// A socket [`DatagramServer`] receives on: [`UdpSocket`] or
/// [`UnixDatagram`].
pub trait DatagramSocket: 'static {
    /// The address of a datagram's sender (and of the socket).
    type Addr: Clone + fmt::Debug + 'static;

    /// Receives one datagram into `buf`, parking until one arrives.
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Self::Addr)>;

    /// The address the socket is bound to.
    fn local_addr(&self) -> io::Result<Self::Addr>;
}

impl DatagramSocket for UdpSocket {
    type Addr = SocketAddr;

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}

impl DatagramSocket for UnixDatagram {
    type Addr = UnixSocketAddr;

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, UnixSocketAddr)> {
        UnixDatagram::recv_from(self, buf)
    }

    fn local_addr(&self) -> io::Result<UnixSocketAddr> {
        UnixDatagram::local_addr(self)
    }
}

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
    listener: L,
    handler: Handler<L>,
    inner: Rc<Inner<L::Addr>>,
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
    /// [`Runtime`](tasklet::Runtime) worker on the same address and
    /// the kernel spreads the connections over the workers. With
    /// [`stop_on_signals`](Self::stop_on_signals), SIGINT/SIGTERM stops
    /// every worker's server.
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
            inner: Rc::new(Inner {
                addr,
                state: RefCell::new(State::default()),
                remote: OnceCell::new(),
            }),
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
    /// [reset](tasklet::signal::reset): a second one during the
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

/// A handle to a running [`StreamServer`] or [`DatagramServer`] (cheap to
/// clone); `A` is the server's address type. Not `Send`: it shares the
/// server's state with its tasklets, which never leave their thread. To stop
/// the server from another thread, make a `Send` [`ServerStopper`] with
/// [`stopper`](ServerHandle::stopper).
pub struct ServerHandle<A = SocketAddr> {
    inner: Rc<Inner<A>>,
}

impl<A> Clone for ServerHandle<A> {
    fn clone(&self) -> Self {
        ServerHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Clone + fmt::Debug> ServerHandle<A> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> A {
        self.inner.addr.clone()
    }

    /// How many handlers (connections, or datagrams in flight) are running.
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
        let (acceptor, sig, remote) = {
            let mut st = self.inner.state.borrow_mut();
            (
                st.acceptor.take(),
                st.signal_task.take(),
                st.remote_task.take(),
            )
        };
        if let Some(sig) = sig {
            sig.kill();
        }
        if let Some(remote) = remote {
            remote.kill();
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
                "tasklet-netio: server on {:?}: killing {n} handler(s) still running after \
                 {grace:?}",
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
        if let Some(r) = self.inner.remote.get() {
            r.killed.store(n, Ordering::Release);
            r.stopped.set();
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

impl<A: Clone + fmt::Debug> fmt::Debug for ServerHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.inner.addr)
            .field("connections", &self.connections())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

struct Inner<A> {
    addr: A,
    state: RefCell<State>,
    /// Shared with [`ServerStopper`]s, once one was made.
    remote: OnceCell<Arc<StopShared>>,
}

impl<A> Drop for Inner<A> {
    fn drop(&mut self) {
        // The server is gone (its dispatcher exited, say) without a stop:
        // stoppers waiting for it must not wait forever.
        if let Some(r) = self.remote.get() {
            r.stopped.set();
        }
    }
}

#[derive(Default)]
struct State {
    max: Option<usize>,
    next_id: u64,
    conns: HashMap<u64, JoinHandle<()>>,
    acceptor: Option<JoinHandle<()>>,
    signal_task: Option<JoinHandle<()>>,
    /// Waits for a [`ServerStopper`]'s request.
    remote_task: Option<JoinHandle<()>>,
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

/// The datagrams of a socket as a [`Listener`]: "accepting" receives one.
struct Datagrams<S> {
    sock: Rc<S>,
    buf: RefCell<Vec<u8>>,
}

impl<S: DatagramSocket> Listener for Datagrams<S> {
    type Stream = Vec<u8>;
    type Addr = S::Addr;

    fn accept(&self) -> io::Result<(Vec<u8>, S::Addr)> {
        // Only the receive loop calls this, so the buffer is never shared.
        let mut buf = self.buf.borrow_mut();
        let (n, peer) = self.sock.recv_from(&mut buf)?;
        Ok((buf[..n].to_vec(), peer))
    }

    fn local_addr(&self) -> io::Result<S::Addr> {
        self.sock.local_addr()
    }
}

/// The largest UDP payload (IPv4: 65,535 − 8 − 20 bytes).
const MAX_DATAGRAM: usize = 65_507;

/// A datagram server: a handler in a tasklet of its own for every datagram
/// received (gevent's `DatagramServer`), over a [`UdpSocket`] (the default)
/// or a [`UnixDatagram`] socket.
///
/// The handler gets the socket, the datagram and its sender's address, and
/// answers with `send_to` (`send_to_addr` on a Unix socket).
/// [`max_in_flight`](Self::max_in_flight) bounds how many handlers run at
/// once: at the limit the receive loop waits for one to finish (datagrams
/// queue in the socket's receive buffer, where the kernel drops what does
/// not fit, as for any UDP server). [`ServerHandle::stop`] and
/// [`stop_on_signals`](Self::stop_on_signals) stop it as a
/// [`StreamServer`]: receiving stops at once, running handlers get the
/// grace period (the socket stays open for their replies until the last
/// one ends).
///
/// ```
/// use std::time::Duration;
/// use tasklet::netio::{DatagramServer, UdpSocket};
///
/// tasklet::dispatch(|| {
///     let server = DatagramServer::bind("127.0.0.1:0", |sock: &UdpSocket, data, peer| {
///         let reply = String::from_utf8_lossy(&data).to_uppercase();
///         sock.send_to(reply.as_bytes(), peer)
///     })
///     .unwrap()
///     .max_in_flight(100);
///     let handle = server.start();
///
///     let client = UdpSocket::bind("127.0.0.1:0").unwrap();
///     client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
///     client.send_to(b"ping", handle.local_addr()).unwrap();
///     let mut buf = [0; 16];
///     let (n, _) = client.recv_from(&mut buf).unwrap();
///     assert_eq!(&buf[..n], b"PING");
///     handle.stop(Duration::from_secs(1));
/// });
/// ```
pub struct DatagramServer<S: DatagramSocket = UdpSocket> {
    server: StreamServer<Datagrams<S>>,
}

impl DatagramServer<UdpSocket> {
    /// Binds a UDP socket to `addr` and prepares a server that calls
    /// `handler(&socket, datagram, sender)` in a new tasklet per datagram.
    pub fn bind<A, F, R>(addr: A, handler: F) -> io::Result<DatagramServer<UdpSocket>>
    where
        A: ToSocketAddrs,
        F: Fn(&UdpSocket, Vec<u8>, SocketAddr) -> R + 'static,
        R: HandlerResult,
    {
        DatagramServer::new(UdpSocket::bind(addr)?, handler)
    }
}

impl DatagramServer<UnixDatagram> {
    /// Binds a Unix datagram socket to the file `path` (which must not
    /// exist) and prepares a server that calls `handler(&socket, datagram,
    /// sender)` per datagram. Only senders bound to an address can be
    /// answered.
    pub fn bind_unix<P, F, R>(path: P, handler: F) -> io::Result<DatagramServer<UnixDatagram>>
    where
        P: AsRef<Path>,
        F: Fn(&UnixDatagram, Vec<u8>, UnixSocketAddr) -> R + 'static,
        R: HandlerResult,
    {
        DatagramServer::new(UnixDatagram::bind(path)?, handler)
    }
}

impl<S: DatagramSocket> DatagramServer<S> {
    /// A server on an existing socket.
    pub fn new<F, R>(socket: S, handler: F) -> io::Result<DatagramServer<S>>
    where
        F: Fn(&S, Vec<u8>, S::Addr) -> R + 'static,
        R: HandlerResult,
    {
        let sock = Rc::new(socket);
        let source = Datagrams {
            sock: sock.clone(),
            buf: RefCell::new(vec![0; MAX_DATAGRAM]),
        };
        let server = StreamServer::new(source, move |data, peer| handler(&sock, data, peer))?;
        Ok(DatagramServer { server })
    }

    /// Runs at most `n` handlers at once (at least 1); the receive loop
    /// waits while `n` are running. Unbounded by default.
    pub fn max_in_flight(self, n: usize) -> DatagramServer<S> {
        DatagramServer {
            server: self.server.max_connections(n),
        }
    }

    /// Datagrams longer than `bytes` are truncated to it (default 65,507,
    /// the largest UDP payload).
    pub fn max_datagram_size(self, bytes: usize) -> DatagramServer<S> {
        self.server.listener.buf.replace(vec![0; bytes.max(1)]);
        self
    }

    /// The grace period used on SIGINT/SIGTERM (default 1 s), as
    /// [`StreamServer::grace_period`].
    pub fn grace_period(self, grace: Duration) -> DatagramServer<S> {
        DatagramServer {
            server: self.server.grace_period(grace),
        }
    }

    /// Stops the server gracefully on SIGINT or SIGTERM.
    pub fn stop_on_signals(self, on: bool) -> DatagramServer<S> {
        DatagramServer {
            server: self.server.stop_on_signals(on),
        }
    }

    /// The socket the server receives on (e.g. to send from it).
    pub fn socket(&self) -> &S {
        &self.server.listener.sock
    }

    /// The address the server receives on.
    pub fn local_addr(&self) -> S::Addr {
        self.server.local_addr()
    }

    /// A handle to the server, usable before and after [`start`](Self::start).
    pub fn handle(&self) -> ServerHandle<S::Addr> {
        self.server.handle()
    }

    /// Starts receiving in a new tasklet and returns at once.
    ///
    /// # Panics
    /// Outside a dispatcher.
    pub fn start(self) -> ServerHandle<S::Addr> {
        self.server.start()
    }

    /// Starts the server and parks until it has stopped.
    pub fn serve_forever(self) {
        self.server.serve_forever()
    }
}

impl<S: DatagramSocket> fmt::Debug for DatagramServer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramServer")
            .field("addr", &self.server.inner.addr)
            .field("max_in_flight", &self.server.inner.state.borrow().max)
            .finish()
    }
}

/// What a [`ServerStopper`] shares with its server's dispatcher thread.
struct StopShared {
    /// The server's address, for logs and `Debug`.
    addr: String,
    /// A stop was requested (with the grace period in `grace`).
    request: Event,
    grace: Mutex<Option<Duration>>,
    /// The server has stopped (or is gone).
    stopped: Event,
    /// How many handlers the stop killed.
    killed: AtomicUsize,
}

impl<A: Clone + fmt::Debug + 'static> ServerHandle<A> {
    /// A `Send + Sync` handle that stops this server from any thread — a
    /// signal-handling thread, an admin thread, another
    /// [`Runtime`](tasklet::Runtime) worker, a tasklet of another
    /// dispatcher.
    ///
    /// `ServerHandle` itself is `!Send` (it shares the server's state with
    /// its tasklets without locks, and tasklets never leave their thread);
    /// the stopper sends the request to a small tasklet of the server's
    /// dispatcher, which runs [`stop`](Self::stop) there.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasklet::netio::{StreamServer, TcpStream};
    ///
    /// tasklet::dispatch(|| {
    ///     let server = StreamServer::bind("127.0.0.1:0", |_s: TcpStream, _| {}).unwrap().start();
    ///     let stopper = server.stopper();
    ///     // An admin thread stops the server and waits until it has stopped.
    ///     let admin = std::thread::spawn(move || stopper.stop(Duration::from_millis(100)));
    ///     server.wait();
    ///     assert!(server.is_stopped());
    ///     # while !admin.is_finished() { tasklet::sleep(Duration::from_millis(1)); }
    ///     assert_eq!(admin.join().unwrap(), 0);
    /// });
    /// ```
    ///
    /// # Panics
    /// Outside the server's dispatcher (the first call starts its tasklet).
    pub fn stopper(&self) -> ServerStopper {
        let shared = self.inner.remote.get_or_init(|| {
            let shared = Arc::new(StopShared {
                addr: format!("{:?}", self.inner.addr),
                request: Event::new(),
                grace: Mutex::new(None),
                stopped: Event::new(),
                killed: AtomicUsize::new(0),
            });
            if self.is_stopped() {
                shared.stopped.set();
            } else {
                let h = self.clone();
                let sh = shared.clone();
                let task = tasklet_runtime::spawn(move || {
                    sh.request.wait();
                    if !sh.request.is_set() {
                        return; // cannot wait: the dispatcher is shutting down
                    }
                    let grace = lock(&sh.grace).unwrap_or(Duration::ZERO);
                    log::info!(
                        "tasklet-netio: stop requested from another thread: stopping the server \
                         on {:?} (grace {grace:?})",
                        h.inner.addr
                    );
                    // Detach ourselves first: `stop` kills this tasklet's handle.
                    drop(h.inner.state.borrow_mut().remote_task.take());
                    h.stop(grace);
                });
                self.inner.state.borrow_mut().remote_task = Some(task);
            }
            shared
        });
        ServerStopper {
            shared: shared.clone(),
        }
    }
}

fn lock<T: Copy>(m: &Mutex<T>) -> T {
    *m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops a [`StreamServer`] from any thread; made by
/// [`ServerHandle::stopper`]. `Send + Sync`, cheap to clone.
#[derive(Clone)]
pub struct ServerStopper {
    shared: Arc<StopShared>,
}

impl ServerStopper {
    /// Asks the server to stop gracefully (see [`ServerHandle::stop`]) and
    /// waits until it has: parks the calling tasklet, or blocks a plain
    /// thread. Returns how many handlers were killed after `grace`. If
    /// several stops are requested, the first one's grace period applies.
    ///
    /// Do not call it from a connection handler of the same server (it would
    /// wait for itself).
    pub fn stop(&self, grace: Duration) -> usize {
        self.request_stop(grace);
        self.wait();
        self.shared.killed.load(Ordering::Acquire)
    }

    /// Asks the server to stop gracefully and returns at once.
    pub fn request_stop(&self, grace: Duration) {
        {
            let mut g = self.shared.grace.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_none() {
                *g = Some(grace);
            }
        }
        self.shared.request.set();
    }

    /// Waits until the server has stopped (or its dispatcher has exited).
    pub fn wait(&self) {
        self.shared.stopped.wait();
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`; returns whether it stopped.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.shared.stopped.wait_timeout(timeout)
    }

    /// Whether the server has stopped (or its dispatcher has exited).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.is_set()
    }
}

impl fmt::Debug for ServerStopper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStopper")
            .field("addr", &self.shared.addr)
            .field("stopped", &self.is_stopped())
            .finish()
    }
}
