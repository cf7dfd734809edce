//! UDP: [`UdpSocket`].

use std::fmt;
use std::io;
use std::net::{self, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::addr::{each_addr, ToSocketAddrs};
use crate::sock::Sock;

/// A UDP socket whose sends and receives park the calling tasklet instead
/// of blocking the thread (std's `UdpSocket`).
///
/// ```
/// use tasklet::netio::UdpSocket;
/// tasklet::dispatch(|| {
///     let server = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let addr = server.local_addr().unwrap();
///     tasklet::spawn(move || {
///         let mut buf = [0; 64];
///         let (n, from) = server.recv_from(&mut buf).unwrap();
///         server.send_to(&buf[..n], from).unwrap();
///     });
///     let client = UdpSocket::bind("127.0.0.1:0").unwrap();
///     client.connect(addr).unwrap();
///     client.send(b"ping").unwrap();
///     let mut buf = [0; 64];
///     let n = client.recv(&mut buf).unwrap();
///     assert_eq!(&buf[..n], b"ping");
/// });
/// ```
pub struct UdpSocket {
    sock: Sock<net::UdpSocket>,
}

impl UdpSocket {
    /// Creates a socket bound to `addr` (port 0: any free port). Host names
    /// are resolved without blocking the dispatcher.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        each_addr(addr, |a| {
            let s = mio::net::UdpSocket::bind(*a)?;
            Ok(UdpSocket {
                sock: Sock::new(net::UdpSocket::from(s)),
            })
        })
    }

    /// Sends a datagram to `target`, parking while the send buffer is full.
    /// Returns the number of bytes sent.
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], target: A) -> io::Result<usize> {
        let addrs = target.resolve()?;
        let Some(addr) = addrs.first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no addresses to send data to",
            ));
        };
        self.sock.write_with(|s| s.send_to(buf, addr))
    }

    /// Receives one datagram, parking until it arrives. Returns its length
    /// (truncated to `buf.len()`) and sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.read_with(|s| s.recv_from(buf))
    }

    /// Like [`recv_from`](Self::recv_from) without removing the datagram from the queue.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.read_with(|s| s.peek_from(buf))
    }

    /// Sets the default destination for [`send`](Self::send) and limits
    /// [`recv`](Self::recv) to datagrams from it. Tries each resolved address
    /// in turn.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(addr, |a| self.sock.get().connect(a))
    }

    /// Sends a datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write_with(|s| s.send(buf))
    }

    /// Receives a datagram from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read_with(|s| s.recv(buf))
    }

    /// Like [`recv`](Self::recv) without removing the datagram from the queue.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read_with(|s| s.peek(buf))
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

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.sock.get().set_broadcast(on)
    }

    /// The `SO_BROADCAST` value.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.sock.get().broadcast()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.sock.get().set_ttl(ttl)
    }

    /// The `IP_TTL` value.
    pub fn ttl(&self) -> io::Result<u32> {
        self.sock.get().ttl()
    }

    /// Sets `IP_MULTICAST_LOOP`: whether multicast datagrams sent from this
    /// socket are looped back to the local host.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.sock.get().set_multicast_loop_v4(on)
    }

    /// The `IP_MULTICAST_LOOP` value.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.sock.get().multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL`, the time-to-live of outgoing multicast
    /// datagrams (1, the default, keeps them on the local network).
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.sock.get().set_multicast_ttl_v4(ttl)
    }

    /// The `IP_MULTICAST_TTL` value.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.sock.get().multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        self.sock.get().set_multicast_loop_v6(on)
    }

    /// The `IPV6_MULTICAST_LOOP` value.
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.sock.get().multicast_loop_v6()
    }

    /// Joins an IPv4 multicast group.
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.sock.get().join_multicast_v4(multiaddr, interface)
    }

    /// Joins an IPv6 multicast group.
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.sock.get().join_multicast_v6(multiaddr, interface)
    }

    /// Leaves an IPv4 multicast group.
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.sock.get().leave_multicast_v4(multiaddr, interface)
    }

    /// Leaves an IPv6 multicast group.
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.sock.get().leave_multicast_v6(multiaddr, interface)
    }

    /// Reads and clears the pending socket error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.get().take_error()
    }

    /// A second handle to the same socket (a `dup` of the fd). It starts
    /// with this handle's timeouts and non-blocking mode; afterwards each
    /// handle's are set independently.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            sock: self.sock.twin(self.sock.get().try_clone()?),
        })
    }

    /// Wraps a std socket, switching it to non-blocking mode.
    pub fn from_std(socket: net::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        Ok(UdpSocket {
            sock: Sock::new(socket),
        })
    }

    /// Unwraps into a std socket in blocking mode, deregistering it from the hub.
    pub fn into_std(self) -> io::Result<net::UdpSocket> {
        let s = self.sock.into_inner();
        s.set_nonblocking(false)?;
        Ok(s)
    }
}

impl From<net::UdpSocket> for UdpSocket {
    /// Wraps a std socket, switching it to non-blocking mode (see [`UdpSocket::from_std`]).
    fn from(s: net::UdpSocket) -> UdpSocket {
        if let Err(e) = s.set_nonblocking(true) {
            log::error!("tasklet-netio: cannot make a UDP socket non-blocking: {e}");
        }
        UdpSocket { sock: Sock::new(s) }
    }
}

impl_fd_traits!(UdpSocket, net::UdpSocket, "a UDP socket");

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UdpSocket");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        d.field("fd", &self.as_raw_fd()).finish()
    }
}
