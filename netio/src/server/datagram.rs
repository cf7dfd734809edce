//! [`DatagramServer`]: a handler tasklet per received datagram, on the
//! [`StreamServer`]'s accept loop.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use super::{DatagramSocket, HandlerResult, Listener, ServerHandle, StreamServer};
use crate::{ToSocketAddrs, UdpSocket, UnixDatagram};

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
