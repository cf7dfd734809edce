//! `tasklet::sync`: Event, AsyncResult, Semaphore and Mutex.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklet::sync::{AsyncResult, Event, Mutex, Semaphore};

#[test]
fn event_set_clear_wait() {
    tasklet::dispatch(|| {
        let ev = Rc::new(Event::new());
        assert!(!ev.is_set());
        assert!(!ev.wait_timeout(Duration::from_millis(10)));
        let e = ev.clone();
        let h = tasklet::spawn(move || {
            e.wait();
            e.is_set()
        });
        tasklet::yield_now();
        assert!(!h.is_finished());
        ev.set();
        assert!(h.join().unwrap());
        assert!(ev.wait_timeout(Duration::ZERO));
        ev.wait(); // already set: no park
        ev.clear();
        assert!(!ev.is_set());
        assert!(!ev.wait_timeout(Duration::from_millis(5)));
    });
}

#[test]
fn event_set_then_clear_still_releases_waiters() {
    tasklet::dispatch(|| {
        let ev = Rc::new(Event::new());
        let e = ev.clone();
        let h = tasklet::spawn(move || e.wait_timeout(Duration::from_secs(5)));
        tasklet::yield_now();
        ev.set();
        ev.clear();
        assert!(h.join().unwrap(), "waiter missed a set followed by clear");
    });
}

#[test]
fn ten_thousand_waiters_on_one_event() {
    tasklet::Config::new().stack_size(32 * 1024).dispatch(|| {
        let ev = Rc::new(Event::new());
        let woken = Rc::new(Cell::new(0usize));
        let hs: Vec<_> = (0..10_000)
            .map(|_| {
                let ev = ev.clone();
                let woken = woken.clone();
                tasklet::spawn(move || {
                    assert!(ev.wait_timeout(Duration::from_secs(30)));
                    woken.set(woken.get() + 1);
                })
            })
            .collect();
        tasklet::yield_now();
        assert_eq!(woken.get(), 0);
        ev.set();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(woken.get(), 10_000);
    });
}

#[test]
fn event_wakes_plain_threads_and_other_dispatchers() {
    let ev = Arc::new(Event::new());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let ev = ev.clone();
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    ev.wait_timeout(Duration::from_secs(10))
                } else {
                    tasklet::dispatch(move || ev.wait_timeout(Duration::from_secs(10)))
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    ev.set();
    for t in threads {
        assert!(t.join().unwrap());
    }
}

#[test]
fn killed_event_waiter_leaves_cleanly() {
    tasklet::dispatch(|| {
        let ev = Rc::new(Event::new());
        let e = ev.clone();
        let h = tasklet::spawn(move || e.wait());
        tasklet::yield_now();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        let r = tasklet::timeout(Duration::from_millis(5), || ev.wait());
        assert!(r.is_err());
        ev.set();
        ev.wait();
    });
}

#[test]
fn async_result_success_error_and_timeout() {
    tasklet::dispatch(|| {
        let r: Rc<AsyncResult<String, i32>> = Rc::new(AsyncResult::new());
        assert_eq!(r.try_get(), None);
        assert_eq!(r.wait_timeout(Duration::from_millis(5)), None);
        let hs: Vec<_> = (0..10)
            .map(|_| {
                let r = r.clone();
                tasklet::spawn(move || r.wait())
            })
            .collect();
        tasklet::yield_now();
        assert!(!r.is_ready());
        assert!(r.set("hello".into()));
        assert!(!r.set("again".into()));
        assert!(!r.set_error(1));
        for h in hs {
            assert_eq!(h.join().unwrap(), Ok("hello".to_string()));
        }
        assert!(r.is_successful());

        let e: AsyncResult<(), &str> = AsyncResult::new();
        assert!(e.set_error("bad"));
        assert_eq!(e.wait(), Err("bad"));
        assert!(!e.is_successful());
        assert_eq!(e.into_inner(), Some(Err("bad")));
    });
}

#[test]
fn async_result_from_a_thread() {
    let r: Arc<AsyncResult<u64, ()>> = Arc::new(AsyncResult::new());
    let r2 = r.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        r2.set(99);
    });
    let v = tasklet::dispatch(move || r.wait());
    t.join().unwrap();
    assert_eq!(v, Ok(99));
}

