//! [`block_on`]: runs a `Future` to completion from blocking-style code.
//!
//! Inside a tasklet the future is polled on the dispatcher and only the
//! calling tasklet parks between wake-ups. Its `Waker` is a reference-counted
//! [`WakeState`] naming the tasklet (registry slot, id) and the epoch of its
//! coming park: a wake-up on the dispatcher's own thread makes the tasklet
//! ready directly; from any other thread it goes through the hub's
//! cross-thread queue. The states are recycled through a per-thread pool and
//! the waker handed to `poll` borrows the state without touching its count,
//! so a call allocates nothing once the pool is warm, and a future that is
//! ready at once costs no atomic operation at all.
//!
//! Outside a dispatcher the calling thread blocks (`std::thread::park`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::thread::{self, Thread};

use crate::dispatcher::context;
use crate::hub::{self, HubRef, WaitKey};
use crate::task::TaskletId;

/// Runs `future` to completion and returns its output.
///
/// **Inside a tasklet**, the future is polled on the dispatcher and the
/// calling tasklet parks between wake-ups while the other tasklets (and the
/// hub's I/O and timers) keep running. Its `Waker` may be woken from any
/// thread: from the dispatcher's own thread it makes the tasklet ready
/// directly, from another thread (a tokio worker, another dispatcher) it
/// goes through the hub's cross-thread queue. [`JoinHandle::kill`] and
/// [`timeout`] interrupt the wait: the future is dropped in the tasklet (its
/// destructors run there) and the tasklet unwinds as for any blocking call.
/// A panic inside the future propagates to the caller, so it reaches
/// [`JoinHandle::join`] like any panic in the tasklet.
///
/// **Outside a dispatcher** it blocks the calling thread until the future
/// completes, like `futures::executor::block_on`.
///
/// Runtime-agnostic futures (async fns, `futures` or `async-channel`
/// channels, `event-listener`) need nothing else. Futures that need a
/// reactor of their own (tokio's sockets and timers) need it to be running
/// somewhere: the facade's `tokio` feature provides one.
///
/// No allocation per poll and no thread per call: the waker's state is
/// recycled per thread, and a future that is ready on its first poll costs a
/// few nanoseconds.
///
/// ```
/// use std::time::Duration;
///
/// tasklet::dispatch(|| {
///     let (tx, rx) = std::sync::mpsc::channel();
///     let state = std::sync::Arc::new(std::sync::Mutex::new((None, None::<std::task::Waker>)));
///     let s = state.clone();
///     // A plain thread completes the future a little later.
///     std::thread::spawn(move || {
///         std::thread::sleep(Duration::from_millis(10));
///         let mut g = s.lock().unwrap();
///         g.0 = Some(42);
///         if let Some(w) = g.1.take() {
///             w.wake();
///         }
///         tx.send(()).unwrap();
///     });
///     let ticker = tasklet::spawn(|| tasklet::sleep(Duration::from_millis(1)));
///     let v = tasklet::block_on(std::future::poll_fn(|cx| {
///         let mut g = state.lock().unwrap();
///         match g.0.take() {
///             Some(v) => std::task::Poll::Ready(v),
///             None => {
///                 g.1 = Some(cx.waker().clone());
///                 std::task::Poll::Pending
///             }
///         }
///     }));
///     assert_eq!(v, 42);
///     ticker.join().unwrap(); // ran while the main tasklet waited
///     rx.recv().unwrap();
///     assert_eq!(tasklet::block_on(async { 1 + 1 }), 2);
/// });
/// ```
///
/// [`JoinHandle::kill`]: crate::JoinHandle::kill
/// [`JoinHandle::join`]: crate::JoinHandle::join
/// [`timeout`]: crate::timeout
#[inline(always)]
pub fn block_on<F: Future>(future: F) -> F::Output {
    let future = pin!(future);
    match Lease::for_current_tasklet() {
        Some(lease) => block_on_tasklet(future, lease),
        None => block_on_thread(future),
    }
}

