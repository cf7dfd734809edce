//! The unsafe half of the hooks: the `#[no_mangle]` libc entry points, the
//! raw system calls that stand for the real functions, and `errno`. This
//! file has the helpers and the reads, writes and socket calls;
//! [`super::sys_poll`] the polls and sleeps; [`super::sys_fd`] the
//! descriptor changes and `getaddrinfo`.
//!
//! Every entry point is `extern "C"` (never `"C-unwind"`): its callers —
//! std, C libraries — are compiled as non-unwinding, so nothing may unwind
//! out of it. The runtime's interrupts are stopped with
//! `hub::catch_interrupt` in the safe half; any other panic aborts loudly.
//! The real functions are reached through `syscall(2)` (and `dlsym(RTLD_NEXT)`
//! for `getaddrinfo`), never through the interposed symbols, so nothing recurses.
//!
//! `fcntl` and `ioctl` are variadic in C. Stable Rust cannot define
//! variadic functions, so they are defined with a third integer/pointer
//! parameter: on x86-64 and AArch64 Linux a variadic integer or pointer
//! argument travels in the same register as a named one.
//!
//! Every entry point's body is the contract of the libc function it
//! stands for (its `# Safety` section): raw pointers and descriptors from
//! C callers, passed on to the kernel. Marking each operation of such a
//! body `unsafe` again would add no information, so this module allows
//! `unsafe_op_in_unsafe_fn`; its safe helpers still document every
//! unsafe block.
#![allow(unsafe_op_in_unsafe_fn)]

use std::time::{Duration, Instant};

use libc::{
    c_int, c_long, c_void, iovec, msghdr, nfds_t, pollfd, sigset_t, size_t, sockaddr, socklen_t,
    ssize_t, timespec, timeval,
};

use super::Direction;

// ----------------------------------------------------------------- helpers

#[inline]
pub(super) fn errno() -> c_int {
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // valid for the thread's lifetime.
    unsafe { *libc::__errno_location() }
}

#[inline]
pub(super) fn set_errno(e: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

/// `fcntl(F_GETFL)`, `None` on error.
pub(super) fn get_fl(fd: c_int) -> Option<c_int> {
    // SAFETY: F_GETFL takes no argument and only reads kernel state.
    let r = unsafe { libc::syscall(libc::SYS_fcntl, fd as c_long, libc::F_GETFL as c_long) };
    (r >= 0).then_some(r as c_int)
}

/// `fcntl(F_SETFL, fl)`; whether it worked.
pub(super) fn set_fl(fd: c_int, fl: c_int) -> bool {
    // SAFETY: F_SETFL takes an integer argument.
    unsafe {
        libc::syscall(
            libc::SYS_fcntl,
            fd as c_long,
            libc::F_SETFL as c_long,
            fl as c_long,
        ) == 0
    }
}

/// Whether `fd` is a socket or a pipe/FIFO (the descriptors made cooperative).
pub(super) fn is_socket_or_pipe(fd: c_int) -> bool {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat` for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd as c_long, &mut st as *mut libc::stat) };
    if r != 0 {
        return false;
    }
    matches!(st.st_mode & libc::S_IFMT, libc::S_IFSOCK | libc::S_IFIFO)
}

pub(super) fn getsockopt<T>(fd: c_int, level: c_int, name: c_int, val: &mut T) -> bool {
    let mut len = std::mem::size_of::<T>() as socklen_t;
    // SAFETY: `val` and `len` are valid and writable and `len` is the size of `val`.
    unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd as c_long,
            level as c_long,
            name as c_long,
            val as *mut T,
            &mut len as *mut socklen_t,
        ) == 0
    }
}

/// The socket's `SO_RCVTIMEO`/`SO_SNDTIMEO`, if set and non-zero.
pub(super) fn sock_timeout(fd: c_int, opt: c_int) -> Option<Duration> {
    let mut tv = timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    if !getsockopt(fd, libc::SOL_SOCKET, opt, &mut tv) {
        return None;
    }
    let d = Duration::from_secs(tv.tv_sec.max(0) as u64)
        + Duration::from_micros(tv.tv_usec.max(0) as u64);
    (!d.is_zero()).then_some(d)
}

/// The socket's pending error (`SO_ERROR`); `Err(errno)` if it cannot be read.
pub(super) fn so_error(fd: c_int) -> Result<c_int, c_int> {
    let mut e: c_int = 0;
    if getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut e) {
        Ok(e)
    } else {
        Err(errno())
    }
}

pub(super) fn timespec_of(d: Duration) -> timespec {
    timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as c_long,
    }
}

pub(super) fn duration_of(ts: &timespec) -> Option<Duration> {
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The real `ppoll` (no signal mask); `timeout` `None` waits forever.
pub(super) fn real_ppoll(fds: *mut pollfd, nfds: nfds_t, timeout: Option<Duration>) -> c_int {
    let ts = timeout.map(timespec_of);
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const timespec);
    // SAFETY: the caller passes the program's own `fds` array of `nfds`
    // entries (the kernel validates it); `tsp` is null or points to `ts`.
    unsafe {
        libc::syscall(
            libc::SYS_ppoll,
            fds,
            nfds as c_long,
            tsp,
            std::ptr::null::<sigset_t>(),
            0 as c_long,
        ) as c_int
    }
}

pub(super) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// `poll(2)` on one descriptor until `deadline`; the `poll` result.
pub(super) fn poll_one(fd: c_int, events: i16, deadline: Option<Instant>) -> c_int {
    let mut p = pollfd {
        fd,
        events,
        revents: 0,
    };
    real_ppoll(&mut p, 1, remaining(deadline))
}

/// Whether the executable exports the hooks to shared libraries.
pub(super) fn exported() -> bool {
    // SAFETY: dlsym with a NUL-terminated name only looks the symbol up.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"read".as_ptr()) };
    std::ptr::eq(p.cast_const(), read as *const c_void)
}

macro_rules! sys {
    ($nr:expr $(, $a:expr)*) => {
        libc::syscall($nr $(, $a as c_long)*)
    };
}

// -------------------------------------------------------------- read/write

/// `read(2)`.
///
/// # Safety
/// As for libc's `read`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::io(fd, Direction::Read, false, || unsafe {
        sys!(libc::SYS_read, fd, buf, count) as isize
    })
}

/// `write(2)`.
///
/// # Safety
/// As for libc's `write`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::io(fd, Direction::Write, false, || unsafe {
        sys!(libc::SYS_write, fd, buf, count) as isize
    })
}

/// `readv(2)`.
///
/// # Safety
/// As for libc's `readv`.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::io(fd, Direction::Read, false, || unsafe {
        sys!(libc::SYS_readv, fd, iov, cnt) as isize
    })
}

/// `writev(2)`.
///
/// # Safety
/// As for libc's `writev`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::io(fd, Direction::Write, false, || unsafe {
        sys!(libc::SYS_writev, fd, iov, cnt) as isize
    })
}

/// `recv(2)`.
///
/// # Safety
/// As for libc's `recv`.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    recvfrom(
        fd,
        buf,
        len,
        flags,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
}

/// `recvfrom(2)`.
///
/// # Safety
/// As for libc's `recvfrom`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    let dw = flags & libc::MSG_DONTWAIT != 0;
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::io(fd, Direction::Read, dw, || unsafe {
        sys!(libc::SYS_recvfrom, fd, buf, len, flags, addr, alen) as isize
    })
}

/// `recvmsg(2)`.
///
/// # Safety
/// As for libc's `recvmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let dw = flags & libc::MSG_DONTWAIT != 0;
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::io(fd, Direction::Read, dw, || unsafe {
        sys!(libc::SYS_recvmsg, fd, msg, flags) as isize
    })
}

/// `send(2)`.
///
/// # Safety
/// As for libc's `send`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    sendto(fd, buf, len, flags, std::ptr::null(), 0)
}

