//! gevent's servers: [`StreamServer`] (a handler per connection, over TCP or
//! Unix listeners) and [`DatagramServer`] (a handler per datagram, over UDP
//! or Unix datagram sockets), with a limit on running handlers and a
//! graceful stop. Both run on one accept loop, generic over [`Listener`].

//!
//! The pieces, top to bottom: the traits servers are generic over (here),
//! the [`StreamServer`] and its accept loop (`stream.rs`), the
//! [`ServerHandle`] and [`ServerStopper`] that stop it (`handle.rs`), and the
//! [`DatagramServer`] on top of it (`datagram.rs`).

mod datagram;
mod handle;
mod stream;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::SocketAddr as UnixSocketAddr;

use crate::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream};

pub use datagram::DatagramServer;
pub use handle::{ServerHandle, ServerStopper};
pub use stream::StreamServer;

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
