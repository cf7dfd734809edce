//! [`File`] and [`OpenOptions`]: std's file handle with its I/O on the
//! offload pool, read-ahead and write-behind.
//!
//! # How it works
//!
//! The std file sits in an `Arc` shared with at most one *job* on the
//! offload pool at a time. The job owns every buffer it touches (a read
//! fills a `Vec` that is moved in and handed back, a write drains a queue
//! that lives in the shared state), so a tasklet killed or timed out while
//! its operation runs leaves nothing on its stack for the pool thread to
//! write to. The job finishes anyway and leaves its outcome in the shared
//! state, where the next operation on the file picks it up (an abandoned
//! read's data is kept as read-ahead, nothing is lost or skipped).
//!
//! - **Reads** refill a read-ahead buffer with one system call per hop,
//!   64 KiB at first, doubling on sequential reads up to 1 MiB (and at least
//!   as much as asked for), so small reads are served from memory. Once at
//!   1 MiB, the next megabyte is read in the background while the caller
//!   consumes the current one (so at most 2 MiB of read-ahead per file).
//!   Seeks within the buffer cost nothing; others discard it.
//! - **Writes** are copied into a write-behind queue and return at once; a
//!   job writes the queue out in the background, taking everything queued
//!   so far in one go. A writer waits only when 1 MiB is already queued.
//!   Errors are reported by the next operation ([`flush`](Write::flush)
//!   waits for the queue and reports them), as with `BufWriter`. Dropping a
//!   `File` waits until its queued data is written, so it is in the file
//!   (the OS page cache) afterwards, as with std.

use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::hub;
use crate::util::lock;

use super::job::{read_op, submit, wait_until, Done, Op, Shared, St};
use super::OpenOptions;

/// First read-ahead after an open or a seek.
const MIN_READ_AHEAD: usize = 64 * 1024;
/// Largest read-ahead (sequential reading).
const MAX_READ_AHEAD: usize = 1024 * 1024;
/// Largest single read, however large the caller's buffer.
const MAX_READ: usize = 8 * 1024 * 1024;
/// How much written data may wait for the background job before `write` waits.
const MAX_WRITE_BEHIND: usize = 1024 * 1024;
/// Reads served from the read-ahead (with the next megabyte prefetched) and
/// writes into a queue the job keeps draining need not park at all: a
/// tasklet moving this many bytes through a file yields once, so a long
/// sequential read or write cannot hold the dispatcher.
const YIELD_EVERY: usize = 1024 * 1024;

/// A file: std's `std::fs::File` whose reads, writes, seeks and other
/// operations run on the runtime's offload threads (see
/// [`unblock`](crate::unblock)) while the calling tasklet parks.
///
/// Reads go through a read-ahead buffer (64 KiB growing to 1 MiB on
/// sequential reads, then one more megabyte read in the background) and
/// writes through a write-behind queue (up to 1 MiB),
/// so reading or writing a file in small pieces costs one thread hop per
/// batch, not per call, and a read and a write on two files overlap.
/// Because of the queue, a write error may be reported by the operation
/// after the `write` that caused it; [`flush`](Write::flush) waits until
/// everything written has reached the OS and reports any error. Dropping the
/// file also waits for that (ignoring errors, as std's `File` does).
///
/// A kill or [`timeout`](crate::timeout) interrupts the waiting tasklet at
/// once; the operation itself completes on its thread with buffers of its
/// own, and the next operation on the file takes up its outcome (an
/// interrupted read's data is not lost).
///
/// Outside a dispatcher every operation runs on the calling thread and
/// writes are not queued: the file behaves like std's (plus read-ahead).
///
/// Operations take `&mut self`; to share one file among tasklets, wrap it
/// in a [`sync::Mutex`](crate::sync::Mutex).
///
/// ```
/// use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
///
/// let path = std::env::temp_dir().join(format!("tasklet-doc-file-{}", std::process::id()));
/// tasklet::dispatch(|| {
///     let mut f = tasklet::fs::File::create(&path).unwrap();
///     for i in 0..1000 {
///         writeln!(f, "line {i}").unwrap(); // queued; one hop per batch
///     }
///     f.flush().unwrap();
///
///     let mut f = tasklet::fs::File::open(&path).unwrap();
///     f.seek(SeekFrom::Start(5)).unwrap();
///     let mut lines = BufReader::new(f).lines();
///     assert_eq!(lines.next().unwrap().unwrap(), "0");
///     assert_eq!(lines.last().unwrap().unwrap(), "line 999");
/// });
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct File {
    shared: Arc<Shared>,
    /// Read-ahead: `rbuf[rpos..rend]` has been read from the OS and not
    /// returned yet (`rbuf` is all initialised; `rend` marks the data).
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// Size of the next read-ahead.
    read_ahead: usize,
    /// The OS file offset after the last read or seek, if known (`None`
    /// after writes); lets seeks within the read-ahead skip the hop.
    os_pos: Option<u64>,
    /// A foreground operation was started and its caller interrupted: its
    /// outcome must be taken up before anything else.
    abandoned: bool,
    /// A read of the `prefetch_len` bytes that follow the read-ahead is in
    /// flight (sequential reading at full read-ahead size).
    prefetching: bool,
    prefetch_len: usize,
    /// The buffer the next prefetch reads into.
    spare_rbuf: Vec<u8>,
    /// Writes were queued since the last time the file was settled.
    wrote: bool,
    /// Bytes read or written since the last yield (see [`YIELD_EVERY`]).
    since_yield: usize,
}

