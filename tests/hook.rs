//! The `hook` feature: unmodified blocking code (std::net, std::thread::sleep,
//! ureq) cooperates inside tasklets. Run with
//! `cargo test --release --features hook --test hook`.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::netio;

/// Generous bound for "this finished instead of hanging" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn raise_fd_limit(want: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit to fill in and to pass back.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A netio echo server in the current dispatcher; returns its address.
fn netio_echo_server() -> SocketAddr {
    let listener = netio::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tasklet::spawn(move || loop {
        let (mut s, _) = listener.accept().unwrap();
        tasklet::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    });
    addr
}

/// A tasklet that ticks every `every` and counts the ticks.
fn ticker(every: Duration) -> Rc<Cell<u32>> {
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    tasklet::spawn(move || loop {
        tasklet::sleep(every);
        t.set(t.get() + 1);
    });
    ticks
}

#[test]
fn hooks_are_active() {
    assert!(tasklet::hook::is_active());
    assert!(tasklet::hook::INTERPOSED.contains(&"read"));
}

/// 1,000 tasklets, each with a std TcpStream, against a netio echo server in
/// the same dispatcher (this deadlocks without the hooks).
#[test]
fn thousand_std_clients_against_netio_echo_in_same_dispatcher() {
    raise_fd_limit(4096);
    let done = tasklet::dispatch(|| {
        let addr = netio_echo_server();
        let clients: Vec<_> = (0..1000u32)
            .map(|i| {
                tasklet::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    let mut back = Vec::new();
                    for m in 0..100u32 {
                        let msg = format!(
                            "client {i} message {m} {}\n",
                            "x".repeat((i + m) as usize % 50)
                        );
                        s.write_all(msg.as_bytes()).unwrap();
                        back.resize(msg.len(), 0);
                        s.read_exact(&mut back).unwrap();
                        assert_eq!(back, msg.as_bytes(), "client {i} message {m}");
                    }
                    1u32
                })
            })
            .collect();
        clients.into_iter().map(|h| h.join().unwrap()).sum::<u32>()
    });
    assert_eq!(done, 1000);
}

/// 100 tasklets in std::thread::sleep(200 ms) overlap, a ticker keeps going,
/// and the same call on a plain thread still sleeps that thread.
#[test]
fn std_sleep_in_tasklets_overlaps_and_plain_threads_still_sleep() {
    tasklet::dispatch(|| {
        let ticks = ticker(Duration::from_millis(10));
        let t = Instant::now();
        let sleepers: Vec<_> = (0..100)
            .map(|_| tasklet::spawn(|| std::thread::sleep(Duration::from_millis(200))))
            .collect();
        tasklet::joinall(sleepers);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(
            took < Duration::from_secs(1),
            "sleeps did not overlap: {took:?}"
        );
        assert!(ticks.get() >= 3, "ticker starved: {} ticks", ticks.get());

        // A plain thread started from a tasklet: a real sleep.
        let plain = std::thread::spawn(|| {
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(100));
            t.elapsed()
        });
        let slept = tasklet::unblock(move || plain.join().unwrap());
        assert!(slept >= Duration::from_millis(100), "{slept:?}");
    });
    // Outside any dispatcher: a real sleep too.
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    assert!(t.elapsed() >= Duration::from_millis(50));
}

/// A tiny HTTP/1.1 server on netio: answers every request with its path.
fn http_server() -> SocketAddr {
    let listener = netio::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tasklet::spawn(move || loop {
        let (s, _) = listener.accept().unwrap();
        tasklet::spawn(move || {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    if h == "\r\n" {
                        break;
                    }
                }
                let body = format!("hello {path}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                    body.len()
                );
                if w.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        });
    });
    addr
}

