//! `tasklet::sync::Select` and `tasklet::select!`: fairness, cancel safety
//! (no value lost or duplicated, also under cross-thread races, kills and
//! timeouts), every kind of arm.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tasklet::sync::{channel, unbounded, AsyncResult, Event, RecvError, Select};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn select_takes_the_ready_arm_and_leaves_the_others() {
    tasklet::dispatch(|| {
        let (tx1, rx1) = channel::<u32>(4);
        let (_tx2, rx2) = channel::<u32>(4);
        tx1.send(5).unwrap();
        let got = Select::new()
            .recv(&rx1, |v| ("one", v))
            .recv(&rx2, |v| ("two", v))
            .wait();
        assert_eq!(got, ("one", Ok(5)));
        // Nothing else was taken.
        tx1.send(6).unwrap();
        assert_eq!(rx1.try_recv(), Ok(6));
    });
}

#[test]
fn select_parks_until_a_cross_thread_send() {
    tasklet::dispatch(|| {
        let (tx1, rx1) = unbounded::<u32>();
        let (tx2, rx2) = unbounded::<u32>();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx2.send(2).unwrap();
            tx1
        });
        let got = Select::new()
            .recv(&rx1, |v| (1, v))
            .recv(&rx2, |v| (2, v))
            .timeout(LONG, || (0, Err(RecvError)))
            .wait();
        assert_eq!(got, (2, Ok(2)));
        drop(t.join().unwrap());
    });
}

#[test]
fn select_is_fair_between_ready_arms() {
    tasklet::dispatch(|| {
        let (tx1, rx1) = unbounded::<u8>();
        let (tx2, rx2) = unbounded::<u8>();
        let n = 10_000;
        for _ in 0..n {
            tx1.send(1).unwrap();
            tx2.send(2).unwrap();
        }
        let mut counts = [0usize; 3];
        for _ in 0..n {
            let v = Select::new()
                .recv(&rx1, |v| v.unwrap())
                .recv(&rx2, |v| v.unwrap())
                .wait();
            counts[v as usize] += 1;
        }
        assert!(
            counts[1] > n * 4 / 10 && counts[2] > n * 4 / 10,
            "{counts:?}"
        );
    });
}

#[test]
fn send_arm_not_taken_sends_nothing() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<String>(1);
        tx.send("filler".into()).unwrap();
        let (tx2, rx2) = channel::<u8>(1);
        tx2.send(1).unwrap();
        // The send arm cannot go (full); the recv arm can.
        let r = Select::new()
            .send(&tx, "not sent".to_string(), |r| format!("sent {r:?}"))
            .recv(&rx2, |v| format!("got {v:?}"))
            .wait();
        assert_eq!(r, "got Ok(1)");
        assert_eq!(rx.try_recv().unwrap(), "filler");
        assert!(rx.try_recv().is_err());
        // Now there is room: the send arm goes.
        let r = Select::new()
            .send(&tx, "sent".to_string(), |r| r.is_ok())
            .timeout(LONG, || false)
            .wait();
        assert!(r);
        assert_eq!(rx.try_recv().unwrap(), "sent");
    });
}

#[test]
fn send_arm_waits_for_room_and_a_rendezvous_receiver() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(0);
        let h = tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(10));
            rx.recv().unwrap()
        });
        let r = Select::new()
            .send(&tx, 77, |r| r.is_ok())
            .timeout(LONG, || false)
            .wait();
        assert!(r);
        assert_eq!(h.join().unwrap(), 77);
        // Closed: the send arm fails with the value.
        let r = Select::new()
            .send(&tx, 8, |r| r.unwrap_err().into_inner())
            .wait();
        assert_eq!(r, 8);
    });
}