#[inline(always)]
fn block_on_tasklet<F: Future + ?Sized>(mut future: Pin<&mut F>, lease: Lease) -> F::Output {
    let waker = lease.waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        lease.park();
    }
}

/// The wake-up state behind a tasklet's `block_on` waker.
///
/// Which tasklet it wakes is rewritten (relaxed) each time a `block_on` call
/// takes it from the pool, while no waker refers to it: no other thread can
/// read those fields until the call lends out a waker.
struct WakeState {
    /// `wake-ups << 32 | epoch`: how many times the waker fired (wrapping)
    /// and the epoch of the tasklet's published park. One word, so a waker's
    /// increment and the tasklet's publication of a park are ordered by
    /// this location alone: either the tasklet's compare-exchange sees the
    /// increment (and polls again instead of parking), or the waker reads
    /// the epoch of the park it must end.
    word: AtomicU64,
    /// The tasklet's registry slot and id.
    slot: AtomicU32,
    id: AtomicU64,
    /// Its dispatcher (fixed: a pooled state is only reused there).
    hub: HubRef,
}

impl WakeState {
    #[inline]
    fn wake(&self) {
        // Release: what the waker did before is visible to the poll that
        // follows (the tasklet reads the count with Acquire).
        let old = self.word.fetch_add(ONE_WAKE, Ordering::AcqRel);
        if self.is_running() {
            // Woken by its own poll (a future that yields): the tasklet
            // sees the count change before it parks.
            return;
        }
        // Duplicate wake-ups of one park are harmless: the dispatcher ignores
        // a wake-up for an epoch that is over, and one for a tasklet already
        // made ready.
        let epoch = old as u32;
        if let Some(id) = TaskletId::from_u64(self.id.load(Ordering::Relaxed)) {
            let slot = self.slot.load(Ordering::Relaxed);
            self.hub.unpark_task(slot, id, epoch);
        }
    }
}

impl WakeState {
    /// Whether the calling code runs in the tasklet this state wakes.
    #[inline]
    fn is_running(&self) -> bool {
        context::try_with(|d| {
            d.id == self.hub.dispatcher()
                && context::current().is_some()
                && d.current_header().id.to_u64() == self.id.load(Ordering::Relaxed)
        })
        .unwrap_or(false)
    }
}

/// One wake-up in [`WakeState::word`].
const ONE_WAKE: u64 = 1 << 32;

/// The count half of a [`WakeState::word`].
#[inline]
fn wakes(word: u64) -> u32 {
    (word >> 32) as u32
}

/// A [`WakeState::word`].
#[inline]
fn word(wakes: u32, epoch: u32) -> u64 {
    (u64::from(wakes) << 32) | u64::from(epoch)
}

/// Most states a thread keeps for reuse (beyond the one-slot cache).
const POOL_MAX: usize = 256;

thread_local! {
    static SPARE: Cell<Option<Arc<WakeState>>> = const { Cell::new(None) };
    static POOL: RefCell<Vec<Arc<WakeState>>> = const { RefCell::new(Vec::new()) };
}

/// One `block_on` call's use of a [`WakeState`]: marks it finished and
/// returns it to the pool when dropped, however the call ends (a kill or
/// timeout unwinds through it).
struct Lease {
    /// Always `Some` until dropped.
    state: Option<Arc<WakeState>>,
    /// The wake-up count read before the latest poll.
    seen: Cell<u32>,
    /// The epoch last published in the word.
    published: Cell<u32>,
}

