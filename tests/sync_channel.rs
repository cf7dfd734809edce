//! `tasklet::sync` channels: semantics, close/drop races, timeouts, kills,
//! and cross-thread use.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklet::sync::{
    channel, unbounded, RecvError, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError,
};

#[test]
fn fifo_and_close_on_sender_drop() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(4);
        let p = tasklet::spawn(move || {
            for i in 0..100 {
                tx.send(i).unwrap();
            }
        });
        let got: Vec<u32> = rx.iter().collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        p.join().unwrap();
    });
}

#[test]
fn bounded_send_parks_when_full() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(2);
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let p = tasklet::spawn(move || {
            for i in 0..4 {
                tx.send(i).unwrap();
                l.borrow_mut().push(format!("sent {i}"));
            }
        });
        tasklet::yield_now();
        tasklet::yield_now();
        // Only two fit.
        assert_eq!(*log.borrow(), ["sent 0", "sent 1"]);
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.recv().unwrap(), 0);
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(rx.recv().unwrap(), 2);
        assert_eq!(rx.recv().unwrap(), 3);
        p.join().unwrap();
        assert_eq!(log.borrow().len(), 4);
    });
}

#[test]
fn try_send_try_recv() {
    let (tx, rx) = channel::<u8>(1);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    tx.try_send(1).unwrap();
    assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    assert_eq!(rx.try_recv(), Ok(1));
    drop(rx);
    assert_eq!(tx.try_send(3), Err(TrySendError::Disconnected(3)));
    assert!(tx.is_closed());
}

#[test]
fn rendezvous_needs_a_waiting_receiver() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(0);
        assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
        let done = Rc::new(RefCell::new(false));
        let d = done.clone();
        let s = tasklet::spawn(move || {
            tx.send(7).unwrap();
            *d.borrow_mut() = true;
            tx.send(8).unwrap();
        });
        tasklet::sleep(Duration::from_millis(5));
        assert!(
            !*done.borrow(),
            "rendezvous send completed without a receiver"
        );
        assert_eq!(rx.recv().unwrap(), 7);
        assert_eq!(rx.recv().unwrap(), 8);
        s.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError));
    });
}

#[test]
fn receiver_drop_fails_blocked_senders_with_value() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<String>(1);
        tx.send("a".into()).unwrap();
        let tx2 = tx.clone();
        let s = tasklet::spawn(move || tx2.send("b".into()));
        tasklet::yield_now();
        assert!(!s.is_finished());
        drop(rx);
        let err = s.join().unwrap().unwrap_err();
        assert_eq!(err.into_inner(), "b");
        assert_eq!(tx.send("c".into()).unwrap_err().0, "c");
    });
}

#[test]
fn sender_drop_wakes_blocked_receivers() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(1);
        let hs: Vec<_> = (0..5)
            .map(|_| {
                let rx = rx.clone();
                tasklet::spawn(move || rx.recv())
            })
            .collect();
        tasklet::yield_now();
        let tx2 = tx.clone();
        drop(tx);
        tasklet::yield_now();
        assert!(
            hs.iter().all(|h| !h.is_finished()),
            "closed while a sender lives"
        );
        drop(tx2);
        for h in hs {
            assert_eq!(h.join().unwrap(), Err(RecvError));
        }
    });
}

#[test]
fn timeouts() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(1);
        let t = Instant::now();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(20)),
            Err(RecvTimeoutError::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(20));
        tx.send(1).unwrap();
        let t = Instant::now();
        assert_eq!(
            tx.send_timeout(2, Duration::from_millis(20)),
            Err(SendTimeoutError::Timeout(2))
        );
        assert!(t.elapsed() >= Duration::from_millis(20));
        // A value arriving before the deadline is delivered.
        let tx2 = tx.clone();
        let s = tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(5));
            tx2.send_timeout(3, Duration::from_secs(5))
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(3));
        assert_eq!(s.join().unwrap(), Ok(()));
        drop(tx);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(RecvTimeoutError::Disconnected)
        );
    });
}

