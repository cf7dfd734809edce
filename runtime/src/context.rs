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
