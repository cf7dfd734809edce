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
//!
//! The channel, whose waits are the hot path of tasklet-to-tasklet messaging,
//! uses an intrusive [`WaitList`] instead: each waiter is a [`Waiter`] node
//! in the waiting call's own stack frame, which also carries the value a
//! sender hands over, so a wait allocates nothing and keeps no key.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::marker::PhantomPinned;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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

    /// Delivers a wake-up popped from a [`WaitList`], unless it is a key of
    /// another thread's dispatcher: that one comes back, to be delivered
    /// through [`Hubs::remote`].
    #[inline]
    pub(crate) fn wake_popped(self) -> Option<WaitKey> {
        match self {
            Wakeup::Key(k) => {
                if wake_key(&k) {
                    None
                } else {
                    Some(k)
                }
            }
            w => {
                w.wake();
                None
            }
        }
    }
}

/// [`WaitKey::wake_local`] behind a non-generic function: the channel's
/// generic code is compiled in the crate that uses it, where the hub's wake
/// path would be a cross-crate call; here it is inlined.
fn wake_key(k: &WaitKey) -> bool {
    k.wake_local()
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
    block_as(hub::in_dispatcher(), deadline)
}

/// [`block`] for a plain thread.
fn block_thread(deadline: Option<Instant>) -> Blocked {
    {
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

/// The wake-up of the calling tasklet (its [`WaitKey`], noted in `hubs`,
/// and the guard that counts it for deadlock detection: keep it until the
/// wait is over) or plain thread, for a [`Waiter`] about to be linked.
#[inline]
pub(crate) fn current_wakeup(hubs: &mut Hubs) -> (Wakeup, Option<KeyWait>) {
    match WaitKey::register() {
        Some((k, wait)) => {
            hubs.note(&k);
            (Wakeup::Key(k), Some(wait))
        }
        None => (Wakeup::Thread(thread::current()), None),
    }
}

/// Waits after linking a [`Waiter`] with the wake-up from
/// [`current_wakeup`]: `tasklet` tells whether that was a tasklet's key
/// (saves [`block`] finding out again).
///
/// Always inlined, together with the hub's `park`: the waiting call then
/// resumes from the stack switch directly in its own frame. After a switch
/// every return is mispredicted (the return predictor still holds the
/// other stack's frames), so each frame between the switch and the caller
/// costs one.
#[inline(always)]
pub(crate) fn block_as(tasklet: bool, deadline: Option<Instant>) -> Blocked {
    if tasklet {
        match hub::park(deadline) {
            Ok(Wake::Unparked) => Blocked::Woken,
            Ok(Wake::TimedOut) => Blocked::TimedOut,
            Err(_) => Blocked::Interrupted,
        }
    } else {
        block_thread(deadline)
    }
}

/// The dispatchers whose tasklets waited on one primitive (weak references,
/// one per dispatcher): what turns a [`WaitKey`] popped on another thread
/// into a [`RemoteUnparker`].
#[derive(Default)]
pub(crate) struct Hubs {
    /// The dispatcher noted last (0: none; dispatcher ids start at 1).
    last: u64,
    all: Vec<HubRef>,
}

impl Hubs {
    /// Makes sure `k`'s dispatcher (the caller's) is known.
    #[inline]
    fn note(&mut self, k: &WaitKey) {
        if self.last != k.dispatcher() {
            self.note_slow(k);
        }
    }

    #[cold]
    fn note_slow(&mut self, k: &WaitKey) {
        self.last = k.dispatcher();
        if !self.all.iter().any(|h| h.dispatcher() == k.dispatcher()) {
            self.all.retain(|h| !h.is_gone());
            self.all.extend(HubRef::current());
        }
    }

    /// A cross-thread unparker for `k` (`None` if its dispatcher has exited,
    /// and its tasklets with it).
    #[cold]
    pub(crate) fn remote(&self, k: &WaitKey) -> Option<RemoteUnparker> {
        self.all.iter().find_map(|h| k.remote(h))
    }
}

/// [`Waiter::state`]: not in any list.
const IDLE: u8 = 0;
/// [`Waiter::state`]: linked in a [`WaitList`].
const LINKED: u8 = 1;
/// [`Waiter::state`]: taken out of its list by another party, which may have
/// left data, and which touches the waiter no more.
const NOTIFIED: u8 = 2;

/// One waiter of a [`WaitList`]: a node that lives in the waiting call's own
/// stack frame, so registering costs no allocation and no key bookkeeping.
///
/// Protocol. Only the owner (the waiting call, on its own thread: `Waiter`
/// is not `Sync`) holds a reference; lists hold raw pointers. While the
/// waiter is `LINKED`, its links, wake-up and data are accessed only under
/// the lock that guards the list (by whoever holds it). The party that pops
/// it writes the data and takes the wake-up under that lock, then stores
/// `NOTIFIED` (`Release`) as its last access. The owner reads the data only
/// after loading `NOTIFIED` (`Acquire`), or under the lock. Before the frame
/// ends, the owner makes sure the waiter is not linked (removing it under
/// the lock if needed): that keeps every pointer in a list valid.
pub(crate) struct Waiter<D> {
    prev: UnsafeCell<Option<NonNull<Waiter<D>>>>,
    next: UnsafeCell<Option<NonNull<Waiter<D>>>>,
    /// Initialised exactly while the waiter is linked.
    wakeup: UnsafeCell<MaybeUninit<Wakeup>>,
    data: UnsafeCell<D>,
    state: AtomicU8,
    /// Lists point at it: it must not move while linked.
    _pinned: PhantomPinned,
}

impl<D> Waiter<D> {
    /// An unlinked waiter holding `data`.
    #[inline]
    pub(crate) fn new(data: D) -> Waiter<D> {
        Waiter {
            prev: UnsafeCell::new(None),
            next: UnsafeCell::new(None),
            wakeup: UnsafeCell::new(MaybeUninit::uninit()),
            data: UnsafeCell::new(data),
            state: AtomicU8::new(IDLE),
            _pinned: PhantomPinned,
        }
    }

    /// If another party popped this waiter, marks it unlinked and returns
    /// its data (replaced by `D::default()`). Lock-free.
    #[inline]
    pub(crate) fn take_notified(&self) -> Option<D>
    where
        D: Default,
    {
        if self.state.load(Ordering::Acquire) != NOTIFIED {
            return None;
        }
        self.state.store(IDLE, Ordering::Relaxed);
        // SAFETY: `NOTIFIED` was the popper's last access (its writes are
        // visible through the `Acquire` load) and the waiter is in no list,
        // so only its owner can reach `data`; the owner is on this thread
        // (`Waiter` is not `Sync`) and does not hold another borrow of it.
        Some(unsafe { std::mem::take(&mut *self.data.get()) })
    }
}

/// An intrusive FIFO of [`Waiter`]s, kept under a primitive's lock (every
/// method takes `&mut self`, which only the lock holder has).
pub(crate) struct WaitList<D> {
    head: Option<NonNull<Waiter<D>>>,
    tail: Option<NonNull<Waiter<D>>>,
}

// SAFETY: the list only holds pointers to waiters, whose fields it touches
// under the lock that guards it (see `Waiter`); a waiter's data crosses
// threads only by being written by the popper, which is sound for `D: Send`.
// Wake-ups are `Send`.
unsafe impl<D: Send> Send for WaitList<D> {}

impl<D> Default for WaitList<D> {
    fn default() -> Self {
        WaitList {
            head: None,
            tail: None,
        }
    }
}

impl<D> WaitList<D> {
    /// Whether nobody is linked.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Links `w` at the back, to be woken through `wakeup`.
    ///
    /// # Safety
    /// `w` is not linked in any list, is linked only into this list until it
    /// is unlinked again, and its owner keeps it in place (alive, unmoved)
    /// until it has seen it unlinked: [`Waiter::take_notified`] returned
    /// `Some`, or under this list's lock [`is_linked`](Self::is_linked) is
    /// false or [`remove`](Self::remove) took it out.
    #[inline]
    pub(crate) unsafe fn push_back(&mut self, w: &Waiter<D>, wakeup: Wakeup) {
        let p = NonNull::from(w);
        // SAFETY: `w` is unlinked and we hold the list's lock, so no other
        // party accesses its fields; the tail, if any, is a live linked
        // waiter (the contract of every `push_back`), accessed under the lock.
        unsafe {
            (*w.wakeup.get()).write(wakeup);
            *w.prev.get() = self.tail;
            *w.next.get() = None;
            match self.tail {
                Some(t) => *t.as_ref().next.get() = Some(p),
                None => self.head = Some(p),
            }
        }
        self.tail = Some(p);
        w.state.store(LINKED, Ordering::Relaxed);
    }

    /// Whether `w` is still linked (false once popped). Call under the lock
    /// of the list `w` was linked into.
    #[inline]
    pub(crate) fn is_linked(&self, w: &Waiter<D>) -> bool {
        w.state.load(Ordering::Relaxed) == LINKED
    }

    /// Replaces a linked waiter's wake-up (its owner is about to wait again
    /// in a new epoch) without losing its place.
    ///
    /// # Safety
    /// `w` is linked in this list.
    #[inline]
    pub(crate) unsafe fn set_wakeup(&mut self, w: &Waiter<D>, wakeup: Wakeup) {
        // SAFETY: linked in this list, whose lock we hold: nobody else
        // accesses the field now, and it is initialised (linked).
        unsafe {
            let slot = &mut *w.wakeup.get();
            slot.assume_init_drop();
            slot.write(wakeup);
        }
    }

    /// Unlinks `w` (its owner gives up waiting).
    ///
    /// # Safety
    /// `w` is linked in this list.
    pub(crate) unsafe fn remove(&mut self, w: &Waiter<D>) {
        // SAFETY: `w` and its neighbours are linked in this list, whose lock
        // we hold; all are alive per the `push_back` contract.
        unsafe {
            let prev = *w.prev.get();
            let next = *w.next.get();
            match prev {
                Some(p) => *p.as_ref().next.get() = next,
                None => self.head = next,
            }
            match next {
                Some(n) => *n.as_ref().prev.get() = prev,
                None => self.tail = prev,
            }
            // Initialised while linked; unlinked from now on.
            (*w.wakeup.get()).assume_init_drop();
        }
        w.state.store(IDLE, Ordering::Relaxed);
    }

    /// Unlinks the longest-waiting waiter, stores `x` in its data with `put`
    /// and returns how to wake it (after the lock is released: a
    /// [`Wakeup::Key`] for another thread's dispatcher needs the primitive's
    /// [`Hubs::remote`]); gives `x` back if nobody waits.
    #[inline]
    pub(crate) fn pop_with<X>(&mut self, x: X, put: impl FnOnce(&mut D, X)) -> Result<Wakeup, X> {
        let Some(p) = self.head else {
            return Err(x);
        };
        // SAFETY: `p` is the head of this list, whose lock we hold: linked,
        // alive (see `push_back`), and accessed by nobody else until our
        // `NOTIFIED` store below, after which we do not touch it.
        let wakeup = unsafe {
            let w = p.as_ref();
            let next = *w.next.get();
            self.head = next;
            match next {
                Some(n) => *n.as_ref().prev.get() = None,
                None => self.tail = None,
            }
            put(&mut *w.data.get(), x);
            // Initialised while linked; unlinked from now on.
            let wakeup = (*w.wakeup.get()).assume_init_read();
            w.state.store(NOTIFIED, Ordering::Release);
            wakeup
        };
        Ok(wakeup)
    }
}

impl<D> WaitList<D> {
    /// Pops every waiter, leaving its data as it is, and returns their
    /// wake-ups.
    pub(crate) fn pop_all(&mut self) -> Vec<Wakeup> {
        let mut all = Vec::new();
        while let Ok(w) = self.pop_with((), |_, ()| {}) {
            all.push(w);
        }
        all
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
