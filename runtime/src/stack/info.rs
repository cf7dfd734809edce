//! [`StackInfo`]: what the stack overflow handler ([`crate::overflow`])
//! needs to know of the running tasklet's stack, kept in its header.

use std::ptr;

use super::TaskletStack;

/// Overflow-relevant facts about one tasklet, read by the signal handler.
///
/// The dispatcher keeps it at a stable heap address for the tasklet's whole
/// lifetime, and the bytes `name_ptr..name_ptr + name_len` stay valid as long.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct StackInfo {
    /// Lowest address of the guard page.
    pub guard_lo: usize,
    /// One past the highest address of the guard page.
    pub guard_hi: usize,
    /// Usable stack size in bytes.
    pub stack_size: usize,
    /// Tasklet id.
    pub id: u64,
    /// Tasklet name (UTF-8), or null if unnamed.
    pub name_ptr: *const u8,
    /// Length of the name in bytes (0 if unnamed).
    pub name_len: usize,
}

impl StackInfo {
    /// Describes `stack` for tasklet `id` with an optional `name`.
    ///
    /// The caller must keep the name's bytes alive (and unmoved) as long as the
    /// tasklet may run (the overflow handler reads it while its tasklet is current).
    #[inline]
    pub(crate) fn new(stack: &TaskletStack, id: u64, name: Option<&str>) -> StackInfo {
        let (guard_lo, guard_hi) = stack.guard_range();
        let (name_ptr, name_len) = match name {
            Some(n) => (n.as_ptr(), n.len()),
            None => (ptr::null(), 0),
        };
        StackInfo {
            guard_lo,
            guard_hi,
            stack_size: stack.size(),
            id,
            name_ptr,
            name_len,
        }
    }
}