#[test]
fn event_result_join_and_deadline_arms() {
    tasklet::dispatch(|| {
        let ev = Rc::new(Event::new());
        let e = ev.clone();
        tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(5));
            e.set()
        });
        let (_tx, rx) = channel::<u8>(1);
        let r = Select::new()
            .recv(&rx, |_| "recv")
            .event(&ev, || "event")
            .timeout(LONG, || "timeout")
            .wait();
        assert_eq!(r, "event");

        let res = Rc::new(AsyncResult::<u32, String>::new());
        let r2 = res.clone();
        tasklet::spawn(move || r2.set(3));
        let r = Select::new()
            .ready(&res, || res.try_get())
            .timeout(LONG, || None)
            .wait();
        assert_eq!(r, Some(Ok(3)));

        let mut slow = tasklet::spawn(|| tasklet::sleep(LONG));
        let mut quick = tasklet::spawn(|| 9);
        let r = Select::new()
            .finished(&mut slow, || "slow")
            .finished(&mut quick, || "quick")
            .wait();
        assert_eq!(r, "quick");
        assert_eq!(quick.join().unwrap(), 9);
        // The slow one's handle is intact: kill it and join it.
        slow.kill();
        assert!(slow.join().unwrap_err().is_killed());

        let t0 = Instant::now();
        let r = Select::new()
            .recv(&rx, |_| "recv")
            .timeout(Duration::from_millis(20), || "timeout")
            .wait();
        assert_eq!(r, "timeout");
        assert!(t0.elapsed() >= Duration::from_millis(15));
        let r = Select::new()
            .recv(&rx, |_| "recv")
            .otherwise(|| "default")
            .wait();
        assert_eq!(r, "default");
    });
}

#[test]
fn select_macro_runs_the_body_in_the_callers_frame() {
    fn first_even(rx: &tasklet::sync::Receiver<u32>, stop: &Event) -> Option<u32> {
        loop {
            tasklet::select! {
                recv(rx) -> v => {
                    let v = v.ok()?;
                    if v % 2 == 0 {
                        return Some(v);
                    }
                }
                wait(stop) => return None,
                timeout(LONG) => return None,
            }
        }
    }
    tasklet::dispatch(|| {
        let (tx, rx) = unbounded();
        let stop = Event::new();
        for v in [1, 3, 4, 5] {
            tx.send(v).unwrap();
        }
        assert_eq!(first_even(&rx, &stop), Some(4));
        stop.set();
        assert_eq!(rx.try_recv(), Ok(5)); // ready arms win over `stop` only by chance, so drain first
        assert_eq!(first_even(&rx, &stop), None);
        drop(tx);
        // Every kind of arm in one macro.
        let (otx, orx) = channel::<u8>(0);
        let ev = Event::new();
        let res = AsyncResult::<u8, ()>::new();
        let mut h = tasklet::spawn(|| tasklet::sleep(LONG));
        let mut n = 0;
        let out = tasklet::select! {
            recv(rx) -> v => { assert!(v.is_err()); "closed" }
            send(otx, 1) -> r => { r.unwrap(); "sent" }
            finished(h) => "finished",
            wait(ev) => "event",
            ready(res) => "ready",
            deadline(Instant::now() + LONG) => { n += 1; "deadline" }
        };
        assert_eq!(out, "closed"); // the only ready arm
        assert_eq!(n, 0);
        assert!(orx.try_recv().is_err());
        let out = tasklet::select! {
            send(otx, 1) -> _r => "sent",
            default => "nothing ready",
        };
        assert_eq!(out, "nothing ready");
        h.kill();
        let _ = h.join();
    });
}

#[test]
fn killed_while_selecting_loses_no_value() {
    tasklet::dispatch(|| {
        let (tx1, rx1) = channel::<u32>(0);
        let (tx2, rx2) = channel::<u32>(0);
        let (rx1, rx2) = (Rc::new(rx1), Rc::new(rx2));
        for round in 0..200u32 {
            let (a, b) = (rx1.clone(), rx2.clone());
            let h = tasklet::spawn(move || {
                Select::new()
                    .recv(&a, |v| v.unwrap())
                    .recv(&b, |v| v.unwrap())
                    .wait()
            });
            tasklet::yield_now(); // parked in the select now
                                  // Hand it a value (the rendezvous sender returns once the value
                                  // is in the select's node), then kill it before it runs.
            let tx = if round % 2 == 0 { &tx1 } else { &tx2 };
            let rx = if round % 2 == 0 { &rx1 } else { &rx2 };
            tx.send(round).unwrap();
            h.kill();
            match h.join() {
                // It ran first: it got the value.
                Ok(v) => assert_eq!(v, round),
                // Killed: the value went back to the channel.
                Err(e) => {
                    assert!(e.is_killed());
                    assert_eq!(rx.try_recv(), Ok(round));
                }
            }
        }
    });
}

