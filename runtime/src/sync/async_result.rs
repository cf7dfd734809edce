//! A one-shot result many tasklets can wait for (gevent `event.AsyncResult`).

use std::fmt;
use std::time::{Duration, Instant};

use super::wait::{wait_in, wake_all, WaitOn, WaitState, Waiters, Wakeup};
use crate::util::SpinLock;

pub(super) struct State<T, E> {
    value: Option<Result<T, E>>,
    /// Parked waiters; completing pops them all.
    waiters: Waiters,
}

impl<T, E> WaitState for State<T, E> {
    fn waiters(&mut self) -> &mut Waiters {
        &mut self.waiters
    }

    fn pass_on(&mut self) -> Option<Wakeup> {
        // Every waiter was woken: nothing to pass on.
        None
    }

    fn wait_on(&self, addr: usize) -> WaitOn {
        WaitOn::Sync("sync::AsyncResult", addr)
    }
}

/// A value that is produced once — a success `T` or an error `E` — and that
/// any number of tasklets (or threads) can wait for.
///
/// The first [`set`](AsyncResult::set) / [`set_error`](AsyncResult::set_error)
/// wins; waiters get a clone of it.
///
/// ```
/// use std::rc::Rc;
/// use tasklet::sync::AsyncResult;
/// tasklet::dispatch(|| {
///     let result: Rc<AsyncResult<u32, String>> = Rc::new(AsyncResult::new());
///     let waiters: Vec<_> = (0..3)
///         .map(|_| { let r = result.clone(); tasklet::spawn(move || r.wait()) })
///         .collect();
///     tasklet::yield_now();
///     assert!(result.set(42));
///     assert!(!result.set_error("too late".into()));
///     for w in waiters {
///         assert_eq!(w.join().unwrap(), Ok(42));
///     }
/// });
/// ```
pub struct AsyncResult<T, E> {
    state: SpinLock<State<T, E>>,
}

impl<T, E> Default for AsyncResult<T, E> {
    fn default() -> Self {
        AsyncResult::new()
    }
}

impl<T, E> State<T, E> {
    /// Whether the result is set.
    pub(super) fn is_ready(&self) -> bool {
        self.value.is_some()
    }
}

impl<T, E> AsyncResult<T, E> {
    /// The state, for a select's arm.
    pub(super) fn lock(&self) -> &SpinLock<State<T, E>> {
        &self.state
    }

    /// An empty result.
    pub fn new() -> Self {
        AsyncResult {
            state: SpinLock::new(State {
                value: None,
                waiters: Waiters::default(),
            }),
        }
    }

    /// Completes with a success value and wakes every waiter. Returns
    /// `false` (dropping `value`) if the result was already completed.
    pub fn set(&self, value: T) -> bool {
        self.complete(Ok(value)).is_ok()
    }

    /// Completes with an error and wakes every waiter. Returns `false`
    /// (dropping `error`) if the result was already completed.
    pub fn set_error(&self, error: E) -> bool {
        self.complete(Err(error)).is_ok()
    }

    /// Completes with `result`; hands it back if already completed.
    pub fn complete(&self, result: Result<T, E>) -> Result<(), Result<T, E>> {
        let mut st = self.state.lock();
        if st.value.is_some() {
            return Err(result);
        }
        st.value = Some(result);
        let waiters = st.waiters.pop_all();
        drop(st);
        wake_all(&self.state, waiters);
        Ok(())
    }

    /// Whether a value or error has been set.
    pub fn is_ready(&self) -> bool {
        self.state.lock().value.is_some()
    }

    /// Whether it completed with a success value.
    pub fn is_successful(&self) -> bool {
        matches!(self.state.lock().value, Some(Ok(_)))
    }

    /// Takes the result out (if set), leaving it empty again.
    pub fn take(&self) -> Option<Result<T, E>> {
        self.state.lock().value.take()
    }

    /// The result, consuming the `AsyncResult`.
    pub fn into_inner(self) -> Option<Result<T, E>> {
        self.state.into_inner().value
    }

    /// Parks until the result is set or `deadline` passes; returns whether
    /// it was set (`false`: timed out, or the tasklet cannot park).
    // Inlined (with the park) into the caller, which then resumes from the
    // stack switch in its own frame.
    #[inline(always)]
    fn wait_ready(&self, deadline: Option<Instant>) -> bool {
        let st = self.state.lock();
        if st.value.is_some() {
            return true;
        }
        wait_in(&self.state, st, deadline)
    }

    /// Parks until the result is set, without taking it; returns whether it
    /// is set (`false` only after `timeout`).
    pub fn wait_ready_timeout(&self, timeout: Duration) -> bool {
        self.wait_ready(Instant::now().checked_add(timeout))
    }
}

impl<T: Clone, E: Clone> AsyncResult<T, E> {
    /// The result if it has been set; never parks.
    pub fn try_get(&self) -> Option<Result<T, E>> {
        self.state.lock().value.clone()
    }

    /// Parks until the result is set and returns a clone of it (gevent `get`).
    ///
    /// Never panics, also in a destructor during `dispatch`'s exit: where
    /// the tasklet may not park (see [`hub::park`](crate::hub::park)) it
    /// waits by yielding, and `dispatch` abandons a tasklet still waiting at
    /// the end of its exit's second grace period. Use
    /// [`wait_timeout`](AsyncResult::wait_timeout) to give up instead.
    pub fn wait(&self) -> Result<T, E> {
        loop {
            if let Some(r) = self.try_get() {
                return r;
            }
            // `false`: refused a park (it yielded); set, then taken again
            // before this waiter ran: either way, wait again.
            self.wait_ready(None);
        }
    }

    /// Like [`wait`](AsyncResult::wait), giving up after `timeout` (`None`).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<T, E>> {
        self.wait_ready(Instant::now().checked_add(timeout));
        self.try_get()
    }
}

impl<T: fmt::Debug, E: fmt::Debug> fmt::Debug for AsyncResult<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("value", &self.state.lock().value)
            .finish()
    }
}