/// An unmodified blocking HTTP client crate from 100 concurrent tasklets.
#[test]
fn ureq_from_100_tasklets() {
    tasklet::dispatch(|| {
        let addr = http_server();
        let ticks = ticker(Duration::from_millis(5));
        let clients: Vec<_> = (0..100)
            .map(|i| {
                tasklet::spawn(move || {
                    let agent = ureq::Agent::new_with_defaults();
                    for j in 0..5 {
                        let url = format!("http://{addr}/c{i}/r{j}");
                        let body = agent
                            .get(&url)
                            .call()
                            .unwrap()
                            .into_body()
                            .read_to_string()
                            .unwrap();
                        assert_eq!(body, format!("hello /c{i}/r{j}"));
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let _ = ticks;
    });
}

/// std's TcpListener::accept parks the tasklet, and a std client in another
/// tasklet of the same dispatcher connects to it.
#[test]
fn std_listener_accept_in_a_tasklet() {
    tasklet::dispatch(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tasklet::spawn(move || {
            let mut served = 0;
            for _ in 0..20 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).unwrap();
                s.write_all(&buf).unwrap();
                served += 1;
            }
            served
        });
        let clients: Vec<_> = (0..20u32)
            .map(|i| {
                tasklet::spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    c.write_all(&i.to_be_bytes()).unwrap();
                    let mut buf = [0u8; 4];
                    c.read_exact(&mut buf).unwrap();
                    assert_eq!(u32::from_be_bytes(buf), i);
                })
            })
            .collect();
        tasklet::joinall(clients);
        assert_eq!(server.join().unwrap(), 20);
    });
}

/// A connected pair of std streams made inside the current dispatcher.
fn std_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acc = tasklet::spawn(move || listener.accept().unwrap().0);
    let c = TcpStream::connect(addr).unwrap();
    (c, acc.join().unwrap())
}

#[test]
fn read_timeout_gives_would_block_and_others_run() {
    tasklet::dispatch(|| {
        let (mut a, _b) = std_pair();
        a.set_read_timeout(Some(Duration::from_millis(150)))
            .unwrap();
        let ticks = ticker(Duration::from_millis(10));
        let t = Instant::now();
        let e = a.read(&mut [0u8; 8]).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e:?}"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        assert!(ticks.get() >= 3, "the read blocked the dispatcher");
        // Cleared again: blocks until data comes.
        a.set_read_timeout(None).unwrap();
        let mut b = _b;
        tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(20));
            b.write_all(b"late").unwrap();
            b
        });
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"late");
    });
}

#[test]
fn set_nonblocking_gives_would_block_at_once_and_mode_stays_hidden() {
    tasklet::dispatch(|| {
        let (mut a, mut b) = std_pair();
        let fd = a.as_raw_fd();
        // A cooperative (blocking-looking) read first, so the fd is managed.
        b.write_all(b"1").unwrap();
        let mut one = [0u8; 1];
        a.read_exact(&mut one).unwrap();
        // SAFETY: F_GETFL on a descriptor we own.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0, "the hidden O_NONBLOCK leaked");

        a.set_nonblocking(true).unwrap();
        // SAFETY: as above.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        let t = Instant::now();
        let e = a.read(&mut one).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(t.elapsed() < Duration::from_secs(1));

        a.set_nonblocking(false).unwrap();
        // SAFETY: as above.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0);
        tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(20));
            b.write_all(b"2").unwrap();
            b
        });
        a.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"2");
    });
}

/// A stream the hooks made non-blocking underneath still blocks on a plain
/// thread (emulated with poll).
#[test]
fn managed_stream_blocks_on_a_plain_thread() {
    tasklet::dispatch(|| {
        let (mut a, mut b) = std_pair();
        b.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        a.read_exact(&mut one).unwrap(); // managed now
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 5];
            a.read_exact(&mut buf).map(|_| buf)
        });
        tasklet::sleep(Duration::from_millis(50));
        b.write_all(b"hello").unwrap();
        let got = tasklet::unblock(move || reader.join().unwrap()).unwrap();
        assert_eq!(&got, b"hello");
    });
}

