//! The raw system calls of the process module: `pidfd_open`,
//! `pidfd_send_signal` and `fcntl(F_SETFL, O_NONBLOCK)`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A pidfd for the child `pid` (`pidfd_open(2)`, Linux ≥ 5.3), close-on-exec.
/// It becomes readable when the process exits.
///
/// The caller must be `pid`'s parent and must not have reaped it yet, so the
/// pid cannot have been reused by another process.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: `pidfd_open` takes a pid and a flags word (0) and touches no
    // memory of ours; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signo` to the process `pidfd` refers to (`pidfd_send_signal(2)`).
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signo: libc::c_int) -> io::Result<()> {
    // SAFETY: the fd is open for the duration of the borrow, a null `siginfo`
    // is allowed (the kernel fills it in as for `kill`) and flags must be 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signo,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets or clears `O_NONBLOCK` on `fd`'s open file description.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: `F_GETFL` only reads the flags of an fd that is open for the
    // duration of the borrow.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: as above; `F_SETFL` changes only the status flags.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
