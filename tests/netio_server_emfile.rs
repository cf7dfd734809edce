//! `StreamServer` out of file descriptors: one warning, a back-off instead
//! of a busy loop, and service resumes when descriptors free up.
//!
//! Alone in its binary: it lowers the process's open-file limit. The same
//! for the example servers in child processes with a low limit (`http_hello`
//! on `StreamServer`, `echo_server` with its own accept loop), whose CPU time
//! over the EMFILE period is read from `/proc`. The tests take [`serial`]:
//! while one lowers this process's limit the other could not spawn a child.

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tasklet::netio::{StreamServer, TcpStream};

mod common;
use common::procfs::{cpu, fds, set_nofile_of};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

static WARNINGS: AtomicUsize = AtomicUsize::new(0);

struct CountWarnings;

impl log::Log for CountWarnings {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if r.level() == log::Level::Warn && r.args().to_string().contains("accept failed") {
            WARNINGS.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn flush(&self) {}
}

fn nofile() -> libc::rlimit {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid local rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    rl
}

fn set_nofile(rl: &libc::rlimit) {
    // SAFETY: setrlimit reads a valid local rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, rl) }, 0);
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a valid local timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn emfile_warns_once_backs_off_and_recovers() {
    let _s = serial();
    log::set_logger(&CountWarnings).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let original = nofile();
    tasklet::dispatch(move || {
        tasklet::timeout(Duration::from_secs(60), move || {
            let server = StreamServer::bind("127.0.0.1:0", |mut s: TcpStream, _| {
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                s.write_all(&b)?;
                // Hold the descriptor until the client closes.
                s.read(&mut b).map(|_| ())
            })
            .unwrap();
            let addr = server.local_addr();
            // Ten clients connect before the server accepts (blocking std
            // sockets: the kernel completes the handshakes from the backlog;
            // with the `hook` feature the connects cooperate, and nothing
            // accepts them yet either).
            let mut clients: Vec<StdStream> =
                (0..10).map(|_| StdStream::connect(addr).unwrap()).collect();
            // Now leave room for no new descriptor at all.
            // SAFETY: dup of a valid fd, closed right away: finds the lowest free number.
            let probe = unsafe { libc::dup(0) };
            assert!(probe >= 0);
            // SAFETY: closing the fd we just duplicated.
            unsafe { libc::close(probe) };
            set_nofile(&libc::rlimit {
                rlim_cur: probe as libc::rlim_t,
                rlim_max: original.rlim_max,
            });
            let handle = server.start();
            let cpu0 = thread_cpu();
            tasklet::sleep(Duration::from_millis(300));
            let spent = thread_cpu() - cpu0;
            assert_eq!(handle.connections(), 0, "no descriptor, no connection");
            assert_eq!(WARNINGS.load(Ordering::SeqCst), 1, "exactly one warning");
            assert!(
                spent < Duration::from_millis(100),
                "busy loop: {spent:?} CPU in 300 ms"
            );

            // Descriptors are back: every waiting client gets served.
            set_nofile(&original);
            for (i, c) in clients.iter_mut().enumerate() {
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                c.write_all(&[i as u8]).unwrap();
            }
            let served = tasklet::unblock(move || {
                for (i, c) in clients.iter_mut().enumerate() {
                    let mut b = [0u8; 1];
                    c.read_exact(&mut b).unwrap();
                    assert_eq!(b[0], i as u8);
                }
                clients.len()
            });
            assert_eq!(served, 10);
            assert_eq!(WARNINGS.load(Ordering::SeqCst), 1);
            handle.stop(Duration::from_millis(10));
        })
        .expect("test timed out");
    });
}

/// One echo or HTTP exchange with a server, ended by a half-close and the
/// server's EOF (so the server has closed its side when this returns).
fn exchange(addr: &str, http: bool) {
    let mut s = StdStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (send, expect): (&[u8], &[u8]) = if http {
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"Hello, World!")
    } else {
        (b"ping", b"ping")
    };
    s.write_all(send).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(got.ends_with(expect), "{:?}", String::from_utf8_lossy(&got));
}

/// Runs example `name` in a child, lowers its open-file limit to leave it
/// eight descriptors, and connects 40 clients: it accepts what it can, then
/// meets EMFILE. Over a second of that its CPU time must stay small (no
/// busy loop); when the clients go, it serves again. Returns its log.
fn emfile_in_child(name: &str, args: &[&str], http: bool) -> String {
    let _s = serial();
    let (mut server, addr, log) = common::start_example(name, args, &["listening on "]);
    let pid = server.0.id();
    // The runtime is fully up once it has served a connection.
    exchange(&addr, http);
    let base = fds(pid);
    set_nofile_of(pid, base as u64 + 8);
    let clients: Vec<StdStream> = (0..40)
        .map(|_| StdStream::connect(&addr).unwrap())
        .collect();
    // It accepts until its table is full (the rest wait in the backlog).
    let t = Instant::now();
    while fds(pid) < base + 8 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{name}: accepted only {} of 8",
            fds(pid) - base
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu0 = cpu(pid);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu(pid) - cpu0;
    eprintln!(
        "{name}: {spent:?} CPU over 1 s of EMFILE ({} fds)",
        fds(pid)
    );
    assert!(
        spent < Duration::from_millis(300),
        "{name}: busy loop at EMFILE: {spent:?} CPU in 1 s"
    );
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "{name} died at EMFILE"
    );
    // Descriptors free up: it serves again.
    drop(clients);
    let t = Instant::now();
    while fds(pid) > base {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{name}: still {} fds",
            fds(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    exchange(&addr, http);
    common::sigterm_and_wait(&mut server, name);
    let log = log.join().unwrap();
    assert!(!log.contains("panicked"), "{name}: {log}");
    log
}

#[test]
fn http_hello_survives_emfile_in_a_child_without_spinning() {
    let log = emfile_in_child(
        "http_hello",
        &["--addr", "127.0.0.1:0", "--workers", "1"],
        true,
    );
    // StreamServer warns once per episode of EMFILE; a new episode needs an
    // accept in between, so never more warnings than clients (40).
    let warnings = log.matches("accept failed").count();
    assert!((1..=40).contains(&warnings), "{warnings} warnings: {log}");
}

#[test]
fn echo_server_survives_emfile_in_a_child_without_spinning() {
    let log = emfile_in_child(
        "echo_server",
        &["--addr", "127.0.0.1:0", "--workers", "1"],
        false,
    );
    // One warning per episode of EMFILE, as StreamServer does.
    let warnings = log.matches("accept failed").count();
    assert!((1..=40).contains(&warnings), "{warnings} warnings: {log}");
}