#[test]
fn tasklet_timeout_interrupts_recv() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(1);
        let r = tasklet::timeout(Duration::from_millis(10), || rx.recv());
        assert!(r.is_err());
        // The channel still works afterwards and the value is not lost.
        tx.send(5).unwrap();
        assert_eq!(rx.recv(), Ok(5));
    });
}

#[test]
fn killed_receiver_passes_wakeup_on() {
    // Two receivers wait; a value arrives and wakes the first, which is
    // killed before it runs: the second must get the value.
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(4);
        let rx1 = rx.clone();
        let a = tasklet::spawn(move || rx1.recv());
        let rx2 = rx.clone();
        let b = tasklet::spawn(move || rx2.recv());
        tasklet::yield_now();
        tx.send(9).unwrap(); // wakes `a`
        a.kill();
        assert!(a.join().unwrap_err().is_killed());
        let r =
            tasklet::timeout(Duration::from_secs(5), || b.join().unwrap()).expect("lost wake-up");
        assert_eq!(r, Ok(9));
    });
}

#[test]
fn killed_receiver_gives_back_a_handed_value_in_order() {
    // A value sent to a parked receiver is handed straight to it; if that
    // receiver is killed before it runs and nobody else waits, the value
    // goes back to the front of the queue, ahead of later values.
    for cap in [0, 1] {
        tasklet::dispatch(move || {
            let (tx, rx) = channel::<u32>(cap);
            let rx1 = rx.clone();
            let a = tasklet::spawn(move || rx1.recv());
            tasklet::yield_now(); // `a` parks in recv
            assert_eq!(tx.try_send(1), Ok(())); // handed to `a`
            if cap == 1 {
                tx.send(2).unwrap(); // queued
            }
            a.kill();
            assert!(a.join().unwrap_err().is_killed());
            assert_eq!(rx.try_recv(), Ok(1), "capacity {cap}");
            if cap == 1 {
                assert_eq!(rx.try_recv(), Ok(2));
            }
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        });
    }
}

#[test]
fn value_handed_over_before_a_recv_timeout_is_delivered() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(1);
        let a = tasklet::spawn(move || rx.recv_timeout(Duration::from_millis(5)));
        tasklet::yield_now(); // `a` parks with a 5 ms deadline
        tx.send(3).unwrap(); // handed to `a`
                             // Hold the dispatcher past the deadline: `a` is woken by the value
                             // and its timer expires before it runs; the value must not be lost.
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        assert_eq!(a.join().unwrap(), Ok(3));
    });
}

#[test]
fn killed_sender_passes_wakeup_on() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(1);
        tx.send(0).unwrap();
        let t1 = tx.clone();
        let a = tasklet::spawn(move || t1.send(1));
        let t2 = tx.clone();
        let b = tasklet::spawn(move || t2.send(2));
        tasklet::yield_now();
        assert_eq!(rx.recv(), Ok(0)); // wakes `a`
        a.kill();
        assert!(a.join().unwrap_err().is_killed());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(2));
        assert_eq!(b.join().unwrap(), Ok(()));
    });
}

