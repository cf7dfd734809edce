//! Waiting for signals in tasklets, and `StreamServer::stop_on_signals`.
//!
//! One test function, so that the signals raised here never race another
//! test of this binary. Each signal is raised only once a waiter is
//! registered (`signal::waiting`): a signal nobody waits for keeps its
//! default effect and would end the test process.

use std::io::{self, Read, Write};
use std::time::Duration;

use tasklet::netio::{StreamServer, TcpStream};
use tasklet::signal::{self, Signal};

fn raise(sig: Signal) {
    // SAFETY: raising a signal at our own process, which has a handler for it.
    assert_eq!(unsafe { libc::raise(sig.as_raw()) }, 0);
}

/// Waits (bounded) until `n` waits are registered for `sig`.
fn until_waiting(sig: Signal, n: usize) {
    for _ in 0..10_000 {
        if signal::waiting(sig) >= n {
            return;
        }
        if tasklet::hub::in_dispatcher() {
            tasklet::sleep(Duration::from_millis(1));
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    panic!("no waiter registered for {sig:?}");
}

#[test]
fn signals_wake_tasklets_threads_and_stop_servers() {
    assert_eq!(Signal::from_raw(libc::SIGINT), Some(Signal::Int));
    assert_eq!(Signal::Term.as_raw(), libc::SIGTERM);
    assert_eq!(
        signal::wait(&[]).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );

    tasklet::dispatch(|| {
        tasklet::timeout(Duration::from_secs(60), || {
            // Every tasklet waiting for the signal gets it; others keep running.
            let a = tasklet::spawn(|| signal::wait(&[Signal::Usr1, Signal::Usr2]).unwrap());
            let b = tasklet::spawn(|| signal::wait(&[Signal::Usr1]).unwrap());
            let ticker = tasklet::spawn(|| {
                for _ in 0..3 {
                    tasklet::sleep(Duration::from_millis(1));
                }
            });
            until_waiting(Signal::Usr1, 2);
            raise(Signal::Usr1);
            assert_eq!(a.join().unwrap(), Signal::Usr1);
            assert_eq!(b.join().unwrap(), Signal::Usr1);
            ticker.join().unwrap();
            assert_eq!(signal::waiting(Signal::Usr1), 0);

            // A timed-out wait deregisters itself.
            let r = tasklet::timeout(Duration::from_millis(10), || signal::wait(&[Signal::Usr2]));
            assert!(r.is_err());
            assert_eq!(signal::waiting(Signal::Usr2), 0);

            // So does a killed one.
            let k = tasklet::spawn(signal::ctrl_c);
            until_waiting(Signal::Int, 1);
            k.kill();
            assert!(k.join().unwrap_err().is_killed());
            assert_eq!(signal::waiting(Signal::Int), 0);

            // SIGTERM stops a server gracefully.
            let handle = StreamServer::bind("127.0.0.1:0", |mut s: TcpStream, _| {
                let mut buf = [0u8; 64];
                loop {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        return Ok::<_, io::Error>(());
                    }
                    s.write_all(&buf[..n])?;
                }
            })
            .unwrap()
            .grace_period(Duration::from_millis(20))
            .stop_on_signals(true)
            .start();
            let mut c = TcpStream::connect(handle.local_addr()).unwrap();
            c.write_all(b"hi").unwrap();
            c.read_exact(&mut [0u8; 2]).unwrap();
            until_waiting(Signal::Term, 1);
            raise(Signal::Term);
            handle.wait();
            assert!(handle.is_stopped());
            assert_eq!(
                c.read(&mut [0u8; 2]).unwrap(),
                0,
                "the client was disconnected"
            );
            assert_eq!(signal::waiting(Signal::Term), 0);
        })
        .expect("test timed out");
    });

    // On a plain thread, wait blocks the thread.
    let t = std::thread::spawn(|| signal::wait(&[Signal::Usr2]).unwrap());
    until_waiting(Signal::Usr2, 1);
    raise(Signal::Usr2);
    assert_eq!(t.join().unwrap(), Signal::Usr2);
}
