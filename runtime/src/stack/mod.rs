//! Tasklet stacks: slab-allocated, guard-paged, recycled through a per-thread pool.
//!
//! # Layout
//!
//! Stacks are carved out of *slabs*. A slab is one anonymous
//! `mmap(PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)`
//! holding `K` stacks of the same size class. The first slab of a class holds
//! `max(1, 4 MiB / (size + guard))` stacks (15 of the default 256 KiB); each
//! further slab as many as the class already has, up to 1024 stacks or
//! 256 MiB, so a million stacks take about a thousand slabs, not 67,000
//! (under an address-space limit, `ulimit -v`, every slab is a first one):
//!
//! ```text
//! slab base                                                   slab end
//! | guard | usable stack 0 | guard | usable stack 1 | ... | guard | usable K-1 |
//! ```
//!
//! A coroutine starts up to 1,984 bytes below its stack's page-aligned top,
//! by a hash of the address (cache colouring, see `TaskletStack::colour`),
//! so the hot frames of many parked tasklets do not all share cache sets.
//!
//! Each guard page is installed with `madvise(MADV_GUARD_INSTALL)` (Linux 6.13+),
//! which marks the page in the page tables *without splitting the VMA*, so a slab
//! of `K` stacks costs one memory mapping (and adjacent slabs usually merge into a
//! single VMA). This is what lets 100,000+ live tasklets stay far below
//! `vm.max_map_count` (65530 by default). On older kernels the guard falls back to
//! `mprotect(PROT_NONE)`, which costs two mappings per stack; a warning is logged
//! once per process when that happens.
//!
//! # Batched system calls
//!
//! Where the kernel lets `process_madvise` advise the calling process
//! (`PIDFD_SELF`, any advice), one call takes a whole list of ranges (see
//! [`advise_ranges`]), which is what makes spawning and tearing down a
//! million tasklets cheap:
//!
//! * a new slab's `K` guard pages are installed in one call;
//! * the first page every tasklet touches (the top of its stack) is faulted
//!   in ahead of use, [`PRIME_BATCH`] cold stacks at a time, with
//!   `MADV_POPULATE_WRITE` (one call instead of one page fault per tasklet);
//! * freed stacks beyond the warm limit are released [`RELEASE_BATCH`] at a
//!   time, adjacent ones merged into one range (guard markers survive
//!   `MADV_DONTNEED`).
//!
//! Elsewhere each range gets its own `madvise` (and stacks are not primed).
//!
//! Every slab also gets `madvise(MADV_NOHUGEPAGE)`, so touching one stack page never
//! faults in a 2 MiB transparent huge page: only touched 4 KiB pages cost memory.
//!
//! # Pool
//!
//! Each thread owns a pool (a `thread_local!`) with one entry per size class
//! (normally 1-3 classes, searched linearly). A class keeps:
//!
//! * a *warm* free list: stacks freed while the thread's warm count is below the
//!   pool limit (see [`set_pool_limit`]); they are reused as-is, so a warm
//!   `TaskletStack::new` + drop is a `Vec` pop/push and no syscall;
//! * a *freed* list: stacks freed while the warm count was at the limit, waiting
//!   (at most [`RELEASE_BATCH`] of them) to be released together; reused
//!   like warm ones meanwhile;
//! * a *primed* list: cold stacks whose top page was just faulted in;
//! * a *cold* free list: stacks that were never touched (fresh slab) or whose usable
//!   range was released with `madvise(MADV_DONTNEED)` because the warm limit was
//!   reached; their physical memory belongs to the OS again;
//! * the slabs it owns.
//!
//! Allocation prefers warm stacks, then freed, primed and cold ones, then maps
//! a fresh slab. [`release_freed`] releases the freed lists at once (the
//! dispatcher calls it when `dispatch` returns).
//!
//! Slabs are **not** unmapped while the thread is alive: address space is retained
//! until thread exit, while the physical memory of excess free stacks is returned
//! to the OS through `MADV_DONTNEED`. At thread exit the pool's destructor unmaps
//! every slab whose stacks are all free; a slab that still has a live stack (which
//! can only happen if a stack outlives the pool during thread-local destruction) is
//! left mapped, and such a late stack unmaps just its own range when dropped.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

mod advise;
mod info;
mod pool;