impl Lease {
    /// A state for the running tasklet; `None` outside one. No atomic
    /// read-modify-write: a pooled state is unshared.
    #[inline(always)]
    fn for_current_tasklet() -> Option<Lease> {
        context::try_with(
            #[inline(always)]
            |d| {
                context::current()?;
                let h = d.current_header();
                let state = match SPARE.with(Cell::take) {
                    Some(s) if s.hub.dispatcher() == d.id => s,
                    _ => pooled_or_new(d.id)?,
                };
                let epoch = h.epoch.get();
                state.word.store(word(0, epoch), Ordering::Relaxed);
                state.slot.store(h.slot.get() as u32, Ordering::Relaxed);
                state.id.store(h.id.to_u64(), Ordering::Relaxed);
                Some(Lease {
                    state: Some(state),
                    seen: Cell::new(0),
                    published: Cell::new(epoch),
                })
            },
        )
        .flatten()
    }

    #[inline]
    fn state(&self) -> &Arc<WakeState> {
        match &self.state {
            Some(s) => s,
            None => unreachable!("a lease holds its state until dropped"),
        }
    }

    #[inline]
    fn waker(&self) -> ManuallyDrop<Waker> {
        let data = Arc::as_ptr(self.state()).cast::<()>();
        // SAFETY: `data` points to the `WakeState` of `self.state`, an `Arc`
        // that stays alive while the returned waker can be used: the waker
        // is only lent out (`Context`) during polls inside `block_on`, which
        // holds the lease, and is wrapped in `ManuallyDrop` so it never
        // releases the reference it does not own. The vtable treats `data`
        // as an `Arc<WakeState>` pointer, which it is (see `VTABLE`).
        ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) })
    }

    /// Parks the tasklet until the waker fires (or not at all if it fired
    /// during the poll), then reads the wake-up count for the next poll.
    #[inline]
    fn park(&self) {
        let state = self.state();
        let s = &**state;
        let epoch = context::with(|d| d.current_header().epoch.get());
        let seen = self.seen.get();
        // Publish the epoch of the coming park, if no wake-up came since the
        // count was read before the poll (see `WakeState::word`).
        let published = s.word.compare_exchange(
            word(seen, self.published.get()),
            word(seen, epoch),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if published.is_ok() {
            self.published.set(epoch);
            // While a waker may be held elsewhere (another thread, a
            // reactor), a wake-up can come from outside the dispatcher: it
            // must not report a deadlock. A future that kept no waker can
            // never be woken, and the dispatcher may say so.
            let _key = (Arc::strong_count(state) > 1)
                .then(WaitKey::register)
                .flatten();
            // Kills and timeouts unwind from here, dropping the future in
            // this tasklet. `Err` only comes late in shutdown for a tasklet
            // already unwinding: it has yielded, and the future is polled
            // again (the dispatcher abandons such tasklets after a grace
            // period).
            let _ = hub::park_as(None, "a future (block_on)");
        }
        // Acquire: reads from the wakers' increments, so what they published
        // before waking is visible to the next poll; any later wake-up
        // changes the count and fails the next park's compare-exchange.
        self.seen.set(wakes(s.word.load(Ordering::Acquire)));
    }
}

impl Drop for Lease {
    #[inline(always)]
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        if Arc::strong_count(&state) != 1 {
            // Wakers survive the call: their later wake-ups name an epoch
            // that is over (the dispatcher ignores them).
            let past = context::try_with(|d| {
                context::current().map(|_| d.current_header().epoch.get().wrapping_sub(1))
            });
            if let Some(Some(past)) = past {
                state.word.store(word(0, past), Ordering::Release);
            }
            return;
        }
        // Unshared (no waker refers to it, and none can be made without
        // one; no `Weak` is ever taken). The fence orders this reuse after
        // everything the last waker's thread did before dropping it.
        std::sync::atomic::fence(Ordering::Acquire);
        if let Ok(Some(older)) = SPARE.try_with(|c| c.replace(Some(state))) {
            to_pool(older);
        }
    }
}

/// A pooled state for dispatcher `dispatcher`, or a new one (`None` outside
/// a dispatcher).
#[cold]
#[inline(never)]
fn pooled_or_new(dispatcher: u64) -> Option<Arc<WakeState>> {
    while let Some(s) = POOL.with(|p| p.borrow_mut().pop()) {
        if s.hub.dispatcher() == dispatcher {
            return Some(s);
        }
    }
    Some(Arc::new(WakeState {
        word: AtomicU64::new(0),
        slot: AtomicU32::new(0),
        id: AtomicU64::new(0),
        hub: HubRef::current()?,
    }))
}

