//! Twisted's `Protocol`/`Factory`, for people porting Twisted code.
//!
//! A [`Protocol`] receives callbacks — [`connection_made`](Protocol::connection_made),
//! [`data_received`](Protocol::data_received),
//! [`connection_lost`](Protocol::connection_lost) — and answers through its
//! [`Transport`]: [`write`](Transport::write) (buffered, never blocks),
//! [`lose_connection`](Transport::lose_connection),
//! [`abort_connection`](Transport::abort_connection),
//! [`call_later`](Transport::call_later). A *factory* is a closure building
//! one protocol per connection; [`StreamServer::bind_protocol`] serves it.
//! Behind the scenes each connection is one tasklet that reads and calls
//! back — the user never sees it, and a callback may still block in
//! tasklet style (`tasklet::sleep`, a database query…) without stalling
//! other connections.
//!
//! [`LineReceiver`] with [`LineProtocol`] is Twisted's `LineReceiver`:
//! `line_received`, `send_line`, and a raw mode for binary payloads.
//!
//! New code is usually simpler as a plain tasklet loop (see
//! [`codec::Framed`](crate::codec::Framed)); `docs/from-twisted.md` maps the
//! rest of Twisted onto tasklets.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use tasklet::netio::protocol::{Protocol, Transport};
//! use tasklet::netio::{StreamServer, TcpStream};
//!
//! /// Twisted's Echo.
//! struct Echo;
//!
//! impl Protocol for Echo {
//!     fn data_received(&mut self, data: &[u8], transport: &Transport) {
//!         transport.write(data);
//!     }
//! }
//!
//! tasklet::dispatch(|| {
//!     let server = StreamServer::bind_protocol("127.0.0.1:0", |_peer| Echo).unwrap();
//!     let handle = server.start();
//!     let mut c = TcpStream::connect(handle.local_addr()).unwrap();
//!     c.write_all(b"hello\n").unwrap();
//!     let mut line = String::new();
//!     BufReader::new(&c).read_line(&mut line).unwrap();
//!     assert_eq!(line, "hello\n");
//! });
//! ```

mod lines;
mod transport;

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use crate::{StreamServer, TcpStream, ToSocketAddrs};

pub use lines::{LineProtocol, LineReceiver, LineTransport};
use transport::{CallbackGuard, State};
pub use transport::{DelayedCall, Transport};

/// How long a connection closed by [`Transport::lose_connection`] waits for
/// the peer's FIN after sending its own (so that late bytes from the peer do
/// not turn the close into a reset that could destroy our last data).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
const READ_BUF: usize = 16 * 1024;

/// A connection's behaviour, as callbacks (Twisted's `Protocol`).
///
/// All callbacks of one connection run in its tasklet, one at a time; they
/// may block in tasklet style. The transport passed to them is also
/// available later: it is cheap to clone and can be kept.
pub trait Protocol {
    /// The connection is up. Default: nothing.
    fn connection_made(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// Bytes arrived (any amount: a message may arrive in pieces, or several
    /// together; frame them yourself or use [`LineProtocol`]).
    fn data_received(&mut self, data: &[u8], transport: &Transport);

    /// The connection is gone: `None` after a clean close (by either side),
    /// the error otherwise (`ConnectionAborted` after
    /// [`Transport::abort_connection`]). Called exactly once, last.
    fn connection_lost(&mut self, reason: Option<io::Error>) {
        let _ = reason;
    }
}

/// Runs `protocol` over `stream` in the calling tasklet until the connection
/// is lost (what [`StreamServer::bind_protocol`] does for each connection;
/// a client calls it after `TcpStream::connect`, as Twisted's `connectTCP`).
///
/// # Panics
/// Outside a dispatcher.
pub fn run<P: Protocol>(stream: TcpStream, mut protocol: P) {
    let t = Transport::new(stream);
    let inner = &t.inner;
    // However the tasklet ends (a panicking callback, a kill), the helper
    // tasklets holding the transport go, so the socket closes.
    let _cleanup = Cleanup(&t);
    callback(&t, || protocol.connection_made(&t));
    let mut buf = vec![0u8; READ_BUF];
    let mut read_error = None;
    while inner.state.get() == State::Open {
        match (&inner.stream).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if inner.state.get() != State::Open {
                    break;
                }
                callback(&t, || protocol.data_received(&buf[..n], &t));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if inner.state.get() == State::Open {
                    read_error = Some(e);
                }
                break;
            }
        }
    }
    // Nothing is delivered from here on; callbacks scheduled for later die
    // with the connection.
    inner.reader_busy.set(true);
    cancel_timers(&t);
    let reason = match (inner.state.get(), read_error) {
        (State::Aborted, _) => {
            let writer = inner.writer.borrow_mut().take();
            if let Some(w) = writer {
                w.kill();
            }
            inner.out.borrow_mut().clear();
            let _ = inner.stream.set_linger(Some(Duration::ZERO));
            Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection aborted",
            ))
        }
        (State::Failed, _) => Some(t.failure()),
        (_, Some(e)) => {
            let writer = inner.writer.borrow_mut().take();
            if let Some(w) = writer {
                w.kill();
            }
            Some(e)
        }
        (state, None) => {
            // A clean end, ours or the peer's: what is buffered still goes out.
            t.flush_blocking();
            if inner.state.get() == State::Failed {
                Some(t.failure())
            } else {
                let _ = inner.stream.shutdown(Shutdown::Write);
                if state == State::Closing {
                    drain(&inner.stream, &mut buf);
                }
                None
            }
        }
    };
    inner.state.set(State::Closed);
    protocol.connection_lost(reason);
}

fn cancel_timers(t: &Transport) {
    let timers = std::mem::take(&mut *t.inner.timers.borrow_mut());
    for call in timers {
        call.cancel();
    }
}

struct Cleanup<'a>(&'a Transport);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let inner = &self.0.inner;
        if inner.writer_detached.get() {
            // A writer detached by an interrupted flush wakes with an error
            // and lets go of the socket.
            let _ = inner.stream.shutdown(Shutdown::Both);
        }
        inner.state.set(State::Closed);
        cancel_timers(self.0);
        let writer = inner.writer.borrow_mut().take();
        if let Some(w) = writer {
            w.kill();
        }
        inner.out.borrow_mut().clear();
    }
}

/// Reads and discards until the peer's FIN (bounded).
fn drain(stream: &TcpStream, buf: &mut [u8]) {
    let _ = tasklet_runtime::timeout(DRAIN_LIMIT, || {
        let mut s = stream;
        while let Ok(n) = s.read(buf) {
            if n == 0 {
                break;
            }
        }
    });
}

/// Runs one callback on the connection tasklet: writes are batched until it
/// returns, then sent.
fn callback(t: &Transport, f: impl FnOnce()) {
    t.inner.reader_busy.set(true);
    t.inner.in_callback.set(t.inner.in_callback.get() + 1);
    let guard = CallbackGuard(t);
    f();
    drop(guard);
    t.inner.reader_busy.set(false);
}

impl StreamServer {
    /// A server that runs a [`Protocol`] per connection, built by
    /// `factory(peer)` (Twisted's `Factory.buildProtocol`; shared factory
    /// state lives in what the closure captures, e.g. an `Rc<RefCell<_>>`).
    pub fn bind_protocol<A, F, P>(addr: A, factory: F) -> io::Result<StreamServer>
    where
        A: ToSocketAddrs,
        F: Fn(SocketAddr) -> P + 'static,
        P: Protocol + 'static,
    {
        StreamServer::bind(addr, move |stream, peer| run(stream, factory(peer)))
    }
}

#[cfg(test)]
mod tests;