#[test]
fn plain_thread_producer_feeds_a_million_items_to_tasklets() {
    const N: u64 = 1_000_000;
    const CONSUMERS: usize = 4;
    let (tx, rx) = channel::<u64>(1024);
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            tx.send(i).unwrap();
        }
    });
    let seen = tasklet::dispatch(move || {
        let hs: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let rx = rx.clone();
                tasklet::spawn(move || {
                    let mut got = Vec::new();
                    while let Ok(v) = rx.recv_timeout(Duration::from_secs(30)) {
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        drop(rx);
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    producer.join().unwrap();
    let mut marks = vec![false; N as usize];
    let mut total = 0;
    for got in &seen {
        // Each consumer sees its share in order.
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        for &v in got {
            assert!(!marks[v as usize], "{v} received twice");
            marks[v as usize] = true;
            total += 1;
        }
    }
    assert_eq!(total, N as usize, "items lost");
}

#[test]
fn tasklet_producer_plain_thread_consumer() {
    let (tx, rx) = channel::<u32>(8);
    let consumer = std::thread::spawn(move || rx.iter().sum::<u32>());
    tasklet::dispatch(move || {
        for i in 0..10_000 {
            tx.send(i).unwrap();
        }
    });
    assert_eq!(consumer.join().unwrap(), (0..10_000).sum());
}

#[test]
fn between_two_dispatchers() {
    let (tx, rx) = channel::<u32>(0);
    let (back_tx, back_rx) = unbounded::<u32>();
    let a = std::thread::spawn(move || {
        tasklet::dispatch(move || {
            for v in &rx {
                back_tx.send(v * 2).unwrap();
            }
        })
    });
    let sum = tasklet::dispatch(move || {
        let mut sum = 0;
        for i in 0..1000 {
            tx.send(i).unwrap();
            sum += back_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        sum
    });
    a.join().unwrap();
    assert_eq!(sum, (0..1000).map(|i| i * 2).sum());
}

#[test]
fn close_race_with_plain_threads() {
    // Senders on threads drop while tasklet receivers wait: no hang, every
    // value that was sent successfully is received.
    for _ in 0..20 {
        let (tx, rx) = channel::<u32>(2);
        let sent = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let tx = tx.clone();
                let sent = sent.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        if tx.send(i).is_ok() {
                            sent.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let got = tasklet::dispatch(move || {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let rx = rx.clone();
                    tasklet::spawn(move || rx.iter().count())
                })
                .collect();
            drop(rx);
            hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
        });
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(got as u32, sent.load(Ordering::SeqCst));
        assert_eq!(got, 150);
    }
}

#[test]
fn receiver_dropped_while_thread_sender_blocked() {
    let (tx, rx) = channel::<u32>(1);
    let failed = Arc::new(AtomicBool::new(false));
    let f = failed.clone();
    let t = std::thread::spawn(move || {
        tx.send(1).unwrap();
        if tx.send(2).is_err() {
            f.store(true, Ordering::SeqCst);
        }
    });
    tasklet::dispatch(move || {
        tasklet::sleep(Duration::from_millis(20));
        drop(rx);
    });
    t.join().unwrap();
    assert!(failed.load(Ordering::SeqCst));
}

#[test]
fn endpoints_are_send_and_created_before_dispatch() {
    fn assert_send<T: Send + Sync>() {}
    assert_send::<tasklet::sync::Sender<u32>>();
    assert_send::<tasklet::sync::Receiver<u32>>();
    let (tx, rx) = unbounded();
    tx.send(1).unwrap();
    let v = tasklet::dispatch(move || rx.recv().unwrap());
    assert_eq!(v, 1);
}

#[test]
fn spuriously_woken_receivers_keep_their_place() {
    // A tasklet that unparks itself before `recv` gets a spurious wake-up
    // from its first park; it must wait again (reachable in its new wait
    // epoch) without losing its place in the receiver queue.
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(1);
        let order = Rc::new(RefCell::new(Vec::new()));
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let rx = rx.clone();
                let order = order.clone();
                tasklet::spawn(move || {
                    if i == 0 {
                        assert!(tasklet::hub::current_unparker().unpark());
                    }
                    let v = rx.recv().unwrap();
                    order.borrow_mut().push((i, v));
                })
            })
            .collect();
        tasklet::yield_now(); // all three park (the first one twice)
        tasklet::yield_now();
        for v in 10..13 {
            tx.send(v).unwrap();
        }
        for h in hs {
            tasklet::timeout(Duration::from_secs(5), || h.join().unwrap()).expect("lost wake-up");
        }
        assert_eq!(*order.borrow(), [(0, 10), (1, 11), (2, 12)]);
    });
}

#[test]
fn spuriously_woken_sender_keeps_its_place() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(1);
        tx.send(0).unwrap();
        let hs: Vec<_> = (1..4)
            .map(|i| {
                let tx = tx.clone();
                tasklet::spawn(move || {
                    if i == 1 {
                        assert!(tasklet::hub::current_unparker().unpark());
                    }
                    tx.send(i).unwrap();
                })
            })
            .collect();
        tasklet::yield_now();
        tasklet::yield_now();
        let got: Vec<u32> = (0..4)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2, 3]);
        for h in hs {
            h.join().unwrap();
        }
    });
}

