//! Waiting that works for tasklets and plain OS threads alike.
//!
//! Every primitive in [`crate::sync`] keeps its state behind a small
//! [`SpinLock`] that is only ever held for a few instructions and never
//! across a park, so on one dispatcher it is always uncontended. A caller
//! that must wait links a [`Waiter`] node, which lives in the waiting call's
//! own stack frame, into the primitive's intrusive [`WaitList`] under that
//! lock (a tasklet with a reference-count-free [`WaitKey`], a plain thread
//! with its `Thread`), releases it, and parks ([`block_as`]): a tasklet
//! parks (its dispatcher keeps running other tasklets), a thread outside any
//! dispatcher parks the thread. Whoever pops the waiter may leave data in
//! the node (the channel's handed-over value), so a wait allocates nothing
//! and keeps no key. A spuriously woken waiter keeps its place in the list;
//! one that is killed or times out unlinks itself in O(1).
//!
//! The channel drives its lists itself; the other primitives (event,
//! one-shot result, semaphore, mutex) share [`Waiters`] and [`wait_in`].

use std::marker::PhantomPinned;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::time::Instant;

use crate::shim::thread::{self, Thread};
use crate::shim::{AtomicU8, Ordering, UnsafeCell};

use crate::hub::{self, HubRef, KeyWait, RemoteUnparker, WaitKey, Wake};
pub(crate) use crate::task::header::WaitOn;
use crate::util::{SpinGuard, SpinLock};

mod registration;
pub(crate) use registration::{wait_in, Registration, WaitPlace};

/// How to wake one waiter.
pub(crate) enum Wakeup {
    /// A parked tasklet, on this or another dispatcher.
    Tasklet(RemoteUnparker),
    /// A parked tasklet, by its key (see [`current_wakeup`]): no reference
    /// count. Delivered directly on its own dispatcher's thread; from
    /// another thread it needs the primitive's [`Hubs::remote`].
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

    /// Whether it wakes the caller: a tasklet's key, or a plain thread,
    /// that is the calling one.
    fn is_callers(&self) -> bool {
        match self {
            Wakeup::Key(k) => k.is_callers(),
            Wakeup::Thread(t) => !hub::in_dispatcher() && t.id() == thread::current().id(),
            // Not what a select registers (see `current_wakeup`).
            Wakeup::Tasklet(_) => false,
        }
    }

