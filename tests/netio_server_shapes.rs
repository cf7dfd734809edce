//! The other server shapes: `StreamServer` over a `UnixListener` (limit,
//! graceful stop) and `DatagramServer` over UDP and Unix datagram sockets
//! (a handler per datagram, bounded in flight, replies with `send_to`).

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use tasklet::netio::{
    DatagramServer, Listener, StreamServer, TcpListener, UdpSocket, UnixDatagram, UnixStream,
};

fn run<T: 'static>(f: impl FnOnce() -> T + 'static) -> T {
    tasklet::dispatch(|| tasklet::timeout(Duration::from_secs(60), f).expect("test timed out"))
}

fn sock_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tasklet-shapes-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn unix_echo(mut s: UnixStream, _peer: std::os::unix::net::SocketAddr) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n])?;
    }
}

#[test]
fn unix_stream_server_serves_many_clients() {
    let path = sock_path("many");
    let p = path.clone();
    run(move || {
        let handle = StreamServer::bind_unix(&p, unix_echo).unwrap().start();
        assert_eq!(handle.local_addr().as_pathname(), Some(p.as_path()));
        let clients: Vec<_> = (0..100u8)
            .map(|i| {
                let p = p.clone();
                tasklet::spawn(move || {
                    let mut c = UnixStream::connect(&p).unwrap();
                    for j in 0..5u8 {
                        c.write_all(&[i ^ j; 500]).unwrap();
                        let mut back = [0u8; 500];
                        c.read_exact(&mut back).unwrap();
                        assert_eq!(back, [i ^ j; 500]);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(handle.stop(Duration::from_secs(5)), 0);
        assert!(handle.is_stopped());
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unix_stream_server_limit_and_graceful_stop() {
    let path = sock_path("limit");
    let p = path.clone();
    run(move || {
        let running = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let (r, pk) = (running.clone(), peak.clone());
        let server = StreamServer::bind_unix(&p, move |s, peer| {
            r.set(r.get() + 1);
            pk.set(pk.get().max(r.get()));
            let res = unix_echo(s, peer);
            r.set(r.get() - 1);
            res
        })
        .unwrap()
        .max_connections(3);
        assert!(format!("{server:?}").contains("StreamServer"));
        let handle = server.start();
        // Five idle clients: three are served, two wait in the backlog.
        let mut clients: Vec<UnixStream> =
            (0..5).map(|_| UnixStream::connect(&p).unwrap()).collect();
        for c in &mut clients[..3] {
            c.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
        }
        assert_eq!(handle.connections(), 3);
        // One leaves: a waiting one is served.
        drop(clients.remove(0));
        clients[2].write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        clients[2].read_exact(&mut b).unwrap();
        assert_eq!(&b, b"y");
        assert_eq!(peak.get(), 3);
        // Graceful stop: the connected ones are killed after the grace period.
        let killed = handle.stop(Duration::from_millis(50));
        assert_eq!(killed, 3);
        assert_eq!(handle.connections(), 0);
        for c in &mut clients[..3] {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert_eq!(c.read(&mut b).unwrap(), 0, "closed by the stop");
        }
    });
    std::fs::remove_file(&path).unwrap();
}

/// `StreamServer::new` over any `Listener`: here a wrapper that counts
/// accepted connections.
#[test]
fn stream_server_over_a_custom_listener() {
    struct Counting(TcpListener, Rc<Cell<usize>>);
    impl Listener for Counting {
        type Stream = tasklet::netio::TcpStream;
        type Addr = std::net::SocketAddr;
        fn accept(&self) -> io::Result<(Self::Stream, Self::Addr)> {
            self.1.set(self.1.get() + 1);
            self.0.accept()
        }
        fn local_addr(&self) -> io::Result<Self::Addr> {
            self.0.local_addr()
        }
    }
    run(|| {
        let count = Rc::new(Cell::new(0));
        let l = Counting(TcpListener::bind("127.0.0.1:0").unwrap(), count.clone());
        let handle = StreamServer::new(l, |mut s: tasklet::netio::TcpStream, _| s.write_all(b"hi"))
            .unwrap()
            .start();
        for _ in 0..3 {
            let mut c = tasklet::netio::TcpStream::connect(handle.local_addr()).unwrap();
            let mut got = String::new();
            c.read_to_string(&mut got).unwrap();
            assert_eq!(got, "hi");
        }
        assert!(count.get() >= 3);
        handle.stop(Duration::from_secs(5));
    });
}

#[test]
fn datagram_server_replies_to_each_datagram() {
    run(|| {
        let handle = DatagramServer::bind("127.0.0.1:0", |sock: &UdpSocket, data, peer| {
            let mut reply = b"re: ".to_vec();
            reply.extend_from_slice(&data);
            sock.send_to(&reply, peer)
        })
        .unwrap()
        .start();
        let addr = handle.local_addr();
        let clients: Vec<_> = (0..50u32)
            .map(|i| {
                tasklet::spawn(move || {
                    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                    c.set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    let msg = format!("hello {i}");
                    let mut buf = [0u8; 64];
                    // UDP may drop: retry a few times.
                    for _ in 0..20 {
                        c.send_to(msg.as_bytes(), addr).unwrap();
                        if let Ok((n, from)) = c.recv_from(&mut buf) {
                            assert_eq!(from, addr);
                            assert_eq!(&buf[..n], format!("re: {msg}").as_bytes());
                            return;
                        }
                    }
                    panic!("no reply for {msg}");
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(handle.stop(Duration::from_secs(5)), 0);
        assert!(handle.is_stopped());
    });
}

/// At most `max_in_flight` handlers run at once; every datagram is still
/// handled (they wait in the socket's receive buffer).
#[test]
fn datagram_server_bounds_handlers_in_flight() {
    run(|| {
        let running = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let (r, pk) = (running.clone(), peak.clone());
        let server = DatagramServer::bind("127.0.0.1:0", move |sock: &UdpSocket, data, peer| {
            r.set(r.get() + 1);
            pk.set(pk.get().max(r.get()));
            tasklet::sleep(Duration::from_millis(5));
            r.set(r.get() - 1);
            sock.send_to(&data, peer).map(|_| ())
        })
        .unwrap()
        .max_in_flight(4);
        assert!(format!("{server:?}").contains("DatagramServer"));
        let handle = server.start();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // 40 datagrams at once: far below the receive buffer, none dropped on loopback.
        for i in 0..40u8 {
            c.send_to(&[i], handle.local_addr()).unwrap();
        }
        let mut seen = [false; 40];
        for _ in 0..40 {
            let mut b = [0u8; 4];
            let n = c.recv(&mut b).unwrap();
            assert_eq!(n, 1);
            seen[b[0] as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(peak.get(), 4, "the limit was reached and held");
        handle.stop(Duration::from_secs(5));
    });
}

/// The stop kills handlers still running after the grace period; the
/// socket stays usable for the replies of those that finish in time.
#[test]
fn datagram_server_graceful_stop() {
    run(|| {
        let handle = DatagramServer::bind("127.0.0.1:0", |sock: &UdpSocket, data, peer| {
            if data == b"slow" {
                tasklet::sleep(Duration::from_secs(3600));
            } else {
                tasklet::sleep(Duration::from_millis(20));
            }
            sock.send_to(&data, peer).map(|_| ())
        })
        .unwrap()
        .start();
        let addr = handle.local_addr();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.send_to(b"slow", addr).unwrap();
        c.send_to(b"fast", addr).unwrap();
        // Both handlers are running once the server has taken both datagrams.
        while handle.connections() < 2 {
            tasklet::sleep(Duration::from_millis(1));
        }
        let stopper = {
            let h = handle.clone();
            tasklet::spawn(move || h.stop(Duration::from_secs(2)))
        };
        let mut b = [0u8; 8];
        let n = c.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"fast", "answered during the grace period");
        assert_eq!(stopper.join().unwrap(), 1, "the slow one was killed");
        assert!(handle.is_stopped());
        // The socket is closed: the kernel refuses datagrams to its port
        // (reported to a connected UDP socket as ECONNREFUSED).
        c.connect(addr).unwrap();
        c.send(b"late").unwrap();
        let err = c.recv(&mut b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    });
}

#[test]
fn unix_datagram_server() {
    let path = sock_path("dgram");
    let client_path = sock_path("dgram-client");
    let (p, cp) = (path.clone(), client_path.clone());
    run(move || {
        let server = DatagramServer::bind_unix(&p, |sock: &UnixDatagram, data, peer| {
            let reply: Vec<u8> = data.iter().rev().copied().collect();
            sock.send_to_addr(&reply, &peer).map(|_| ())
        })
        .unwrap()
        .max_datagram_size(1024);
        assert_eq!(
            server.socket().local_addr().unwrap().as_pathname(),
            Some(p.as_path())
        );
        let handle = server.start();
        let c = UnixDatagram::bind(&cp).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for msg in [&b"abc"[..], b"tasklet"] {
            c.send_to(msg, &p).unwrap();
            let mut b = [0u8; 16];
            let n = c.recv(&mut b).unwrap();
            let want: Vec<u8> = msg.iter().rev().copied().collect();
            assert_eq!(&b[..n], &want[..]);
        }
        handle.stop(Duration::from_secs(5));
    });
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&client_path).unwrap();
}

/// One SIGTERM stops a Unix `StreamServer` and a `DatagramServer` that both
/// `stop_on_signals` (the only test of this binary that raises a signal,
/// and only once both servers wait for it).
#[test]
fn sigterm_stops_unix_and_datagram_servers() {
    use tasklet::signal::{self, Signal};
    let path = sock_path("signals");
    let p = path.clone();
    run(move || {
        let stream = StreamServer::bind_unix(&p, unix_echo)
            .unwrap()
            .grace_period(Duration::from_millis(20))
            .stop_on_signals(true)
            .start();
        let dgram =
            DatagramServer::bind("127.0.0.1:0", |s: &UdpSocket, d, peer| s.send_to(&d, peer))
                .unwrap()
                .stop_on_signals(true)
                .start();
        let mut c = UnixStream::connect(&p).unwrap();
        c.write_all(b"hi").unwrap();
        c.read_exact(&mut [0u8; 2]).unwrap();
        let mut waited = 0;
        while signal::waiting(Signal::Term) < 2 {
            waited += 1;
            assert!(waited < 10_000, "the servers never waited for SIGTERM");
            tasklet::sleep(Duration::from_millis(1));
        }
        // SAFETY: raising a signal at our own process, which has waiters for it.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        stream.wait();
        dgram.wait();
        assert!(stream.is_stopped() && dgram.is_stopped());
        assert_eq!(
            c.read(&mut [0u8; 2]).unwrap(),
            0,
            "the client was disconnected"
        );
        assert_eq!(signal::waiting(Signal::Term), 0);
    });
    std::fs::remove_file(&path).unwrap();
}
