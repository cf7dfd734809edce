//! The [`Transport`] a [`Protocol`](super::Protocol) writes through, and
//! the [`DelayedCall`]s it schedules.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tasklet_runtime::JoinHandle;

use crate::TcpStream;

/// How long a closing connection may take to write what is buffered.
const FLUSH_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Open,
    /// `lose_connection`: flush, FIN, close.
    Closing,
    /// `abort_connection`: drop the buffer, RST.
    Aborted,
    /// A write failed.
    Failed,
    Closed,
}

pub(super) struct Inner {
    pub(super) stream: TcpStream,
    pub(super) out: RefCell<BytesMut>,
    pub(super) state: Cell<State>,
    error: RefCell<Option<io::Error>>,
    /// A tasklet writing `out` while the socket is full.
    pub(super) writer: RefCell<Option<JoinHandle<()>>>,
    /// A flush took the writer's handle to join it and may be interrupted.
    pub(super) writer_detached: Cell<bool>,
    /// Callbacks running (writes are batched until they return).
    pub(super) in_callback: Cell<u32>,
    /// The connection tasklet is running a callback, not parked in `read`.
    pub(super) reader_busy: Cell<bool>,
    pub(super) timers: RefCell<Vec<DelayedCall>>,
}

/// The connection as a [`Protocol`] sees it (Twisted's `ITransport`).
///
/// Writes are buffered and never block: what a callback writes goes out in
/// one `send` when it returns, and what the socket cannot take yet is
/// written by a helper tasklet as the peer reads. Cheap to clone (`Rc`).
///
/// [`Protocol`]: super::Protocol
#[derive(Clone)]
pub struct Transport {
    pub(super) inner: Rc<Inner>,
}

impl Transport {
    pub(super) fn new(stream: TcpStream) -> Transport {
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
    ///
    /// [`Protocol::connection_lost`]: super::Protocol::connection_lost
    pub fn lose_connection(&self) {
        if self.inner.state.get() == State::Open {
            self.inner.state.set(State::Closing);
            self.wake_reader();
        }
    }

    /// Drops whatever is buffered and resets the connection (RST through
    /// `SO_LINGER` 0; Twisted's `abortConnection`); then
    /// [`Protocol::connection_lost`] with a `ConnectionAborted` error.
    ///
    /// [`Protocol::connection_lost`]: super::Protocol::connection_lost
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

    pub(super) fn failure(&self) -> io::Error {
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
    pub(super) fn flush_blocking(&self) {
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
pub(super) struct CallbackGuard<'a>(pub(super) &'a Transport);

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