#[test]
fn killed_middle_receiver_leaves_the_others_in_order() {
    for cap in [0, 1, 4] {
        tasklet::dispatch(move || {
            let (tx, rx) = channel::<u32>(cap);
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    let rx = rx.clone();
                    tasklet::spawn(move || rx.recv())
                })
                .collect();
            tasklet::yield_now(); // all three park
            hs[1].kill();
            tasklet::yield_now(); // it unwinds and unlinks itself
            assert!(hs[1].is_finished());
            let tx2 = tx.clone();
            let s = tasklet::spawn(move || {
                tx2.send(1).unwrap();
                tx2.send(2).unwrap();
            });
            let mut hs = hs.into_iter();
            let a = hs.next().unwrap();
            let b = hs.next().unwrap();
            let c = hs.next().unwrap();
            assert_eq!(a.join().unwrap(), Ok(1), "capacity {cap}");
            assert!(b.join().unwrap_err().is_killed());
            assert_eq!(c.join().unwrap(), Ok(2), "capacity {cap}");
            s.join().unwrap();
            // Nothing stale is left linked: the channel still works.
            drop(tx);
            assert_eq!(rx.recv(), Err(RecvError));
        });
    }
}

#[test]
fn killed_and_timed_out_senders_leave_the_others_in_order() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(1);
        tx.send(0).unwrap();
        let spawn_sender = |v: u32, timeout: Option<Duration>| {
            let tx = tx.clone();
            tasklet::spawn(move || match timeout {
                Some(t) => tx.send_timeout(v, t),
                None => tx.send(v).map_err(|e| SendTimeoutError::Disconnected(e.0)),
            })
        };
        let a = spawn_sender(1, None);
        let b = spawn_sender(2, Some(Duration::from_millis(10)));
        let c = spawn_sender(3, None);
        let d = spawn_sender(4, None);
        tasklet::yield_now(); // all four block
        c.kill();
        assert!(c.join().unwrap_err().is_killed());
        assert_eq!(b.join().unwrap(), Err(SendTimeoutError::Timeout(2)));
        let got: Vec<u32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 4]);
        assert_eq!(a.join().unwrap(), Ok(()));
        assert_eq!(d.join().unwrap(), Ok(()));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    });
}

#[test]
fn rendezvous_send_completes_only_when_taken() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(0);
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let s = tasklet::spawn(move || {
            for i in 0..3 {
                tx.send(i).unwrap();
                l.borrow_mut().push(format!("sent {i}"));
            }
        });
        for _ in 0..3 {
            tasklet::yield_now();
        }
        // A blocked rendezvous sender queues nothing.
        assert!(log.borrow().is_empty());
        assert_eq!(rx.len(), 0);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        for i in 0..3 {
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(i));
            log.borrow_mut().push(format!("got {i}"));
        }
        s.join().unwrap();
        // Each send returned only after a receiver had taken its value.
        let log = log.borrow();
        for i in 0..3 {
            let sent = log.iter().position(|e| *e == format!("sent {i}"));
            let got = log.iter().position(|e| *e == format!("got {i}"));
            assert!(sent.is_some() && got.is_some(), "{log:?}");
        }
        assert_eq!(log.iter().filter(|e| e.starts_with("sent")).count(), 3);
        // Receivers parked first: a send hands over at once, no queueing.
        let (tx, rx) = channel::<u32>(0);
        let r = tasklet::spawn(move || rx.recv());
        tasklet::yield_now();
        assert_eq!(tx.try_send(5), Ok(()));
        assert_eq!(tx.try_send(6), Err(TrySendError::Full(6)));
        assert_eq!(r.join().unwrap(), Ok(5));
    });
}

