//! [`AsyncStream`]: netio's stream sockets as `futures::io` (feature
//! `futures-io`) and tokio (feature `tokio`) `AsyncRead`/`AsyncWrite`, for
//! async protocol libraries polled on a dispatcher (say under
//! `tasklet::block_on`).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};

use tasklet_runtime::hub::Direction;

use crate::{sys, TcpStream, UnixStream};

/// A stream socket as an async byte stream: `futures::io::AsyncRead` and
/// `AsyncWrite` (feature `futures-io`), tokio's `AsyncRead` and `AsyncWrite`
/// (feature `tokio`).
///
/// A poll never parks the tasklet: it tries the system call, and on
/// `WouldBlock` leaves the task's `Waker` with the hub, which wakes it at
/// the socket's next readiness event (one waker per direction). Poll it on
/// the dispatcher thread the socket lives on, typically inside
/// `tasklet::block_on`; outside a dispatcher, a poll that would block fails
/// with an error. The socket's read and write timeouts do not apply here
/// (time out the future instead, with `tasklet::timeout`). Closing
/// (`poll_close`, tokio's `poll_shutdown`) shuts down the write side.
///
/// A wrapper rather than trait impls on the socket itself, so the async
/// traits' extension methods (`read_exact`, `write_all`…) never clash with
/// `std::io::Read`/`Write`. `S` is a [`TcpStream`] or [`UnixStream`], owned
/// or borrowed (`&TcpStream`: one tasklet may read while another writes).
///
/// ```
/// use futures::io::{AsyncReadExt, AsyncWriteExt};
/// use tasklet::netio::{AsyncStream, UnixStream};
///
/// tasklet::dispatch(|| {
///     let (a, b) = UnixStream::pair().unwrap();
///     let peer = tasklet::spawn(move || {
///         let mut b = AsyncStream::new(b);
///         tasklet::block_on(async move {
///             let mut buf = [0u8; 4];
///             b.read_exact(&mut buf).await.unwrap();
///             b.write_all(&buf).await.unwrap();
///         })
///     });
///     let mut a = AsyncStream::new(a);
///     let echoed = tasklet::block_on(async move {
///         a.write_all(b"ping").await.unwrap();
///         let mut buf = [0u8; 4];
///         a.read_exact(&mut buf).await.unwrap();
///         buf
///     });
///     assert_eq!(&echoed, b"ping");
///     peer.join().unwrap();
/// });
/// ```
#[derive(Debug)]
pub struct AsyncStream<S> {
    inner: S,
}

impl<S: StreamSocket> AsyncStream<S> {
    /// Wraps a socket.
    pub fn new(socket: S) -> AsyncStream<S> {
        AsyncStream { inner: socket }
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The socket, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the socket.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The stream sockets [`AsyncStream`] wraps: [`TcpStream`], [`UnixStream`]
/// and shared references to them. Sealed.
pub trait StreamSocket: sealed::Sealed {
    #[doc(hidden)]
    fn poll_read_buf(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    #[doc(hidden)]
    fn poll_read_bufs(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>>;
    #[doc(hidden)]
    fn poll_write_buf(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    #[doc(hidden)]
    fn poll_write_bufs(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
    #[doc(hidden)]
    fn shutdown_write(&self) -> io::Result<()>;
}

macro_rules! impl_stream_socket {
    ($ty:ty) => {
        impl sealed::Sealed for $ty {}
        impl sealed::Sealed for &$ty {}

        impl StreamSocket for $ty {
            fn poll_read_buf(
                &self,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                if buf.is_empty() {
                    return Poll::Ready(Ok(0));
                }
                self.sock
                    .poll_io(Direction::Read, cx, |mut s| io::Read::read(&mut s, buf))
            }

            fn poll_read_bufs(
                &self,
                cx: &mut Context<'_>,
                bufs: &mut [IoSliceMut<'_>],
            ) -> Poll<io::Result<usize>> {
                if bufs.iter().all(|b| b.is_empty()) {
                    return Poll::Ready(Ok(0));
                }
                self.sock.poll_io(Direction::Read, cx, |mut s| {
                    io::Read::read_vectored(&mut s, bufs)
                })
            }

            fn poll_write_buf(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                let fd = self.sock.fd();
                self.sock
                    .poll_io(Direction::Write, cx, |_| sys::send(fd, buf))
            }

            fn poll_write_bufs(
                &self,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let fd = self.sock.fd();
                self.sock
                    .poll_io(Direction::Write, cx, |_| sys::send_vectored(fd, bufs))
            }

            fn shutdown_write(&self) -> io::Result<()> {
                match self.sock.get().shutdown(Shutdown::Write) {
                    // The peer is already gone: nothing left to close.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                    r => r,
                }
            }
        }

        impl StreamSocket for &$ty {
            fn poll_read_buf(
                &self,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                (**self).poll_read_buf(cx, buf)
            }

            fn poll_read_bufs(
                &self,
                cx: &mut Context<'_>,
                bufs: &mut [IoSliceMut<'_>],
            ) -> Poll<io::Result<usize>> {
                (**self).poll_read_bufs(cx, bufs)
            }

            fn poll_write_buf(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                (**self).poll_write_buf(cx, buf)
            }

            fn poll_write_bufs(
                &self,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                (**self).poll_write_bufs(cx, bufs)
            }

            fn shutdown_write(&self) -> io::Result<()> {
                (**self).shutdown_write()
            }
        }
    };
}

impl_stream_socket!(TcpStream);
impl_stream_socket!(UnixStream);

#[cfg(feature = "futures-io")]
impl<S: StreamSocket + Unpin> futures_io::AsyncRead for AsyncStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_read_buf(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_read_bufs(cx, bufs)
    }
}

#[cfg(feature = "futures-io")]
impl<S: StreamSocket + Unpin> futures_io::AsyncWrite for AsyncStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_write_buf(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_write_bufs(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.inner.shutdown_write())
    }
}

#[cfg(feature = "tokio")]
impl<S: StreamSocket + Unpin> tokio::io::AsyncRead for AsyncStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let dst = buf.initialize_unfilled();
        if dst.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let r = self.inner.poll_read_buf(cx, dst);
        r.map_ok(|n| buf.advance(n))
    }
}

#[cfg(feature = "tokio")]
impl<S: StreamSocket + Unpin> tokio::io::AsyncWrite for AsyncStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_write_buf(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.inner.shutdown_write())
    }
}
