//! Stack overflow reporting for tasklets.
//!
//! A tasklet that runs off the bottom of its stack hits the guard page installed by
//! [`crate::stack`]. The `SIGSEGV`/`SIGBUS` handler installed by [`install`] checks
//! whether the faulting address lies in (or just below) the guard page of the
//! tasklet currently running on this thread (published by the dispatcher with
//! [`crate::task::header::set_current`]). If so it writes one line naming the tasklet and its stack size
//! to stderr and aborts; it never tries to resume the tasklet. Any other fault is
//! chained to the previously installed handler (Rust std's own guard-page handler,
//! a sanitizer, ...) or, if there was none, re-raised with the default action.
//!
//! The handler runs while the tasklet stack is exhausted, so it needs an alternate
//! signal stack: every thread that runs tasklets must hold an [`AltStack`].
//!
//! Everything reachable from the handler is async-signal-safe: no allocation, no
//! locks, no `log`, no formatting machinery; only `write(2)`, `sigaction(2)` and
//! `abort(3)`.

use std::cell::UnsafeCell;
use std::io;
use std::marker::PhantomData;
use std::mem::{self, MaybeUninit};
use std::ptr;
use std::sync::Once;

use crate::stack::StackInfo;

/// How far below the guard page a fault is still attributed to an overflow
/// (a large frame may skip past the guard's start before touching memory).
const GUARD_SLACK: usize = 64 * 1024;

/// Usable size of the alternate signal stacks created by [`AltStack::ensure`]
/// (raised to the kernel's minimum if that is larger).
const ALT_STACK_SIZE: usize = 64 * 1024;

/// Longest tasklet name printed by the handler; longer names are truncated.
const MAX_NAME: usize = 128;

/// Returns true if a fault at `addr` is an overflow of the stack described by `info`:
/// `guard_lo - 64 KiB <= addr < guard_hi`.
#[inline]
pub(crate) fn is_guard_fault(info: &StackInfo, addr: usize) -> bool {
    addr >= info.guard_lo.saturating_sub(GUARD_SLACK) && addr < info.guard_hi
}

/// Writes `n` in decimal into the end of `buf`, returning the digits.
/// Allocation-free, so usable in a signal handler.
fn fmt_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Fixed-capacity byte buffer for building the report without allocating.
struct LineBuf {
    /// Storage.
    buf: [u8; 512],
    /// Bytes used.
    len: usize,
}

impl LineBuf {
    /// Appends as much of `s` as fits.
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    /// Appends `n` in decimal.
    fn push_u64(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        self.push(fmt_u64(n, &mut digits));
    }

    /// The bytes written so far.
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Builds the one-line overflow report for the tasklet `id` (named `name`)
/// whose stack `info` describes.
fn report(info: &StackInfo, id: u64, name: Option<&str>) -> LineBuf {
    let mut line = LineBuf {
        buf: [0; 512],
        len: 0,
    };
    line.push(b"tasklet ");
    match name {
        Some(name) if !name.is_empty() => {
            let name = name.as_bytes();
            line.push(b"'");
            line.push(&name[..name.len().min(MAX_NAME)]);
            line.push(b"'");
        }
        _ => line.push(b"<unnamed>"),
    }
    line.push(b" (id ");
    line.push_u64(id);
    line.push(b") overflowed its ");
    line.push_u64(info.stack_size as u64);
    line.push(
        b"-byte stack; give it more with tasklet::Builder::stack_size or TASKLET_STACK_SIZE\n",
    );
    line
}

/// Writes all of `bytes` to stderr with raw `write(2)` (async-signal-safe).
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: bytes is a valid readable slice; fd 2 may be closed, which only
        // makes write fail.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return;
        }
    }
}

/// Storage for a signal action saved before ours was installed.
struct SavedAction(UnsafeCell<MaybeUninit<libc::sigaction>>);

// SAFETY: written exactly once inside `INSTALL.call_once`, before our handler is
// installed (so before the handler can read it); read-only afterwards.
unsafe impl Sync for SavedAction {}

impl SavedAction {
    /// An empty slot.
    const fn new() -> SavedAction {
        SavedAction(UnsafeCell::new(MaybeUninit::zeroed()))
    }
}

/// Action for SIGSEGV in place before [`install`].
static PREV_SEGV: SavedAction = SavedAction::new();
/// Action for SIGBUS in place before [`install`].
static PREV_BUS: SavedAction = SavedAction::new();
/// Makes [`install`] idempotent.
static INSTALL: Once = Once::new();

