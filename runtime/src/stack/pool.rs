//! The per-thread pool of free stacks and the slabs they are carved from.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use super::advise::{advise_ranges, batches_supported, MADV_POPULATE_WRITE};
use super::{
    map_slab, page_size, pool_limit, unmap, GUARD_INSTALL_UNSUPPORTED, MAX_SLAB_BYTES,
    MAX_SLAB_STACKS, PRIME_BATCH, RELEASE_BATCH, SLAB_BYTES,
};

/// One mapping holding `len / stride` stacks.
pub(super) struct Slab {
    /// Lowest address of the mapping.
    pub(super) base: usize,
    /// Length of the mapping in bytes.
    pub(super) len: usize,
}

/// Free stacks and slabs of one size class. Stacks are identified by their lowest
/// address (the start of their guard page).
pub(super) struct Class {
    /// Usable bytes per stack (page multiple).
    pub(super) usable: usize,
    /// Warm free stacks: memory untouched since last use, reuse costs no syscall.
    pub(super) warm: Vec<usize>,
    /// Freed beyond the warm limit, memory not released yet (at most
    /// [`RELEASE_BATCH`]): reused like warm stacks until released.
    pub(super) freed: Vec<usize>,
    /// Cold stacks whose top page was faulted in (popped in cold order).
    pub(super) primed: Vec<usize>,
    /// Cold free stacks: never touched or released with `MADV_DONTNEED`.
    pub(super) cold: Vec<usize>,
    /// All slabs of this class.
    pub(super) slabs: Vec<Slab>,
    /// Stacks in all slabs of this class.
    pub(super) capacity: usize,
}

/// Per-thread stack pool.
pub(super) struct Pool {
    /// Size classes, searched linearly (there are normally only a few).
    pub(super) classes: Vec<Class>,
    /// Number of warm stacks across all classes.
    pub(super) warm_total: usize,
}

/// Warm stacks in this thread's pool (free, ready for reuse without a syscall).
pub(crate) fn pooled_warm() -> usize {
    POOL.try_with(|p| p.try_borrow().map(|p| p.warm_total).unwrap_or(0))
        .unwrap_or(0)
}

thread_local! {
    /// This thread's stack pool; its destructor unmaps the slabs at thread exit.
    pub(super) static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { classes: Vec::new(), warm_total: 0 })
    };
}

impl Pool {
    /// Returns the index of the class for `usable`, creating it if needed.
    #[inline]
    fn class_index(&mut self, usable: usize) -> usize {
        match self.classes.iter().position(|c| c.usable == usable) {
            Some(i) => i,
            None => {
                self.classes.push(Class {
                    usable,
                    warm: Vec::new(),
                    freed: Vec::new(),
                    primed: Vec::new(),
                    cold: Vec::new(),
                    slabs: Vec::new(),
                    capacity: 0,
                });
                self.classes.len() - 1
            }
        }
    }

    /// Takes a free stack of `usable` bytes, mapping a new slab if necessary.
    /// Returns the stack's lowest address (start of its guard page).
    #[inline]
    pub(super) fn alloc(&mut self, usable: usize) -> io::Result<usize> {
        let ci = self.class_index(usable);
        let class = &mut self.classes[ci];
        if let Some(lo) = class.warm.pop() {
            self.warm_total -= 1;
            return Ok(lo);
        }
        class.alloc_cold()
    }

    /// Returns the stack at `lo` with `usable` bytes to its class's free lists.
    #[inline]
    pub(super) fn free(&mut self, lo: usize, usable: usize) {
        let warm_ok = self.warm_total < pool_limit();
        let Some(class) = self.classes.iter_mut().find(|c| c.usable == usable) else {
            // Cannot happen: the class was created when the stack was allocated.
            // Leaking is the only safe response.
            log::error!("tasklet stack {lo:#x} freed to a pool without its size class; leaking it");
            return;
        };
        if warm_ok {
            class.warm.push(lo);
            self.warm_total += 1;
            return;
        }
        class.freed.push(lo);
        if class.freed.len() >= RELEASE_BATCH {
            class.release_freed();
        }
    }
}

impl Class {
    /// Takes a stack that is not warm: a freed one not yet released, else a
    /// primed one, else a cold one (priming the next batch), else a new slab's.
    #[inline]
    fn alloc_cold(&mut self) -> io::Result<usize> {
        if let Some(lo) = self.freed.pop() {
            return Ok(lo);
        }
        if let Some(lo) = self.primed.pop() {
            return Ok(lo);
        }
        if self.cold.is_empty() {
            self.grow()?;
        }
        self.prime();
        match self.primed.pop().or_else(|| self.cold.pop()) {
            Some(lo) => Ok(lo),
            None => Err(io::Error::other(
                "tasklet stack pool: no stack after growing",
            )),
        }
    }

