//! The unsafe half of the hooks: the `#[no_mangle]` libc entry points, the
//! raw system calls that stand for the real functions, and `errno`.
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

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libc::{
    addrinfo, c_char, c_int, c_long, c_uint, c_ulong, c_void, clockid_t, epoll_event, fd_set,
    iovec, msghdr, nfds_t, pollfd, sigset_t, size_t, sockaddr, socklen_t, ssize_t, timespec,
    timeval, useconds_t,
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

fn getsockopt<T>(fd: c_int, level: c_int, name: c_int, val: &mut T) -> bool {
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

fn timespec_of(d: Duration) -> timespec {
    timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as c_long,
    }
}

fn duration_of(ts: &timespec) -> Option<Duration> {
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The real `ppoll` (no signal mask); `timeout` `None` waits forever.
fn real_ppoll(fds: *mut pollfd, nfds: nfds_t, timeout: Option<Duration>) -> c_int {
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

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
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

/// `__poll_chk` (`_FORTIFY_SOURCE` builds of C code).
///
/// # Safety
/// As for glibc's `__poll_chk`.
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    if fdslen / std::mem::size_of::<pollfd>() < nfds as usize {
        fortify_fail()
    }
    poll(fds, nfds, timeout)
}

#[cold]
fn fortify_fail() -> ! {
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

// ------------------------------------------------------------------- polls

/// `poll(2)`.
///
/// # Safety
/// As for libc's `poll`.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    let t = (timeout >= 0).then(|| Duration::from_millis(timeout as u64));
    poll_common(fds, nfds, t)
}

/// `ppoll(2)`. With a signal mask it is not made cooperative (the mask
/// cannot be applied atomically around a tasklet's wait).
///
/// # Safety
/// As for libc's `ppoll`.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    if !sigmask.is_null() || !super::cooperative() {
        return sys!(
            libc::SYS_ppoll,
            fds,
            nfds,
            tmo,
            sigmask,
            std::mem::size_of::<c_ulong>()
        ) as c_int;
    }
    let t = if tmo.is_null() {
        None
    } else {
        match duration_of(&*tmo) {
            Some(d) => Some(d),
            None => {
                set_errno(libc::EINVAL);
                return -1;
            }
        }
    };
    poll_common(fds, nfds, t)
}

unsafe fn poll_common(fds: *mut pollfd, nfds: nfds_t, t: Option<Duration>) -> c_int {
    if !super::cooperative() || fds.is_null() || nfds == 0 {
        if nfds == 0 && super::cooperative() {
            // poll(NULL, 0, t) is a sleep.
            if let Some(d) = t {
                return match super::sleep_in_tasklet(d) {
                    Ok(()) => 0,
                    Err(_) => {
                        set_errno(libc::EINTR);
                        -1
                    }
                };
            }
        }
        return real_ppoll(fds, nfds, t);
    }
    // SAFETY: the program passes `nfds` valid entries (its own contract
    // with poll; an invalid pointer faults here instead of in the kernel).
    let slice = std::slice::from_raw_parts(fds, nfds as usize);
    let dirs = super::poll_dirs(slice);
    super::poll_in_tasklet(
        &dirs,
        t,
        || real_ppoll(fds, nfds, Some(Duration::ZERO)),
        |dl| real_ppoll(fds, nfds, remaining(dl)),
    )
}

/// `select(2)`.
///
/// # Safety
/// As for libc's `select`.
#[no_mangle]
pub unsafe extern "C" fn select(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    tv: *mut timeval,
) -> c_int {
    let t = if tv.is_null() {
        None
    } else {
        let tv = &*tv;
        if tv.tv_sec < 0 || !(0..1_000_000).contains(&tv.tv_usec) {
            set_errno(libc::EINVAL);
            return -1;
        }
        Some(Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64))
    };
    let start = Instant::now();
    let n = if !super::cooperative() || nfds <= 0 {
        if nfds <= 0 && super::cooperative() {
            // select(0, ..., t) is a sleep.
            if let Some(d) = t {
                if super::sleep_in_tasklet(d).is_err() {
                    set_errno(libc::EINTR);
                    return -1;
                }
                if !tv.is_null() {
                    *tv = timeval {
                        tv_sec: 0,
                        tv_usec: 0,
                    };
                }
                return 0;
            }
        }
        let mut ts = t.map(timespec_of);
        let tsp = ts
            .as_mut()
            .map_or(std::ptr::null_mut(), |t| t as *mut timespec);
        sys!(
            libc::SYS_pselect6,
            nfds,
            r,
            w,
            e,
            tsp,
            std::ptr::null::<c_void>()
        ) as c_int
    } else {
        select_in_tasklet(nfds.min(libc::FD_SETSIZE as c_int), r, w, e, t)
    };
    if n >= 0 && !tv.is_null() {
        // Linux reports the time not slept.
        let left = t.unwrap_or_default().saturating_sub(start.elapsed());
        *tv = timeval {
            tv_sec: left.as_secs() as libc::time_t,
            tv_usec: left.subsec_micros() as libc::suseconds_t,
        };
    }
    n
}

