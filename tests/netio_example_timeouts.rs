//! The example servers drop clients that would otherwise hold a connection
//! forever (issue 8, defect 6): `http_hello` a client that pipelines
//! requests but never reads (write deadline) and one that trickles a request
//! head (whole-request deadline); `echo_server` and `chat_server` an idle
//! client (`--idle-timeout`). Timeouts are set short by flag; every client
//! wait is bounded by [`LIMIT`], far longer.
//!
//! Also the netio API behind them: `set_read_deadline` / `set_write_deadline`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

mod common;
use common::{sigterm_and_wait, start_example};

/// How long a client waits for the server to drop it before the test fails.
const LIMIT: Duration = Duration::from_secs(20);

/// Waits until the server closes `s` (EOF or reset) and returns how long
/// that took; fails after [`LIMIT`]. Whatever the server sends first (a
/// prompt) is skipped.
fn until_closed(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("the server did not drop the client within {LIMIT:?}: {e}"),
        }
        assert!(start.elapsed() < LIMIT, "the server keeps the client");
    }
}

fn stop(mut child: common::KillOnDrop, log: std::thread::JoinHandle<String>, name: &str) {
    sigterm_and_wait(&mut child, name);
    let log = log.join().unwrap();
    assert!(!log.contains("panicked"), "{name}: {log}");
}

#[test]
fn http_hello_drops_a_client_that_never_reads() {
    let (server, addr, log) = start_example(
        "http_hello",
        &["--addr", "127.0.0.1:0", "--write-timeout", "1"],
        &["listening on "],
    );
    let s = TcpStream::connect(&addr).unwrap();
    // A small receive buffer, so the server's writes block soon.
    let small: libc::c_int = 4096;
    // SAFETY: setting an int socket option from a valid local.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.set_write_timeout(Some(LIMIT)).unwrap();
    let start = Instant::now();
    let batch = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(256);
    // Pipeline requests without reading a byte: once the server's write
    // deadline passes it closes the connection, and our writes fail.
    let err = loop {
        if let Err(e) = (&s).write_all(&batch) {
            break e;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the server keeps a client that never reads"
        );
    };
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "the server did not drop the client within {LIMIT:?}: {err}"
    );
    stop(server, log, "http_hello");
}

#[test]
fn http_hello_cuts_off_a_trickled_request_head() {
    let (server, addr, log) = start_example(
        "http_hello",
        &["--addr", "127.0.0.1:0", "--request-timeout", "1"],
        &["listening on "],
    );
    let mut s = TcpStream::connect(&addr).unwrap();
    // A whole request first: keep-alive works, the deadline restarts.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    // Then a head trickled a byte every 100 ms: each read comes well
    // within the idle timeout (60 s), the whole never completes.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let head = b"GET / HTTP/1.1\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'));
    for &b in head {
        if s.write_all(&[b]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => panic!(
                "unexpected answer: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(_) => {} // still open: next byte
        }
        assert!(
            start.elapsed() < LIMIT,
            "the server keeps a trickling client"
        );
    }
    stop(server, log, "http_hello");
}

#[test]
fn echo_server_drops_an_idle_client() {
    let (server, addr, log) = start_example(
        "echo_server",
        &["--addr", "127.0.0.1:0", "--idle-timeout", "0.5"],
        &["listening on "],
    );
    // One that never sends, one that goes quiet after an echo.
    let mut silent = TcpStream::connect(&addr).unwrap();
    let mut quiet = TcpStream::connect(&addr).unwrap();
    quiet.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    quiet.set_read_timeout(Some(LIMIT)).unwrap();
    quiet.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    until_closed(&mut silent);
    until_closed(&mut quiet);
    stop(server, log, "echo_server");
}

#[test]
fn chat_server_drops_an_idle_client() {
    let (server, addr, log) = start_example(
        "chat_server",
        &["--addr", "127.0.0.1:0", "--idle-timeout", "0.5"],
        &["listening on "],
    );
    // One that never sends its nickname, one that joins and goes quiet.
    let mut anonymous = TcpStream::connect(&addr).unwrap();
    let mut quiet = TcpStream::connect(&addr).unwrap();
    quiet.write_all(b"quiet\n").unwrap();
    until_closed(&mut anonymous);
    until_closed(&mut quiet);
    stop(server, log, "chat_server");
}

#[test]
fn read_and_write_deadlines_bound_a_whole_exchange() {
    use tasklet::netio::{TcpListener, TcpStream};
    tasklet::dispatch(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();

        // A reader trickled a byte every 20 ms never waits long (the read
        // timeout is not reached) but runs into its deadline.
        server.set_read_timeout(Some(LIMIT)).unwrap();
        let deadline = Instant::now() + Duration::from_millis(200);
        server.set_read_deadline(Some(deadline)).unwrap();
        assert_eq!(server.read_deadline().unwrap(), Some(deadline));
        let trickle = tasklet::spawn(move || {
            for _ in 0..200 {
                if (&client).write_all(b"x").is_err() {
                    break;
                }
                tasklet::sleep(Duration::from_millis(20));
            }
            client
        });
        let mut got = 0;
        let err = loop {
            match (&server).read(&mut [0u8; 64]) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(Instant::now() >= deadline);
        assert!(got > 0, "data before the deadline was read");
        let client = trickle.join().unwrap();

        // A write to a peer that never reads fails once its deadline passes.
        server.set_read_deadline(None).unwrap();
        let deadline = Instant::now() + Duration::from_millis(200);
        server.set_write_deadline(Some(deadline)).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let err = loop {
            if let Err(e) = (&server).write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(Instant::now() >= deadline);
        drop(client);
    });
}
