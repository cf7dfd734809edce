//! `tasklet::block_on` with runtime-agnostic futures: ready futures, wake-ups
//! from another tasklet, a plain thread and another dispatcher, kill/timeout
//! dropping the future in the tasklet, panics reaching `join`.

use std::future::{pending, poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

/// Bounds a test's wait: fails instead of hanging the suite.
const LIMIT: Duration = Duration::from_secs(30);

/// Records where and whether it was dropped.
struct DropProbe(Arc<Mutex<Option<thread::ThreadId>>>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(thread::current().id());
    }
}

#[test]
fn ready_future_inside_a_tasklet_and_outside_a_dispatcher() {
    assert_eq!(tasklet::block_on(async { 40 + 2 }), 42);
    let v = tasklet::dispatch(|| {
        let inner = tasklet::spawn(|| tasklet::block_on(async { 7 }));
        tasklet::block_on(async { 35 }) + inner.join().unwrap()
    });
    assert_eq!(v, 42);
}

#[test]
fn woken_from_another_tasklet_while_others_run() {
    tasklet::dispatch(|| {
        let (tx, rx) = oneshot::channel::<u32>();
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let ticker = tasklet::spawn(move || {
            for _ in 0..5 {
                tasklet::sleep(Duration::from_millis(2));
                t.fetch_add(1, Ordering::SeqCst);
            }
            tx.send(9).unwrap();
        });
        let v = tasklet::timeout(LIMIT, || tasklet::block_on(rx)).expect("woken");
        assert_eq!(v, Ok(9));
        // The other tasklet ran (and slept five times) while this one waited.
        assert_eq!(ticks.load(Ordering::SeqCst), 5);
        ticker.join().unwrap();
    });
}

#[test]
fn woken_from_a_plain_thread() {
    tasklet::dispatch(|| {
        let (tx, rx) = oneshot::channel::<u32>();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(5).unwrap();
        });
        // Alone on its dispatcher: the wait must not be reported as a deadlock.
        let v = tasklet::timeout(LIMIT, || tasklet::block_on(rx)).expect("woken");
        assert_eq!(v, Ok(5));
        t.join().unwrap();
    });
}

#[test]
fn woken_from_another_dispatcher() {
    let (tx, rx) = oneshot::channel::<u32>();
    let other = thread::spawn(move || {
        tasklet::dispatch(move || {
            tasklet::sleep(Duration::from_millis(20));
            tx.send(11).unwrap();
        })
    });
    tasklet::dispatch(|| {
        let v = tasklet::timeout(LIMIT, || tasklet::block_on(rx)).expect("woken");
        assert_eq!(v, Ok(11));
    });
    other.join().unwrap();
}