unsafe fn select_in_tasklet(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    t: Option<Duration>,
) -> c_int {
    let isset = |set: *mut fd_set, fd| !set.is_null() && libc::FD_ISSET(fd, set);
    let mut fds: Vec<pollfd> = Vec::new();
    for fd in 0..nfds {
        let mut events = 0;
        if isset(r, fd) {
            events |= libc::POLLIN;
        }
        if isset(w, fd) {
            events |= libc::POLLOUT;
        }
        if isset(e, fd) {
            events |= libc::POLLPRI;
        }
        if events != 0 {
            fds.push(pollfd {
                fd,
                events,
                revents: 0,
            });
        }
    }
    let n = poll_common(fds.as_mut_ptr(), fds.len() as nfds_t, t);
    if n < 0 {
        return n;
    }
    if fds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        set_errno(libc::EBADF);
        return -1;
    }
    for set in [r, w, e] {
        if !set.is_null() {
            libc::FD_ZERO(set);
        }
    }
    let mut count = 0;
    for p in &fds {
        let rv = p.revents;
        let mut mark = |set: *mut fd_set, hit: bool| {
            if hit && !set.is_null() {
                libc::FD_SET(p.fd, set);
                count += 1;
            }
        };
        mark(
            r,
            p.events & libc::POLLIN != 0
                && rv & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
        );
        mark(
            w,
            p.events & libc::POLLOUT != 0 && rv & (libc::POLLOUT | libc::POLLERR) != 0,
        );
        mark(e, p.events & libc::POLLPRI != 0 && rv & libc::POLLPRI != 0);
    }
    count
}

/// `epoll_wait(2)`: in a tasklet, waits for the epoll descriptor itself to
/// become readable on the hub (an event loop run inside a tasklet).
///
/// # Safety
/// As for libc's `epoll_wait`.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    let real = |t: c_int| unsafe {
        sys!(
            libc::SYS_epoll_pwait,
            epfd,
            events,
            max,
            t,
            std::ptr::null::<sigset_t>(),
            0
        ) as c_int
    };
    if timeout == 0 || !super::cooperative() {
        return real(timeout);
    }
    let t = (timeout > 0).then(|| Duration::from_millis(timeout as u64));
    super::poll_in_tasklet(
        &[(epfd, Direction::Read)],
        t,
        || real(0),
        |dl| {
            let ms = remaining(dl).map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as c_int);
            real(ms)
        },
    )
}

// ------------------------------------------------------------------ sleeps

/// `nanosleep(2)`.
///
/// # Safety
/// As for libc's `nanosleep`.
#[no_mangle]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    if !super::cooperative() || req.is_null() {
        return sys!(libc::SYS_nanosleep, req, rem) as c_int;
    }
    let Some(d) = duration_of(&*req) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    match super::sleep_in_tasklet(d) {
        Ok(()) => 0,
        Err(_) => {
            // Interrupted by a kill or timeout: report EINTR with nothing
            // left to sleep, so retry loops end.
            if !rem.is_null() {
                *rem = timespec_of(Duration::ZERO);
            }
            set_errno(libc::EINTR);
            -1
        }
    }
}

