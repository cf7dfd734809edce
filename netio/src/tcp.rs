//! TCP: [`TcpListener`] and [`TcpStream`].

use std::fmt;
use std::io;
use std::net::{self, Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use tasklet_runtime::hub::Direction;

use crate::addr::{each_addr, ToSocketAddrs};
use crate::sock::Sock;
use crate::sys;

/// A TCP socket server, listening for connections (std's `TcpListener`
/// whose `accept` parks the tasklet instead of blocking the thread).
///
/// A listener can be created before [`dispatch`](tasklet_runtime::dispatch)
/// and used inside it; it registers with the dispatcher's hub the first time
/// it has to wait. Used on a thread without a dispatcher, it blocks like the
/// std type.
///
/// ```
/// use std::io::{Read, Write};
/// use tasklet::netio::{TcpListener, TcpStream};
///
/// tasklet::dispatch(|| {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let server = tasklet::spawn(move || {
///         let (mut s, _peer) = listener.accept().unwrap();
///         let mut buf = [0; 5];
///         s.read_exact(&mut buf).unwrap();
///         s.write_all(&buf).unwrap();
///     });
///     let mut c = TcpStream::connect(addr).unwrap();
///     c.write_all(b"hello").unwrap();
///     let mut echo = [0; 5];
///     c.read_exact(&mut echo).unwrap();
///     assert_eq!(&echo, b"hello");
///     server.join().unwrap();
/// });
/// ```
pub struct TcpListener {
    sock: Sock<mio::net::TcpListener>,
}

impl TcpListener {
    /// Creates a listener bound to `addr` (`SO_REUSEADDR` set, backlog up
    /// to 4096 as allowed by `net.core.somaxconn`).
    ///
    /// A host name is resolved without blocking the dispatcher; each
    /// resulting address is tried in turn. Port 0 asks the OS for a free port
    /// (see [`local_addr`](Self::local_addr)).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(addr, |a| {
            let l = mio::net::TcpListener::bind(*a)?;
            sys::set_backlog(l.as_raw_fd())?;
            Ok(TcpListener { sock: Sock::new(l) })
        })
    }

    /// Creates a listener bound to `addr` with `SO_REUSEPORT` (and
    /// `SO_REUSEADDR`) set, so that several listeners — one per
    /// [`Runtime`](tasklet_runtime::Runtime) worker, or one per process —
    /// can listen on the same address; the kernel spreads incoming
    /// connections over them (by a hash of the client's address and port).
    ///
    /// Every socket sharing the port must set `SO_REUSEPORT` and belong to
    /// the same user. Port 0 gives each call its own free port: bind the
    /// first listener with port 0, then the others to its
    /// [`local_addr`](Self::local_addr). Beware that a second server
    /// started by mistake on the same port shares it silently instead of
    /// failing with `AddrInUse`; [`WorkerListeners::bind`](crate::WorkerListeners::bind)
    /// checks for that before its first listener.
    ///
    /// ```
    /// use tasklet::netio::TcpListener;
    ///
    /// let first = TcpListener::bind_reuse_port("127.0.0.1:0").unwrap();
    /// let addr = first.local_addr().unwrap();
    /// // One listener per worker, all on one port.
    /// let ports = tasklet::Runtime::new().workers(2).run(move || {
    ///     let l = TcpListener::bind_reuse_port(addr).unwrap();
    ///     l.local_addr().unwrap().port()
    /// });
    /// assert_eq!(ports, [addr.port(), addr.port()]);
    /// ```
    pub fn bind_reuse_port<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(addr, |a| {
            let fd = sys::reuse_port_listener(a)?;
            Ok(TcpListener {
                sock: Sock::new(mio::net::TcpListener::from_std(net::TcpListener::from(fd))),
            })
        })
    }

    /// Accepts a connection, parking the tasklet until one arrives.
    ///
    /// The new stream is non-blocking at the OS level and cooperative like
    /// every stream here. Honours [`set_nonblocking`](Self::set_nonblocking).
    /// Like std, a listener has no accept timeout; bound the wait with
    /// [`tasklet::timeout`](tasklet_runtime::timeout) (the listener stays usable):
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasklet::netio::TcpListener;
    ///
    /// tasklet::dispatch(|| {
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let r = tasklet::timeout(Duration::from_millis(10), || listener.accept());
    ///     assert!(r.is_err(), "nobody connected");
    ///     let c = tasklet::netio::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    ///     let (s, peer) = listener.accept().unwrap();
    ///     assert_eq!(peer, c.local_addr().unwrap());
    ///     # drop(s);
    /// });
    /// ```
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, addr) = self.sock.read_with(|l| l.accept())?;
        Ok((
            TcpStream::from_sock(Sock::new(net::TcpStream::from(s))),
            addr,
        ))
    }

    /// An endless iterator over incoming connections (`accept` in a loop).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.get().local_addr()
    }

    /// Sets `IP_TTL` for connections accepted from now on.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.sock.get().set_ttl(ttl)
    }

    /// The `IP_TTL` value.
    pub fn ttl(&self) -> io::Result<u32> {
        self.sock.get().ttl()
    }

    /// Reads and clears the pending socket error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.get().take_error()
    }

    /// Makes `accept` return `WouldBlock` instead of parking when no
    /// connection is pending (the socket itself is always non-blocking).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.sock.set_nonblocking(nonblocking);
        Ok(())
    }

    /// A second handle to the same listening socket (a `dup` of the fd),
    /// e.g. for a second accepting tasklet. It starts in this handle's
    /// [non-blocking mode](Self::set_nonblocking).
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        let fd = self.sock.get().as_fd().try_clone_to_owned()?;
        Ok(TcpListener {
            sock: self.sock.twin(mio::net::TcpListener::from(fd)),
        })
    }

    /// Wraps a std listener, switching it to non-blocking mode.
    pub fn from_std(listener: net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            sock: Sock::new(mio::net::TcpListener::from_std(listener)),
        })
    }

    /// Unwraps into a std listener in blocking mode, deregistering it from the hub.
    pub fn into_std(self) -> io::Result<net::TcpListener> {
        let l = net::TcpListener::from(self.sock.into_inner());
        l.set_nonblocking(false)?;
        Ok(l)
    }
}

