//! std parity of the netio socket types: the std methods added to them
//! (abstract Unix addresses, `UnixListener`/`UnixDatagram::try_clone`,
//! datagram timeout getters, UDP multicast options), clone semantics, and
//! the edge cases of the basic calls (zero-length reads and writes, bound
//! addresses in use, handlers returning values).

use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr as UnixAddr;
use std::time::Duration;

use tasklet::netio::{
    StreamServer, TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream,
};

/// Runs `f` in a dispatcher, failing the test if it takes longer than 60 s.
fn run<T: 'static>(f: impl FnOnce() -> T + 'static) -> T {
    tasklet::dispatch(|| tasklet::timeout(Duration::from_secs(60), f).expect("test timed out"))
}

/// An abstract-namespace name unique to this process and `tag`.
fn abstract_addr(tag: &str) -> UnixAddr {
    let name = format!("tasklet-netio-api-{}-{tag}", std::process::id());
    UnixAddr::from_abstract_name(name.as_bytes()).unwrap()
}

#[test]
fn unix_stream_over_an_abstract_address_and_a_cloned_listener() {
    run(|| {
        let addr = abstract_addr("stream");
        let listener = UnixListener::bind_addr(&addr).unwrap();
        let second = listener.try_clone().unwrap();
        // The clone accepts on the same socket.
        let server = tasklet::spawn(move || {
            let (mut s, _) = second.accept().unwrap();
            let mut buf = [0u8; 8];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let mut c = UnixStream::connect_addr(&addr).unwrap();
        c.write_all(b"abstract").unwrap();
        let mut buf = [0u8; 8];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"abstract");
        server.join().unwrap();
        // Bound twice: a clear error.
        let e = UnixListener::bind_addr(&addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(listener);
    });
}

#[test]
fn unix_datagrams_over_abstract_addresses_clone_and_timeouts() {
    run(|| {
        let a_addr = abstract_addr("dgram-a");
        let a = UnixDatagram::bind_addr(&a_addr).unwrap();
        let b = UnixDatagram::bind_addr(&abstract_addr("dgram-b")).unwrap();
        b.send_to_addr(b"to a", &a_addr).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"to a");
        assert!(from.as_abstract_name().is_some());

        b.connect_addr(&a_addr).unwrap();
        b.send(b"connected").unwrap();
        assert_eq!(a.recv(&mut buf).unwrap(), 9);

        a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(a.read_timeout().unwrap(), Some(Duration::from_millis(20)));
        assert_eq!(a.write_timeout().unwrap(), None);
        let e = a.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        // A clone shares the socket and starts with the same timeouts.
        let a2 = a.try_clone().unwrap();
        assert_eq!(a2.read_timeout().unwrap(), Some(Duration::from_millis(20)));
        b.send(b"via clone").unwrap();
        assert_eq!(a2.recv(&mut buf).unwrap(), 9);
        assert_eq!(&buf[..9], b"via clone");
    });
}

#[test]
fn udp_multicast_options_round_trip() {
    run(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_multicast_loop_v4(false).unwrap();
        assert!(!s.multicast_loop_v4().unwrap());
        s.set_multicast_loop_v4(true).unwrap();
        assert!(s.multicast_loop_v4().unwrap());
        s.set_multicast_ttl_v4(7).unwrap();
        assert_eq!(s.multicast_ttl_v4().unwrap(), 7);
        if let Ok(s6) = UdpSocket::bind("[::1]:0") {
            s6.set_multicast_loop_v6(false).unwrap();
            assert!(!s6.multicast_loop_v6().unwrap());
        }
    });
}

#[test]
fn try_clone_keeps_timeouts_and_nonblocking_mode_per_handle() {
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        c.set_nonblocking(true).unwrap();
        let c2 = c.try_clone().unwrap();
        assert_eq!(c2.read_timeout().unwrap(), Some(Duration::from_millis(20)));
        let e = (&c2).read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::WouldBlock,
            "clone is non-blocking too"
        );
        // The mode is per handle from now on.
        c2.set_nonblocking(false).unwrap();
        let e = (&c2).read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let e = (&c).read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        l.set_nonblocking(true).unwrap();
        let l2 = l.try_clone().unwrap();
        assert_eq!(l2.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    });
}

