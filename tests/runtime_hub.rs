//! The hub's low-level API, as other crates build on it: park / unpark,
//! remote (cross-thread) unparkers and `IoSource` readiness waits.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::hub::{self, Direction, IoSource, Unparker, Wake};

/// "Forever" for a test: long enough never to end on its own during a passing
/// test, short enough that a broken kill or timeout fails the test (the code
/// after the sleep runs, or a join returns Ok) instead of hanging it.
const LONG: Duration = Duration::from_secs(20);

#[test]
fn park_with_deadline_times_out() {
    tasklet::dispatch(|| {
        let t = Instant::now();
        let w = hub::park(Some(t + Duration::from_millis(10))).unwrap();
        assert_eq!(w, Wake::TimedOut);
        let el = t.elapsed();
        assert!(
            el >= Duration::from_millis(10) && el < Duration::from_secs(1),
            "{el:?}"
        );
    });
}

#[test]
fn unpark_before_park_returns_at_once() {
    tasklet::dispatch(|| {
        let u = hub::current_unparker();
        assert_eq!(u.tasklet_id(), tasklet::current().id());
        assert!(u.unpark(), "an unpark for the current wait is delivered");
        let t = Instant::now();
        assert_eq!(hub::park(Some(t + LONG)).unwrap(), Wake::Unparked);
        assert!(t.elapsed() < Duration::from_secs(1));
        // That unparker belonged to the finished wait: it no longer does anything.
        assert!(!u.unpark(), "a stale unparker must be ignored");
        let w = hub::park(Some(Instant::now() + Duration::from_millis(5))).unwrap();
        assert_eq!(w, Wake::TimedOut, "a stale unparker woke a later park");
    });
}

#[test]
fn unpark_wakes_parked_tasklet_once() {
    tasklet::dispatch(|| {
        let slot: Rc<RefCell<Option<Unparker>>> = Rc::default();
        let s = slot.clone();
        let wakes = Rc::new(Cell::new(0));
        let w = wakes.clone();
        let parked = tasklet::spawn(move || {
            *s.borrow_mut() = Some(hub::current_unparker());
            let r = hub::park(None).unwrap();
            w.set(w.get() + 1);
            r
        });
        tasklet::yield_now();
        assert_eq!(wakes.get(), 0);
        let u = slot
            .borrow_mut()
            .take()
            .expect("the tasklet published its unparker");
        assert!(u.same_tasklet(&u.clone()));
        assert!(u.unpark());
        assert!(u.unpark(), "a second unpark of the same wait is harmless");
        assert_eq!(parked.join().unwrap(), Wake::Unparked);
        assert_eq!(wakes.get(), 1);
        assert!(!u.unpark(), "the tasklet has finished");
    });
}

#[test]
fn remote_unparker_wakes_from_another_thread() {
    tasklet::dispatch(|| {
        let t = Instant::now();
        let remote = hub::current_unparker().remote();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            remote.unpark();
        });
        // No timer and no socket: only the remote unparker can wake us, and
        // its existence keeps the dispatcher from declaring a deadlock.
        let mut woke = false;
        while !woke {
            woke = hub::park(None).unwrap() == Wake::Unparked
                && t.elapsed() >= Duration::from_millis(20);
        }
        waker.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn many_remote_wakes_from_many_threads() {
    const TASKLETS: usize = 200;
    let woken = tasklet::dispatch(|| {
        let (tx, rx) = std::sync::mpsc::channel::<hub::RemoteUnparker>();
        let done = Rc::new(Cell::new(0usize));
        let hs: Vec<_> = (0..TASKLETS)
            .map(|_| {
                let tx = tx.clone();
                let done = done.clone();
                tasklet::spawn(move || {
                    tx.send(hub::current_unparker().remote()).unwrap();
                    // Bounded: a lost wake-up fails the test instead of hanging it.
                    let w = hub::park(Some(Instant::now() + Duration::from_secs(20))).unwrap();
                    assert_eq!(w, Wake::Unparked, "remote wake-up lost");
                    done.set(done.get() + 1);
                })
            })
            .collect();
        drop(tx);
        tasklet::yield_now();
        let unparkers: Vec<_> = rx.try_iter().collect();
        assert_eq!(unparkers.len(), TASKLETS);
        let threads: Vec<_> = unparkers
            .chunks(TASKLETS / 4)
            .map(|c| {
                let c = c.to_vec();
                std::thread::spawn(move || {
                    for u in c {
                        u.unpark();
                    }
                })
            })
            .collect();
        for r in tasklet::joinall(hs) {
            r.unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
        done.get()
    });
    assert_eq!(woken, TASKLETS);
}

#[test]
fn remote_unparker_after_dispatch_exit_is_harmless() {
    let remote = tasklet::dispatch(|| hub::current_unparker().remote());
    remote.unpark();
    std::thread::spawn(move || remote.unpark()).join().unwrap();
    // A new dispatcher on this thread is unaffected.
    assert_eq!(tasklet::dispatch(|| 1), 1);
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

#[test]
fn io_source_waits_for_readable() {
    tasklet::dispatch(|| {
        let (a, b) = pair();
        let reader = tasklet::spawn(move || {
            let src = IoSource::new(a);
            let mut buf = [0u8; 16];
            let n = src
                .do_io(
                    Direction::Read,
                    Some(Instant::now() + Duration::from_secs(10)),
                    |s| (&*s).read(&mut buf),
                )
                .unwrap();
            buf[..n].to_vec()
        });
        tasklet::sleep(Duration::from_millis(5));
        assert!(
            !reader.is_finished(),
            "reader must park while nothing is readable"
        );
        (&b).write_all(b"hello").unwrap();
        assert_eq!(reader.join().unwrap(), b"hello");
    });
}

#[test]
fn io_source_wait_deadline_is_timed_out() {
    tasklet::dispatch(|| {
        let (a, _b) = pair();
        let src = IoSource::new(a);
        let t = Instant::now();
        let e = src
            .wait(Direction::Read, Some(t + Duration::from_millis(10)))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(10));
        // Edge-triggered: readiness is reported once, so callers try the
        // operation first and wait only on WouldBlock (`do_io`).
        let n = src
            .do_io(
                Direction::Write,
                Some(Instant::now() + Duration::from_secs(10)),
                |s| (&*s).write(b"x"),
            )
            .unwrap();
        assert_eq!(n, 1);
    });
}

#[test]
fn io_source_many_readers_and_kill() {
    tasklet::dispatch(|| {
        let (a, b) = pair();
        let src = Rc::new(IoSource::new(a));
        let got = Rc::new(RefCell::new(Vec::new()));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let src = src.clone();
                let got = got.clone();
                tasklet::spawn(move || {
                    let mut buf = [0u8; 1];
                    let deadline = Some(Instant::now() + Duration::from_secs(10));
                    let n = src
                        .do_io(Direction::Read, deadline, |s| (&*s).read(&mut buf))
                        .unwrap();
                    got.borrow_mut().extend_from_slice(&buf[..n]);
                })
            })
            .collect();
        // One more reader that is killed while waiting: its registration is cleaned up.
        let s2 = src.clone();
        let victim = tasklet::spawn(move || s2.wait(Direction::Read, None));
        tasklet::yield_now();
        victim.kill();
        assert!(victim.join().unwrap_err().is_killed());
        (&b).write_all(b"wxyz").unwrap();
        for r in tasklet::joinall(readers) {
            r.unwrap();
        }
        let mut got = got.borrow().clone();
        got.sort_unstable();
        assert_eq!(got, b"wxyz");
    });
}

