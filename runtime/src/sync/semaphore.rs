//! A counting semaphore (gevent `lock.Semaphore`).

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::wait::{block, lock, Blocked, Ticket, WaitQueue};

struct State {
    permits: usize,
    waiters: WaitQueue,
}

/// A counting semaphore: at most `n` holders of a permit at a time.
///
/// [`acquire`](Semaphore::acquire) parks while no permit is free and returns
/// an RAII [`SemaphorePermit`] that gives the permit back when dropped —
/// also when the holder is killed or panics. A waiter that is killed or
/// times out never takes a permit with it.
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
    state: Mutex<State>,
}

impl Semaphore {
    /// A semaphore with `permits` free permits.
    pub fn new(permits: usize) -> Semaphore {
        Semaphore {
            state: Mutex::new(State {
                permits,
                waiters: WaitQueue::new(),
            }),
        }
    }

    /// Number of free permits.
    pub fn available_permits(&self) -> usize {
        lock(&self.state).permits
    }

    /// Takes a permit, parking the tasklet (or blocking the thread, outside
    /// a dispatcher) until one is free.
    ///
    /// # Panics
    /// If no permit is free and the tasklet is being killed at `dispatch`
    /// exit and this is called from a destructor (it cannot park then): use
    /// [`try_acquire`](Semaphore::try_acquire) in destructors.
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        if !self.acquire_raw(None) {
            panic!(
                "Semaphore::acquire: the tasklet is being killed at dispatch exit and \
                 cannot wait (called from a destructor); use try_acquire there"
            );
        }
        SemaphorePermit { sem: self }
    }

    /// Takes a permit if one is free right now.
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        let mut st = lock(&self.state);
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

    /// Adds `n` permits (waking up to `n` waiters).
    pub fn add_permits(&self, n: usize) {
        let mut st = lock(&self.state);
        st.permits += n;
        let mut wake = Vec::new();
        for _ in 0..n {
            match st.waiters.pop() {
                Some(w) => wake.push(w),
                None => break,
            }
        }
        drop(st);
        for w in wake {
            w.wake();
        }
    }

    /// Takes a permit without a guard; `false` if the deadline passed or the
    /// tasklet cannot park. The caller must call [`release_raw`](Self::release_raw).
    pub(crate) fn acquire_raw(&self, deadline: Option<Instant>) -> bool {
        let mut reg = Registration {
            sem: self,
            key: None,
        };
        let mut gave_up = false;
        loop {
            let mut st = lock(&self.state);
            let notified = reg.leave(&mut st);
            if st.permits > 0 {
                st.permits -= 1;
                let next = if notified && st.permits > 0 {
                    st.waiters.pop()
                } else {
                    None
                };
                drop(st);
                if let Some(w) = next {
                    w.wake();
                }
                return true;
            }
            if gave_up {
                return false;
            }
            reg.key = Some(st.waiters.push_current());
            drop(st);
            if block(deadline) != Blocked::Woken {
                gave_up = true;
            }
        }
    }

    /// Returns one permit, waking the longest waiter.
    pub(crate) fn release_raw(&self) {
        let mut st = lock(&self.state);
        st.permits += 1;
        let w = st.waiters.pop();
        drop(st);
        if let Some(w) = w {
            w.wake();
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// A waiter's place in the queue; on unwinding it leaves and passes on a
/// wake-up it was given but did not use, so no permit goes unclaimed.
struct Registration<'a> {
    sem: &'a Semaphore,
    key: Option<Ticket>,
}

impl Registration<'_> {
    fn leave(&mut self, st: &mut State) -> bool {
        match self.key.take() {
            Some(k) => !st.waiters.remove(k.key),
            None => false,
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.key.is_none() {
            return;
        }
        let mut st = lock(&self.sem.state);
        let next = if self.leave(&mut st) && st.permits > 0 {
            st.waiters.pop()
        } else {
            None
        };
        drop(st);
        if let Some(w) = next {
            w.wake();
        }
    }
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
