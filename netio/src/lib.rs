//! # tasklet-netio
//!
//! Cooperative sockets for tasklets, built on the hub's readiness API
//! ([`tasklet_runtime::hub::IoSource`]). Most users reach it as
//! `tasklet::netio`.
//!
//! The types mirror `std::net` and `std::os::unix::net` — [`TcpListener`],
//! [`TcpStream`], [`UdpSocket`], [`UnixListener`], [`UnixStream`],
//! [`UnixDatagram`] — but an operation that would block parks the calling
//! tasklet instead of the thread, so one thread serves thousands of
//! connections written as plain sequential code:
//!
//! - every operation tries the system call first and parks only on
//!   `WouldBlock`; a socket registers with the hub once, on its first wait;
//! - `Read`/`Write` are implemented for the stream types and for shared
//!   references to them, so one tasklet can read while another writes;
//! - read/write timeouts fail with `ErrorKind::TimedOut`, inside a
//!   dispatcher or not (std on Unix reports `WouldBlock`; here `WouldBlock`
//!   only comes from a socket put in non-blocking mode with
//!   `set_nonblocking`), and [`tasklet_runtime::timeout`] and
//!   `JoinHandle::kill` interrupt any wait;
//! - a read into an empty buffer returns `Ok(0)` at once, as with std's
//!   blocking sockets;
//! - host names are resolved on the runtime's offload threads
//!   ([`ToSocketAddrs`]), never blocking the dispatcher;
//! - writes never raise `SIGPIPE`: a reset peer is an `io::Error`;
//! - sockets may be created outside a dispatcher and used inside one; on a
//!   thread without a dispatcher they simply block like the std types. A
//!   socket is `Send`: it may move to another dispatcher's thread (it
//!   registers with that dispatcher on its first wait, and may come back).
//!   The dispatcher it left keeps a stale, ignored registration until the
//!   socket is closed.
//!
//! [`process`] runs child processes whose pipes and exit waits park the
//! calling tasklet (`tasklet::process`, std's `std::process` in shape).
//!
//! [`StreamServer`] is gevent's `StreamServer`: a handler per connection
//! (over TCP, Unix or any [`Listener`]), an optional connection limit and a
//! graceful stop (also on SIGINT/SIGTERM); [`DatagramServer`] is its
//! datagram sibling: a handler per datagram, a bound on those in flight.
//!
//! With the `tls` feature, the `tls` module adds TLS streams on rustls
//! (`TlsAcceptor`, `TlsConnector`, `TlsStream`) and PEM loaders.
//!
//! With the `codec` feature (on by default), the `codec` module frames
//! streams in blocking style (`Framed::recv`/`send` over lines, length
//! prefixes, RESP…) and the `protocol` module offers Twisted's `Protocol`/`Transport`/`LineReceiver`
//! for porting Twisted code.
//!
//! ## The gevent echo server
//!
//! Accept in a loop, spawn a tasklet per client, read and write until EOF:
//!
//! ```
//! use std::io::{Read, Write};
//! use tasklet_netio::{TcpListener, TcpStream};
//!
//! fn handle(mut client: TcpStream) -> std::io::Result<()> {
//!     let mut buf = [0u8; 4096];
//!     loop {
//!         let n = client.read(&mut buf)?;
//!         if n == 0 {
//!             return Ok(()); // EOF: the client is done
//!         }
//!         client.write_all(&buf[..n])?;
//!     }
//! }
//!
//! tasklet_runtime::dispatch(|| {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     tasklet_runtime::spawn(move || {
//!         for client in listener.incoming() {
//!             let client = client.unwrap();
//!             tasklet_runtime::spawn(move || handle(client));
//!         }
//!     });
//!
//!     // A hundred concurrent clients, each one tasklet.
//!     let clients: Vec<_> = (0..100u8)
//!         .map(|i| {
//!             tasklet_runtime::spawn(move || {
//!                 let mut s = TcpStream::connect(addr).unwrap();
//!                 s.write_all(&[i; 32]).unwrap();
//!                 let mut echo = [0u8; 32];
//!                 s.read_exact(&mut echo).unwrap();
//!                 assert_eq!(echo, [i; 32]);
//!             })
//!         })
//!         .collect();
//!     for c in clients {
//!         c.join().unwrap();
//!     }
//! });
//! ```

#![warn(missing_docs)]

#[macro_use]
mod sock;
mod addr;
#[cfg(any(feature = "futures-io", feature = "tokio"))]
mod async_io;
#[cfg(feature = "codec")]
pub mod codec;
pub mod console;
pub mod process;
#[cfg(feature = "codec")]
pub mod protocol;
mod server;
mod sys;
mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
mod udp;
mod unix;

pub use addr::{lookup_host, ToSocketAddrs};
#[cfg(any(feature = "futures-io", feature = "tokio"))]
pub use async_io::{AsyncStream, StreamSocket};
pub use server::{
    DatagramServer, DatagramSocket, HandlerResult, Listener, ServerHandle, ServerStopper,
    StreamServer,
};
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixIncoming, UnixListener, UnixStream};
