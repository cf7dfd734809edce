//! The pool side of a [`File`](super::File): the state a file shares with
//! the one job at a time that runs its I/O on the offload pool, the job
//! itself, and waiting for it.

use crate::shim::thread;
use std::any::Any;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::offload;
use crate::sync::wait::{block, Blocked, WaitOn, Wakeup};
use crate::util::lock;

/// What the tasklet side and the pool side share.
pub(super) struct Shared {
    pub(super) file: fs::File,
    pub(super) st: Mutex<St>,
}

#[derive(Default)]
pub(super) struct St {
    /// A job is queued or running with this file.
    pub(super) busy: bool,
    /// Write-behind: bytes accepted by `write` and not yet written.
    pub(super) queue: Vec<u8>,
    /// An empty buffer to swap with `queue` (saves an allocation per batch).
    pub(super) spare: Vec<u8>,
    /// The first error of a background write, reported by the next operation.
    pub(super) write_error: Option<io::Error>,
    /// The outcome of the last foreground operation.
    pub(super) done: Option<Done>,
    /// Tasklets and threads waiting for the job to make progress.
    pub(super) waiters: Vec<Wakeup>,
}

/// The outcome of a foreground operation, left in [`St`] by the job.
pub(super) enum Done {
    Read {
        buf: Vec<u8>,
        res: io::Result<usize>,
        /// The file offset after the read, if the file has one.
        pos: Option<u64>,
    },
    Seek(io::Result<u64>),
    /// Any other operation: an `io::Result<T>`, boxed.
    Other(Box<dyn Any + Send>),
    /// The operation panicked (a bug): reported as an error.
    Panicked,
}

pub(super) type Op = Box<dyn FnOnce(&fs::File) -> Done + Send>;

#[cfg(test)]
thread_local! {
    /// Jobs this thread handed to the offload pool.
    pub(super) static HOPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Hands a job to the offload pool.
pub(super) fn submit(shared: Arc<Shared>, op: Option<Op>) {
    #[cfg(test)]
    HOPS.with(|h| h.set(h.get() + 1));
    offload::submit(Box::new(move || run_job(shared, op)));
}

pub(super) fn wake_all(waiters: Vec<Wakeup>) {
    for w in waiters {
        w.wake();
    }
}

/// The body of a job: writes out the queue until it is empty, runs `op` (if
/// any) after the writes queued before it, then marks the file idle.
pub(super) fn run_job(shared: Arc<Shared>, mut op: Option<Op>) {
    let mut st = lock(&shared.st);
    loop {
        if !st.queue.is_empty() {
            let spare = std::mem::take(&mut st.spare);
            let mut data = std::mem::replace(&mut st.queue, spare);
            // Writers waiting for room may go on.
            let waiters = std::mem::take(&mut st.waiters);
            drop(st);
            wake_all(waiters);
            let r = (&shared.file).write_all(&data);
            data.clear();
            st = lock(&shared.st);
            if let Err(e) = r {
                // Later data must not land at the wrong offset: drop it.
                st.queue.clear();
                st.write_error.get_or_insert(e);
            }
            if st.spare.capacity() < data.capacity() {
                st.spare = data;
            }
            continue;
        }
        if let Some(op) = op.take() {
            drop(st);
            let done = panic::catch_unwind(AssertUnwindSafe(|| op(&shared.file)))
                .unwrap_or(Done::Panicked);
            st = lock(&shared.st);
            st.done = Some(done);
            continue;
        }
        st.busy = false;
        let waiters = std::mem::take(&mut st.waiters);
        drop(st);
        wake_all(waiters);
        return;
    }
}

/// Locks the state once `ready` holds, parking the calling tasklet (or
/// blocking the thread) until the job makes progress.
pub(super) fn wait_until(
    shared: &Shared,
    mut ready: impl FnMut(&St) -> bool,
) -> MutexGuard<'_, St> {
    let mut st = lock(&shared.st);
    let mut can_park = true;
    loop {
        if ready(&st) {
            return st;
        }
        st.waiters.push(if can_park {
            Wakeup::current()
        } else {
            Wakeup::Thread(thread::current())
        });
        drop(st);
        if can_park {
            if block(None, WaitOn::Offload) == Blocked::Interrupted {
                // A destructor at `dispatch` exit cannot park: the job takes
                // milliseconds, so block the thread for it (as `unblock` does).
                can_park = false;
            }
        } else {
            thread::park();
        }
        st = lock(&shared.st);
    }
}

/// its bytes stay initialised), with the file offset after it.
pub(super) fn read_op(mut buf: Vec<u8>, len: usize) -> Op {
    Box::new(move |mut f: &fs::File| {
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let res = loop {
            match f.read(&mut buf[..len]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let pos = if res.is_ok() {
            f.stream_position().ok()
        } else {
            None
        };
        Done::Read { buf, res, pos }
    })
}
