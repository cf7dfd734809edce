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

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tasklet_runtime::JoinHandle;

use crate::codec::{Decoder, LinesCodec};
use crate::{StreamServer, TcpStream, ToSocketAddrs};

/// How long a closing connection may take to write what is buffered.
const FLUSH_LIMIT: Duration = Duration::from_secs(10);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// `lose_connection`: flush, FIN, close.
    Closing,
    /// `abort_connection`: drop the buffer, RST.
    Aborted,
    /// A write failed.
    Failed,
    Closed,
}

struct Inner {
    stream: TcpStream,
    out: RefCell<BytesMut>,
    state: Cell<State>,
    error: RefCell<Option<io::Error>>,
    /// A tasklet writing `out` while the socket is full.
    writer: RefCell<Option<JoinHandle<()>>>,
    /// A flush took the writer's handle to join it and may be interrupted.
    writer_detached: Cell<bool>,
    /// Callbacks running (writes are batched until they return).
    in_callback: Cell<u32>,
    /// The connection tasklet is running a callback, not parked in `read`.
    reader_busy: Cell<bool>,
    timers: RefCell<Vec<DelayedCall>>,
}

/// The connection as a [`Protocol`] sees it (Twisted's `ITransport`).
///
/// Writes are buffered and never block: what a callback writes goes out in
/// one `send` when it returns, and what the socket cannot take yet is
/// written by a helper tasklet as the peer reads. Cheap to clone (`Rc`).
#[derive(Clone)]
pub struct Transport {
    inner: Rc<Inner>,
}

impl Transport {
    fn new(stream: TcpStream) -> Transport {
        Transport {
            inner: Rc::new(Inner {
                stream,
                out: RefCell::new(BytesMut::new()),
                state: Cell::new(State::Open),
                error: RefCell::new(None),
                writer: RefCell::new(None),
                writer_detached: Cell::new(false),
                in_callback: Cell::new(0),
                reader_busy: Cell::new(false),
                timers: RefCell::new(Vec::new()),
            }),
        }
    }

    /// Queues `data` for sending (Twisted's `transport.write`). Never
    /// blocks; ignored once the connection is closing or closed.
    pub fn write(&self, data: &[u8]) {
        if self.inner.state.get() != State::Open {
            return;
        }
        self.inner.out.borrow_mut().extend_from_slice(data);
        if self.inner.in_callback.get() == 0 {
            self.kick();
        }
    }

