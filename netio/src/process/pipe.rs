//! The parent's ends of a child's standard streams: [`ChildStdin`],
//! [`ChildStdout`], [`ChildStderr`].

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::Stdio;

use tasklet_runtime::hub;

use crate::sock::Sock;

use super::sys;

/// A tasklet moving this many bytes through one pipe without ever having
/// to wait (a child writing faster than it is read) yields once, so it
/// cannot hold the dispatcher.
const YIELD_EVERY: usize = 1024 * 1024;

/// One end of a pipe in non-blocking mode, made cooperative by [`Sock`].
struct Pipe {
    sock: Sock<File>,
    since_yield: Cell<usize>,
}

impl Pipe {
    fn new(fd: OwnedFd) -> io::Result<Pipe> {
        sys::set_nonblocking(fd.as_fd(), true)?;
        Ok(Pipe {
            sock: Sock::new(File::from(fd)),
            since_yield: Cell::new(0),
        })
    }

    /// Called before an operation, so a kill raised by the yield leaves
    /// nothing half done.
    fn maybe_yield(&self, len: usize) {
        let n = self.since_yield.get() + len;
        if n >= YIELD_EVERY && hub::in_dispatcher() {
            self.since_yield.set(0);
            tasklet_runtime::yield_now();
        } else {
            self.since_yield.set(n);
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.maybe_yield(buf.len());
        // A pipe read stops short only when the pipe is empty: never "cut".
        self.sock
            .read_stream(buf.len(), |mut f| f.read(buf).map(|n| (n, false)))
    }

    fn read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        self.sock.read_with(|mut f| f.read_vectored(bufs))
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.maybe_yield(buf.len());
        self.sock.write_with(|mut f| f.write(buf))
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.sock.write_with(|mut f| f.write_vectored(bufs))
    }

    /// The pipe back in blocking mode, as std hands pipes out.
    fn into_blocking_fd(self) -> OwnedFd {
        let fd = OwnedFd::from(self.sock.into_inner());
        if let Err(e) = sys::set_nonblocking(fd.as_fd(), false) {
            log::error!("tasklet::process: cannot make a pipe blocking again: {e}");
        }
        fd
    }

    fn fd(&self) -> RawFd {
        self.sock.fd()
    }
}

macro_rules! pipe_type {
    ($(#[$doc:meta])* $name:ident, $std:ty, $what:literal) => {
        $(#[$doc])*
        pub struct $name {
            pipe: Pipe,
        }

        impl $name {
            pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<$name> {
                Ok($name { pipe: Pipe::new(fd)? })
            }

            #[doc = concat!("Wraps std's `", stringify!($std), "` (switching it to non-blocking mode), e.g. \
                             one taken from a `std::process::Child`.")]
            pub fn from_std(s: $std) -> io::Result<$name> {
                $name::from_fd(OwnedFd::from(s))
            }

            #[doc = concat!("Unwraps into std's `", stringify!($std), "`, back in blocking mode.")]
            pub fn into_std(self) -> $std {
                <$std>::from(self.pipe.into_blocking_fd())
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.pipe.fd()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.pipe.sock.get().as_fd()
            }
        }

        impl From<$name> for OwnedFd {
            #[doc = concat!("Unwraps the ", $what, ", back in blocking mode.")]
            fn from(s: $name) -> OwnedFd {
                s.pipe.into_blocking_fd()
            }
        }

        impl From<$name> for Stdio {
            #[doc = concat!("Hands the ", $what, " (back in blocking mode) to another child, as with \
                             std's types: `Command::new(\"wc\").stdin(Stdio::from(child.stdout.take().unwrap()))`.")]
            fn from(s: $name) -> Stdio {
                Stdio::from(s.pipe.into_blocking_fd())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("fd", &self.pipe.fd()).finish()
            }
        }
    };
}

pipe_type!(
    /// The child's standard input, written by the parent
    /// ([`Child::stdin`](super::Child::stdin)): std's `ChildStdin`, whose
    /// writes park the calling tasklet while the pipe is full.
    ///
    /// Dropping it closes the pipe: the child reads end-of-file. Writing
    /// after the child has closed its end fails with `BrokenPipe` (Rust
    /// programs ignore `SIGPIPE`).
    ChildStdin,
    std::process::ChildStdin,
    "child's standard input pipe"
);

pipe_type!(
    /// The child's standard output, read by the parent
    /// ([`Child::stdout`](super::Child::stdout)): std's `ChildStdout`, whose
    /// reads park the calling tasklet until the child writes (or exits:
    /// end-of-file).
    ChildStdout,
    std::process::ChildStdout,
    "child's standard output pipe"
);

pipe_type!(
    /// The child's standard error, read by the parent
    /// ([`Child::stderr`](super::Child::stderr)): std's `ChildStderr`, whose
    /// reads park the calling tasklet until the child writes (or exits:
    /// end-of-file).
    ChildStderr,
    std::process::ChildStderr,
    "child's standard error pipe"
);

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pipe.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.pipe.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pipe.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.pipe.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! impl_read {
    ($name:ident) => {
        impl Read for $name {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.pipe.read(buf)
            }

            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                self.pipe.read_vectored(bufs)
            }
        }

        impl Read for &$name {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.pipe.read(buf)
            }

            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                self.pipe.read_vectored(bufs)
            }
        }
    };
}

impl_read!(ChildStdout);
impl_read!(ChildStderr);