#[test]
fn zero_length_reads_and_writes_return_at_once() {
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Nothing to read, nothing written: neither call may park. (A read
        // into an empty buffer used to park until data arrived: the
        // non-blocking recv of 0 bytes fails with EAGAIN.)
        assert_eq!(s.read(&mut []).unwrap(), 0);
        assert_eq!(s.peek(&mut []).unwrap(), 0);
        assert_eq!(
            s.read_vectored(&mut [io::IoSliceMut::new(&mut [])])
                .unwrap(),
            0
        );
        assert_eq!(c.write(&[]).unwrap(), 0);
        c.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        assert_eq!(s.read(&mut []).unwrap(), 0);

        let (a, b) = UnixStream::pair().unwrap();
        assert_eq!((&a).read(&mut []).unwrap(), 0);
        assert_eq!((&b).write(&[]).unwrap(), 0);

        // An empty datagram is a datagram.
        let u1 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let u2 = UdpSocket::bind("127.0.0.1:0").unwrap();
        u1.send_to(&[], u2.local_addr().unwrap()).unwrap();
        let (n, from) = u2.recv_from(&mut [0u8; 8]).unwrap();
        assert_eq!((n, from), (0, u1.local_addr().unwrap()));
    });
}

#[test]
fn binding_an_address_in_use_is_a_clear_error() {
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = TcpListener::bind(l.local_addr().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = UdpSocket::bind(u.local_addr().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        let path = std::env::temp_dir().join(format!("tasklet-api-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let ul = UnixListener::bind(&path).unwrap();
        let e = UnixListener::bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        let e = UnixStream::connect(path.with_extension("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        drop(ul);
        std::fs::remove_file(&path).unwrap();
    });
}

#[test]
fn a_handler_may_return_any_result() {
    run(|| {
        // A handler returning a byte count, like the echo loops in the examples.
        let server = StreamServer::bind("127.0.0.1:0", |mut s: TcpStream, _| -> io::Result<u64> {
            let mut n = 0u64;
            let mut buf = [0u8; 64];
            loop {
                match s.read(&mut buf)? {
                    0 => return Ok(n),
                    k => {
                        s.write_all(&buf[..k])?;
                        n += k as u64;
                    }
                }
            }
        })
        .unwrap();
        let handle = server.start();
        let mut c = TcpStream::connect(handle.local_addr()).unwrap();
        c.write_all(b"counted").unwrap();
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"counted");
        drop(c);
        assert_eq!(handle.stop(Duration::from_secs(5)), 0);
    });
}

#[test]
fn writing_to_a_closed_unix_peer_is_an_error_not_sigpipe() {
    // Default SIGPIPE action (terminate): a write raising it would kill the
    // test binary instead of failing politely.
    // SAFETY: installing SIG_DFL for SIGPIPE is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let e = (&a).write(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
        let e = (&a)
            .write_vectored(&[io::IoSlice::new(b"a"), io::IoSlice::new(b"b")])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
        assert_eq!((&a).read(&mut [0u8; 4]).unwrap(), 0);
    });
}

#[test]
fn sockets_convert_to_and_from_owned_fds() {
    use std::os::fd::OwnedFd;
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let l = TcpListener::from(OwnedFd::from(l));
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        // Through an OwnedFd and back: still cooperative.
        let mut c = TcpStream::from(OwnedFd::from(c));
        let mut s = TcpStream::from(OwnedFd::from(s));
        c.write_all(b"fd").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"fd");
        let (a, b) = UnixDatagram::pair().unwrap();
        let a = UnixDatagram::from(OwnedFd::from(a));
        let reader = tasklet::spawn(move || {
            let mut buf = [0u8; 8];
            let n = a.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        b.send(b"dgram").unwrap();
        assert_eq!(reader.join().unwrap(), b"dgram");
        let u = UdpSocket::from(OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap()));
        assert!(u.local_addr().is_ok());
        let (x, _y) = UnixStream::pair().unwrap();
        let _x = UnixStream::from(OwnedFd::from(x));
    });
}
