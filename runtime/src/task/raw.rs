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
//! Blocks come from a small per-thread cache of freed blocks, grouped in
//! 64-byte size classes, so a warm spawn + join does not go through `malloc`.
//!
//! This, [`super::header`] and [`crate::dispatcher::context`] are the modules that dereference raw task
//! pointers; everything else uses safe wrappers.

use std::alloc::{self, Layout};
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::{self, NonNull};

use super::error::ResultSlot;
use super::header::TaskPtr;
use super::header::{Header, RawHeader};

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
    /// Frees the block when dropped: also when a destructor of its contents
    /// (the result's, typically) panics, which must not leak the block.
    struct Free(NonNull<u8>, Layout);
    impl Drop for Free {
        fn drop(&mut self) {
            // SAFETY: the block was allocated by `block_alloc` with this
            // layout, and this runs once its contents were dropped (or their
            // drop unwound, having dropped every other field): nothing uses
            // the block any more.
            unsafe { block_free(self.0, self.1) };
        }
    }
    let _free = Free(p.cast(), Layout::new::<Task<T>>());
    let t = p.cast::<Task<T>>().as_ptr();
    // SAFETY: per this function's contract the block holds a live `Task<T>`
    // nobody references any more, so it may be dropped in place once.
    unsafe { ptr::drop_in_place(t) };
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
        let block = block_alloc(Layout::new::<Task<T>>()).cast::<Task<T>>();
        let t = block.as_ptr();
        // SAFETY: `block` is a fresh allocation of `Task<T>`'s size and
        // alignment (see `block_alloc`), so both fields are in bounds and
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

/// Size granularity of the block cache.
const CLASS: usize = 64;
/// Number of cached size classes (blocks up to `CLASS * CLASSES` bytes).
const CLASSES: usize = 8;
/// Freed blocks kept per class and thread.
const PER_CLASS: usize = 256;
/// Alignment of cached blocks (covers every `Task<T>` with
/// `align_of::<T>() <= 16`). Not a cache line: `malloc` pays ~100 bytes per
/// block for 64-byte alignment, which idle tasklets would feel in RSS.
const BLOCK_ALIGN: usize = 16;

thread_local! {
    /// Per size class, a stack of this thread's freed blocks linked through
    /// their first word. Const-initialised without destructor, so the
    /// allocation fast path is a plain TLS access.
    static FREE: [Cell<*mut u8>; CLASSES] = const { [const { Cell::new(ptr::null_mut()) }; CLASSES] };
    /// How many blocks each class holds.
    static FREE_LEN: [Cell<usize>; CLASSES] = const { [const { Cell::new(0) }; CLASSES] };
    /// Returns the cached blocks to the allocator when the thread exits;
    /// touched once per thread, when the first block is cached.
    static RELEASE: Release = const { Release };
}

/// See `RELEASE`.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        for c in 0..CLASSES {
            let Ok(mut b) = FREE.try_with(|f| f[c].replace(ptr::null_mut())) else {
                return;
            };
            let _ = FREE_LEN.try_with(|l| l[c].set(0));
            while !b.is_null() {
                // SAFETY: every block on a free list came from `block_alloc`
                // with the class layout, is unused, and stores the next
                // block's address in its first (aligned) word.
                let next = unsafe { b.cast::<*mut u8>().read() };
                // SAFETY: as above; the block is off the list and freed once.
                unsafe { alloc::dealloc(b, class_layout(c)) };
                b = next;
            }
        }
    }
}

/// The size class serving `layout`, if it is cached.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() <= BLOCK_ALIGN && layout.size() <= CLASS * CLASSES && layout.size() > 0 {
        Some((layout.size() - 1) / CLASS)
    } else {
        None
    }
}

fn class_layout(c: usize) -> Layout {
    // Cannot fail: small power-of-two alignment, small size.
    Layout::from_size_align((c + 1) * CLASS, BLOCK_ALIGN).expect("valid class layout")
}

/// Allocates a block for `layout` (a `Task<T>`'s, never zero-sized).
#[inline]
fn block_alloc(layout: Layout) -> NonNull<u8> {
    let layout = match class_of(layout) {
        Some(c) => {
            let cached = FREE
                .try_with(|f| {
                    let b = f[c].get();
                    if !b.is_null() {
                        // SAFETY: a cached block is unused and holds the
                        // next cached block's address in its first word.
                        f[c].set(unsafe { b.cast::<*mut u8>().read() });
                        FREE_LEN.with(|l| l[c].set(l[c].get() - 1));
                    }
                    b
                })
                .unwrap_or(ptr::null_mut());
            if let Some(b) = NonNull::new(cached) {
                return b;
            }
            class_layout(c)
        }
        None => layout,
    };
    // SAFETY: `layout` has a non-zero size (a `Task` contains a `Header`).
    let p = unsafe { alloc::alloc(layout) };
    match NonNull::new(p) {
        Some(p) => p,
        None => alloc::handle_alloc_error(layout),
    }
}

/// Returns a block obtained from [`block_alloc`] with the same `layout`.
///
/// # Safety
/// `p` must come from `block_alloc(layout)` and not be used afterwards.
#[inline]
unsafe fn block_free(p: NonNull<u8>, layout: Layout) {
    let Some(c) = class_of(layout) else {
        // SAFETY: allocated with `layout` itself, per the contract.
        unsafe { alloc::dealloc(p.as_ptr(), layout) };
        return;
    };
    let kept = FREE_LEN
        .try_with(|l| {
            let n = l[c].get();
            if n >= PER_CLASS {
                return false;
            }
            if n == 0 && RELEASE.try_with(|_| ()).is_err() {
                // The thread is exiting: nothing would free the cache.
                return false;
            }
            l[c].set(n + 1);
            FREE.with(|f| {
                // SAFETY: the block is at least one word, word-aligned and
                // unused from now on (contract), so it can hold the link.
                unsafe { p.as_ptr().cast::<*mut u8>().write(f[c].get()) };
                f[c].set(p.as_ptr());
            });
            true
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: allocated with the class layout, per the contract.
        unsafe { alloc::dealloc(p.as_ptr(), class_layout(c)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_small_layouts_only() {
        assert_eq!(class_of(Layout::from_size_align(1, 8).unwrap()), Some(0));
        assert_eq!(class_of(Layout::from_size_align(64, 8).unwrap()), Some(0));
        assert_eq!(class_of(Layout::from_size_align(65, 8).unwrap()), Some(1));
        assert_eq!(class_of(Layout::from_size_align(512, 16).unwrap()), Some(7));
        assert_eq!(class_of(Layout::from_size_align(513, 8).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(64, 32).unwrap()), None);
    }

    #[test]
    fn blocks_are_reused() {
        let l = Layout::from_size_align(100, 8).unwrap();
        let a = block_alloc(l);
        // SAFETY: `a` came from block_alloc(l) and is not used again.
        unsafe { block_free(a, l) };
        let b = block_alloc(l);
        assert_eq!(a, b);
        // SAFETY: as above.
        unsafe { block_free(b, l) };
    }
}
