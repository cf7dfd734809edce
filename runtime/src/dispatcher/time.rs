//! Time for tasklets: [`sleep`], [`sleep_until`], [`yield_now`],
//! [`timeout`] scopes, and spawning on the clock ([`spawn_later`],
//! [`spawn_loop`]).

use std::fmt;
use std::io;
use std::num::NonZeroU64;
use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::dispatcher::context;
use crate::hub::{TimerAction, Wake};
use crate::task::header::WaitOn;
use crate::task::{self, Interrupt, JoinHandle, Unwind};

/// Suspends the current tasklet for `d` (gevent `sleep`); other tasklets run meanwhile.
///
/// `sleep(Duration::ZERO)` is [`yield_now`].
///
/// ```
/// use std::time::{Duration, Instant};
/// tasklet::dispatch(|| {
///     let t = Instant::now();
///     tasklet::sleep(Duration::from_millis(10));
///     assert!(t.elapsed() >= Duration::from_millis(10));
/// });
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch).
#[inline]
#[track_caller]
pub fn sleep(d: Duration) {
    if d.is_zero() {
        return yield_now();
    }
    match Instant::now().checked_add(d) {
        Some(deadline) => park_until(deadline),
        None => sleep_until_forever(),
    }
}

#[track_caller]
fn sleep_until_forever() {
    let r = context::try_with(|d| loop {
        if d.park_on(None, WaitOn::Sleep).is_err() {
            return;
        }
    });
    if r.is_none() {
        context::outside_api("tasklet::sleep")
    }
}

/// Suspends the current tasklet until `deadline`.
///
/// A deadline that has already passed arms no timer: the tasklet just yields
/// (like [`yield_now`]), so other tasklets still get their turn.
///
/// ```
/// use std::time::{Duration, Instant};
/// tasklet::dispatch(|| {
///     let deadline = Instant::now() + Duration::from_millis(5);
///     tasklet::sleep_until(deadline);
///     assert!(Instant::now() >= deadline);
/// });
/// ```
#[inline]
#[track_caller]
pub fn sleep_until(deadline: Instant) {
    if Instant::now() >= deadline {
        return yield_now();
    }
    park_until(deadline)
}

/// Parks the current tasklet until `deadline` (which is normally in the future).
#[inline]
#[track_caller]
fn park_until(deadline: Instant) {
    let r = context::try_with(
        #[inline(always)]
        |d| loop {
            match d.park_on(Some(deadline), WaitOn::Sleep) {
                Ok(Wake::TimedOut) | Err(_) => return,
                Ok(Wake::Unparked) => {
                    if Instant::now() >= deadline {
                        return;
                    }
                }
            }
        },
    );
    if r.is_none() {
        context::outside_api("tasklet::sleep")
    }
}

/// Lets every other ready tasklet run, then continues (concurrence `Tasklet.yield_`).
///
/// The caller goes to the back of the ready queue; I/O and timers are polled
/// at least once before it runs again.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// tasklet::dispatch(|| {
///     let log = Rc::new(RefCell::new(Vec::new()));
///     let l = log.clone();
///     let h = tasklet::spawn(move || l.borrow_mut().push("child"));
///     log.borrow_mut().push("parent before");
///     tasklet::yield_now();
///     log.borrow_mut().push("parent after");
///     h.join().unwrap();
///     assert_eq!(*log.borrow(), ["parent before", "child", "parent after"]);
/// });
/// ```
#[inline]
#[track_caller]
pub fn yield_now() {
    // Inlinable, so a loop that yields keeps its registers saved across
    // iterations instead of saving them in a call per yield.
    let r = context::try_with(
        #[inline(always)]
        |d| d.yield_now(),
    );
    if r.is_none() {
        context::outside_api("tasklet::yield_now")
    }
}

/// The error of [`timeout`]: the deadline passed before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(_: Elapsed) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "deadline has elapsed")
    }
}

