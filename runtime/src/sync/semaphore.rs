//! A counting semaphore (gevent `lock.Semaphore`).

use std::fmt;
use std::time::{Duration, Instant};

use super::wait::{wait_in, wake, WaitOn, WaitState, Waiters, Wakeup};
use crate::util::{SpinGuard, SpinLock};

struct State {
    /// Free permits. Invariant: 0 while anybody waits (a returned permit
    /// goes straight to the longest waiter), so nobody overtakes a waiter.
    permits: usize,
    /// Waiters; a popped waiter has been handed a permit.
    waiters: Waiters,
    /// The primitive's name in dumps (`sync::Semaphore`, or `sync::Mutex`
    /// for the mutex built on it).
    what: &'static str,
}

impl State {
    /// Returns a permit: hands it to the longest waiter (returned, to be
    /// woken), or adds it to the free ones.
    #[inline]
    fn release(&mut self) -> Option<Wakeup> {
        let w = self.waiters.pop();
        if w.is_none() {
            self.permits = self.permits.saturating_add(1);
        }
        w
    }
}

impl WaitState for State {
    fn waiters(&mut self) -> &mut Waiters {
        &mut self.waiters
    }

    fn pass_on(&mut self) -> Option<Wakeup> {
        // A waiter handed a permit leaves without it: return it.
        self.release()
    }

    fn wait_on(&self, addr: usize) -> WaitOn {
        WaitOn::Sync(self.what, addr)
    }
}

/// A counting semaphore: at most `n` holders of a permit at a time.
///
/// [`acquire`](Semaphore::acquire) parks while no permit is free and returns
/// an RAII [`SemaphorePermit`] that gives the permit back when dropped —
/// also when the holder is killed or panics. Waiters are served in FIFO
/// order: a released permit goes straight to the longest waiter, and nobody
/// (not even [`try_acquire`](Semaphore::try_acquire)) takes a permit while
/// somebody waits. A waiter that is killed or times out never takes a permit
/// with it: one it was handed meanwhile goes to the next waiter.
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use tasklet::sync::Semaphore;
/// tasklet::dispatch(|| {
///     let sem = Rc::new(Semaphore::new(2));
///     let hs: Vec<_> = (0..6).map(|_| {
///         let sem = sem.clone();
///         tasklet::spawn(move || {
///             let _permit = sem.acquire();
///             assert!(sem.available_permits() <= 1);
///             tasklet::sleep(Duration::from_millis(1));
///         })
///     }).collect();
///     for h in hs { h.join().unwrap(); }
///     assert_eq!(sem.available_permits(), 2);
/// });
/// ```
pub struct Semaphore {
    state: SpinLock<State>,
}

impl Semaphore {
    /// A semaphore with `permits` free permits.
    pub fn new(permits: usize) -> Semaphore {
        Semaphore::named(permits, "sync::Semaphore")
    }

    /// A semaphore that dumps and deadlock reports call `what`.
    pub(crate) fn named(permits: usize, what: &'static str) -> Semaphore {
        Semaphore {
            state: SpinLock::new(State {
                permits,
                waiters: Waiters::default(),
                what,
            }),
        }
    }

    /// Number of free permits.
    pub fn available_permits(&self) -> usize {
        self.state.lock().permits
    }