    /// Queues `data` like [`write`](Self::write), but reports a connection
    /// that is closing, closed or failed as an error (`NotConnected`, or the
    /// write error), so callers can stop early with `?`.
    pub fn write_all(&self, data: &[u8]) -> io::Result<()> {
        match self.inner.state.get() {
            State::Open => {
                self.write(data);
                Ok(())
            }
            State::Failed => Err(self.failure()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection is closing or closed",
            )),
        }
    }

    /// Queues several buffers (Twisted's `writeSequence`).
    pub fn write_sequence<'a>(&self, data: impl IntoIterator<Item = &'a [u8]>) {
        self.inner.in_callback.set(self.inner.in_callback.get() + 1);
        for d in data {
            self.write(d);
        }
        self.inner.in_callback.set(self.inner.in_callback.get() - 1);
        if self.inner.in_callback.get() == 0 {
            self.kick();
        }
    }

    /// Bytes queued but not yet handed to the kernel.
    pub fn buffered(&self) -> usize {
        self.inner.out.borrow().len()
    }

    /// Closes the connection gracefully (Twisted's `loseConnection`): no
    /// more data is delivered, what is buffered is written, then FIN; then
    /// [`Protocol::connection_lost`] with `None`.
    pub fn lose_connection(&self) {
        if self.inner.state.get() == State::Open {
            self.inner.state.set(State::Closing);
            self.wake_reader();
        }
    }

    /// Drops whatever is buffered and resets the connection (RST through
    /// `SO_LINGER` 0; Twisted's `abortConnection`); then
    /// [`Protocol::connection_lost`] with a `ConnectionAborted` error.
    pub fn abort_connection(&self) {
        if matches!(self.inner.state.get(), State::Open | State::Closing) {
            self.inner.state.set(State::Aborted);
            self.inner.out.borrow_mut().clear();
            self.wake_reader();
        }
    }

    /// Whether [`lose_connection`](Self::lose_connection) or
    /// [`abort_connection`](Self::abort_connection) was called, a write
    /// failed, or the connection is gone.
    pub fn is_closing(&self) -> bool {
        self.inner.state.get() != State::Open
    }

    /// The peer's address (Twisted's `getPeer`).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.stream.peer_addr()
    }

    /// Our address (Twisted's `getHost`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.stream.local_addr()
    }

    /// The socket, e.g. for `set_nodelay`. Reading or writing it directly
    /// bypasses the protocol machinery.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner.stream
    }

    /// Runs `f` after `delay` (Twisted's `reactor.callLater`), in a tasklet
    /// of its own; what it writes is sent when it returns. The call belongs
    /// to the connection: it is cancelled if the connection is lost first.
    /// The returned [`DelayedCall`] can cancel it.
    ///
    /// A `LoopingCall` is a callback that schedules itself again, or, more
    /// simply, a tasklet looping over `tasklet::sleep`.
    pub fn call_later(&self, delay: Duration, f: impl FnOnce(&Transport) + 'static) -> DelayedCall {
        let call = DelayedCall {
            inner: Rc::new(CallInner {
                state: Cell::new(CallState::Pending),
                task: RefCell::new(None),
            }),
        };
        let c = call.clone();
        let t = self.clone();
        let task = tasklet_runtime::spawn(move || {
            tasklet_runtime::sleep(delay);
            if c.inner.state.get() != CallState::Pending || t.inner.state.get() == State::Closed {
                return;
            }
            c.inner.state.set(CallState::Called);
            t.inner.in_callback.set(t.inner.in_callback.get() + 1);
            let guard = CallbackGuard(&t);
            f(&t);
            drop(guard);
        });
        *call.inner.task.borrow_mut() = Some(task);
        let mut timers = self.inner.timers.borrow_mut();
        timers.retain(|c| c.active());
        timers.push(call.clone());
        call
    }

    fn failure(&self) -> io::Error {
        match &*self.inner.error.borrow() {
            Some(e) => io::Error::new(e.kind(), e.to_string()),
            None => io::Error::new(io::ErrorKind::BrokenPipe, "the connection failed"),
        }
    }

    /// Makes the connection tasklet notice a state change if it is parked
    /// in `read` (a shut-down read side reads as end of stream at once).
    fn wake_reader(&self) {
        if !self.inner.reader_busy.get() {
            let _ = self.inner.stream.shutdown(Shutdown::Read);
        }
    }

    /// Sends what is buffered without blocking; what the socket does not
    /// take is left to a writer tasklet.
    fn kick(&self) {
        let inner = &self.inner;
        if inner.writer.borrow().is_some() || inner.out.borrow().is_empty() {
            return;
        }
        let fd = inner.stream.as_raw_fd();
        loop {
            let r = {
                let out = inner.out.borrow();
                if out.is_empty() {
                    return;
                }
                crate::sys::send(fd, &out)
            };
            match r {
                Ok(n) => inner.out.borrow_mut().advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return self.fail(e),
            }
        }
        let t = self.clone();
        let writer = tasklet_runtime::spawn(move || {
            loop {
                let chunk = std::mem::take(&mut *t.inner.out.borrow_mut());
                if chunk.is_empty() {
                    break;
                }
                if let Err(e) = (&t.inner.stream).write_all(&chunk) {
                    t.inner.writer.borrow_mut().take();
                    return t.fail(e);
                }
            }
            t.inner.writer.borrow_mut().take();
        });
        // The writer may have finished already (its first write succeeded).
        if !writer.is_finished() {
            *inner.writer.borrow_mut() = Some(writer);
        }
    }

    fn fail(&self, e: io::Error) {
        if matches!(self.inner.state.get(), State::Open | State::Closing) {
            log::debug!("tasklet-netio: protocol transport: write failed: {e}");
            *self.inner.error.borrow_mut() = Some(e);
            self.inner.state.set(State::Failed);
            self.inner.out.borrow_mut().clear();
            self.wake_reader();
        }
    }

    /// Waits (bounded) until everything buffered is written.
    fn flush_blocking(&self) {
        let writer = self.inner.writer.borrow_mut().take();
        // Until it is joined, nothing else can stop the writer.
        self.inner.writer_detached.set(writer.is_some());
        let r = tasklet_runtime::timeout(FLUSH_LIMIT, || {
            if let Some(w) = writer {
                let _ = w.join();
                self.inner.writer_detached.set(false);
            }
            let rest = std::mem::take(&mut *self.inner.out.borrow_mut());
            if !rest.is_empty() && self.inner.state.get() != State::Failed {
                if let Err(e) = (&self.inner.stream).write_all(&rest) {
                    self.fail(e);
                }
            }
        });
        if r.is_err() {
            log::debug!("tasklet-netio: protocol transport: could not flush in {FLUSH_LIMIT:?}");
            // Wakes the writer (now detached) with an error, so it lets go.
            let _ = self.inner.stream.shutdown(Shutdown::Both);
            self.inner.writer_detached.set(false);
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("stream", &self.inner.stream)
            .field("state", &self.inner.state.get())
            .field("buffered", &self.buffered())
            .finish()
    }
}