impl File {
    /// Opens a file read-only (std's `File::open`).
    pub fn open<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Opens a file write-only, creating or truncating it (std's `File::create`).
    pub fn create<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// Creates a new file read-write, failing with `AlreadyExists` if it
    /// exists (std's `File::create_new`).
    pub fn create_new<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }

    /// An [`OpenOptions`] to open a file with other options.
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Wraps a std file (its I/O then goes through the offload pool).
    pub fn from_std(file: fs::File) -> File {
        File {
            shared: Arc::new(Shared {
                file,
                st: Mutex::new(St::default()),
            }),
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            read_ahead: MIN_READ_AHEAD,
            os_pos: None,
            abandoned: false,
            prefetching: false,
            prefetch_len: 0,
            spare_rbuf: Vec::new(),
            wrote: false,
            since_yield: 0,
        }
    }

    /// A std handle to the same open file (a duplicated descriptor),
    /// positioned where this one logically is: queued writes are written
    /// and unread read-ahead is given back first.
    pub fn into_std(mut self) -> io::Result<fs::File> {
        self.settle()?;
        self.unread()?;
        self.shared.file.try_clone()
    }

    /// Metadata of the open file (after queued writes).
    pub fn metadata(&mut self) -> io::Result<fs::Metadata> {
        self.run(|f| f.metadata())
    }

    /// Truncates or extends the file to `size` bytes; the position is unchanged.
    pub fn set_len(&mut self, size: u64) -> io::Result<()> {
        self.unread()?;
        self.run(move |f| f.set_len(size))
    }

