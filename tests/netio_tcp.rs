//! `tasklet::netio` TCP: echo at scale, half-close, resets, timeouts,
//! closed ports, sharing a socket between tasklets, std interop.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::netio::{TcpListener, TcpStream};

/// Runs `f` in a dispatcher, failing the test if it takes longer than 60 s.
fn run<T: 'static>(f: impl FnOnce() -> T + 'static) -> T {
    tasklet::Config::new()
        .stack_size(64 * 1024)
        .dispatch(|| tasklet::timeout(Duration::from_secs(60), f).expect("test timed out"))
}

/// Echo handler: copies until EOF.
fn echo(mut s: TcpStream) -> io::Result<u64> {
    let mut buf = [0u8; 8192];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        s.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Starts an echo server tasklet; returns its address.
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    tasklet::spawn(move || loop {
        let (s, _) = l.accept().unwrap();
        tasklet::spawn(move || echo(s));
    });
    addr
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 17) % 251) as u8)
        .collect()
}

#[test]
fn echo_1000_concurrent_clients_every_byte_checked() {
    let checked = run(|| {
        let addr = echo_server();
        let clients: Vec<_> = (0..1000usize)
            .map(|c| {
                tasklet::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    let mut bytes = 0;
                    for m in 0..10 {
                        // Sizes from 1 byte to 5 KiB, different per client and message.
                        let msg = pattern(c * 10 + m, 1 + (c * 37 + m * 511) % 5000);
                        s.write_all(&msg).unwrap();
                        let mut back = vec![0; msg.len()];
                        s.read_exact(&mut back).unwrap();
                        assert_eq!(back, msg, "client {c} message {m}");
                        bytes += msg.len();
                    }
                    s.shutdown(Shutdown::Write).unwrap();
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).unwrap();
                    assert!(rest.is_empty());
                    bytes
                })
            })
            .collect();
        tasklet::joinall(clients)
            .into_iter()
            .map(|r| r.unwrap())
            .sum::<usize>()
    });
    assert!(checked > 1000 * 10, "{checked} bytes");
}

#[test]
fn half_close_peer_keeps_writing_after_eof() {
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = tasklet::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap(); // returns at the client's FIN
            let reply = format!("got {} bytes", got.len());
            s.write_all(reply.as_bytes()).unwrap();
            got
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&pattern(1, 100_000)).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert!(
            c.write(b"x").is_err(),
            "write after shutdown(Write) must fail"
        );
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "got 100000 bytes");
        assert_eq!(server.join().unwrap(), pattern(1, 100_000));
    });
}

#[test]
fn peer_reset_mid_write_is_an_error_not_sigpipe() {
    // Give SIGPIPE its default action (terminate) for this process: if a
    // write raised it, the test binary would die instead of failing politely.
    // SAFETY: installing SIG_DFL for SIGPIPE is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let kinds = run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        tasklet::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut first = [0u8; 1];
            s.read_exact(&mut first).unwrap();
            // Closing with unread data makes the kernel send RST.
            drop(s);
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut errors = Vec::new();
        for _ in 0..10_000 {
            match c.write(&chunk) {
                Ok(n) => assert!(n > 0),
                Err(e) => {
                    errors.push(e.kind());
                    if errors.len() == 2 {
                        break;
                    }
                }
            }
        }
        let mut buf = [0u8; 16];
        let read = c.read(&mut buf);
        (errors, read.map_err(|e| e.kind()))
    });
    let (write_errors, read) = kinds;
    assert!(
        !write_errors.is_empty(),
        "writing to a reset connection never failed"
    );
    for k in &write_errors {
        assert!(
            matches!(
                k,
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "unexpected write error kind {k:?}"
        );
    }
    assert!(
        matches!(read, Ok(0) | Err(io::ErrorKind::ConnectionReset)),
        "{read:?}"
    );
}

#[test]
fn read_timeout_gives_timed_out_and_socket_stays_usable() {
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = tasklet::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap(); // "late" arrives after the timeout
            s.write_all(b"pong").unwrap();
        });
        let mut c = TcpStream::connect(addr).unwrap();
        assert_eq!(c.read_timeout().unwrap(), None);
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(c.read_timeout().unwrap(), Some(Duration::from_millis(50)));
        let t = Instant::now();
        let e = c.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        // Other tasklets ran meanwhile, and the socket still works.
        c.write_all(b"late").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
        server.join().unwrap();
        // std's rule: a zero timeout is invalid.
        let e = c.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn write_timeout_when_peer_does_not_read() {
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let hold = tasklet::spawn(move || {
            let (s, _) = l.accept().unwrap();
            tasklet::sleep(Duration::from_secs(30));
            drop(s);
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let chunk = vec![1u8; 256 * 1024];
        let err = loop {
            if let Err(e) = c.write(&chunk) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        hold.kill();
    });
}

#[test]
fn connect_to_closed_port_is_refused() {
    run(|| {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let e = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let e = TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn connect_timeout_expires_when_the_backlog_is_full() {
    // A std listener whose backlog is 0 and which never accepts: once its
    // queue is full the kernel drops further SYNs, so a connect hangs.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen() on a valid listening socket with an integer backlog.
    assert_eq!(
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 0) },
        0
    );
    let addr = l.local_addr().unwrap();
    run(move || {
        let mut held = Vec::new();
        for _ in 0..16 {
            let t = Instant::now();
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => held.push(s),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
                    assert!(t.elapsed() >= Duration::from_millis(200));
                    return;
                }
            }
        }
        panic!("16 connects to a full backlog all succeeded");
    });
    drop(l);
}

