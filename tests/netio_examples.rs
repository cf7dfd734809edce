//! The example servers under hostile or unusual clients: malformed and
//! tricky HTTP requests, a chat client that never sends a newline or sends a
//! burst of lines, a forwarded connection reset while both directions are
//! stuck, an echo message larger than the socket buffers.
//!
//! Each test starts the example binary (built next to this test executable,
//! as `cargo test` does) on port 0 and drives it with std sockets; every
//! read is bounded by a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);

mod common;
use common::{chat_join, example, sigterm_and_wait, start_example, KillOnDrop};

/// Starts an example server on port 0; returns it, the address it logged
/// after "listening on " (or "forwarding "), and a thread collecting the
/// rest of its log.
fn start(name: &str, args: &[&str]) -> (KillOnDrop, String, std::thread::JoinHandle<String>) {
    start_example(name, args, &["listening on ", "forwarding "])
}

/// SIGTERM, then a bounded wait for a clean exit; returns the rest of the log.
fn stop(mut child: KillOnDrop, drain: std::thread::JoinHandle<String>, name: &str) -> String {
    sigterm_and_wait(&mut child, name);
    let log = drain.join().unwrap();
    assert!(!log.contains("panicked"), "{name} panicked: {log}");
    log
}

/// Sends `request`, half-closes, and reads everything the server answers
/// until it closes the connection.
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(request).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("reading the answer to {request:?}: {e}"));
    String::from_utf8_lossy(&out).into_owned()
}

/// The final status codes in a stream of responses (`100 Continue` excluded).
fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answer[i + 9..].get(..3)?.parse().ok())
        .filter(|&code| code != 100)
        .collect()
}

