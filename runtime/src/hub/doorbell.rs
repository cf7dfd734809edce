//! The handshake between threads that queue work for a hub and the hub
//! that drains it: when a queued item needs the hub's `mio::Waker` (an
//! `eventfd` write) to end its `epoll_wait`, and when it does not.
//!
//! Two flags: `pending` (something is queued and not yet drained) and
//! `sleeping` (the hub is in, or about to enter, a blocking `epoll_wait`).
//!
//! - A waker queues its item, then [`ring`](Doorbell::ring)s: only the
//!   waker that turns `pending` from false to true goes on, and it writes
//!   the `eventfd` only if it then sees `sleeping`.
//! - The hub, before a blocking `epoll_wait`, calls
//!   [`sleep`](Doorbell::sleep), which raises `sleeping` and then reads
//!   `pending`: if something is pending it polls without blocking instead.
//!   It calls [`awake`](Doorbell::awake) when `epoll_wait` returns, and
//!   [`take`](Doorbell::take)s `pending` before it pops the queues.
//!
//! Both sides write one flag and then read the other with a `SeqCst`
//! fence between (Dekker's handshake), so at least one of them sees the
//! other's write: the waker sees `sleeping` and writes the `eventfd`, or
//! the hub sees `pending` and does not block. A waker that finds `pending`
//! already set relies on the waker that set it, whose item the hub has not
//! drained yet (the hub clears `pending` before it pops, so an item
//! queued after that sets it again).
//!
//! The fences: `SeqCst` accesses alone already order the handshake (in the
//! single total order of `SeqCst` operations one side's read follows the
//! other's write), but loom models `SeqCst` loads and stores as
//! acquire/release only, and then finds the lost wake-up; it does model
//! `SeqCst` fences, with which the handshake is correct in the C++/Rust
//! model without relying on that total order. A fence costs a few
//! nanoseconds next to the `epoll_wait` the hub is about to make, and the
//! waker pays it only when it turns `pending` on.
//!
//! A [`Mailbox`] next to the doorbell holds one queued item without the
//! queue: a waker that finds it empty puts its item there (in the
//! doorbell's own cache line) instead of in the hub's `SegQueue`, whose
//! tail and slot lines would each cross to the hub's core and back. A full
//! mailbox counts as `pending` (the hub's `sleep` and spin look at both),
//! so filling it is the ring: the waker that filled it does the `sleeping`
//! half of the handshake itself ([`Doorbell::put`]), with no `pending`
//! swap.
//!
//! Model-checked with loom (`doorbell::loom_tests`, `scripts/loom.sh`).

use std::mem::MaybeUninit;

use crate::shim::{fence, AtomicBool, AtomicU8, Ordering, UnsafeCell};

/// See the module documentation.
pub(crate) struct Doorbell {
    pending: AtomicBool,
    sleeping: AtomicBool,
    /// The state of the [`Mailbox`] rung with this doorbell: `FULL` counts
    /// as pending (see [`put`](Doorbell::put)).
    mail: AtomicU8,
}

impl Doorbell {
    pub(crate) fn new() -> Doorbell {
        Doorbell {
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            mail: AtomicU8::new(EMPTY),
        }
    }

    /// After queueing an item: whether the caller must wake the hub's
    /// `epoll_wait` (write its `eventfd`).
    #[inline]
    pub(crate) fn ring(&self) -> bool {
        if self.pending.swap(true, Ordering::SeqCst) {
            return false;
        }
        fence(Ordering::SeqCst);
        self.sleeping.load(Ordering::SeqCst)
    }

    /// The hub is about to block: raises `sleeping`; `false` if something
    /// was queued meanwhile (then poll without blocking, and still call
    /// [`awake`](Doorbell::awake)).
    #[inline]
    pub(crate) fn sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        !self.pending.load(Ordering::SeqCst) && self.mail.load(Ordering::SeqCst) != FULL
    }

    /// The hub's `epoll_wait` returned.
    #[inline]
    pub(crate) fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// The hub is about to drain its queues: whether anything was queued
    /// (clears `pending`, acquiring the wakers' items).
    #[inline]
    pub(crate) fn take(&self) -> bool {
        if !self.pending.load(Ordering::Acquire) {
            return false;
        }
        self.pending.swap(false, Ordering::SeqCst);
        true
    }

    /// Whether something is queued and not yet taken.
    #[inline]
    pub(crate) fn is_pending(&self, order: Ordering) -> bool {
        self.pending.load(order) || self.mail.load(order) == FULL
    }

    /// Puts `item` in `mailbox` (this doorbell's) if it is empty, and then
    /// it *is* the ring: `Ok(true)` if the caller must wake the hub's
    /// `epoll_wait`. Hands the item back if the mailbox is full (queue it
    /// and [`ring`](Doorbell::ring) instead).
    ///
    /// The one waker that filled the mailbox checks `sleeping` itself
    /// (store `FULL`, fence, load `sleeping` against the hub's store of
    /// `sleeping`, fence, load of the mailbox in [`sleep`](Doorbell::sleep)),
    /// so the item needs no `pending` swap: one cache line, one RMW.
    #[inline]
    pub(crate) fn put<T: Copy>(&self, mailbox: &Mailbox<T>, item: T) -> Result<bool, T> {
        // `Acquire`: the hub's read of the previous item is done.
        if self
            .mail
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(item);
        }
        // SAFETY: `WRITING` is ours: no other waker writes and the hub does
        // not read until `FULL`.
        unsafe { (*mailbox.item.get()).write(item) };
        self.mail.store(FULL, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Ok(self.sleeping.load(Ordering::SeqCst))
    }

    /// Takes the item from `mailbox` (this doorbell's), if one is there (a
    /// waker still writing its item wakes the hub after it is done). Only
    /// the hub's thread calls this.
    #[inline]
    pub(crate) fn take_mail<T: Copy>(&self, mailbox: &Mailbox<T>) -> Option<T> {
        if self.mail.load(Ordering::Acquire) != FULL {
            return None;
        }
        // SAFETY: `FULL`: written and published by a waker; only the hub
        // (this thread) reads, and no waker writes until `EMPTY`.
        let item = unsafe { (*mailbox.item.get()).assume_init_read() };
        self.mail.store(EMPTY, Ordering::Release);
        Some(item)
    }
}

/// [`Mailbox`] states.
const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const FULL: u8 = 2;

/// One slot for a queued item, whose state is its [`Doorbell`]'s (see
/// [`Doorbell::put`]): any number of wakers, one hub (the only thread that
/// calls [`Doorbell::take_mail`]).
pub(crate) struct Mailbox<T: Copy> {
    /// Written by the waker that moved the state from `EMPTY` to `WRITING`,
    /// read by the hub after it loads `FULL`.
    item: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: `item` is accessed by one thread at a time, as the doorbell's
// mailbox state hands it over (`Acquire`/`Release`); `T` crosses threads.
unsafe impl<T: Copy + Send> Sync for Mailbox<T> {}
// SAFETY: as above.
unsafe impl<T: Copy + Send> Send for Mailbox<T> {}

impl<T: Copy> Mailbox<T> {
    pub(crate) fn new() -> Mailbox<T> {
        Mailbox {
            item: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