/// `io::Write` for a transport: buffered, never blocks, `write_all`
/// semantics (errors once the connection is closing), so `write!` works.
impl Write for &Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Transport::write_all(self, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Ends a callback: sends what it wrote.
struct CallbackGuard<'a>(&'a Transport);

impl Drop for CallbackGuard<'_> {
    fn drop(&mut self) {
        let n = self.0.inner.in_callback.get() - 1;
        self.0.inner.in_callback.set(n);
        if n == 0 && !std::thread::panicking() {
            self.0.kick();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Pending,
    Called,
    Cancelled,
}

struct CallInner {
    state: Cell<CallState>,
    task: RefCell<Option<JoinHandle<()>>>,
}

/// A call scheduled with [`Transport::call_later`] (Twisted's `DelayedCall`).
#[derive(Clone)]
pub struct DelayedCall {
    inner: Rc<CallInner>,
}

impl DelayedCall {
    /// Cancels the call if it has not run yet; returns whether it had not.
    pub fn cancel(&self) -> bool {
        if self.inner.state.get() != CallState::Pending {
            return false;
        }
        self.inner.state.set(CallState::Cancelled);
        let task = self.inner.task.borrow_mut().take();
        if let Some(t) = task {
            t.kill();
        }
        true
    }

    /// Whether the call is still to run.
    pub fn active(&self) -> bool {
        self.inner.state.get() == CallState::Pending
    }
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedCall")
            .field("state", &self.inner.state.get())
            .finish()
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

/// A line-oriented protocol (Twisted's `LineReceiver`): implement it and
/// serve it wrapped in a [`LineProtocol`].
///
/// Lines end in `\n` or `\r\n` and arrive without it; a line longer than the
/// protocol's [`max_length`](LineProtocol::max_length) or not UTF-8 goes to
/// [`line_error`](Self::line_error). [`LineTransport::set_raw_mode`] sends
/// the following bytes — including any already buffered — to
/// [`raw_data_received`](Self::raw_data_received) instead, until
/// [`LineTransport::set_line_mode`].
pub trait LineReceiver {
    /// The connection is up. Default: nothing.
    fn connection_made(&mut self, lines: &mut LineTransport<'_>) {
        let _ = lines;
    }

    /// A line arrived, without its line ending.
    fn line_received(&mut self, line: String, lines: &mut LineTransport<'_>);

    /// Bytes arrived in raw mode. Default: discarded.
    fn raw_data_received(&mut self, data: &[u8], lines: &mut LineTransport<'_>) {
        let _ = (data, lines);
    }

    /// A line was too long (Twisted's `lineLengthExceeded`; the error names
    /// the limit) or not UTF-8. Default: close the connection, as Twisted
    /// does for long lines.
    fn line_error(&mut self, error: io::Error, lines: &mut LineTransport<'_>) {
        log::debug!("tasklet-netio: LineReceiver: {error}; closing the connection");
        lines.lose_connection();
    }

    /// The connection is gone (see [`Protocol::connection_lost`]).
    fn connection_lost(&mut self, reason: Option<io::Error>) {
        let _ = reason;
    }
}

struct LineState {
    raw: bool,
    buf: BytesMut,
    delimiter: Vec<u8>,
}

/// What a [`LineReceiver`] callback gets: the [`Transport`] (by `Deref`)
/// plus `send_line` and the line/raw mode switches.
pub struct LineTransport<'a> {
    transport: &'a Transport,
    state: &'a mut LineState,
}

impl LineTransport<'_> {
    /// Sends `line` followed by the delimiter (`\r\n` unless changed with
    /// [`LineProtocol::delimiter`]).
    pub fn send_line(&self, line: &str) {
        self.transport
            .write_sequence([line.as_bytes(), &self.state.delimiter[..]]);
    }

    /// Delivers the bytes after the current line, and all that follow, to
    /// [`LineReceiver::raw_data_received`] (Twisted's `setRawMode`).
    pub fn set_raw_mode(&mut self) {
        self.state.raw = true;
    }

    /// Back to lines (Twisted's `setLineMode`): `extra` — typically the part
    /// of the raw data after the payload — is parsed as lines first.
    pub fn set_line_mode(&mut self, extra: &[u8]) {
        self.state.raw = false;
        self.state.buf.extend_from_slice(extra);
    }

    /// Whether raw mode is on.
    pub fn is_raw(&self) -> bool {
        self.state.raw
    }

    /// The transport.
    pub fn transport(&self) -> &Transport {
        self.transport
    }
}

impl fmt::Debug for LineTransport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineTransport")
            .field("transport", self.transport)
            .field("raw", &self.state.raw)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for LineTransport<'_> {
    type Target = Transport;
    fn deref(&self) -> &Transport {
        self.transport
    }
}

