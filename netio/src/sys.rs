//! The few raw system calls std and mio do not offer in the form needed here:
//! `recv` and `send` without libc's cancellation-point wrapper on Linux,
//! `send`/`sendmsg` with `MSG_NOSIGNAL`, a larger `listen` backlog, and a
//! blocking `poll(2)` for sockets used outside a dispatcher.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::Instant;

use tasklet_runtime::hub::Direction;

/// Backlog applied to every listening socket (the kernel caps it at
/// `net.core.somaxconn`). mio's default of 128 drops SYNs under a connect
/// storm of a few hundred clients, which costs them a one-second retransmit.
pub(crate) const LISTEN_BACKLOG: i32 = 4096;

/// Re-`listen`s an already listening socket with [`LISTEN_BACKLOG`] (Linux
/// and the BSDs update the backlog of a listening socket in place).
pub(crate) fn set_backlog(fd: RawFd) -> io::Result<()> {
    // SAFETY: `listen` only reads its two integer arguments; an invalid fd is
    // reported as an error.
    let r = unsafe { libc::listen(fd, LISTEN_BACKLOG) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const NOSIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const NOSIGNAL: libc::c_int = 0;

/// `recvfrom(2)`/`sendto(2)` (`nr`) with no address: the system call
/// itself, as libc's `recv`/`send` make it (see [`raw_recv`]).
///
/// # Safety
/// `buf` must be valid for `len` bytes: writes for `recvfrom`, reads for
/// `sendto`.
#[cfg(target_os = "linux")]
#[inline]
unsafe fn transfer(
    nr: libc::c_long,
    fd: RawFd,
    buf: usize,
    len: usize,
    flags: libc::c_int,
) -> isize {
    // SAFETY: the arguments of `recv`/`send` plus a null address and
    // length, as libc passes them; the caller guarantees `buf`.
    unsafe {
        libc::syscall(
            nr,
            fd as libc::c_long,
            buf as libc::c_long,
            len as libc::c_long,
            flags as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        ) as isize
    }
}

/// `recv(2)`. On Linux the system call itself (`recvfrom` with no address):
/// libc's wrapper brackets every call with thread-cancellation bookkeeping
/// (two atomic read-modify-writes on the thread's descriptor) that Rust
/// never uses, and the `hook` feature's interposed `recv` would only repeat
/// the waiting done here.
///
/// # Safety
/// As for libc's `recv`: `buf` must be valid for writes of `len` bytes.
#[inline]
unsafe fn raw_recv(fd: RawFd, buf: *mut libc::c_void, len: usize, flags: libc::c_int) -> isize {
    #[cfg(target_os = "linux")]
    // SAFETY: the caller guarantees `buf`, as `transfer` requires.
    unsafe {
        transfer(libc::SYS_recvfrom, fd, buf as usize, len, flags)
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: the caller guarantees `buf`.
    unsafe {
        libc::recv(fd, buf, len, flags)
    }
}

/// `send(2)`, on Linux as the system call itself (see [`raw_recv`]).
///
/// # Safety
/// As for libc's `send`: `buf` must be valid for reads of `len` bytes.
#[inline]
unsafe fn raw_send(fd: RawFd, buf: *const libc::c_void, len: usize, flags: libc::c_int) -> isize {
    #[cfg(target_os = "linux")]
    // SAFETY: the caller guarantees `buf`, as `transfer` requires.
    unsafe {
        transfer(libc::SYS_sendto, fd, buf as usize, len, flags)
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: the caller guarantees `buf`.
    unsafe {
        libc::send(fd, buf, len, flags)
    }
}

/// `send(fd, buf, MSG_NOSIGNAL)`: a write to a closed connection fails with
/// `EPIPE` instead of raising `SIGPIPE`.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which outlives the call;
    // the kernel only reads from it.
    let n = unsafe { raw_send(fd, buf.as_ptr().cast(), buf.len(), NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A stream read with `recv(2)`: the byte count, and `false` (TCP ends a
/// read early only at an urgent mark, which the hub reports as priority
/// data; see `Sock::read_stream`).
#[inline]
pub(crate) fn recv_stream(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    // SAFETY: the pointer and length describe `buf`, which outlives the call;
    // the kernel writes at most `buf.len()` bytes into it.
    let n = unsafe { raw_recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok((n as usize, false))
    }
}

/// A read from an `AF_UNIX` stream socket with `recvmsg(2)` and no control
/// buffer: the byte count, and whether the kernel had ancillary data for
/// this read (`MSG_CTRUNC`: descriptors, which it closes, or credentials).
/// Linux ends a read after a segment that carries descriptors (and between
/// writers when credentials are passed) with more data queued and no new
/// readiness event, so such a short read does not prove the queue drained.
#[inline]
pub(crate) fn recv_unix_stream(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero `msghdr` is a valid empty message (no name, no
    // control buffer).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `msg` points at one iovec describing `buf`, both outlive the
    // call; the kernel writes at most `buf.len()` bytes and `msg_flags`.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok((n as usize, msg.msg_flags & libc::MSG_CTRUNC != 0))
    }
}

/// Vectored [`send`] through `sendmsg(MSG_NOSIGNAL)`.
pub(crate) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero `msghdr` is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    // Linux caps one call at IOV_MAX (1024) slices; the rest goes in the next write.
    msg.msg_iovlen = bufs.len().min(1024) as _;
    // SAFETY: `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix, the
    // slices outlive the call and the kernel only reads through them.
    let n = unsafe { libc::sendmsg(fd, &msg, NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Blocks the calling OS thread in `poll(2)` until `fd` is ready for `dir` or
/// `deadline` passes (`ErrorKind::TimedOut`). Used when a socket is used on a
/// thread that runs no dispatcher, where parking a tasklet is impossible.
pub(crate) fn poll_blocking(
    fd: RawFd,
    dir: Direction,
    deadline: Option<Instant>,
) -> io::Result<()> {
    let events = match dir {
        Direction::Read => libc::POLLIN,
        Direction::Write => libc::POLLOUT,
    };
    loop {
        let timeout_ms: libc::c_int = match deadline {
            None => -1,
            Some(dl) => {
                let now = Instant::now();
                if now >= dl {
                    return Err(timed_out());
                }
                let left = dl - now;
                // Round up so the wait never ends just before the deadline.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid, exclusively borrowed array of one pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(());
        }
    }
}

/// The error every timed-out socket operation returns.
pub(crate) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "socket operation timed out")
}

/// `setsockopt(SO_LINGER)`: `None` turns lingering off (the default, a
/// graceful close in the background); `Some(ZERO)` makes `close` reset the
/// connection (RST) and drop unsent data.
pub(crate) fn set_linger(fd: RawFd, linger: Option<std::time::Duration>) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: linger.is_some() as libc::c_int,
        l_linger: linger.map_or(0, |d| {
            d.as_secs().min(libc::c_int::MAX as u64) as libc::c_int
        }),
    };
    // SAFETY: `l` is a valid `linger` that outlives the call, its size is
    // passed along, and the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `getsockopt(SO_LINGER)`.
pub(crate) fn linger(fd: RawFd) -> io::Result<Option<std::time::Duration>> {
    let mut l = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: `l` and `len` are valid, exclusively borrowed out-parameters
    // of the sizes the kernel is told.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&mut l as *mut libc::linger).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((l.l_onoff != 0).then(|| std::time::Duration::from_secs(l.l_linger.max(0) as u64)))
}

/// A listening TCP socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`
/// set before `bind`, non-blocking and close-on-exec, with
/// [`LISTEN_BACKLOG`]: several such sockets (of the same user) may listen on
/// one address, and the kernel spreads incoming connections over them.
pub(crate) fn reuse_port_listener(addr: &std::net::SocketAddr) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let fd = bound_tcp_socket(addr, true)?;
    set_backlog(fd.as_raw_fd())?;
    Ok(fd)
}

/// Binds a TCP socket to `addr` the way a plain listener would be bound
/// (`SO_REUSEADDR`, no `SO_REUSEPORT`), without listening, and closes it
/// again: `AddrInUse` if anything listens on the address (with
/// `SO_REUSEPORT` or not), else the address it got (port 0 resolved).
pub(crate) fn probe_bind(addr: &std::net::SocketAddr) -> io::Result<std::net::SocketAddr> {
    use std::os::fd::AsRawFd;
    let fd = bound_tcp_socket(addr, false)?;
    // SAFETY: an all-zero `sockaddr_storage` is valid; `getsockname`
    // writes at most `len` bytes into it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `storage`.
    let r = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let port = match i32::from(storage.ss_family) {
        // SAFETY: the family says the storage holds a `sockaddr_in`.
        libc::AF_INET => unsafe {
            (*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()).sin_port
        },
        // SAFETY: the family says the storage holds a `sockaddr_in6`.
        libc::AF_INET6 => unsafe {
            (*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()).sin6_port
        },
        _ => return Err(io::Error::other("getsockname: not an IP socket")),
    };
    let mut bound = *addr;
    bound.set_port(u16::from_be(port));
    Ok(bound)
}

/// A non-blocking, close-on-exec TCP socket bound to `addr`, with
/// `SO_REUSEADDR` and (if `reuse_port`) `SO_REUSEPORT` set before `bind`.
fn bound_tcp_socket(
    addr: &std::net::SocketAddr,
    reuse_port: bool,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let family = match addr {
        std::net::SocketAddr::V4(_) => libc::AF_INET,
        std::net::SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and own exclusively.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let opts: &[libc::c_int] = if reuse_port {
        &[libc::SO_REUSEADDR, libc::SO_REUSEPORT]
    } else {
        &[libc::SO_REUSEADDR]
    };
    for &opt in opts {
        // SAFETY: the option value pointer and length describe `one`.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let r = match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: an all-zero sockaddr_in is valid; fields are set below.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            // SAFETY: the pointer and length describe `sa`, a sockaddr_in.
            unsafe {
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: an all-zero sockaddr_in6 is valid; fields are set below.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sa.sin6_flowinfo = a.flowinfo();
            sa.sin6_scope_id = a.scope_id();
            // SAFETY: the pointer and length describe `sa`, a sockaddr_in6.
            unsafe {
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// A listening Unix stream socket at `path` whose file is created with mode
/// 0600 (owner only): the socket's own mode is set with `fchmod` before
/// `bind`, which Linux copies to the file it creates (masked by the umask),
/// so there is no window in which another user could connect. The file is
/// also `chmod`ed after `bind`, for systems that ignore the first step.
pub(crate) fn private_unix_listener(
    path: &std::path::Path,
) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero `sockaddr_un` is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "Unix socket path is empty, too long or contains a NUL byte",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: `fchmod` and `bind` read only their arguments; `addr` is a
    // valid `sockaddr_un` and `len` covers its path and the NUL after it.
    unsafe {
        if libc::fchmod(raw, 0o600) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::bind(
            raw,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    set_backlog(raw)?;
    Ok(std::os::unix::net::UnixListener::from(fd))
}
