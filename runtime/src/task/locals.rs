//! A tasklet's `tasklet_local!` values, kept in its header and dropped
//! when it ends (see [`crate::LocalKey`]).

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};

/// `(key address, value)` pairs: few per tasklet, so a vector.
pub(crate) type Values = Vec<(usize, Box<dyn Any>)>;

/// The tasklet-local values of one tasklet (in its header): created on
/// first use, dropped when the tasklet ends.
pub(crate) struct Locals {
    /// The values; `None` once they are being (or have been) dropped: no
    /// more access. (One word less than a separate flag, in every
    /// tasklet's header.)
    values: RefCell<Option<Values>>,
}

impl Default for Locals {
    fn default() -> Locals {
        Locals {
            values: RefCell::new(Some(Vec::new())),
        }
    }
}

impl Locals {
    /// Whether the values are being (or have been) dropped.
    pub(crate) fn destroyed(&self) -> bool {
        self.values.borrow().is_none()
    }

    /// Runs `f` on the values, or returns `None` once they are destroyed.
    /// `f` must not touch this tasklet's locals (the vector is borrowed).
    pub(crate) fn with_values<R>(&self, f: impl FnOnce(&mut Values) -> R) -> Option<R> {
        self.values.borrow_mut().as_mut().map(f)
    }

    /// Drops every value (the tasklet has ended: returned, panicked or been
    /// killed, its unwind over). A value's destructor that touches a
    /// tasklet-local gets an [`AccessError`](crate::AccessError); one that
    /// panics does not stop the others from being dropped, and the first
    /// such panic is returned (its payload) for the tasklet's outcome.
    pub(crate) fn destroy(&self) -> Option<Box<dyn Any + Send>> {
        // Take them out first: a destructor must not find the vector borrowed.
        let values = match self.values.borrow_mut().take() {
            Some(values) if !values.is_empty() => values,
            _ => return None, // the common case: no tasklet-local was used
        };
        let mut first = None;
        // Dropped in reverse order of creation, like locals in a frame.
        for v in values.into_iter().rev() {
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(move || drop(v))) {
                first.get_or_insert(p);
            }
        }
        first
    }
}
