//! Thread-safe tasklet handles: [`RemoteJoinHandle`], returned by
//! [`spawn_on`](crate::spawn_on) and [`JoinHandle::into_remote`].
//!
//! A [`JoinHandle`] is `!Send` on purpose: tasklets never leave their
//! dispatcher's thread, and the handle reaches into the tasklet's header
//! without synchronisation. A `RemoteJoinHandle` is the `Send + Sync`-state
//! counterpart: the tasklet's outcome lands in a small shared completion
//! (one spin lock over the outcome and one waiter: a parked tasklet, a
//! blocked thread or a `std` [`Waker`] for `async` code), and a kill
//! travels to the tasklet's dispatcher as a job on its hub's cross-thread
//! queue. For `spawn_on` the completion is also the job: one allocation
//! carries the closure to the target worker and the outcome back.

use std::alloc::Layout;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::blocks;
use crate::dispatcher::context;
use crate::hub::{self, HubRef, Job, JobNode, RawJob, RemoteUnparker, TaskAddr};
use crate::shim::thread::{self, Thread};
use crate::shim::{AtomicBool, Ordering, UnsafeCell};
use crate::task::{JoinError, JoinHandle};
use crate::util::SpinLock;

/// The shared completion of one tasklet behind a [`RemoteJoinHandle`]: the
/// head of one allocation (a [`Cell`], which also carries the `spawn_on`
/// closure until its worker takes it), shared by two references — the
/// handle's and the delivering side's ([`Deliver`], or the job that will
/// become it). Each side drops its reference inside its last critical
/// section (see [`release`]), so the side that comes last frees the
/// allocation and nobody touches it after that; after a `join` it is
/// normally the joining thread, which also allocated it.
///
/// Every field of [`Inner`] is guarded by the one spin lock; `done`
/// mirrors `Inner::finished` so a `join` that finds the tasklet finished
/// reads it without taking the lock.
struct Completion<T> {
    inner: SpinLock<Inner<T>>,
    /// Set (`Release`, under the lock) when `finished` is.
    done: AtomicBool,
    /// Where the tasklet runs (`None` for a handle created completed).
    hub: Option<HubRef>,
    /// Frees the allocation this completion heads.
    free: unsafe fn(NonNull<Completion<T>>),
}

struct Inner<T> {
    result: Option<Result<T, JoinError>>,
    /// The outcome has been delivered (it may have been taken since).
    finished: bool,
    /// Who waits for the outcome (at most one: the handle is not `Clone`).
    waiter: Option<Waiter>,
    /// The tasklet, once it exists (cleared when it finished).
    addr: Option<TaskAddr>,
    /// `kill` came before the tasklet existed: kill it when it does.
    kill_requested: bool,
    /// The handle was dropped: nobody will take the outcome.
    detached: bool,
    /// Live references: the handle's and the delivering side's.
    refs: u8,
}

/// How to wake the one waiter of a [`Completion`].
enum Waiter {
    /// A tasklet parked in `join` (on any dispatcher).
    Tasklet(RemoteUnparker),
    /// A plain thread blocked in `join`.
    Thread(Thread),
    /// The handle polled as a future.
    Future(Waker),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Tasklet(u) => u.unpark(),
            Waiter::Thread(t) => t.unpark(),
            Waiter::Future(w) => w.wake(),
        }
    }
}

/// The allocation behind a [`Completion`]: the completion first (so a
/// pointer to the cell is a pointer to it) and, for `spawn_on`, the job
/// that carries it to the target worker (linked into that hub's job list
/// in place) with the closure and its call site.
#[repr(C)]
struct Cell<T, F> {
    completion: Completion<T>,
    job: JobNode,
    f: UnsafeCell<Option<F>>,
    at: &'static Location<'static>,
}