#[test]
fn created_before_dispatch_used_inside() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = std::net::TcpStream::connect(addr).unwrap();
    let (s, _) = l.accept().unwrap(); // no dispatcher yet: blocks like std
    let c = TcpStream::from(c);
    run(move || {
        tasklet::spawn(move || echo(s));
        let mut c = c;
        c.write_all(b"before and inside").unwrap();
        let mut b = [0u8; 17];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"before and inside");
        drop(l);
    });
}

#[test]
fn works_blocking_on_a_thread_without_dispatcher() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || run(move || echo(l.accept().unwrap().0).unwrap()));
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
    let e = c.read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    c.write_all(b"plain thread").unwrap();
    let mut b = [0u8; 12];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"plain thread");
    drop(c);
    assert_eq!(server.join().unwrap(), 12);
}

#[test]
fn one_tasklet_reads_while_another_writes_the_same_socket() {
    run(|| {
        let addr = echo_server();
        let s = Rc::new(TcpStream::connect(addr).unwrap());
        let total = 2_000_000usize;
        let w = s.clone();
        let writer = tasklet::spawn(move || {
            let mut sent = 0;
            while sent < total {
                let chunk = pattern(sent, 10_000);
                (&*w).write_all(&chunk).unwrap();
                sent += chunk.len();
            }
            w.shutdown(Shutdown::Write).unwrap();
        });
        let r = s.clone();
        let reader = tasklet::spawn(move || {
            let mut got = Vec::new();
            (&*r).read_to_end(&mut got).unwrap();
            got
        });
        writer.join().unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), total);
        for (i, c) in got.chunks(10_000).enumerate() {
            assert_eq!(c, &pattern(i * 10_000, 10_000)[..], "chunk {i}");
        }
    });
}

#[test]
fn shutdown_from_another_tasklet_wakes_a_blocked_reader_and_writer() {
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let peer = tasklet::spawn(move || {
            let (s, _) = l.accept().unwrap();
            tasklet::sleep(Duration::from_secs(30));
            drop(s);
        });
        let s = Rc::new(TcpStream::connect(addr).unwrap());
        let r = s.clone();
        let reader = tasklet::spawn(move || (&*r).read(&mut [0u8; 16]).map_err(|e| e.kind()));
        let w = s.clone();
        let writer = tasklet::spawn(move || {
            let chunk = vec![0u8; 256 * 1024];
            loop {
                if let Err(e) = (&*w).write(&chunk) {
                    return e.kind();
                }
            }
        });
        tasklet::sleep(Duration::from_millis(20)); // both are parked now
        assert!(!reader.is_finished() && !writer.is_finished());
        s.shutdown(Shutdown::Both).unwrap();
        assert_eq!(reader.join().unwrap(), Ok(0), "a blocked reader sees EOF");
        assert_eq!(writer.join().unwrap(), io::ErrorKind::BrokenPipe);
        peer.kill();
    });
}

#[test]
fn killing_a_blocked_reader_closes_its_socket() {
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let reader = tasklet::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = s.read(&mut [0u8; 1]);
            unreachable!("the read never completes");
        });
        let mut c = TcpStream::connect(addr).unwrap();
        tasklet::sleep(Duration::from_millis(10));
        reader.kill();
        assert!(reader.join().unwrap_err().is_killed());
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap(); // EOF: the server socket was dropped
        assert!(rest.is_empty());
    });
}

#[test]
fn timeout_interrupts_a_read_and_the_socket_stays_usable() {
    run(|| {
        let addr = echo_server();
        let mut c = TcpStream::connect(addr).unwrap();
        let r = tasklet::timeout(Duration::from_millis(30), || c.read(&mut [0u8; 4]));
        assert!(r.is_err());
        c.write_all(b"ok").unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ok");
    });
}

