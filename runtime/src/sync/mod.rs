//! Tasklet-aware synchronisation: channels, events, one-shot results,
//! semaphores and mutexes (gevent's `queue`, `event` and `lock`).
//!
//! Waiting parks the calling tasklet, never the thread: the dispatcher keeps
//! running the others. Every type here is also thread-safe (`Send`/`Sync`
//! when its contents are): a plain OS thread outside any dispatcher may use
//! it too, and then blocks the thread, and tasklets on different
//! dispatchers can share one. On a single dispatcher the internal lock is
//! never contended and waking a tasklet costs no system call; a wake-up
//! that crosses threads goes through the target dispatcher's waker.
//!
//! Kills and [`timeout`](crate::timeout)s interrupt any wait here cleanly:
//! the waiter is removed, a notification it had already received is passed
//! to the next waiter, and a permit or lock it held is released by its guard.

pub(crate) mod wait;

mod async_result;
mod channel;
mod event;
mod mutex;
mod queue;
mod rwlock;
mod select;
mod semaphore;

pub use async_result::AsyncResult;
pub use channel::{
    channel, unbounded, IntoIter, Iter, Receiver, RecvError, RecvTimeoutError, SendError,
    SendTimeoutError, Sender, TryIter, TryRecvError, TrySendError,
};
pub use event::Event;
pub use mutex::{Mutex, MutexGuard};
pub use queue::{Full, JoinableQueue, LifoQueue, PriorityQueue, TaskDoneError};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use select::Select;
pub use semaphore::{BoundedSemaphore, OverReleaseError, Semaphore, SemaphorePermit};
