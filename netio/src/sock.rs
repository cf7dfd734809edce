//! `Sock<S>`: the cooperative core every socket type wraps. It owns the hub
//! registration ([`IoSource`]) and the per-socket timeouts, and turns
//! `WouldBlock` into a park of the calling tasklet.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use tasklet_runtime::hub::{self, Direction, IoSource};

use crate::sys;

/// Laid out for a server with many connections, where each message finds
/// its socket cold in the cache: everything a read or a write touches when
/// nothing goes wrong — the registration, the fd, the read timeout, the
/// drained mark, the flags — is in the first cache line (`align(64)`); the
/// write timeout (needed only when a write would block) and the deadlines
/// (flagged by `has_deadline`) are in the second.
#[repr(C, align(64))]
pub(crate) struct Sock<S: AsRawFd> {
    io: IoSource<S>,
    read_timeout: Cell<Option<Duration>>,
    /// One more than the hub's I/O tick at which a read last found the
    /// receive queue drained (a short read); 0: none. See
    /// [`Sock::read_stream`].
    drained_at: Cell<u64>,
    nonblocking: Cell<bool>,
    /// Whether a read or write deadline is set.
    has_deadline: Cell<bool>,
    write_timeout: Cell<Option<Duration>>,
    /// Absolute limits for every read/write wait, on top of the timeouts.
    read_deadline: Cell<Option<Instant>>,
    write_deadline: Cell<Option<Instant>>,
}

impl<S: AsRawFd> Sock<S> {
    pub(crate) fn new(s: S) -> Sock<S> {
        Sock {
            io: IoSource::new(s),
            read_timeout: Cell::new(None),
            drained_at: Cell::new(0),
            nonblocking: Cell::new(false),
            has_deadline: Cell::new(false),
            write_timeout: Cell::new(None),
            read_deadline: Cell::new(None),
            write_deadline: Cell::new(None),
        }
    }

    /// A `Sock` for `s` (a `dup` of this socket) with this one's timeouts
    /// and non-blocking mode: what `try_clone` returns.
    pub(crate) fn twin<T: AsRawFd>(&self, s: T) -> Sock<T> {
        let t = Sock::new(s);
        t.read_timeout.set(self.read_timeout.get());
        t.write_timeout.set(self.write_timeout.get());
        t.set_read_deadline(self.read_deadline.get());
        t.set_write_deadline(self.write_deadline.get());
        t.nonblocking.set(self.nonblocking.get());
        t
    }

    #[inline]
    pub(crate) fn get(&self) -> &S {
        self.io.get_ref()
    }

