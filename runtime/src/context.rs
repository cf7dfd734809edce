//! The two places the runtime reaches through raw pointers: the thread's
//! current dispatcher, and the running tasklet's corosensei yielder.
//!
//! Both pointers are published only for the exact span in which their targets
//! are alive and pinned (see the `SAFETY:` comments), and neither is ever
//! handed out beyond a closure's borrow, so the rest of the runtime is safe code.

use std::cell::Cell;
use std::ptr;

use corosensei::Yielder;

use crate::dispatcher::Dispatcher;

thread_local! {
    static DISPATCHER: Cell<*const Dispatcher> = const { Cell::new(ptr::null()) };
}

/// The message every tasklet API panics with outside a dispatcher.
pub(crate) const OUTSIDE: &str = "this tasklet API must be called inside tasklet::dispatch \
     (no dispatcher runs on this thread); start one with `tasklet::dispatch(|| ...)`";

/// Runs `f` with the thread's dispatcher, or returns `None` outside `dispatch`.
#[inline]
pub(crate) fn try_with<R>(f: impl FnOnce(&Dispatcher) -> R) -> Option<R> {
    let p = DISPATCHER.with(Cell::get);
    if p.is_null() {
        return None;
    }
    // SAFETY: the pointer is set by `Enter::new` from a `&Dispatcher` that
    // lives on `dispatch`'s stack frame and is cleared by `Enter::drop` before
    // that dispatcher is dropped or moved (the `Enter` guard borrows it). The
    // dispatcher is only used through shared references and interior
    // mutability, so handing out another `&Dispatcher` here is sound.
    Some(f(unsafe { &*p }))
}

/// Runs `f` with the thread's dispatcher; panics (naming `dispatch`) outside one.
#[inline]
pub(crate) fn with<R>(f: impl FnOnce(&Dispatcher) -> R) -> R {
    match try_with(f) {
        Some(r) => r,
        None => panic!("{OUTSIDE}"),
    }
}

/// Whether a dispatcher runs on this thread.
pub(crate) fn is_set() -> bool {
    !DISPATCHER.with(Cell::get).is_null()
}

/// Publishes a dispatcher as the thread's current one for the guard's lifetime.
pub(crate) struct Enter<'a> {
    _d: &'a Dispatcher,
}

impl<'a> Enter<'a> {
    /// Makes `d` the thread's dispatcher. Panics if one is already set.
    pub(crate) fn new(d: &'a Dispatcher) -> Self {
        DISPATCHER.with(|c| {
            assert!(
                c.get().is_null(),
                "tasklet::dispatch called while this thread already runs a dispatcher: \
                 nested dispatch is not supported (use tasklet::spawn inside it)"
            );
            c.set(d as *const Dispatcher);
        });
        Enter { _d: d }
    }
}

impl Drop for Enter<'_> {
    fn drop(&mut self) {
        DISPATCHER.with(|c| c.set(ptr::null()));
    }
}

/// The raw yielder of a running coroutine, stored in its task header.
pub(crate) type RawYielder = *const Yielder<(), ()>;

/// Switches from the running tasklet back to the dispatcher.
///
/// `yielder` must be the yielder of the coroutine that is running right now.
#[inline]
pub(crate) fn suspend(yielder: RawYielder) {
    debug_assert!(!yielder.is_null());
    // SAFETY: the task header stores its yielder when its coroutine body starts
    // and the pointer targets that coroutine's own root frame, which stays put
    // until the body returns. Callers pass the *current* tasklet's yielder
    // (the dispatcher resumed it and it has not returned), so we are executing
    // on that coroutine's stack and the yielder is alive and ours to suspend.
    unsafe { (*yielder).suspend(()) }
}

/// A non-owning pointer to a live tasklet's header, as kept in the ready
/// queue and as the dispatcher's current tasklet: a thin pointer, so the
/// switch path does no reference counting and no `dyn` layout arithmetic.
pub(crate) type TaskPtr = std::ptr::NonNull<crate::task::Header>;

/// A pointer to the header of the tasklet `task` owns.
#[inline]
pub(crate) fn task_ptr(task: &crate::task::TaskRef) -> TaskPtr {
    std::ptr::NonNull::from(&task.header)
}

/// Borrows the tasklet header behind `p` for as long as `d` is borrowed.
///
/// `p` must come from the ready queue or the `current` slot of `d`.
#[inline]
pub(crate) fn header_at(d: &Dispatcher, p: TaskPtr) -> &crate::task::Header {
    let _ = d;
    // SAFETY: the dispatcher's registry holds a strong reference (`TaskRef`)
    // to every tasklet until `Dispatcher::finish` removes it, and a tasklet is
    // only put in the ready queue or `current` while it is registered and not
    // `Done` (wake/interrupt enqueue only `Blocked` tasklets, yield only the
    // running one; `finish` runs after the tasklet left both; shutdown clears
    // the queue before dropping any registry entry). So `p` points into a live
    // allocation for as long as the dispatcher borrow during which it is
    // used, and only shared references are ever created from it.
    unsafe { p.as_ref() }
}

/// The dispatcher's FIFO of ready tasklets.
///
/// A `RefCell<VecDeque>` without the borrow flag: every method finishes
/// without calling out to other code, so no two accesses can overlap.
pub(crate) struct ReadyQueue {
    q: std::cell::UnsafeCell<std::collections::VecDeque<TaskPtr>>,
}

impl ReadyQueue {
    /// An empty queue.
    pub(crate) fn new() -> ReadyQueue {
        ReadyQueue {
            q: std::cell::UnsafeCell::new(std::collections::VecDeque::with_capacity(256)),
        }
    }

    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut std::collections::VecDeque<TaskPtr>) -> R) -> R {
        // SAFETY: `ReadyQueue` is `!Sync` (UnsafeCell), so only this thread
        // touches it, and the closures passed by the methods below only call
        // `VecDeque` methods on `TaskPtr`s (plain pointers, no user code, no
        // re-entry into the queue), so this `&mut` is the only live reference.
        f(unsafe { &mut *self.q.get() })
    }

    /// Appends a tasklet.
    #[inline]
    pub(crate) fn push_back(&self, p: TaskPtr) {
        self.with(|q| q.push_back(p))
    }

    /// Takes the tasklet at the front.
    #[inline]
    pub(crate) fn pop_front(&self) -> Option<TaskPtr> {
        self.with(|q| q.pop_front())
    }

    /// Number of queued tasklets.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.with(|q| q.len())
    }

    /// Whether the queue is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.with(|q| q.is_empty())
    }

    /// Forgets every queued tasklet.
    pub(crate) fn clear(&self) {
        self.with(|q| q.clear())
    }
}