#[test]
fn kill_in_a_hooked_read_leaves_the_stream_usable() {
    tasklet::dispatch(|| {
        let (a, mut b) = std_pair();
        let a = Rc::new(a);
        let a2 = a.clone();
        let reached = Rc::new(Cell::new(false));
        let r2 = reached.clone();
        let h = tasklet::spawn(move || {
            let mut buf = [0u8; 8];
            let r = (&*a2).read(&mut buf);
            // Not reached as a normal continuation: the pending kill ends the
            // tasklet at its next blocking point (here: the sleep).
            tasklet::sleep(Duration::from_secs(60));
            r2.set(true);
            r.map(|_| ())
        });
        tasklet::sleep(Duration::from_millis(20));
        let t = Instant::now();
        h.kill();
        let e = h.join().unwrap_err();
        assert!(e.is_killed());
        assert!(t.elapsed() < PATIENCE);
        assert!(!reached.get());
        // The descriptor still works.
        b.write_all(b"after").unwrap();
        let mut buf = [0u8; 5];
        (&*a).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"after");
    });
}

#[test]
fn killed_tasklet_that_returns_after_a_hooked_read_is_still_killed() {
    tasklet::dispatch(|| {
        let (mut a, _b) = std_pair();
        let h = tasklet::spawn(move || {
            let mut buf = [0u8; 8];
            // The hooked read fails (ECANCELED); the tasklet returns normally.
            a.read(&mut buf).map_err(|e| e.raw_os_error())
        });
        tasklet::sleep(Duration::from_millis(20));
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
    });
}

#[test]
fn timeout_in_a_hooked_read_leaves_the_stream_usable() {
    tasklet::dispatch(|| {
        let (mut a, mut b) = std_pair();
        let t = Instant::now();
        let r = tasklet::timeout(Duration::from_millis(50), || {
            let mut buf = [0u8; 8];
            a.read(&mut buf)
        });
        assert!(r.is_err(), "{r:?}");
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(t.elapsed() < PATIENCE);
        // No interrupt left pending: blocking calls work normally again.
        tasklet::sleep(Duration::from_millis(1));
        b.write_all(b"ok").unwrap();
        let mut buf = [0u8; 2];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
    });
}

#[test]
fn kill_and_timeout_in_std_thread_sleep() {
    tasklet::dispatch(|| {
        let t = Instant::now();
        let r = tasklet::timeout(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(60))
        });
        assert!(r.is_err());
        assert!(t.elapsed() < PATIENCE);

        let h = tasklet::spawn(|| {
            std::thread::sleep(Duration::from_secs(60));
            std::thread::sleep(Duration::from_secs(60));
        });
        tasklet::sleep(Duration::from_millis(20));
        let t = Instant::now();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        assert!(t.elapsed() < PATIENCE);
    });
}

/// getaddrinfo runs off the dispatcher: a ticker keeps going meanwhile.
#[test]
fn getaddrinfo_in_a_tasklet() {
    tasklet::dispatch(|| {
        let addrs: Vec<_> = ("localhost", 80).to_socket_addrs().unwrap().collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    });
}

/// poll(2) with several descriptors and a timeout parks the tasklet.
#[test]
fn poll_waits_cooperatively() {
    tasklet::dispatch(|| {
        let (a, mut b) = std_pair();
        let (c, _d) = std_pair();
        let ticks = ticker(Duration::from_millis(5));
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Times out: nothing to read.
        let t = Instant::now();
        // SAFETY: `fds` is a valid array of two pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
        assert_eq!(n, 0);
        assert!(t.elapsed() >= Duration::from_millis(100));
        assert!(ticks.get() >= 3, "poll blocked the dispatcher");
        // Ready once the peer writes.
        tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(20));
            b.write_all(b"!").unwrap();
            b
        });
        // SAFETY: as above.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 10_000) };
        assert_eq!(n, 1);
        assert_ne!(fds[0].revents & libc::POLLIN, 0);
        assert_eq!(fds[1].revents, 0);
    });
}

