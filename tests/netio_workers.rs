//! Servers on every core: `SO_REUSEPORT` listeners and `StreamServer`s on
//! the workers of a `Runtime`, stopping servers from other threads, and the
//! multi-worker examples.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{start_example, wait_bounded};
use tasklet::netio::{ServerStopper, StreamServer, TcpListener, TcpStream};
use tasklet::{worker_index, Runtime};

const LONG: Duration = Duration::from_secs(60);

fn echo(mut s: TcpStream, _peer: SocketAddr) -> std::io::Result<()> {
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
fn two_workers_with_reuse_port_stream_servers_serve_500_clients() {
    const CLIENTS: usize = 500;
    const SIZE: usize = 4096;
    let first = TcpListener::bind_reuse_port("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    let first = Mutex::new(Some(first));
    let per_worker: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let (stop_tx, stop_rx) = mpsc::channel::<ServerStopper>();
    let stop_tx = Mutex::new(stop_tx);
    let counts = per_worker.clone();
    let runtime = std::thread::spawn(move || {
        Runtime::new().workers(2).run(move || {
            let listener = match first.lock().unwrap().take() {
                Some(l) => l,
                None => TcpListener::bind_reuse_port(addr).unwrap(),
            };
            let counts = counts.clone();
            let server = StreamServer::new(listener, move |s, peer| {
                counts[worker_index().unwrap()].fetch_add(1, Ordering::Relaxed);
                echo(s, peer)
            })
            .unwrap()
            .start();
            stop_tx.lock().unwrap().send(server.stopper()).unwrap();
            server.wait();
            server.is_stopped()
        })
    });
    let stoppers: Vec<ServerStopper> = (0..2)
        .map(|_| stop_rx.recv_timeout(LONG).unwrap())
        .collect();

    // The clients: 500 tasklets on a dispatcher of their own.
    let verified = tasklet::dispatch(move || {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                tasklet::spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    c.set_read_timeout(Some(LONG)).unwrap();
                    let msg: Vec<u8> = (0..SIZE).map(|j| (i * 31 + j) as u8).collect();
                    c.write_all(&msg).unwrap();
                    let mut back = vec![0u8; SIZE];
                    c.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg, "client {i}: echo differs");
                    c.shutdown(std::net::Shutdown::Write).unwrap();
                    assert_eq!(c.read(&mut back).unwrap(), 0);
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|h| h.join().is_ok() as usize)
            .sum::<usize>()
    });
    assert_eq!(verified, CLIENTS);

    for s in &stoppers {
        s.stop(Duration::from_secs(5));
        assert!(s.is_stopped());
    }
    assert_eq!(runtime.join().unwrap(), [true, true]);
    let a = per_worker[0].load(Ordering::Relaxed);
    let b = per_worker[1].load(Ordering::Relaxed);
    assert_eq!(a + b, CLIENTS);
    assert!(a > 0 && b > 0, "both workers took connections: {a} + {b}");
}

#[test]
fn a_plain_thread_stops_a_server_with_connected_clients() {
    let (tx, rx) = mpsc::channel();
    let server_thread = std::thread::spawn(move || {
        tasklet::dispatch(move || {
            let server = StreamServer::bind("127.0.0.1:0", echo).unwrap().start();
            tx.send((server.local_addr(), server.stopper())).unwrap();
            server.wait();
            server.is_stopped()
        })
    });
    let (addr, stopper) = rx.recv_timeout(LONG).unwrap();
    assert!(!stopper.is_stopped());
    // A connected, idle client: killed after the grace period.
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(LONG)).unwrap();
    c.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    let killed = stopper.stop(Duration::from_millis(50));
    assert_eq!(killed, 1);
    assert!(stopper.is_stopped());
    assert_eq!(c.read(&mut b).unwrap(), 0, "connection closed by the stop");
    assert!(server_thread.join().unwrap());
    // Stopping again, or after the dispatcher exited, returns at once.
    assert_eq!(stopper.stop(Duration::ZERO), 1);
    assert!(stopper.wait_timeout(Duration::ZERO));
}

#[test]
fn a_stopper_of_a_server_whose_dispatcher_exited_does_not_wait() {
    let stopper = tasklet::dispatch(|| {
        let server = StreamServer::bind("127.0.0.1:0", echo).unwrap().start();
        server.stopper()
    });
    assert!(stopper.is_stopped());
    stopper.stop(Duration::from_secs(1));
}

#[test]
fn echo_server_with_two_workers_exits_0_on_sigint_with_connected_clients() {
    let (mut server, addr, drain) = start_example(
        "echo_server",
        &["--addr", "127.0.0.1:0", "--workers", "2"],
        &["listening on "],
    );
    let mut clients = Vec::new();
    for i in 0..20u8 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(LONG)).unwrap();
        c.write_all(&[i; 100]).unwrap();
        let mut b = [0u8; 100];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b, [i; 100]);
        clients.push(c);
    }
    // SAFETY: sending SIGINT to our own child process.
    assert_eq!(unsafe { libc::kill(server.0.id() as i32, libc::SIGINT) }, 0);
    let status = wait_bounded(&mut server.0, Duration::from_secs(20));
    let log = drain.join().unwrap();
    assert!(status.success(), "echo_server exited with {status}: {log}");
    assert!(
        log.contains("with 2 worker(s)") || log.contains("Int received"),
        "{log}"
    );
    for mut c in clients {
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap_or(0), 0, "connection closed at exit");
    }
}

#[test]
fn http_hello_with_two_workers_serves_and_stops_on_sigterm() {
    let (mut server, addr, drain) = start_example(
        "http_hello",
        &["--addr", "127.0.0.1:0", "--workers", "2", "--work-us", "10"],
        &["listening on "],
    );
    for _ in 0..20 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(LONG)).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("Hello, World!"), "{answer}");
    }
    common::sigterm_and_wait(&mut server, "http_hello");
    let log = drain.join().unwrap();
    assert!(log.contains("stopped"), "{log}");
}
