//! `futures::io` (feature `futures-io`) and tokio (feature `tokio`)
//! `AsyncRead`/`AsyncWrite` for the stream sockets, for async protocol
//! libraries polled on a dispatcher (say under `tasklet::block_on`).
//!
//! A poll never parks: it tries the system call, and on `WouldBlock` leaves
//! the task's `Waker` with the hub ([`IoSource::register_waker`]), which wakes
//! it at the socket's next readiness event. The socket must be polled on the
//! dispatcher thread it is used on: outside a dispatcher a poll that would
//! block fails with an error. The socket's read and write timeouts do not
//! apply (time out the future instead, e.g. with `tasklet::timeout`).
//!
//! [`IoSource::register_waker`]: tasklet_runtime::hub::IoSource::register_waker

/// Implements the async I/O traits of the enabled features for a stream
/// socket type with a `sock: Sock<_>` field, and for shared references to it.
macro_rules! impl_async_io {
    ($ty:ty) => {
        impl_async_io!(@impls $ty);
        impl_async_io!(@impls &$ty);
    };
    (@impls $t:ty) => {
        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncRead for $t {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                if buf.is_empty() {
                    return std::task::Poll::Ready(Ok(0));
                }
                self.sock.poll_io(
                    tasklet_runtime::hub::Direction::Read,
                    cx,
                    |mut s| std::io::Read::read(&mut s, buf),
                )
            }

            fn poll_read_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                if bufs.iter().all(|b| b.is_empty()) {
                    return std::task::Poll::Ready(Ok(0));
                }
                self.sock.poll_io(
                    tasklet_runtime::hub::Direction::Read,
                    cx,
                    |mut s| std::io::Read::read_vectored(&mut s, bufs),
                )
            }
        }

        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncWrite for $t {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let fd = self.sock.fd();
                self.sock.poll_io(
                    tasklet_runtime::hub::Direction::Write,
                    cx,
                    |_| $crate::sys::send(fd, buf),
                )
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let fd = self.sock.fd();
                self.sock.poll_io(
                    tasklet_runtime::hub::Direction::Write,
                    cx,
                    |_| $crate::sys::send_vectored(fd, bufs),
                )
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            /// Shuts down the write side (the peer reads end-of-file).
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready($crate::async_io::shutdown_write(
                    self.sock.get().shutdown(std::net::Shutdown::Write),
                ))
            }
        }

        #[cfg(feature = "tokio")]
        impl tokio::io::AsyncRead for $t {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let dst = buf.initialize_unfilled();
                if dst.is_empty() {
                    return std::task::Poll::Ready(Ok(()));
                }
                let r = self.sock.poll_io(
                    tasklet_runtime::hub::Direction::Read,
                    cx,
                    |mut s| std::io::Read::read(&mut s, dst),
                );
                r.map_ok(|n| buf.advance(n))
            }
        }

        #[cfg(feature = "tokio")]
        impl tokio::io::AsyncWrite for $t {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let fd = self.sock.fd();
                self.sock.poll_io(
                    tasklet_runtime::hub::Direction::Write,
                    cx,
                    |_| $crate::sys::send(fd, buf),
                )
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let fd = self.sock.fd();
                self.sock.poll_io(
                    tasklet_runtime::hub::Direction::Write,
                    cx,
                    |_| $crate::sys::send_vectored(fd, bufs),
                )
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready($crate::async_io::shutdown_write(
                    self.sock.get().shutdown(std::net::Shutdown::Write),
                ))
            }
        }
    };
}

/// The result of shutting down a stream's write side from an async close:
/// a peer that is already gone (`NotConnected`) is not an error there.
#[cfg(any(feature = "futures-io", feature = "tokio"))]
pub(crate) fn shutdown_write(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}