#[test]
fn semaphore_bounds_concurrency() {
    tasklet::dispatch(|| {
        let sem = Rc::new(Semaphore::new(3));
        let inside = Rc::new(Cell::new(0));
        let peak = Rc::new(Cell::new(0));
        let hs: Vec<_> = (0..20)
            .map(|_| {
                let (sem, inside, peak) = (sem.clone(), inside.clone(), peak.clone());
                tasklet::spawn(move || {
                    let _p = sem.acquire();
                    inside.set(inside.get() + 1);
                    peak.set(peak.get().max(inside.get()));
                    tasklet::sleep(Duration::from_millis(2));
                    inside.set(inside.get() - 1);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(peak.get(), 3);
        assert_eq!(sem.available_permits(), 3);
    });
}

#[test]
fn semaphore_try_and_timeout() {
    tasklet::dispatch(|| {
        let sem = Semaphore::new(1);
        let p = sem.try_acquire().unwrap();
        assert!(sem.try_acquire().is_none());
        let t = Instant::now();
        assert!(sem.acquire_timeout(Duration::from_millis(15)).is_none());
        assert!(t.elapsed() >= Duration::from_millis(15));
        drop(p);
        assert!(sem.acquire_timeout(Duration::from_millis(15)).is_some());
        sem.add_permits(2);
        assert_eq!(sem.available_permits(), 3);
        sem.try_acquire().unwrap().forget();
        assert_eq!(sem.available_permits(), 2);
    });
}

#[test]
fn killed_waiters_leak_no_permit_and_lose_no_wakeup() {
    tasklet::dispatch(|| {
        let sem = Rc::new(Semaphore::new(1));
        let held = sem.acquire();
        let s = sem.clone();
        let a = tasklet::spawn(move || {
            let _p = s.acquire();
        });
        let s = sem.clone();
        let b = tasklet::spawn(move || {
            let _p = s.acquire();
            "b got it"
        });
        tasklet::yield_now();
        drop(held); // wakes `a`...
        a.kill(); // ...which dies before taking the permit
        assert!(a.join().unwrap_err().is_killed());
        let r = tasklet::timeout(Duration::from_secs(5), || b.join().unwrap());
        assert_eq!(r, Ok("b got it"), "the wake-up was lost");
        assert_eq!(sem.available_permits(), 1);

        // A holder killed while holding gives the permit back.
        let s = sem.clone();
        let c = tasklet::spawn(move || {
            let _p = s.acquire();
            tasklet::sleep(Duration::from_secs(3600));
        });
        tasklet::yield_now();
        assert_eq!(sem.available_permits(), 0);
        c.kill();
        let _ = c.join();
        assert_eq!(sem.available_permits(), 1);

        // A waiter that times out takes nothing with it.
        let _held = sem.acquire();
        assert!(tasklet::timeout(Duration::from_millis(5), || sem.acquire().forget()).is_err());
        drop(_held);
        assert_eq!(sem.available_permits(), 1);
    });
}

#[test]
fn semaphore_across_threads() {
    let sem = Arc::new(Semaphore::new(2));
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (sem, inside) = (sem.clone(), inside.clone());
            std::thread::spawn(move || {
                let work = move || {
                    for _ in 0..50 {
                        let _p = sem.acquire();
                        let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert!(n < 2);
                        std::thread::yield_now();
                        inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                };
                if i % 2 == 0 {
                    work()
                } else {
                    tasklet::dispatch(work)
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(sem.available_permits(), 2);
}

#[test]
fn mutex_held_across_blocking_calls() {
    tasklet::dispatch(|| {
        let m = Rc::new(Mutex::new(Vec::new()));
        let hs: Vec<_> = (0..5)
            .map(|i| {
                let m = m.clone();
                tasklet::spawn(move || {
                    let mut g = m.lock();
                    g.push(i);
                    tasklet::sleep(Duration::from_millis(1));
                    g.push(i);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let v = m.lock();
        assert_eq!(v.len(), 10);
        assert!(v.chunks(2).all(|p| p[0] == p[1]), "interleaved: {:?}", *v);
    });
}

#[test]
fn mutex_is_never_poisoned() {
    tasklet::dispatch(|| {
        let m = Rc::new(Mutex::new(0));
        let m2 = m.clone();
        let h = tasklet::spawn(move || {
            let mut g = m2.lock();
            *g = 1;
            tasklet::sleep(Duration::from_secs(3600));
        });
        tasklet::yield_now();
        assert!(m.is_locked());
        assert!(m.try_lock().is_none());
        assert!(m.lock_timeout(Duration::from_millis(5)).is_none());
        h.kill();
        let _ = h.join();
        assert_eq!(*m.lock(), 1);

        let m3 = m.clone();
        let p = tasklet::spawn(move || {
            let _g = m3.lock();
            panic!("holder panics");
        });
        assert!(p.join().unwrap_err().is_panic());
        *m.lock() += 1;
        assert_eq!(*m.lock(), 2);
    });
}

#[test]
fn mutex_killed_waiter_does_not_block_others() {
    tasklet::dispatch(|| {
        let m = Rc::new(Mutex::new(()));
        let order = Rc::new(RefCell::new(Vec::new()));
        let g = m.lock();
        let spawn = |name: &'static str| {
            let (m, order) = (m.clone(), order.clone());
            tasklet::spawn(move || {
                let _g = m.lock();
                order.borrow_mut().push(name);
            })
        };
        let a = spawn("a");
        let b = spawn("b");
        tasklet::yield_now();
        a.kill();
        drop(g);
        let _ = a.join();
        tasklet::timeout(Duration::from_secs(5), || b.join().unwrap())
            .expect("b never got the lock");
        assert_eq!(*order.borrow(), ["b"]);
        assert!(!m.is_locked());
    });
}

#[test]
fn killed_async_result_waiter_leaves_the_others_waiting() {
    tasklet::dispatch(|| {
        let r: Rc<AsyncResult<u8, ()>> = Rc::new(AsyncResult::new());
        let r1 = r.clone();
        let a = tasklet::spawn(move || r1.wait());
        let r2 = r.clone();
        let b = tasklet::spawn(move || r2.wait());
        tasklet::yield_now();
        a.kill();
        assert!(a.join().unwrap_err().is_killed());
        r.set(3);
        let got = tasklet::timeout(Duration::from_secs(5), || b.join().unwrap());
        assert_eq!(got, Ok(Ok(3)));
    });
}

/// Spawns `n` tasklets that each run `f(i)`, letting each one reach its
/// first park before the next is spawned (so they queue in order).
fn spawn_in_order<T: 'static>(
    n: usize,
    f: impl Fn(usize) -> T + 'static,
) -> Vec<tasklet::JoinHandle<T>> {
    let f = Rc::new(f);
    (0..n)
        .map(|i| {
            let f = f.clone();
            let h = tasklet::spawn(move || f(i));
            tasklet::yield_now();
            h
        })
        .collect()
}

#[test]
fn event_kill_and_timeout_in_the_middle_of_waiters() {
    tasklet::dispatch(|| {
        let ev = Rc::new(Event::new());
        let e = ev.clone();
        let hs = spawn_in_order(5, move |i| {
            if i == 0 {
                // A spurious wake-up: must wait on.
                assert!(tasklet::hub::current_unparker().unpark());
            }
            let d = if i == 3 { 5 } else { 10_000 };
            e.wait_timeout(Duration::from_millis(d))
        });
        tasklet::yield_now();
        assert!(hs.iter().all(|h| !h.is_finished()));
        let mut hs = hs.into_iter().map(Some).collect::<Vec<_>>();
        let killed = hs[1].take().unwrap();
        killed.kill();
        assert!(killed.join().unwrap_err().is_killed());
        let timed_out = hs[3].take().unwrap();
        assert!(!tasklet::timeout(Duration::from_secs(5), || timed_out.join().unwrap()).unwrap());
        // The killed and timed-out waiters are gone; the others still wait.
        assert!(hs.iter().flatten().all(|h| !h.is_finished()));
        ev.set();
        for h in hs.into_iter().flatten() {
            let r = tasklet::timeout(Duration::from_secs(5), || h.join().unwrap());
            assert_eq!(r, Ok(true), "lost wake-up");
        }
    });
}

#[test]
fn event_set_from_another_thread_or_dispatcher_while_many_wait() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    for setter_is_tasklet in [false, true] {
        let ev = Arc::new(Event::new());
        let waiting = Arc::new(AtomicUsize::new(0));
        // Two dispatchers with 300 waiting tasklets each, and two plain threads.
        let waiters: Vec<_> = (0..4)
            .map(|i| {
                let (ev, waiting) = (ev.clone(), waiting.clone());
                std::thread::spawn(move || {
                    if i < 2 {
                        tasklet::dispatch(move || {
                            let hs: Vec<_> = (0..300)
                                .map(|_| {
                                    let (ev, waiting) = (ev.clone(), waiting.clone());
                                    tasklet::spawn(move || {
                                        waiting.fetch_add(1, SeqCst);
                                        ev.wait_timeout(Duration::from_secs(20))
                                    })
                                })
                                .collect();
                            hs.into_iter()
                                .map(|h| h.join().unwrap())
                                .filter(|&ok| ok)
                                .count()
                        })
                    } else {
                        waiting.fetch_add(1, SeqCst);
                        usize::from(ev.wait_timeout(Duration::from_secs(20)))
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while waiting.load(SeqCst) < 602 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        if setter_is_tasklet {
            let ev = ev.clone();
            std::thread::spawn(move || {
                tasklet::dispatch(move || tasklet::spawn(move || ev.set()).join().unwrap())
            })
            .join()
            .unwrap();
        } else {
            ev.set();
        }
        let woken: usize = waiters.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(woken, 602, "setter_is_tasklet={setter_is_tasklet}");
    }
}

#[test]
fn semaphore_kill_and_timeout_in_the_middle_of_waiters_keep_fifo_order() {
    tasklet::dispatch(|| {
        let sem = Rc::new(Semaphore::new(0));
        let order = Rc::new(RefCell::new(Vec::new()));
        let (s, o) = (sem.clone(), order.clone());
        let hs = spawn_in_order(6, move |i| {
            if i == 0 {
                // A spurious wake-up: must keep its place.
                assert!(tasklet::hub::current_unparker().unpark());
            }
            let d = if i == 3 { 5 } else { 10_000 };
            match s.acquire_timeout(Duration::from_millis(d)) {
                Some(p) => {
                    o.borrow_mut().push(i);
                    p.forget();
                    true
                }
                None => false,
            }
        });
        tasklet::yield_now();
        let mut hs = hs.into_iter().map(Some).collect::<Vec<_>>();
        let killed = hs[1].take().unwrap();
        killed.kill();
        assert!(killed.join().unwrap_err().is_killed());
        let timed_out = hs[3].take().unwrap();
        assert_eq!(
            tasklet::timeout(Duration::from_secs(5), || timed_out.join().unwrap()),
            Ok(false)
        );
        assert_eq!(sem.available_permits(), 0);
        // try_acquire never overtakes a waiter.
        sem.add_permits(1);
        assert!(sem.try_acquire().is_none());
        sem.add_permits(3);
        for h in hs.into_iter().flatten() {
            let r = tasklet::timeout(Duration::from_secs(5), || h.join().unwrap());
            assert_eq!(r, Ok(true), "lost wake-up");
        }
        assert_eq!(*order.borrow(), [0, 2, 4, 5]);
        assert_eq!(sem.available_permits(), 0);
    });
}

#[test]
fn permit_granted_to_a_killed_waiter_goes_to_the_next() {
    tasklet::dispatch(|| {
        let sem = Rc::new(Semaphore::new(1));
        let held = sem.acquire();
        let got = Rc::new(RefCell::new(Vec::new()));
        let (s, g) = (sem.clone(), got.clone());
        let mut hs = spawn_in_order(4, move |i| {
            let _p = s.acquire();
            g.borrow_mut().push(i);
            tasklet::yield_now();
        })
        .into_iter()
        .map(Some)
        .collect::<Vec<_>>();
        drop(held); // hands the permit to waiter 0, which has not run yet
        assert_eq!(sem.available_permits(), 0);
        let a = hs[0].take().unwrap();
        a.kill(); // waiter 0 dies holding a granted permit: passed to 1
        assert!(a.join().unwrap_err().is_killed());
        assert_eq!(sem.available_permits(), 0);
        // Waiter 2 is granted by 1's release and killed too (before it
        // runs: this tasklet was queued ahead of it): passed to 3.
        let b = hs[1].take().unwrap();
        for _ in 0..100 {
            if b.is_finished() {
                break;
            }
            tasklet::yield_now();
        }
        assert!(b.is_finished());
        b.join().unwrap();
        assert_eq!(*got.borrow(), [1]);
        assert_eq!(sem.available_permits(), 0);
        let c = hs[2].take().unwrap();
        c.kill();
        assert!(c.join().unwrap_err().is_killed());
        let d = hs[3].take().unwrap();
        tasklet::timeout(Duration::from_secs(5), || d.join().unwrap()).expect("permit lost");
        assert_eq!(*got.borrow(), [1, 3]);
        assert_eq!(sem.available_permits(), 1);
    });
}

#[test]
fn mutex_hands_over_in_fifo_order_without_starvation() {
    tasklet::dispatch(|| {
        // Each tasklet relocks at once after unlocking: the other waiter
        // must still get its turn every time (strict alternation).
        let m = Rc::new(Mutex::new(Vec::new()));
        let hs: Vec<_> = (0..3)
            .map(|id| {
                let m = m.clone();
                tasklet::spawn(move || {
                    for _ in 0..100 {
                        let mut g = m.lock();
                        g.push(id);
                        tasklet::yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            tasklet::timeout(Duration::from_secs(5), || h.join().unwrap()).unwrap();
        }
        let v = m.lock();
        assert_eq!(v.len(), 300);
        let expected: Vec<i32> = (0..300).map(|i| i % 3).collect();
        assert_eq!(*v, expected, "not served in FIFO order");
    });
}

#[test]
fn mutex_thread_hammering_the_lock_does_not_starve_a_tasklet() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let m = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let (m2, stop2) = (m.clone(), stop.clone());
    let hammer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stop2.load(SeqCst) && Instant::now() < deadline {
            *m2.lock() += 1;
        }
    });
    let got = tasklet::dispatch(move || {
        tasklet::timeout(Duration::from_secs(10), || {
            for _ in 0..1000 {
                let g = m.lock();
                tasklet::yield_now(); // hold it a little
                drop(g);
            }
        })
    });
    stop.store(true, SeqCst);
    hammer.join().unwrap();
    assert!(got.is_ok(), "the tasklet starved");
}

#[test]
fn mutex_kill_and_timeout_in_the_middle_of_waiters() {
    tasklet::dispatch(|| {
        let m = Rc::new(Mutex::new(Vec::new()));
        let g = m.lock();
        let m2 = m.clone();
        let mut hs = spawn_in_order(5, move |i| {
            let d = if i == 2 { 5 } else { 10_000 };
            match m2.lock_timeout(Duration::from_millis(d)) {
                Some(mut g) => {
                    g.push(i);
                    true
                }
                None => false,
            }
        })
        .into_iter()
        .map(Some)
        .collect::<Vec<_>>();
        let killed = hs[1].take().unwrap();
        killed.kill();
        assert!(killed.join().unwrap_err().is_killed());
        let timed_out = hs[2].take().unwrap();
        assert_eq!(
            tasklet::timeout(Duration::from_secs(5), || timed_out.join().unwrap()),
            Ok(false)
        );
        drop(g);
        for h in hs.into_iter().flatten() {
            assert_eq!(
                tasklet::timeout(Duration::from_secs(5), || h.join().unwrap()),
                Ok(true)
            );
        }
        assert_eq!(*m.lock(), [0, 3, 4]);
        assert!(!m.is_locked());
    });
}

#[test]
fn async_result_kill_and_timeout_in_the_middle_of_waiters() {
    tasklet::dispatch(|| {
        let r: Rc<AsyncResult<u32, ()>> = Rc::new(AsyncResult::new());
        let r2 = r.clone();
        let mut hs = spawn_in_order(5, move |i| {
            if i == 0 {
                assert!(tasklet::hub::current_unparker().unpark());
            }
            let d = if i == 3 { 5 } else { 10_000 };
            r2.wait_timeout(Duration::from_millis(d))
        })
        .into_iter()
        .map(Some)
        .collect::<Vec<_>>();
        tasklet::yield_now();
        let killed = hs[1].take().unwrap();
        killed.kill();
        assert!(killed.join().unwrap_err().is_killed());
        let timed_out = hs[3].take().unwrap();
        assert_eq!(
            tasklet::timeout(Duration::from_secs(5), || timed_out.join().unwrap()),
            Ok(None)
        );
        assert!(hs.iter().flatten().all(|h| !h.is_finished()));
        assert!(r.set(7));
        for h in hs.into_iter().flatten() {
            assert_eq!(
                tasklet::timeout(Duration::from_secs(5), || h.join().unwrap()),
                Ok(Some(Ok(7)))
            );
        }
    });
}

#[test]
fn async_result_set_by_a_plain_thread_for_tasklets_and_threads() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let r: Arc<AsyncResult<String, ()>> = Arc::new(AsyncResult::new());
    let waiting = Arc::new(AtomicUsize::new(0));
    // A plain thread that waits, and one that gives up.
    let (r1, w1) = (r.clone(), waiting.clone());
    let thread_waiter = std::thread::spawn(move || {
        w1.fetch_add(1, SeqCst);
        r1.wait()
    });
    let r3 = r.clone();
    let gives_up = std::thread::spawn(move || r3.wait_timeout(Duration::from_millis(5)));
    assert_eq!(gives_up.join().unwrap(), None);
    let (r2, w2) = (r.clone(), waiting.clone());
    let setter = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while w2.load(SeqCst) < 101 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(r2.set("done".to_string()));
    });
    let got = tasklet::dispatch(move || {
        let hs: Vec<_> = (0..100)
            .map(|_| {
                let (r, waiting) = (r.clone(), waiting.clone());
                tasklet::spawn(move || {
                    waiting.fetch_add(1, SeqCst);
                    r.wait_timeout(Duration::from_secs(20))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|v| *v == Some(Ok("done".to_string())))
            .count()
    });
    setter.join().unwrap();
    assert_eq!(got, 100);
    assert_eq!(thread_waiter.join().unwrap(), Ok("done".to_string()));
}

#[test]
fn semaphore_kills_and_timeouts_racing_cross_thread_releases_lose_no_permit() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    // Two dispatchers and a plain thread share a semaphore; tasklets wait
    // with short timeouts or get killed while permits are handed over from
    // other threads. No permit may be lost or duplicated.
    let sem = Arc::new(Semaphore::new(2));
    let inside = Arc::new(AtomicUsize::new(0));
    let got = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (sem, inside, got) = (sem.clone(), inside.clone(), got.clone());
            std::thread::spawn(move || {
                let hold = move |sem: &Semaphore| {
                    let n = inside.fetch_add(1, SeqCst);
                    assert!(n < 2, "more holders than permits");
                    got.fetch_add(1, SeqCst);
                    std::thread::yield_now();
                    inside.fetch_sub(1, SeqCst);
                    let _ = sem;
                };
                if t == 2 {
                    for _ in 0..300 {
                        let p = sem.acquire();
                        hold(&sem);
                        drop(p);
                    }
                    return;
                }
                tasklet::dispatch(move || {
                    for round in 0..30u64 {
                        let hs: Vec<_> = (0..10u64)
                            .map(|i| {
                                let (sem, hold) = (sem.clone(), hold.clone());
                                tasklet::spawn(move || {
                                    let d = Duration::from_micros(50 * ((round + i) % 7));
                                    if let Some(p) = sem.acquire_timeout(d) {
                                        hold(&sem);
                                        tasklet::yield_now();
                                        drop(p);
                                    }
                                })
                            })
                            .collect();
                        tasklet::yield_now();
                        for (i, h) in hs.into_iter().enumerate() {
                            if i % 3 == 0 {
                                h.kill();
                            }
                            let r = tasklet::timeout(Duration::from_secs(10), || h.join());
                            assert!(r.is_ok(), "a waiter hung");
                        }
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(sem.available_permits(), 2, "permits lost or duplicated");
    assert!(got.load(SeqCst) >= 300);
}

/// Permits saturate at `usize::MAX` instead of wrapping around to none
/// (which left the next `acquire` waiting forever).
#[test]
fn semaphore_permits_saturate_instead_of_overflowing() {
    tasklet::dispatch(|| {
        let s = Semaphore::new(1);
        s.add_permits(usize::MAX);
        assert_eq!(s.available_permits(), usize::MAX);
        drop(s.acquire());
        assert_eq!(s.available_permits(), usize::MAX);

        let s = Semaphore::new(usize::MAX);
        let p = s.acquire();
        s.add_permits(2);
        drop(p);
        assert_eq!(s.available_permits(), usize::MAX);
        assert!(s.try_acquire().is_some());
    });
}
