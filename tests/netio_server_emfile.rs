//! `StreamServer` out of file descriptors: one warning, a back-off instead
//! of a busy loop, and service resumes when descriptors free up.
//!
//! Alone in its binary: it lowers the process's open-file limit.

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tasklet::netio::{StreamServer, TcpStream};

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
