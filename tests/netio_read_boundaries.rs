//! Reads that the kernel ends early although more data is queued: at a TCP
//! urgent mark (`MSG_OOB`), after an `AF_UNIX` segment carrying descriptors
//! (`SCM_RIGHTS`). Neither produces a new readiness event, so a read that
//! took such a short read for "drained" and waited for the next edge would
//! park with the rest of the data queued (issue 8, defect 2).
//!
//! In-process tests make the reader park first, then queue everything in one
//! go, so the reader is woken once for all of it (the case that stalled);
//! the example tests drive `echo_server` directly and through `port_forward`.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use tasklet::netio::{TcpListener, TcpStream, UnixStream};

mod common;
use common::{sigterm_and_wait, start_example};

/// Generous: the stall this guards against is forever.
const LIMIT: Duration = Duration::from_secs(10);

/// `send(fd, buf, flags)` on a raw socket.
fn send_flags(fd: RawFd, buf: &[u8], flags: libc::c_int) {
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    assert_eq!(
        n,
        buf.len() as isize,
        "send: {}",
        io::Error::last_os_error()
    );
}

/// Sends `data` with one descriptor (`pass`) attached, through `sendmsg`.
fn send_with_fd(fd: RawFd, data: &[u8], pass: RawFd) {
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // u64 elements keep the control buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message; every pointer set
    // below refers to a local that outlives the sendmsg call, and the control
    // buffer is `space` bytes long, enough for one cmsghdr with one fd.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), pass);
        let n = libc::sendmsg(fd, &msg, 0);
        assert_eq!(
            n,
            data.len() as isize,
            "sendmsg: {}",
            io::Error::last_os_error()
        );
    }
}

/// Reads from `r` until `want` bytes have arrived (or fails on timeout/EOF).
fn read_n(mut r: impl Read, want: usize) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < want {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

#[test]
fn tcp_read_past_an_urgent_mark_does_not_park() {
    tasklet::dispatch(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_read_timeout(Some(LIMIT)).unwrap();
        // The reader parks first (registered with the hub, nothing queued).
        let reader = tasklet::spawn(move || read_n(&server, 8));
        tasklet::yield_now();
        // Then all of it arrives before the reader runs again: one wake-up.
        let fd = client.as_raw_fd();
        send_flags(fd, b"AAAA", 0);
        send_flags(fd, b"B", libc::MSG_OOB);
        send_flags(fd, b"CCCC", 0);
        let got = reader.join().unwrap().expect("the bytes after the mark");
        // Without SO_OOBINLINE the urgent byte is not part of the stream.
        assert_eq!(got, b"AAAACCCC");
    });
}

#[test]
fn unix_read_past_a_descriptor_carrying_segment_does_not_park() {
    tasklet::dispatch(|| {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(LIMIT)).unwrap();
        let reader = tasklet::spawn(move || read_n(&b, 12));
        tasklet::yield_now();
        let fd = a.as_raw_fd();
        send_flags(fd, b"AAAA", 0);
        // The reader does not take the descriptor (plain `read`): the kernel
        // closes it, but the read still ends after this segment.
        send_with_fd(fd, b"BBBB", libc::STDERR_FILENO);
        send_flags(fd, b"CCCC", 0);
        let got = reader
            .join()
            .unwrap()
            .expect("the bytes after the descriptor");
        assert_eq!(got, b"AAAABBBBCCCC");
    });
}

#[test]
fn unix_read_past_an_out_of_band_byte_does_not_park() {
    tasklet::dispatch(|| {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(LIMIT)).unwrap();
        // AF_UNIX MSG_OOB needs Linux 5.15 and CONFIG_AF_UNIX_OOB.
        // SAFETY: sending one byte from a valid local buffer.
        if unsafe { libc::send(a.as_raw_fd(), b"X".as_ptr().cast(), 1, libc::MSG_OOB) } < 0 {
            eprintln!(
                "AF_UNIX MSG_OOB unsupported here: {}",
                io::Error::last_os_error()
            );
            return;
        }
        // SAFETY: as above, receiving the byte just sent into a local buffer.
        let n = unsafe {
            libc::recv(
                b.as_raw_fd(),
                [0u8; 1].as_mut_ptr().cast(),
                1,
                libc::MSG_OOB,
            )
        };
        assert_eq!(n, 1);
        let reader = tasklet::spawn(move || read_n(&b, 8));
        tasklet::yield_now();
        let fd = a.as_raw_fd();
        send_flags(fd, b"AAAA", 0);
        send_flags(fd, b"B", libc::MSG_OOB);
        send_flags(fd, b"CCCC", 0);
        let got = reader
            .join()
            .unwrap()
            .expect("the bytes after the out-of-band byte");
        assert_eq!(got, b"AAAACCCC");
    });
}

/// A std client sends `AAAA`, the urgent byte `B`, then `CCCC`, rounds
/// times, and expects `AAAACCCC` echoed each round.
fn urgent_rounds(addr: &str, rounds: usize) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    for round in 0..rounds {
        // "AAAAB" with MSG_OOB: the last byte is urgent, AAAA normal data.
        send_flags(s.as_raw_fd(), b"AAAAB", libc::MSG_OOB);
        s.write_all(b"CCCC").unwrap();
        let got = read_n(&s, 8)
            .unwrap_or_else(|e| panic!("round {round}: echo after the urgent byte: {e}"));
        assert_eq!(got, b"AAAACCCC", "round {round}");
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn echo_server_and_port_forward_echo_past_urgent_data() {
    let (mut echo, echo_addr, echo_log) = start_example(
        "echo_server",
        &["--addr", "127.0.0.1:0"],
        &["listening on "],
    );
    urgent_rounds(&echo_addr, 50);

    let (mut fwd, fwd_addr, fwd_log) = start_example(
        "port_forward",
        &["--listen", "127.0.0.1:0", "--to", &echo_addr],
        &["listening on ", "forwarding "],
    );
    urgent_rounds(&fwd_addr, 50);

    sigterm_and_wait(&mut fwd, "port_forward");
    sigterm_and_wait(&mut echo, "echo_server");
    for log in [fwd_log.join().unwrap(), echo_log.join().unwrap()] {
        assert!(!log.contains("panicked"), "{log}");
    }
}