impl<T, F> Cell<T, F> {
    /// The cell around its `job` node.
    fn of_job(node: NonNull<JobNode>) -> NonNull<Cell<T, F>> {
        // SAFETY: every `JobNode` handed to `run_spawn` / `drop_spawn` is
        // the `job` field of a `Cell<T, F>` (see `spawn_remote`).
        unsafe { node.byte_sub(std::mem::offset_of!(Cell<T, F>, job)) }.cast()
    }
}

/// Allocates a cell with `refs` references; `finished` with `result` if
/// given. Its job node runs `spawn_on`'s `run_spawn`/`drop_spawn` (only
/// `spawn_remote` hands it to a hub).
fn new_cell<T, F>(
    hub: Option<HubRef>,
    f: Option<F>,
    at: &'static Location<'static>,
    refs: u8,
    result: Option<Result<T, JoinError>>,
) -> NonNull<Completion<T>> {
    let finished = result.is_some();
    let cell = Cell {
        completion: Completion {
            inner: SpinLock::new(Inner {
                result,
                finished,
                waiter: None,
                addr: None,
                kill_requested: false,
                detached: false,
                refs,
            }),
            done: AtomicBool::new(finished),
            hub,
            free: free_cell::<T, F>,
        },
        job: JobNode::new(drop_unused_job, drop_unused_job),
        f: UnsafeCell::new(f),
        at,
    };
    // A thousand `spawn_on` in flight are a thousand cells, each freed
    // by whichever side comes last: the block cache keeps them out of
    // `malloc`'s bins (see `crate::blocks`).
    let block = blocks::alloc(Layout::new::<Cell<T, F>>()).cast::<Cell<T, F>>();
    // SAFETY: `block` is a fresh allocation of `Cell<T, F>`'s size and
    // alignment, written once before anyone sees it.
    unsafe { block.as_ptr().write(cell) };
    // `Cell` is `repr(C)` with the completion first.
    block.cast()
}

/// # Safety
/// `c` heads a `Cell<T, F>` made by [`new_cell`] whose last reference was
/// just released.
unsafe fn free_cell<T, F>(c: NonNull<Completion<T>>) {
    // SAFETY: the contract: the cell, from `blocks::alloc` in `new_cell`,
    // is ours alone now.
    unsafe { blocks::drop_and_free(c.cast::<Cell<T, F>>()) };
}

/// Runs `f` on the completion's state under its lock and drops the
/// caller's reference in the same critical section; frees the allocation
/// if that was the last one.
///
/// # Safety
/// The caller owns one reference to `c` and does not use it afterwards.
unsafe fn release<T, R>(c: NonNull<Completion<T>>, f: impl FnOnce(&mut Inner<T>) -> R) -> R {
    let (r, last) = {
        // SAFETY: the caller's reference keeps `c` alive until the unlock
        // below, its last access unless it was the last reference.
        let comp = unsafe { c.as_ref() };
        let mut g = comp.inner.lock();
        let r = f(&mut g);
        g.refs -= 1;
        (r, g.refs == 0)
    };
    if last {
        // SAFETY: no reference is left, so nobody else reaches `c`.
        unsafe { ((*c.as_ptr()).free)(c) };
    }
    r
}

/// Delivers a tasklet's outcome into its [`Completion`] and drops the
/// delivering side's reference; if dropped without delivering (the closure
/// never ran: the target dispatcher was gone, or the tasklet was killed
/// before it started), the outcome is "killed".
struct Deliver<T> {
    c: NonNull<Completion<T>>,
    _owns: PhantomData<Result<T, JoinError>>,
}

impl<T> Deliver<T> {
    /// # Safety
    /// Takes over the delivering side's reference to `c`.
    unsafe fn new(c: NonNull<Completion<T>>) -> Deliver<T> {
        Deliver {
            c,
            _owns: PhantomData,
        }
    }

    fn finish(self, outcome: Result<T, JoinError>) {
        let c = ManuallyDrop::new(self).c;
        // SAFETY: this is the delivering side's reference, used once.
        unsafe { complete(c, outcome) }
    }
}

