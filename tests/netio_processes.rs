//! Multi-process netio tests: the `echo_server` example driven by the
//! `echo_client` example, and 10,000 connections held open at once (the
//! client side in a separate process so each process stays well under the
//! 20,000 open-file limit).
//!
//! The examples are built by `cargo test` (examples are part of the default
//! test build); the binaries are looked up next to this test executable.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::netio::TcpListener;

mod common;
use common::{chat_join, example, sigterm_and_wait, start_example, wait_bounded, KillOnDrop};

fn raise_fd_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid local rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
        }
    }
}

#[test]
fn echo_server_example_driven_by_echo_client_then_ctrl_c() {
    let mut server = KillOnDrop(
        Command::new(example("echo_server"))
            .args(["--addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The server logs "echo server listening on ADDR".
    let mut stderr = BufReader::new(server.0.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited early: {log}"
        );
        log.push_str(&line);
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });

    let out = Command::new(example("echo_client"))
        .args([
            "--addr",
            &addr,
            "--conns",
            "50",
            "--messages",
            "200",
            "--size",
            "100",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "echo_client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("10000 round trips"), "{stdout}");
    assert!(
        stdout.contains("all 1000000 echoed bytes verified"),
        "{stdout}"
    );
    assert!(stdout.contains("RESULT conns=50 size=100"), "{stdout}");

    // Ctrl-C: a clean stop with exit status 0.
    // SAFETY: sending SIGINT to our own child process.
    assert_eq!(unsafe { libc::kill(server.0.id() as i32, libc::SIGINT) }, 0);
    let status = wait_bounded(&mut server.0, Duration::from_secs(10));
    assert!(status.success(), "echo_server exited with {status}");
    let rest = drain.join().unwrap();
    assert!(rest.contains("connected"), "connections are logged: {rest}");
    assert!(rest.contains("disconnected"), "{rest}");
    assert!(rest.contains("shutting down"), "{rest}");
}

#[test]
fn echo_client_reports_a_dead_server_as_a_failure() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = Command::new(example("echo_client"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--conns", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn examples_print_help() {
    for name in [
        "echo_server",
        "echo_client",
        "chat_server",
        "port_forward",
        "http_hello",
        "tokio_echo_server",
        "hyper_hello",
    ] {
        let out = Command::new(example(name)).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("USAGE"),
            "{name}"
        );
        let out = Command::new(example(name)).arg("--bogus").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name} --bogus");
    }
}

#[test]
fn ten_thousand_connections_held_open_at_once() {
    const N: usize = 10_000;
    raise_fd_limit();
    let (peak, served) = tasklet::Config::new().stack_size(32 * 1024).dispatch(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let open = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let served = Rc::new(Cell::new(0usize));
        let (o, p, s) = (open.clone(), peak.clone(), served.clone());
        tasklet::spawn(move || loop {
            let (mut c, _) = l.accept().unwrap();
            o.set(o.get() + 1);
            p.set(p.get().max(o.get()));
            let (o, s) = (o.clone(), s.clone());
            tasklet::spawn(move || {
                let mut buf = [0u8; 256];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                o.set(o.get() - 1);
                s.set(s.get() + 1);
            });
        });
        // The client holds all N open until every one has had its echo.
        let client = Command::new(example("echo_client"))
            .args(["--addr", &addr.to_string(), "--conns", &N.to_string()])
            .args(["--messages", "2", "--size", "16"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = tasklet::unblock(move || client.wait_with_output()).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "echo_client: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("{} round trips", 2 * N)),
            "{stdout}"
        );
        // Wait (bounded) for the server side to see every EOF.
        let deadline = Instant::now() + Duration::from_secs(30);
        while served.get() < N && Instant::now() < deadline {
            tasklet::sleep(Duration::from_millis(5));
        }
        let _ = std::io::stdout().flush();
        (peak.get(), served.get())
    });
    assert_eq!(peak, N, "connections open at the same time");
    assert_eq!(served, N);
}

fn read_line_from(s: &mut BufReader<std::net::TcpStream>) -> String {
    let mut line = String::new();
    s.read_line(&mut line).unwrap();
    line
}

#[test]
fn chat_server_example_broadcasts_lines_to_the_others() {
    let (mut server, addr, drain) = start_example(
        "chat_server",
        &["--addr", "127.0.0.1:0"],
        &["listening on "],
    );
    let connect = |nick: &str| chat_join(&addr, nick);
    let (mut aw, mut ar) = connect("ann");
    // Joining is announced only once the server has registered the client;
    // wait for ann to be registered by waiting for bob's announcement.
    let (mut bw, mut br) = connect("bob");
    assert_eq!(read_line_from(&mut ar), "* bob joined\n");
    writeln!(aw, "hello bob").unwrap();
    assert_eq!(read_line_from(&mut br), "<ann> hello bob\n");
    writeln!(bw, "hi ann").unwrap();
    assert_eq!(read_line_from(&mut ar), "<bob> hi ann\n");
    drop(bw);
    drop(br);
    assert_eq!(read_line_from(&mut ar), "* bob left\n");
    sigterm_and_wait(&mut server, "chat_server");
    let log = drain.join().unwrap();
    assert!(log.contains("joined as 'ann'"), "{log}");
}

#[test]
fn port_forward_example_relays_echo_client_traffic() {
    let (mut echo, echo_addr, _d1) = start_example(
        "echo_server",
        &["--addr", "127.0.0.1:0"],
        &["listening on "],
    );
    let (mut fwd, fwd_addr, d2) = start_example(
        "port_forward",
        &["--listen", "127.0.0.1:0", "--to", &echo_addr],
        &["forwarding "],
    );
    let out = Command::new(example("echo_client"))
        .args([
            "--addr",
            &fwd_addr,
            "--conns",
            "20",
            "--messages",
            "100",
            "--size",
            "1000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("all 2000000 echoed bytes verified"),
        "{stdout}"
    );
    sigterm_and_wait(&mut fwd, "port_forward");
    sigterm_and_wait(&mut echo, "echo_server");
    let log = d2.join().unwrap();
    assert!(log.contains("100000 bytes up, 100000 bytes down"), "{log}");
}

#[test]
fn http_hello_example_answers_pipelined_keep_alive_requests() {
    let (mut server, addr, _d) =
        start_example("http_hello", &["--addr", "127.0.0.1:0"], &["listening on "]);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Two pipelined requests, the second asking to close.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
    assert_eq!(all.matches("Hello, World!").count(), 2, "{all}");
    // Garbage gets a 400 and a close.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x01\x02 nonsense\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 400"), "{all}");
    sigterm_and_wait(&mut server, "http_hello");
}