    /// Moves the next [`PRIME_BATCH`] cold stacks to the primed list, faulting
    /// in the top page of each (the page a new tasklet touches first) with
    /// one `process_madvise` call. Without that call nothing is primed: one
    /// `madvise` per page would cost what the page faults cost.
    #[cold]
    fn prime(&mut self) {
        if !batches_supported() {
            return;
        }
        let page = page_size();
        let n = self.cold.len().min(PRIME_BATCH);
        let batch = self.cold.split_off(self.cold.len() - n);
        // The top page of the stack at `lo` starts at lo + page + usable - page.
        let tops: Vec<(usize, usize)> = batch.iter().map(|&lo| (lo + self.usable, page)).collect();
        // A failure only means the pages fault in on first use instead.
        // SAFETY: each range is the top page of a free stack of this class's
        // slabs: mapped, private anonymous, and referred to by nobody.
        let _ = unsafe { advise_ranges(&tops, MADV_POPULATE_WRITE, false) };
        self.primed = batch;
    }

    /// Releases the memory of the freed stacks (`MADV_DONTNEED`; adjacent
    /// stacks in one range) and moves them to the cold list.
    #[cold]
    fn release_freed(&mut self) {
        if self.freed.is_empty() {
            return;
        }
        let page = page_size();
        let stride = self.usable + page;
        self.freed.sort_unstable();
        // Guard markers survive MADV_DONTNEED, so a run of adjacent stacks is
        // one range, guard pages between them included; mprotect guards are
        // separate mappings, so then each stack is its own range.
        let merge = !GUARD_INSTALL_UNSUPPORTED.load(Ordering::Relaxed);
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for &lo in &self.freed {
            match ranges.last_mut() {
                Some((start, len)) if merge && *start + *len + page == lo => *len += stride,
                _ => ranges.push((lo + page, self.usable)),
            }
        }
        // SAFETY: every range covers only free stacks of this class's slabs
        // (their usable memory and the guard pages between them): mapped,
        // private anonymous, and referred to by no live object.
        if let Err(e) = unsafe { advise_ranges(&ranges, libc::MADV_DONTNEED, true) } {
            log::debug!("madvise(MADV_DONTNEED) on freed tasklet stacks failed: {e}");
        }
        self.cold.append(&mut self.freed);
    }

    /// Maps a new slab and puts its stacks on the cold list, lowest address
    /// last (popped first, so pops go upwards in memory).
    #[cold]
    fn grow(&mut self) -> io::Result<()> {
        let page = page_size();
        let stride = self.usable + page;
        let first = (SLAB_BYTES / stride).max(1);
        // Each slab doubles the class, within the bounds (never below `first`).
        // Under an address-space limit (`ulimit -v`) slabs stay small, so
        // a large one cannot take the last of it from the heap.
        let most = if address_space_limited() {
            first
        } else {
            (MAX_SLAB_BYTES / stride).clamp(first, MAX_SLAB_STACKS.max(first))
        };
        let want = self.capacity.clamp(first, most);
        let mut tries = vec![want];
        if want > first {
            tries.push(first);
        }
        if first > 1 {
            tries.push(1);
        }
        let mut last_err = None;
        for n in tries {
            match map_slab(self.usable, n) {
                Ok(base) => {
                    self.slabs.push(Slab {
                        base,
                        len: n * stride,
                    });
                    self.capacity += n;
                    self.cold.extend((0..n).rev().map(|i| base + i * stride));
                    return Ok(());
                }
                // A smaller request may still fit in a fragmented/limited address space.
                Err(e) => {
                    log::debug!("{e}; retrying with a smaller slab");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("tasklet stack slab: nothing to map")))
    }
}

/// Whether this process has a finite address-space limit (`RLIMIT_AS`).
fn address_space_limited() -> bool {
    static LIMITED: OnceLock<bool> = OnceLock::new();
    *LIMITED.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) };
        rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY
    })
}

/// Releases the memory of every stack this thread's pool holds freed but not
/// yet released (see the module docs); the dispatcher calls it when `dispatch`
/// returns, so no batch stays resident after a mass exit.
pub(crate) fn release_freed() {
    let _ = POOL.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            for class in &mut p.classes {
                class.release_freed();
            }
        }
    });
}

impl Drop for Pool {
    fn drop(&mut self) {
        let page = page_size();
        for class in &mut self.classes {
            let stride = class.usable + page;
            class.slabs.sort_unstable_by_key(|s| s.base);
            let mut free_counts = vec![0usize; class.slabs.len()];
            let free = class.warm.iter().chain(&class.freed).chain(&class.primed);
            for &lo in free.chain(&class.cold) {
                let i = class.slabs.partition_point(|s| s.base <= lo);
                if i > 0 {
                    free_counts[i - 1] += 1;
                }
            }
            for (slab, free) in class.slabs.iter().zip(free_counts) {
                if free == slab.len / stride {
                    // SAFETY: the slab was mapped by `map_slab` with exactly this
                    // base/len and every stack in it is free, so nothing refers to it.
                    unsafe { unmap(slab.base, slab.len) };
                } else {
                    // A live stack still points into this slab (it outlived the pool
                    // during thread-local destruction); it unmaps its own range when
                    // dropped, the rest of the slab is leaked.
                    log::debug!(
                        "tasklet stack slab {:#x} still has live stacks at thread exit; leaking \
                         its free part",
                        slab.base
                    );
                }
            }
        }
    }
}
