//! The `finger` example, both styles (Twisted's LineReceiver and a plain
//! tasklet), driven by plain TCP clients: lookups, the user list, unknown
//! users, over-long and non-UTF-8 requests, a request in pieces, a users
//! file, and the web view.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

mod common;
use common::{addr_after, sigterm_and_wait, start_example_line, KillOnDrop};

const LIMIT: Duration = Duration::from_secs(10);

struct Finger {
    child: KillOnDrop,
    addr: String,
    http: String,
    drain: thread::JoinHandle<String>,
}

fn start(args: &[&str]) -> Finger {
    let mut all = vec!["--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (child, line, drain) = start_example_line("finger", &all, &["finger listening on "]);
    Finger {
        child,
        addr: addr_after(&line, "finger listening on ").unwrap(),
        http: addr_after(&line, "web view on ").unwrap(),
        drain,
    }
}

impl Finger {
    fn stop(mut self) {
        sigterm_and_wait(&mut self.child, "finger");
        let log = self.drain.join().unwrap();
        assert!(!log.contains("panicked"), "finger panicked: {log}");
    }
}

/// Sends `request` (in pieces, with a pause between them) and reads the
/// answer until the server closes.
fn ask_in_pieces(addr: &str, pieces: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            thread::sleep(Duration::from_millis(30));
        }
        // The server may answer and close before taking everything.
        if s.write_all(p).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    // A server that closes with unread input resets the connection: keep
    // what arrived before.
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn ask(addr: &str, request: &[u8]) -> String {
    ask_in_pieces(addr, &[request])
}

fn check_finger(f: &Finger) {
    let a = f.addr.as_str();
    assert_eq!(ask(a, b"moshez\r\n"), "Happy and well\r\n");
    assert_eq!(ask(a, b"glyph\n"), "Drawing the reactor\r\n");
    assert_eq!(ask(a, b"/W itamar\r\n"), "Writing a tutorial\r\n");
    assert_eq!(
        ask(a, b"\r\n"),
        "glyph: Drawing the reactor\r\nitamar: Writing a tutorial\r\nmoshez: Happy and well\r\n"
    );
    assert_eq!(
        ask(a, b"nobody\r\n"),
        "Sorry, there is no user called \"nobody\" here.\r\n"
    );
    assert_eq!(
        ask_in_pieces(a, &[b"mos", b"he", b"z\r", b"\n"]),
        "Happy and well\r\n"
    );
    // Limits and bad input: a polite line, then the connection closes.
    let long = vec![b'x'; 100_000];
    assert_eq!(
        ask(a, &long),
        "Sorry, requests are limited to 256 bytes.\r\n"
    );
    assert_eq!(
        ask(a, b"\xff\xfe\r\n"),
        "Sorry, I could not read that request (not UTF-8).\r\n"
    );
    // A client that closes without a request gets nothing, and no error.
    let s = TcpStream::connect(a).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    (&s).read_to_end(&mut out).unwrap();
    assert!(out.is_empty());
    // Concurrent clients.
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let a = a.to_owned();
            thread::spawn(move || ask(&a, b"moshez\r\n"))
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), "Happy and well\r\n");
    }
}

#[test]
fn finger_line_receiver_style() {
    let f = start(&[]);
    check_finger(&f);
    f.stop();
}

#[test]
fn finger_plain_tasklet_style() {
    let f = start(&["--style", "tasklet"]);
    check_finger(&f);
    f.stop();
}

fn http_get(addr: &str, request: &str) -> (u16, String) {
    let out = ask(addr, request.as_bytes());
    let status = out
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response to {request:?}: {out:?}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

#[test]
fn users_file_and_web_view() {
    let path = std::env::temp_dir().join(format!("finger-users-{}.txt", std::process::id()));
    std::fs::write(
        &path,
        "# the finger users\nalice: likes <tea> & cake\n\nbob: away\n",
    )
    .unwrap();
    let f = start(&["--users", path.to_str().unwrap()]);
    assert_eq!(ask(&f.addr, b"alice\r\n"), "likes <tea> & cake\r\n");
    assert_eq!(
        ask(&f.addr, b"\r\n"),
        "alice: likes <tea> & cake\r\nbob: away\r\n"
    );
    assert!(ask(&f.addr, b"moshez\r\n").starts_with("Sorry"));

    let (status, body) = http_get(&f.http, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.contains("<a href=\"/alice\">alice</a>: likes &lt;tea&gt; &amp; cake"));
    assert!(body.contains("bob"));
    let (status, body) = http_get(&f.http, "GET /bob HTTP/1.0\r\n\r\n");
    assert_eq!((status, body.contains("<p>away</p>")), (200, true));
    let (status, body) = http_get(&f.http, "GET /bob?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (status, body.contains("<p>away</p>")),
        (200, true),
        "query ignored"
    );
    let (status, _) = http_get(&f.http, "GET /nobody HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 404);
    let (status, _) = http_get(&f.http, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    let (status, body) = http_get(&f.http, "HEAD / HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    f.stop();
    let _ = std::fs::remove_file(&path);

    // A bad users file is refused at start-up.
    std::fs::write(&path, "no colon here\n").unwrap();
    let out = std::process::Command::new(common::example("finger"))
        .args(["--users", path.to_str().unwrap(), "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
    let _ = std::fs::remove_file(&path);
}
