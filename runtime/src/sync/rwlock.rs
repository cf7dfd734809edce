//! A fair reader-writer lock whose waiters park.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::semaphore::Semaphore;

/// A reader-writer lock for tasklets (and threads): any number of readers
/// or one writer at a time; waiting parks the tasklet.
///
/// Fair: requests are served in arrival order. A writer waiting behind
/// readers holds up readers that come after it (so a stream of readers
/// cannot starve writers), and the readers queued behind a writer get in
/// together as soon as it is done (so writers cannot starve readers either).
/// Guards release the lock when dropped, also when a kill or
/// [`timeout`](crate::timeout) unwinds the tasklet; a kill or timeout while
/// waiting leaves the queue cleanly. No poisoning: a panic while holding a
/// guard just releases it.
///
/// ```
/// use std::rc::Rc;
/// use tasklet::sync::RwLock;
/// tasklet::dispatch(|| {
///     let config = Rc::new(RwLock::new(vec!["a"]));
///     let c = config.clone();
///     let writer = tasklet::spawn(move || c.write().push("b"));
///     {
///         let r1 = config.read();
///         let r2 = config.read(); // readers share it
///         assert_eq!(r1.len(), r2.len());
///     }
///     writer.join().unwrap();
///     assert_eq!(*config.read(), ["a", "b"]);
/// });
/// ```
pub struct RwLock<T: ?Sized> {
    /// The service queue: every request passes it in arrival order (FIFO
    /// semaphore), and a writer keeps it until it has the lock.
    order: Semaphore,
    /// Held by the writer, or by the readers together (taken by the first,
    /// released by the last).
    access: Semaphore,
    readers: AtomicUsize,
    /// Never contended: the semaphores decide who may touch it.
    data: std::sync::RwLock<T>,
}

/// Shared access to an [`RwLock`]'s value; released when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    // Field order: the data guard goes before the read side is released.
    data: std::sync::RwLockReadGuard<'a, T>,
    _side: ReadSide<'a>,
}

/// Exclusive access to an [`RwLock`]'s value; released when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    data: std::sync::RwLockWriteGuard<'a, T>,
    _side: WriteSide<'a>,
}

/// One reader's share of `access`.
struct ReadSide<'a> {
    readers: &'a AtomicUsize,
    access: &'a Semaphore,
}

impl Drop for ReadSide<'_> {
    fn drop(&mut self) {
        if self.readers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.access.release_raw();
        }
    }
}

/// The writer's hold on `access`.
struct WriteSide<'a>(&'a Semaphore);

impl Drop for WriteSide<'_> {
    fn drop(&mut self) {
        self.0.release_raw();
    }
}

/// Releases a semaphore permit when dropped (the turn in `order`).
struct Turn<'a>(&'a Semaphore);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.release_raw();
    }
}

impl<T> RwLock<T> {
    /// A lock holding `value`.
    pub fn new(value: T) -> RwLock<T> {
        RwLock {
            order: Semaphore::new(1),
            access: Semaphore::new(1),
            readers: AtomicUsize::new(0),
            data: std::sync::RwLock::new(value),
        }
    }

    /// The value, consuming the lock.
    pub fn into_inner(self) -> T {
        self.data
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Takes the lock for reading, parking while a writer holds it or waits
    /// ahead of the caller.
    ///
    /// Never fails and never panics: where a tasklet may not park (a
    /// destructor running late in `dispatch`'s exit, see
    /// [`hub::park`](crate::hub::park)) it waits by yielding, like
    /// [`Semaphore::acquire`](crate::sync::Semaphore::acquire).
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        loop {
            // A refused park yields before it fails: no spinning.
            if let Some(g) = self.read_until(None) {
                return g;
            }
        }
    }

    /// Takes the lock for writing, parking while anybody holds it or waits
    /// ahead of the caller. Never fails, like [`read`](RwLock::read).
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        loop {
            if let Some(g) = self.write_until(None) {
                return g;
            }
        }
    }

    /// Like [`read`](RwLock::read), giving up (`None`) after `timeout`.
    pub fn read_timeout(&self, timeout: Duration) -> Option<RwLockReadGuard<'_, T>> {
        self.read_until(Some(deadline_after(timeout)))
    }

    /// Like [`write`](RwLock::write), giving up (`None`) after `timeout`.
    pub fn write_timeout(&self, timeout: Duration) -> Option<RwLockWriteGuard<'_, T>> {
        self.write_until(Some(deadline_after(timeout)))
    }

    /// Takes the lock for reading if that needs no wait.
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        let turn = self.order.try_acquire()?;
        if self.readers.fetch_add(1, Ordering::AcqRel) == 0 {
            let pending = PendingFirst(&self.readers);
            self.access.try_acquire()?.forget();
            std::mem::forget(pending);
        }
        drop(turn);
        Some(self.read_guard())
    }

    /// Takes the lock for writing if that needs no wait.
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        let turn = self.order.try_acquire()?;
        self.access.try_acquire()?.forget();
        drop(turn);
        Some(self.write_guard())
    }

    /// Mutable access without locking (the `&mut` proves nobody else holds it).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_until(&self, deadline: Option<Instant>) -> Option<RwLockReadGuard<'_, T>> {
        if !self.order.acquire_raw(deadline) {
            return None;
        }
        let turn = Turn(&self.order);
        // Counted from here: if the wait below is left (timeout, kill),
        // dropping `side` uncounts it (and releases nothing it did not take:
        // the count only reaches 0 again with `access` not taken by us).
        if self.readers.fetch_add(1, Ordering::AcqRel) == 0 {
            // First reader: take `access` for all readers.
            let pending = PendingFirst(&self.readers);
            if !self.access.acquire_raw(deadline) {
                return None; // `pending` uncounts; `turn` passes the turn on.
            }
            std::mem::forget(pending);
        }
        drop(turn);
        Some(self.read_guard())
    }

    fn write_until(&self, deadline: Option<Instant>) -> Option<RwLockWriteGuard<'_, T>> {
        if !self.order.acquire_raw(deadline) {
            return None;
        }
        let turn = Turn(&self.order);
        if !self.access.acquire_raw(deadline) {
            return None;
        }
        drop(turn);
        Some(self.write_guard())
    }

    fn read_guard(&self) -> RwLockReadGuard<'_, T> {
        RwLockReadGuard {
            data: self.data.read().unwrap_or_else(PoisonError::into_inner),
            _side: ReadSide {
                readers: &self.readers,
                access: &self.access,
            },
        }
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, T> {
        RwLockWriteGuard {
            data: self.data.write().unwrap_or_else(PoisonError::into_inner),
            _side: WriteSide(&self.access),
        }
    }
}

/// The first reader's count while it waits for `access`: uncounted if it
/// gives up (nobody else can have counted meanwhile: it holds the turn).
struct PendingFirst<'a>(&'a AtomicUsize);

impl Drop for PendingFirst<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30))
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.data
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> Self {
        RwLock::new(T::default())
    }
}

impl<T: ?Sized> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock")
            .field("readers", &self.readers.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