impl<T> Drop for Deliver<T> {
    fn drop(&mut self) {
        // SAFETY: as in `finish` (which forgets `self`).
        unsafe { complete(self.c, Err(JoinError::killed())) }
    }
}

/// Delivers the outcome (first call wins), drops the delivering side's
/// reference, and wakes the waiter.
///
/// # Safety
/// The caller owns the delivering side's reference to `c`.
unsafe fn complete<T>(c: NonNull<Completion<T>>, outcome: Result<T, JoinError>) {
    // SAFETY: the caller's contract.
    let (waiter, unclaimed) = unsafe {
        release(c, |g| {
            if g.finished {
                return (None, Some(outcome));
            }
            g.finished = true;
            g.addr = None;
            // Under the lock, so a `join` that sees it also sees the result.
            (*c.as_ptr()).done.store(true, Ordering::Release);
            let waiter = g.waiter.take();
            if g.detached {
                (waiter, Some(outcome))
            } else {
                g.result = Some(outcome);
                (waiter, None)
            }
        })
    };
    if let Some(w) = waiter {
        w.wake();
    }
    if let Some(Err(e)) = &unclaimed {
        if e.is_panic() {
            log::error!("remote tasklet panicked and its RemoteJoinHandle was dropped: {e}");
        }
    }
    drop(unclaimed);
}

/// Clears the handle's registered waiter if `join` unwinds (a kill or
/// `timeout` of the joining tasklet) while parked.
struct ClearWaiter<'a, T>(&'a Completion<T>);

impl<T> Drop for ClearWaiter<'_, T> {
    fn drop(&mut self) {
        let w = self.0.inner.lock().waiter.take();
        drop(w);
    }
}

/// A `Send` handle to a tasklet running on some dispatcher thread: join it
/// (from a tasklet of any dispatcher, from a plain thread, or by `.await`ing
/// it) or kill it.
///
/// Returned by [`spawn_on`](crate::spawn_on) (a tasklet started on another
/// worker of a [`Runtime`](crate::Runtime)) and by
/// [`JoinHandle::into_remote`] (a local tasklet, so that another thread can
/// wait for it or kill it). Like [`JoinHandle`], dropping it detaches the
/// tasklet: it keeps running, and a panic in it is logged.
///
/// It is also a [`Future`] whose output is the tasklet's outcome, so `async`
/// code on any executor can await a tasklet (the handle stores the task's
/// [`Waker`] and wakes it from the tasklet's thread).
///
/// ```
/// use std::time::Duration;
/// let h = tasklet::dispatch(|| {
///     tasklet::spawn(|| { tasklet::sleep(Duration::from_millis(10)); 6 * 7 }).into_remote()
/// });
/// // The dispatcher has exited, and with it the unfinished tasklet:
/// assert!(h.join().unwrap_err().is_killed());
///
/// let v = tasklet::dispatch(|| {
///     let h = tasklet::spawn(|| 6 * 7).into_remote();
///     // Another thread waits for the tasklet (blocking that thread only).
///     let waiter = std::thread::spawn(move || h.join().unwrap());
///     while !waiter.is_finished() {
///         tasklet::sleep(Duration::from_millis(1));
///     }
///     waiter.join().unwrap()
/// });
/// assert_eq!(v, 42);
/// ```
pub struct RemoteJoinHandle<T> {
    /// The handle's reference to the completion.
    c: NonNull<Completion<T>>,
    _owns: PhantomData<Result<T, JoinError>>,
}

// SAFETY: the completion is shared between threads only through its spin
// lock (and the `done` atomic); the outcome crosses threads, so `T: Send`
// (as for `Arc<Mutex<Option<T>>>`).
unsafe impl<T: Send> Send for RemoteJoinHandle<T> {}
// SAFETY: as above; `&self` methods only lock the completion.
unsafe impl<T: Send> Sync for RemoteJoinHandle<T> {}

