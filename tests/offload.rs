//! `tasklet::unblock`: thread offload that keeps the dispatcher responsive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn returns_value_and_runs_on_another_thread() {
    let (v, same) = tasklet::dispatch(|| {
        let me = std::thread::current().id();
        tasklet::unblock(move || (42, std::thread::current().id() == me))
    });
    assert_eq!(v, 42);
    assert!(!same, "unblock ran f on the dispatcher thread");
}

#[test]
fn outside_dispatcher_runs_inline() {
    let me = std::thread::current().id();
    let same = tasklet::unblock(move || std::thread::current().id() == me);
    assert!(same);
}

#[test]
fn dispatcher_stays_responsive() {
    // Asserted on events, not on lateness (which a loaded machine or a
    // sanitizer build stretches): the offloaded closure blocks its pool
    // thread until a ticker tasklet has ticked TICKS times. The ticker
    // first runs when the main tasklet parks in `unblock`, so every tick it
    // delivers was delivered while `unblock` was in progress; were the
    // dispatcher thread blocked for the call, no tick would come and the
    // closure would give up after the (generous) bound.
    const TICKS: usize = 5;
    tasklet::dispatch(|| {
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        let ticker = tasklet::spawn(move || {
            for i in 1..=TICKS {
                tasklet::sleep(Duration::from_millis(10));
                tx.send(i).expect("the offloaded closure gave up");
            }
        });
        let t = Instant::now();
        let seen = tasklet::unblock(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut seen = 0;
            while seen < TICKS {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(i) => seen = i,
                    Err(_) => break,
                }
            }
            seen
        });
        assert_eq!(
            seen, TICKS,
            "the ticker stopped while unblock ran: the dispatcher was blocked"
        );
        // The ticks took at least their sleeps.
        assert!(t.elapsed() >= Duration::from_millis(10) * TICKS as u32);
        ticker.join().unwrap();
    });
}

#[test]
fn panic_is_reraised_in_the_tasklet() {
    tasklet::dispatch(|| {
        let h = tasklet::spawn(|| tasklet::unblock(|| -> u32 { panic!("boom in pool") }));
        let e = h.join().unwrap_err();
        assert!(e.is_panic());
        assert_eq!(e.panic_message(), Some("boom in pool"));
        // The pool still works.
        assert_eq!(tasklet::unblock(|| 7), 7);
    });
}

#[test]
fn timeout_and_kill_do_not_corrupt_the_pool() {
    let finished = Arc::new(AtomicUsize::new(0));
    let f2 = finished.clone();
    tasklet::dispatch(move || {
        let f = f2.clone();
        let r = tasklet::timeout(Duration::from_millis(20), move || {
            tasklet::unblock(move || {
                std::thread::sleep(Duration::from_millis(100));
                f.fetch_add(1, Ordering::SeqCst);
                vec![1u8; 16]
            })
        });
        assert!(r.is_err());
        let f = f2.clone();
        let h = tasklet::spawn(move || {
            tasklet::unblock(move || {
                std::thread::sleep(Duration::from_millis(100));
                f.fetch_add(1, Ordering::SeqCst);
            })
        });
        tasklet::sleep(Duration::from_millis(10));
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        // Later calls still get their own results.
        let vals: Vec<u32> = (0..8)
            .map(|i| tasklet::spawn(move || tasklet::unblock(move || i * 2)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(vals, (0..8).map(|i| i * 2).collect::<Vec<_>>());
    });
    // The abandoned jobs still run to completion on their threads.
    let deadline = Instant::now() + Duration::from_secs(5);
    while finished.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "abandoned jobs never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn many_concurrent_calls_run_in_parallel() {
    tasklet::dispatch(|| {
        let t = Instant::now();
        let hs: Vec<_> = (0..16)
            .map(|i| {
                tasklet::spawn(move || {
                    tasklet::unblock(move || {
                        std::thread::sleep(Duration::from_millis(100));
                        i
                    })
                })
            })
            .collect();
        let sum: i32 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, (0..16).sum());
        // Serial would take 1.6 s.
        assert!(
            t.elapsed() < Duration::from_millis(1200),
            "took {:?}",
            t.elapsed()
        );
    });
}

#[test]
fn works_from_several_dispatchers() {
    let threads: Vec<_> = (0..3)
        .map(|k| {
            std::thread::spawn(move || {
                tasklet::dispatch(move || {
                    (0..20)
                        .map(|i| tasklet::unblock(move || i + k))
                        .sum::<i32>()
                })
            })
        })
        .collect();
    for (k, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), (0..20).sum::<i32>() + 20 * k as i32);
    }
}

/// Threads of this process named like the offload pool's.
fn offload_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .map(|c| c.trim() == "tasklet-unblock")
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn pool_is_bounded_and_idle_threads_retire() {
    let limit: usize = std::env::var("TASKLET_UNBLOCK_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let peak = tasklet::dispatch(move || {
        let hs: Vec<_> = (0..limit + 40)
            .map(|_| {
                tasklet::spawn(|| {
                    tasklet::unblock(|| std::thread::sleep(Duration::from_millis(50)))
                })
            })
            .collect();
        let mut peak = 0;
        let sampler = tasklet::spawn(move || {
            for _ in 0..20 {
                peak = peak.max(offload_threads());
                tasklet::sleep(Duration::from_millis(5));
            }
            peak
        });
        for h in hs {
            h.join().unwrap();
        }
        sampler.join().unwrap()
    });
    assert!(peak > 0, "no offload thread seen");
    assert!(peak <= limit, "{peak} offload threads, limit {limit}");
    // Idle threads exit after UNBLOCK_IDLE_TIMEOUT (other tests in this binary
    // may still use the pool briefly, so allow a few periods).
    let deadline = Instant::now() + tasklet::UNBLOCK_IDLE_TIMEOUT * 4;
    while offload_threads() > 0 {
        assert!(
            Instant::now() < deadline,
            "idle offload threads never retired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
