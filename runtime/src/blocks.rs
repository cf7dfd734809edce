//! A per-thread cache of small freed heap blocks, in 64-byte size classes.
//!
//! The runtime's two per-tasklet allocations go through it: the tasklet's
//! own block (`task::raw`: header and result slot) and, for `spawn_on`,
//! the cell that carries the closure to the target worker and the outcome
//! back (`remote`). Both are freed as fast as they are made, often many
//! at a time — a thousand `spawn_on` in flight is a thousand cells and a
//! thousand tasklet blocks — which is where `malloc`'s own per-thread
//! cache (seven blocks per size) runs dry and each call costs ~200
//! instructions in its bins, or takes an arena lock when the block was
//! allocated by another thread. Here a warm allocation is a pop from a
//! thread-local list and a free is a push.
//!
//! A block may be freed on any thread (a `spawn_on` cell often is): it
//! joins the freeing thread's cache, or goes back to the allocator. Each
//! thread keeps at most [`BUDGET`] bytes; the rest is returned at once, and
//! everything cached is returned when the thread exits.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::ptr::{self, NonNull};

/// Size granularity of the cache.
const CLASS: usize = 64;
/// Number of cached size classes (blocks up to `CLASS * CLASSES` bytes).
const CLASSES: usize = 8;
/// Bytes of freed blocks one thread keeps: a thousand tasklets in flight
/// (their blocks and their `spawn_on` cells) without going back to
/// `malloc`. What glibc would keep in its bins anyway, so no RSS is lost.
const BUDGET: usize = 1024 * 1024;
/// Alignment of cached blocks (covers every block with an alignment up to
/// 16). Not a cache line: `malloc` pays ~100 bytes per block for 64-byte
/// alignment, which idle tasklets would feel in RSS.
const BLOCK_ALIGN: usize = 16;

thread_local! {
    /// Per size class, a stack of this thread's freed blocks linked through
    /// their first word. Const-initialised without destructor, so the
    /// allocation fast path is a plain TLS access.
    static FREE: [Cell<*mut u8>; CLASSES] = const { [const { Cell::new(ptr::null_mut()) }; CLASSES] };
    /// Bytes the lists hold, across classes.
    static CACHED: Cell<usize> = const { Cell::new(0) };
    /// Returns the cached blocks to the allocator when the thread exits;
    /// touched once per thread, when the first block is cached.
    static RELEASE: Release = const { Release };
}

