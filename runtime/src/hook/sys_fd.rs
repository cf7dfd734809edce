//! The hooks' descriptor changes (`close`, `dup*`, `fcntl`, `ioctl`,
//! `setsockopt`) and `getaddrinfo` (see [`super::sys`] for the rules every
//! entry point follows).
//!
//! Every entry point's body is the contract of the libc function it
//! stands for (its `# Safety` section): raw pointers and descriptors from
//! C callers, passed on to the kernel. Marking each operation of such a
//! body `unsafe` again would add no information, so this module allows
//! `unsafe_op_in_unsafe_fn`; its safe helpers still document every
//! unsafe block.
#![allow(unsafe_op_in_unsafe_fn)]

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{addrinfo, c_char, c_int, c_long, c_ulong, c_void, socklen_t, timeval};

use super::sys::*;

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