/// Keeps an unshared state for later calls on this thread.
#[cold]
#[inline(never)]
fn to_pool(state: Arc<WakeState>) {
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(state);
        }
    });
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(vt_clone, vt_wake, vt_wake_by_ref, vt_drop);

// SAFETY (all four): `p` comes from `Arc::as_ptr`/`Arc::into_raw` of an
// `Arc<WakeState>` whose strong reference is owned by the waker being
// operated on (or, for the lent waker of `Lease::waker`, by the lease, which
// outlives it and whose waker is never dropped or woken by value).
unsafe fn vt_clone(p: *const ()) -> RawWaker {
    // SAFETY: see above; the count is raised for the new waker's reference.
    unsafe { Arc::increment_strong_count(p.cast::<WakeState>()) };
    RawWaker::new(p, &VTABLE)
}

unsafe fn vt_wake(p: *const ()) {
    // SAFETY: see above; takes over the waker's reference.
    let state = unsafe { Arc::from_raw(p.cast::<WakeState>()) };
    state.wake();
}

unsafe fn vt_wake_by_ref(p: *const ()) {
    // SAFETY: see above; the reference is borrowed for the call.
    unsafe { &*p.cast::<WakeState>() }.wake();
}

unsafe fn vt_drop(p: *const ()) {
    // SAFETY: see above; releases the waker's reference.
    drop(unsafe { Arc::from_raw(p.cast::<WakeState>()) });
}

/// Wakes a thread blocked in `block_on` outside a dispatcher.
struct ThreadWake {
    thread: Thread,
    notified: AtomicBool,
}

impl Wake for ThreadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.notified.swap(true, Ordering::Release) {
            self.thread.unpark();
        }
    }
}

thread_local! {
    /// This thread's `block_on` waker and its state.
    static THREAD_WAKER: (Arc<ThreadWake>, Waker) = {
        let state = Arc::new(ThreadWake {
            thread: thread::current(),
            notified: AtomicBool::new(false),
        });
        let waker = Waker::from(state.clone());
        (state, waker)
    };
    /// Whether a `block_on` on this thread uses `THREAD_WAKER` (a nested one,
    /// inside a poll, makes its own rather than steal the outer's wake-ups).
    static THREAD_WAKER_BUSY: Cell<bool> = const { Cell::new(false) };
}

fn block_on_thread<F: Future + ?Sized>(future: Pin<&mut F>) -> F::Output {
    if THREAD_WAKER_BUSY.with(|b| b.replace(true)) {
        let state = Arc::new(ThreadWake {
            thread: thread::current(),
            notified: AtomicBool::new(false),
        });
        let waker = Waker::from(state.clone());
        return run_on_thread(future, &state, &waker);
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = THREAD_WAKER.try_with(|(s, _)| s.notified.store(false, Ordering::Relaxed));
            let _ = THREAD_WAKER_BUSY.try_with(|b| b.set(false));
        }
    }
    let _release = Release;
    let mut future = future;
    match THREAD_WAKER.try_with(|(state, waker)| run_on_thread(future.as_mut(), state, waker)) {
        Ok(v) => v,
        Err(_) => {
            // Thread-locals are being torn down (a destructor blocks on a future).
            let state = Arc::new(ThreadWake {
                thread: thread::current(),
                notified: AtomicBool::new(false),
            });
            let waker = Waker::from(state.clone());
            run_on_thread(future, &state, &waker)
        }
    }
}

#[inline]
fn run_on_thread<F: Future + ?Sized>(
    mut future: Pin<&mut F>,
    state: &ThreadWake,
    waker: &Waker,
) -> F::Output {
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        while !state.notified.swap(false, Ordering::Acquire) {
            thread::park();
        }
    }
}
