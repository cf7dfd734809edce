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