impl From<net::TcpListener> for TcpListener {
    /// Wraps a std listener, switching it to non-blocking mode (see [`TcpListener::from_std`]).
    fn from(l: net::TcpListener) -> TcpListener {
        if let Err(e) = l.set_nonblocking(true) {
            log::error!("tasklet-netio: cannot make a listener non-blocking: {e}");
        }
        TcpListener {
            sock: Sock::new(mio::net::TcpListener::from_std(l)),
        }
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TcpListener");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        d.field("fd", &self.as_raw_fd()).finish()
    }
}

impl_fd_traits!(TcpListener, net::TcpListener, "a listening TCP socket");

/// Iterator returned by [`TcpListener::incoming`]; never yields `None`.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

/// A TCP connection whose reads and writes park the calling tasklet instead
/// of blocking the thread.
///
/// It implements [`Read`](std::io::Read) and [`Write`](std::io::Write) for `TcpStream` **and** for
/// `&TcpStream`, so one tasklet can read while another writes the same
/// socket (share it with an `Rc`). Each operation tries the system call
/// first and parks only on `WouldBlock`; the socket is registered with the
/// hub once, on its first wait. Works with `BufReader`, `BufWriter`,
/// `io::copy` and anything else that takes `Read`/`Write`.
///
/// Writes use `MSG_NOSIGNAL`: writing to a connection the peer has reset
/// fails with `BrokenPipe`/`ConnectionReset`, never `SIGPIPE`. Timeouts set
/// with [`set_read_timeout`](Self::set_read_timeout) and
/// [`set_write_timeout`](Self::set_write_timeout) fail an operation with
/// `ErrorKind::TimedOut`.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use tasklet::netio::{TcpListener, TcpStream};
///
/// tasklet::dispatch(|| {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     tasklet::spawn(move || {
///         let (s, _) = listener.accept().unwrap();
///         let mut lines = BufReader::new(&s);
///         let mut line = String::new();
///         lines.read_line(&mut line).unwrap();
///         (&s).write_all(line.to_uppercase().as_bytes()).unwrap();
///     });
///     let s = TcpStream::connect(("localhost", addr.port())).unwrap();
///     (&s).write_all(b"ping\n").unwrap();
///     let mut reply = String::new();
///     BufReader::new(&s).read_line(&mut reply).unwrap();
///     assert_eq!(reply, "PING\n");
/// });
/// ```
pub struct TcpStream {
    pub(crate) sock: Sock<net::TcpStream>,
}

