//! Unix domain sockets: [`UnixListener`], [`UnixStream`], [`UnixDatagram`].

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{self, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::sock::Sock;
use crate::sys;

/// A Unix domain socket server (std's `UnixListener`, cooperative).
///
/// ```
/// use std::io::{Read, Write};
/// use tasklet::netio::{UnixListener, UnixStream};
/// let path = std::env::temp_dir().join(format!("tasklet-doc-{}.sock", std::process::id()));
/// let _ = std::fs::remove_file(&path);
/// tasklet::dispatch(|| {
///     let listener = UnixListener::bind(&path).unwrap();
///     tasklet::spawn(move || {
///         let (mut s, _) = listener.accept().unwrap();
///         s.write_all(b"hi").unwrap();
///     });
///     let mut c = UnixStream::connect(&path).unwrap();
///     let mut buf = String::new();
///     c.read_to_string(&mut buf).unwrap();
///     assert_eq!(buf, "hi");
/// });
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct UnixListener {
    sock: Sock<mio::net::UnixListener>,
}

impl UnixListener {
    /// Creates a listener bound to the socket file `path` (which must not exist).
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        let l = mio::net::UnixListener::bind(path)?;
        sys::set_backlog(l.as_raw_fd())?;
        Ok(UnixListener { sock: Sock::new(l) })
    }

    /// Creates a listener bound to `addr`, e.g. an address in Linux's
    /// abstract namespace (`SocketAddr::from_abstract_name`), which needs no
    /// file and vanishes with the socket.
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixListener> {
        let l = mio::net::UnixListener::bind_addr(addr)?;
        sys::set_backlog(l.as_raw_fd())?;
        Ok(UnixListener { sock: Sock::new(l) })
    }

    /// Accepts a connection, parking the tasklet until one arrives.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (s, addr) = self.sock.read_with(|l| l.accept())?;
        Ok((
            UnixStream::from_sock(Sock::new(net::UnixStream::from(OwnedFd::from(s)))),
            addr,
        ))
    }

    /// An endless iterator over incoming connections.
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming { listener: self }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.get().local_addr()
    }

    /// Reads and clears the pending socket error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.get().take_error()
    }

    /// Makes `accept` return `WouldBlock` instead of parking.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.sock.set_nonblocking(nonblocking);
        Ok(())
    }

    /// A second handle to the same listening socket (a `dup` of the fd),
    /// e.g. for a second accepting tasklet.
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        let fd = self.sock.get().as_fd().try_clone_to_owned()?;
        Ok(UnixListener {
            sock: self.sock.twin(mio::net::UnixListener::from(fd)),
        })
    }

    /// Wraps a std listener, switching it to non-blocking mode.
    pub fn from_std(listener: net::UnixListener) -> io::Result<UnixListener> {
        listener.set_nonblocking(true)?;
        Ok(UnixListener {
            sock: Sock::new(mio::net::UnixListener::from_std(listener)),
        })
    }

    /// Unwraps into a std listener in blocking mode, deregistering it from the hub.
    pub fn into_std(self) -> io::Result<net::UnixListener> {
        let l = net::UnixListener::from(self.sock.into_inner());
        l.set_nonblocking(false)?;
        Ok(l)
    }
}

impl From<net::UnixListener> for UnixListener {
    /// Wraps a std listener, switching it to non-blocking mode.
    fn from(l: net::UnixListener) -> UnixListener {
        if let Err(e) = l.set_nonblocking(true) {
            log::error!("tasklet-netio: cannot make a listener non-blocking: {e}");
        }
        UnixListener {
            sock: Sock::new(mio::net::UnixListener::from_std(l)),
        }
    }
}

impl_fd_traits!(
    UnixListener,
    net::UnixListener,
    "a listening Unix stream socket"
);

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// Iterator returned by [`UnixListener::incoming`]; never yields `None`.
#[derive(Debug)]
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for UnixIncoming<'_> {
    type Item = io::Result<UnixStream>;
    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

/// A Unix domain stream connection (std's `UnixStream`, cooperative):
/// `Read`/`Write` for the stream and for `&UnixStream`, timeouts giving
/// `ErrorKind::TimedOut`, writes that never raise `SIGPIPE`.
///
/// ```
/// use std::io::{Read, Write};
/// use tasklet::netio::UnixStream;
///
/// tasklet::dispatch(|| {
///     let (a, b) = UnixStream::pair().unwrap();
///     let echo = tasklet::spawn(move || {
///         let mut b = b;
///         let mut buf = [0; 4];
///         b.read_exact(&mut buf).unwrap();
///         b.write_all(&buf).unwrap();
///     });
///     (&a).write_all(b"ping").unwrap();
///     let mut reply = [0; 4];
///     (&a).read_exact(&mut reply).unwrap();
///     assert_eq!(&reply, b"ping");
///     echo.join().unwrap();
/// });
/// ```
pub struct UnixStream {
    pub(crate) sock: Sock<net::UnixStream>,
}