/// A C library loaded at run time (zlib, `libz.so.1`): its `gzread` on a
/// pipe calls `read` through the dynamic symbol table, which reaches the
/// hooks because the test executable exports them (build.rs).
#[test]
fn shared_c_library_zlib_cooperates() {
    use std::ffi::c_void;
    type GzDopen = unsafe extern "C" fn(libc::c_int, *const libc::c_char) -> *mut c_void;
    type GzRead = unsafe extern "C" fn(*mut c_void, *mut c_void, libc::c_uint) -> libc::c_int;
    type GzWrite = unsafe extern "C" fn(*mut c_void, *const c_void, libc::c_uint) -> libc::c_int;
    type GzClose = unsafe extern "C" fn(*mut c_void) -> libc::c_int;

    assert!(
        tasklet::hook::covers_shared_libraries(),
        "the test executable does not export the hooks (build.rs)"
    );
    // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to
    // its documented zlib signature.
    let (gzdopen, gzread, gzwrite, gzclose) = unsafe {
        let lib = libc::dlopen(c"libz.so.1".as_ptr(), libc::RTLD_NOW);
        assert!(
            !lib.is_null(),
            "libz.so.1 not found (apt-get install zlib1g)"
        );
        let sym = |n: &std::ffi::CStr| {
            let p = libc::dlsym(lib, n.as_ptr());
            assert!(!p.is_null(), "{n:?}");
            p
        };
        (
            std::mem::transmute::<*mut c_void, GzDopen>(sym(c"gzdopen")),
            std::mem::transmute::<*mut c_void, GzRead>(sym(c"gzread")),
            std::mem::transmute::<*mut c_void, GzWrite>(sym(c"gzwrite")),
            std::mem::transmute::<*mut c_void, GzClose>(sym(c"gzclose")),
        )
    };
    // If the hooks did not work, gzread would block the only thread forever:
    // fail loudly instead.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(PATIENCE * 2);
        if !d2.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("shared_c_library_zlib_cooperates: gzread blocked the dispatcher");
            std::process::abort();
        }
    });
    let text: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let expected = text.clone();
    tasklet::dispatch(move || {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let [rfd, wfd] = fds;
        let ticks = ticker(Duration::from_millis(5));
        let reader = tasklet::spawn(move || {
            let mut out = vec![0u8; 80_000];
            // SAFETY: zlib takes ownership of `rfd`; `out` has room for the
            // requested length.
            unsafe {
                let gz = gzdopen(rfd, c"rb".as_ptr());
                assert!(!gz.is_null());
                let n = gzread(gz, out.as_mut_ptr().cast(), out.len() as libc::c_uint);
                gzclose(gz);
                out.truncate(n.max(0) as usize);
            }
            out
        });
        tasklet::spawn(move || {
            // The reader is parked in gzread meanwhile.
            tasklet::sleep(Duration::from_millis(50));
            // SAFETY: zlib takes ownership of `wfd`; `text` outlives the call.
            unsafe {
                let gz = gzdopen(wfd, c"wb".as_ptr());
                assert!(!gz.is_null());
                let n = gzwrite(gz, text.as_ptr().cast(), text.len() as libc::c_uint);
                assert_eq!(n as usize, text.len());
                assert_eq!(gzclose(gz), 0);
            }
        });
        let got = reader.join().unwrap();
        assert_eq!(got, expected);
        assert!(ticks.get() >= 3, "gzread blocked the dispatcher");
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// A tiny RESP (Redis protocol) responder on netio: PING, SET, GET, DEL,
/// INCR; `CLIENT …` and `SELECT` answer +OK.
fn resp_server() -> SocketAddr {
    use std::collections::HashMap;
    let listener = netio::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let store: Rc<std::cell::RefCell<HashMap<Vec<u8>, Vec<u8>>>> = Rc::default();
    tasklet::spawn(move || loop {
        let (s, _) = listener.accept().unwrap();
        let store = store.clone();
        tasklet::spawn(move || -> io::Result<()> {
            let mut w = s.try_clone()?;
            let mut r = BufReader::new(s);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                let n: usize = line.trim_end().trim_start_matches('*').parse().unwrap();
                let mut args = Vec::with_capacity(n);
                for _ in 0..n {
                    line.clear();
                    r.read_line(&mut line)?;
                    let len: usize = line.trim_end().trim_start_matches('$').parse().unwrap();
                    let mut arg = vec![0u8; len + 2];
                    r.read_exact(&mut arg)?;
                    arg.truncate(len);
                    args.push(arg);
                }
                let cmd = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
                let mut st = store.borrow_mut();
                let reply: Vec<u8> = match cmd.as_str() {
                    "PING" => b"+PONG\r\n".to_vec(),
                    "CLIENT" | "SELECT" => b"+OK\r\n".to_vec(),
                    "SET" => {
                        st.insert(args[1].clone(), args[2].clone());
                        b"+OK\r\n".to_vec()
                    }
                    "GET" => match st.get(&args[1]) {
                        Some(v) => [format!("${}\r\n", v.len()).as_bytes(), v, b"\r\n"].concat(),
                        None => b"$-1\r\n".to_vec(),
                    },
                    "DEL" => format!(":{}\r\n", st.remove(&args[1]).is_some() as u8).into_bytes(),
                    "INCR" => {
                        let v = st.entry(args[1].clone()).or_insert_with(|| b"0".to_vec());
                        let n: i64 = String::from_utf8_lossy(v).parse().unwrap_or(0) + 1;
                        *v = n.to_string().into_bytes();
                        format!(":{n}\r\n").into_bytes()
                    }
                    other => format!("-ERR unknown command '{other}'\r\n").into_bytes(),
                };
                drop(st);
                w.write_all(&reply)?;
            }
        });
    });
    addr
}

/// The sync `redis` client crate, unmodified, from 50 concurrent tasklets
/// against a responder in the same dispatcher.
#[test]
fn sync_redis_client_from_50_tasklets() {
    tasklet::dispatch(|| {
        let addr = resp_server();
        let clients: Vec<_> = (0..50)
            .map(|i| {
                tasklet::spawn(move || {
                    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
                    let mut con = client.get_connection().unwrap();
                    for j in 0..20 {
                        let key = format!("k{i}-{j}");
                        let () = redis::cmd("SET")
                            .arg(&key)
                            .arg(j * i)
                            .query(&mut con)
                            .unwrap();
                        let v: i64 = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
                        assert_eq!(v, j * i);
                        let n: i64 = redis::cmd("INCR").arg("counter").query(&mut con).unwrap();
                        assert!(n >= 1);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
        let mut con = client.get_connection().unwrap();
        let total: i64 = redis::cmd("GET").arg("counter").query(&mut con).unwrap();
        assert_eq!(total, 50 * 20);
    });
}

/// A killed tasklet that retries its failing hooked calls forever cannot be
/// unwound, but it yields at each call (the dispatcher keeps running) and
/// dispatch exit abandons it instead of hanging.
#[test]
fn killed_retry_loop_yields_and_does_not_hang_dispatch_exit() {
    let t = Instant::now();
    tasklet::dispatch(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let h = tasklet::spawn(move || loop {
            // An accept loop that retries every error, with std's sleep.
            if listener.accept().is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        tasklet::sleep(Duration::from_millis(20));
        h.kill();
        // The dispatcher still runs other tasklets.
        let ticks = ticker(Duration::from_millis(5));
        tasklet::sleep(Duration::from_millis(100));
        assert!(ticks.get() >= 3, "the retry loop held the dispatcher");
        assert!(!h.is_finished());
    });
    assert!(t.elapsed() < PATIENCE);
}