    /// Writes queued data, then flushes data and metadata to the device (`fsync`).
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.run(|f| f.sync_all())
    }

    /// Writes queued data, then flushes the data to the device (`fdatasync`).
    pub fn sync_data(&mut self) -> io::Result<()> {
        self.run(|f| f.sync_data())
    }

    /// Changes the file's permissions.
    pub fn set_permissions(&mut self, perm: fs::Permissions) -> io::Result<()> {
        self.run(move |f| f.set_permissions(perm))
    }

    /// Waits until no job runs, takes up an interrupted operation's outcome
    /// and reports a pending write error.
    fn settle(&mut self) -> io::Result<()> {
        let mut st = wait_until(&self.shared, |st| !st.busy);
        let done = st.done.take();
        let err = st.write_error.take();
        drop(st);
        self.abandoned = false;
        self.wrote = false;
        if let Some(done) = done {
            match done {
                Done::Read { buf, res, pos } if self.prefetching => {
                    // The prefetched bytes follow the read-ahead: append them.
                    self.prefetching = false;
                    let n = res.unwrap_or(0);
                    self.rbuf.copy_within(self.rpos..self.rend, 0);
                    self.rend -= self.rpos;
                    self.rpos = 0;
                    self.rbuf.truncate(self.rend);
                    self.rbuf.extend_from_slice(&buf[..n]);
                    self.rend += n;
                    self.os_pos = pos;
                    self.spare_rbuf = buf;
                }
                Done::Read { buf, res, pos } => {
                    // An interrupted refill, started with an empty read-ahead.
                    self.rbuf = buf;
                    self.rpos = 0;
                    self.rend = res.unwrap_or(0);
                    self.os_pos = pos;
                }
                Done::Seek(r) => self.os_pos = r.ok(),
                Done::Other(_) | Done::Panicked => {}
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `op` with the file after everything queued before it, parking
    /// until it is done (on the calling thread outside a dispatcher).
    fn run_done(&mut self, op: Op) -> io::Result<Done> {
        self.settle()?;
        if !hub::in_dispatcher() {
            return Ok(op(&self.shared.file));
        }
        lock(&self.shared.st).busy = true;
        submit(self.shared.clone(), Some(op));
        self.abandoned = true;
        let mut st = wait_until(&self.shared, |st| !st.busy);
        let done = st.done.take();
        drop(st);
        self.abandoned = false;
        done.ok_or_else(|| io::Error::other("tasklet::fs: an operation left no outcome"))
    }

    /// [`run_done`](Self::run_done) for an operation returning `io::Result<T>`.
    fn run<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&fs::File) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        match self.run_done(Box::new(move |f| Done::Other(Box::new(op(f)))))? {
            Done::Other(b) => match b.downcast::<io::Result<T>>() {
                Ok(r) => *r,
                Err(_) => Err(io::Error::other("tasklet::fs: mismatched outcome")),
            },
            Done::Panicked => Err(panicked()),
            _ => Err(io::Error::other("tasklet::fs: mismatched outcome")),
        }
    }

    /// Takes up the outcome of an interrupted operation or a prefetch, if any.
    fn catch_up(&mut self) -> io::Result<()> {
        if self.abandoned || self.prefetching {
            self.settle()?;
        }
        Ok(())
    }

    /// Gives back unread read-ahead: the OS offset returns to the logical
    /// position (before a write or a truncation).
    fn unread(&mut self) -> io::Result<()> {
        self.catch_up()?;
        let back = self.rend - self.rpos;
        self.rpos = 0;
        self.rend = 0;
        self.read_ahead = MIN_READ_AHEAD;
        if back > 0 {
            let back = i64::try_from(back).map_err(|_| invalid_seek())?;
            self.os_pos = Some(self.run(move |mut f| f.seek(SeekFrom::Current(-back)))?);
        }
        Ok(())
    }

    /// Refills the (empty) read-ahead buffer with at least `want` bytes' worth of room.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        let len = want.max(self.read_ahead).min(MAX_READ);
        let buf = std::mem::take(&mut self.rbuf);
        self.rpos = 0;
        self.rend = 0;
        let done = self.run_done(read_op(buf, len))?;
        self.read_done(done)?;
        self.read_ahead = (self.read_ahead * 2).min(MAX_READ_AHEAD);
        if self.read_ahead == MAX_READ_AHEAD && self.rend == len {
            self.start_prefetch(len);
        }
        Ok(())
    }

    /// Installs a read's outcome as the read-ahead.
    fn read_done(&mut self, done: Done) -> io::Result<()> {
        match done {
            Done::Read { buf, res, pos } => {
                self.rbuf = buf;
                self.os_pos = pos;
                self.rend = res?;
                Ok(())
            }
            Done::Panicked => Err(panicked()),
            _ => Err(io::Error::other("tasklet::fs: mismatched outcome")),
        }
    }

    /// Sequential reading at full speed: read the next `len` bytes in the
    /// background while the caller consumes the read-ahead.
    fn start_prefetch(&mut self, len: usize) {
        if !hub::in_dispatcher() {
            return;
        }
        let buf = std::mem::take(&mut self.spare_rbuf);
        lock(&self.shared.st).busy = true;
        submit(self.shared.clone(), Some(read_op(buf, len)));
        self.prefetching = true;
        self.prefetch_len = len;
    }

    /// The read-ahead is used up and a prefetch is in flight: waits for it
    /// and makes it the read-ahead (then starts the next one).
    fn take_prefetch(&mut self) -> io::Result<()> {
        let mut st = wait_until(&self.shared, |st| !st.busy);
        let done = st.done.take();
        let err = st.write_error.take();
        drop(st);
        self.prefetching = false;
        if let Some(e) = err {
            return Err(e);
        }
        let done =
            done.ok_or_else(|| io::Error::other("tasklet::fs: an operation left no outcome"))?;
        self.spare_rbuf = std::mem::take(&mut self.rbuf);
        self.rpos = 0;
        self.rend = 0;
        self.read_done(done)?;
        if self.rend == self.prefetch_len {
            self.start_prefetch(self.prefetch_len);
        }
        Ok(())
    }

    /// Lets other tasklets run once `YIELD_EVERY` bytes have gone through
    /// this file; called before an operation changes any state, so a kill
    /// raised here leaves nothing half done.
    #[inline]
    fn maybe_yield(&mut self, len: usize) {
        self.since_yield += len;
        if self.since_yield >= YIELD_EVERY {
            self.since_yield = 0;
            if hub::in_dispatcher() {
                crate::yield_now();
            }
        }
    }

    fn take_buffered(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.rend - self.rpos);
        out[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
        self.rpos += n;
        n
    }
}

