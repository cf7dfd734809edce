//! Helpers shared by the integration tests that run the example binaries as
//! child processes (`mod common;` in each test file that needs them).

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod procfs;

/// The path of an example binary, built next to this test executable (as
/// `cargo test` does).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not found: build the examples first (`cargo test` does; for a single test run \
         `cargo build --release --examples`)",
        path.display()
    );
    path
}

/// A child process that is killed (and reaped) when the test lets go of it,
/// also when the test fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a child to exit, killing it and failing after `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("child {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts an example server with `RUST_LOG=info`; returns it, the address it
/// logged after the first of `markers` found in its log (an `http://` prefix
/// is dropped), and a thread collecting the rest of its log.
pub fn start_example(
    name: &str,
    args: &[&str],
    markers: &[&str],
) -> (KillOnDrop, String, JoinHandle<String>) {
    let (child, line, drain) = start_example_line(name, args, markers);
    let addr = markers
        .iter()
        .find_map(|m| addr_after(&line, m))
        .expect("marker in line");
    (child, addr, drain)
}

/// The address logged after `marker` in `line` (an `http://` prefix is
/// dropped), if `marker` is there.
pub fn addr_after(line: &str, marker: &str) -> Option<String> {
    let rest = line.split(marker).nth(1)?;
    Some(
        rest.trim_start_matches("http://")
            .split(|c: char| c.is_whitespace() || c == ';' || c == ',')
            .next()
            .unwrap()
            .to_owned(),
    )
}

/// Starts an example server with `RUST_LOG=info`; returns it, the first log
/// line holding one of `markers`, and a thread collecting the rest of its log.
pub fn start_example_line(
    name: &str,
    args: &[&str],
    markers: &[&str],
) -> (KillOnDrop, String, JoinHandle<String>) {
    let mut child = KillOnDrop(
        Command::new(example(name))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut log = String::new();
    let found = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "{name} exited early: {log}"
        );
        log.push_str(&line);
        if markers.iter().any(|m| line.contains(m)) {
            break line;
        }
    };
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    (child, found, drain)
}

/// Sends SIGTERM and waits (bounded) for a successful exit.
pub fn sigterm_and_wait(child: &mut KillOnDrop, name: &str) {
    // SAFETY: sending SIGTERM to our own child process.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let status = wait_bounded(&mut child.0, Duration::from_secs(10));
    assert!(status.success(), "{name} exited with {status}");
}

/// Runs `f` on a new thread named `name` and returns its value; fails the
/// test if it has not finished within `limit` (a hang: the message names
/// `name`) and re-raises its panic.
pub fn on_thread_bounded<T: Send + 'static>(
    name: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(());
            r
        })
        .expect("spawn test thread");
    match rx.recv_timeout(limit) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Ok(Ok(v)) => v,
            Ok(Err(p)) | Err(p) => std::panic::resume_unwind(p),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: hang, did not finish within {limit:?}")
        }
    }
}

/// Joins the `chat_server` example at `addr` as `nick` (reads its prompt,
/// sends the nickname): the writing half and a reader, reads bounded by 10 s.
pub fn chat_join(addr: &str, nick: &str) -> (std::net::TcpStream, BufReader<std::net::TcpStream>) {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut prompt = [0u8; 24];
    r.read_exact(&mut prompt).unwrap();
    assert_eq!(&prompt, b"welcome! your nickname? ");
    writeln!(w, "{nick}").unwrap();
    (w, r)
}