#[test]
fn timeout_scope_around_select_loses_no_value() {
    tasklet::dispatch(|| {
        let (tx, rx) = unbounded::<u32>();
        let (_tx2, rx2) = unbounded::<u32>();
        let r = tasklet::timeout(Duration::from_millis(10), || {
            Select::new().recv(&rx, |v| v).recv(&rx2, |v| v).wait()
        });
        assert!(r.is_err());
        tx.send(1).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
    });
}

/// 100,000 values raced through selects: two cross-thread producers, each
/// on its own bounded channel, and selecting consumers on two dispatchers
/// whose selects also time out often (each timeout withdraws registrations
/// that senders race to hand values to). Every value must come out exactly
/// once.
#[test]
fn select_loses_no_value_under_100k_cross_thread_races() {
    const PER_PRODUCER: u64 = 50_000;
    let (tx_a, rx_a) = channel::<u64>(2);
    let (tx_b, rx_b) = channel::<u64>(0);
    let producers: Vec<_> = [(tx_a, 0u64), (tx_b, PER_PRODUCER)]
        .into_iter()
        .map(|(tx, base)| {
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    tx.send(base + i).unwrap();
                }
            })
        })
        .collect();
    let timeouts = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let (rx_a, rx_b) = (rx_a.clone(), rx_b.clone());
            let timeouts = timeouts.clone();
            thread::spawn(move || {
                tasklet::dispatch(move || {
                    let hs: Vec<_> = (0..2)
                        .map(|_| {
                            let (rx_a, rx_b) = (rx_a.clone(), rx_b.clone());
                            let timeouts = timeouts.clone();
                            tasklet::spawn(move || {
                                let mut got = Vec::new();
                                let (mut a_open, mut b_open) = (true, true);
                                while a_open || b_open {
                                    let mut sel = Select::new();
                                    if a_open {
                                        sel = sel.recv(&rx_a, |v| (0, v));
                                    }
                                    if b_open {
                                        sel = sel.recv(&rx_b, |v| (1, v));
                                    }
                                    let r = sel
                                        .timeout(Duration::from_micros(50), || (2, Err(RecvError)))
                                        .wait();
                                    match r {
                                        (_, Ok(v)) => got.push(v),
                                        (0, Err(_)) => a_open = false,
                                        (1, Err(_)) => b_open = false,
                                        _ => {
                                            timeouts.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                }
                                got
                            })
                        })
                        .collect();
                    hs.into_iter()
                        .flat_map(|h| h.join().unwrap())
                        .collect::<Vec<u64>>()
                })
            })
        })
        .collect();
    drop((rx_a, rx_b));
    for p in producers {
        p.join().unwrap();
    }
    let mut all: Vec<u64> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(
        all.len() as u64,
        2 * PER_PRODUCER,
        "lost or duplicated values"
    );
    all.sort_unstable();
    assert!(all.iter().copied().eq(0..2 * PER_PRODUCER));
    eprintln!("{} select timeouts raced", timeouts.load(Ordering::Relaxed));
}

/// Send arms racing: each round offers one value on two channels; exactly
/// one copy must arrive, across threads.
#[test]
fn select_sends_each_value_exactly_once_across_threads() {
    const N: u64 = 20_000;
    let (tx_a, rx_a) = channel::<u64>(1);
    let (tx_b, rx_b) = channel::<u64>(0);
    let readers: Vec<_> = [rx_a, rx_b]
        .into_iter()
        .map(|rx| thread::spawn(move || rx.iter().collect::<Vec<u64>>()))
        .collect();
    tasklet::dispatch(move || {
        for i in 0..N {
            let ok = Select::new()
                .send(&tx_a, i, |r| r.is_ok())
                .send(&tx_b, i, |r| r.is_ok())
                .wait();
            assert!(ok);
        }
    });
    let mut seen = HashSet::new();
    for r in readers {
        for v in r.join().unwrap() {
            assert!(seen.insert(v), "value {v} sent twice");
        }
    }
    assert_eq!(seen.len() as u64, N);
}

