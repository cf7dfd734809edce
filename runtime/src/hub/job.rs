//! Work another thread hands to a dispatcher ([`Job`]): a boxed closure,
//! or a job embedded in an allocation its sender already made
//! ([`RawJob`]: a `spawn_on` rides in its `RemoteJoinHandle`'s completion,
//! so handing a tasklet to another worker costs one allocation, not two).

use std::ptr::NonNull;

/// Work another thread hands to a dispatcher: run on the dispatcher's
/// thread, in dispatcher context (no tasklet is current), by the hub's next
/// poll. Used by `spawn_on` and cross-thread kills (see
/// [`HubRef::run`](super::HubRef::run)). Dropping a job that never ran
/// (its dispatcher is gone) drops what it carries.
pub(crate) enum Job {
    /// A boxed closure.
    Boxed(Box<dyn FnOnce() + Send>),
    /// A job inside a larger allocation.
    Raw(RawJob),
}

impl Job {
    /// Runs the job (on the dispatcher's thread).
    #[inline]
    pub(crate) fn run(self) {
        match self {
            Job::Boxed(f) => f(),
            Job::Raw(j) => j.run(),
        }
    }
}

/// A type-erased job at `ptr`: `run` consumes it; `drop` is called instead
/// when it is dropped without running.
pub(crate) struct RawJob {
    ptr: NonNull<()>,
    run: unsafe fn(NonNull<()>),
    drop: unsafe fn(NonNull<()>),
}

// SAFETY: `RawJob::new`'s contract: what `ptr` points to may be run or
// dropped (by `run` / `drop`) on any thread.
unsafe impl Send for RawJob {}

impl RawJob {
    /// # Safety
    /// `ptr` stays valid until exactly one of `run(ptr)` (when the job runs)
    /// or `drop(ptr)` (when it is dropped unrun) is called, and both may be
    /// called from any thread.
    pub(crate) unsafe fn new(
        ptr: NonNull<()>,
        run: unsafe fn(NonNull<()>),
        drop: unsafe fn(NonNull<()>),
    ) -> RawJob {
        RawJob { ptr, run, drop }
    }

    #[inline]
    fn run(self) {
        let job = std::mem::ManuallyDrop::new(self);
        // SAFETY: `new`'s contract; `job` is not dropped, so this is the
        // one call.
        unsafe { (job.run)(job.ptr) }
    }
}

impl Drop for RawJob {
    fn drop(&mut self) {
        // SAFETY: `new`'s contract; `run` consumed no job that is dropped.
        unsafe { (self.drop)(self.ptr) }
    }
}
