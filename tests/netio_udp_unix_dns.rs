//! `tasklet::netio` UDP, Unix sockets and cooperative name resolution.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tasklet::netio::{
    lookup_host, TcpListener, TcpStream, ToSocketAddrs, UdpSocket, UnixDatagram, UnixListener,
    UnixStream,
};

fn run<T: 'static>(f: impl FnOnce() -> T + 'static) -> T {
    tasklet::dispatch(|| tasklet::timeout(Duration::from_secs(60), f).expect("test timed out"))
}

fn sock_path(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tasklet-netio-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn udp_echo_many_datagrams_and_connected_send_recv() {
    run(|| {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let echo = tasklet::spawn(move || {
            let mut buf = [0u8; 2048];
            for _ in 0..200 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                server.send_to(&buf[..n], from).unwrap();
            }
        });
        let clients: Vec<_> = (0..20u8)
            .map(|c| {
                tasklet::spawn(move || {
                    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                    s.connect(addr).unwrap();
                    assert_eq!(s.peer_addr().unwrap(), addr);
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    for m in 0..10u8 {
                        let msg = vec![c ^ m; 100 + c as usize * 10];
                        assert_eq!(s.send(&msg).unwrap(), msg.len());
                        let mut buf = [0u8; 2048];
                        let n = s.recv(&mut buf).unwrap();
                        assert_eq!(&buf[..n], &msg[..]);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        echo.join().unwrap();
    });
}

#[test]
fn udp_recv_timeout_peek_and_send_to_a_name() {
    run(|| {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("localhost:0").unwrap();
        a.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        let t = Instant::now();
        let e = a.recv_from(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(30));

        let a_port = a.local_addr().unwrap().port();
        b.send_to(b"hello", ("localhost", a_port)).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = a.peek_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], b.local_addr().unwrap()));
        let (n, _) = a.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");

        a.set_nonblocking(true).unwrap();
        assert_eq!(
            a.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.set_ttl(9).unwrap();
        assert_eq!(a.ttl().unwrap(), 9);
        let std_a = a.into_std().unwrap();
        assert!(UdpSocket::from_std(std_a).is_ok());
    });
}

#[test]
fn udp_connected_to_a_closed_port_reports_refused() {
    run(|| {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send(b"anyone?").unwrap();
        // The ICMP port-unreachable surfaces on the next receive.
        let e = s.recv(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    });
}

#[test]
fn unix_stream_echo_half_close_and_timeouts() {
    let path = sock_path("stream");
    let p = path.clone();
    run(move || {
        let l = UnixListener::bind(&p).unwrap();
        let server = tasklet::spawn(move || {
            for _ in 0..50 {
                let (mut s, _) = l.accept().unwrap();
                tasklet::spawn(move || {
                    let mut all = Vec::new();
                    s.read_to_end(&mut all).unwrap();
                    s.write_all(&all).unwrap();
                });
            }
        });
        let clients: Vec<_> = (0..50usize)
            .map(|i| {
                let p = p.clone();
                tasklet::spawn(move || {
                    let mut c = UnixStream::connect(&p).unwrap();
                    let msg: Vec<u8> = (0..20_000 + i * 100).map(|j| (j * i) as u8).collect();
                    c.write_all(&msg).unwrap();
                    c.shutdown(Shutdown::Write).unwrap();
                    let mut back = Vec::new();
                    c.read_to_end(&mut back).unwrap();
                    assert_eq!(back, msg);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        server.join().unwrap();

        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(
            (&a).read(&mut [0u8; 4]).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        let b2 = b.try_clone().unwrap();
        (&b2).write_all(b"dup").unwrap();
        let mut buf = [0u8; 3];
        (&a).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"dup");
        drop(b);
        drop(b2);
        assert_eq!((&a).read(&mut buf).unwrap(), 0);
        // The peer is gone: writing is an error, not SIGPIPE.
        let e = (&a).write_all(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unix_datagrams() {
    let path = sock_path("dgram");
    let p = path.clone();
    run(move || {
        let server = UnixDatagram::bind(&p).unwrap();
        let echo = tasklet::spawn(move || {
            let mut buf = [0u8; 256];
            for _ in 0..10 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                let to = from.as_pathname().expect("client is bound").to_owned();
                server.send_to(&buf[..n], to).unwrap();
            }
        });
        let client_path = sock_path("dgram-client");
        let c = UnixDatagram::bind(&client_path).unwrap();
        c.connect(&p).unwrap();
        for i in 0..10u8 {
            c.send(&[i; 10]).unwrap();
            let mut buf = [0u8; 256];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 10]);
        }
        echo.join().unwrap();
        std::fs::remove_file(&client_path).unwrap();

        let (x, y) = UnixDatagram::pair().unwrap();
        x.send(b"pair").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(y.recv(&mut buf).unwrap(), 4);
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn localhost_resolves_and_connects_without_blocking_the_dispatcher() {
    run(|| {
        let addrs = "localhost:4242".resolve().unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 4242),
            "{addrs:?}"
        );
        let first = lookup_host(("localhost", 80)).unwrap().next().unwrap();
        assert!(first.ip().is_loopback());

        // A ticker keeps running while names are being resolved.
        let ticker = tasklet::spawn(|| {
            let mut n = 0;
            for _ in 0..5 {
                tasklet::sleep(Duration::from_millis(1));
                n += 1;
            }
            n
        });
        let l = TcpListener::bind("localhost:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tasklet::spawn(move || l.accept().map(|_| ()));
        let c = TcpStream::connect(format!("localhost:{port}")).unwrap();
        assert!(c.peer_addr().unwrap().ip().is_loopback());
        server.join().unwrap().unwrap();
        assert_eq!(ticker.join().unwrap(), 5);
    });
}

#[test]
fn ip_literals_skip_the_resolver() {
    // Literal forms resolve in place (no offload thread, works anywhere).
    let cases: Vec<(Vec<SocketAddr>, &str)> = vec![
        ("127.0.0.1:80".resolve().unwrap(), "127.0.0.1:80"),
        ("[::1]:443".resolve().unwrap(), "[::1]:443"),
        (("::1", 443).resolve().unwrap(), "[::1]:443"),
        (("[::1]", 443).resolve().unwrap(), "[::1]:443"),
        (
            (Ipv4Addr::new(10, 0, 0, 1), 1).resolve().unwrap(),
            "10.0.0.1:1",
        ),
        (
            String::from("192.168.1.1:8").resolve().unwrap(),
            "192.168.1.1:8",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, vec![want.parse::<SocketAddr>().unwrap()]);
    }
    let e = "no-port-here".resolve().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let e = ("", 80).resolve().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn unknown_host_is_an_error_not_a_hang() {
    run(|| {
        // `.invalid` is reserved (RFC 2606) and never resolves.
        let r = TcpStream::connect("no-such-host.invalid:80");
        assert!(r.is_err());
    });
}
