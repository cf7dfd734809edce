//! Tasklets: ids, join handles, errors, the builder and `spawn`.
//!
//! - [`header`]: the type-independent header every wait and switch works
//!   on, and the switch out of a running tasklet;
//! - [`raw`]: the allocation (header + result slot) and its counted
//!   reference, [`TaskRef`];
//! - [`join`]: waiting on several tasklets (`iwait`, `wait_any`, `killall`).

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::panic::Location;

use crate::dispatcher::context;

pub(crate) mod error;
pub(crate) mod header;
pub(crate) mod id;
mod join;
pub(crate) mod locals;
pub(crate) mod raw;

pub use error::JoinError;
pub(crate) use header::{reraise, Header, Interrupt, State, Unwind, Unwinding, WaitOn};
pub use id::TaskletId;
pub use join::{iwait, killall, wait_any, Iwait, JoinTimeoutError};
pub(crate) use raw::TaskRef;
use raw::TypedRef;

/// An owned permission to join a tasklet (wait for its result) or kill it.
///
/// Dropping the handle detaches the tasklet: it keeps running, and a panic in
/// it is then logged with `log::error!` instead of being returned.
///
/// `JoinHandle` is `!Send` by design: tasklets never leave their
/// dispatcher's thread, and the handle reads the tasklet's state without
/// synchronisation. For another thread (an admin or signal thread, another
/// `Runtime` worker, `async` code) turn it into a `Send`
/// [`RemoteJoinHandle`](crate::RemoteJoinHandle) with
/// [`into_remote`](JoinHandle::into_remote): join, kill, `is_finished`,
/// and `.await`. (Sending a handle to another thread is a compile error
/// that names the handle's `*const ()` marker.)
///
/// ```compile_fail
/// let h = tasklet::dispatch(|| tasklet::spawn(|| 1));
/// std::thread::spawn(move || drop(h)); // error: `*const ()` cannot be sent between threads
/// ```
pub struct JoinHandle<T> {
    /// Makes the handle `!Send` and `!Sync`; see the type's docs.
    _not_send: PhantomData<*const ()>,
    pub(crate) task: HandleRef<T>,
}

/// The task reference inside a [`JoinHandle`]. Its thread-safety is decided
/// by the handle's `_not_send` marker alone, so that the compiler's "cannot
/// be sent between threads" error names that marker rather than runtime
/// internals.
pub(crate) struct HandleRef<T>(pub(crate) TypedRef<T>);

// SAFETY: a `HandleRef` exists only inside a `JoinHandle`, whose
// `PhantomData<*const ()>` marker keeps it `!Send` and `!Sync`; so the task
// reference never actually crosses threads.
unsafe impl<T> Send for HandleRef<T> {}

// SAFETY: as for `Send`: the enclosing `JoinHandle` is `!Sync`.
unsafe impl<T> Sync for HandleRef<T> {}

impl<T> std::ops::Deref for HandleRef<T> {
    type Target = TypedRef<T>;
    fn deref(&self) -> &TypedRef<T> {
        &self.0
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: TypedRef<T>) -> Self {
        JoinHandle {
            _not_send: PhantomData,
            task: HandleRef(task),
        }
    }

