//! `tasklet::Pool` and `tasklet::Group`.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::{Group, Pool};

fn tracker() -> (Rc<Cell<usize>>, Rc<Cell<usize>>) {
    (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)))
}

#[test]
fn spawn_parks_caller_while_full() {
    tasklet::dispatch(|| {
        let pool = Pool::new(2);
        let (inside, peak) = tracker();
        let mut handles = Vec::new();
        for i in 0..10 {
            let (inside, peak) = (inside.clone(), peak.clone());
            handles.push(pool.spawn(move || {
                inside.set(inside.get() + 1);
                peak.set(peak.get().max(inside.get()));
                tasklet::sleep(Duration::from_millis(2));
                inside.set(inside.get() - 1);
                i
            }));
            assert!(pool.len() <= 2);
        }
        pool.join();
        assert!(pool.is_empty());
        assert_eq!(peak.get(), 2);
        assert_eq!(pool.free_count(), 2);
        let v: Vec<i32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(v, (0..10).collect::<Vec<_>>());
    });
}

#[test]
fn join_timeout_and_kill() {
    tasklet::dispatch(|| {
        let pool = Pool::new(3);
        let hs: Vec<_> = (0..3)
            .map(|_| pool.spawn(|| tasklet::sleep(Duration::from_secs(3600))))
            .collect();
        assert_eq!(pool.free_count(), 0);
        assert!(!pool.join_timeout(Duration::from_millis(10)));
        let t = Instant::now();
        pool.kill();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(pool.is_empty());
        assert_eq!(pool.free_count(), 3);
        for h in hs {
            assert!(h.join().unwrap_err().is_killed());
        }
        // Usable afterwards.
        assert_eq!(pool.spawn(|| 5).join().unwrap(), 5);
    });
}

#[test]
fn killed_or_panicking_member_frees_its_slot() {
    tasklet::dispatch(|| {
        let pool = Pool::new(1);
        let a = pool.spawn(|| tasklet::sleep(Duration::from_secs(3600)));
        let p2 = pool.clone();
        let waiting = tasklet::spawn(move || p2.spawn(|| "second").join().unwrap());
        tasklet::yield_now();
        assert!(!waiting.is_finished());
        a.kill();
        let r = tasklet::timeout(Duration::from_secs(5), || waiting.join().unwrap());
        assert_eq!(r, Ok("second"));
        let p = pool.spawn(|| panic!("member panics"));
        assert!(p.join().unwrap_err().is_panic());
        assert_eq!(pool.free_count(), 1);
    });
}

#[test]
fn map_keeps_input_order() {
    tasklet::dispatch(|| {
        let pool = Pool::new(4);
        let (inside, peak) = tracker();
        let (i2, p2) = (inside.clone(), peak.clone());
        let out = pool.map(0..20u64, move |x| {
            i2.set(i2.get() + 1);
            p2.set(p2.get().max(i2.get()));
            tasklet::sleep(Duration::from_millis((20 - x) % 7));
            i2.set(i2.get() - 1);
            x * 10
        });
        assert_eq!(out, (0..20).map(|x| x * 10).collect::<Vec<_>>());
        assert_eq!(peak.get(), 4);
    });
}

#[test]
fn map_reraises_a_panic() {
    tasklet::dispatch(|| {
        let pool = Pool::new(2);
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.map(0..5, |x| {
                if x == 3 {
                    panic!("item 3 failed");
                }
                x
            })
        }));
        let payload = r.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"item 3 failed"));
        pool.join();
    });
}

#[test]
fn imap_unordered_yields_in_completion_order() {
    tasklet::dispatch(|| {
        let pool = Pool::new(8);
        let out: Vec<u64> = pool
            .imap_unordered([40u64, 10, 30, 20], |ms| {
                tasklet::sleep(Duration::from_millis(ms));
                ms
            })
            .collect();
        assert_eq!(out, [10, 20, 30, 40]);
    });
}

#[test]
fn imap_unordered_is_bounded_and_lazy() {
    tasklet::dispatch(|| {
        let pool = Pool::new(3);
        let (inside, peak) = tracker();
        let pulled = Rc::new(Cell::new(0));
        let pl = pulled.clone();
        let items = (0..50u32).inspect(move |_| pl.set(pl.get() + 1));
        let (i2, p2) = (inside.clone(), peak.clone());
        let mut it = pool.imap_unordered(items, move |x| {
            i2.set(i2.get() + 1);
            p2.set(p2.get().max(i2.get()));
            tasklet::sleep(Duration::from_millis(1));
            i2.set(i2.get() - 1);
            x
        });
        let first = it.next().unwrap();
        assert!(first < 3);
        assert!(
            pulled.get() <= 4,
            "pulled {} items for one result",
            pulled.get()
        );
        let mut rest: Vec<u32> = it.collect();
        rest.push(first);
        rest.sort();
        assert_eq!(rest, (0..50).collect::<Vec<_>>());
        assert_eq!(peak.get(), 3);
    });
}

#[test]
fn imap_unordered_reraises_and_drop_kills_workers() {
    tasklet::dispatch(|| {
        let pool = Pool::new(4);
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.imap_unordered(0..4, |x| {
                if x == 0 {
                    panic!("worker 0");
                }
                tasklet::sleep(Duration::from_secs(3600));
                x
            })
            .count()
        }));
        assert!(r.is_err());
        // The iterator was dropped during unwinding: the sleepers are killed.
        assert!(pool.join_timeout(Duration::from_secs(5)));
    });
}

#[test]
fn group_is_unbounded() {
    tasklet::dispatch(|| {
        let group = Group::new();
        assert_eq!(group.size(), None);
        let (inside, peak) = tracker();
        for _ in 0..200 {
            let (inside, peak) = (inside.clone(), peak.clone());
            group.spawn(move || {
                inside.set(inside.get() + 1);
                peak.set(peak.get().max(inside.get()));
                tasklet::sleep(Duration::from_millis(5));
                inside.set(inside.get() - 1);
            });
        }
        assert_eq!(group.len(), 200);
        group.join();
        assert_eq!(peak.get(), 200);
        for _ in 0..10 {
            group.spawn(|| tasklet::sleep(Duration::from_secs(3600)));
        }
        group.kill();
        assert!(group.is_empty());
    });
}

#[test]
fn killed_while_waiting_for_a_slot_leaks_nothing() {
    tasklet::dispatch(|| {
        let pool = Pool::new(1);
        let busy = pool.spawn(|| tasklet::sleep(Duration::from_millis(20)));
        let p = pool.clone();
        let waiter = tasklet::spawn(move || {
            p.spawn(|| ()).join().unwrap();
        });
        tasklet::yield_now();
        waiter.kill();
        assert!(waiter.join().unwrap_err().is_killed());
        busy.join().unwrap();
        pool.join();
        assert_eq!(pool.free_count(), 1);
        assert_eq!(pool.spawn(|| 8).join().unwrap(), 8);
    });
}