impl<T> RemoteJoinHandle<T> {
    /// A handle already completed with `outcome`.
    fn completed(outcome: Result<T, JoinError>) -> RemoteJoinHandle<T> {
        let c = new_cell::<T, ()>(None, None, Location::caller(), 1, Some(outcome));
        RemoteJoinHandle {
            c,
            _owns: PhantomData,
        }
    }

    fn completion(&self) -> &Completion<T> {
        // SAFETY: the handle's reference keeps the completion alive.
        unsafe { self.c.as_ref() }
    }

    /// Waits for the tasklet to finish and returns its value, or `Err` if it
    /// panicked (with the payload) or was killed — also when its dispatcher
    /// exited before it finished.
    ///
    /// In a tasklet this parks the tasklet (and can be interrupted by a kill
    /// or a [`timeout`](crate::timeout)); on a plain thread it blocks the
    /// thread. Called from a destructor while the tasklet is killed at
    /// `dispatch` exit (it cannot wait then) it returns a killed error at once.
    pub fn join(self) -> Result<T, JoinError> {
        self.wait(None);
        let c = ManuallyDrop::new(self).c;
        // SAFETY: the handle's reference, not used again (`self` is not
        // dropped). Not finished: could not wait; the outcome is detached.
        let r = unsafe {
            release(c, |g| {
                g.detached = true;
                g.waiter.take();
                g.result.take()
            })
        };
        r.unwrap_or_else(|| Err(JoinError::killed()))
    }

    /// Like [`join`](Self::join), giving up after `timeout`: the handle comes
    /// back in `Err` so the caller can wait again or kill the tasklet.
    pub fn join_timeout(self, timeout: std::time::Duration) -> Result<Result<T, JoinError>, Self> {
        if !self.wait(Instant::now().checked_add(timeout)) {
            return Err(self);
        }
        match self.take() {
            Some(r) => {
                drop(self);
                Ok(r)
            }
            None => Err(self),
        }
    }

    fn take(&self) -> Option<Result<T, JoinError>> {
        self.completion().inner.lock().result.take()
    }

    /// Waits until the tasklet finished (`true`) or `deadline` passed, or
    /// the caller is a tasklet that cannot wait (unwinding at `dispatch`
    /// exit): `false`.
    fn wait(&self, deadline: Option<Instant>) -> bool {
        let comp = self.completion();
        loop {
            if comp.done.load(Ordering::Acquire) {
                return true;
            }
            let tasklet = hub::in_tasklet();
            {
                let mut g = comp.inner.lock();
                if g.finished {
                    return true;
                }
                if deadline.is_some_and(|dl| Instant::now() >= dl) {
                    g.waiter = None;
                    return false;
                }
                g.waiter = Some(if tasklet {
                    Waiter::Tasklet(hub::current_unparker().remote())
                } else {
                    Waiter::Thread(thread::current())
                });
            }
            if tasklet {
                // A kill or `timeout` unwinds out of the park: unregister.
                let clear = ClearWaiter(comp);
                let parked = hub::park_as(deadline, "RemoteJoinHandle::join");
                std::mem::forget(clear);
                if parked.is_err() {
                    comp.inner.lock().waiter = None;
                    return false;
                }
            } else {
                match deadline {
                    None => thread::park(),
                    Some(dl) => thread::park_timeout(dl.saturating_duration_since(Instant::now())),
                }
            }
        }
    }

    /// Whether the tasklet has finished (returned, panicked or was killed).
    pub fn is_finished(&self) -> bool {
        self.completion().done.load(Ordering::Acquire)
    }

    /// Kills the tasklet, from any thread: it is unwound at its blocking
    /// point, running its destructors, and [`join`](Self::join) returns a
    /// killed error (see [`JoinHandle::kill`]). Does not wait. A tasklet that
    /// has not started yet never runs; a finished one is left alone.
    pub fn kill(&self) {
        let comp = self.completion();
        let addr = {
            let mut g = comp.inner.lock();
            if g.finished {
                return;
            }
            match g.addr {
                Some(a) => a,
                None => {
                    g.kill_requested = true;
                    return;
                }
            }
        };
        if let Some(hub) = &comp.hub {
            addr.kill(hub);
        }
    }
}

