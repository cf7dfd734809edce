//! The hooks' waits: `poll`, `ppoll`, `select`, `epoll_wait`, the sleeps
//! and `sched_yield` (see [`super::sys`] for the rules every entry point
//! follows).
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
    c_int, c_long, c_uint, c_ulong, c_void, clockid_t, epoll_event, fd_set, nfds_t, pollfd,
    sigset_t, size_t, timespec, timeval, useconds_t,
};

use super::sys::*;
use super::Direction;

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
            // Cancelled by a kill or timeout: report EINTR with nothing
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