impl UnixStream {
    fn from_sock(sock: Sock<net::UnixStream>) -> UnixStream {
        UnixStream { sock }
    }

    /// Connects to the socket file `path`. If the listener's backlog is full,
    /// retries (parking between tries) until it has room.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let path = path.as_ref();
        UnixStream::connect_with(|| mio::net::UnixStream::connect(path))
    }

    /// Connects to `addr`, e.g. an address in Linux's abstract namespace
    /// (`SocketAddr::from_abstract_name`). Retries like [`connect`](Self::connect)
    /// while the listener's backlog is full.
    pub fn connect_addr(addr: &SocketAddr) -> io::Result<UnixStream> {
        UnixStream::connect_with(|| mio::net::UnixStream::connect_addr(addr))
    }

    fn connect_with(
        mut connect: impl FnMut() -> io::Result<mio::net::UnixStream>,
    ) -> io::Result<UnixStream> {
        let mut pause = Duration::from_millis(1);
        loop {
            match connect() {
                Ok(s) => {
                    let sock = Sock::new(net::UnixStream::from(OwnedFd::from(s)));
                    return Ok(UnixStream::from_sock(sock));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if tasklet_runtime::hub::in_dispatcher() {
                        tasklet_runtime::sleep(pause);
                    } else {
                        std::thread::sleep(pause);
                    }
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A connected pair of unnamed sockets.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = net::UnixStream::pair()?;
        Ok((UnixStream::from_std(a)?, UnixStream::from_std(b)?))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.get().local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.get().peer_addr()
    }

    /// Shuts down the read half, the write half or both (see [`TcpStream::shutdown`](crate::TcpStream::shutdown)).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.get().shutdown(how)
    }

    /// Sets how long a read may park before failing with `ErrorKind::TimedOut`.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(dur)
    }

    /// Sets how long a write may park before failing with `ErrorKind::TimedOut`.
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(dur)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.sock.read_timeout())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.sock.write_timeout())
    }

    /// Sets a point in time after which a read that has to park fails with
    /// `ErrorKind::TimedOut` (`None`: no deadline), like Go's
    /// `SetReadDeadline`. Unlike the [read timeout](Self::set_read_timeout),
    /// which bounds each wait, a deadline bounds a whole exchange however
    /// many reads it takes: a request that must arrive complete within 30 s,
    /// even from a client trickling a byte at a time. Both may be set; the
    /// earlier limit applies. Data already queued is still returned after
    /// the deadline (only waiting fails). A read that times out consumes
    /// nothing: the socket stays usable.
    pub fn set_read_deadline(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.sock.set_read_deadline(deadline);
        Ok(())
    }

    /// Sets a point in time after which a write that has to park fails with
    /// `ErrorKind::TimedOut` (see [`set_read_deadline`](Self::set_read_deadline)):
    /// bounds a whole `write_all` to a client that reads slowly or not at all.
    pub fn set_write_deadline(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.sock.set_write_deadline(deadline);
        Ok(())
    }

    /// The read deadline (see [`set_read_deadline`](Self::set_read_deadline)).
    pub fn read_deadline(&self) -> io::Result<Option<Instant>> {
        Ok(self.sock.read_deadline())
    }

    /// The write deadline (see [`set_write_deadline`](Self::set_write_deadline)).
    pub fn write_deadline(&self) -> io::Result<Option<Instant>> {
        Ok(self.sock.write_deadline())
    }

    /// Makes reads and writes return `WouldBlock` instead of parking.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.sock.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Reads and clears the pending socket error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.get().take_error()
    }

    /// A second handle to the same connection (a `dup` of the fd). It
    /// starts with this handle's timeouts and non-blocking mode; afterwards
    /// each handle's are set independently.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        let s = self.sock.get().try_clone()?;
        Ok(UnixStream::from_sock(self.sock.twin(s)))
    }

    /// Wraps a std stream, switching it to non-blocking mode.
    pub fn from_std(stream: net::UnixStream) -> io::Result<UnixStream> {
        stream.set_nonblocking(true)?;
        Ok(UnixStream::from_sock(Sock::new(stream)))
    }

    /// Unwraps into a std stream in blocking mode, deregistering it from the hub.
    pub fn into_std(self) -> io::Result<net::UnixStream> {
        let s = self.sock.into_inner();
        s.set_nonblocking(false)?;
        Ok(s)
    }
}

impl From<net::UnixStream> for UnixStream {
    /// Wraps a std stream, switching it to non-blocking mode.
    fn from(s: net::UnixStream) -> UnixStream {
        if let Err(e) = s.set_nonblocking(true) {
            log::error!("tasklet-netio: cannot make a stream non-blocking: {e}");
        }
        UnixStream::from_sock(Sock::new(s))
    }
}