    /// Takes a permit, parking the tasklet (or blocking the thread, outside
    /// a dispatcher) until one is free.
    ///
    /// Never fails and never panics. Where a tasklet may not park (a
    /// destructor running late in `dispatch`'s exit, see
    /// [`hub::park`](crate::hub::park)) it waits by yielding until a permit
    /// is free; `dispatch` abandons a tasklet still waiting at the end of
    /// its exit's second grace period. Use
    /// [`acquire_timeout`](Semaphore::acquire_timeout) to give up instead.
    #[inline]
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        if !self.acquire_raw(None) {
            self.acquire_refused();
        }
        SemaphorePermit { sem: self }
    }

    /// The rest of [`acquire`](Semaphore::acquire) after the tasklet was
    /// refused a park: each retry yields (a refused park does).
    #[cold]
    #[inline(never)]
    pub(crate) fn acquire_refused(&self) {
        while !self.acquire_raw(None) {}
    }

    /// Takes a permit if one is free right now.
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        let mut st = self.state.lock();
        if st.permits > 0 {
            st.permits -= 1;
            Some(SemaphorePermit { sem: self })
        } else {
            None
        }
    }

    /// Like [`acquire`](Semaphore::acquire), giving up after `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.acquire_raw(Some(
            Instant::now()
                .checked_add(timeout)
                .unwrap_or_else(far_future),
        ))
        .then(|| SemaphorePermit { sem: self })
    }

    /// Adds `n` permits (handing them to up to `n` waiters). The count of
    /// free permits saturates at `usize::MAX`, which is as good as
    /// unlimited: adding more never wraps around to none.
    pub fn add_permits(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut st = self.state.lock();
        let Some(first) = st.release() else {
            // Nobody waits.
            st.permits = st.permits.saturating_add(n - 1);
            return;
        };
        if n > 1 && !st.waiters.is_empty() {
            return self.hand_out(st, first, n - 1);
        }
        st.permits = st.permits.saturating_add(n - 1);
        drop(st);
        wake(&self.state, first);
    }

    /// The rest of [`add_permits`](Semaphore::add_permits) when more than
    /// one waiter gets a permit: `first` has one, `n` are left.
    #[cold]
    fn hand_out(&self, mut st: SpinGuard<'_, State>, first: Wakeup, mut n: usize) {
        let mut more = Vec::new();
        while n > 0 {
            let Some(w) = st.waiters.pop() else { break };
            more.push(w);
            n -= 1;
        }
        st.permits = st.permits.saturating_add(n);
        drop(st);
        wake(&self.state, first);
        for w in more {
            wake(&self.state, w);
        }
    }

    /// Takes a permit without a guard; `false` if the deadline passed or the
    /// tasklet cannot park. The caller must call [`release_raw`](Self::release_raw).
    // Inlined (with the park) into the caller, which then resumes from the
    // stack switch in its own frame.
    #[inline(always)]
    pub(crate) fn acquire_raw(&self, deadline: Option<Instant>) -> bool {
        let mut st = self.state.lock();
        if st.permits > 0 {
            st.permits -= 1;
            return true;
        }
        // Popped means handed a permit.
        wait_in(&self.state, st, deadline)
    }

    /// Returns one permit, handing it to the longest waiter.
    #[inline]
    pub(crate) fn release_raw(&self) {
        let w = self.state.lock().release();
        if let Some(w) = w {
            wake(&self.state, w);
        }
    }
}

/// A [`Semaphore`] that refuses to be released beyond its initial number
/// of permits (gevent `BoundedSemaphore`): an unmatched
/// [`release`](BoundedSemaphore::release) is an error, not a silent extra
/// permit.
///
/// ```
/// use tasklet::sync::BoundedSemaphore;
/// let sem = BoundedSemaphore::new(2);
/// sem.acquire().forget(); // manual, gevent-style
/// assert_eq!(sem.available_permits(), 1);
/// sem.release().unwrap();
/// assert!(sem.release().is_err()); // would be a third permit
/// {
///     let _p = sem.acquire(); // guards release themselves
/// }
/// assert_eq!(sem.available_permits(), 2);
/// ```
pub struct BoundedSemaphore {
    sem: Semaphore,
    max: usize,
}

/// [`BoundedSemaphore::release`] would exceed the initial number of permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverReleaseError;

impl fmt::Display for OverReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("semaphore released more times than it was acquired")
    }
}

impl std::error::Error for OverReleaseError {}

impl BoundedSemaphore {
    /// A semaphore with `permits` permits, and at most that many ever.
    pub fn new(permits: usize) -> BoundedSemaphore {
        BoundedSemaphore {
            sem: Semaphore::new(permits),
            max: permits,
        }
    }

    /// Takes a permit, parking until one is free (see [`Semaphore::acquire`]).
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        self.sem.acquire()
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.sem.try_acquire()
    }

    /// Like [`acquire`](BoundedSemaphore::acquire), giving up after `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.sem.acquire_timeout(timeout)
    }

    /// Returns a permit taken earlier and [forgotten](SemaphorePermit::forget);
    /// fails, changing nothing, if every permit is already free.
    pub fn release(&self) -> Result<(), OverReleaseError> {
        let mut st = self.sem.state.lock();
        if st.waiters.is_empty() && st.permits >= self.max {
            return Err(OverReleaseError);
        }
        let w = st.release();
        drop(st);
        if let Some(w) = w {
            wake(&self.sem.state, w);
        }
        Ok(())
    }

    /// Number of free permits.
    pub fn available_permits(&self) -> usize {
        self.sem.available_permits()
    }

    /// The initial (and largest) number of permits.
    pub fn max_permits(&self) -> usize {
        self.max
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("permits", &self.available_permits())
            .field("max", &self.max)
            .finish()
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// A permit of a [`Semaphore`], returned when dropped.
#[must_use = "the permit is released at once if not kept"]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
}

impl SemaphorePermit<'_> {
    /// Keeps the permit taken for good (the semaphore has one permit less).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.sem.release_raw();
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemaphorePermit")
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("permits", &self.available_permits())
            .finish()
    }
}
