//! A mutual-exclusion lock whose waiters park (gevent `lock.RLock`'s plain sibling).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::PoisonError;
use std::time::Duration;

use super::semaphore::{Semaphore, SemaphorePermit};

/// A mutex for data shared by tasklets (and threads): [`lock`](Mutex::lock)
/// parks the tasklet while another holds it, and may be held across
/// blocking calls (sleep, I/O, channels).
///
/// Waiters get the lock in FIFO order: an unlock hands it straight to the
/// longest waiter, so a tasklet that unlocks and locks again at once queues
/// behind the others instead of starving them.
///
/// It is never poisoned: a holder that is killed or panics releases it as
/// its guard drops, and the next holder sees the data as left.
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use tasklet::sync::Mutex;
/// tasklet::dispatch(|| {
///     let m = Rc::new(Mutex::new(Vec::new()));
///     let hs: Vec<_> = (0..3).map(|i| {
///         let m = m.clone();
///         tasklet::spawn(move || {
///             let mut v = m.lock();
///             v.push(i);
///             tasklet::sleep(Duration::from_millis(1)); // still held
///             v.push(i);
///         })
///     }).collect();
///     for h in hs { h.join().unwrap(); }
///     let v = m.lock();
///     assert!(v.chunks(2).all(|p| p[0] == p[1]));
/// });
/// ```
pub struct Mutex<T: ?Sized> {
    sem: Semaphore,
    data: std::sync::Mutex<T>,
}

/// Holds a [`Mutex`] locked; dereferences to the data; unlocks when dropped.
pub struct MutexGuard<'a, T: ?Sized> {
    // Field order matters: the data lock is released before the permit.
    data: std::sync::MutexGuard<'a, T>,
    _permit: SemaphorePermit<'a>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub fn new(value: T) -> Mutex<T> {
        Mutex {
            sem: Semaphore::named(1, "sync::Mutex"),
            data: std::sync::Mutex::new(value),
        }
    }

    /// The data, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.data
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, parking the tasklet (or blocking the thread, outside a
    /// dispatcher) while another holder has it.
    ///
    /// Never panics, also in a destructor during `dispatch`'s exit: where
    /// the tasklet may not park it waits by yielding (see
    /// [`Semaphore::acquire`](super::Semaphore::acquire)); use
    /// [`lock_timeout`](Mutex::lock_timeout) to give up instead.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let permit = self.sem.acquire();
        self.guard(permit)
    }

    /// Locks if the mutex is free right now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.sem.try_acquire().map(|p| self.guard(p))
    }

    /// Like [`lock`](Mutex::lock), giving up after `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Option<MutexGuard<'_, T>> {
        self.sem.acquire_timeout(timeout).map(|p| self.guard(p))
    }

    /// Whether someone holds the lock right now.
    pub fn is_locked(&self) -> bool {
        self.sem.available_permits() == 0
    }

    /// The data, through a unique borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    #[inline]
    fn guard<'a>(&'a self, permit: SemaphorePermit<'a>) -> MutexGuard<'a, T> {
        // Holding the permit, nobody else can hold the data lock: this never waits.
        let data = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        MutexGuard {
            data,
            _permit: permit,
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.data
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_lock() {
            Some(g) => f.debug_struct("Mutex").field("data", &&*g).finish(),
            None => f.debug_struct("Mutex").field("data", &"<locked>").finish(),
        }
    }
}
