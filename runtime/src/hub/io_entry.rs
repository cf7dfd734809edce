//! The hub's per-source state: who waits for which readiness.
//!
//! Laid out for the hot path of a server with many connections, where each
//! readiness event finds its entry cold in the cache: the common case — at
//! most one tasklet waiting per direction, no future's waker — lives in the
//! entry itself (48 bytes, one cache line in the hub's slab), with no heap
//! buffer to follow. Further waiters and futures' wakers go to a boxed
//! overflow, allocated the first time a source needs one.

use std::task::Waker as TaskWaker;

use super::{Direction, Unparker};
use crate::dispatcher::Dispatcher;
use crate::task::id::TaskletId;

/// Per-registration state: the tasklets waiting for readiness.
pub(super) struct IoEntry {
    pub(super) gen: u32,
    /// The hub has seen the read side close (peer FIN, hang-up); sticky.
    pub(super) read_closed: bool,
    /// The latest event collected for this source reported priority data
    /// (`EPOLLPRI`: a TCP urgent mark, an `AF_UNIX` out-of-band byte).
    pub(super) priority: bool,
    /// The first tasklet waiting to read, and to write.
    reader: Option<Unparker>,
    writer: Option<Unparker>,
    /// Everything else (rare): see [`More`].
    more: Option<Box<More>>,
}

/// The uncommon part of an [`IoEntry`].
#[derive(Default)]
struct More {
    /// Waiters after the first, per direction.
    readers: Vec<Unparker>,
    writers: Vec<Unparker>,
    /// Futures' wakers for the next readable / writable event (see
    /// `IoSource::register_waker`).
    read_waker: Option<TaskWaker>,
    write_waker: Option<TaskWaker>,
}

impl IoEntry {
    /// A fresh entry of generation `gen`, nobody waiting.
    pub(super) fn new(gen: u32) -> IoEntry {
        IoEntry {
            gen,
            read_closed: false,
            priority: false,
            reader: None,
            writer: None,
            more: None,
        }
    }

    /// Adds `u` to the waiters for `dir`.
    #[inline]
    pub(super) fn push_waiter(&mut self, dir: Direction, u: Unparker) {
        let first = match dir {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        };
        if first.is_none() {
            *first = Some(u);
            return;
        }
        let more = self.more.get_or_insert_with(Box::default);
        match dir {
            Direction::Read => more.readers.push(u),
            Direction::Write => more.writers.push(u),
        }
    }

    /// Removes tasklet `id` from the waiters for `dir`, if it is there.
    #[inline]
    pub(super) fn remove_waiter(&mut self, dir: Direction, id: TaskletId) {
        let first = match dir {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        };
        if first.as_ref().is_some_and(|u| u.tasklet_id() == id) {
            *first = None;
        } else if let Some(more) = &mut self.more {
            let list = match dir {
                Direction::Read => &mut more.readers,
                Direction::Write => &mut more.writers,
            };
            list.retain(|u| u.tasklet_id() != id);
        }
    }

    /// Wakes every tasklet waiting for `dir` (they retry their operation)
    /// and hands the future's waker for `dir`, if any, to `woken`.
    #[inline]
    pub(super) fn wake(&mut self, d: &Dispatcher, dir: Direction, woken: &mut Vec<TaskWaker>) {
        let first = match dir {
            Direction::Read => self.reader.take(),
            Direction::Write => self.writer.take(),
        };
        if let Some(u) = first {
            u.unpark_in(d);
        }
        if let Some(more) = &mut self.more {
            more.wake(d, dir, woken);
        }
    }

    /// The slot for a future's waker for `dir`.
    pub(super) fn waker_slot(&mut self, dir: Direction) -> &mut Option<TaskWaker> {
        let more = self.more.get_or_insert_with(Box::default);
        match dir {
            Direction::Read => &mut more.read_waker,
            Direction::Write => &mut more.write_waker,
        }
    }

    /// Everyone still waiting on the entry (it is going away): its
    /// tasklets, and its futures' wakers.
    pub(super) fn into_waiters(self) -> (Vec<Unparker>, Vec<TaskWaker>) {
        let mut tasklets: Vec<Unparker> = self.reader.into_iter().chain(self.writer).collect();
        let mut wakers = Vec::new();
        if let Some(more) = self.more {
            let more = *more;
            tasklets.extend(more.readers);
            tasklets.extend(more.writers);
            wakers.extend(more.read_waker);
            wakers.extend(more.write_waker);
        }
        (tasklets, wakers)
    }
}

impl More {
    #[cold]
    fn wake(&mut self, d: &Dispatcher, dir: Direction, woken: &mut Vec<TaskWaker>) {
        let (list, waker) = match dir {
            Direction::Read => (&mut self.readers, &mut self.read_waker),
            Direction::Write => (&mut self.writers, &mut self.write_waker),
        };
        for u in list.drain(..) {
            u.unpark_in(d);
        }
        if let Some(w) = waker.take() {
            woken.push(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IoEntry;

    #[test]
    fn an_entry_fits_a_cache_line_in_the_slab() {
        assert!(std::mem::size_of::<IoEntry>() <= 48);
    }
}