/// A read of up to `len` bytes into `buf` (grown as needed, never shrunk:
fn panicked() -> io::Error {
    io::Error::other("tasklet::fs: a file operation panicked on its offload thread")
}

fn invalid_seek() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "invalid seek to a negative or overflowing position",
    )
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.maybe_yield(buf.len().min(self.rend - self.rpos).max(1));
        if self.abandoned {
            self.settle()?;
        }
        if self.rpos == self.rend {
            if self.prefetching {
                self.take_prefetch()?;
            } else {
                self.fill(buf.len())?;
            }
        }
        Ok(self.take_buffered(buf))
    }

    /// Returns the buffered bytes, then reads the rest of the file in one
    /// offloaded call.
    fn read_to_end(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        self.catch_up()?;
        let start = out.len();
        out.extend_from_slice(&self.rbuf[self.rpos..self.rend]);
        self.rpos = self.rend;
        let rest = self.run(|mut f| {
            let mut v = Vec::new();
            f.read_to_end(&mut v).map(|_| v)
        })?;
        self.os_pos = None;
        out.extend_from_slice(&rest);
        Ok(out.len() - start)
    }

    fn read_to_string(&mut self, out: &mut String) -> io::Result<usize> {
        let mut bytes = Vec::new();
        self.read_to_end(&mut bytes)?;
        let s = String::from_utf8(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        })?;
        out.push_str(&s);
        Ok(s.len())
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.maybe_yield(buf.len());
        if self.abandoned || self.prefetching || self.rpos < self.rend {
            self.unread()?;
        }
        self.os_pos = None;
        if !hub::in_dispatcher() {
            self.settle()?;
            return (&self.shared.file).write(buf);
        }
        let mut st = wait_until(&self.shared, |st| {
            st.write_error.is_some() || st.queue.len() < MAX_WRITE_BEHIND
        });
        if let Some(e) = st.write_error.take() {
            return Err(e);
        }
        let n = buf.len().min(MAX_WRITE_BEHIND - st.queue.len());
        st.queue.extend_from_slice(&buf[..n]);
        self.wrote = true;
        if !st.busy {
            st.busy = true;
            drop(st);
            submit(self.shared.clone(), None);
        }
        Ok(n)
    }

    /// Waits until all written data has reached the OS and reports the
    /// first error of a background write.
    fn flush(&mut self) -> io::Result<()> {
        self.settle()
    }
}