impl<T> Drop for RemoteJoinHandle<T> {
    fn drop(&mut self) {
        // SAFETY: the handle's reference, released once, here.
        let (unclaimed, waiter) = unsafe {
            release(self.c, |g| {
                g.detached = true;
                (g.result.take(), g.waiter.take())
            })
        };
        drop(waiter);
        if let Some(Err(e)) = &unclaimed {
            if e.is_panic() {
                log::error!(
                    "remote tasklet panicked and its RemoteJoinHandle was dropped without join: {e}"
                );
            }
        }
    }
}

impl<T> Future for RemoteJoinHandle<T> {
    type Output = Result<T, JoinError>;

    /// Ready with the tasklet's outcome once it finished.
    ///
    /// # Panics
    /// If polled again after it returned `Ready`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut g = self.completion().inner.lock();
        if let Some(r) = g.result.take() {
            return Poll::Ready(r);
        }
        if g.finished {
            panic!("RemoteJoinHandle polled after it completed");
        }
        match &g.waiter {
            Some(Waiter::Future(w)) if w.will_wake(cx.waker()) => {}
            _ => g.waiter = Some(Waiter::Future(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl<T> fmt::Debug for RemoteJoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Starts `f` as a tasklet on `hub`'s dispatcher (at once if that is the
/// calling thread's, else at its next poll). If that dispatcher has exited
/// the handle reports the tasklet killed.
///
/// One allocation: the completion, with the closure in it; the job that
/// carries it to the target worker holds the delivering side's reference
/// and hands it to the tasklet it creates there.
#[track_caller]
pub(crate) fn spawn_remote<F, T>(hub: HubRef, f: F) -> RemoteJoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let at = Location::caller();
    let target = hub.clone();
    let c = new_cell::<T, F>(Some(hub), Some(f), at, 2, None);
    let cell = c.cast::<Cell<T, F>>();
    // SAFETY: fresh, not shared yet: the job node is ours to set up.
    unsafe { (*cell.as_ptr()).job = JobNode::new(run_spawn::<T, F>, drop_spawn::<T, F>) };
    // SAFETY: the job owns the delivering side's reference to the cell,
    // which `run_spawn` / `drop_spawn` (called once, on any thread: `F` and
    // `T` are `Send`) take over; nobody else touches the node.
    let job = unsafe { RawJob::new(NonNull::from(&(*cell.as_ptr()).job)) };
    // A dispatcher that is gone hands the job back; dropping it reports
    // the tasklet killed.
    drop(target.run(Job::Raw(job)));
    RemoteJoinHandle {
        c,
        _owns: PhantomData,
    }
}

/// The job node of a cell that is never handed to a hub.
unsafe fn drop_unused_job(_: NonNull<JobNode>) {
    unreachable!("only spawn_remote hands a cell's job to a hub");
}

/// The `spawn_on` job, on the target dispatcher: creates the tasklet.
///
/// # Safety
/// `node` is the job of a `Cell<T, F>` and the caller hands over the
/// delivering side's reference to it.
unsafe fn run_spawn<T, F>(node: NonNull<JobNode>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let cell = Cell::<T, F>::of_job(node);
    let p = cell.cast::<()>();
    // SAFETY: our reference keeps the cell alive; only the job touches `f`
    // (the queue that carried it ordered its writing before this).
    let (f, at) = unsafe { ((*cell.as_ref().f.get()).take(), cell.as_ref().at) };
    // SAFETY: the reference the job held.
    let deliver = unsafe { Deliver::new(p.cast::<Completion<T>>()) };
    let Some(f) = f else { return };
    let body = move || {
        let outcome = panic::catch_unwind(AssertUnwindSafe(f)).map_err(JoinError::from_payload);
        deliver.finish(outcome);
    };
    // On failure `body` is dropped, and `deliver` with it: killed.
    match context::with(|d| d.spawn(None, None, at, body).map(JoinHandle::new)) {
        Ok(h) => {
            let addr = TaskAddr {
                slot: h.task.slot.get() as u32,
                id: h.task.id,
            };
            // The handle is dropped (detached): the body catches its own
            // panics and reports through the completion.
            drop(h);
            // SAFETY: the tasklet (which owns the delivering reference now)
            // has not run yet: it only runs once this job has returned.
            let comp = unsafe { p.cast::<Completion<T>>().as_ref() };
            let kill = {
                let mut g = comp.inner.lock();
                g.addr = Some(addr);
                g.kill_requested
            };
            if kill {
                context::with(|d| d.kill_slot(addr.slot as usize, addr.id));
            }
        }
        Err(e) => log::error!("tasklet::spawn_on: cannot create the tasklet: {e}"),
    }
}

/// The `spawn_on` job dropped unrun: drops the closure, reports "killed".
///
/// # Safety
/// As for [`run_spawn`].
unsafe fn drop_spawn<T, F>(node: NonNull<JobNode>) {
    let cell = Cell::<T, F>::of_job(node);
    // SAFETY: the reference the job held (dropped last, after `f`: a panic
    // in `f`'s destructor still reports the tasklet killed).
    let _deliver = unsafe { Deliver::<T>::new(cell.cast()) };
    // SAFETY: as in `run_spawn`.
    let f = unsafe { (*cell.as_ref().f.get()).take() };
    drop(f);
}

impl<T: Send + 'static> JoinHandle<T> {
    /// Turns this handle into a [`RemoteJoinHandle`], which is `Send`: another
    /// thread (a plain one, another dispatcher, `async` code) can then wait
    /// for the tasklet or kill it.
    ///
    /// The tasklet's outcome is relayed by a small tasklet of this
    /// dispatcher that joins it. If this dispatcher exits before the tasklet
    /// finishes, the remote handle reports it killed.
    ///
    /// ```
    /// use std::time::Duration;
    /// tasklet::dispatch(|| {
    ///     let h = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600))).into_remote();
    ///     // An admin thread kills the tasklet.
    ///     let admin = std::thread::spawn(move || { h.kill(); h.join() });
    ///     while !admin.is_finished() {
    ///         tasklet::sleep(Duration::from_millis(1));
    ///     }
    ///     assert!(admin.join().unwrap().unwrap_err().is_killed());
    /// });
    /// ```
    pub fn into_remote(self) -> RemoteJoinHandle<T> {
        if self.is_finished() {
            let outcome = self.task.result().borrow_mut().take();
            return RemoteJoinHandle::completed(
                outcome.unwrap_or_else(|| Err(JoinError::killed())),
            );
        }
        let Some(hub) = HubRef::current() else {
            // Unfinished, and its dispatcher is gone: it never finishes.
            return RemoteJoinHandle::completed(Err(JoinError::killed()));
        };
        let c = new_cell::<T, ()>(Some(hub), None, Location::caller(), 2, None);
        // SAFETY: fresh, not shared yet.
        unsafe { c.as_ref() }.inner.lock().addr = Some(TaskAddr {
            slot: self.task.slot.get() as u32,
            id: self.task.id,
        });
        // SAFETY: the delivering side's reference, owned by the relay.
        let deliver = unsafe { Deliver::new(c) };
        let relay = crate::Builder::new()
            .name("remote-join-relay")
            .spawn(move || {
                let outcome = self.join();
                deliver.finish(outcome);
            });
        if let Err(e) = relay {
            // The relay closure (and the handle in it) is dropped: the
            // remote handle reports the tasklet killed.
            log::error!("JoinHandle::into_remote: cannot create the relay tasklet: {e}");
        }
        RemoteJoinHandle {
            c,
            _owns: PhantomData,
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
