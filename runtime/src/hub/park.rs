//! Parking a tasklet and waking it: [`park`], [`Unparker`] (same thread),
//! [`RemoteUnparker`] (any thread), and [`catch_interrupt`] for code that
//! must not unwind.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::{Cancelled, RemoteWake, Shared, Wake};
use crate::dispatcher::context;
use crate::dispatcher::Dispatcher;
use crate::task::header::WaitOn;
use crate::task::id::TaskletId;
use crate::task::raw::TaskRef;

/// Wakes one tasklet from one particular [`park`], on the same thread.
///
/// Bound to the wait that was current when it was made: once that park has
/// returned, `unpark` is a no-op, so a stale unparker can never disturb a
/// later wait. Unparking before the tasklet has parked makes its next park
/// return at once (like `std::thread::park`). Not `Send`: use
/// [`Unparker::remote`] to wake a tasklet from another thread.
#[derive(Clone)]
pub struct Unparker {
    task: TaskRef,
    epoch: u32,
}

impl Unparker {
    pub(crate) fn new(task: TaskRef, epoch: u32) -> Unparker {
        Unparker { task, epoch }
    }

    /// Wakes the tasklet if it is still in the wait this unparker belongs to.
    ///
    /// Returns whether the wake-up was delivered (false if that wait is over
    /// or the tasklet finished). The tasklet runs later, when the caller
    /// blocks or yields.
    pub fn unpark(&self) -> bool {
        context::try_with(|d| self.unpark_in(d)).unwrap_or(false)
    }

    pub(crate) fn unpark_in(&self, d: &Dispatcher) -> bool {
        d.unpark(&self.task, self.epoch, Wake::Unparked)
    }

    /// Whether both unparkers wake the same tasklet.
    pub fn same_tasklet(&self, other: &Unparker) -> bool {
        TaskRef::ptr_eq(&self.task, &other.task)
    }

    /// The id of the tasklet this unparker wakes.
    pub fn tasklet_id(&self) -> TaskletId {
        self.task.id
    }

    /// A `Send + Sync` unparker for the same wait, usable from any thread.
    ///
    /// # Panics
    /// Outside the tasklet's dispatcher thread.
    pub fn remote(&self) -> RemoteUnparker {
        context::with(|d| RemoteUnparker {
            shared: d.hub.shared.clone(),
            slot: self.task.slot.get() as u32,
            id: self.task.id,
            epoch: self.epoch,
        })
    }
}

impl fmt::Debug for Unparker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unparker")
            .field("tasklet", &self.task.id)
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// Wakes one tasklet from one particular [`park`], from any thread.
///
/// From the tasklet's own dispatcher thread it wakes directly; from another
/// thread it queues the wake-up and wakes the dispatcher's `epoll_wait`
/// through its `mio::Waker` (one syscall, coalesced while wake-ups are
/// pending). A dispatcher that has exited ignores it. While any
/// `RemoteUnparker` exists, the dispatcher never reports a deadlock.
#[derive(Clone)]
pub struct RemoteUnparker {
    pub(super) shared: Arc<Shared>,
    pub(super) slot: u32,
    pub(super) id: TaskletId,
    pub(super) epoch: u32,
}

impl RemoteUnparker {
    /// Wakes the tasklet if it is still in that wait.
    pub fn unpark(&self) {
        let local = context::try_with(|d| {
            if d.id == self.shared.dispatcher_id {
                d.unpark_slot(self.slot as usize, self.id, self.epoch, Wake::Unparked);
                true
            } else {
                false
            }
        });
        if local != Some(true) {
            self.shared.push(RemoteWake {
                slot: self.slot,
                id: self.id,
                epoch: self.epoch,
            });
        }
    }

    /// The id of the tasklet this unparker wakes.
    pub fn tasklet_id(&self) -> TaskletId {
        self.id
    }
}

impl fmt::Debug for RemoteUnparker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteUnparker")
            .field("dispatcher", &self.shared.dispatcher_id)
            .field("tasklet", &self.id)
            .finish()
    }
}

/// An unparker for the calling tasklet's next (or current) [`park`].
///
/// # Panics
/// Outside a tasklet.
#[track_caller]
pub fn current_unparker() -> Unparker {
    match context::try_with(|d| d.current_unparker()) {
        Some(u) => u,
        None => context::outside_api("tasklet::hub::current_unparker"),
    }
}

