//! Queue variants (gevent `queue.PriorityQueue`, `LifoQueue`,
//! `JoinableQueue`): shared objects (put them in an `Rc` or `Arc`) rather
//! than channel ends.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::event::Event;
use super::semaphore::Semaphore;
use crate::util::SpinLock;

/// How a queue orders its items.
trait Store<T>: Default {
    fn push(&mut self, v: T);
    fn pop(&mut self) -> Option<T>;
    fn len(&self) -> usize;
}

/// First in, first out.
struct Fifo<T>(VecDeque<T>);
/// Last in, first out.
struct Lifo<T>(Vec<T>);
/// Greatest first; equal items in insertion order.
struct Prio<T>(BinaryHeap<Entry<T>>, u64);

/// A heap entry: the item, then the insertion number (earlier first among
/// equals, so equal priorities stay FIFO).
struct Entry<T>(T, u64);

impl<T: Ord> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl<T: Ord> Eq for Entry<T> {}
impl<T: Ord> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.0.cmp(&other.0).then_with(|| other.1.cmp(&self.1))
    }
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo(VecDeque::new())
    }
}
impl<T> Default for Lifo<T> {
    fn default() -> Self {
        Lifo(Vec::new())
    }
}
impl<T: Ord> Default for Prio<T> {
    fn default() -> Self {
        Prio(BinaryHeap::new(), 0)
    }
}

impl<T> Store<T> for Fifo<T> {
    fn push(&mut self, v: T) {
        self.0.push_back(v)
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}
impl<T> Store<T> for Lifo<T> {
    fn push(&mut self, v: T) {
        self.0.push(v)
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}
impl<T: Ord> Store<T> for Prio<T> {
    fn push(&mut self, v: T) {
        self.1 += 1;
        self.0.push(Entry(v, self.1))
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop().map(|e| e.0)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The shared machinery: items under a spin lock, a semaphore counting
/// items (getters wait on it, in FIFO order) and one counting free room
/// (putters wait on it, bounded queues only). Waits are kill-safe: a permit
/// granted to a waiter that leaves is passed on.
struct Core<T, S> {
    items: SpinLock<S>,
    available: Semaphore,
    room: Option<Semaphore>,
    cap: Option<usize>,
    _t: std::marker::PhantomData<fn(T) -> T>,
}

impl<T, S: Store<T>> Core<T, S> {
    fn new(cap: Option<usize>) -> Self {
        Core {
            items: SpinLock::new(S::default()),
            available: Semaphore::new(0),
            room: cap.map(Semaphore::new),
            cap,
            _t: std::marker::PhantomData,
        }
    }

    fn put_until(&self, v: T, deadline: Option<Instant>) -> Result<(), T> {
        if let Some(room) = &self.room {
            if !room.acquire_raw(deadline) {
                return Err(v);
            }
        }
        self.items.lock().push(v);
        self.available.release_raw();
        Ok(())
    }

    fn try_put(&self, v: T) -> Result<(), T> {
        if let Some(room) = &self.room {
            match room.try_acquire() {
                Some(p) => p.forget(),
                None => return Err(v),
            }
        }
        self.items.lock().push(v);
        self.available.release_raw();
        Ok(())
    }

    fn got(&self) -> T {
        let v = self.items.lock().pop();
        if let Some(room) = &self.room {
            room.release_raw();
        }
        // One permit of `available` per item pushed.
        v.expect("queue item counted but missing")
    }

    fn get_until(&self, deadline: Option<Instant>) -> Option<T> {
        if !self.available.acquire_raw(deadline) {
            return None;
        }
        Some(self.got())
    }

    fn try_get(&self) -> Option<T> {
        self.available.try_acquire()?.forget();
        Some(self.got())
    }

    fn len(&self) -> usize {
        self.items.lock().len()
    }
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30))
}

/// A full queue refused an item (returned inside).
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct Full<T>(pub T);

impl<T> Full<T> {
    /// The item that was not queued.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is full")
    }
}

impl<T> std::error::Error for Full<T> {}

macro_rules! queue_type {
    ($(#[$doc:meta])* $name:ident, $store:ident, [$($bound:tt)*]) => {
        $(#[$doc])*
        pub struct $name<T> {
            core: Core<T, $store<T>>,
        }

        impl<T: $($bound)*> $name<T> {
            /// An unbounded queue: [`put`](Self::put) never waits.
            pub fn new() -> Self {
                $name { core: Core::new(None) }
            }

            /// A queue holding at most `capacity` items: [`put`](Self::put)
            /// parks while it is full (`capacity` 0: every put parks for good,
            /// so use at least 1).
            pub fn bounded(capacity: usize) -> Self {
                $name { core: Core::new(Some(capacity)) }
            }

            /// Adds `item`, parking while the queue is full.
            ///
            /// Never fails: where a tasklet may not park (a destructor
            /// running late in `dispatch`'s exit) it waits by yielding, like
            /// [`Semaphore::acquire`](crate::sync::Semaphore::acquire).
            pub fn put(&self, item: T) {
                let mut item = item;
                // A refused park yields before it fails: no spinning.
                while let Err(v) = self.put_raw(item, None) {
                    item = v;
                }
            }

            /// Adds `item` if there is room now.
            pub fn try_put(&self, item: T) -> Result<(), Full<T>> {
                self.core.try_put(item).map_err(Full)
            }

            /// Like [`put`](Self::put), giving the item back after `timeout`.
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), Full<T>> {
                self.put_raw(item, Some(deadline_after(timeout))).map_err(Full)
            }

            /// Takes the next item, parking while the queue is empty.
            /// Never fails, like [`put`](Self::put).
            pub fn get(&self) -> T {
                loop {
                    if let Some(v) = self.core.get_until(None) {
                        return v;
                    }
                }
            }

            /// Takes the next item if there is one now.
            pub fn try_get(&self) -> Option<T> {
                self.core.try_get()
            }

            /// Like [`get`](Self::get), giving up after `timeout`.
            pub fn get_timeout(&self, timeout: Duration) -> Option<T> {
                self.core.get_until(Some(deadline_after(timeout)))
            }

            /// Number of items queued.
            pub fn len(&self) -> usize {
                self.core.len()
            }

            /// Whether no item is queued.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// The capacity (`None`: unbounded).
            pub fn capacity(&self) -> Option<usize> {
                self.core.cap
            }
        }

        impl<T: $($bound)*> Default for $name<T> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<T: $($bound)*> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &self.len())
                    .field("capacity", &self.core.cap)
                    .finish()
            }
        }
    };
}

