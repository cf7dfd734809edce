//! Sockets handed between threads: from one dispatcher to another, and
//! from a dispatcher to a thread without one.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use tasklet::netio::TcpStream;

/// A std peer that echoes single bytes, each after a delay so that the
/// reader surely parks (and registers the socket with its dispatcher).
fn slow_byte_echo() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1];
        while s.read(&mut buf).unwrap() == 1 {
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(&buf).unwrap();
        }
    });
    (addr, peer)
}

fn roundtrip(s: &TcpStream, b: u8) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&*s).write_all(&[b]).unwrap();
    let mut r = [0u8; 1];
    (&*s).read_exact(&mut r).unwrap();
    assert_eq!(r[0], b);
}

#[test]
fn a_stream_moves_to_another_dispatcher_and_to_a_plain_thread() {
    let (addr, peer) = slow_byte_echo();
    let (to_b, from_a) = mpsc::channel::<TcpStream>();
    let b = std::thread::spawn(move || {
        tasklet::dispatch(move || {
            let s = from_a.recv_timeout(Duration::from_secs(10)).unwrap();
            roundtrip(&s, 2);
            s
        })
    });
    tasklet::dispatch(move || {
        let s = TcpStream::connect(addr).unwrap();
        roundtrip(&s, 1);
        to_b.send(s).unwrap();
    });
    // Dispatcher B is gone; the socket keeps working, blocking this thread.
    let s = b.join().unwrap();
    roundtrip(&s, 3);
    drop(s);
    peer.join().unwrap();
}

/// Regression: the hub of the first dispatcher still has the fd in its epoll
/// set when the socket comes back; registering it again used to fail with
/// `AlreadyExists` (EEXIST) instead of re-pointing the registration.
#[test]
fn a_stream_moves_to_another_dispatcher_and_back() {
    let (addr, peer) = slow_byte_echo();
    let (to_b, from_a) = mpsc::channel::<TcpStream>();
    let (to_a, from_b) = mpsc::channel::<TcpStream>();
    let b = std::thread::spawn(move || {
        tasklet::dispatch(move || {
            let s = from_a.recv_timeout(Duration::from_secs(10)).unwrap();
            roundtrip(&s, 2);
            to_a.send(s).unwrap();
        })
    });
    tasklet::dispatch(move || {
        let s = TcpStream::connect(addr).unwrap();
        roundtrip(&s, 1);
        to_b.send(s).unwrap();
        let s = tasklet::unblock(move || from_b.recv_timeout(Duration::from_secs(10))).unwrap();
        roundtrip(&s, 3);
    });
    b.join().unwrap();
    peer.join().unwrap();
}
