//! `StreamServer`: handlers per connection, connection limit, graceful stop.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::netio::{StreamServer, TcpListener, TcpStream};

fn run<T: 'static>(f: impl FnOnce() -> T + 'static) -> T {
    tasklet::dispatch(|| tasklet::timeout(Duration::from_secs(60), f).expect("test timed out"))
}

fn echo(mut s: TcpStream, _peer: std::net::SocketAddr) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n])?;
    }
}

fn roundtrip(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn serves_many_clients_one_tasklet_each() {
    run(|| {
        let handle = StreamServer::bind("127.0.0.1:0", echo).unwrap().start();
        let addr = handle.local_addr();
        let clients: Vec<_> = (0..200u8)
            .map(|i| {
                tasklet::spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    for j in 0..5u8 {
                        roundtrip(&mut c, &[i ^ j; 300]);
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
}

#[test]
fn graceful_stop_with_clients_still_connected() {
    run(|| {
        let handle = StreamServer::bind("127.0.0.1:0", echo).unwrap().start();
        let addr = handle.local_addr();
        // Two idle clients stay connected through the stop...
        let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for c in &mut idle {
            roundtrip(c, b"hello");
        }
        // ...and one finishes during the grace period.
        let mut polite = TcpStream::connect(addr).unwrap();
        roundtrip(&mut polite, b"bye soon");
        assert_eq!(handle.connections(), 3);
        let leaver = tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(30));
            roundtrip(&mut polite, b"still served during the grace period");
            drop(polite);
        });

        let t = Instant::now();
        let killed = handle.stop(Duration::from_millis(300));
        let took = t.elapsed();
        leaver.join().unwrap();
        assert_eq!(
            killed, 2,
            "the idle clients are killed after the grace period"
        );
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(handle.connections(), 0);
        assert!(handle.is_stopped());
        // Their connections were closed, and the port no longer accepts.
        for mut c in idle {
            assert_eq!(c.read(&mut [0u8; 8]).unwrap(), 0);
        }
        let e = TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        // A second stop (or a wait) returns at once.
        assert_eq!(handle.stop(Duration::from_secs(1)), 0);
        handle.wait();
    });
}

#[test]
fn stop_from_another_tasklet_ends_serve_forever() {
    run(|| {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap();
        let handle = server.handle();
        let addr = server.local_addr();
        let client = tasklet::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            roundtrip(&mut c, b"x");
            handle.stop(Duration::ZERO)
        });
        server.serve_forever();
        assert_eq!(client.join().unwrap(), 1);
    });
}

#[test]
fn connection_limit_makes_accept_wait_and_drops_nobody() {
    run(|| {
        let running = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let (r, p) = (running.clone(), peak.clone());
        let handle = StreamServer::bind("127.0.0.1:0", move |mut s: TcpStream, _| {
            r.set(r.get() + 1);
            p.set(p.get().max(r.get()));
            let mut b = [0u8; 1];
            let res = s.read_exact(&mut b).and_then(|_| s.write_all(&b));
            tasklet::sleep(Duration::from_millis(5));
            r.set(r.get() - 1);
            res
        })
        .unwrap()
        .max_connections(3)
        .start();
        let addr = handle.local_addr();
        let clients: Vec<_> = (0..20u8)
            .map(|i| {
                tasklet::spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    roundtrip(&mut c, &[i]);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(
            peak.get(),
            3,
            "never more than the limit, and the limit is used"
        );
        handle.stop(Duration::from_secs(1));
    });
}

#[test]
fn a_panicking_handler_does_not_stop_the_server() {
    run(|| {
        let handle = StreamServer::bind("127.0.0.1:0", |mut s: TcpStream, _| {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            if b[0] == b'!' {
                panic!("handler bug (expected by the test)");
            }
            s.write_all(&b).unwrap();
        })
        .unwrap()
        .start();
        let addr = handle.local_addr();
        let mut bad = TcpStream::connect(addr).unwrap();
        bad.write_all(b"!").unwrap();
        assert_eq!(
            bad.read(&mut [0u8; 1]).unwrap(),
            0,
            "the panicked handler's socket closes"
        );
        let mut good = TcpStream::connect(addr).unwrap();
        roundtrip(&mut good, b"k");
        assert_eq!(handle.stop(Duration::from_secs(1)), 0);
    });
}

#[test]
fn server_on_a_listener_bound_before_dispatch() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    run(move || {
        let server = StreamServer::new(l, echo)
            .unwrap()
            .grace_period(Duration::from_millis(10));
        assert!(format!("{server:?}").contains("StreamServer"));
        let h = server.start();
        let mut c = TcpStream::connect(h.local_addr()).unwrap();
        roundtrip(&mut c, b"inherited");
        assert!(format!("{h:?}").contains("connections: 1"));
        assert_eq!(h.stop(Duration::from_millis(10)), 1);
    });
}