use advise::advise_ranges;
pub(crate) use info::StackInfo;
use pool::POOL;
pub(crate) use pool::{pooled_warm, release_freed};

/// Built-in default usable stack size of a tasklet (256 KiB).
///
/// Only the pages a tasklet actually touches cost physical memory.
pub(crate) const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// Smallest usable stack size handed out; smaller requests are rounded up.
///
/// A panic must be able to reach `join` on any tasklet stack, and the
/// panic hook's work is the deepest thing an ordinary panic does: with
/// `RUST_BACKTRACE=1` (or `full`) std captures and symbolizes the
/// backtrace on the panicking stack, which measured 20–24 KiB (Rust 1.95,
/// x86-64, release build with debug info; 16 KiB overflowed). The floor is
/// twice that. Only touched pages cost memory, so the floor costs address
/// space, not RAM.
pub(crate) const MIN_STACK_SIZE: usize = 48 * 1024;

/// Default bound on the number of warm (not yet released) free stacks per thread.
pub(crate) const POOL_WARM_LIMIT: usize = 1024;

/// Target size of a class's first slab; it holds `max(1, SLAB_BYTES / stride)` stacks.
const SLAB_BYTES: usize = 4 * 1024 * 1024;

/// Most stacks in one slab (also the kernel's `IOV_MAX`, so one slab's guards
/// fit one `process_madvise` call).
const MAX_SLAB_STACKS: usize = 1024;

/// Largest slab mapping grown to (a first slab may be larger: one huge stack).
const MAX_SLAB_BYTES: usize = 256 * 1024 * 1024;

/// Cold stacks whose top page is faulted in together (see the module docs).
pub(crate) const PRIME_BATCH: usize = 32;

/// Freed stacks released together (see the module docs).
pub(crate) const RELEASE_BATCH: usize = 64;

/// Largest usable stack size accepted (1 TiB); anything larger is certainly a bug.
const MAX_STACK_SIZE: usize = 1 << 40;

/// Name of the environment variable that overrides [`DEFAULT_STACK_SIZE`].
const STACK_SIZE_ENV: &str = "TASKLET_STACK_SIZE";

/// `madvise` advice that installs guard markers (Linux 6.13+); not in every libc release.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Process-wide default usable stack size; 0 means "not initialised yet".
static DEFAULT_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Guards the one-time read of [`STACK_SIZE_ENV`].
static ENV_INIT: Once = Once::new();

/// Process-wide bound on warm free stacks per thread pool.
static WARM_LIMIT: AtomicUsize = AtomicUsize::new(POOL_WARM_LIMIT);

/// Set once `MADV_GUARD_INSTALL` has been found unsupported; later slabs go
/// straight to the `mprotect` fallback.
static GUARD_INSTALL_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Ensures the `mprotect` fallback warning is logged once per process.
static GUARD_FALLBACK_WARNED: Once = Once::new();

/// Cached system page size.
static PAGE_SIZE: OnceLock<usize> = OnceLock::new();

/// Returns the system page size (queried with `sysconf` once, then cached).
pub(crate) fn page_size() -> usize {
    *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            n as usize
        } else {
            4096
        }
    })
}

/// Sets the process-wide default usable stack size for tasklets that do not ask
/// for a specific size.
///
/// `0` restores [`DEFAULT_STACK_SIZE`]. The value is rounded up to whole pages
/// (and to at least [`MIN_STACK_SIZE`]) when a stack is allocated. An explicit call
/// takes precedence over the `TASKLET_STACK_SIZE` environment variable.
// Part of the configuration API; allowed until the public builder calls it.
#[allow(dead_code)]
pub(crate) fn set_default_stack_size(bytes: usize) {
    // Make sure a later lazy env read cannot overwrite the explicit setting.
    ENV_INIT.call_once(|| {});
    let bytes = if bytes == 0 {
        DEFAULT_STACK_SIZE
    } else {
        bytes
    };
    DEFAULT_SIZE.store(bytes, Ordering::Relaxed);
}

