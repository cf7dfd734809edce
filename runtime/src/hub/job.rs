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

/// The header of a job embedded in a larger allocation (see [`RawJob`]):
/// its link in a hub's [`JobList`] and how to run or drop it.
pub(crate) struct JobNode {
    /// The next node in a [`JobList`]: written by the pusher before it
    /// publishes the node, read by the hub after it took the list.
    next: std::cell::Cell<*mut JobNode>,
    run: unsafe fn(NonNull<JobNode>),
    drop: unsafe fn(NonNull<JobNode>),
}

impl JobNode {
    /// A node that runs with `run` or is dropped unrun with `drop` (each
    /// gets the node's address, and may free the allocation around it).
    pub(crate) fn new(
        run: unsafe fn(NonNull<JobNode>),
        drop: unsafe fn(NonNull<JobNode>),
    ) -> JobNode {
        JobNode {
            next: std::cell::Cell::new(std::ptr::null_mut()),
            run,
            drop,
        }
    }
}

/// Ownership of an embedded job ([`JobNode`]) until it runs or is dropped.
pub(crate) struct RawJob(NonNull<JobNode>);

// SAFETY: `RawJob::new`'s contract: the job may be run or dropped on any
// thread, and nobody else touches its node meanwhile.
unsafe impl Send for RawJob {}

impl RawJob {
    /// # Safety
    /// `node` stays valid, and is touched by nobody else, until exactly one
    /// of its `run` (when the job runs) or `drop` (when it is dropped unrun)
    /// is called; both may be called from any thread.
    pub(crate) unsafe fn new(node: NonNull<JobNode>) -> RawJob {
        RawJob(node)
    }

    #[inline]
    fn run(self) {
        let node = std::mem::ManuallyDrop::new(self).0;
        // SAFETY: `new`'s contract; the job is not dropped, so this is the
        // one call.
        unsafe { (node.as_ref().run)(node) }
    }
}

impl Drop for RawJob {
    fn drop(&mut self) {
        // SAFETY: `new`'s contract; a job that ran is not dropped.
        unsafe { (self.0.as_ref().drop)(self.0) }
    }
}

/// An intrusive multi-producer, single-consumer list of [`RawJob`]s: any
/// thread pushes (one CAS on `head`, no allocation); the hub takes the
/// whole list at once (one swap) and runs it in push order. Unlike a
/// `SegQueue` it allocates no blocks, so nothing allocated on one thread
/// is freed on another.
pub(crate) struct JobList {
    head: std::sync::atomic::AtomicPtr<JobNode>,
}

impl JobList {
    pub(crate) fn new() -> JobList {
        JobList {
            head: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    pub(crate) fn push(&self, job: RawJob) {
        use std::sync::atomic::Ordering;
        let node = std::mem::ManuallyDrop::new(job).0;
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the node is ours (`RawJob`) until the CAS publishes it.
            unsafe { node.as_ref() }.next.set(head);
            match self.head.compare_exchange_weak(
                head,
                node.as_ptr(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Takes every job pushed so far, oldest first. Only the hub's thread
    /// (or its `Drop`) calls this.
    pub(crate) fn take_all(&self) -> TakenJobs {
        let mut p = self
            .head
            .swap(std::ptr::null_mut(), std::sync::atomic::Ordering::Acquire);
        // Newest first: reverse into push order.
        let mut rev: *mut JobNode = std::ptr::null_mut();
        while let Some(n) = NonNull::new(p) {
            // SAFETY: taken nodes are ours (their pushers published them
            // with `Release`, acquired by the swap).
            let n = unsafe { n.as_ref() };
            p = n.next.get();
            n.next.set(rev);
            rev = n as *const JobNode as *mut JobNode;
        }
        TakenJobs(rev)
    }
}

impl Drop for JobList {
    fn drop(&mut self) {
        // Pushed after the hub's last drain (it exited meanwhile): dropping
        // them drops what they carry (a `spawn_on` reports "killed").
        drop(self.take_all());
    }
}

/// Jobs taken from a [`JobList`], oldest first; those not taken out are
/// dropped with it.
pub(crate) struct TakenJobs(*mut JobNode);

impl Iterator for TakenJobs {
    type Item = RawJob;

    fn next(&mut self) -> Option<RawJob> {
        let n = NonNull::new(self.0)?;
        // SAFETY: a taken node, owned by this list until handed out.
        self.0 = unsafe { n.as_ref() }.next.get();
        // SAFETY: ownership of the node moves to the `RawJob`.
        Some(unsafe { RawJob::new(n) })
    }
}

impl Drop for TakenJobs {
    fn drop(&mut self) {
        for job in self.by_ref() {
            drop(job);
        }
    }
}