/// See `RELEASE`.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let _ = CACHED.try_with(|c| c.set(0));
        for c in 0..CLASSES {
            let Ok(mut b) = FREE.try_with(|f| f[c].replace(ptr::null_mut())) else {
                return;
            };
            while !b.is_null() {
                // SAFETY: every block on a free list came from `alloc` with
                // the class layout, is unused, and stores the next block's
                // address in its first (aligned) word.
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
    if cfg!(loom) {
        // Loom's threads share one OS thread, hence one cache: allocate
        // plainly so each model sees only its own allocations.
        return None;
    }
    if layout.align() <= BLOCK_ALIGN && layout.size() <= CLASS * CLASSES && layout.size() > 0 {
        Some((layout.size() - 1) / CLASS)
    } else {
        None
    }
}

/// Bytes of a block of class `c`.
#[inline]
fn class_size(c: usize) -> usize {
    (c + 1) * CLASS
}

fn class_layout(c: usize) -> Layout {
    // Cannot fail: small power-of-two alignment, small size.
    Layout::from_size_align(class_size(c), BLOCK_ALIGN).expect("valid class layout")
}

/// Allocates a block for `layout`, which must not be zero-sized: a cached
/// one of its class if there is one, else from the global allocator
/// (aborting through `handle_alloc_error` if that fails, as `Box` does).
#[inline]
pub(crate) fn alloc(layout: Layout) -> NonNull<u8> {
    debug_assert!(layout.size() > 0, "blocks::alloc of a zero-sized layout");
    let layout = match class_of(layout) {
        Some(c) => {
            let cached = FREE
                .try_with(|f| {
                    let b = f[c].get();
                    if !b.is_null() {
                        // SAFETY: a cached block is unused and holds the
                        // next cached block's address in its first word.
                        f[c].set(unsafe { b.cast::<*mut u8>().read() });
                        CACHED.with(|n| n.set(n.get() - class_size(c)));
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
    // SAFETY: `layout` has a non-zero size (the caller's contract).
    let p = unsafe { alloc::alloc(layout) };
    match NonNull::new(p) {
        Some(p) => p,
        None => alloc::handle_alloc_error(layout),
    }
}

/// Returns a block obtained from [`alloc`] with the same `layout`, on this
/// or any other thread.
///
/// # Safety
/// `p` must come from `alloc(layout)` and not be used afterwards.
#[inline]
pub(crate) unsafe fn free(p: NonNull<u8>, layout: Layout) {
    let Some(c) = class_of(layout) else {
        // SAFETY: allocated with `layout` itself, per the contract.
        unsafe { alloc::dealloc(p.as_ptr(), layout) };
        return;
    };
    let size = class_size(c);
    let kept = CACHED
        .try_with(|n| {
            let cached = n.get();
            if cached + size > BUDGET {
                return false;
            }
            if cached == 0 && RELEASE.try_with(|_| ()).is_err() {
                // The thread is exiting: nothing would free the cache.
                return false;
            }
            n.set(cached + size);
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

/// Drops the `T` in a block from [`alloc`] and frees the block — also
/// when `T`'s destructor panics (the block is freed while unwinding), so a
/// panicking destructor never leaks it.
///
/// # Safety
/// `p` must come from `alloc(Layout::new::<T>())`, hold a live `T` that
/// nothing references any more, and not be used afterwards.
pub(crate) unsafe fn drop_and_free<T>(p: NonNull<T>) {
    struct Free(NonNull<u8>, Layout);
    impl Drop for Free {
        fn drop(&mut self) {
            // SAFETY: the block came from `alloc` with this layout (the
            // caller's contract) and its contents are dropped (or their drop
            // unwound, having dropped every other field): nothing uses it.
            unsafe { free(self.0, self.1) };
        }
    }
    let _free = Free(p.cast(), Layout::new::<T>());
    // SAFETY: the contract: a live `T` nobody references, dropped once.
    unsafe { ptr::drop_in_place(p.as_ptr()) };
}

// Under loom nothing is cached (see `class_of`).
#[cfg(all(test, not(loom)))]
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
        let a = alloc(l);
        // SAFETY: `a` came from alloc(l) and is not used again.
        unsafe { free(a, l) };
        let b = alloc(l);
        assert_eq!(a, b);
        // SAFETY: as above.
        unsafe { free(b, l) };
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let l = Layout::from_size_align(CLASS * CLASSES, 16).unwrap();
        let n = 2 * BUDGET / l.size();
        let blocks: Vec<_> = (0..n).map(|_| alloc(l)).collect();
        for b in blocks {
            // SAFETY: each came from alloc(l) and is freed once.
            unsafe { free(b, l) };
        }
        assert!(CACHED.with(Cell::get) <= BUDGET);
        assert!(
            CACHED.with(Cell::get) + l.size() > BUDGET,
            "the cache fills up to its budget"
        );
    }

    #[test]
    fn drop_and_free_frees_the_block_when_the_destructor_panics() {
        /// A 100-byte value (class 1) whose destructor panics.
        struct Bomb([u8; 100]);
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("bomb with {} bytes", self.0.len());
            }
        }
        let l = Layout::new::<Bomb>();
        let p = alloc(l).cast::<Bomb>();
        // SAFETY: a fresh block of `Bomb`'s layout, written once.
        unsafe { p.as_ptr().write(Bomb([0; 100])) };
        let r = std::panic::catch_unwind(|| {
            // SAFETY: `p` holds a live `Bomb` nobody else references.
            unsafe { drop_and_free(p) }
        });
        assert!(r.is_err(), "the destructor's panic propagates");
        // The block went back to this thread's cache: the next one is it.
        let q = alloc(l);
        assert_eq!(q.as_ptr(), p.as_ptr().cast::<u8>());
        // SAFETY: from alloc(l), unused.
        unsafe { free(q, l) };
    }

    #[test]
    fn a_block_freed_on_another_thread_joins_that_threads_cache() {
        let l = Layout::from_size_align(200, 8).unwrap();
        let a = alloc(l).as_ptr() as usize;
        let reused = std::thread::spawn(move || {
            // SAFETY: allocated above with `l`, handed over, freed once.
            unsafe { free(NonNull::new(a as *mut u8).unwrap(), l) };
            let b = alloc(l);
            let same = b.as_ptr() as usize == a;
            // SAFETY: as above.
            unsafe { free(b, l) };
            same
        })
        .join()
        .unwrap();
        assert!(reused);
    }
}
