//! Groups of tasklets: [`Pool`] (at most `size` running, gevent `pool.Pool`)
//! and [`Group`] (no limit, gevent `pool.Group`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Deref;
use std::panic;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::hub::{self, Unparker};
use crate::sync::Semaphore;
use crate::task::{self, JoinError, JoinHandle, Tasklet};

struct Inner {
    size: Option<usize>,
    /// Free slots (only for a bounded pool).
    slots: Option<Semaphore>,
    next_key: Cell<u64>,
    members: RefCell<HashMap<u64, Tasklet>>,
    /// Tasklets in `join`, woken when the pool becomes empty.
    idle_waiters: RefCell<Vec<Unparker>>,
}

/// A set of tasklets of which at most `size` run at once (gevent `pool.Pool`).
///
/// [`spawn`](Pool::spawn) parks the caller while the pool is full, so a
/// producer loop naturally throttles itself; [`join`](Pool::join) waits
/// until every member has finished and [`kill`](Pool::kill) kills them all.
/// [`map`](Pool::map) and [`imap_unordered`](Pool::imap_unordered) run a
/// function over an iterator with that bounded concurrency. A `Pool` lives
/// on one dispatcher; clones share the same pool.
///
/// ```
/// use std::time::Duration;
/// tasklet::dispatch(|| {
///     let pool = tasklet::Pool::new(3);
///     // Never more than 3 at a time; results in input order.
///     let squares = pool.map(1..=10u64, |x| {
///         tasklet::sleep(Duration::from_millis(1));
///         x * x
///     });
///     assert_eq!(squares[9], 100);
///     let h = pool.spawn(|| "one more");
///     pool.join();
///     assert_eq!(h.join().unwrap(), "one more");
/// });
/// ```
///
/// A `Pool` is `!Send`, like [`JoinHandle`]: it lives with its tasklets on
/// one dispatcher thread. To stop a pool's work from another thread, run the
/// pool inside a supervising tasklet and kill that one through a `Send`
/// [`RemoteJoinHandle`](crate::RemoteJoinHandle)
/// ([`JoinHandle::into_remote`], or [`spawn_on`](crate::spawn_on)); its
/// unwinding kills the pool's members if it holds them in a guard that calls
/// [`Pool::kill`].
#[derive(Clone)]
pub struct Pool {
    inner: Rc<Inner>,
}

/// A [`Pool`] without a size limit (gevent `pool.Group`): tracks tasklets so
/// they can be joined or killed together. Dereferences to [`Pool`] for its
/// methods.
///
/// ```
/// tasklet::dispatch(|| {
///     let group = tasklet::Group::new();
///     for i in 0..100 {
///         group.spawn(move || tasklet::sleep(std::time::Duration::from_millis(i % 5)));
///     }
///     assert_eq!(group.len(), 100);
///     group.join();
///     assert!(group.is_empty());
/// });
/// ```
#[derive(Clone)]
pub struct Group {
    pool: Pool,
}

impl Group {
    /// An empty group.
    pub fn new() -> Group {
        Group {
            pool: Pool::with_limit(None),
        }
    }
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

impl Deref for Group {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.pool
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group").field("len", &self.len()).finish()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.inner.size)
            .field("len", &self.len())
            .finish()
    }
}

/// Leaves the pool when the member's body ends in any way.
struct Membership {
    inner: Rc<Inner>,
    key: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let empty = {
            let mut m = self.inner.members.borrow_mut();
            m.remove(&self.key);
            m.is_empty()
        };
        if let Some(s) = &self.inner.slots {
            s.release_raw();
        }
        if empty {
            let waiters = std::mem::take(&mut *self.inner.idle_waiters.borrow_mut());
            for w in waiters {
                w.unpark();
            }
        }
    }
}

