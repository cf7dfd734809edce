//! The handshake between threads that queue work for a hub and the hub
//! that drains it: when a queued item needs the hub's `mio::Waker` (an
//! `eventfd` write) to end its `epoll_wait`, and when it does not.
//!
//! One atomic byte holds the whole handshake: `PENDING` (something is
//! queued and not yet drained), `SLEEPING` (the hub is in, or about to
//! enter, a blocking `epoll_wait`) and the state of the [`Mailbox`] beside
//! it (`CLAIMED`, `FULL`).
//!
//! - A waker queues its item, then [`ring`](Doorbell::ring)s: only the
//!   waker that turns `PENDING` on goes on, and it writes the `eventfd`
//!   only if the same read-modify-write saw `SLEEPING`.
//! - The hub, before a blocking `epoll_wait`, calls
//!   [`sleep`](Doorbell::sleep), which turns `SLEEPING` on and sees in the
//!   same read-modify-write whether something is pending: then it polls
//!   without blocking instead. It calls [`awake`](Doorbell::awake) when
//!   `epoll_wait` returns, and [`take`](Doorbell::take)s `PENDING` before it
//!   pops the queues.
//!
//! Read-modify-writes of one location are totally ordered (its
//! modification order), and each reads the value the one before it wrote:
//! of a waker's ring and the hub's `sleep`, whichever comes second sees
//! the other's bit — the waker sees `SLEEPING` and writes the `eventfd`,
//! or the hub sees `PENDING` and does not block. No fence is needed (and
//! loom, which models `SeqCst` loads and stores as acquire/release only,
//! models modification order exactly). A waker that finds `PENDING`
//! already set relies on the waker that set it, whose item the hub has not
//! drained yet (the hub clears `PENDING` before it pops, so an item queued
//! after that sets it again).
//!
//! A [`Mailbox`] holds one queued item without the queue: a waker that
//! finds it unclaimed puts its item there (in the doorbell's own cache
//! line) instead of in the hub's `SegQueue`, whose tail and slot lines
//! would each cross to the hub's core and back. A full mailbox counts as
//! pending (the hub's `sleep` and spin look at it), so filling it is the
//! ring: the read-modify-write that publishes the item also tells the
//! waker whether the hub sleeps ([`Doorbell::put`]). Everything a waker
//! does to the doorbell is then two read-modify-writes of one line, and
//! nothing after the publishing one waits for the hub's core (a load of a
//! separate flag after it would: the hub takes the line back to empty the
//! mailbox as soon as it sees it full).
//!
//! Model-checked with loom (`doorbell::loom_tests`, `scripts/loom.sh`).

use std::mem::MaybeUninit;

use crate::shim::{AtomicU8, Ordering, UnsafeCell};

/// Something is queued and not yet taken.
const PENDING: u8 = 1;
/// The hub is in, or about to enter, a blocking `epoll_wait`.
const SLEEPING: u8 = 2;
/// A waker owns the mailbox (writing its item, or the item is not taken yet).
const CLAIMED: u8 = 4;
/// The mailbox holds a published item (set only while `CLAIMED`).
const FULL: u8 = 8;

/// See the module documentation.
pub(crate) struct Doorbell {
    state: AtomicU8,
}

impl Doorbell {
    pub(crate) fn new() -> Doorbell {
        Doorbell {
            state: AtomicU8::new(0),
        }
    }

    /// After queueing an item: whether the caller must wake the hub's
    /// `epoll_wait` (write its `eventfd`).
    #[inline]
    pub(crate) fn ring(&self) -> bool {
        // `Release` (within `SeqCst`): publishes the item queued before,
        // for the hub's `take`.
        let old = self.state.fetch_or(PENDING, Ordering::SeqCst);
        old & PENDING == 0 && old & SLEEPING != 0
    }

    /// The hub is about to block: raises `SLEEPING`; `false` if something
    /// was queued meanwhile (then poll without blocking, and still call
    /// [`awake`](Doorbell::awake)).
    #[inline]
    pub(crate) fn sleep(&self) -> bool {
        let old = self.state.fetch_or(SLEEPING, Ordering::SeqCst);
        !pending(old)
    }

    /// The hub's `epoll_wait` returned.
    #[inline]
    pub(crate) fn awake(&self) {
        self.state.fetch_and(!SLEEPING, Ordering::SeqCst);
    }

    /// The hub is about to drain its queues: whether anything was queued
    /// (clears `PENDING`, acquiring the wakers' items).
    #[inline]
    pub(crate) fn take(&self) -> bool {
        if self.state.load(Ordering::Acquire) & PENDING == 0 {
            return false;
        }
        self.state.fetch_and(!PENDING, Ordering::SeqCst);
        true
    }

    /// Whether something is queued and not yet taken.
    #[inline]
    pub(crate) fn is_pending(&self, order: Ordering) -> bool {
        pending(self.state.load(order))
    }

    /// Puts `item` in `mailbox` (this doorbell's) if no other waker has
    /// claimed it, and then it *is* the ring: `Ok(true)` if the caller must
    /// wake the hub's `epoll_wait`. Hands the item back if the mailbox is
    /// taken (queue it and [`ring`](Doorbell::ring) instead).
    ///
    /// The one waker that filled the mailbox does the `SLEEPING` half of
    /// the handshake itself: the read-modify-write that sets `FULL` reads
    /// `SLEEPING` (against the hub's [`sleep`](Doorbell::sleep), which
    /// reads `FULL`), so the item needs no `PENDING` swap.
    #[inline]
    pub(crate) fn put<T: Copy>(&self, mailbox: &Mailbox<T>, item: T) -> Result<bool, T> {
        // `Acquire`: the hub's read of the previous item (before its
        // `Release` that unclaimed the mailbox) is done. A claimed mailbox
        // stays claimed: or-ing the bit in again changes nothing.
        if self.state.fetch_or(CLAIMED, Ordering::Acquire) & CLAIMED != 0 {
            return Err(item);
        }
        // SAFETY: the claim is ours: no other waker writes until the hub
        // unclaims, and the hub does not read until `FULL`.
        unsafe { (*mailbox.item.get()).write(item) };
        let old = self.state.fetch_or(FULL, Ordering::SeqCst);
        Ok(old & SLEEPING != 0)
    }

    /// Takes the item from `mailbox` (this doorbell's), if one is there (a
    /// waker still writing its item wakes the hub after it is done). Only
    /// the hub's thread calls this.
    #[inline]
    pub(crate) fn take_mail<T: Copy>(&self, mailbox: &Mailbox<T>) -> Option<T> {
        if self.state.load(Ordering::Acquire) & FULL == 0 {
            return None;
        }
        // SAFETY: `FULL`: written and published by a waker; only the hub
        // (this thread) reads, and no waker writes until it is unclaimed.
        let item = unsafe { (*mailbox.item.get()).assume_init_read() };
        self.state.fetch_and(!(CLAIMED | FULL), Ordering::Release);
        Some(item)
    }
}

/// Whether `state` has something for the hub: a ring, or a full mailbox.
#[inline]
fn pending(state: u8) -> bool {
    state & (PENDING | FULL) != 0
}

/// One slot for a queued item, whose state is its [`Doorbell`]'s (see
/// [`Doorbell::put`]): any number of wakers, one hub (the only thread that
/// calls [`Doorbell::take_mail`]).
pub(crate) struct Mailbox<T: Copy> {
    /// Written by the waker that claimed the mailbox, read by the hub
    /// after it loads `FULL`.
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