/// Serves a [`LineReceiver`] as a [`Protocol`], framing with
/// [`LinesCodec`].
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use tasklet::netio::protocol::{LineProtocol, LineReceiver, LineTransport};
/// use tasklet::netio::{StreamServer, TcpStream};
///
/// /// Answers each line with its length; "bye" closes.
/// struct Counter;
///
/// impl LineReceiver for Counter {
///     fn line_received(&mut self, line: String, lines: &mut LineTransport<'_>) {
///         if line == "bye" {
///             lines.lose_connection();
///         } else {
///             lines.send_line(&line.len().to_string());
///         }
///     }
/// }
///
/// tasklet::dispatch(|| {
///     let server = StreamServer::bind_protocol("127.0.0.1:0", |_| {
///         LineProtocol::new(Counter).max_length(100)
///     })
///     .unwrap()
///     .start();
///     let mut c = TcpStream::connect(server.local_addr()).unwrap();
///     c.write_all(b"hello\r\nworld!\nbye\n").unwrap();
///     let replies: Vec<String> = BufReader::new(&c).lines().map(|l| l.unwrap()).collect();
///     assert_eq!(replies, ["5", "6"]); // then the server closed the connection
/// });
/// ```
pub struct LineProtocol<R> {
    receiver: R,
    codec: LinesCodec,
    state: LineState,
}

impl<R: LineReceiver> LineProtocol<R> {
    /// Wraps `receiver`, with Twisted's defaults: lines of at most 16384
    /// bytes, `\r\n` as the delimiter `send_line` appends.
    pub fn new(receiver: R) -> LineProtocol<R> {
        LineProtocol {
            receiver,
            codec: LinesCodec::new().max_length(16384),
            state: LineState {
                raw: false,
                buf: BytesMut::new(),
                delimiter: b"\r\n".to_vec(),
            },
        }
    }

    /// Caps a line at `max` bytes (Twisted's `MAX_LENGTH`): a longer one
    /// goes to [`LineReceiver::line_error`] and is never buffered whole.
    pub fn max_length(mut self, max: usize) -> LineProtocol<R> {
        self.codec = LinesCodec::new().max_length(max);
        self
    }

    /// What `send_line` appends (default `\r\n`).
    pub fn delimiter(mut self, delimiter: &[u8]) -> LineProtocol<R> {
        self.state.delimiter = delimiter.to_vec();
        self
    }

    /// The receiver.
    pub fn get_ref(&self) -> &R {
        &self.receiver
    }

    /// The receiver, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.receiver
    }

    /// Delivers what is buffered, in the current mode, until nothing is left
    /// or the connection closes.
    fn deliver(&mut self, t: &Transport) {
        while !t.is_closing() {
            let mut lines = LineTransport {
                transport: t,
                state: &mut self.state,
            };
            if lines.state.raw {
                if lines.state.buf.is_empty() {
                    return;
                }
                let data = lines.state.buf.split();
                self.receiver.raw_data_received(&data, &mut lines);
                continue;
            }
            match self.codec.decode(&mut lines.state.buf) {
                Ok(Some(line)) => self.receiver.line_received(line, &mut lines),
                Ok(None) => return,
                Err(e) => self.receiver.line_error(e, &mut lines),
            }
        }
    }
}

impl<R: LineReceiver> Protocol for LineProtocol<R> {
    fn connection_made(&mut self, transport: &Transport) {
        let mut lines = LineTransport {
            transport,
            state: &mut self.state,
        };
        self.receiver.connection_made(&mut lines);
        self.deliver(transport);
    }