/// Returns the process-wide default usable stack size in bytes (before rounding).
///
/// On first use it is initialised from the `TASKLET_STACK_SIZE` environment
/// variable (plain bytes or a `k`/`K`/`m`/`M` suffix) if set; an unparseable value
/// logs one warning and [`DEFAULT_STACK_SIZE`] is used.
pub(crate) fn default_stack_size() -> usize {
    let v = DEFAULT_SIZE.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    ENV_INIT.call_once(|| {
        let size = match std::env::var_os(STACK_SIZE_ENV) {
            None => DEFAULT_STACK_SIZE,
            Some(raw) => match raw.to_str().and_then(parse_size) {
                Some(n) => n,
                None => {
                    log::warn!(
                        "ignoring invalid {STACK_SIZE_ENV}={raw:?} (expected bytes, optionally \
                         with a k/K or m/M suffix, e.g. 512k); using {DEFAULT_STACK_SIZE} bytes"
                    );
                    DEFAULT_STACK_SIZE
                }
            },
        };
        // Only fill in if nobody set a value explicitly in the meantime.
        let _ = DEFAULT_SIZE.compare_exchange(0, size, Ordering::Relaxed, Ordering::Relaxed);
    });
    match DEFAULT_SIZE.load(Ordering::Relaxed) {
        0 => DEFAULT_STACK_SIZE,
        v => v,
    }
}

/// Parses a stack size: decimal bytes with an optional `k`/`K` (KiB) or `m`/`M`
/// (MiB) suffix. Returns `None` for empty, zero, malformed or overflowing values.
pub(crate) fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1024),
        b'm' | b'M' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits.parse::<usize>().ok()?.checked_mul(mult)?;
    (n > 0 && n <= MAX_STACK_SIZE).then_some(n)
}

/// Sets the process-wide bound on *warm* free stacks kept by each thread's pool.
///
/// Freed stacks beyond this many (per thread, summed over size classes) have their
/// memory released with `MADV_DONTNEED` before being kept for reuse. Lowering the
/// limit does not trim already-warm stacks; it applies to subsequent frees.
pub(crate) fn set_pool_limit(n: usize) {
    WARM_LIMIT.store(n, Ordering::Relaxed);
}

/// Returns the current warm-stack bound (see [`set_pool_limit`]).
pub(crate) fn pool_limit() -> usize {
    WARM_LIMIT.load(Ordering::Relaxed)
}

/// Rounds a requested usable size to the size class actually allocated:
/// `0` means the default, then at least [`MIN_STACK_SIZE`], rounded up to pages.
pub(crate) fn round_stack_size(requested: usize) -> io::Result<usize> {
    let requested = if requested == 0 {
        default_stack_size()
    } else {
        requested
    };
    if requested > MAX_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tasklet stack size {requested} bytes is too large (max {MAX_STACK_SIZE})"),
        ));
    }
    let page = page_size();
    let n = requested.max(MIN_STACK_SIZE);
    Ok(n.div_ceil(page) * page)
}

/// Error returned when the kernel refuses to map memory for a slab of stacks.
#[derive(Debug)]
struct StackAllocError {
    /// Bytes requested from `mmap`.
    bytes: usize,
    /// Number of stacks the mapping would have held.
    stacks: usize,
    /// Usable size of each stack.
    stack_size: usize,
    /// The raw OS error.
    source: io::Error,
}

impl fmt::Display for StackAllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failed to mmap {} bytes for {} tasklet stack(s) of {} bytes: {}; likely causes: \
             the vm.max_map_count limit (/proc/sys/vm/max_map_count) or address-space/overcommit \
             limits (ulimit -v, vm.overcommit_memory)",
            self.bytes, self.stacks, self.stack_size, self.source
        )
    }
}

impl std::error::Error for StackAllocError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Unmaps `[addr, addr + len)`, logging (never panicking) on failure.
///
/// # Safety
///
/// The range must be a mapping (or part of one) owned by this module that no live
/// object refers to.
unsafe fn unmap(addr: usize, len: usize) {
    // SAFETY: guaranteed by the caller.
    if unsafe { libc::munmap(addr as *mut libc::c_void, len) } != 0 {
        log::warn!(
            "munmap of tasklet stack memory {addr:#x}+{len} failed: {}",
            io::Error::last_os_error()
        );
    }
}