    /// Waits for the tasklet to finish and returns its value.
    ///
    /// Parks the calling tasklet (never the thread). Returns `Err` if the
    /// tasklet panicked (with the payload) or was killed. A destructor of a
    /// killed tasklet may `join`; only where the caller may not park (late
    /// in `dispatch`'s exit, see [`hub::park`](crate::hub::park)) `join`
    /// cannot wait and returns `Err` (killed) at once.
    ///
    /// ```
    /// let v = tasklet::dispatch(|| tasklet::spawn(|| 6 * 7).join().unwrap());
    /// assert_eq!(v, 42);
    /// ```
    #[inline]
    #[track_caller]
    pub fn join(self) -> Result<T, JoinError> {
        /// Withdraws the joiner's registration however the wait ends (also
        /// when a kill or timeout unwinds it), so the target does not keep
        /// the joining tasklet alive or wake it later.
        struct Registered<'a>(&'a Header);
        impl Drop for Registered<'_> {
            fn drop(&mut self) {
                self.0.joiner.set(None);
            }
        }
        loop {
            if let Some(r) = self.task.result().borrow_mut().take() {
                return r;
            }
            let Some(me) = context::try_with(|d| d.current_joiner()) else {
                context::outside_api("tasklet::JoinHandle::join")
            };
            self.task.joiner.set(Some(me));
            let registered = Registered(&self.task);
            let target = self.task.id;
            let parked = context::with(|d| d.park_on(None, WaitOn::Join(target)));
            drop(registered);
            if parked.is_err() {
                return Err(JoinError::killed());
            }
        }
    }

    /// Whether the tasklet has finished (returned, panicked or been killed).
    pub fn is_finished(&self) -> bool {
        self.task.state.get() == State::Done
    }

    /// Kills the tasklet (gevent `Greenlet.kill`): it is woken at its blocking
    /// point and unwound, running its destructors; `join` then returns a
    /// killed `JoinError`. Does not wait; `join` afterwards to wait for the
    /// unwinding to finish. A tasklet that has not started yet never runs.
    /// A finished tasklet is left alone.
    ///
    /// The unwind is a Rust panic unwind, with its rule: a destructor that
    /// panics *while* the tasklet unwinds aborts the process, as it would
    /// for any panic. Its [`tasklet_local!`](crate::tasklet_local) values
    /// are dropped after the unwind is over, so a panic there never aborts:
    /// it is the outcome of a tasklet that returned, and is dropped for one
    /// that was killed or panicked.
    ///
    /// ```
    /// use std::time::Duration;
    /// tasklet::dispatch(|| {
    ///     let h = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
    ///     tasklet::yield_now();
    ///     h.kill();
    ///     assert!(h.join().unwrap_err().is_killed());
    /// });
    /// ```
    pub fn kill(&self)
    where
        T: 'static,
    {
        if self.is_finished() {
            return;
        }
        context::try_with(|d| d.interrupt(self.task.erased(), Interrupt::Kill));
    }

    /// The tasklet's id.
    pub fn id(&self) -> TaskletId {
        self.task.id
    }

    /// The tasklet's name, if it was given one with [`Builder::name`].
    pub fn name(&self) -> Option<&str> {
        self.task.name.as_deref()
    }

    /// A handle describing the tasklet (id and name), as [`current`] returns.
    pub fn tasklet(&self) -> Tasklet
    where
        T: 'static,
    {
        Tasklet {
            task: self.task.erased().clone(),
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let header: &Header = &self.task;
        header.detached.set(true);
        if let Some(Err(e)) = &*self.task.result().borrow() {
            if e.is_panic() {
                crate::diag::report(
                    crate::diag::Kind::UnjoinedPanic,
                    log::Level::Error,
                    format_args!(
                        "tasklet {} panicked and its JoinHandle was dropped without join: {e}",
                        header.describe()
                    ),
                );
            }
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Describes a tasklet: its id and name. Returned by [`current`].
#[derive(Clone)]
pub struct Tasklet {
    task: TaskRef,
}

impl Tasklet {
    /// The tasklet's id.
    pub fn id(&self) -> TaskletId {
        self.task.id
    }

    /// The tasklet's name, if any.
    pub fn name(&self) -> Option<&str> {
        self.task.name.as_deref()
    }

    /// Kills the tasklet, like [`JoinHandle::kill`]: it is unwound at its
    /// blocking point. Does nothing to a finished tasklet, or outside the
    /// dispatcher the tasklet lives on.
    pub fn kill(&self) {
        if self.task.state.get() != State::Done {
            context::try_with(|d| d.interrupt(&self.task, Interrupt::Kill));
        }
    }
}

impl fmt::Debug for Tasklet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasklet")
            .field("id", &self.id())
            .field("name", &self.name())
            .finish()
    }
}

/// The tasklet that calls this.
///
/// ```
/// tasklet::dispatch(|| {
///     let h = tasklet::Builder::new()
///         .name("worker")
///         .spawn(|| tasklet::current().name().map(str::to_owned))
///         .unwrap();
///     assert_eq!(h.join().unwrap().as_deref(), Some("worker"));
/// });
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch).
#[track_caller]
pub fn current() -> Tasklet {
    match context::try_with(|d| d.current_task()) {
        Some(task) => Tasklet { task },
        None => context::outside_api("tasklet::current"),
    }
}