#[test]
fn timeout_interrupts_io_wait() {
    tasklet::dispatch(|| {
        let (a, _b) = pair();
        let src = IoSource::new(a);
        let t = Instant::now();
        let r = tasklet::timeout(Duration::from_millis(10), || {
            src.wait(Direction::Read, None)
        });
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        // The source is still usable after the interrupted wait.
        let e = src
            .wait(
                Direction::Read,
                Some(Instant::now() + Duration::from_millis(5)),
            )
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let back = src.into_inner();
        back.set_nonblocking(false).unwrap();
    });
}

#[test]
fn peer_close_wakes_reader() {
    tasklet::dispatch(|| {
        let (a, b) = pair();
        let reader = tasklet::spawn(move || {
            let src = IoSource::new(a);
            let mut buf = [0u8; 8];
            src.do_io(
                Direction::Read,
                Some(Instant::now() + Duration::from_secs(10)),
                |s| (&*s).read(&mut buf),
            )
        });
        tasklet::yield_now();
        drop(b);
        assert_eq!(
            reader.join().unwrap().unwrap(),
            0,
            "EOF after the peer closed"
        );
    });
}

#[test]
fn remote_ping_pong_between_two_dispatchers() {
    use std::sync::mpsc;
    const ROUNDS: usize = 200;
    // Each side publishes a RemoteUnparker for its next wait and parks; the
    // other side wakes it. Slots carry the unparker across threads.
    let (to_b, from_a) = mpsc::channel::<hub::RemoteUnparker>();
    let (to_a, from_b) = mpsc::channel::<hub::RemoteUnparker>();
    let side = move |tx: mpsc::Sender<hub::RemoteUnparker>,
                     rx: mpsc::Receiver<hub::RemoteUnparker>,
                     first: bool| {
        move || {
            tasklet::dispatch(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                for round in 0..ROUNDS {
                    if first || round > 0 {
                        // Wait for the peer's unparker, then wake it.
                        let peer = loop {
                            if let Ok(u) = rx.try_recv() {
                                break u;
                            }
                            assert!(Instant::now() < deadline, "peer never published");
                            tasklet::sleep(Duration::from_micros(200));
                        };
                        peer.unpark();
                    }
                    // Publish ours and park until the peer wakes us.
                    if !(first && round == ROUNDS - 1) {
                        tx.send(hub::current_unparker().remote()).unwrap();
                        let w = hub::park(Some(deadline)).unwrap();
                        assert_eq!(w, Wake::Unparked, "round {round}: wake-up lost");
                    }
                }
            })
        }
    };
    let a = std::thread::spawn(side(to_b, from_b, true));
    let b = std::thread::spawn(side(to_a, from_a, false));
    a.join().unwrap();
    b.join().unwrap();
}