#[test]
fn a_stream_fed_from_threads_loses_no_wake_up() {
    // Many wake-ups racing the tasklet's polls and parks, from two threads.
    const N: usize = 20_000;
    tasklet::dispatch(|| {
        let (tx, mut rx) = mpsc::unbounded::<usize>();
        let feeders: Vec<_> = (0..2)
            .map(|k| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for i in 0..N {
                        tx.unbounded_send(k * N + i).unwrap();
                        if i % 64 == 0 {
                            thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let ticker = tasklet::spawn(|| {
            for _ in 0..10 {
                tasklet::yield_now();
            }
        });
        let sum = tasklet::timeout(LIMIT, || {
            tasklet::block_on(async {
                let mut sum = 0usize;
                while let Some(v) = rx.next().await {
                    sum += v;
                }
                sum
            })
        })
        .expect("every message arrives");
        assert_eq!(sum, (0..2 * N).sum::<usize>());
        ticker.join().unwrap();
        for f in feeders {
            f.join().unwrap();
        }
    });
}

#[test]
fn tasklets_ping_pong_through_futures_channels() {
    // Same-dispatcher wake-ups both ways, many times.
    tasklet::dispatch(|| {
        let (to_b, mut b_rx) = mpsc::channel::<u32>(1);
        let (to_a, mut a_rx) = mpsc::channel::<u32>(1);
        let b = tasklet::spawn(move || {
            let mut to_a = to_a;
            tasklet::block_on(async move {
                use futures::SinkExt;
                while let Some(v) = b_rx.next().await {
                    to_a.send(v + 1).await.unwrap();
                }
            })
        });
        let mut to_b = to_b;
        let last = tasklet::block_on(async move {
            use futures::SinkExt;
            let mut v = 0;
            for _ in 0..10_000 {
                to_b.send(v).await.unwrap();
                v = a_rx.next().await.unwrap();
            }
            v
        });
        assert_eq!(last, 10_000);
        b.join().unwrap();
    });
}

#[test]
fn kill_drops_the_future_in_the_tasklet() {
    tasklet::dispatch(|| {
        let dropped = Arc::new(Mutex::new(None));
        let probe = DropProbe(dropped.clone());
        let h = tasklet::spawn(move || {
            tasklet::block_on(async move {
                let _probe = probe;
                pending::<()>().await
            })
        });
        tasklet::sleep(Duration::from_millis(5));
        assert!(dropped.lock().unwrap().is_none());
        h.kill();
        assert!(h.join().is_err());
        assert_eq!(*dropped.lock().unwrap(), Some(thread::current().id()));
    });
}

#[test]
fn timeout_drops_the_future_and_the_waker_goes_stale() {
    tasklet::dispatch(|| {
        let dropped = Arc::new(Mutex::new(None));
        let probe = DropProbe(dropped.clone());
        let kept = Arc::new(Mutex::new(None));
        let k = kept.clone();
        let r = tasklet::timeout(Duration::from_millis(20), move || {
            tasklet::block_on(async move {
                let _probe = probe;
                // Keeps a clone of the waker beyond the call.
                poll_fn(|cx: &mut Context<'_>| {
                    *k.lock().unwrap() = Some(cx.waker().clone());
                    Poll::<()>::Pending
                })
                .await
            })
        });
        assert!(r.is_err());
        assert_eq!(*dropped.lock().unwrap(), Some(thread::current().id()));
        // A wake-up through the surviving waker disturbs no later wait.
        let w = kept.lock().unwrap().take().expect("waker kept");
        w.wake_by_ref();
        let t0 = std::time::Instant::now();
        tasklet::sleep(Duration::from_millis(10));
        assert!(t0.elapsed() >= Duration::from_millis(10));
        thread::spawn(move || w.wake()).join().unwrap();
        assert_eq!(tasklet::block_on(async { 3 }), 3);
    });
}

#[test]
fn panic_inside_the_future_reaches_join() {
    tasklet::dispatch(|| {
        let h = tasklet::spawn(|| {
            tasklet::block_on(async {
                tasklet::sleep(Duration::from_millis(1));
                panic!("boom in a future")
            })
        });
        let e = h.join().unwrap_err();
        assert!(e.is_panic());
        let p = e.into_panic();
        let msg = p
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| p.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("");
        assert!(msg.contains("boom in a future"), "{msg}");
        // The dispatcher and other tasklets carry on.
        assert_eq!(tasklet::spawn(|| 1).join().unwrap(), 1);
    });
}

#[test]
fn a_future_yielding_by_waking_itself_is_polled_again() {
    struct YieldN(u32);
    impl Future for YieldN {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.0 == 0 {
                return Poll::Ready(7);
            }
            self.0 -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    assert_eq!(tasklet::block_on(YieldN(100)), 7);
    tasklet::dispatch(|| {
        assert_eq!(tasklet::block_on(YieldN(100)), 7);
        // No spurious wake-up was left behind for the next wait.
        let t0 = std::time::Instant::now();
        tasklet::sleep(Duration::from_millis(10));
        assert!(t0.elapsed() >= Duration::from_millis(10));
    });
}

#[test]
fn nested_block_on_inside_a_poll() {
    tasklet::dispatch(|| {
        let (tx, rx) = oneshot::channel::<u32>();
        let sender = tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(5));
            tx.send(4).unwrap();
        });
        let v = tasklet::block_on(async move {
            // A blocking-style call inside an async block parks the tasklet.
            let inner = tasklet::block_on(rx).unwrap();
            inner * 10
        });
        assert_eq!(v, 40);
        sender.join().unwrap();
    });
}

#[test]
fn many_tasklets_block_on_at_once() {
    tasklet::dispatch(|| {
        let (tx, rx) = oneshot::channel::<()>();
        let rx = futures::future::FutureExt::shared(rx);
        let waiters: Vec<_> = (0..1000)
            .map(|i| {
                let rx = rx.clone();
                tasklet::spawn(move || {
                    tasklet::block_on(rx).unwrap();
                    i
                })
            })
            .collect();
        tasklet::yield_now();
        let t = thread::spawn(move || tx.send(()).unwrap());
        let sum: usize = tasklet::joinall(waiters)
            .into_iter()
            .map(|r| r.unwrap())
            .sum();
        assert_eq!(sum, (0..1000).sum());
        t.join().unwrap();
    });
}

#[test]
fn waiting_on_a_thread_is_not_reported_as_a_deadlock() {
    // No timer armed, no socket: only the waker held by the thread can end
    // the wait, and the dispatcher must wait for it rather than give up.
    tasklet::dispatch(|| {
        let (tx, rx) = oneshot::channel::<u32>();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            tx.send(8).unwrap();
        });
        assert_eq!(tasklet::block_on(rx), Ok(8));
        t.join().unwrap();
    });
}

#[test]
fn io_source_readiness_wakes_a_registered_waker() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use tasklet::hub::{Direction, IoSource};
    tasklet::dispatch(|| {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let src = IoSource::new(a);
        let writer = tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(10));
            b.write_all(b"x").unwrap();
            b
        });
        let mut polls = 0;
        let got = tasklet::timeout(LIMIT, || {
            tasklet::block_on(poll_fn(|cx| {
                polls += 1;
                let mut buf = [0u8; 1];
                match src.get_ref().read(&mut buf) {
                    Ok(n) => Poll::Ready(buf[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        src.register_waker(Direction::Read, cx.waker()).unwrap();
                        Poll::Pending
                    }
                    Err(e) => panic!("{e}"),
                }
            }))
        })
        .expect("woken by readiness");
        assert_eq!(got, b"x");
        // Parked once, woken once by the readiness event (no busy polling).
        assert_eq!(polls, 2);
        drop(writer.join().unwrap());
    });
}