impl Pool {
    /// A pool running at most `size` tasklets at a time.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn new(size: usize) -> Pool {
        assert!(size > 0, "tasklet::Pool::new: the size must be at least 1");
        Pool::with_limit(Some(size))
    }

    fn with_limit(size: Option<usize>) -> Pool {
        Pool {
            inner: Rc::new(Inner {
                size,
                slots: size.map(Semaphore::new),
                next_key: Cell::new(0),
                members: RefCell::new(HashMap::new()),
                idle_waiters: RefCell::new(Vec::new()),
            }),
        }
    }

    /// The size limit (`None` for a [`Group`]).
    pub fn size(&self) -> Option<usize> {
        self.inner.size
    }

    /// Number of member tasklets that have not finished.
    pub fn len(&self) -> usize {
        self.inner.members.borrow().len()
    }

    /// Whether no member is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many more tasklets could start without waiting (`usize::MAX` for a group).
    pub fn free_count(&self) -> usize {
        match &self.inner.slots {
            Some(s) => s.available_permits(),
            None => usize::MAX,
        }
    }

    /// Spawns `f` as a member, first parking the caller while the pool is full.
    ///
    /// Where the caller may not park (a destructor late in `dispatch`'s
    /// exit, see [`hub::park`]) it waits for a free slot by yielding;
    /// `dispatch` abandons a tasklet still waiting at the end of its exit's
    /// second grace period. A tasklet spawned during that exit is killed
    /// before it runs.
    ///
    /// # Panics
    /// Outside a dispatcher, or if the stack cannot be allocated.
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        if let Some(s) = &self.inner.slots {
            if !s.acquire_raw(None) {
                s.acquire_refused();
            }
        }
        let key = self.inner.next_key.get();
        self.inner.next_key.set(key + 1);
        let membership = Membership {
            inner: self.inner.clone(),
            key,
        };
        // The tasklet does not run before this function returns, so it is
        // registered before it could leave.
        let h = task::spawn(move || {
            let _m = membership;
            f()
        });
        self.inner.members.borrow_mut().insert(key, h.tasklet());
        h
    }

    /// Parks until every member has finished (gevent `Pool.join`).
    pub fn join(&self) {
        self.join_until(None);
    }

    /// Like [`join`](Pool::join), giving up after `timeout`; returns whether the pool is empty.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_until(Instant::now().checked_add(timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.is_empty() {
                return true;
            }
            self.inner
                .idle_waiters
                .borrow_mut()
                .push(hub::current_unparker());
            match hub::park_as(deadline, "a Pool/Group to finish") {
                Ok(hub::Wake::Unparked) => {}
                Ok(hub::Wake::TimedOut) | Err(_) => return self.is_empty(),
            }
        }
    }

    /// Kills every member and waits until they have unwound (gevent `Pool.kill`).
    pub fn kill(&self) {
        let members: Vec<Tasklet> = self.inner.members.borrow().values().cloned().collect();
        for t in &members {
            t.kill();
        }
        let me = crate::current().id();
        if members.iter().any(|t| t.id() == me) {
            // A member killing its own pool: it unwinds at its next blocking call.
            return;
        }
        self.join();
    }

    /// Runs `f` on every item with the pool's concurrency and returns the
    /// results in input order (gevent `Pool.map`).
    ///
    /// A panic in `f` is re-raised in the caller once that item's turn
    /// comes. If the caller is killed, the workers still running are killed.
    /// During `dispatch`'s exit (a destructor of a killed tasklet), where
    /// new tasklets are killed before they run, `f` runs on the items in
    /// the caller, in order, instead of panicking for lack of workers.
    pub fn map<I, F, R>(&self, items: I, f: F) -> Vec<R>
    where
        I: IntoIterator,
        I::Item: 'static,
        F: Fn(I::Item) -> R + 'static,
        R: 'static,
    {
        if shutting_down() {
            // Workers spawned now would be killed before they run: do the
            // work here (a destructor at exit), in order.
            return items.into_iter().map(f).collect();
        }
        let f = Rc::new(f);
        let mut pending = KillOnDrop(VecDeque::new());
        for x in items {
            let f = f.clone();
            pending.0.push_back(self.spawn(move || f(x)));
        }
        let mut out = Vec::with_capacity(pending.0.len());
        while let Some(h) = pending.0.pop_front() {
            out.push(reraise(h.join()));
        }
        out
    }

    /// Runs `f` on every item with the pool's concurrency, yielding results
    /// as they complete (gevent `Pool.imap_unordered`). Items are taken from
    /// `items` lazily, as slots free up.
    ///
    /// A panic in `f` is re-raised from `next`. Dropping the iterator kills
    /// the workers still running. During `dispatch`'s exit, items not yet
    /// started run in the caller (as in [`map`](Pool::map)).
    ///
    /// ```
    /// use std::time::Duration;
    /// tasklet::dispatch(|| {
    ///     let pool = tasklet::Pool::new(4);
    ///     let done: Vec<u64> = pool
    ///         .imap_unordered([30u64, 10, 20], |ms| { tasklet::sleep(Duration::from_millis(ms)); ms })
    ///         .collect();
    ///     assert_eq!(done, [10, 20, 30]);
    /// });
    /// ```
    pub fn imap_unordered<I, F, R>(&self, items: I, f: F) -> ImapUnordered<I::IntoIter, F, R>
    where
        I: IntoIterator,
        I::Item: 'static,
        F: Fn(I::Item) -> R + 'static,
        R: 'static,
    {
        ImapUnordered {
            pool: self.clone(),
            items: items.into_iter(),
            exhausted: false,
            f: Rc::new(f),
            next_key: 0,
            in_flight: HashMap::new(),
            shared: Rc::new(Shared {
                results: RefCell::new(VecDeque::new()),
                consumer: RefCell::new(None),
            }),
        }
    }
}