impl Seek for File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.catch_up()?;
        // Within the read-ahead: no hop.
        if self.rend > 0 {
            if let Some(os) = self.os_pos {
                let start = os.checked_sub(self.rend as u64);
                let here = os - (self.rend - self.rpos) as u64;
                let target = match pos {
                    SeekFrom::Start(n) => Some(n),
                    SeekFrom::Current(d) => here.checked_add_signed(d),
                    SeekFrom::End(_) => None,
                };
                if let (Some(start), Some(t)) = (start, target) {
                    if t >= start && t <= os {
                        self.rpos = (t - start) as usize;
                        return Ok(t);
                    }
                }
            }
        }
        let unread = (self.rend - self.rpos) as i64;
        self.rpos = 0;
        self.rend = 0;
        self.read_ahead = MIN_READ_AHEAD;
        let pos = match pos {
            SeekFrom::Current(d) => {
                SeekFrom::Current(d.checked_sub(unread).ok_or_else(invalid_seek)?)
            }
            p => p,
        };
        let done = self.run_done(Box::new(move |mut f: &fs::File| Done::Seek(f.seek(pos))))?;
        match done {
            Done::Seek(r) => {
                self.os_pos = r.as_ref().ok().copied();
                r
            }
            Done::Panicked => Err(panicked()),
            _ => Err(io::Error::other("tasklet::fs: mismatched outcome")),
        }
    }
}

impl Drop for File {
    fn drop(&mut self) {
        // Queued writes reach the file before `drop` returns, as with std.
        // (An interrupted read or seek is not waited for: nothing depends on it.)
        if !self.wrote {
            return;
        }
        let mut st = wait_until(&self.shared, |st| !st.busy);
        if let Some(e) = st.write_error.take() {
            log::warn!("tasklet::fs: a queued write failed and the file was dropped before the error was seen: {e}");
        }
    }
}

impl AsRawFd for File {
    /// The descriptor. Careful: with read-ahead the OS offset may be ahead
    /// of this file's position, and queued writes may not be written yet
    /// (call [`flush`](Write::flush) first).
    fn as_raw_fd(&self) -> RawFd {
        self.shared.file.as_raw_fd()
    }
}

impl AsFd for File {
    /// See [`AsRawFd::as_raw_fd`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.file.as_fd()
    }
}

impl From<fs::File> for File {
    fn from(f: fs::File) -> File {
        File::from_std(f)
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("fd", &self.shared.file.as_raw_fd())
            .field("buffered", &(self.rend - self.rpos))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::{Read, Write};

    use crate::fs::job::HOPS;

    fn hops() -> usize {
        HOPS.with(Cell::get)
    }

    #[test]
    fn small_reads_and_writes_are_batched() {
        let path = std::env::temp_dir().join(format!("tasklet-fs-batch-{}", std::process::id()));
        const LEN: usize = 16 << 20;
        let (read_hops, write_hops) = crate::dispatch(|| {
            let before = hops();
            let mut f = super::File::create(&path).unwrap();
            for _ in 0..LEN / 4096 {
                f.write_all(&[5u8; 4096]).unwrap();
            }
            f.flush().unwrap();
            drop(f);
            let write_hops = hops() - before;

            let before = hops();
            let mut f = super::File::open(&path).unwrap();
            let mut buf = [0u8; 4096];
            let mut total = 0;
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                assert!(buf[..n].iter().all(|&b| b == 5));
                total += n;
            }
            assert_eq!(total, LEN);
            (hops() - before, write_hops)
        });
        std::fs::remove_file(&path).unwrap();
        // 4,096 calls each way. Reads: read-ahead grows to 1 MiB, so about
        // 20 refills plus the end-of-file read.
        assert!(read_hops <= 40, "{read_hops} hops for 4,096 reads");
        // Writes: one job drains whatever was queued meanwhile; a hop per
        // write would be 4,096.
        assert!(write_hops <= 1024, "{write_hops} hops for 4,096 writes");
    }
}
