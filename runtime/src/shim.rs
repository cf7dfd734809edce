//! The synchronisation types of the runtime's cross-thread state machines:
//! `std`'s in a normal build, `loom`'s in the model-checking build
//! (`RUSTFLAGS="--cfg loom"`, see `scripts/loom.sh` and
//! `docs/reliability.md`).
//!
//! Code that other threads reach — the primitives' [`SpinLock`]
//! (crate::util), the wait lists of `sync::wait`, the channel, the
//! [`RemoteJoinHandle`](crate::RemoteJoinHandle) completion and the hub's
//! cross-thread inbox — takes its atomics, locks, `Arc`, `UnsafeCell` and
//! thread parking from here, so the loom models run exactly the production
//! code. In the normal build everything here is a plain re-export (or a
//! zero-cost wrapper) of `std`: behaviour is unchanged.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

/// Thread parking and yielding (`std::thread`'s, or loom's).
pub(crate) mod thread {
    #[cfg(not(loom))]
    pub(crate) use std::thread::{current, park, park_timeout, yield_now, Thread};

    #[cfg(loom)]
    pub(crate) use loom::thread::{current, park, yield_now, Thread};

    /// Loom has no clock: a timed park is a park that may end at any time,
    /// which loom models as an immediate (spurious) return; the caller then
    /// checks its deadline against the real clock, as it does after any
    /// early return.
    #[cfg(loom)]
    pub(crate) fn park_timeout(_dur: std::time::Duration) {
        loom::thread::yield_now();
    }
}

/// A busy-wait hint inside a spin loop (under loom, a yield: loom explores
/// the other threads instead of spinning forever).
#[inline(always)]
pub(crate) fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::hint::spin_loop();
}

/// `std::cell::UnsafeCell` with the same raw-pointer API in both builds.
///
/// Under loom every [`get`](UnsafeCell::get) is recorded as a (mutable)
/// access at that point of the execution, so loom reports two threads
/// reaching the cell without a happens-before edge between them. The
/// pointer must be used before the caller's next synchronising operation
/// (which is how the runtime uses it: inside a lock, or right after the
/// `Acquire` that hands the cell over).
pub(crate) struct UnsafeCell<T>(
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    #[inline(always)]
    pub(crate) fn new(value: T) -> UnsafeCell<T> {
        #[cfg(not(loom))]
        return UnsafeCell(std::cell::UnsafeCell::new(value));
        #[cfg(loom)]
        return UnsafeCell(loom::cell::UnsafeCell::new(value));
    }

    /// A pointer to the value (see the type's note on loom).
    #[inline(always)]
    pub(crate) fn get(&self) -> *mut T {
        #[cfg(not(loom))]
        return self.0.get();
        #[cfg(loom)]
        return self.0.with_mut(|p| p);
    }

    #[inline(always)]
    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner()
    }
}