    #[inline]
    pub(crate) fn fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }

    /// Unwraps the socket, deregistering it from the hub.
    pub(crate) fn into_inner(self) -> S {
        self.io.into_inner()
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        check_timeout(t)?;
        self.read_timeout.set(t);
        Ok(())
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        check_timeout(t)?;
        self.write_timeout.set(t);
        Ok(())
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout.get()
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout.get()
    }

    pub(crate) fn set_read_deadline(&self, at: Option<Instant>) {
        self.read_deadline.set(at);
        self.note_deadlines();
    }

    pub(crate) fn set_write_deadline(&self, at: Option<Instant>) {
        self.write_deadline.set(at);
        self.note_deadlines();
    }

    fn note_deadlines(&self) {
        self.has_deadline
            .set(self.read_deadline.get().is_some() || self.write_deadline.get().is_some());
    }

    pub(crate) fn read_deadline(&self) -> Option<Instant> {
        self.read_deadline.get()
    }

    pub(crate) fn write_deadline(&self) -> Option<Instant> {
        self.write_deadline.get()
    }

    /// When a wait for `dir` starting now must end: the earlier of the
    /// direction's timeout from now and its deadline.
    #[inline]
    fn wait_deadline(&self, dir: Direction) -> Option<Instant> {
        let timeout = match dir {
            Direction::Read => self.read_timeout.get(),
            Direction::Write => self.write_timeout.get(),
        };
        let after = timeout.and_then(|t| Instant::now().checked_add(t));
        if !self.has_deadline.get() {
            return after;
        }
        let at = match dir {
            Direction::Read => self.read_deadline.get(),
            Direction::Write => self.write_deadline.get(),
        };
        match (after, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn set_nonblocking(&self, on: bool) {
        self.nonblocking.set(on);
    }

    /// Runs a read-side operation (read, recv, accept) with the read
    /// timeout and deadline.
    #[inline]
    pub(crate) fn read_with<R>(&self, op: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        self.io_with(Direction::Read, op)
    }

    /// Reads from a stream socket into a buffer of `len` bytes with `op`,
    /// which returns the byte count and whether the kernel may have ended
    /// the read early with more data queued (see below).
    ///
    /// Like [`read_with`](Self::read_with), plus one saving on the hot path:
    /// a read that returns less than asked for has normally drained the
    /// socket's receive queue, so if the next read comes before the hub has
    /// polled again (no readiness event can have been dropped meanwhile), it
    /// waits for the next event at once instead of paying for an `EAGAIN`
    /// read. This gives one read call per message in a request/response
    /// loop. The saving is taken only where a short read proves the queue
    /// empty; the next read is always tried when
    /// - the hub has seen the read side closed (an end-of-file can wait
    ///   behind the data and gets no new event);
    /// - the hub's latest event for the socket reported priority data: Linux
    ///   ends a TCP read at the urgent mark (`MSG_OOB`), and an `AF_UNIX`
    ///   read at an out-of-band byte, with the rest queued;
    /// - `op` says the read may have been cut (an `AF_UNIX` read ends after
    ///   a segment that carried descriptors or credentials).
    ///
    /// None of these raises a new readiness event, so a wait would park
    /// with data queued.
    #[inline]
    pub(crate) fn read_stream(
        &self,
        len: usize,
        mut op: impl FnMut(&S) -> io::Result<(usize, bool)>,
    ) -> io::Result<usize> {
        self.io.adopt();
        let mut deadline: Option<Instant> = None;
        if len > 0 {
            let drained = self.drained_at.replace(0);
            if drained != 0 && !self.nonblocking.get() && self.io.drained_since(drained - 1) {
                deadline = self.wait_deadline(Direction::Read);
                self.wait(Direction::Read, deadline)?;
            }
        }
        let (n, cut) = self.io.do_io_with(&mut op, |e| {
            self.would_block(Direction::Read, &mut deadline, e)
        })?;
        if n > 0 && n < len && !cut {
            // A tick of u64::MAX is not recorded (0 means none): that read
            // just pays for the retry.
            if let Some(tick) = hub::io_tick() {
                self.drained_at.set(tick.wrapping_add(1));
            }
        }
        Ok(n)
    }

    /// Runs a write-side operation (write, send) with the write timeout and
    /// deadline.
    #[inline]
    pub(crate) fn write_with<R>(&self, op: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        self.io_with(Direction::Write, op)
    }

    /// Tries `op`; on `WouldBlock` waits for `dir` readiness (up to the
    /// direction's timeout for the whole call, and never past its deadline)
    /// and tries again.
    #[inline]
    fn io_with<R>(&self, dir: Direction, op: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        self.io.adopt();
        let mut deadline: Option<Instant> = None;
        self.io
            .do_io_with(op, |e| self.would_block(dir, &mut deadline, e))
    }

    /// What an operation that failed with `WouldBlock` (`e`) does: fails in
    /// non-blocking mode, else waits for `dir` readiness until `deadline`
    /// (the direction's timeout from the first wait of the call, and never
    /// past its deadline).
    #[inline]
    fn would_block(
        &self,
        dir: Direction,
        deadline: &mut Option<Instant>,
        e: io::Error,
    ) -> io::Result<()> {
        if self.nonblocking.get() {
            return Err(e);
        }
        if deadline.is_none() {
            *deadline = self.wait_deadline(dir);
        }
        self.wait(dir, *deadline)
    }

    /// Tries `op` once; on `WouldBlock` leaves the task's waker with the hub
    /// for `dir` readiness and returns `Pending` (never parks). For the
    /// async I/O traits (see `async_io`).
    #[cfg(any(feature = "futures-io", feature = "tokio"))]
    pub(crate) fn poll_io<R>(
        &self,
        dir: Direction,
        cx: &mut std::task::Context<'_>,
        op: impl FnOnce(&S) -> io::Result<R>,
    ) -> std::task::Poll<io::Result<R>> {
        match op(self.io.get_ref()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match self.io.register_waker(dir, cx.waker()) {
                    Ok(()) => std::task::Poll::Pending,
                    Err(e) => std::task::Poll::Ready(Err(e)),
                }
            }
            r => std::task::Poll::Ready(r),
        }
    }

    /// Waits for `dir` readiness: parks the tasklet inside a dispatcher,
    /// blocks the thread in `poll(2)` outside one.
    #[inline]
    pub(crate) fn wait(&self, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        if hub::in_dispatcher() {
            self.io.wait(dir, deadline).map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut {
                    sys::timed_out()
                } else {
                    e
                }
            })
        } else {
            sys::poll_blocking(self.fd(), dir, deadline)
        }
    }
}

fn check_timeout(t: Option<Duration>) -> io::Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        ));
    }
    Ok(())
}