/// `clock_nanosleep(2)` (what `std::thread::sleep` calls). Returns the error
/// number instead of setting errno, like libc's.
///
/// # Safety
/// As for libc's `clock_nanosleep`.
#[no_mangle]
pub unsafe extern "C" fn clock_nanosleep(
    clock: clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    let known = matches!(
        clock,
        libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME
    );
    if !super::cooperative() || req.is_null() || !known {
        let saved = errno();
        let r = sys!(libc::SYS_clock_nanosleep, clock, flags, req, rem) as c_int;
        let r = if r == -1 { errno() } else { r };
        set_errno(saved);
        return r;
    }
    let Some(d) = duration_of(&*req) else {
        return libc::EINVAL;
    };
    let absolute = flags & libc::TIMER_ABSTIME != 0;
    let d = if absolute {
        let mut now = timespec_of(Duration::ZERO);
        if libc::clock_gettime(clock, &mut now) != 0 {
            return errno();
        }
        d.saturating_sub(duration_of(&now).unwrap_or_default())
    } else {
        d
    };
    match super::sleep_in_tasklet(d) {
        Ok(()) => 0,
        // An absolute sleep cannot say "nothing left" with EINTR (callers
        // retry with the same deadline): it reports completion instead.
        Err(_) if absolute => 0,
        Err(_) => {
            if !rem.is_null() {
                *rem = timespec_of(Duration::ZERO);
            }
            libc::EINTR
        }
    }
}

/// `usleep(3)`.
///
/// # Safety
/// As for libc's `usleep`.
#[no_mangle]
pub unsafe extern "C" fn usleep(usec: useconds_t) -> c_int {
    let ts = timespec_of(Duration::from_micros(usec as u64));
    nanosleep(&ts, std::ptr::null_mut())
}

/// `sleep(3)`.
///
/// # Safety
/// As for libc's `sleep`.
#[no_mangle]
pub unsafe extern "C" fn sleep(secs: c_uint) -> c_uint {
    let ts = timespec_of(Duration::from_secs(secs as u64));
    let mut rem = timespec_of(Duration::ZERO);
    if nanosleep(&ts, &mut rem) == 0 {
        0
    } else {
        (rem.tv_sec as c_uint).saturating_add((rem.tv_nsec > 0) as c_uint)
    }
}

/// `sched_yield(2)`: in a tasklet, lets the other tasklets run.
///
/// # Safety
/// As for libc's `sched_yield` (no preconditions).
#[no_mangle]
pub unsafe extern "C" fn sched_yield() -> c_int {
    if super::cooperative() {
        let _ = super::sleep_in_tasklet(Duration::ZERO);
        return 0;
    }
    sys!(libc::SYS_sched_yield) as c_int
}

// ----------------------------------------------------- descriptor changes

/// `close(2)`: forgets the descriptor (and its hub registration) first.
///
/// # Safety
/// As for libc's `close`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    super::forget(fd);
    sys!(libc::SYS_close, fd) as c_int
}

/// `dup(2)`.
///
/// # Safety
/// As for libc's `dup`.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let r = sys!(libc::SYS_dup, fd) as c_int;
    super::after_dup(fd, r);
    r
}

/// `dup2(2)`.
///
/// # Safety
/// As for libc's `dup2`.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old == new {
        // dup2 of a descriptor onto itself only checks that it is open.
        return if get_fl(old).is_some() {
            new
        } else {
            set_errno(libc::EBADF);
            -1
        };
    }
    dup3(old, new, 0)
}

/// `dup3(2)`.
///
/// # Safety
/// As for libc's `dup3`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let r = sys!(libc::SYS_dup3, old, new, flags) as c_int;
    super::after_dup(old, r);
    r
}

unsafe fn fcntl_impl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the system call gets exactly the arguments the program passed
    // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
    let real = |a: c_ulong| unsafe { sys!(libc::SYS_fcntl, fd, cmd, a) as c_int };
    match cmd {
        libc::F_GETFL => super::visible_fl(fd, real(arg)),
        libc::F_SETFL => {
            let nb = arg & libc::O_NONBLOCK as c_ulong != 0;
            super::set_nonblocking(fd, nb, |on| {
                let a = if on {
                    arg | libc::O_NONBLOCK as c_ulong
                } else {
                    arg & !(libc::O_NONBLOCK as c_ulong)
                };
                real(a)
            })
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let r = real(arg);
            super::after_dup(fd, r);
            r
        }
        _ => real(arg),
    }
}

/// `fcntl(2)`; `arg` is the variadic third argument (see the module docs).
///
/// # Safety
/// As for libc's `fcntl`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_impl(fd, cmd, arg)
}

/// `fcntl64`, glibc's name for `fcntl` in some builds.
///
/// # Safety
/// As for libc's `fcntl64`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_impl(fd, cmd, arg)
}