    /// Delivers the wake-up (same dispatcher: no syscall).
    pub(crate) fn wake(self) {
        match self {
            Wakeup::Tasklet(u) => u.unpark(),
            Wakeup::Key(k) => {
                k.unpark_local();
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

/// [`WaitKey::unpark_local`] behind a non-generic function: the channel's
/// generic code is compiled in the crate that uses it, where the hub's wake
/// path would be a cross-crate call; here it is inlined.
fn wake_key(k: &WaitKey) -> bool {
    k.unpark_local()
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
pub(crate) fn block(deadline: Option<Instant>, why: WaitOn) -> Blocked {
    block_as(hub::in_dispatcher(), deadline, why)
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
pub(crate) fn block_as(tasklet: bool, deadline: Option<Instant>, why: WaitOn) -> Blocked {
    if tasklet {
        let parked = crate::dispatcher::context::with(
            #[inline(always)]
            |d| d.park_on(deadline, why),
        );
        match parked {
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
        // SAFETY: `w` is linked in this list (the contract), whose lock we
        // hold; its wake-up is initialised while linked, unlinked from now on.
        unsafe {
            self.unlink(w);
            (*w.wakeup.get()).assume_init_drop();
        }
        w.state.store(IDLE, Ordering::Relaxed);
    }

    /// Takes `w` out of the list's links (its wake-up and state are the
    /// caller's to settle).
    ///
    /// # Safety
    /// `w` is linked in this list, and its lock is held.
    unsafe fn unlink(&mut self, w: &Waiter<D>) {
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
        }
    }

    /// Hands `x` to an unlinked waiter with `put` and returns its wake-up:
    /// the `NOTIFIED` store is the last access to it.
    ///
    /// # Safety
    /// `w` was just unlinked from this list under its lock (its wake-up is
    /// still initialised), and nobody else accesses it.
    #[inline(always)]
    unsafe fn notify<X>(w: &Waiter<D>, x: X, put: impl FnOnce(&mut D, X)) -> Wakeup {
        // SAFETY: the contract: the data and wake-up are ours until the
        // `NOTIFIED` store, after which we do not touch the waiter.
        unsafe {
            put(&mut *w.data.get(), x);
            let wakeup = (*w.wakeup.get()).assume_init_read();
            w.state.store(NOTIFIED, Ordering::Release);
            wakeup
        }
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
            Self::notify(w, x, put)
        };
        Ok(wakeup)
    }

    /// Like [`pop_with`](Self::pop_with), passing over the caller's own
    /// waiters: a select with a send and a receive arm on one channel must
    /// not pair with itself (nor can Go's), and its other arm's waiter is
    /// linked while it registers the next.
    pub(crate) fn pop_with_except_callers<X>(
        &mut self,
        x: X,
        put: impl FnOnce(&mut D, X),
    ) -> Result<Wakeup, X> {
        let mut cur = self.head;
        while let Some(p) = cur {
            // SAFETY: `p` is linked in this list, whose lock we hold: alive
            // (see `push_back`), its wake-up initialised, nobody else
            // accessing it.
            let w = unsafe { p.as_ref() };
            // SAFETY: as above.
            let (callers, next) = unsafe {
                (
                    (*w.wakeup.get()).assume_init_ref().is_callers(),
                    *w.next.get(),
                )
            };
            if !callers {
                // SAFETY: as above: linked here, unlinked, then notified.
                return Ok(unsafe {
                    self.unlink(w);
                    Self::notify(w, x, put)
                });
            }
            cur = next;
        }
        Err(x)
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

/// The waiters of an event, a one-shot result or a semaphore: an intrusive
/// FIFO of [`Waiter`]s (their data unused: being popped is the whole
/// message) and the dispatchers they came from, kept in the primitive's
/// state under its [`SpinLock`].
#[derive(Default)]
pub(crate) struct Waiters {
    list: WaitList<()>,
    hubs: Hubs,
}

impl Waiters {
    /// The list itself (for a select linking its own waiter).
    #[inline]
    pub(crate) fn list(&mut self) -> &mut WaitList<()> {
        &mut self.list
    }

    /// The dispatchers noted (for [`current_wakeup`]).
    #[inline]
    pub(crate) fn hubs(&mut self) -> &mut Hubs {
        &mut self.hubs
    }

    /// Whether nobody waits.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Pops the longest waiter, to be woken with [`wake`] after the lock is
    /// released.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Wakeup> {
        if self.list.is_empty() {
            return None;
        }
        self.list.pop_with((), |_, ()| {}).ok()
    }

    /// Pops every waiter, oldest first, with wake-ups for other threads'
    /// dispatchers already resolved (so delivering them needs no lock).
    pub(crate) fn pop_all(&mut self) -> Vec<Wakeup> {
        let mut all = self.list.pop_all();
        for w in all.iter_mut() {
            if let Wakeup::Key(k) = *w {
                if !k.is_local() {
                    if let Some(u) = self.hubs.remote(&k) {
                        *w = Wakeup::Tasklet(u);
                    }
                }
            }
        }
        all
    }
}

/// The state of a primitive whose waiters are [`Waiters`].
pub(crate) trait WaitState {
    /// The waiters.
    fn waiters(&mut self) -> &mut Waiters;

    /// A popped waiter leaves (killed, timed out) without using what it was
    /// popped for: pass that on. Returns the waiter to wake, if any.
    fn pass_on(&mut self) -> Option<Wakeup>;

    /// What a tasklet parked on this primitive (whose state lock is at
    /// `addr`) waits on, for [`crate::dump`] and deadlock reports.
    fn wait_on(&self, addr: usize) -> WaitOn {
        WaitOn::Sync("a sync primitive", addr)
    }
}

/// Delivers a wake-up popped from `lock`'s [`Waiters`] (call without
/// holding the lock): on the waiter's own dispatcher directly, from
/// anywhere else through that dispatcher's hub.
#[inline]
pub(crate) fn wake<S: WaitState>(lock: &SpinLock<S>, w: Wakeup) {
    if let Some(k) = w.wake_popped() {
        wake_remote(lock, k);
    }
}

#[cold]
fn wake_remote<S: WaitState>(lock: &SpinLock<S>, k: WaitKey) {
    let u = lock.lock().waiters().hubs.remote(&k);
    if let Some(u) = u {
        u.unpark();
    }
}

/// Wakes the waiters popped by [`Waiters::pop_all`].
pub(crate) fn wake_all<S: WaitState>(lock: &SpinLock<S>, all: Vec<Wakeup>) {
    for w in all {
        wake(lock, w);
    }
}
