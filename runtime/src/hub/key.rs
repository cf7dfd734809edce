//! `Send` handles on a dispatcher and its tasklets for the `sync`
//! primitives and cross-thread work: [`WaitKey`] (one wait of one
//! tasklet), [`HubRef`] (a dispatcher's wake-up queue), [`TaskAddr`] (a
//! tasklet to kill).

use std::sync::{Arc, Weak};

use super::{Job, RemoteUnparker, RemoteWake, Shared, Wake};
use crate::dispatcher::context;
use crate::task::id::TaskletId;

/// A `Send` wake-up key for one wait of one tasklet: plain integers, no
/// reference count (cheaper to make and drop than a [`RemoteUnparker`]).
///
/// Used by the `sync` primitives for their waiter queues. On the tasklet's
/// own dispatcher thread [`WaitKey::unpark_local`] wakes it directly; from any
/// other thread the waker needs the dispatcher's [`HubRef`] (which the
/// primitive caches once per dispatcher) to build a [`RemoteUnparker`].
/// While a key is registered (between [`WaitKey::register`] and the drop of
/// its [`KeyWait`]) the dispatcher counts it as a possible cross-thread
/// wake-up and does not report a deadlock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaitKey {
    dispatcher: u64,
    slot: u32,
    id: TaskletId,
    epoch: u32,
}

/// Ends a [`WaitKey`] registration when dropped (on the waiting tasklet's
/// own thread: it is not `Send`).
pub(crate) struct KeyWait {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for KeyWait {
    #[inline]
    fn drop(&mut self) {
        context::try_with(|d| d.hub.key_waits.set(d.hub.key_waits.get() - 1));
    }
}

impl WaitKey {
    /// A key for the calling tasklet's current wait, and the guard that keeps
    /// the dispatcher from reporting a deadlock while it is registered.
    /// `None` outside a dispatcher.
    #[inline]
    pub(crate) fn register() -> Option<(WaitKey, KeyWait)> {
        context::try_with(|d| {
            let h = d.current_header();
            d.hub.key_waits.set(d.hub.key_waits.get() + 1);
            (
                WaitKey {
                    dispatcher: d.id,
                    slot: h.slot.get() as u32,
                    id: h.id,
                    epoch: h.epoch.get(),
                },
                KeyWait {
                    _not_send: std::marker::PhantomData,
                },
            )
        })
    }

    /// The dispatcher the waiting tasklet runs on.
    #[inline]
    pub(crate) fn dispatcher(&self) -> u64 {
        self.dispatcher
    }

    /// Whether this is a key of the calling tasklet (of any of its waits).
    #[inline]
    pub(crate) fn is_callers(&self) -> bool {
        self.is_local() && crate::task::header::with_current(|h| h.id == self.id).unwrap_or(false)
    }

    /// Whether the calling thread runs this key's dispatcher (so
    /// [`unpark_local`](WaitKey::unpark_local) delivers it).
    #[inline]
    pub(crate) fn is_local(&self) -> bool {
        context::try_with(|d| d.id == self.dispatcher).unwrap_or(false)
    }

    /// Wakes the tasklet if it is still in that wait. Only on the key's own
    /// dispatcher thread (see [`is_local`](WaitKey::is_local)); elsewhere it
    /// does nothing and returns `false`.
    #[inline]
    pub(crate) fn unpark_local(&self) -> bool {
        context::try_with(|d| {
            if d.id != self.dispatcher {
                return false;
            }
            d.unpark_slot(self.slot as usize, self.id, self.epoch, Wake::Unparked);
            true
        })
        .unwrap_or(false)
    }

    /// A [`RemoteUnparker`] for this key, if `hub` is its dispatcher's and
    /// that dispatcher still runs.
    pub(crate) fn remote(&self, hub: &HubRef) -> Option<RemoteUnparker> {
        if hub.dispatcher != self.dispatcher {
            return None;
        }
        hub.shared.upgrade().map(|shared| RemoteUnparker {
            shared,
            slot: self.slot,
            id: self.id,
            epoch: self.epoch,
        })
    }
}

/// A weak, `Send + Sync` reference to a dispatcher's cross-thread wake-up
/// queue: does not keep it alive and does not count against deadlock
/// detection. See [`WaitKey`].
#[derive(Clone)]
pub(crate) struct HubRef {
    dispatcher: u64,
    shared: Weak<Shared>,
}

impl HubRef {
    /// The calling thread's dispatcher (`None` outside one).
    pub(crate) fn current() -> Option<HubRef> {
        context::try_with(|d| HubRef {
            dispatcher: d.id,
            shared: Arc::downgrade(&d.hub.shared),
        })
    }

    /// The dispatcher's id.
    #[inline]
    pub(crate) fn dispatcher(&self) -> u64 {
        self.dispatcher
    }

    /// Whether that dispatcher has exited.
    pub(crate) fn is_gone(&self) -> bool {
        self.shared.strong_count() == 0
    }

    /// Wakes the tasklet at registry `slot` with id `id` if `epoch` is its
    /// current wait, from any thread: directly on the dispatcher's own
    /// thread, through its cross-thread queue elsewhere. Nothing happens if
    /// the dispatcher has exited.
    #[inline]
    pub(crate) fn unpark_task(&self, slot: u32, id: TaskletId, epoch: u32) {
        let local = context::try_with(|d| {
            d.id == self.dispatcher && {
                d.unpark_slot(slot as usize, id, epoch, Wake::Unparked);
                true
            }
        });
        if local != Some(true) {
            if let Some(shared) = self.shared.upgrade() {
                shared.push(RemoteWake { slot, id, epoch });
            }
        }
    }
    /// Whether the calling thread runs this dispatcher.
    pub(crate) fn is_current(&self) -> bool {
        context::try_with(|d| d.id == self.dispatcher).unwrap_or(false)
    }

    /// Runs `job` on that dispatcher's thread in dispatcher context: at once
    /// if that is the calling thread, else at its hub's next poll (its
    /// `epoll_wait` is woken). Hands the job back if the dispatcher has
    /// exited (or exits before running it: then it is dropped there).
    pub(crate) fn run(&self, job: Job) -> Result<(), Job> {
        if self.is_current() {
            job.run();
            return Ok(());
        }
        match self.shared.upgrade() {
            Some(s) => s.push_job(job),
            None => Err(job),
        }
    }
}

/// Where a tasklet lives in its dispatcher's registry: enough to kill it
/// from another thread (`Send`, no reference count).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskAddr {
    pub(crate) slot: u32,
    pub(crate) id: TaskletId,
}

impl TaskAddr {
    /// The running tasklet's address (`None` outside a tasklet).
    pub(crate) fn current() -> Option<TaskAddr> {
        context::try_with(|d| {
            context::current().map(|_| {
                let h = d.current_header();
                TaskAddr {
                    slot: h.slot.get() as u32,
                    id: h.id,
                }
            })
        })
        .flatten()
    }

    /// Kills the tasklet at this address on `hub`'s dispatcher, from any
    /// thread (nothing happens if it has finished or the dispatcher exited).
    pub(crate) fn kill(self, hub: &HubRef) {
        let _ = hub.run(Job::Boxed(Box::new(move || {
            context::with(|d| d.kill_slot(self.slot as usize, self.id))
        })));
    }
}
