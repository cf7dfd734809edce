//! The dispatcher's ready queue: an intrusive FIFO through the tasklet
//! headers, so readying a tasklet touches no buffer and never allocates.

use std::cell::Cell;

use crate::task::header::{Header, TaskPtr};

/// The dispatcher's FIFO of ready tasklets: an intrusive singly linked list
/// through the headers' `next` fields, so pushing and popping touch no
/// buffer and never allocate.
///
/// Invariant (upheld by the dispatcher, see `header_at`): every queued
/// tasklet is registered, `Ready`, and queued at most once, so its `next`
/// link belongs to this queue alone.
pub(crate) struct ReadyQueue {
    head: Cell<Option<TaskPtr>>,
    tail: Cell<Option<TaskPtr>>,
    /// Tasklets ever queued: each is resumed once per queueing (the queue
    /// holds only `Ready` tasklets), so this counts switches for
    /// `tasklet::stats` at the cost of one `add` to memory per push.
    pushed: Cell<u64>,
    /// `pushed` when the queue was last taken.
    taken: Cell<u64>,
    /// The longest queue ever taken.
    high_water: Cell<u64>,
}

/// A batch of ready tasklets detached from a [`ReadyQueue`] with
/// [`ReadyQueue::take`]; tasklets readied meanwhile go to the queue.
pub(crate) struct Batch {
    head: Option<TaskPtr>,
}

/// Borrows a queued tasklet's header.
#[inline]
fn queued<'a>(p: TaskPtr) -> &'a Header {
    // SAFETY: queued tasklets are alive (registered) until they leave the
    // queue or batch and run (ReadyQueue invariant); the returned borrow is
    // used only for the `next` link inside the methods below, while that holds.
    unsafe { p.as_ref() }
}

impl ReadyQueue {
    /// An empty queue.
    pub(crate) fn new() -> ReadyQueue {
        ReadyQueue {
            head: Cell::new(None),
            tail: Cell::new(None),
            pushed: Cell::new(0),
            taken: Cell::new(0),
            high_water: Cell::new(0),
        }
    }

    /// Appends a tasklet (which must not be queued already).
    #[inline]
    pub(crate) fn push_back(&self, p: TaskPtr) {
        queued(p).next.set(None);
        match self.tail.get() {
            Some(t) => queued(t).next.set(Some(p)),
            None => self.head.set(Some(p)),
        }
        self.tail.set(Some(p));
        self.pushed.set(self.pushed.get() + 1);
    }

    /// Tasklets queued so far (= switches into tasklets, but for those still queued).
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed.get()
    }

    /// The longest the queue has been when a pass took it.
    pub(crate) fn high_water(&self) -> u64 {
        self.high_water.get()
    }

    /// Detaches every queued tasklet, in order, leaving the queue empty.
    #[inline]
    pub(crate) fn take(&self) -> Batch {
        let pushed = self.pushed.get();
        let len = pushed - self.taken.replace(pushed);
        if len > self.high_water.get() {
            self.high_water.set(len);
        }
        self.tail.set(None);
        Batch {
            head: self.head.take(),
        }
    }

    /// Whether the queue is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.get().is_none()
    }

    /// Forgets every queued tasklet.
    pub(crate) fn clear(&self) {
        self.head.set(None);
        self.tail.set(None);
    }
}

impl Iterator for Batch {
    type Item = TaskPtr;

    /// Takes the next tasklet. Its link is read before it is handed out, so
    /// the tasklet may be queued again (into the queue) right away.
    #[inline]
    fn next(&mut self) -> Option<TaskPtr> {
        let p = self.head?;
        self.head = queued(p).next.get();
        Some(p)
    }
}