#[test]
fn short_read_hint_never_loses_data_that_arrived_meanwhile() {
    // After a short read the next read may skip the syscall and wait for an
    // event; data that arrived while the reader was busy elsewhere (its
    // event consumed by the hub with nobody waiting) must still be read.
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let go = Rc::new(Cell::new(false));
        let g = go.clone();
        let sender = tasklet::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            for i in 0..50u8 {
                s.write_all(&[i; 3]).unwrap();
                while !g.replace(false) {
                    tasklet::yield_now();
                }
            }
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 64];
        for i in 0..50u8 {
            let n = c.read(&mut buf).unwrap(); // short read: 3 of 64
            assert_eq!(&buf[..n], &[i; 3]);
            go.set(true);
            // Let the sender write the next message and the hub see it now.
            tasklet::sleep(Duration::from_millis(2));
        }
        sender.join().unwrap();
    });
}

#[test]
fn bufreader_lines_and_io_copy() {
    run(|| {
        let addr = echo_server();
        let c = TcpStream::connect(addr).unwrap();
        let w = c.try_clone().unwrap();
        let writer = tasklet::spawn(move || {
            let mut w = io::BufWriter::new(w);
            for i in 0..1000 {
                writeln!(w, "line {i}").unwrap();
            }
            w.flush().unwrap();
            w.get_ref().shutdown(Shutdown::Write).unwrap();
        });
        let lines: Vec<String> = BufReader::new(c).lines().map(|l| l.unwrap()).collect();
        writer.join().unwrap();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "line 999");

        let mut c = TcpStream::connect(addr).unwrap();
        let copier = c.try_clone().unwrap();
        let t = tasklet::spawn(move || {
            let mut copier = copier;
            let data = pattern(3, 300_000);
            io::copy(&mut &data[..], &mut copier).unwrap();
            copier.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        io::copy(&mut c, &mut back).unwrap();
        t.join().unwrap();
        assert_eq!(back, pattern(3, 300_000));
    });
}

#[test]
fn std_conversions_nonblocking_mode_and_options() {
    run(|| {
        let addr = echo_server();
        let mut c = TcpStream::connect(addr).unwrap();
        assert_eq!(c.peer_addr().unwrap(), addr);
        assert!(c.local_addr().unwrap().ip().is_loopback());
        c.set_nodelay(true).unwrap();
        assert!(c.nodelay().unwrap());
        c.set_ttl(42).unwrap();
        assert_eq!(c.ttl().unwrap(), 42);
        assert!(c.take_error().unwrap().is_none());

        c.set_nonblocking(true).unwrap();
        assert_eq!(
            c.read(&mut [0u8; 1]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        c.set_nonblocking(false).unwrap();

        // To std (back in blocking mode: a read with a timeout waits it out;
        // nothing answers since the echo tasklet cannot run meanwhile) and back.
        let mut std_c = c.into_std().unwrap();
        std_c
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let t = Instant::now();
        assert!(std_c.read(&mut [0u8; 1]).is_err());
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "into_std left the socket non-blocking"
        );
        std_c.set_read_timeout(None).unwrap();
        std_c.write_all(b"std").unwrap(); // echoed once the dispatcher runs again
        let mut c = TcpStream::from_std(std_c).unwrap();
        let mut b = [0u8; 3];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"std");
        c.write_all(b"back").unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"back");
        assert!(format!("{c:?}").contains("TcpStream"));

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_ttl(7).unwrap();
        assert_eq!(l.ttl().unwrap(), 7);
        l.set_nonblocking(true).unwrap();
        assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let l2 = l.try_clone().unwrap();
        assert_eq!(l2.local_addr().unwrap(), l.local_addr().unwrap());
        let std_l = l2.into_std().unwrap();
        let _c = std::net::TcpStream::connect(std_l.local_addr().unwrap()).unwrap();
        let l3 = TcpListener::from_std(std_l).unwrap();
        let (_s, peer) = l3.accept().unwrap();
        assert!(peer.ip().is_loopback());
    });
}

#[test]
fn bad_addresses_are_clear_errors() {
    run(|| {
        for bad in ["127.0.0.1", "127.0.0.1:notaport", "127.0.0.1:99999", ":80"] {
            let e = TcpStream::connect(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
        }
        let e = TcpListener::bind("256.1.1.1:0").unwrap_err();
        assert!(!e.to_string().is_empty());
    });
}

#[test]
fn eof_right_behind_data_is_seen_after_a_short_read() {
    // The FIN arrives with the data, in one readiness event; the short read
    // that takes the data must not make the next read wait for an event
    // that will never come.
    run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        let reader = tasklet::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut got = Vec::new();
            loop {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
            }
        });
        tasklet::yield_now(); // the reader parks on the empty socket
        (&s).write_all(b"last words").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(reader.join().unwrap(), b"last words");
    });
}