/// Installs the process-wide SIGSEGV/SIGBUS handler (once; later calls do nothing).
///
/// Previous actions are saved and chained to for faults that are not tasklet stack
/// overflows. Call it before running tasklets; each such thread also needs an
/// [`AltStack`].
pub(crate) fn install() {
    INSTALL.call_once(|| {
        for (sig, slot) in [(libc::SIGSEGV, &PREV_SEGV), (libc::SIGBUS, &PREV_BUS)] {
            // SAFETY: an all-zero sigaction is a valid value to fill in; sigemptyset
            // initialises the mask; the handler has the SA_SIGINFO signature.
            // `slot` is written only here, before the handler exists (see SavedAction).
            unsafe {
                let mut action: libc::sigaction = mem::zeroed();
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    handler;
                action.sa_sigaction = f as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                let prev = (*slot.0.get()).as_mut_ptr();
                if libc::sigaction(sig, &action, prev) != 0 {
                    log::warn!(
                        "cannot install the tasklet stack overflow handler for signal {sig}: {}",
                        io::Error::last_os_error()
                    );
                }
            }
        }
    });
}

/// The SIGSEGV/SIGBUS handler. Async-signal-safe.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; for
    // SIGSEGV/SIGBUS the si_addr union member is the one filled in.
    let addr = unsafe { (*info).si_addr() } as usize;
    let overflowed = crate::task::header::with_current_stack(|stack, id, name| {
        if is_guard_fault(stack, addr) {
            write_stderr(report(stack, id, name).as_bytes());
            true
        } else {
            false
        }
    });
    if overflowed == Some(true) {
        // SAFETY: abort is async-signal-safe and never returns.
        unsafe { libc::abort() };
    }
    chain(sig, info, ctx);
}

/// Forwards a fault that is not a tasklet overflow to the action that was in place
/// before [`install`]; with no previous handler, restores the default action and
/// returns so the faulting instruction re-faults and kills the process normally.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let slot = if sig == libc::SIGBUS {
        &PREV_BUS
    } else {
        &PREV_SEGV
    };
    // SAFETY: the handler only runs after install() filled the slot (see
    // SavedAction); a zeroed slot (failed sigaction) reads as SIG_DFL.
    let prev = unsafe { (*slot.0.get()).assume_init_ref() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // SAFETY: resetting to SIG_DFL with a zeroed sigaction is async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut dfl.sa_mask);
            libc::sigaction(sig, &dfl, ptr::null_mut());
        }
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the saved sa_sigaction is a three-argument handler.
        unsafe {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                mem::transmute(h);
            f(sig, info, ctx);
        }
    } else {
        // SAFETY: without SA_SIGINFO the saved sa_sigaction is a one-argument handler.
        unsafe {
            let f: extern "C" fn(libc::c_int) = mem::transmute(h);
            f(sig);
        }
    }
}

/// Guard for this thread's alternate signal stack.
///
/// If [`AltStack::ensure`] found one already installed (Rust std installs one on
/// the main thread and on threads it spawns) the guard does nothing; otherwise it
/// owns the one it installed and disables and unmaps it on drop. `!Send`: it must
/// be dropped on the thread that created it.
#[derive(Debug)]
pub(crate) struct AltStack {
    /// `(mapping base, mapping length)` if we installed the stack.
    mapping: Option<(usize, usize)>,
    /// Binds the guard to its thread.
    _not_send: PhantomData<*const ()>,
}