impl_stream_io!(UnixStream, crate::sys::recv_unix_stream);
impl_fd_traits!(
    UnixStream,
    net::UnixStream,
    "a connected Unix stream socket"
);

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// A Unix domain datagram socket (std's `UnixDatagram`, cooperative):
/// message boundaries are kept, and a send parks while the receiver's queue
/// is full.
///
/// ```
/// use tasklet::netio::UnixDatagram;
///
/// tasklet::dispatch(|| {
///     let (a, b) = UnixDatagram::pair().unwrap();
///     let reader = tasklet::spawn(move || {
///         let mut buf = [0; 16];
///         let n = b.recv(&mut buf).unwrap();
///         buf[..n].to_vec()
///     });
///     a.send(b"one message").unwrap();
///     assert_eq!(reader.join().unwrap(), b"one message");
/// });
/// ```
pub struct UnixDatagram {
    sock: Sock<net::UnixDatagram>,
}

impl UnixDatagram {
    fn wrap(s: net::UnixDatagram) -> io::Result<UnixDatagram> {
        s.set_nonblocking(true)?;
        Ok(UnixDatagram { sock: Sock::new(s) })
    }

    /// Creates a socket bound to the file `path`.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        UnixDatagram::wrap(net::UnixDatagram::bind(path)?)
    }

    /// Creates a socket bound to `addr`, e.g. an address in Linux's
    /// abstract namespace (`SocketAddr::from_abstract_name`).
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixDatagram> {
        UnixDatagram::wrap(net::UnixDatagram::bind_addr(addr)?)
    }

    /// Creates an unbound socket.
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::wrap(net::UnixDatagram::unbound()?)
    }

    /// A connected pair of unnamed sockets.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = net::UnixDatagram::pair()?;
        Ok((UnixDatagram::wrap(a)?, UnixDatagram::wrap(b)?))
    }

    /// Sets the default destination for [`send`](Self::send).
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        self.sock.get().connect(path)
    }

    /// Sets the default destination for [`send`](Self::send) to `addr`.
    pub fn connect_addr(&self, addr: &SocketAddr) -> io::Result<()> {
        self.sock.get().connect_addr(addr)
    }

    /// Sends a datagram to `path`, parking while the receiver's queue is full.
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let path = path.as_ref();
        self.sock.write_with(|s| s.send_to(buf, path))
    }

    /// Sends a datagram to `addr`, parking while the receiver's queue is full.
    pub fn send_to_addr(&self, buf: &[u8], addr: &SocketAddr) -> io::Result<usize> {
        self.sock.write_with(|s| s.send_to_addr(buf, addr))
    }

    /// Receives one datagram and its sender, parking until it arrives.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.read_with(|s| s.recv_from(buf))
    }

    /// Sends a datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write_with(|s| s.send(buf))
    }

    /// Receives a datagram from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read_with(|s| s.recv(buf))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.get().local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.get().peer_addr()
    }

    /// Sets how long a receive may park before failing with `ErrorKind::TimedOut`.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(dur)
    }

    /// Sets how long a send may park before failing with `ErrorKind::TimedOut`.
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(dur)
    }

    /// The receive timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.sock.read_timeout())
    }

    /// The send timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.sock.write_timeout())
    }

    /// Makes operations return `WouldBlock` instead of parking.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.sock.set_nonblocking(nonblocking);
        Ok(())
    }

    /// A second handle to the same socket (a `dup` of the fd). It starts
    /// with this handle's timeouts and non-blocking mode; afterwards each
    /// handle's are set independently.
    pub fn try_clone(&self) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            sock: self.sock.twin(self.sock.get().try_clone()?),
        })
    }

    /// Shuts down the read half, the write half or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.get().shutdown(how)
    }

    /// Reads and clears the pending socket error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.get().take_error()
    }

    /// Wraps a std socket, switching it to non-blocking mode.
    pub fn from_std(socket: net::UnixDatagram) -> io::Result<UnixDatagram> {
        UnixDatagram::wrap(socket)
    }

    /// Unwraps into a std socket in blocking mode, deregistering it from the hub.
    pub fn into_std(self) -> io::Result<net::UnixDatagram> {
        let s = self.sock.into_inner();
        s.set_nonblocking(false)?;
        Ok(s)
    }
}

impl From<net::UnixDatagram> for UnixDatagram {
    /// Wraps a std socket, switching it to non-blocking mode.
    fn from(s: net::UnixDatagram) -> UnixDatagram {
        if let Err(e) = s.set_nonblocking(true) {
            log::error!("tasklet-netio: cannot make a Unix datagram socket non-blocking: {e}");
        }
        UnixDatagram { sock: Sock::new(s) }
    }
}

impl_fd_traits!(UnixDatagram, net::UnixDatagram, "a Unix datagram socket");

impl fmt::Debug for UnixDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixDatagram")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}