#[test]
fn rendezvous_across_threads_never_runs_ahead() {
    // A plain thread sends into a rendezvous channel drained by tasklets:
    // when a send returns, its value has been taken.
    const N: u32 = 2000;
    let (tx, rx) = channel::<u32>(0);
    let taken = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let t = taken.clone();
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            tx.send(i).unwrap();
            // Values 0..=i have been taken; each of the two receivers may
            // not have counted its last one yet (it parks again only after
            // counting, so no more can be in flight).
            assert!(t.load(Ordering::SeqCst) + 2 > i);
        }
    });
    let sum = tasklet::dispatch(move || {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                let taken = taken.clone();
                tasklet::spawn(move || {
                    let mut sum = 0u64;
                    while let Ok(v) = rx.recv_timeout(Duration::from_secs(10)) {
                        taken.fetch_add(1, Ordering::SeqCst);
                        sum += v as u64;
                    }
                    sum
                })
            })
            .collect();
        drop(rx);
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    producer.join().unwrap();
    assert_eq!(sum, (0..N as u64).sum());
}

#[test]
fn mixed_same_dispatcher_and_cross_thread_use() {
    // One channel used at once by tasklets on this dispatcher (both ends),
    // tasklets on another dispatcher and a plain thread: every value
    // arrives exactly once.
    const PER: u64 = 5000;
    for cap in [0, 1, 16] {
        let (tx, rx) = channel::<u64>(cap);
        let (done_tx, done_rx) = unbounded::<Vec<u64>>();
        let thread_tx = tx.clone();
        let thread = std::thread::spawn(move || {
            for i in 0..PER {
                thread_tx.send(i).unwrap();
            }
        });
        let other_rx = rx.clone();
        let other_done = done_tx.clone();
        let other_tx = tx.clone();
        let other = std::thread::spawn(move || {
            tasklet::dispatch(move || {
                let s = tasklet::spawn(move || {
                    for i in 0..PER {
                        other_tx.send(PER + i).unwrap();
                    }
                });
                let mut got = Vec::new();
                while let Ok(v) = other_rx.recv_timeout(Duration::from_secs(10)) {
                    got.push(v);
                }
                other_done.send(got).unwrap();
                s.join().unwrap();
            })
        });
        tasklet::dispatch(move || {
            let s = tasklet::spawn(move || {
                for i in 0..PER {
                    tx.send(2 * PER + i).unwrap();
                }
            });
            let receivers: Vec<_> = (0..2)
                .map(|_| {
                    let rx = rx.clone();
                    let done = done_tx.clone();
                    tasklet::spawn(move || {
                        let mut got = Vec::new();
                        while let Ok(v) = rx.recv_timeout(Duration::from_secs(10)) {
                            got.push(v);
                        }
                        done.send(got).unwrap();
                    })
                })
                .collect();
            drop(rx);
            s.join().unwrap();
            for r in receivers {
                r.join().unwrap();
            }
        });
        thread.join().unwrap();
        other.join().unwrap();
        let mut seen = vec![false; 3 * PER as usize];
        for got in done_rx.try_iter() {
            // Each sender's values stay in order for each receiver.
            for w in got.windows(2) {
                if w[0] / PER == w[1] / PER {
                    assert!(w[0] < w[1], "capacity {cap}: out of order");
                }
            }
            for v in got {
                assert!(!seen[v as usize], "capacity {cap}: {v} received twice");
                seen[v as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "capacity {cap}: values lost");
    }
}

#[test]
fn short_timeouts_racing_cross_thread_senders_lose_nothing() {
    // Receives that time out while a plain thread's send is handing them a
    // value: every value is received exactly once, in order.
    const N: u32 = 20_000;
    for cap in [0, 1] {
        let (tx, rx) = channel::<u32>(cap);
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                tx.send(i).unwrap();
            }
        });
        let got = tasklet::dispatch(move || {
            let mut got = Vec::with_capacity(N as usize);
            let give_up = Instant::now() + Duration::from_secs(30);
            loop {
                match rx.recv_timeout(Duration::from_micros(20)) {
                    Ok(v) => got.push(v),
                    Err(RecvTimeoutError::Timeout) => assert!(Instant::now() < give_up),
                    Err(RecvTimeoutError::Disconnected) => break got,
                }
            }
        });
        producer.join().unwrap();
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "capacity {cap}");
    }
}