/// Maps a slab of `n` stacks of `usable` bytes, each preceded by a guard page.
/// Returns the slab's base address.
fn map_slab(usable: usize, n: usize) -> io::Result<usize> {
    let page = page_size();
    let stride = usable + page;
    let len = stride * n;
    // SAFETY: a fresh anonymous mapping at a kernel-chosen address; it does not
    // alias any existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let source = io::Error::last_os_error();
        return Err(io::Error::new(
            source.kind(),
            StackAllocError {
                bytes: len,
                stacks: n,
                stack_size: usable,
                source,
            },
        ));
    }
    let base = p as usize;
    // SAFETY: [base, base + len) is the mapping just created and owned by us.
    if unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) } != 0 {
        // E.g. a kernel built without THP: nothing to opt out of.
        log::debug!(
            "madvise(MADV_NOHUGEPAGE) on tasklet stack slab failed: {}",
            io::Error::last_os_error()
        );
    }
    let guards: Vec<(usize, usize)> = (0..n).map(|i| (base + i * stride, page)).collect();
    let batched = if n > 1 && !GUARD_INSTALL_UNSUPPORTED.load(Ordering::Relaxed) {
        // SAFETY: the guard pages lie in the slab just mapped, which nothing
        // uses yet; guard markers only make them fault on access.
        unsafe { advise_ranges(&guards, MADV_GUARD_INSTALL, false) }.unwrap_or(0)
    } else {
        0
    };
    for &(guard, guard_len) in &guards[batched..] {
        if let Err(e) = install_guard(guard, guard_len) {
            // SAFETY: the slab was mapped above and nothing refers to it yet.
            unsafe { unmap(base, len) };
            return Err(e);
        }
    }
    Ok(base)
}

/// Makes `[addr, addr + len)` (inside a fresh slab) a guard region.
fn install_guard(addr: usize, len: usize) -> io::Result<()> {
    if !GUARD_INSTALL_UNSUPPORTED.load(Ordering::Relaxed) {
        // SAFETY: the range lies within a private anonymous slab we just mapped and
        // that nothing uses yet; guard markers only make it fault on access.
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, MADV_GUARD_INSTALL) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            // Unexpected (e.g. EAGAIN/ENOMEM under memory pressure): fall back for
            // this page only and keep trying MADV_GUARD_INSTALL for later slabs.
            log::debug!("madvise(MADV_GUARD_INSTALL) failed: {err}; using mprotect");
        } else {
            GUARD_INSTALL_UNSUPPORTED.store(true, Ordering::Relaxed);
            GUARD_FALLBACK_WARNED.call_once(|| {
                log::warn!(
                    "madvise(MADV_GUARD_INSTALL) is not supported (Linux < 6.13?): tasklet stack \
                     guard pages fall back to mprotect, so each stack costs two memory mappings \
                     and live tasklets are limited by vm.max_map_count (about 32k with the \
                     default 65530)"
                );
            });
        }
    }
    // SAFETY: same range as above; PROT_NONE only makes it inaccessible.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_NONE) } != 0 {
        let source = io::Error::last_os_error();
        return Err(io::Error::new(
            source.kind(),
            format!(
                "failed to mprotect a tasklet stack guard page: {source}; likely cause: the \
                 vm.max_map_count limit (/proc/sys/vm/max_map_count)"
            ),
        ));
    }
    Ok(())
}

/// One tasklet stack: a guard page followed by `size()` usable bytes.
///
/// Dropping it returns it to the pool of the thread that allocated it, which is why
/// it is `!Send`.
///
/// Two words (the guard page's address is derived), so moving one — and an
/// `Option` or `io::Result` of one, which use the non-zero `top` as niche —
/// is a single 16-byte copy.
pub(crate) struct TaskletStack {
    /// Highest address (exclusive; corosensei asks for it on every resume).
    top: NonZeroUsize,
    /// Usable bytes (page multiple), directly above the guard page.
    usable: usize,
    /// Ties the stack to its thread's pool (`!Send`, `!Sync`).
    _not_send: PhantomData<*const ()>,
}

impl TaskletStack {
    /// Allocates a stack with at least `size` usable bytes (`0` = the process-wide
    /// default, see [`default_stack_size`]), rounded up to whole pages and to at
    /// least [`MIN_STACK_SIZE`].
    ///
    /// Reuses a free stack of the same size class from this thread's pool when
    /// possible (no syscall); otherwise maps a new slab.
    #[inline]
    pub(crate) fn new(size: usize) -> io::Result<TaskletStack> {
        let usable = round_stack_size(size)?;
        let lo = POOL.try_with(|p| p.borrow_mut().alloc(usable));
        let lo = match lo {
            Ok(r) => r?,
            // The pool is being destroyed (thread exit): use a private one-stack slab.
            Err(_) => map_slab(usable, 1)?,
        };
        // Cannot be zero: the range lies inside a successful mmap.
        let top = NonZeroUsize::new(lo + page_size() + usable)
            .ok_or_else(|| io::Error::other("tasklet stack mapped at address 0"))?;
        Ok(TaskletStack {
            top,
            usable,
            _not_send: PhantomData,
        })
    }

