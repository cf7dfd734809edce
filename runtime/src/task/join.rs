//! Joining with a bound: waiting for a tasklet without giving up its
//! handle, killing and waiting for the unwinding, and waiting for the first
//! of several tasklets (gevent `join(timeout)`, `kill(block, timeout)`,
//! `killall`, `wait`, `iwait`).

use std::fmt;
use std::time::{Duration, Instant};

use super::{JoinError, JoinHandle};
use crate::dispatcher::context;
use crate::hub::{self, Wake};
use crate::task::header::Joiner;

impl<T> JoinHandle<T> {
    /// Sets (or clears) the one tasklet woken when this one finishes.
    pub(crate) fn set_joiner(&self, joiner: Option<Joiner>) {
        self.task.joiner.set(joiner);
    }

    /// Waits until the tasklet has finished or `deadline` passes; returns
    /// whether it finished. The handle is kept either way: [`join`] it
    /// (returns at once once finished), [`kill`] it, or wait again.
    ///
    /// [`join`]: JoinHandle::join
    /// [`kill`]: JoinHandle::kill
    ///
    /// # Panics
    /// Outside a tasklet.
    pub fn wait_deadline(&mut self, deadline: Instant) -> bool {
        wait_first(std::slice::from_mut(self), Some(deadline)).is_some()
    }

    /// Waits until the tasklet has finished or `timeout` passes; returns
    /// whether it finished (gevent `Greenlet.join(timeout)`), keeping the
    /// handle.
    ///
    /// ```
    /// use std::time::Duration;
    /// tasklet::dispatch(|| {
    ///     let mut h = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
    ///     assert!(!h.wait_timeout(Duration::from_millis(10)));
    ///     h.kill(); // still ours
    ///     assert!(h.join().unwrap_err().is_killed());
    /// });
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.wait_deadline(d),
            None => wait_first(std::slice::from_mut(self), None).is_some(),
        }
    }

    /// Like [`join`](JoinHandle::join), giving up after `timeout` and then
    /// handing the handle back in [`JoinTimeoutError::Timeout`] (gevent
    /// `Greenlet.get(timeout=)`): the tasklet can still be killed or joined.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasklet::JoinTimeoutError;
    /// tasklet::dispatch(|| {
    ///     let h = tasklet::spawn(|| { tasklet::sleep(Duration::from_millis(30)); 5 });
    ///     let h = match h.join_timeout(Duration::from_millis(1)) {
    ///         Err(JoinTimeoutError::Timeout(h)) => h,
    ///         other => panic!("finished too early: {other:?}"),
    ///     };
    ///     assert_eq!(h.join_timeout(Duration::from_secs(10)).unwrap(), 5);
    /// });
    /// ```
    pub fn join_timeout(self, timeout: Duration) -> Result<T, JoinTimeoutError<T>> {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.join_deadline(d),
            None => self.join().map_err(JoinTimeoutError::Failed),
        }
    }

    /// Like [`join_timeout`](JoinHandle::join_timeout) with a deadline.
    pub fn join_deadline(mut self, deadline: Instant) -> Result<T, JoinTimeoutError<T>> {
        if self.wait_deadline(deadline) {
            self.join().map_err(JoinTimeoutError::Failed)
        } else {
            Err(JoinTimeoutError::Timeout(self))
        }
    }

    /// Kills the tasklet and waits, at most `timeout`, for its unwinding to
    /// finish (gevent `kill(block=True, timeout=)`); returns whether it did.
    /// A destructor that blocks (flushing a socket, say) may hold it up;
    /// the handle is kept, so you can wait again or give up on it.
    ///
    /// ```
    /// use std::time::Duration;
    /// tasklet::dispatch(|| {
    ///     let mut h = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
    ///     tasklet::yield_now();
    ///     assert!(h.kill_and_wait(Duration::from_secs(5)));
    ///     assert!(h.join().unwrap_err().is_killed());
    /// });
    /// ```
    pub fn kill_and_wait(&mut self, timeout: Duration) -> bool
    where
        T: 'static,
    {
        self.kill();
        self.wait_timeout(timeout)
    }
}

/// [`JoinHandle::join_timeout`] failed.
pub enum JoinTimeoutError<T> {
    /// The tasklet had not finished by the deadline: its handle, still
    /// usable.
    Timeout(JoinHandle<T>),
    /// The tasklet finished without a value (panicked or was killed).
    Failed(JoinError),
}

impl<T> JoinTimeoutError<T> {
    /// Whether the deadline passed first.
    pub fn is_timeout(&self) -> bool {
        matches!(self, JoinTimeoutError::Timeout(_))
    }
}

impl<T> fmt::Debug for JoinTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinTimeoutError::Timeout(h) => f.debug_tuple("Timeout").field(h).finish(),
            JoinTimeoutError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for JoinTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinTimeoutError::Timeout(h) => write!(f, "tasklet {} did not finish in time", h.id()),
            JoinTimeoutError::Failed(e) => e.fmt(f),
        }
    }
}

impl<T> std::error::Error for JoinTimeoutError<T> {}

