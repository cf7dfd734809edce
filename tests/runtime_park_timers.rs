//! Park timers are lazy: a wait that ends before its deadline leaves its
//! timer armed for the tasklet's next timed wait (see
//! `Dispatcher::arm_park_timer`). These tests pin down that the laziness
//! never shows: every timed wait still ends at its own deadline — not
//! earlier (an old, earlier timer fires first and must re-arm), not later
//! (an old, later timer must not stand in for an earlier deadline) — and a
//! leftover timer neither hides a deadlock nor keeps a finished tasklet's
//! timer armed.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use tasklet::hub;
use tasklet::netio::{TcpListener, TcpStream};

/// A connected pair of streams inside a dispatcher.
fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

#[test]
fn a_read_timeout_after_a_longer_one_fires_on_time() {
    tasklet::dispatch(|| {
        let (mut c, mut s) = pair();
        // A read with a long timeout that data ends early: its timer
        // (an hour away) stays armed.
        s.set_read_timeout(Some(Duration::from_secs(3600))).unwrap();
        let reader = tasklet::spawn(move || {
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            // Now a short timeout: the armed hour-long timer must not
            // stand in for it.
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let t = Instant::now();
            // Bounded: a wrong timer would leave this read parked for an hour.
            let e = tasklet::timeout(Duration::from_secs(20), || s.read(&mut b))
                .expect("the 50 ms read timeout never fired")
                .unwrap_err();
            (e.kind(), t.elapsed())
        });
        tasklet::sleep(Duration::from_millis(5));
        c.write_all(b"ping").unwrap();
        let (kind, waited) = reader.join().unwrap();
        assert_eq!(kind, std::io::ErrorKind::TimedOut);
        assert!(
            waited >= Duration::from_millis(50),
            "timed out early: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(30),
            "timed out late: {waited:?}"
        );
        drop(c);
    });
}

#[test]
fn a_read_timeout_after_a_shorter_one_is_not_cut_short() {
    tasklet::dispatch(|| {
        let (mut c, mut s) = pair();
        // A short-timeout read that data ends early leaves a timer armed
        // 40 ms out; the next read waits up to 300 ms, so that timer fires
        // during it and must re-arm instead of timing it out.
        s.set_read_timeout(Some(Duration::from_millis(40))).unwrap();
        let reader = tasklet::spawn(move || {
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let t = Instant::now();
            let e = s.read(&mut b).unwrap_err();
            (e.kind(), t.elapsed())
        });
        tasklet::yield_now();
        c.write_all(b"ping").unwrap();
        let (kind, waited) = reader.join().unwrap();
        assert_eq!(kind, std::io::ErrorKind::TimedOut);
        assert!(
            waited >= Duration::from_millis(300),
            "timed out early: {waited:?}"
        );
        drop(c);
    });
}

#[test]
fn data_arriving_after_an_early_timer_fired_is_read() {
    tasklet::dispatch(|| {
        let (mut c, mut s) = pair();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let reader = tasklet::spawn(move || {
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            // The 20 ms timer of the first read is still armed; this read
            // outlives it and gets its data.
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.read_exact(&mut b).unwrap();
            b
        });
        tasklet::yield_now();
        c.write_all(b"ping").unwrap();
        tasklet::sleep(Duration::from_millis(100));
        c.write_all(b"pong").unwrap();
        assert_eq!(&reader.join().unwrap(), b"pong");
    });
}

#[test]
fn a_leftover_timer_does_not_hide_a_deadlock() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| {
            tasklet::dispatch(|| {
                let stuck = tasklet::spawn(|| {
                    // A timed wait that ends early leaves a timer an hour away…
                    let me = hub::current_unparker();
                    tasklet::spawn(move || {
                        me.unpark();
                    });
                    let _ = hub::park(Some(Instant::now() + Duration::from_secs(3600)));
                    // …then a wait nothing can end.
                    loop {
                        let _ = hub::park(None);
                    }
                });
                stuck.join().unwrap();
            })
        });
        let msg = match r {
            Ok(()) => String::from("(no panic)"),
            Err(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        };
        let _ = tx.send(msg);
    });
    let msg = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no deadlock reported within 30 s: a leftover park timer hid it");
    assert!(msg.contains("deadlock"), "message: {msg}");
}

#[test]
fn finished_tasklets_leave_no_timer_armed() {
    tasklet::dispatch(|| {
        let mut handles = Vec::new();
        for _ in 0..100 {
            handles.push(tasklet::spawn(|| {
                let me = hub::current_unparker();
                tasklet::spawn(move || {
                    me.unpark();
                });
                // Ends early, leaving its timer armed until the tasklet ends.
                let _ = hub::park(Some(Instant::now() + Duration::from_secs(3600)));
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(tasklet::stats().timers_armed, 0);
    });
}

#[test]
fn sleeps_after_an_early_ended_wait_last_their_full_length() {
    tasklet::dispatch(|| {
        let me = hub::current_unparker();
        tasklet::spawn(move || {
            me.unpark();
        });
        // Leaves a timer 10 ms out.
        let _ = hub::park(Some(Instant::now() + Duration::from_millis(10)));
        for ms in [50u64, 5, 30] {
            let t = Instant::now();
            tasklet::sleep(Duration::from_millis(ms));
            let slept = t.elapsed();
            assert!(
                slept >= Duration::from_millis(ms),
                "slept {slept:?} for {ms} ms"
            );
        }
    });
}

/// Deadlines a second or more away wake the hub through a `timerfd` (Linux)
/// instead of an `epoll_wait` timeout: armed for the earliest far deadline
/// while the hub blocks, and re-armed when an earlier one comes.
#[test]
fn far_deadlines_end_on_time_also_when_an_earlier_one_comes_later() {
    tasklet::dispatch(|| {
        let t0 = Instant::now();
        let far = tasklet::spawn(|| {
            let t = Instant::now();
            tasklet::sleep(Duration::from_millis(3000));
            t.elapsed()
        });
        // Let the hub block with only the 3 s deadline armed (its timerfd
        // set for it), then come back from another thread.
        let go = std::sync::Arc::new(tasklet::sync::Event::new());
        let setter = go.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            setter.set();
        });
        go.wait();
        thread.join().unwrap();
        // An earlier far deadline: the timerfd must be re-armed for it.
        let t = Instant::now();
        tasklet::sleep(Duration::from_millis(1200));
        let slept = t.elapsed();
        assert!(
            slept >= Duration::from_millis(1200),
            "woke early: {slept:?}"
        );
        assert!(
            t0.elapsed() < Duration::from_millis(2900),
            "the 1.2 s sleep waited for the 3 s deadline ({slept:?})"
        );
        let far_slept = far.join().unwrap();
        assert!(
            far_slept >= Duration::from_millis(3000),
            "woke early: {far_slept:?}"
        );
    });
}