/// Suspends the calling tasklet until an unparker for this wait fires or
/// `deadline` passes.
///
/// If the tasklet is killed or its [`timeout`](crate::timeout) expires while
/// parked (or before), `park` unwinds it instead of returning — put cleanup in
/// destructors (guards). A tasklet that is *already* unwinding (a destructor
/// that blocks, say to flush a socket) is not unwound again: it parks
/// normally, like gevent's `finally` blocks. Such a park returns
/// `Err(Cancelled)` instead (after one yield when it has not parked yet):
/// give up without blocking. That happens late in the dispatcher's shutdown
/// (`dispatch`'s first tasklet has returned and the rest are being killed),
/// when a `timeout` opened inside the destructor expires, and for an
/// interrupt that arrives while the runtime cannot tell whether the tasklet
/// is unwinding (see `Cancelled`).
#[inline]
#[track_caller]
pub fn park(deadline: Option<Instant>) -> Result<Wake, Cancelled> {
    match context::try_with(
        #[inline(always)]
        |d| d.park(deadline),
    ) {
        Some(r) => r,
        None => context::outside_api("tasklet::hub::park"),
    }
}

/// [`park`], recording `what` the tasklet waits on (a short phrase such as
/// `"server stop"`), which [`crate::dump`] and deadlock reports show.
///
/// ```
/// tasklet::dispatch(|| {
///     let h = tasklet::spawn(|| { let _ = tasklet::hub::park_as(None, "a demo"); });
///     tasklet::yield_now();
///     let dump = tasklet::dump();
///     assert!(dump.to_string().contains("a demo"));
///     h.kill();
/// });
/// ```
#[inline]
#[track_caller]
pub fn park_as(deadline: Option<Instant>, what: &'static str) -> Result<Wake, Cancelled> {
    match context::try_with(|d| d.park_on(deadline, WaitOn::Other(what))) {
        Some(r) => r,
        None => context::outside_api("tasklet::hub::park_as"),
    }
}

/// Whether the calling thread is running a dispatcher (inside `dispatch`).
pub fn in_dispatcher() -> bool {
    context::is_set()
}

/// Whether a tasklet is running on the calling thread right now.
///
/// `false` on threads without a dispatcher and also in the dispatcher's own
/// code between tasklets (the hub's `epoll_wait`, timers): one thread-local
/// load. The `hook` feature uses it to leave the runtime's own system calls
/// alone.
#[inline(always)]
pub fn in_tasklet() -> bool {
    context::current().is_some()
}

/// Runs `f` in the calling tasklet; if a kill or an expired
/// [`timeout`](crate::timeout) interrupts it (at a blocking call inside `f`),
/// stops the unwinding at this point and returns `Err(Cancelled)` instead.
///
/// The interrupt stays pending: the tasklet's next blocking call outside
/// `catch_interrupt` raises it again, a `timeout` scope whose deadline
/// passed still returns `Err(Elapsed)`, and a killed tasklet that returns
/// is reported as killed by `join`. For code that must not unwind — an
/// `extern "C"` function, such as the `hook` feature's interposed libc
/// calls — and that reports the interruption as an error instead. Other
/// panics pass through unchanged. Outside a tasklet it just runs `f`.
///
/// If the interrupt was already pending when `catch_interrupt` was called
/// (the tasklet went on making blocking calls after one reported it), the
/// tasklet yields before `Err` returns, so a loop that retries failed calls
/// cannot hold the dispatcher.
pub fn catch_interrupt<R>(f: impl FnOnce() -> R) -> Result<R, Cancelled> {
    let Some(task) = context::current_task() else {
        return Ok(f());
    };
    let unwinding = task.unwinding.get();
    let pending = task.interrupt.get().is_some();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Ok(r),
        Err(payload) if payload.is::<crate::task::header::Unwind>() => {
            // The runtime's own unwind stops here: back to the state at entry.
            task.unwinding.set(unwinding);
            drop(payload);
            if pending {
                context::try_with(|d| d.yield_unchecked());
            }
            Err(Cancelled)
        }
        Err(payload) => std::panic::resume_unwind(payload),
    }
}