/// The live tasklet of the current dispatcher with this id, if any (for
/// operators' tools such as the console's `kill ID`; ids come from
/// [`dump`](crate::dump) and parse with `str::parse`).
///
/// ```
/// tasklet::dispatch(|| {
///     let h = tasklet::spawn(|| tasklet::sleep(std::time::Duration::from_secs(60)));
///     let t = tasklet::lookup(h.id()).unwrap();
///     t.kill();
///     assert!(h.join().unwrap_err().is_killed());
/// });
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch).
#[track_caller]
pub fn lookup(id: TaskletId) -> Option<Tasklet> {
    match context::try_with(|d| d.find(id)) {
        Some(t) => t.map(|task| Tasklet { task }),
        None => context::outside_api("tasklet::lookup"),
    }
}

/// Configures a tasklet before spawning it (std's `thread::Builder`).
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with the dispatcher's default stack size and no name.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the tasklet (shown in logs, panics, overflow reports and the watchdog).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Sets the tasklet's stack size in bytes (rounded up to whole pages and
    /// to at least 48 KiB, room for a panic with `RUST_BACKTRACE` set to
    /// reach `join`; only the pages it touches cost memory).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the tasklet on the current dispatcher.
    ///
    /// Fails with an `io::Error` when its stack cannot be allocated (out of
    /// memory or address space, or `vm.max_map_count` reached).
    ///
    /// ```
    /// tasklet::dispatch(|| {
    ///     let h = tasklet::Builder::new().name("b").stack_size(128 * 1024).spawn(|| 2).unwrap();
    ///     assert_eq!(h.join().unwrap(), 2);
    /// });
    /// ```
    ///
    /// # Panics
    /// Outside [`dispatch`](crate::dispatch).
    #[track_caller]
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let at = Location::caller();
        match context::try_with(|d| {
            d.spawn(self.name, self.stack_size, at, f)
                .map(JoinHandle::new)
        }) {
            Some(r) => r,
            None => context::outside_api("tasklet::Builder::spawn"),
        }
    }
}

/// Spawns a tasklet running `f` on the current dispatcher and returns its handle.
///
/// The new tasklet goes to the back of the ready queue; the caller keeps
/// running until it blocks or yields. `f` need not be `Send`: tasklets never
/// leave their dispatcher's thread.
///
/// ```
/// use std::time::Duration;
/// let total = tasklet::dispatch(|| {
///     let a = tasklet::spawn(|| { tasklet::sleep(Duration::from_millis(20)); 1 });
///     let b = tasklet::spawn(|| 2);
///     a.join().unwrap() + b.join().unwrap()
/// });
/// assert_eq!(total, 3);
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch), or if no stack can be allocated
/// (use [`Builder::spawn`] to get that as an error).
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let at = Location::caller();
    let r = match context::try_with(|d| d.spawn(None, None, at, f).map(JoinHandle::new)) {
        Some(r) => r,
        None => context::outside_api("tasklet::spawn"),
    };
    match r {
        Ok(h) => h,
        Err(e) => panic!("tasklet::spawn: cannot create a tasklet: {e}"),
    }
}

/// Waits for every handle in turn and returns their results in order
/// (gevent `joinall`).
pub fn joinall<T, I>(handles: I) -> Vec<Result<T, JoinError>>
where
    I: IntoIterator<Item = JoinHandle<T>>,
{
    handles.into_iter().map(JoinHandle::join).collect()
}
