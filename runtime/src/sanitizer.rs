//! LeakSanitizer annotations for AddressSanitizer builds (the `sanitizer`
//! feature, `scripts/sanitize.sh`): the only calls into the sanitizer
//! runtime the runtime makes itself (corosensei announces the stack switches).
//!
//! `dispatch` *abandons* a tasklet that outlives its exit (it keeps catching
//! its kill, or a destructor never finishes): its stack is leaked on purpose
//! and never resumed (see `Dispatcher::abandon`). LeakSanitizer does not scan
//! tasklet stacks (they are `mmap`ed slabs, not thread stacks), so everything
//! only the abandoned stack still points to — the task block, its name, the
//! tasklet's locals and a panic payload in flight — would be reported as
//! leaked at process exit. It is not a leak: the memory is deliberately kept
//! alive for as long as the process runs. [`keep_abandoned`] says so.
//!
//! Only compiled with the `sanitizer` feature, which is only for
//! `-Zsanitizer=address` builds: these symbols exist in the ASan runtime only.

use std::ffi::c_void;

use crate::stack::StackInfo;

extern "C" {
    // Declared in compiler-rt's `sanitizer/lsan_interface.h`.
    fn __lsan_register_root_region(p: *const c_void, size: usize);
    fn __lsan_ignore_object(p: *const c_void);
}

/// Tells LeakSanitizer that the abandoned tasklet whose stack `info`
/// describes, and whose task block starts at `block`, is kept alive on
/// purpose: its usable stack becomes a root region (everything its frames
/// point to counts as reachable) and its task block is ignored as a leak
/// (and, like a root, keeps what it points to reachable).
pub(crate) fn keep_abandoned(info: &StackInfo, block: *const c_void) {
    // The usable stack lies right above the guard page; the guard itself must
    // not be scanned (reading it faults: with `MADV_GUARD_INSTALL` it shares
    // its mapping with the stack, so LSan cannot tell it is unreadable).
    let usable = info.guard_hi as *const c_void;
    // SAFETY: `usable..usable + stack_size` is the abandoned tasklet's stack:
    // mapped readable and writable, and never unmapped while the thread that
    // owns the slab lives (the stack is never freed, see `abandon`); LSan
    // only reads the registered range, and ignores parts no longer mapped.
    unsafe { __lsan_register_root_region(usable, info.stack_size) };
    // SAFETY: `block` is the start of a live heap allocation (the task block,
    // kept alive by the references on the leaked stack); the call only tags
    // the allocation in ASan's allocator metadata.
    unsafe { __lsan_ignore_object(block) };
}
