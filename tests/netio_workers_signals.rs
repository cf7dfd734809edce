//! SIGTERM stops every worker's `StreamServer` (`stop_on_signals`) once.
//!
//! One test function in its own binary, so the signal raised here never
//! races another test; it is raised only once both servers wait for it
//! (`signal::waiting`), so it never has its default effect.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tasklet::netio::{StreamServer, TcpListener, TcpStream};
use tasklet::signal::{self, Signal};
use tasklet::Runtime;

#[test]
fn sigterm_stops_the_stream_server_of_every_worker_once() {
    let first = TcpListener::bind_reuse_port("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    let first = Mutex::new(Some(first));
    let stops = Arc::new(AtomicUsize::new(0));
    let s = stops.clone();
    let raiser = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while signal::waiting(Signal::Term) < 2 {
            assert!(
                Instant::now() < deadline,
                "the servers never waited for SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // A connected client on the way: it is served, then closed by the stop.
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        c.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        // SAFETY: raising a signal in our own process; both servers wait for it.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        c
    });
    let stopped = Runtime::new().workers(2).run(move || {
        let listener = match first.lock().unwrap().take() {
            Some(l) => l,
            None => TcpListener::bind_reuse_port(addr).unwrap(),
        };
        let server = StreamServer::new(listener, |mut s: TcpStream, _| {
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        })
        .unwrap()
        .grace_period(Duration::from_millis(100))
        .stop_on_signals(true)
        .start();
        server.wait();
        s.fetch_add(1, Ordering::SeqCst);
        server.is_stopped()
    });
    assert_eq!(stopped, [true, true]);
    assert_eq!(stops.load(Ordering::SeqCst), 2);
    let mut c = raiser.join().unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        c.read(&mut b).unwrap_or(0),
        0,
        "the client was closed by the stop"
    );
    assert_eq!(signal::waiting(Signal::Term), 0);
}