/// Whether the calling thread's dispatcher is shutting down.
fn shutting_down() -> bool {
    crate::dispatcher::context::try_with(|d| d.is_shutting_down()).unwrap_or(false)
}

fn reraise<T>(r: Result<T, JoinError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(payload) => crate::task::reraise(payload),
            Err(e) => panic!("tasklet::Pool: a worker tasklet ended abnormally: {e}"),
        },
    }
}

/// Kills the handles' tasklets when dropped (the caller was interrupted).
struct KillOnDrop<T: 'static>(VecDeque<JoinHandle<T>>);

impl<T: 'static> Drop for KillOnDrop<T> {
    fn drop(&mut self) {
        for h in &self.0 {
            h.kill();
        }
    }
}

struct Shared<R> {
    /// Finished workers: their key and value (`None`: it panicked or was killed).
    results: RefCell<VecDeque<(u64, Option<R>)>>,
    consumer: RefCell<Option<Unparker>>,
}

/// Delivers a worker's outcome to the iterator, also when it unwinds.
struct Deliver<R> {
    shared: Rc<Shared<R>>,
    key: u64,
    value: Option<R>,
}

impl<R> Drop for Deliver<R> {
    fn drop(&mut self) {
        self.shared
            .results
            .borrow_mut()
            .push_back((self.key, self.value.take()));
        if let Some(u) = self.shared.consumer.borrow_mut().take() {
            u.unpark();
        }
    }
}

/// Iterator returned by [`Pool::imap_unordered`].
pub struct ImapUnordered<I, F, R>
where
    I: Iterator,
{
    pool: Pool,
    items: I,
    exhausted: bool,
    f: Rc<F>,
    next_key: u64,
    in_flight: HashMap<u64, JoinHandle<()>>,
    shared: Rc<Shared<R>>,
}

impl<I, F, R> Iterator for ImapUnordered<I, F, R>
where
    I: Iterator,
    I::Item: 'static,
    F: Fn(I::Item) -> R + 'static,
    R: 'static,
{
    type Item = R;

    fn next(&mut self) -> Option<R> {
        loop {
            let done = self.shared.results.borrow_mut().pop_front();
            if let Some((key, value)) = done {
                let h = self.in_flight.remove(&key);
                match value {
                    Some(v) => return Some(v),
                    None => {
                        if let Some(h) = h {
                            reraise(h.join());
                        }
                        continue;
                    }
                }
            }
            if !self.exhausted && (self.in_flight.is_empty() || self.pool.free_count() > 0) {
                match self.items.next() {
                    Some(x) if shutting_down() => {
                        // See `Pool::map`: a worker would never run.
                        return Some((self.f)(x));
                    }
                    Some(x) => {
                        let key = self.next_key;
                        self.next_key += 1;
                        let f = self.f.clone();
                        let deliver = Deliver {
                            shared: self.shared.clone(),
                            key,
                            value: None,
                        };
                        let h = self.pool.spawn(move || {
                            let mut deliver = deliver;
                            deliver.value = Some(f(x));
                        });
                        self.in_flight.insert(key, h);
                        continue;
                    }
                    None => self.exhausted = true,
                }
            }
            if self.in_flight.is_empty() {
                return None;
            }
            *self.shared.consumer.borrow_mut() = Some(hub::current_unparker());
            if hub::park_as(None, "imap results").is_err() {
                return None;
            }
        }
    }
}

impl<I: Iterator, F, R> Drop for ImapUnordered<I, F, R> {
    fn drop(&mut self) {
        for h in self.in_flight.values() {
            h.kill();
        }
    }
}

impl<I: Iterator, F, R> fmt::Debug for ImapUnordered<I, F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapUnordered")
            .field("in_flight", &self.in_flight.len())
            .field("exhausted", &self.exhausted)
            .finish()
    }
}
