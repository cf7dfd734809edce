//! `tasklet::console`: the operator console on a mode-0600 Unix socket,
//! including clients that send garbage (issue 16).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use tasklet::netio::UnixStream;

fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tasklet-console-{tag}-{}", std::process::id()))
}

/// Reads everything the console sends until it closes the session (bounded).
fn read_all(mut c: UnixStream) -> String {
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    // The console may close with our surplus input unread: the kernel then
    // reports a reset after the data it did send.
    if let Err(e) = c.read_to_end(&mut out) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn console_answers_commands_and_survives_garbage() {
    let path = socket_path("main");
    let _ = std::fs::remove_file(&path);
    tasklet::dispatch(|| {
        let console = tasklet::console::spawn(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "socket must be owner-only"
        );

        let victim = tasklet::Builder::new()
            .name("victim")
            .spawn(|| tasklet::sleep(Duration::from_secs(3600)))
            .unwrap();
        tasklet::yield_now();

        // Garbage: binary bytes, an unknown command, bad arguments, non-UTF-8,
        // empty lines, CRLF — each answered, none fatal.
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"\x00\x01\x02garbage\n").unwrap();
        c.write_all(b"frobnicate now\n\n   \n").unwrap();
        c.write_all(b"kill\nkill abc\nkill 0\nkill 999999999\nstats extra\n")
            .unwrap();
        c.write_all(b"\xff\xfe\xfd\n").unwrap();
        c.write_all(b"help\r\n").unwrap();
        c.write_all(format!("kill {}\n", victim.id()).as_bytes())
            .unwrap();
        c.write_all(b"dump\nstats\nquit\n").unwrap();
        let text = read_all(c);
        assert!(text.starts_with("tasklet console: pid "), "{text}");
        assert!(
            text.contains("error: unknown command \"\\0\\u{1}\\u{2}garbage\""),
            "{text}"
        );
        assert!(
            text.contains("error: unknown command \"frobnicate\""),
            "{text}"
        );
        assert!(text.contains("error: usage: kill ID"), "{text}");
        assert!(
            text.contains("error: \"abc\" is not a tasklet id"),
            "{text}"
        );
        assert!(text.contains("error: \"0\" is not a tasklet id"), "{text}");
        assert!(
            text.contains("error: no tasklet 999999999 on this dispatcher"),
            "{text}"
        );
        assert!(text.contains("error: stats takes no arguments"), "{text}");
        assert!(text.contains("error: not UTF-8 text"), "{text}");
        assert!(text.contains("kill ID   kill tasklet ID"), "{text}");
        assert!(
            text.contains(&format!("killed tasklet {} 'victim'", victim.id())),
            "{text}"
        );
        assert!(text.contains("'console-session' [running]"), "{text}");
        assert!(text.contains("'console' [readable fd"), "{text}");
        assert!(text.contains("\nlive "), "{text}");
        assert!(text.ends_with("bye\n"), "{text}");
        assert!(victim.join().unwrap_err().is_killed());

        // An over-long line ends that session, nothing else.
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(&vec![b'x'; 10_000]).unwrap();
        let text = read_all(c);
        assert!(text.contains("error: line too long; closing"), "{text}");

        // A client that disconnects mid-line, and one that never reads.
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"dum").unwrap();
        drop(c);
        let mut quiet = UnixStream::connect(&path).unwrap();
        for _ in 0..200 {
            if quiet.write_all(b"dump\n").is_err() {
                break;
            }
        }

        // Still serving.
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"stats\nquit\n").unwrap();
        let lines: Vec<String> = BufReader::new(c).lines().map(Result::unwrap).collect();
        assert!(lines.iter().any(|l| l.starts_with("spawned ")), "{lines:?}");
        drop(quiet);

        console.kill();
        assert!(console.join().unwrap_err().is_killed());
        // The session tasklets still parked are killed at dispatch exit.
    });
    assert!(!path.exists(), "socket file removed when the console stops");
}

#[test]
fn console_replaces_a_stale_socket_and_refuses_a_live_one() {
    let path = socket_path("stale");
    let _ = std::fs::remove_file(&path);
    // A stale socket file: bound, then its listener dropped.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    tasklet::dispatch(|| {
        let a = tasklet::console::Console::bind(&path).expect("stale file replaced");
        let e = tasklet::console::Console::bind(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
        drop(a);
        assert!(!path.exists());
        std::fs::write(&path, b"not a socket").unwrap();
        let e = tasklet::console::Console::bind(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        std::fs::remove_file(&path).unwrap();
    });
}
