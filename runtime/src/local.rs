//! Tasklet-local storage: [`tasklet_local!`](crate::tasklet_local) and
//! [`LocalKey`].
//!
//! **`std::thread_local!` is shared by every tasklet of a dispatcher**: they
//! all run on the same OS thread, so a thread-local set by one tasklet is
//! seen (and overwritten) by all the others. Per-request state (a request
//! id for logging, a database connection checked out for one client) that
//! would be thread-local in a thread-per-connection server belongs in a
//! `tasklet_local!`.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;

use crate::dispatcher::context;
use crate::task::locals::Locals;

/// A key for a tasklet-local value, declared with
/// [`tasklet_local!`](crate::tasklet_local): each tasklet sees its own
/// value, created by the initialiser on its first access and dropped when
/// the tasklet ends — returns, panics or is killed.
///
/// Like [`std::thread::LocalKey`], but per tasklet. Remember that
/// **`thread_local!` values are shared by every tasklet of a dispatcher**
/// (they all run on the dispatcher's thread).
pub struct LocalKey<T: 'static> {
    init: fn() -> T,
}

/// A tasklet-local value was accessed outside a tasklet, or while its
/// tasklet's locals were being dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessError;

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "tasklet-local value accessed outside a tasklet or while the tasklet's locals are dropped",
        )
    }
}

impl std::error::Error for AccessError {}

impl<T: 'static> LocalKey<T> {
    #[doc(hidden)]
    pub const fn new(init: fn() -> T) -> LocalKey<T> {
        LocalKey { init }
    }

    /// Runs `f` with the calling tasklet's value, creating it first if this
    /// is the tasklet's first access.
    ///
    /// # Panics
    /// Outside a tasklet (outside [`dispatch`](crate::dispatch)), or from a
    /// destructor of a tasklet-local value while the tasklet ends. Use
    /// [`try_with`](LocalKey::try_with) there.
    pub fn with<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&T) -> R,
    {
        match self.try_with(f) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`with`](LocalKey::with), returning an error instead of
    /// panicking outside a tasklet or while its locals are dropped.
    pub fn try_with<F, R>(&'static self, f: F) -> Result<R, AccessError>
    where
        F: FnOnce(&T) -> R,
    {
        let task = context::try_with(|_| context::current_task())
            .flatten()
            .ok_or(AccessError)?;
        let locals = &task.locals;
        if locals.destroyed() {
            return Err(AccessError);
        }
        let id = self as *const LocalKey<T> as usize;
        let found = find::<T>(locals, id);
        let p: *const T = match found {
            Some(p) => p,
            None => {
                // The initialiser may use other tasklet-locals: no borrow
                // is held while it runs.
                let value: Box<dyn Any> = Box::new((self.init)());
                // It may have used this key too (recursion): keep the first.
                match find::<T>(locals, id) {
                    Some(p) => p,
                    None => locals
                        .with_values(|values| {
                            values.push((id, value));
                            let v = values.last().map(|(_, v)| v).expect("just pushed");
                            v.downcast_ref::<T>()
                                .expect("tasklet-local of another type")
                                as *const T
                        })
                        .ok_or(AccessError)?,
                }
            }
        };
        // SAFETY: `p` points into a box owned by the running tasklet's
        // `Locals`. Boxes are never removed or replaced before `destroy`,
        // which runs only once the tasklet's body has returned or unwound,
        // so after every `with` frame on its stack is gone (a `with` from a
        // destructor run by `destroy` sees `destroyed` and fails above);
        // `task` keeps the header, and so the `Locals`, alive meanwhile. Only
        // shared references to the value are ever made.
        Ok(f(unsafe { &*p }))
    }
}

/// The value for key `id`, if this tasklet has one.
fn find<T: 'static>(locals: &Locals, id: usize) -> Option<*const T> {
    locals
        .with_values(|values| {
            values.iter().find(|(k, _)| *k == id).map(|(_, v)| {
                v.downcast_ref::<T>()
                    .expect("tasklet-local of another type") as *const T
            })
        })
        .flatten()
}

impl<T: 'static> LocalKey<Cell<T>> {
    /// Sets the calling tasklet's value.
    pub fn set(&'static self, value: T) {
        self.with(|c| c.set(value))
    }

    /// A copy of the calling tasklet's value.
    pub fn get(&'static self) -> T
    where
        T: Copy,
    {
        self.with(Cell::get)
    }

    /// Takes the calling tasklet's value, leaving `T::default()`.
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        self.with(Cell::take)
    }

    /// Replaces the calling tasklet's value, returning the old one.
    pub fn replace(&'static self, value: T) -> T {
        self.with(|c| c.replace(value))
    }
}

impl<T: 'static> LocalKey<RefCell<T>> {
    /// Runs `f` with a shared borrow of the calling tasklet's value.
    pub fn with_borrow<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&T) -> R,
    {
        self.with(|c| f(&c.borrow()))
    }

    /// Runs `f` with a mutable borrow of the calling tasklet's value.
    pub fn with_borrow_mut<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&mut T) -> R,
    {
        self.with(|c| f(&mut c.borrow_mut()))
    }

    /// Sets the calling tasklet's value.
    pub fn set(&'static self, value: T) {
        self.with(|c| *c.borrow_mut() = value)
    }

    /// Takes the calling tasklet's value, leaving `T::default()`.
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        self.with(RefCell::take)
    }

    /// Replaces the calling tasklet's value, returning the old one.
    pub fn replace(&'static self, value: T) -> T {
        self.with(|c| c.replace(value))
    }
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey").finish_non_exhaustive()
    }
}

/// Declares tasklet-local statics, shaped like [`std::thread_local!`]:
/// every tasklet gets its own value of each, created by the initialiser on
/// the tasklet's first access and dropped when the tasklet ends (returns,
/// panics or is killed). Access it with [`LocalKey::with`] (and `set`,
/// `get`, `take`, `replace`, `with_borrow_mut` for `Cell`s and `RefCell`s).
///
/// **Do not use `std::thread_local!` for per-tasklet state**: every tasklet
/// of a dispatcher runs on the same OS thread, so they all share one
/// thread-local value.
///
/// ```
/// use std::cell::Cell;
///
/// tasklet::tasklet_local! {
///     /// The request this tasklet is serving (for log lines).
///     static REQUEST_ID: Cell<u64> = Cell::new(0);
/// }
///
/// tasklet::dispatch(|| {
///     let hs: Vec<_> = (1..=3)
///         .map(|id| tasklet::spawn(move || {
///             REQUEST_ID.set(id);
///             tasklet::yield_now(); // the others set theirs meanwhile
///             REQUEST_ID.get()
///         }))
///         .collect();
///     let ids: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
///     assert_eq!(ids, [1, 2, 3]);
///     assert_eq!(REQUEST_ID.get(), 0); // the main tasklet's own, fresh value
/// });
/// ```
#[macro_export]
macro_rules! tasklet_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $crate::tasklet_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::tasklet_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $(#[$attr])*
        $vis static $name: $crate::LocalKey<$t> = {
            fn __init() -> $t {
                $init
            }
            $crate::LocalKey::new(__init)
        };
    };
}