queue_type!(
    /// A queue that hands out its greatest item first (gevent
    /// `PriorityQueue`, which hands out the *lowest*: wrap items in
    /// [`std::cmp::Reverse`] for that). Items of equal priority come out in
    /// the order they were put. Waiting getters are served in arrival order.
    ///
    /// ```
    /// use std::cmp::Reverse;
    /// use tasklet::sync::PriorityQueue;
    /// let q = PriorityQueue::new();
    /// q.put((1, "low"));
    /// q.put((9, "urgent"));
    /// q.put((5, "normal"));
    /// assert_eq!(q.get(), (9, "urgent"));
    /// assert_eq!(q.get(), (5, "normal"));
    ///
    /// let jobs = PriorityQueue::new(); // lowest first, like gevent
    /// jobs.put(Reverse(3));
    /// jobs.put(Reverse(1));
    /// assert_eq!(jobs.get().0, 1);
    /// ```
    PriorityQueue,
    Prio,
    [Ord]
);

queue_type!(
    /// A last-in, first-out queue (gevent `LifoQueue`): a stack whose
    /// [`get`](LifoQueue::get) parks while it is empty.
    ///
    /// ```
    /// use tasklet::sync::LifoQueue;
    /// let q = LifoQueue::new();
    /// for i in 1..=3 { q.put(i); }
    /// assert_eq!([q.get(), q.get(), q.get()], [3, 2, 1]);
    /// ```
    LifoQueue,
    Lifo,
    [Sized]
);

/// A FIFO queue that counts unfinished work (gevent `JoinableQueue`):
/// every [`put`](JoinableQueue::put) adds a task, every
/// [`task_done`](JoinableQueue::task_done) (one per item taken, when its
/// work is done) finishes one, and [`join`](JoinableQueue::join) parks until
/// none is left.
///
/// ```
/// use std::rc::Rc;
/// use std::cell::Cell;
/// use tasklet::sync::JoinableQueue;
/// tasklet::dispatch(|| {
///     let q = Rc::new(JoinableQueue::new());
///     let done = Rc::new(Cell::new(0));
///     for _ in 0..2 {
///         let (q, done) = (q.clone(), done.clone());
///         tasklet::spawn(move || loop {
///             let n: u32 = q.get();
///             tasklet::yield_now(); // work
///             done.set(done.get() + n);
///             q.task_done().unwrap();
///         });
///     }
///     for n in 1..=10 { q.put(n); }
///     q.join();
///     assert_eq!(done.get(), 55);
/// });
/// ```
pub struct JoinableQueue<T> {
    core: Core<T, Fifo<T>>,
    /// Items put and not yet marked done.
    unfinished: SpinLock<usize>,
    /// Set while `unfinished` is 0.
    all_done: Event,
}