#[test]
fn http_hello_frames_requests_correctly_and_refuses_ambiguous_ones() {
    let (server, addr, drain) = start("http_hello", &["--addr", "127.0.0.1:0"]);
    let get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let big_body = format!(
        "POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n{}{get}",
        "b".repeat(1_000_000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\n{}\r\n",
        (0..40).map(|i| format!("X-{i}: y\r\n")).collect::<String>()
    );
    let cases: Vec<(&str, String, Vec<u16>)> = vec![
        ("pipelined", get.repeat(3), vec![200, 200, 200]),
        // Content-Length must be digits, fit in u64, and agree with itself;
        // before, these were read as 0 (or wrapped) and the body was taken
        // for the next request.
        (
            "non-numeric length",
            format!("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n{get}"),
            vec![400],
        ),
        (
            "negative length",
            format!("POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n{get}"),
            vec![400],
        ),
        (
            "overflowing length",
            format!("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n{get}"),
            vec![400],
        ),
        (
            "conflicting lengths",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc".into(),
            vec![400],
        ),
        // A chunked body is skipped, extensions and trailers included.
        (
            "chunked",
            format!(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n\
                 10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n{get}"
            ),
            vec![200, 200],
        ),
        (
            "bad chunk size",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".into(),
            vec![400],
        ),
        (
            "chunked and a length",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
                .into(),
            vec![400],
        ),
        (
            "unknown transfer coding",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            vec![501],
        ),
        // A body larger than any buffer is streamed through, not refused.
        ("1 MB body", big_body, vec![200, 200]),
        ("too many headers", many_headers, vec![431]),
        ("garbage", "\x01\x02 nonsense\r\n\r\n".into(), vec![400]),
        (
            "close among tokens",
            "GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\nGET / HTTP/1.1\r\n\r\n".into(),
            vec![200],
        ),
    ];
    for (what, request, expected) in cases {
        let answer = exchange(&addr, request.as_bytes());
        assert_eq!(statuses(&answer), expected, "{what}: {answer:?}");
    }

    // HEAD gets the headers only: a body would be read as the next response.
    let answer = exchange(&addr, format!("HEAD / HTTP/1.1\r\n\r\n{get}").as_bytes());
    assert_eq!(statuses(&answer), [200, 200], "{answer:?}");
    assert_eq!(answer.matches("Hello, World!").count(), 1, "{answer:?}");

    // HTTP/1.0 keep-alive is confirmed, or the client would not reuse the connection.
    let answer = exchange(&addr, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(answer.contains("Connection: keep-alive\r\n"), "{answer:?}");
    let answer = exchange(&addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(answer.contains("Connection: close\r\n"), "{answer:?}");

    // Expect: 100-continue gets its interim response before the body is sent.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abc").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert_eq!(statuses(&rest), [200], "{rest:?}");

    stop(server, drain, "http_hello");
}

/// Reads one `\n`-terminated line.
fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

#[test]
fn chat_server_bounds_lines_and_keeps_up_with_a_burst() {
    let (server, addr, drain) = start("chat_server", &["--addr", "127.0.0.1:0"]);
    let (_aw, mut ar) = chat_join(&addr, "ann");
    let (mut bw, mut br) = chat_join(&addr, "bob");
    assert_eq!(line(&mut ar), "* bob joined\n");

    // A burst of lines, all in one write, to a client that keeps reading:
    // before, bob's handler read them all without letting ann's writer run,
    // her channel overflowed and she missed most of them.
    const N: usize = 3000;
    let burst: String = (0..N)
        .map(|i| format!("line {i} {}\n", "x".repeat(100)))
        .collect();
    let reader = std::thread::spawn(move || {
        for i in 0..N {
            let l = line(&mut ar);
            assert!(
                l.starts_with(&format!("<bob> line {i} ")),
                "line {i}: {l:?}"
            );
        }
        ar
    });
    bw.write_all(burst.as_bytes()).unwrap();
    let mut ar = reader.join().unwrap();

    // Invalid UTF-8 is relayed (replaced), not a reason to drop the client.
    bw.write_all(b"caf\xe9 ok\n").unwrap();
    assert_eq!(line(&mut ar), "<bob> caf\u{fffd} ok\n");

    // The limit is on the text: 4096 bytes pass with "\r\n" as with "\n".
    let full = "y".repeat(4096);
    bw.write_all(format!("{full}\r\n{full}\n").as_bytes())
        .unwrap();
    assert_eq!(line(&mut ar), format!("<bob> {full}\n"));
    assert_eq!(line(&mut ar), format!("<bob> {full}\n"));

    // A line without end: bob is told and disconnected once it passes the
    // 4096-byte limit, instead of the server buffering it without bound.
    // (Just past the limit, so the server has read all of it and closes
    // with a FIN rather than a reset that could destroy the notice.)
    bw.write_all(&[b'A'; 4098]).unwrap();
    let mut rest = String::new();
    br.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("* bye: line longer than"), "{rest:?}");
    assert_eq!(line(&mut ar), "* bob left\n");

    let log = stop(server, drain, "chat_server");
    assert!(!log.contains("too slow"), "{log}");
}

/// A client's connection tasklet killed from the operator console (`kill
/// ID`): the client is disconnected and the others are told it left, as
/// when it leaves by itself.
#[test]
fn chat_server_client_killed_from_the_console_leaves_the_chat() {
    let console = std::env::temp_dir().join(format!("chat-console-{}", std::process::id()));
    let _ = std::fs::remove_file(&console);
    let (server, addr, drain) = start(
        "chat_server",
        &[
            "--addr",
            "127.0.0.1:0",
            "--console",
            console.to_str().unwrap(),
        ],
    );
    let (_aw, mut ar) = chat_join(&addr, "ann");
    let (bw, mut br) = chat_join(&addr, "bob");
    assert_eq!(line(&mut ar), "* bob joined\n");
    let command = |cmd: &str| {
        let mut c = std::os::unix::net::UnixStream::connect(&console).unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        c.write_all(format!("{cmd}\nquit\n").as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    // Bob's connection tasklet is the one reading his socket.
    let bob = format!("({})", bw.local_addr().unwrap());
    let dump = command("dump");
    let id = dump
        .lines()
        .find(|l| l.starts_with("tasklet ") && l.contains("readable fd") && l.contains(&bob))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no tasklet reads bob's socket in:\n{dump}"))
        .to_owned();
    let answer = command(&format!("kill {id}"));
    assert!(answer.contains("killed"), "{answer}");
    assert_eq!(line(&mut ar), "* bob left\n");
    let mut rest = String::new();
    br.read_to_string(&mut rest).unwrap(); // EOF: bob is off, not left hanging
    stop(server, drain, "chat_server");
    let _ = std::fs::remove_file(&console);
}

/// Sets `SO_LINGER` to zero: closing the socket then sends a reset.
fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a valid `linger` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn port_forward_closes_both_sides_when_one_fails() {
    // An upstream that never writes and never closes on its own.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap().to_string();
    let (pf, addr, drain) = start(
        "port_forward",
        &["--listen", "127.0.0.1:0", "--to", &up_addr],
    );
    let mut client = TcpStream::connect(&addr).unwrap();
    let (mut up, _) = upstream.accept().unwrap();
    up.set_read_timeout(Some(LIMIT)).unwrap();
    client.write_all(b"hello").unwrap();
    let mut hello = [0u8; 5];
    up.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");

    // The client resets. The client-to-upstream direction fails; before,
    // the other direction stayed parked reading the silent upstream, and
    // the upstream connection stayed open for good. Now it is closed.
    reset_on_close(&client);
    drop(client);
    let mut rest = [0u8; 16];
    match up.read(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the upstream connection was not closed: {other:?}"),
    }
    stop(pf, drain, "port_forward");
}

#[test]
fn echo_client_handles_messages_larger_than_the_socket_buffers() {
    let (server, addr, drain) = start("echo_server", &["--addr", "127.0.0.1:0"]);
    // 32 MB written whole before reading the echo deadlocked: the server
    // cannot echo to a client that is not reading, so it stops reading too.
    let mut client = KillOnDrop(
        Command::new(example("echo_client"))
            .args([
                "--addr",
                &addr,
                "--conns",
                "2",
                "--messages",
                "2",
                "--size",
                "32000000",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = client.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "echo_client hangs on 32 MB messages"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    client
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "echo_client failed: {out}");
    assert!(out.contains("all 128000000 echoed bytes verified"), "{out}");
    stop(server, drain, "echo_server");
}
