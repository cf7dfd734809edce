//! Waiting that works for tasklets and plain OS threads alike.
//!
//! Every primitive in [`crate::sync`] keeps its state behind a lock (a
//! `std` mutex, or the channel's [`SpinLock`]) that is only ever held for a
//! few instructions and never across a park, so on one dispatcher it is
//! always uncontended. A caller that must wait registers in a [`WaitQueue`]
//! under that lock ([`WaitQueue::push_current`]: a tasklet by a
//! reference-count-free [`WaitKey`], a plain thread by its `Thread`),
//! releases it, and [`block`]s. A tasklet parks (its dispatcher keeps running
//! other tasklets); a thread outside any dispatcher parks the thread.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, Thread};
use std::time::Instant;

use crate::hub::{self, HubRef, KeyWait, RemoteUnparker, WaitKey, Wake};

/// How to wake one waiter.
pub(crate) enum Wakeup {
    /// A parked tasklet, on this or another dispatcher.
    Tasklet(RemoteUnparker),
    /// A parked tasklet on the dispatcher of the thread holding this
    /// `Wakeup` (see [`WaitQueue::push_current`]): no reference count.
    Key(WaitKey),
    /// A plain OS thread blocked in [`block`].
    Thread(Thread),
}

impl Wakeup {
    /// A wake-up for the caller's next [`block`].
    pub(crate) fn current() -> Wakeup {
        if hub::in_dispatcher() {
            Wakeup::Tasklet(hub::current_unparker().remote())
        } else {
            Wakeup::Thread(thread::current())
        }
    }

    /// Delivers the wake-up (same dispatcher: no syscall).
    pub(crate) fn wake(self) {
        match self {
            Wakeup::Tasklet(u) => u.unpark(),
            Wakeup::Key(k) => {
                k.wake_local();
            }
            Wakeup::Thread(t) => t.unpark(),
        }
    }
}

/// Why [`block`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Woken (possibly spuriously: re-check the condition).
    Woken,
    /// The deadline passed.
    TimedOut,
    /// The tasklet is unwinding (a blocking call from a destructor during a
    /// kill or timeout) and cannot wait: give up.
    Interrupted,
}

/// Waits for the [`Wakeup`] made by [`Wakeup::current`] or until `deadline`.
///
/// In a tasklet a kill or `timeout` unwinds out of this call (see
/// [`hub::park`]); keep waiter cleanup in a drop guard.
pub(crate) fn block(deadline: Option<Instant>) -> Blocked {
    if hub::in_dispatcher() {
        match hub::park(deadline) {
            Ok(Wake::Unparked) => Blocked::Woken,
            Ok(Wake::TimedOut) => Blocked::TimedOut,
            Err(_) => Blocked::Interrupted,
        }
    } else {
        match deadline {
            None => {
                thread::park();
                Blocked::Woken
            }
            Some(dl) => {
                let now = Instant::now();
                if now >= dl {
                    return Blocked::TimedOut;
                }
                thread::park_timeout(dl - now);
                if Instant::now() >= dl {
                    Blocked::TimedOut
                } else {
                    Blocked::Woken
                }
            }
        }
    }
}

/// A FIFO of waiters, kept under the owning primitive's mutex.
///
/// Each registration gets a key; a waiter that finds its key gone was
/// notified (popped by [`WaitQueue::pop`]) and, if it does not use the
/// notification, passes it on so no wake-up is lost. Each entry carries a
/// `D` for the popper (the channel's receivers leave the slot a sender
/// fills).
pub(crate) struct WaitQueue<D = ()> {
    next_key: u64,
    entries: VecDeque<(u64, Wakeup, D)>,
    /// The hubs of the dispatchers whose tasklets registered through
    /// [`WaitQueue::push_current`] (weak: kept only to wake them from other
    /// threads), one per dispatcher.
    hubs: Vec<HubRef>,
}

/// A registration made by [`WaitQueue::push_current`]: its key, and for a
/// tasklet the guard that keeps its dispatcher from reporting a deadlock
/// while it may be woken from another thread. Drop it (on the waiting
/// thread) once the registration is over: removed, or found notified.
pub(crate) struct Ticket {
    pub(crate) key: u64,
    _wait: Option<KeyWait>,
}

impl<D> Default for WaitQueue<D> {
    fn default() -> Self {
        WaitQueue {
            next_key: 0,
            entries: VecDeque::new(),
            hubs: Vec::new(),
        }
    }
}