/// `ioctl(2)`; only `FIONBIO` is interpreted.
///
/// # Safety
/// As for libc's `ioctl`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int {
    if req != libc::FIONBIO as c_ulong || arg.is_null() {
        return sys!(libc::SYS_ioctl, fd, req, arg) as c_int;
    }
    let on = *(arg as *const c_int) != 0;
    super::set_nonblocking(fd, on, |on| {
        let v: c_int = on as c_int;
        // SAFETY: the system call gets exactly the arguments the program passed
        // (its own pointers, validated by the kernel: EFAULT), as libc's wrapper would.
        unsafe { sys!(libc::SYS_ioctl, fd, req, &v as *const c_int) as c_int }
    })
}

/// `setsockopt(2)`: `SO_RCVTIMEO`/`SO_SNDTIMEO` are also honoured as
/// timeouts by the cooperative calls.
///
/// # Safety
/// As for libc's `setsockopt`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    let r = sys!(libc::SYS_setsockopt, fd, level, name, val, len) as c_int;
    if r == 0
        && level == libc::SOL_SOCKET
        && matches!(name, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO)
        && len as usize >= std::mem::size_of::<timeval>()
    {
        let tv = &*(val as *const timeval);
        super::after_setsockopt(fd, level, name, tv.tv_sec != 0 || tv.tv_usec != 0);
    }
    r
}

// -------------------------------------------------------------------- DNS

type GetAddrInfo = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const addrinfo,
    *mut *mut addrinfo,
) -> c_int;

/// libc's own `getaddrinfo`, found once with `dlsym(RTLD_NEXT)`.
fn real_getaddrinfo() -> Option<GetAddrInfo> {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let mut p = REAL.load(Ordering::Acquire);
    if p == 0 {
        // SAFETY: looks up a NUL-terminated symbol name after this object.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"getaddrinfo".as_ptr()) } as usize;
        REAL.store(p, Ordering::Release);
    }
    // SAFETY: a non-null result is libc's `getaddrinfo`, which has this signature.
    (p != 0).then(|| unsafe { std::mem::transmute::<usize, GetAddrInfo>(p) })
}

/// A result list owned until handed to the program (freed if nobody takes it,
/// say when the waiting tasklet was killed).
struct AddrList(*mut addrinfo);

// SAFETY: an addrinfo list is plain heap memory that any thread may free.
unsafe impl Send for AddrList {}

impl Drop for AddrList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the list came from libc's getaddrinfo and is freed once.
            unsafe { libc::freeaddrinfo(self.0) }
        }
    }
}

/// `getaddrinfo(3)`: in a tasklet, resolved on an offload thread
/// (`tasklet::unblock`) while the tasklet waits.
///
/// # Safety
/// As for libc's `getaddrinfo`.
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let Some(real) = real_getaddrinfo() else {
        set_errno(libc::ENOSYS);
        return libc::EAI_SYSTEM;
    };
    if !super::cooperative() || res.is_null() {
        return real(node, service, hints, res);
    }
    let own = |p: *const c_char| (!p.is_null()).then(|| CStr::from_ptr(p).to_owned());
    let (node_c, service_c) = (own(node), own(service));
    // Only these hint fields are meaningful; the rest must be zero.
    let h = (!hints.is_null()).then(|| {
        let h = &*hints;
        (h.ai_flags, h.ai_family, h.ai_socktype, h.ai_protocol)
    });
    let job = move || {
        // SAFETY: an all-zero addrinfo is the documented empty hint.
        let mut hint: addrinfo = unsafe { std::mem::zeroed() };
        if let Some((f, fam, st, p)) = h {
            hint.ai_flags = f;
            hint.ai_family = fam;
            hint.ai_socktype = st;
            hint.ai_protocol = p;
        }
        let mut out: *mut addrinfo = std::ptr::null_mut();
        let ptr =
            |c: &Option<std::ffi::CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: the strings and hint live on this frame; `out` is writable.
        let rc = unsafe {
            real(
                ptr(&node_c),
                ptr(&service_c),
                if h.is_some() { &hint } else { std::ptr::null() },
                &mut out,
            )
        };
        (rc, errno(), AddrList(out))
    };
    match crate::hub::catch_interrupt(|| crate::unblock(job)) {
        Ok((rc, e, list)) => {
            let list = std::mem::ManuallyDrop::new(list);
            *res = list.0;
            if rc == libc::EAI_SYSTEM {
                set_errno(e);
            }
            rc
        }
        Err(_) => {
            set_errno(libc::ECANCELED);
            libc::EAI_SYSTEM
        }
    }
}
