//! [`StackInfo`]: what the stack overflow handler ([`crate::overflow`])
//! needs to know of the running tasklet's stack, kept in its header.

use super::TaskletStack;

/// The guard page and size of one tasklet's stack, read by the overflow
/// signal handler. The tasklet's id and name, which the handler's report
/// also prints, it reads from the same header (one copy of each, so an idle
/// tasklet's header stays within its allocation size class).
///
/// The dispatcher keeps it at a stable heap address for the tasklet's whole
/// lifetime.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct StackInfo {
    /// Lowest address of the guard page.
    pub guard_lo: usize,
    /// One past the highest address of the guard page.
    pub guard_hi: usize,
    /// Usable stack size in bytes.
    pub stack_size: usize,
}

impl StackInfo {
    /// Describes `stack`.
    #[inline]
    pub(crate) fn new(stack: &TaskletStack) -> StackInfo {
        let (guard_lo, guard_hi) = stack.guard_range();
        StackInfo {
            guard_lo,
            guard_hi,
            stack_size: stack.size(),
        }
    }
}