#[test]
fn select_on_a_plain_thread() {
    let (tx, rx) = unbounded::<u32>();
    let (_tx2, rx2) = unbounded::<u32>();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        tx.send(4).unwrap();
    });
    let v = Select::new()
        .recv(&rx, |v| v)
        .recv(&rx2, |v| v)
        .timeout(LONG, || Err(RecvError))
        .wait();
    assert_eq!(v, Ok(4));
    t.join().unwrap();
    let hits = Cell::new(0);
    let r = Select::new()
        .recv(&rx2, |_| 1)
        .timeout(Duration::from_millis(5), || {
            hits.set(hits.get() + 1);
            2
        })
        .wait();
    assert_eq!((r, hits.get()), (2, 1));
}

/// `send_from`: a send arm that is not taken keeps its value in the
/// caller's slot, also under cross-thread races with receive arms.
#[test]
fn send_from_keeps_the_value_when_not_taken() {
    const N: u64 = 20_000;
    let (out_tx, out_rx) = channel::<u64>(0);
    let (in_tx, in_rx) = channel::<u64>(0);
    let reader = thread::spawn(move || out_rx.iter().collect::<Vec<u64>>());
    let writer = thread::spawn(move || {
        for i in 0..N {
            in_tx.send(1_000_000 + i).unwrap();
        }
    });
    let (sent, got) = tasklet::dispatch(move || {
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let mut next = 0u64;
        let mut slot = None;
        let mut in_open = true;
        while next < N || slot.is_some() || in_open {
            if slot.is_none() && next < N {
                slot = Some(next);
                next += 1;
            }
            let offered = slot;
            tasklet::select! {
                send_from(out_tx, slot) -> r => {
                    r.unwrap();
                    assert!(slot.is_none());
                    sent.push(offered.unwrap());
                }
                recv(in_rx) -> v => match v {
                    Ok(v) => {
                        got.push(v);
                        assert_eq!(slot, offered, "an arm not taken keeps its value");
                    }
                    Err(_) => in_open = false,
                },
            }
            if next == N && slot.is_none() && !in_open {
                break;
            }
        }
        (sent, got)
    });
    writer.join().unwrap();
    assert_eq!(sent, (0..N).collect::<Vec<_>>());
    assert_eq!(reader.join().unwrap(), sent);
    assert_eq!(got, (1_000_000..1_000_000 + N).collect::<Vec<_>>());
}

/// A select with a send and a receive arm on one rendezvous channel does
/// not pair with itself (before: it "sent" into its own receive arm, which
/// left the value queued in a capacity-0 channel, or woke itself in a
/// loop that never yielded, so not even a `timeout` could end it). Alone,
/// it waits; with a peer, it pairs with the peer.
#[test]
fn a_select_does_not_pair_with_itself() {
    tasklet::dispatch(|| {
        for round in 0..20 {
            let (tx, rx) = channel::<u32>(0);
            let r = tasklet::timeout(Duration::from_millis(5), || {
                tasklet::select! {
                    send(tx, 1) -> r => format!("sent {r:?}"),
                    recv(rx) -> v => format!("got {v:?}"),
                }
            });
            assert!(r.is_err(), "round {round}: alone, it paired: {r:?}");
            assert!(
                rx.try_recv().is_err(),
                "round {round}: a value was left queued"
            );

            // A peer receiving: the send arm pairs with it.
            let peer_rx = rx.clone();
            let peer = tasklet::spawn(move || peer_rx.recv().unwrap());
            tasklet::yield_now();
            let r = tasklet::select! {
                send(tx, 2) -> r => format!("sent {r:?}"),
                recv(rx) -> v => format!("got {v:?}"),
            };
            assert_eq!(r, "sent Ok(())", "round {round}");
            assert_eq!(peer.join().unwrap(), 2);

            // A peer sending: the receive arm pairs with it.
            let peer_tx = tx.clone();
            let peer = tasklet::spawn(move || peer_tx.send(3).unwrap());
            tasklet::yield_now();
            let r = tasklet::select! {
                send(tx, 4) -> r => format!("sent {r:?}"),
                recv(rx) -> v => format!("got {v:?}"),
            };
            assert_eq!(r, "got Ok(3)", "round {round}");
            peer.join().unwrap();
        }
    });
}
