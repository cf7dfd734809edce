//! Advising many address ranges with one system call.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Most ranges one `process_madvise` call takes (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// `PIDFD_SELF_THREAD_GROUP`: the calling process, for `process_madvise`.
const PIDFD_SELF: libc::c_int = -10001;

/// `madvise` advice that populates pages writable (Linux 5.14+).
pub(super) const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Set once `process_madvise(PIDFD_SELF, ..)` has been found unavailable:
/// ranges are then advised one `madvise` call each.
static BATCH_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Whether ranges can be advised in batches (see [`advise_ranges`]).
pub(super) fn batches_supported() -> bool {
    !BATCH_UNSUPPORTED.load(Ordering::Relaxed)
}

/// Applies `advice` to every `(address, length)` range: with as few
/// `process_madvise(PIDFD_SELF, ..)` calls as possible, else (the kernel has
/// no such call, or refuses this advice in it) with one `madvise` per range
/// if `fallback`. Returns how many ranges (a prefix) were advised, or the
/// first error of the per-range fallback.
///
/// # Safety
///
/// Every range must lie in mappings owned by this module, and the advice must
/// be harmless to whatever lives there (no live object in a range that
/// `MADV_DONTNEED` zeroes).
pub(super) unsafe fn advise_ranges(
    ranges: &[(usize, usize)],
    advice: libc::c_int,
    fallback: bool,
) -> io::Result<usize> {
    let mut done = 0;
    if !BATCH_UNSUPPORTED.load(Ordering::Relaxed) {
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(ranges.len().min(IOV_MAX));
        while done < ranges.len() {
            let chunk = &ranges[done..(done + IOV_MAX).min(ranges.len())];
            iov.clear();
            iov.extend(chunk.iter().map(|&(addr, len)| libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: len,
            }));
            let want: usize = chunk.iter().map(|&(_, len)| len).sum();
            // SAFETY: `iov` holds `iov.len()` valid iovecs; the ranges they name
            // satisfy this function's contract; PIDFD_SELF names this process.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_process_madvise,
                    PIDFD_SELF,
                    iov.as_ptr(),
                    iov.len(),
                    advice,
                    0u32,
                )
            };
            if rc >= 0 && rc as usize == want {
                done += chunk.len();
                continue;
            }
            if rc >= 0 {
                // Partial: the kernel stopped at a range; count the whole ones.
                let mut bytes = rc as usize;
                for &(_, len) in chunk {
                    if bytes < len {
                        break;
                    }
                    bytes -= len;
                    done += 1;
                }
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // No process_madvise, no PIDFD_SELF, or forbidden (seccomp).
                Some(libc::ENOSYS | libc::EBADF | libc::EPERM) => {
                    BATCH_UNSUPPORTED.store(true, Ordering::Relaxed);
                }
                // EINVAL: this advice is not allowed there (or not known at all);
                // anything else (EFAULT, ENOMEM, EAGAIN): the caller's fallback.
                _ => log::debug!("process_madvise({advice}) failed: {err}"),
            }
            break;
        }
    }
    if !fallback {
        return Ok(done);
    }
    for &(addr, len) in &ranges[done..] {
        // SAFETY: as for the batched call above (this function's contract).
        if unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) } != 0 {
            return Err(io::Error::last_os_error());
        }
        done += 1;
    }
    Ok(done)
}