#[test]
fn send_timeouts_racing_a_thread_receiver_send_exactly_what_they_report() {
    const N: u32 = 20_000;
    for cap in [0, 1] {
        let (tx, rx) = channel::<u32>(cap);
        let consumer = std::thread::spawn(move || rx.iter().collect::<Vec<u32>>());
        let sent = tasklet::dispatch(move || {
            let mut sent = Vec::new();
            for i in 0..N {
                match tx.send_timeout(i, Duration::from_micros(20)) {
                    Ok(()) => sent.push(i),
                    Err(SendTimeoutError::Timeout(v)) => assert_eq!(v, i),
                    Err(SendTimeoutError::Disconnected(_)) => panic!("receiver gone"),
                }
            }
            sent
        });
        assert_eq!(consumer.join().unwrap(), sent, "capacity {cap}");
    }
}

#[test]
fn last_sender_dropped_on_another_thread_wakes_parked_receivers() {
    let (tx, rx) = channel::<u32>(0);
    let (ready_tx, ready_rx) = channel::<()>(0);
    let t = std::thread::spawn(move || {
        // Drop only once a receiver is parked.
        ready_rx.recv().unwrap();
        drop(tx);
    });
    tasklet::dispatch(move || {
        let rxs: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                tasklet::spawn(move || rx.recv_timeout(Duration::from_secs(10)))
            })
            .collect();
        tasklet::yield_now();
        ready_tx.send(()).unwrap();
        for r in rxs {
            assert_eq!(r.join().unwrap(), Err(RecvTimeoutError::Disconnected));
        }
    });
    t.join().unwrap();
}

#[test]
fn last_receiver_dropped_on_another_dispatcher_fails_parked_senders() {
    let (tx, rx) = channel::<String>(0);
    let (ready_tx, ready_rx) = channel::<()>(0);
    let other = std::thread::spawn(move || {
        tasklet::dispatch(move || {
            ready_rx.recv().unwrap();
            drop(rx);
        })
    });
    tasklet::dispatch(move || {
        let ss: Vec<_> = (0..3)
            .map(|i| {
                let tx = tx.clone();
                tasklet::spawn(move || tx.send_timeout(format!("v{i}"), Duration::from_secs(10)))
            })
            .collect();
        tasklet::yield_now();
        ready_tx.send(()).unwrap();
        for (i, s) in ss.into_iter().enumerate() {
            match s.join().unwrap() {
                Err(SendTimeoutError::Disconnected(v)) => assert_eq!(v, format!("v{i}")),
                r => panic!("sender {i}: {r:?}"),
            }
        }
    });
    other.join().unwrap();
}

#[test]
fn killed_receiver_passes_a_handed_value_to_another_dispatcher() {
    // A value handed to a parked receiver that is killed before it runs goes
    // to the next parked receiver, even one on another dispatcher.
    let (tx, rx) = channel::<u32>(0);
    let (go_tx, go_rx) = channel::<()>(0);
    let (parked_tx, parked_rx) = channel::<()>(0);
    let rx2 = rx.clone();
    let other = std::thread::spawn(move || {
        tasklet::dispatch(move || {
            go_rx.recv().unwrap(); // the first receiver is parked
            let h = tasklet::spawn(move || rx2.recv_timeout(Duration::from_secs(10)));
            tasklet::yield_now(); // parked, second in line
            parked_tx.send(()).unwrap();
            h.join().unwrap()
        })
    });
    tasklet::dispatch(move || {
        let a = tasklet::spawn(move || rx.recv_timeout(Duration::from_secs(10)));
        tasklet::yield_now(); // `a` parks first
        go_tx.send(()).unwrap();
        parked_rx.recv().unwrap();
        tx.try_send(7).unwrap(); // handed to `a`
        a.kill();
        assert!(a.join().unwrap_err().is_killed());
    });
    assert_eq!(other.join().unwrap(), Ok(7));
}