    fn data_received(&mut self, data: &[u8], transport: &Transport) {
        if self.state.raw && self.state.buf.is_empty() {
            // The common raw-mode case: no copy.
            let mut lines = LineTransport {
                transport,
                state: &mut self.state,
            };
            self.receiver.raw_data_received(data, &mut lines);
        } else {
            self.state.buf.extend_from_slice(data);
        }
        self.deliver(transport);
    }

    fn connection_lost(&mut self, reason: Option<io::Error>) {
        self.receiver.connection_lost(reason);
    }
}

impl<R: fmt::Debug> fmt::Debug for LineProtocol<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineProtocol")
            .field("receiver", &self.receiver)
            .field("raw", &self.state.raw)
            .field("buffered", &self.state.buf.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TcpListener;
    use std::io::{BufRead, BufReader};

    const LIMIT: Duration = Duration::from_secs(10);

    type Log = Rc<RefCell<Vec<String>>>;

    /// Serves one connection with `proto`; returns the client side.
    fn serve_one<P: Protocol + 'static>(proto: P) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        let (s, _) = listener.accept().unwrap();
        tasklet_runtime::spawn(move || run(s, proto));
        client
    }

    /// Records its callbacks; runs `on_data` for each chunk.
    struct Recorder<F> {
        log: Log,
        on_data: F,
    }

    impl<F: FnMut(&[u8], &Transport)> Protocol for Recorder<F> {
        fn connection_made(&mut self, _t: &Transport) {
            self.log.borrow_mut().push("made".into());
        }
        fn data_received(&mut self, data: &[u8], t: &Transport) {
            self.log
                .borrow_mut()
                .push(format!("data {}", String::from_utf8_lossy(data)));
            (self.on_data)(data, t);
        }
        fn connection_lost(&mut self, reason: Option<io::Error>) {
            self.log
                .borrow_mut()
                .push(format!("lost {:?}", reason.map(|e| e.kind())));
        }
    }

    fn wait_for(log: &Log, entry: &str) {
        let deadline = std::time::Instant::now() + LIMIT;
        while !log.borrow().iter().any(|e| e == entry) {
            assert!(
                std::time::Instant::now() < deadline,
                "{entry}: {:?}",
                log.borrow()
            );
            tasklet_runtime::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn callbacks_in_order_and_a_clean_close_by_the_peer() {
        tasklet_runtime::dispatch(|| {
            let log = Log::default();
            let mut c = serve_one(Recorder {
                log: log.clone(),
                on_data: |d: &[u8], t: &Transport| {
                    t.write(b"<");
                    t.write(d);
                    t.write(b">");
                },
            });
            c.write_all(b"hi").unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"<hi>");
            c.shutdown(Shutdown::Write).unwrap();
            assert_eq!(c.read(&mut b).unwrap(), 0, "FIN after the peer's");
            wait_for(&log, "lost None");
            assert_eq!(*log.borrow(), ["made", "data hi", "lost None"]);
        });
    }

    #[test]
    fn lose_connection_flushes_everything_then_closes() {
        tasklet_runtime::dispatch(|| {
            let log = Log::default();
            let big = vec![7u8; 4 << 20];
            let mut c = serve_one(Recorder {
                log: log.clone(),
                on_data: move |_: &[u8], t: &Transport| {
                    t.write(&big);
                    t.lose_connection();
                    t.write(b"ignored after lose_connection");
                    assert!(t.write_all(b"x").is_err());
                },
            });
            c.write_all(b"go").unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), 4 << 20);
            assert!(got.iter().all(|&b| b == 7));
            wait_for(&log, "lost None");
        });
    }

    #[test]
    fn abort_connection_resets_and_drops_the_buffer() {
        tasklet_runtime::dispatch(|| {
            let log = Log::default();
            let mut c = serve_one(Recorder {
                log: log.clone(),
                on_data: |_: &[u8], t: &Transport| {
                    t.write(b"never sent");
                    t.abort_connection();
                },
            });
            c.write_all(b"go").unwrap();
            let mut b = [0u8; 16];
            let e = c.read(&mut b).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
            wait_for(&log, "lost Some(ConnectionAborted)");
        });
    }

    #[test]
    fn call_later_runs_writes_and_cancels_and_closing_from_a_timer_wakes_the_reader() {
        tasklet_runtime::dispatch(|| {
            let log = Log::default();
            struct Timed(Log);
            impl Protocol for Timed {
                fn connection_made(&mut self, t: &Transport) {
                    let cancelled = t.call_later(Duration::from_millis(5), |t| t.write(b"BAD"));
                    assert!(cancelled.cancel());
                    assert!(!cancelled.active());
                    t.call_later(Duration::from_millis(10), |t| {
                        t.write(b"tick\n");
                        t.call_later(Duration::from_millis(10), |t| t.lose_connection());
                    });
                    // Dies with the connection.
                    let log = self.0.clone();
                    t.call_later(LIMIT, move |_| log.borrow_mut().push("late".into()));
                }
                fn data_received(&mut self, _: &[u8], _: &Transport) {}
                fn connection_lost(&mut self, reason: Option<io::Error>) {
                    assert!(reason.is_none(), "{reason:?}");
                    self.0.borrow_mut().push("lost".into());
                }
            }
            let c = serve_one(Timed(log.clone()));
            let mut lines = BufReader::new(&c);
            let mut all = String::new();
            lines.read_to_string(&mut all).unwrap();
            assert_eq!(all, "tick\n");
            wait_for(&log, "lost");
            assert_eq!(*log.borrow(), ["lost"]);
        });
    }

    /// Reads "SIZE n" lines, each followed by an n-byte raw payload.
    struct Sized {
        want: usize,
        got: Vec<u8>,
        log: Log,
    }

    impl LineReceiver for Sized {
        fn line_received(&mut self, line: String, lines: &mut LineTransport<'_>) {
            self.log.borrow_mut().push(format!("line {line}"));
            if let Some(n) = line.strip_prefix("SIZE ") {
                self.want = n.parse().unwrap();
                self.got.clear();
                lines.set_raw_mode();
            } else if line == "QUIT" {
                lines.send_line("bye");
                lines.lose_connection();
            }
        }
        fn raw_data_received(&mut self, data: &[u8], lines: &mut LineTransport<'_>) {
            let take = (self.want - self.got.len()).min(data.len());
            self.got.extend_from_slice(&data[..take]);
            if self.got.len() == self.want {
                self.log
                    .borrow_mut()
                    .push(format!("raw {}", String::from_utf8_lossy(&self.got)));
                lines.send_line(&format!("got {}", self.want));
                lines.set_line_mode(&data[take..]);
            }
        }
        fn connection_lost(&mut self, _: Option<io::Error>) {
            self.log.borrow_mut().push("lost".into());
        }
    }

    #[test]
    fn line_receiver_switches_to_raw_and_back_without_losing_bytes() {
        tasklet_runtime::dispatch(|| {
            let log = Log::default();
            let proto = LineProtocol::new(Sized {
                want: 0,
                got: Vec::new(),
                log: log.clone(),
            });
            let mut c = serve_one(proto);
            // Everything in one write: the raw payload and the next lines
            // arrive in the same read as the header line.
            c.write_all(b"hello\r\nSIZE 5\r\nab\ncdSIZE 3\nxyzQUIT\r\n")
                .unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            assert_eq!(out, "got 5\r\ngot 3\r\nbye\r\n");
            wait_for(&log, "lost");
            assert_eq!(
                *log.borrow(),
                [
                    "line hello",
                    "line SIZE 5",
                    "raw ab\ncd",
                    "line SIZE 3",
                    "raw xyz",
                    "line QUIT",
                    "lost"
                ]
            );
        });
    }

    struct Lines(Log);

    impl LineReceiver for Lines {
        fn line_received(&mut self, line: String, lines: &mut LineTransport<'_>) {
            lines.send_line(&line.to_uppercase());
        }
        fn connection_lost(&mut self, reason: Option<io::Error>) {
            self.0.borrow_mut().push(format!("lost {reason:?}"));
        }
    }

    #[test]
    fn over_long_line_closes_by_default_after_earlier_answers() {
        tasklet_runtime::dispatch(|| {
            let log = Log::default();
            let mut c = serve_one(LineProtocol::new(Lines(log.clone())).max_length(8));
            c.write_all(b"short\n").unwrap();
            c.write_all(&[b'x'; 100_000]).unwrap();
            let mut r = BufReader::new(&c);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "SHORT\r\n");
            line.clear();
            // Closed (FIN or, with unread input, a reset).
            assert!(matches!(r.read_line(&mut line), Ok(0) | Err(_)));
            wait_for(&log, "lost None");
        });
    }
}