    /// Usable size of the stack in bytes (excluding the guard page).
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.usable
    }

    /// Address range `(lo, hi)` of the guard page below the stack (`hi` exclusive).
    #[inline]
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        let lo = self.lo();
        (lo, lo + page_size())
    }

    /// Lowest address: the start of the guard page.
    #[inline]
    fn lo(&self) -> usize {
        self.top.get() - self.usable - page_size()
    }

    /// Highest address of the stack (exclusive; the initial stack pointer).
    #[inline]
    pub(crate) fn top(&self) -> usize {
        self.top.get()
    }
}

impl fmt::Debug for TaskletStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskletStack")
            .field("guard", &format_args!("{:#x}", self.lo()))
            .field("top", &format_args!("{:#x}", self.top()))
            .field("size", &self.usable)
            .finish()
    }
}

/// How many 64-byte steps below the top of its mapping a stack's coroutine
/// may start (see [`TaskletStack::colour`]).
const COLOURS: usize = 32;

impl TaskletStack {
    /// Cache colouring: how far below [`top`](Self::top) the coroutine
    /// starts, a multiple of 64 bytes below 2 KiB picked by a hash of the
    /// stack's address.
    ///
    /// Every stack's top is page aligned, so without it the hottest lines of
    /// every tasklet — the frames of a parked tasklet, the link corosensei
    /// writes at the base on each resume — sit at the same offsets in their
    /// pages, and caches index sets by those offsets: with 1,000 tasklets
    /// parked in the same call they all compete for 1/64 of the L1 and L2
    /// sets. Spreading them over 32 colours multiplies the room they have,
    /// for at most 1,984 bytes of each stack (kept within the top page, so a
    /// tasklet with a shallow stack still touches one page).
    #[inline]
    fn colour(&self) -> usize {
        // Fibonacci hashing of the page number; the top bits are the best mixed.
        let h = (self.top.get() >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize);
        (h >> (usize::BITS - COLOURS.trailing_zeros())) * 64
    }
}

// SAFETY: the stack has a guard page directly below its usable range that faults on
// access, the usable range is at least MIN_STACK_SIZE (48 KiB) >= corosensei's
// MIN_STACK_SIZE plus the colour (< 2 KiB), `base()` is 64-byte and `limit()` page
// aligned (hence STACK_ALIGNMENT aligned), `base()` is the same on every call (a
// function of `top`), and the memory stays mapped and exclusively owned until drop.
unsafe impl corosensei::stack::Stack for TaskletStack {
    #[inline]
    fn base(&self) -> corosensei::stack::StackPointer {
        let base = self.top.get() - self.colour();
        debug_assert_eq!(base % corosensei::stack::STACK_ALIGNMENT, 0);
        // Never zero: above the guard page of a successful mmap.
        NonZeroUsize::new(base).unwrap_or(self.top)
    }

    #[inline]
    fn limit(&self) -> corosensei::stack::StackPointer {
        let lo = self.lo();
        debug_assert_eq!(lo % corosensei::stack::STACK_ALIGNMENT, 0);
        // Never zero: the guard page lies inside a successful mmap.
        NonZeroUsize::new(lo).unwrap_or(self.top)
    }
}

impl Drop for TaskletStack {
    #[inline]
    fn drop(&mut self) {
        let (lo, usable) = (self.lo(), self.usable);
        if POOL.try_with(|p| p.borrow_mut().free(lo, usable)).is_err() {
            // The pool is gone (thread-local destruction). Its destructor left our
            // slab mapped because this stack was live; release just our own range.
            // SAFETY: [lo, top) belongs exclusively to this stack and nothing else
            // refers to it once the stack is dropped.
            unsafe { unmap(lo, page_size() + usable) };
        }
    }
}

#[cfg(test)]
mod tests;