/// [`JoinableQueue::task_done`] was called more times than items were put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done called more times than items were put")
    }
}

impl std::error::Error for TaskDoneError {}

impl<T> JoinableQueue<T> {
    /// An unbounded queue with no unfinished tasks.
    pub fn new() -> Self {
        Self::with_core(Core::new(None))
    }

    /// A queue holding at most `capacity` items.
    pub fn bounded(capacity: usize) -> Self {
        Self::with_core(Core::new(Some(capacity)))
    }

    fn with_core(core: Core<T, Fifo<T>>) -> Self {
        let all_done = Event::new();
        all_done.set();
        JoinableQueue {
            core,
            unfinished: SpinLock::new(0),
            all_done,
        }
    }

    fn add_task(&self) {
        let mut n = self.unfinished.lock();
        *n += 1;
        if *n == 1 {
            self.all_done.clear();
        }
    }

    fn finish_task(&self) -> Result<(), TaskDoneError> {
        let mut n = self.unfinished.lock();
        if *n == 0 {
            return Err(TaskDoneError);
        }
        *n -= 1;
        if *n == 0 {
            self.all_done.set();
        }
        Ok(())
    }

    fn put_until(&self, item: T, deadline: Option<Instant>) -> Result<(), T> {
        // Counted before it can be taken (a fast consumer's `task_done`
        // must find it counted).
        self.add_task();
        self.core.put_until(item, deadline).inspect_err(|_| {
            let _ = self.finish_task();
        })
    }

    /// Adds `item` (one more unfinished task), parking while the queue is
    /// full. Never fails, like [`LifoQueue::put`].
    pub fn put(&self, item: T) {
        let mut item = item;
        while let Err(v) = self.put_until(item, None) {
            item = v;
        }
    }

    /// Adds `item` if there is room now.
    pub fn try_put(&self, item: T) -> Result<(), Full<T>> {
        self.add_task();
        self.core.try_put(item).map_err(|v| {
            let _ = self.finish_task();
            Full(v)
        })
    }

    /// Like [`put`](Self::put), giving the item back after `timeout`.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), Full<T>> {
        self.put_until(item, Some(deadline_after(timeout)))
            .map_err(Full)
    }

    /// Takes the next item, parking while the queue is empty. Never fails,
    /// like [`LifoQueue::get`].
    pub fn get(&self) -> T {
        loop {
            if let Some(v) = self.core.get_until(None) {
                return v;
            }
        }
    }

    /// Takes the next item if there is one now.
    pub fn try_get(&self) -> Option<T> {
        self.core.try_get()
    }

    /// Like [`get`](Self::get), giving up after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Option<T> {
        self.core.get_until(Some(deadline_after(timeout)))
    }

    /// Marks one task (an item taken earlier) as done; fails if every task
    /// is already done.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.finish_task()
    }

    /// Number of tasks put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        *self.unfinished.lock()
    }

    /// Parks until every task put so far is marked done.
    pub fn join(&self) {
        while self.unfinished_tasks() > 0 {
            self.all_done.wait();
        }
    }

    /// Like [`join`](Self::join), giving up after `timeout`; returns
    /// whether every task is done.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        let deadline = deadline_after(timeout);
        while self.unfinished_tasks() > 0 {
            if !self.all_done.wait_deadline(deadline) {
                return self.unfinished_tasks() == 0;
            }
        }
        true
    }

    /// Number of items queued.
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// Whether no item is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Default for JoinableQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("len", &self.len())
            .field("unfinished", &self.unfinished_tasks())
            .finish()
    }
}

impl<T> LifoQueue<T> {
    fn put_raw(&self, item: T, deadline: Option<Instant>) -> Result<(), T> {
        self.core.put_until(item, deadline)
    }
}

impl<T: Ord> PriorityQueue<T> {
    fn put_raw(&self, item: T, deadline: Option<Instant>) -> Result<(), T> {
        self.core.put_until(item, deadline)
    }
}