impl<S: AsRawFd + fmt::Debug> fmt::Debug for Sock<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.get_ref().fmt(f)
    }
}

/// Implements the std file-descriptor traits (`AsRawFd`, `AsFd`,
/// `IntoRawFd`, `FromRawFd`, `From<OwnedFd>`, `From<Self> for OwnedFd`) for a socket type that keeps
/// its [`Sock`] in a field `sock` and converts `From<$std>` (which makes the
/// socket non-blocking). `$what` names the socket kind in the docs.
macro_rules! impl_fd_traits {
    ($ty:ty, $std:ty, $what:literal) => {
        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.sock.fd()
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(self.sock.get())
            }
        }

        impl std::os::fd::IntoRawFd for $ty {
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                std::os::fd::IntoRawFd::into_raw_fd(self.sock.into_inner())
            }
        }

        impl std::os::fd::FromRawFd for $ty {
            #[doc = concat!("Takes ownership of ", $what, " and makes it non-blocking.")]
            ///
            /// # Safety
            #[doc = concat!("`fd` must be an open, owned ", $what, ".")]
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> $ty {
                // SAFETY: the caller hands over an owned, open socket of this kind.
                <$ty>::from(unsafe { <$std as std::os::fd::FromRawFd>::from_raw_fd(fd) })
            }
        }

        impl From<$ty> for std::os::fd::OwnedFd {
            /// Unwraps the socket (left in non-blocking mode), deregistering
            /// it from the hub.
            fn from(s: $ty) -> std::os::fd::OwnedFd {
                std::os::fd::OwnedFd::from(s.sock.into_inner())
            }
        }

        impl From<std::os::fd::OwnedFd> for $ty {
            #[doc = concat!("Takes ownership of ", $what, " and makes it non-blocking.")]
            fn from(fd: std::os::fd::OwnedFd) -> $ty {
                <$ty>::from(<$std>::from(fd))
            }
        }
    };
}

/// Implements `Read` and `Write` for a stream socket type and for shared
/// references to it (one tasklet may read while another writes). Reads use
/// [`Sock::read_stream`] with `$recv` (a `fn(RawFd, &mut [u8]) ->
/// io::Result<(usize, bool)>` from `sys`; one call per message); writes use
/// `send` with `MSG_NOSIGNAL`, so a reset peer is an error, never `SIGPIPE`.
macro_rules! impl_stream_io {
    ($ty:ty, $recv:path) => {
        impl std::io::Read for &$ty {
            #[inline]
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let len = buf.len();
                if len == 0 {
                    // As std's blocking sockets: at once, never parking (a
                    // non-blocking `recv` of 0 bytes fails with EAGAIN when
                    // nothing is queued, which would park until data came).
                    return Ok(0);
                }
                let fd = self.sock.fd();
                self.sock.read_stream(len, |_| $recv(fd, buf))
            }

            fn read_vectored(
                &mut self,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::io::Result<usize> {
                if bufs.iter().all(|b| b.is_empty()) {
                    return Ok(0); // see `read`
                }
                self.sock
                    .read_with(|mut s| std::io::Read::read_vectored(&mut s, bufs))
            }
        }

        impl std::io::Write for &$ty {
            #[inline]
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let fd = self.sock.fd();
                self.sock.write_with(|_| $crate::sys::send(fd, buf))
            }

            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                let fd = self.sock.fd();
                self.sock
                    .write_with(|_| $crate::sys::send_vectored(fd, bufs))
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl std::io::Read for $ty {
            #[inline]
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::io::Read::read(&mut &*self, buf)
            }

            fn read_vectored(
                &mut self,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::io::Result<usize> {
                std::io::Read::read_vectored(&mut &*self, bufs)
            }
        }

        impl std::io::Write for $ty {
            #[inline]
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::io::Write::write(&mut &*self, buf)
            }

            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                std::io::Write::write_vectored(&mut &*self, bufs)
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Sock;
    use std::mem::{align_of, offset_of, size_of};
    use std::net::TcpStream;

    #[test]
    fn what_every_read_and_write_touches_is_in_the_first_cache_line() {
        type S = Sock<TcpStream>;
        assert_eq!(align_of::<S>(), 64);
        for end in [
            offset_of!(S, io) + size_of::<tasklet_runtime::hub::IoSource<TcpStream>>(),
            offset_of!(S, read_timeout) + 16,
            offset_of!(S, drained_at) + 8,
            offset_of!(S, nonblocking) + 1,
            offset_of!(S, has_deadline) + 1,
        ] {
            assert!(end <= 64, "hot field ends at byte {end}");
        }
    }
}