impl AltStack {
    /// Makes sure the calling thread has an enabled alternate signal stack,
    /// installing one (64 KiB plus a guard page, at least the kernel's minimum) if
    /// there is none.
    pub(crate) fn ensure() -> io::Result<AltStack> {
        // SAFETY: an all-zero stack_t is valid output storage for sigaltstack.
        let mut old: libc::stack_t = unsafe { mem::zeroed() };
        // SAFETY: querying only (null new stack); `old` is valid for writes.
        if unsafe { libc::sigaltstack(ptr::null(), &mut old) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if old.ss_flags & libc::SS_DISABLE == 0 {
            return Ok(AltStack {
                mapping: None,
                _not_send: PhantomData,
            });
        }

        let page = crate::stack::page_size();
        // SAFETY: getauxval has no preconditions; it returns 0 if the entry is absent.
        let kernel_min = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
        let size = ALT_STACK_SIZE
            .max(libc::SIGSTKSZ)
            .max(kernel_min.saturating_mul(4))
            .div_ceil(page)
            * page;
        let len = size + page;
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as usize;
        let guard = AltStack {
            mapping: Some((base, len)),
            _not_send: PhantomData,
        };
        // SAFETY: the first page of our fresh mapping becomes the guard.
        if unsafe { libc::mprotect(p, page, libc::PROT_NONE) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: the mapping is ours and not yet in use.
            unsafe { libc::munmap(p, len) };
            return Err(err);
        }
        let new = libc::stack_t {
            ss_sp: (base + page) as *mut libc::c_void,
            ss_flags: 0,
            ss_size: size,
        };
        // SAFETY: `new` describes our mapping's writable part, which stays mapped
        // until the guard's Drop disables the alternate stack first.
        if unsafe { libc::sigaltstack(&new, ptr::null_mut()) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: the mapping is ours and was not installed.
            unsafe { libc::munmap(p, len) };
            return Err(err);
        }
        Ok(guard)
    }

    /// True if this guard installed (and owns) the alternate stack.
    #[cfg(test)]
    pub(crate) fn is_owned(&self) -> bool {
        self.mapping.is_some()
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let Some((base, len)) = self.mapping else {
            return;
        };
        // SAFETY: an all-zero stack_t is valid output storage.
        let mut cur: libc::stack_t = unsafe { mem::zeroed() };
        // SAFETY: query only.
        let ok = unsafe { libc::sigaltstack(ptr::null(), &mut cur) } == 0;
        let ours = ok
            && cur.ss_flags & libc::SS_DISABLE == 0
            && (cur.ss_sp as usize) > base
            && (cur.ss_sp as usize) < base + len;
        if ours {
            let disable = libc::stack_t {
                ss_sp: ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: we are not running on the alternate stack (this is ordinary
            // code, not a handler), so disabling it is allowed.
            unsafe { libc::sigaltstack(&disable, ptr::null_mut()) };
        } else if ok && cur.ss_flags & libc::SS_DISABLE == 0 {
            // Someone replaced our stack; theirs stays. Ours is no longer installed.
            log::debug!("alternate signal stack was replaced; unmapping ours only");
        }
        // SAFETY: the mapping is ours and no longer installed as the alt stack.
        if unsafe { libc::munmap(base as *mut libc::c_void, len) } != 0 {
            log::warn!(
                "munmap of alternate signal stack failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::TaskletStack;

    fn info(lo: usize) -> StackInfo {
        StackInfo {
            guard_lo: lo,
            guard_hi: lo + 4096,
            stack_size: 262_144,
        }
    }

    #[test]
    fn integer_formatting() {
        let mut buf = [0u8; 20];
        assert_eq!(fmt_u64(0, &mut buf), b"0");
        assert_eq!(fmt_u64(7, &mut buf), b"7");
        assert_eq!(fmt_u64(262_144, &mut buf), b"262144");
        assert_eq!(fmt_u64(u64::MAX, &mut buf), b"18446744073709551615");
    }

    #[test]
    fn guard_fault_check() {
        let i = info(0x10_0000);
        assert!(is_guard_fault(&i, 0x10_0000));
        assert!(is_guard_fault(&i, 0x10_0fff));
        assert!(!is_guard_fault(&i, 0x10_1000));
        assert!(is_guard_fault(&i, 0x10_0000 - 64 * 1024));
        assert!(!is_guard_fault(&i, 0x10_0000 - 64 * 1024 - 1));
        assert!(!is_guard_fault(&i, 0));
        // No underflow near address 0.
        let low = info(0x1000);
        assert!(is_guard_fault(&low, 0));
    }

    #[test]
    fn report_line() {
        let i = info(0x10_0000);
        assert_eq!(
            report(&i, 42, Some("worker")).as_bytes(),
            b"tasklet 'worker' (id 42) overflowed its 262144-byte stack; give it more with \
              tasklet::Builder::stack_size or TASKLET_STACK_SIZE\n"
        );
        assert!(report(&i, 42, None)
            .as_bytes()
            .starts_with(b"tasklet <unnamed> (id 42) overflowed"));
    }

    #[test]
    fn stack_info_from_stack() {
        let s = TaskletStack::new(0).unwrap();
        let i = StackInfo::new(&s);
        assert_eq!((i.guard_lo, i.guard_hi), s.guard_range());
        assert_eq!(i.stack_size, s.size());
    }

    #[test]
    fn alt_stack_installed_and_removed() {
        std::thread::spawn(|| {
            // std normally gives a thread an alt stack (not when a sanitizer
            // already handles SIGSEGV): ensure() must leave one alone.
            // SAFETY: an all-zero stack_t is valid output storage.
            let mut had: libc::stack_t = unsafe { mem::zeroed() };
            // SAFETY: query only; `had` is valid for writes.
            assert_eq!(unsafe { libc::sigaltstack(ptr::null(), &mut had) }, 0);
            let existing = AltStack::ensure().unwrap();
            assert_eq!(existing.is_owned(), had.ss_flags & libc::SS_DISABLE != 0);
            drop(existing);
            let disable = libc::stack_t {
                ss_sp: ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: not running on the alternate stack. std unmaps its own stack
            // at thread exit regardless of whether it is still installed.
            assert_eq!(unsafe { libc::sigaltstack(&disable, ptr::null_mut()) }, 0);
            let ours = AltStack::ensure().unwrap();
            assert!(ours.is_owned());
            // SAFETY: an all-zero stack_t is valid output storage.
            let mut cur: libc::stack_t = unsafe { mem::zeroed() };
            // SAFETY: query only; `cur` is valid for writes.
            assert_eq!(unsafe { libc::sigaltstack(ptr::null(), &mut cur) }, 0);
            assert_eq!(cur.ss_flags & libc::SS_DISABLE, 0);
            assert!(cur.ss_size >= ALT_STACK_SIZE);
            drop(ours);
            // SAFETY: as above.
            assert_eq!(unsafe { libc::sigaltstack(ptr::null(), &mut cur) }, 0);
            assert_ne!(cur.ss_flags & libc::SS_DISABLE, 0);
        })
        .join()
        .unwrap();
    }
}
