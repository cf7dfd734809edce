//! Tasklet allocations and the counted references to them.
//!
//! A tasklet lives in one heap block, a [`Task<T>`]: the type-independent
//! [`Header`] first, then the slot its `T` result lands in. The dispatcher,
//! unparkers and timers hold it through [`TaskRef`], a thin pointer to the
//! header with a non-atomic reference count kept *in* the header (like
//! `Rc`, but with the result type erased without a fat pointer); a
//! per-`T` function pointer beside the count drops and frees the block. So cloning
//! a reference from the header of the running tasklet is one increment, and
//! the ready queue, `current` and every reference are one word.
//!
//! Blocks come from [`crate::blocks`], a per-thread cache of freed blocks,
//! so a warm spawn + join does not go through `malloc`.
//!
//! This, [`super::header`] and [`crate::dispatcher::context`] are the modules that dereference raw task
//! pointers; everything else uses safe wrappers.

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr;

use super::error::ResultSlot;
use super::header::TaskPtr;
use super::header::{Header, RawHeader};
use crate::blocks;

/// A tasklet allocation: header first (so a `NonNull<Header>` to it is also
/// a pointer to the `Task<T>`), then the result slot.
#[repr(C)]
pub(crate) struct Task<T> {
    pub(crate) header: Header,
    pub(crate) result: ResultSlot<T>,
}

/// # Safety
/// `p` must point to the header of a live `Task<T>` allocated by
/// `TaskRef::new::<T>` whose reference count has just dropped to zero.
unsafe fn drop_and_free<T>(p: TaskPtr) {
    // SAFETY: per this function's contract the block, from
    // `blocks::alloc(Layout::new::<Task<T>>())` in `TaskRef::new`, holds a
    // live `Task<T>` nobody references any more.
    unsafe { blocks::drop_and_free(p.cast::<Task<T>>()) };
}

/// A counted, non-`Send` reference to a tasklet (like `Rc<Task<T>>` with `T`
/// erased). Dereferences to the tasklet's [`Header`].
pub(crate) struct TaskRef {
    ptr: TaskPtr,
}

impl TaskRef {
    /// Allocates a `Task<T>` with an empty result slot and the header
    /// `make` builds around the [`RawHeader`] it is given (count 1).
    fn new<T>(make: impl FnOnce(RawHeader) -> Header) -> TaskRef {
        let raw = RawHeader {
            refs: Cell::new(1),
            drop_and_free: drop_and_free::<T>,
        };
        let block = blocks::alloc(Layout::new::<Task<T>>()).cast::<Task<T>>();
        let t = block.as_ptr();
        // SAFETY: `block` is a fresh allocation of `Task<T>`'s size and
        // alignment (see `blocks::alloc`), so both fields are in bounds and
        // aligned; writing them field by field lets the header be built in
        // place instead of copied.
        unsafe {
            ptr::addr_of_mut!((*t).result).write(RefCell::new(None));
            ptr::addr_of_mut!((*t).header).write(make(raw));
        }
        TaskRef { ptr: block.cast() }
    }

    /// A new counted reference to the tasklet whose header `p` points to.
    ///
    /// # Safety
    /// `p` must point to the header of a live task (one some `TaskRef`
    /// keeps alive for the duration of this call).
    #[inline]
    pub(crate) unsafe fn clone_from_ptr(p: TaskPtr) -> TaskRef {
        // SAFETY: per the contract the header is alive; the count is a
        // `Cell`, touched only on this thread (`TaskRef` is `!Send`).
        let raw = unsafe { &p.as_ref().raw };
        raw.refs.set(raw.refs.get() + 1);
        TaskRef { ptr: p }
    }

    /// The thin pointer to the header (not counted).
    #[inline]
    pub(crate) fn as_ptr(&self) -> TaskPtr {
        self.ptr
    }

    /// Whether both references point to the same tasklet.
    #[inline]
    pub(crate) fn ptr_eq(a: &TaskRef, b: &TaskRef) -> bool {
        a.ptr == b.ptr
    }
}

impl Deref for TaskRef {
    type Target = Header;

    #[inline]
    fn deref(&self) -> &Header {
        // SAFETY: this reference keeps the count above zero, so the block
        // (and the header at its start) is alive while `self` is borrowed.
        unsafe { self.ptr.as_ref() }
    }
}

impl Clone for TaskRef {
    #[inline]
    fn clone(&self) -> TaskRef {
        // SAFETY: `self` keeps the task alive.
        unsafe { TaskRef::clone_from_ptr(self.ptr) }
    }
}

impl Drop for TaskRef {
    #[inline]
    fn drop(&mut self) {
        let raw = &self.raw;
        let n = raw.refs.get() - 1;
        raw.refs.set(n);
        if n == 0 {
            let free = raw.drop_and_free;
            // SAFETY: this was the last reference to a block made by
            // `TaskRef::new::<T>`, which stored `drop_and_free::<T>`.
            unsafe { free(self.ptr) }
        }
    }
}

/// A [`TaskRef`] that also knows the result type `T`.
pub(crate) struct TypedRef<T> {
    task: TaskRef,
    _t: PhantomData<T>,
}

impl<T> TypedRef<T> {
    /// Allocates a `Task<T>` with an empty result slot and the header
    /// `make` builds around the [`RawHeader`] it is given.
    pub(crate) fn new(make: impl FnOnce(RawHeader) -> Header) -> TypedRef<T> {
        TypedRef {
            task: TaskRef::new::<T>(make),
            _t: PhantomData,
        }
    }

    /// The type-erased reference.
    #[inline]
    pub(crate) fn erased(&self) -> &TaskRef {
        &self.task
    }

    /// The tasklet's result slot.
    #[inline]
    pub(crate) fn result(&self) -> &ResultSlot<T> {
        // SAFETY: a `TypedRef<T>` is only made by `TypedRef::new`, which
        // allocated a `Task<T>` (repr(C), header first), and the counted
        // reference keeps it alive while `self` is borrowed.
        unsafe { &self.task.ptr.cast::<Task<T>>().as_ref().result }
    }
}

impl<T> Clone for TypedRef<T> {
    fn clone(&self) -> TypedRef<T> {
        TypedRef {
            task: self.task.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> Deref for TypedRef<T> {
    type Target = Header;

    #[inline]
    fn deref(&self) -> &Header {
        &self.task
    }
}
