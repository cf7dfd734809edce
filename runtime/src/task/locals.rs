//! A tasklet's `tasklet_local!` values, kept in its header and dropped
//! when it ends (see [`crate::LocalKey`]).

use std::any::Any;
use std::cell::{Cell, RefCell};

/// The tasklet-local values of one tasklet (in its header): created on
/// first use, dropped when the tasklet ends.
#[derive(Default)]
pub(crate) struct Locals {
    /// `(key address, value)`: few per tasklet, so a vector.
    pub(crate) values: RefCell<Vec<(usize, Box<dyn Any>)>>,
    /// The values are being (or have been) dropped: no more access.
    pub(crate) destroyed: Cell<bool>,
}

impl Locals {
    /// Drops every value (the tasklet is ending). A value's destructor that
    /// touches a tasklet-local gets an [`AccessError`](crate::AccessError).
    pub(crate) fn destroy(&self) {
        self.destroyed.set(true);
        // Take them out first: a destructor must not find the vector borrowed.
        let values = std::mem::take(&mut *self.values.borrow_mut());
        // Dropped in reverse order of creation, like locals in a frame.
        for v in values.into_iter().rev() {
            drop(v);
        }
    }
}

/// Drops the running tasklet's locals when dropped: on return and while a
/// kill or panic unwinds it alike.
pub(crate) struct DropLocals<'a>(pub(crate) &'a Locals);

impl Drop for DropLocals<'_> {
    fn drop(&mut self) {
        self.0.destroy();
    }
}