/// The index of the handle that finished first, if any has.
fn first_finished<T>(handles: &[JoinHandle<T>]) -> Option<usize> {
    handles
        .iter()
        .enumerate()
        .filter(|(_, h)| h.is_finished())
        .min_by_key(|(_, h)| h.task.finish_seq.get())
        .map(|(i, _)| i)
}

/// Clears the joiner registrations of a wait however it ends (a kill or
/// `timeout` unwinding it included).
struct Joiners<'a, T>(&'a [JoinHandle<T>]);

impl<T> Drop for Joiners<'_, T> {
    fn drop(&mut self) {
        for h in self.0 {
            h.set_joiner(None);
        }
    }
}

/// Index of the handle that finished first, waiting until `deadline` for
/// one to finish.
fn wait_first<T>(handles: &mut [JoinHandle<T>], deadline: Option<Instant>) -> Option<usize> {
    let n = handles.len();
    if n == 0 {
        return None;
    }
    loop {
        if let Some(i) = first_finished(handles) {
            return Some(i);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let me = context::with(|d| d.current_joiner());
        for h in handles.iter() {
            h.set_joiner(Some(me));
        }
        let guard = Joiners(handles);
        let parked = hub::park(deadline);
        drop(guard);
        match parked {
            Ok(Wake::Unparked) => {}
            // Timed out, or cannot wait (unwinding at `dispatch` exit).
            Ok(Wake::TimedOut) | Err(_) => {
                return first_finished(handles);
            }
        }
    }
}

/// Waits until one of `handles` has finished, or `timeout` passes; returns
/// its index (gevent `wait(greenlets, count=1)`). The handles are kept.
///
/// ```
/// use std::time::Duration;
/// tasklet::dispatch(|| {
///     let mut hs = vec![
///         tasklet::spawn(|| { tasklet::sleep(Duration::from_secs(3600)); "slow" }),
///         tasklet::spawn(|| "fast"),
///     ];
///     let i = tasklet::wait_any(&mut hs, Some(Duration::from_secs(10))).unwrap();
///     assert_eq!(hs.swap_remove(i).join().unwrap(), "fast");
///     tasklet::killall(&mut hs, None);
/// });
/// ```
///
/// # Panics
/// Outside a tasklet.
pub fn wait_any<T>(handles: &mut [JoinHandle<T>], timeout: Option<Duration>) -> Option<usize> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    wait_first(handles, deadline)
}

/// Kills every tasklet of `handles` and waits, at most `timeout` (`None`:
/// without a bound), for all of them to finish unwinding (gevent
/// `killall`). Returns whether they all finished; the handles are kept.
///
/// # Panics
/// Outside a tasklet.
pub fn killall<T: 'static>(handles: &mut [JoinHandle<T>], timeout: Option<Duration>) -> bool {
    for h in handles.iter() {
        h.kill();
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    for h in handles.iter_mut() {
        let done = match deadline {
            Some(d) => h.wait_deadline(d),
            None => wait_first(std::slice::from_mut(h), None).is_some(),
        };
        if !done {
            return false;
        }
    }
    true
}

/// Yields the tasklets of `handles` in the order they finished (gevent
/// `iwait`): each handle comes out finished, so its
/// [`join`](JoinHandle::join) returns at once.
///
/// ```
/// use std::time::Duration;
/// tasklet::dispatch(|| {
///     // Each tasklet takes `n` turns of the dispatcher before it finishes.
///     let hs: Vec<_> = [3, 1, 2]
///         .into_iter()
///         .map(|n| tasklet::spawn(move || { for _ in 0..n { tasklet::yield_now() } n }))
///         .collect();
///     let order: Vec<u32> = tasklet::iwait(hs).map(|h| h.join().unwrap()).collect();
///     assert_eq!(order, [1, 2, 3]);
/// });
/// ```
pub fn iwait<T>(handles: impl IntoIterator<Item = JoinHandle<T>>) -> Iwait<T> {
    Iwait {
        pending: handles.into_iter().collect(),
        deadline: None,
    }
}

/// Iterator returned by [`iwait`].
pub struct Iwait<T> {
    pending: Vec<JoinHandle<T>>,
    deadline: Option<Instant>,
}

impl<T> Iwait<T> {
    /// Stops yielding at `deadline` (gevent `iwait(timeout=)`): the
    /// iterator then ends, and [`into_pending`](Iwait::into_pending) hands
    /// back the tasklets still running.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Like [`deadline`](Iwait::deadline), after `timeout`.
    pub fn timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.deadline(d),
            None => self,
        }
    }

    /// The handles not yielded yet.
    pub fn into_pending(self) -> Vec<JoinHandle<T>> {
        self.pending
    }
}

impl<T> Iterator for Iwait<T> {
    type Item = JoinHandle<T>;

    fn next(&mut self) -> Option<JoinHandle<T>> {
        let i = wait_first(&mut self.pending, self.deadline)?;
        Some(self.pending.remove(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.pending.len()))
    }
}

impl<T> fmt::Debug for Iwait<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iwait")
            .field("pending", &self.pending.len())
            .field("deadline", &self.deadline)
            .finish()
    }
}
