//! Thread-safe tasklet handles: [`RemoteJoinHandle`], returned by
//! [`spawn_on`](crate::spawn_on) and [`JoinHandle::into_remote`].
//!
//! A [`JoinHandle`] is `!Send` on purpose: tasklets never leave their
//! dispatcher's thread, and the handle reaches into the tasklet's header
//! without synchronisation. A `RemoteJoinHandle` is the `Send + Sync`-state
//! counterpart: the tasklet's outcome lands in a small shared completion
//! (a mutex, an [`Event`] for tasklets and threads, a `std` [`Waker`] for
//! `async` code), and a kill travels to the tasklet's dispatcher as a job
//! on its hub's cross-thread queue.

use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::dispatcher::context;
use crate::hub::{HubRef, Job, TaskAddr};
use crate::shim::{Arc, Mutex, MutexGuard};
use crate::sync::Event;
use crate::task::{JoinError, JoinHandle};

/// The shared completion of one tasklet behind [`RemoteJoinHandle`]s.
struct Completion<T> {
    /// Set once `inner.finished` is.
    done: Event,
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    result: Option<Result<T, JoinError>>,
    /// The outcome has been delivered (it may have been taken since).
    finished: bool,
    /// Woken when the outcome is delivered (the handle was polled as a future).
    waker: Option<Waker>,
    /// Where the tasklet runs, once it exists (cleared when it finished).
    target: Option<(HubRef, TaskAddr)>,
    /// `kill` came before the tasklet existed: kill it when it does.
    kill_requested: bool,
    /// The handle was dropped: nobody will take the outcome.
    detached: bool,
}

impl<T> Completion<T> {
    fn new() -> Arc<Completion<T>> {
        Arc::new(Completion {
            done: Event::new(),
            inner: Mutex::new(Inner {
                result: None,
                finished: false,
                waker: None,
                target: None,
                kill_requested: false,
                detached: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Every critical section is a few field updates that cannot panic
        // half-way; a poisoned lock still holds consistent state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers the outcome (first call wins) and wakes every waiter.
    fn complete(&self, outcome: Result<T, JoinError>) {
        let mut g = self.lock();
        if g.finished {
            return;
        }
        g.finished = true;
        g.target = None;
        let waker = g.waker.take();
        let unclaimed = if g.detached {
            Some(outcome)
        } else {
            g.result = Some(outcome);
            None
        };
        drop(g);
        self.done.set();
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(Err(e)) = &unclaimed {
            if e.is_panic() {
                log::error!("remote tasklet panicked and its RemoteJoinHandle was dropped: {e}");
            }
        }
        drop(unclaimed);
    }

    /// Records where the tasklet runs; kills it at once if a kill came first.
    /// Called on the tasklet's own dispatcher thread.
    fn set_target(&self, hub: HubRef, addr: TaskAddr) {
        let mut g = self.lock();
        if g.finished {
            return;
        }
        let kill = g.kill_requested;
        g.target = Some((hub.clone(), addr));
        drop(g);
        if kill {
            addr.kill(&hub);
        }
    }
}

/// Delivers a tasklet's outcome into its [`Completion`]; if dropped without
/// delivering (the closure never ran: the target dispatcher was gone, or
/// the tasklet was killed before it started), the outcome is "killed".
struct Deliver<T>(Option<Arc<Completion<T>>>);

impl<T> Deliver<T> {
    fn finish(mut self, outcome: Result<T, JoinError>) {
        if let Some(c) = self.0.take() {
            c.complete(outcome);
        }
    }
}

impl<T> Drop for Deliver<T> {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.complete(Err(JoinError::killed()));
        }
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
    completion: Arc<Completion<T>>,
}

impl<T> RemoteJoinHandle<T> {
    /// A handle already completed with `outcome`.
    fn completed(outcome: Result<T, JoinError>) -> RemoteJoinHandle<T> {
        let completion = Completion::new();
        completion.complete(outcome);
        RemoteJoinHandle { completion }
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
        self.completion.done.wait();
        self.take().unwrap_or_else(|| Err(JoinError::killed()))
    }

    /// Like [`join`](Self::join), giving up after `timeout`: the handle comes
    /// back in `Err` so the caller can wait again or kill the tasklet.
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, JoinError>, Self> {
        let set = match Instant::now().checked_add(timeout) {
            Some(dl) => self.completion.done.wait_deadline(dl),
            None => {
                self.completion.done.wait();
                self.completion.done.is_set()
            }
        };
        if !set {
            return Err(self);
        }
        match self.take() {
            Some(r) => Ok(r),
            None => Err(self),
        }
    }

    fn take(&self) -> Option<Result<T, JoinError>> {
        self.completion.lock().result.take()
    }

    /// Whether the tasklet has finished (returned, panicked or was killed).
    pub fn is_finished(&self) -> bool {
        self.completion.lock().finished
    }

    /// Kills the tasklet, from any thread: it is unwound at its blocking
    /// point, running its destructors, and [`join`](Self::join) returns a
    /// killed error (see [`JoinHandle::kill`]). Does not wait. A tasklet that
    /// has not started yet never runs; a finished one is left alone.
    pub fn kill(&self) {
        let target = {
            let mut g = self.completion.lock();
            if g.finished {
                return;
            }
            match &g.target {
                Some(t) => t.clone(),
                None => {
                    g.kill_requested = true;
                    return;
                }
            }
        };
        target.1.kill(&target.0);
    }
}

impl<T> Drop for RemoteJoinHandle<T> {
    fn drop(&mut self) {
        let unclaimed = {
            let mut g = self.completion.lock();
            g.detached = true;
            g.waker = None;
            g.result.take()
        };
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
        let mut g = self.completion.lock();
        if let Some(r) = g.result.take() {
            return Poll::Ready(r);
        }
        if g.finished {
            panic!("RemoteJoinHandle polled after it completed");
        }
        match &g.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => g.waker = Some(cx.waker().clone()),
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
#[track_caller]
pub(crate) fn spawn_remote<F, T>(hub: &HubRef, f: F) -> RemoteJoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let at = std::panic::Location::caller();
    let completion = Completion::new();
    let deliver = Deliver(Some(completion.clone()));
    let target = completion.clone();
    let job: Job = Box::new(move || {
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
                if let Some(hub) = HubRef::current() {
                    target.set_target(hub, addr);
                }
            }
            Err(e) => log::error!("tasklet::spawn_on: cannot create the tasklet: {e}"),
        }
    });
    // A dispatcher that is gone hands the job back; dropping it reports
    // the tasklet killed.
    drop(hub.run(job));
    RemoteJoinHandle { completion }
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
        let completion = Completion::new();
        completion.lock().target = Some((
            hub,
            TaskAddr {
                slot: self.task.slot.get() as u32,
                id: self.task.id,
            },
        ));
        let deliver = Deliver(Some(completion.clone()));
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
        RemoteJoinHandle { completion }
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