/// `sendto(2)`.
///
/// # Safety
/// As for libc's `sendto`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    let dw = flags & libc::MSG_DONTWAIT != 0;
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::io(fd, Direction::Write, dw, || unsafe {
        sys!(libc::SYS_sendto, fd, buf, len, flags, addr, alen) as isize
    })
}

/// `sendmsg(2)`.
///
/// # Safety
/// As for libc's `sendmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let dw = flags & libc::MSG_DONTWAIT != 0;
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::io(fd, Direction::Write, dw, || unsafe {
        sys!(libc::SYS_sendmsg, fd, msg, flags) as isize
    })
}

/// `__read_chk` (`_FORTIFY_SOURCE` builds of C code).
///
/// # Safety
/// As for glibc's `__read_chk`.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        fortify_fail()
    }
    read(fd, buf, n)
}

/// `__recv_chk` (`_FORTIFY_SOURCE` builds of C code).
///
/// # Safety
/// As for glibc's `__recv_chk`.
#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if n > buflen {
        fortify_fail()
    }
    recv(fd, buf, n, flags)
}

/// `__recvfrom_chk` (`_FORTIFY_SOURCE` builds of C code).
///
/// # Safety
/// As for glibc's `__recvfrom_chk`.
#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    if n > buflen {
        fortify_fail()
    }
    recvfrom(fd, buf, n, flags, addr, alen)
}

#[cold]
pub(super) fn fortify_fail() -> ! {
    const MSG: &[u8] = b"*** buffer overflow detected ***: terminated (tasklet::hook)\n";
    // SAFETY: writes a static buffer to stderr, then aborts, as glibc does.
    unsafe {
        libc::syscall(libc::SYS_write, 2 as c_long, MSG.as_ptr(), MSG.len());
        libc::abort()
    }
}

// --------------------------------------------------------- connect/accept

/// `connect(2)`.
///
/// # Safety
/// As for libc's `connect`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::connect(fd, || unsafe {
        sys!(libc::SYS_connect, fd, addr, len) as c_int
    })
}

/// `accept(2)`.
///
/// # Safety
/// As for libc's `accept`.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    accept4(fd, addr, len, 0)
}

/// `accept4(2)`.
///
/// # Safety
/// As for libc's `accept4`.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    super::accept(fd, flags, |f| unsafe {
        sys!(libc::SYS_accept4, fd, addr, len, f) as c_int
    })
}