/// Runs `f` in the current tasklet, interrupting it if it takes longer than `d`
/// (gevent `Timeout`).
///
/// Whatever blocking call `f` is in when `d` passes (sleep, socket I/O, join,
/// a channel…) is interrupted and `f` is unwound, running destructors; the
/// result is then `Err(Elapsed)`. Cooperative: code that never blocks cannot
/// be interrupted. Timeouts nest; the outermost expired one wins.
///
/// The interruption is a panic payload raised with `resume_unwind` (nothing is
/// printed). If code inside `f` catches it with `catch_unwind` and carries on,
/// its next blocking call raises it again (after a yield), and `timeout` still returns
/// `Err(Elapsed)`: rethrow payloads you do not recognise.
///
/// ```
/// use std::time::Duration;
/// tasklet::dispatch(|| {
///     let r = tasklet::timeout(Duration::from_millis(10), || tasklet::sleep(Duration::from_secs(10)));
///     assert!(r.is_err());
///     let r = tasklet::timeout(Duration::from_secs(10), || 7);
///     assert_eq!(r, Ok(7));
/// });
/// ```
#[track_caller]
pub fn timeout<F, T>(d: Duration, f: F) -> Result<T, Elapsed>
where
    F: FnOnce() -> T,
{
    let Some(deadline) = Instant::now().checked_add(d) else {
        return Ok(f());
    };
    timeout_at(deadline, f)
}

/// Like [`timeout`], with an absolute deadline.
#[track_caller]
pub fn timeout_at<F, T>(deadline: Instant, f: F) -> Result<T, Elapsed>
where
    F: FnOnce() -> T,
{
    let Some((task, id, key, during_unwind)) = context::try_with(|d| {
        let task = d.current_task();
        // A scope opened while the tasklet unwinds (in a destructor) cannot
        // be raised: that unwind would leave the destructor (an abort). Its
        // expiry makes the scope's blocking calls fail instead.
        let during_unwind = task.settle(false) != task::Unwinding::No;
        let id = d.next_timeout_id();
        let action = if during_unwind {
            TimerAction::InterruptUnwinding(task.clone(), id)
        } else {
            TimerAction::Interrupt(task.clone(), id)
        };
        let key = d.hub.timers.borrow_mut().insert(deadline, action);
        (task, id, key, during_unwind)
    }) else {
        context::outside_api("tasklet::timeout")
    };
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    context::with(|d| d.hub.timers.borrow_mut().cancel(key));
    let mine = Some(Interrupt::Timeout(id));
    let mut expired = false;
    if task.interrupt.get() == mine {
        task.interrupt.set(None);
        expired = true;
    }
    if during_unwind && task.unwind_timeout.get().map(NonZeroU64::get) == Some(id) {
        task.unwind_timeout.set(None);
        expired = true;
    }
    match r {
        Ok(v) if expired => {
            // Expired, but its blocking calls failed rather than unwound.
            drop(v);
            Err(Elapsed(()))
        }
        Ok(v) => Ok(v),
        Err(payload) => {
            if matches!(payload.downcast_ref::<Unwind>(), Some(Unwind(i, _)) if Some(*i) == mine) {
                // This scope's own unwind is over. It was raised while the
                // tasklet was known not to be unwinding, which it is again.
                // A kill or an outer timeout that replaced this scope's
                // interrupt while a destructor blocked during the unwind
                // stays pending.
                drop(payload);
                task.unwinding.set(task::Unwinding::No);
                Err(Elapsed(()))
            } else {
                task::reraise(payload)
            }
        }
    }
}

/// Spawns a tasklet that runs `f` after `delay` (Twisted `callLater`, gevent
/// `spawn_later`). Killing it before then cancels it.
///
/// ```
/// use std::time::Duration;
/// tasklet::dispatch(|| {
///     let h = tasklet::spawn_later(Duration::from_millis(5), || "later");
///     assert_eq!(h.join().unwrap(), "later");
/// });
/// ```
#[track_caller]
pub fn spawn_later<F, T>(delay: Duration, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    task::spawn(move || {
        sleep(delay);
        f()
    })
}

/// Spawns a tasklet that calls `f` until it returns `ControlFlow::Break` or
/// the tasklet is killed (concurrence `Tasklet.loop`).
///
/// If an iteration did not block, the tasklet yields before the next one, so a
/// busy loop cannot starve the others.
///
/// ```
/// use std::ops::ControlFlow;
/// tasklet::dispatch(|| {
///     let mut n = 0;
///     let h = tasklet::spawn_loop(move || {
///         n += 1;
///         if n == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
///     });
///     h.join().unwrap();
/// });
/// ```
#[track_caller]
pub fn spawn_loop<F>(mut f: F) -> JoinHandle<()>
where
    F: FnMut() -> ControlFlow<()> + 'static,
{
    task::spawn(move || loop {
        let before = context::with(|d| d.current_header().epoch.get());
        if f().is_break() {
            return;
        }
        let after = context::with(|d| d.current_header().epoch.get());
        if before == after {
            yield_now();
        }
    })
}