impl TcpStream {
    fn from_sock(sock: Sock<net::TcpStream>) -> TcpStream {
        TcpStream { sock }
    }

    /// Opens a connection to `addr`, parking until it is established.
    ///
    /// A host name is resolved without blocking the dispatcher, and each
    /// address is tried in turn; the last error is returned if none accepts.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        each_addr(addr, |a| connect_addr(a, None))
    }

    /// Opens a connection to `addr`, failing with `ErrorKind::TimedOut` if
    /// it is not established within `timeout` (a zero timeout is an
    /// `InvalidInput` error, as in std).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        connect_addr(addr, Instant::now().checked_add(timeout))
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.get().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.get().local_addr()
    }

    /// Shuts down the read half, the write half or both.
    ///
    /// `Shutdown::Write` sends FIN (a half-close: the peer reads EOF and can
    /// keep writing). Any tasklet parked reading this socket is woken and
    /// sees EOF after `Shutdown::Read`/`Both`; a parked writer gets an error.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.get().shutdown(how)
    }

    /// Sets `SO_LINGER` (std's unstable `TcpStream::set_linger`).
    ///
    /// `Some(Duration::ZERO)` makes closing the stream *abort* the
    /// connection: unsent data is dropped and the peer gets a reset (RST)
    /// instead of an orderly FIN — Twisted's `abortConnection`. `None` (the
    /// default) closes gracefully in the background. A non-zero linger makes
    /// the close of this non-blocking socket wait in the kernel, which the
    /// dispatcher cannot park: prefer `None` or zero.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::time::Duration;
    /// use tasklet::netio::{TcpListener, TcpStream};
    ///
    /// tasklet::dispatch(|| {
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    ///     let (server_side, _) = listener.accept().unwrap();
    ///     server_side.set_linger(Some(Duration::ZERO)).unwrap();
    ///     assert_eq!(server_side.linger().unwrap(), Some(Duration::ZERO));
    ///     drop(server_side); // RST, not FIN
    ///     let err = client.read(&mut [0; 8]).unwrap_err();
    ///     assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    /// });
    /// ```
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        sys::set_linger(self.sock.fd(), linger)
    }

    /// The `SO_LINGER` value (see [`set_linger`](Self::set_linger)).
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        sys::linger(self.sock.fd())
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.sock.get().set_nodelay(nodelay)
    }

    /// The `TCP_NODELAY` value.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.sock.get().nodelay()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.sock.get().set_ttl(ttl)
    }

    /// The `IP_TTL` value.
    pub fn ttl(&self) -> io::Result<u32> {
        self.sock.get().ttl()
    }

    /// Reads and clears the pending socket error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.get().take_error()
    }

    /// Sets how long a read may park before failing with
    /// `ErrorKind::TimedOut` (`None`: forever). A zero duration is an
    /// `InvalidInput` error, as in std.
    ///
    /// The error kind is always `TimedOut`, inside a dispatcher or not
    /// (std on Unix reports `WouldBlock` for an expired timeout; here
    /// `WouldBlock` only ever means [non-blocking mode](Self::set_nonblocking)).
    /// A read that times out consumes nothing: the socket stays usable.
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(dur)
    }

    /// Sets how long a write may park before failing with
    /// `ErrorKind::TimedOut` (see [`set_read_timeout`](Self::set_read_timeout)).
    /// Bytes a `write` accepted before the deadline are sent; a `write_all`
    /// that times out has sent an unknown prefix.
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
    ///
    /// ```
    /// use std::io::{ErrorKind, Read, Write};
    /// use std::time::{Duration, Instant};
    /// use tasklet::netio::{TcpListener, TcpStream};
    ///
    /// tasklet::dispatch(|| {
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    ///     let (mut server, _) = listener.accept().unwrap();
    ///     // The whole 8-byte head within 50 ms; only 3 bytes ever come.
    ///     server
    ///         .set_read_deadline(Some(Instant::now() + Duration::from_millis(50)))
    ///         .unwrap();
    ///     client.write_all(b"GET").unwrap();
    ///     let mut head = [0u8; 8];
    ///     let err = server.read_exact(&mut head).unwrap_err();
    ///     assert_eq!(err.kind(), ErrorKind::TimedOut);
    /// });
    /// ```
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

    /// Makes reads and writes return `WouldBlock` instead of parking (the
    /// socket itself is always non-blocking at the OS level). The mode
    /// belongs to this handle: handles made by [`try_clone`](Self::try_clone)
    /// keep their own.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.sock.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Reads without consuming the data, parking until some arrives. An
    /// empty `buf` returns `Ok(0)` at once.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.sock.read_with(|s| s.peek(buf))
    }

    /// A second handle to the same connection (a `dup` of the fd), e.g. to
    /// give a reader and a writer tasklet one each. The clone starts with
    /// this handle's timeouts and [non-blocking mode](Self::set_nonblocking);
    /// afterwards each handle's are set independently (unlike std, where
    /// `set_nonblocking` on one handle affects all of them).
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let s = self.sock.get().try_clone()?;
        Ok(TcpStream::from_sock(self.sock.twin(s)))
    }

    /// Wraps a std stream, switching it to non-blocking mode.
    pub fn from_std(stream: net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        Ok(TcpStream::from_sock(Sock::new(stream)))
    }

    /// Unwraps into a std stream in blocking mode, deregistering it from the hub.
    pub fn into_std(self) -> io::Result<net::TcpStream> {
        let s = self.sock.into_inner();
        s.set_nonblocking(false)?;
        Ok(s)
    }
}

fn connect_addr(addr: &SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let s = mio::net::TcpStream::connect(*addr)?;
    let sock = Sock::new(net::TcpStream::from(s));
    loop {
        sock.wait(Direction::Write, deadline)?;
        if let Some(e) = sock.get().take_error()? {
            return Err(e);
        }
        match sock.get().peer_addr() {
            Ok(_) => return Ok(TcpStream::from_sock(sock)),
            // Spurious wake-up: the handshake is still in progress.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => return Err(e),
        }
    }
}

impl From<net::TcpStream> for TcpStream {
    /// Wraps a std stream, switching it to non-blocking mode (see [`TcpStream::from_std`]).
    fn from(s: net::TcpStream) -> TcpStream {
        if let Err(e) = s.set_nonblocking(true) {
            log::error!("tasklet-netio: cannot make a stream non-blocking: {e}");
        }
        TcpStream::from_sock(Sock::new(s))
    }
}

impl_stream_io!(TcpStream, crate::sys::recv_stream);

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TcpStream");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        if let Ok(a) = self.peer_addr() {
            d.field("peer", &a);
        }
        d.field("fd", &self.as_raw_fd()).finish()
    }
}

impl_fd_traits!(TcpStream, net::TcpStream, "a connected TCP socket");