impl WaitQueue {
    /// Registers the calling tasklet (by a reference-count-free [`WaitKey`])
    /// or thread.
    pub(crate) fn push_current(&mut self) -> Ticket {
        self.push_current_with(())
    }

    /// Takes the longest-waiting registration, to be woken after the lock is released.
    ///
    /// A [`Wakeup::Key`] for another dispatcher than the caller's comes back
    /// as a [`Wakeup::Tasklet`] through that dispatcher's hub.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Wakeup> {
        self.pop_with().map(|(w, ())| w)
    }
}

impl<D> WaitQueue<D> {
    pub(crate) fn new() -> WaitQueue<D> {
        WaitQueue::default()
    }

    fn push_entry(&mut self, w: Wakeup, d: D) -> u64 {
        self.next_key = self.next_key.wrapping_add(1);
        self.entries.push_back((self.next_key, w, d));
        self.next_key
    }

    /// Whether nobody is registered.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Like [`WaitQueue::push_current`], with `d` for the popper.
    #[inline]
    pub(crate) fn push_current_with(&mut self, d: D) -> Ticket {
        match WaitKey::register() {
            Some((k, wait)) => {
                if !self.hubs.iter().any(|h| h.dispatcher() == k.dispatcher()) {
                    self.add_hub();
                }
                Ticket {
                    key: self.push_entry(Wakeup::Key(k), d),
                    _wait: Some(wait),
                }
            }
            None => Ticket {
                key: self.push_entry(Wakeup::Thread(thread::current()), d),
                _wait: None,
            },
        }
    }

    #[cold]
    fn add_hub(&mut self) {
        self.hubs.retain(|h| !h.is_gone());
        self.hubs.extend(HubRef::current());
    }

    /// Removes a registration; `false` if it was already popped (notified).
    pub(crate) fn remove(&mut self, key: u64) -> bool {
        // Waiters usually leave from the front (FIFO wake-up order).
        match self.entries.iter().position(|(k, _, _)| *k == key) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// [`WaitQueue::pop`], with the entry's `D`.
    #[inline]
    pub(crate) fn pop_with(&mut self) -> Option<(Wakeup, D)> {
        let (_, w, d) = self.entries.pop_front()?;
        Some(match w {
            Wakeup::Key(k) if !k.is_local() => (self.resolve(k), d),
            w => (w, d),
        })
    }

    /// The cross-thread form of a key (a no-op key if its dispatcher has exited).
    #[cold]
    fn resolve(&self, k: WaitKey) -> Wakeup {
        match self.hubs.iter().find_map(|h| k.remote(h)) {
            Some(u) => Wakeup::Tasklet(u),
            // The dispatcher is gone, and its tasklets with it.
            None => Wakeup::Key(k),
        }
    }

    /// Takes every registration.
    pub(crate) fn take_all(&mut self) -> VecDeque<(u64, Wakeup, D)> {
        let mut all = std::mem::take(&mut self.entries);
        for (_, w, _) in all.iter_mut() {
            if let Wakeup::Key(k) = *w {
                if !k.is_local() {
                    *w = self.resolve(k);
                }
            }
        }
        all
    }
}

/// Wakes every registration in `list` (call without holding the lock).
pub(crate) fn wake_all<D>(list: VecDeque<(u64, Wakeup, D)>) {
    for (_, w, _) in list {
        w.wake();
    }
}

/// Locks a std mutex, ignoring poisoning: the primitives' critical sections
/// never run user code that could panic halfway through an update.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A small test-and-test-and-set lock for a primitive's state.
///
/// The primitives hold their lock for a few dozen instructions and never
/// across a park, so on one dispatcher it is never contended; unlike
/// `std::sync::Mutex`, unlocking is a plain `Release` store instead of an
/// atomic swap, which saves one atomic read-modify-write per operation. A
/// contended locker (another thread) spins briefly, then yields its time
/// slice until the holder is done. No poisoning: the critical sections run
/// no user code.
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time
// (acquire/release on `locked`), like `std::sync::Mutex`, which is `Send` and
// `Sync` for `T: Send`.
unsafe impl<T: Send> Send for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> SpinLock<T> {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Locks, spinning (then yielding the thread) while another thread holds it.
    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 100 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

/// Access to a [`SpinLock`]'s value; unlocks when dropped.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock, so
        // no other reference to the value is live.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only access
        // through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
