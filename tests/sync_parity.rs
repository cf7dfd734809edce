//! gevent parity: channel close, joining with a bound, kill-and-wait,
//! killall, wait_any/iwait, tasklet_local!, queue variants, RwLock and the
//! bounded semaphore — each also interrupted by a kill or timeout while it
//! waits.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tasklet::sync::{
    channel, unbounded, BoundedSemaphore, JoinableQueue, LifoQueue, OverReleaseError,
    PriorityQueue, RecvError, RwLock, SendTimeoutError, TaskDoneError,
};
use tasklet::JoinTimeoutError;

const LONG: Duration = Duration::from_secs(30);

// ------------------------------------------------------------ channel close

#[test]
fn sender_close_drains_then_fails_and_wakes_parked_receivers() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<u32>(8);
        let rx = Rc::new(rx);
        let r2 = rx.clone();
        let parked = tasklet::spawn(move || r2.recv());
        tasklet::yield_now();
        // Parked receiver sees the close.
        tx.close();
        assert_eq!(parked.join().unwrap(), Err(RecvError));
        assert!(tx.is_closed() && rx.is_closed());
        assert_eq!(tx.send(1).unwrap_err().into_inner(), 1);

        let (tx, rx) = channel::<u32>(8);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let tx2 = tx.clone();
        tx.close();
        tx.close(); // idempotent
        assert!(tx2.try_send(9).is_err());
        let got: Vec<u32> = rx.iter().collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    });
}

#[test]
fn receiver_close_fails_blocked_senders_with_their_value() {
    tasklet::dispatch(|| {
        let (tx, rx) = channel::<String>(1);
        tx.send("queued".into()).unwrap();
        let tx = Rc::new(tx);
        let t2 = tx.clone();
        let blocked = tasklet::spawn(move || t2.send_timeout("blocked".into(), LONG));
        tasklet::yield_now();
        rx.close();
        match blocked.join().unwrap() {
            Err(SendTimeoutError::Disconnected(v)) => assert_eq!(v, "blocked"),
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.recv().unwrap(), "queued");
        assert_eq!(rx.recv(), Err(RecvError));
    });
}

#[test]
fn close_from_another_thread_wakes_a_parked_receiver() {
    tasklet::dispatch(|| {
        let (tx, rx) = unbounded::<u32>();
        tx.send(1).unwrap();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(10));
            tx.close();
            tx
        });
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(
            rx.recv_timeout(LONG),
            Err(tasklet::sync::RecvTimeoutError::Disconnected)
        );
        drop(t.join().unwrap());
    });
}

// ---------------------------------------------------------------- joining

#[test]
fn join_timeout_keeps_the_handle() {
    tasklet::dispatch(|| {
        let h = tasklet::spawn(|| {
            tasklet::sleep(LONG);
            1
        });
        let h = match h.join_timeout(Duration::from_millis(5)) {
            Err(JoinTimeoutError::Timeout(h)) => h,
            other => panic!("{other:?}"),
        };
        h.kill();
        match h.join_timeout(LONG) {
            Err(JoinTimeoutError::Failed(e)) => assert!(e.is_killed()),
            other => panic!("{other:?}"),
        }
        let mut h = tasklet::spawn(|| 5);
        assert!(h.wait_timeout(LONG));
        assert!(h.is_finished());
        assert_eq!(h.join().unwrap(), 5);
    });
}

#[test]
fn kill_and_wait_waits_for_blocking_destructors_with_a_bound() {
    struct SlowDrop(Duration);
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            tasklet::sleep(self.0); // a destructor that blocks while unwinding
        }
    }
    tasklet::dispatch(|| {
        let mut h = tasklet::spawn(|| {
            let _g = SlowDrop(Duration::from_millis(10));
            tasklet::sleep(LONG);
        });
        tasklet::yield_now();
        assert!(h.kill_and_wait(LONG));
        assert!(h.join().unwrap_err().is_killed());

        let mut h = tasklet::spawn(|| {
            let _g = SlowDrop(LONG);
            tasklet::sleep(LONG);
        });
        tasklet::yield_now();
        assert!(!h.kill_and_wait(Duration::from_millis(10)), "bounded");
        assert!(!h.is_finished());
        // `dispatch` exit kills it for good (its destructor's sleep gives up
        // after the exit grace period).
    });
}

#[test]
fn killall_kills_and_waits() {
    tasklet::dispatch(|| {
        let done = Rc::new(Cell::new(0));
        let mut hs: Vec<_> = (0..10)
            .map(|_| {
                let done = done.clone();
                tasklet::spawn(move || {
                    struct Count(Rc<Cell<u32>>);
                    impl Drop for Count {
                        fn drop(&mut self) {
                            self.0.set(self.0.get() + 1);
                        }
                    }
                    let _c = Count(done);
                    tasklet::sleep(LONG)
                })
            })
            .collect();
        tasklet::yield_now();
        assert!(tasklet::killall(&mut hs, Some(LONG)));
        assert_eq!(done.get(), 10);
        assert!(hs.into_iter().all(|h| h.join().unwrap_err().is_killed()));
    });
}

#[test]
fn wait_any_and_iwait_in_completion_order() {
    tasklet::dispatch(|| {
        let mut hs = vec![
            tasklet::spawn(|| {
                tasklet::sleep(LONG);
                0
            }),
            tasklet::spawn(|| 1),
        ];
        assert_eq!(tasklet::wait_any(&mut hs, Some(LONG)), Some(1));
        assert_eq!(
            tasklet::wait_any(&mut hs[..1], Some(Duration::from_millis(5))),
            None
        );
        hs[0].kill();

        // Finishing order decided by turns of the dispatcher, not by timers.
        let (tx, rx) = unbounded::<()>();
        let rx = Rc::new(rx);
        let hs: Vec<_> = [4u32, 2, 5, 1, 3]
            .into_iter()
            .map(|n| {
                let rx = rx.clone();
                tasklet::spawn(move || {
                    for _ in 0..n * 3 {
                        tasklet::yield_now();
                    }
                    let _ = &rx;
                    n
                })
            })
            .collect();
        drop(tx);
        let order: Vec<u32> = tasklet::iwait(hs).map(|h| h.join().unwrap()).collect();
        assert_eq!(order, [1, 2, 3, 4, 5]);

        // With a deadline: the unfinished ones come back.
        let hs = vec![
            tasklet::spawn(|| 1),
            tasklet::spawn(|| {
                tasklet::sleep(LONG);
                2
            }),
        ];
        let mut it = tasklet::iwait(hs).timeout(Duration::from_millis(10));
        assert_eq!(it.next().unwrap().join().unwrap(), 1);
        assert!(it.next().is_none());
        let mut rest = it.into_pending();
        assert_eq!(rest.len(), 1);
        assert!(tasklet::killall(&mut rest, Some(LONG)));
    });
}

#[test]
fn waiter_killed_while_joining_with_a_timeout() {
    tasklet::dispatch(|| {
        let target = tasklet::spawn(|| tasklet::sleep(LONG));
        let waiter = tasklet::spawn(move || {
            let mut t = target;
            t.wait_timeout(LONG);
            t
        });
        tasklet::yield_now();
        waiter.kill();
        assert!(waiter.join().unwrap_err().is_killed());
    });
}

// ------------------------------------------------------------ tasklet_local

struct Tracked(Rc<RefCell<Vec<String>>>, String);
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.borrow_mut().push(format!("drop {}", self.1));
    }
}

tasklet::tasklet_local! {
    static COUNTER: Cell<u32> = Cell::new(0);
    static TRACKED: RefCell<Option<Tracked>> = RefCell::new(None);
}

tasklet::tasklet_local!(pub(crate) static INIT_COUNT_PROBE: u32 = {
    INITS.fetch_add(1, Ordering::SeqCst);
    7
});

static INITS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn tasklet_local_values_are_per_tasklet_and_lazy() {
    tasklet::dispatch(|| {
        let before = INITS.load(Ordering::SeqCst);
        let hs: Vec<_> = (1..=5)
            .map(|i| {
                tasklet::spawn(move || {
                    for _ in 0..i {
                        COUNTER.set(COUNTER.get() + 1);
                        tasklet::yield_now();
                    }
                    COUNTER.get()
                })
            })
            .collect();
        let got: Vec<u32> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(COUNTER.get(), 0);
        // Lazy: the initialiser runs once per tasklet that touches the key.
        let h = tasklet::spawn(|| INIT_COUNT_PROBE.with(|v| *v) + INIT_COUNT_PROBE.with(|v| *v));
        assert_eq!(h.join().unwrap(), 14);
        tasklet::spawn(|| ()).join().unwrap();
        assert_eq!(INITS.load(Ordering::SeqCst) - before, 1);
    });
    assert!(
        COUNTER.try_with(|_| ()).is_err(),
        "no tasklet outside dispatch"
    );
}

#[test]
fn tasklet_local_values_are_dropped_when_the_tasklet_ends_or_is_killed() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    tasklet::dispatch(move || {
        let l1 = l.clone();
        let ends = tasklet::spawn(move || {
            TRACKED.set(Some(Tracked(l1.clone(), "returned".into())));
            l1.borrow_mut().push("body done".into());
        });
        ends.join().unwrap();
        assert_eq!(*l.borrow(), ["body done", "drop returned"]);

        let l2 = l.clone();
        let killed = tasklet::spawn(move || {
            TRACKED.set(Some(Tracked(l2, "killed".into())));
            tasklet::sleep(LONG);
        });
        tasklet::yield_now();
        killed.kill();
        assert!(killed.join().unwrap_err().is_killed());
        assert_eq!(l.borrow().last().unwrap(), "drop killed");

        let l3 = l.clone();
        let panicked = tasklet::spawn(move || {
            TRACKED.set(Some(Tracked(l3, "panicked".into())));
            panic!("boom");
        });
        assert!(panicked.join().unwrap_err().is_panic());
        assert_eq!(l.borrow().last().unwrap(), "drop panicked");

        // A timeout unwinding part of the tasklet does not drop its locals.
        COUNTER.set(3);
        let _ = tasklet::timeout(Duration::from_millis(1), || tasklet::sleep(LONG));
        assert_eq!(COUNTER.get(), 3);
    });
}

#[test]
fn tasklet_local_destructor_cannot_resurrect_locals() {
    struct Probe(Rc<Cell<bool>>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.set(COUNTER.try_with(|_| ()).is_err());
        }
    }
    tasklet::tasklet_local!(static PROBE: RefCell<Option<Probe>> = RefCell::new(None));
    tasklet::dispatch(|| {
        let denied = Rc::new(Cell::new(false));
        let d = denied.clone();
        tasklet::spawn(move || {
            COUNTER.set(1);
            PROBE.set(Some(Probe(d)));
        })
        .join()
        .unwrap();
        assert!(denied.get());
    });
}

// ------------------------------------------------------------------ queues

#[test]
fn priority_and_lifo_orders() {
    /// Ordered by priority only: jobs of equal priority compare equal.
    struct Job(u8, &'static str);
    impl PartialEq for Job {
        fn eq(&self, o: &Self) -> bool {
            self.0 == o.0
        }
    }
    impl Eq for Job {}
    impl PartialOrd for Job {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Job {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            self.0.cmp(&o.0)
        }
    }
    let q = PriorityQueue::new();
    for (p, name) in [(2, "b"), (9, "z"), (2, "c"), (5, "m"), (2, "d")] {
        q.put(Job(p, name));
    }
    let order: Vec<_> = (0..5).map(|_| q.get().1).collect();
    assert_eq!(
        order,
        ["z", "m", "b", "c", "d"],
        "equal priorities stay FIFO"
    );
    let q = PriorityQueue::new();
    for v in [5, 1, 4] {
        q.put(Reverse(v));
    }
    assert_eq!(q.get().0, 1);
    let l = LifoQueue::new();
    for v in 0..5 {
        l.put(v);
    }
    assert_eq!((0..5).map(|_| l.get()).collect::<Vec<_>>(), [4, 3, 2, 1, 0]);
    assert!(l.try_get().is_none());
}

#[test]
fn bounded_queues_park_and_time_out() {
    tasklet::dispatch(|| {
        let q = Rc::new(LifoQueue::bounded(2));
        q.put(1);
        q.put(2);
        assert_eq!(q.try_put(3).unwrap_err().into_inner(), 3);
        assert_eq!(q.put_timeout(3, Duration::from_millis(5)).unwrap_err().0, 3);
        let q2 = q.clone();
        let putter = tasklet::spawn(move || q2.put(3));
        tasklet::yield_now();
        assert_eq!(q.get(), 2);
        putter.join().unwrap();
        assert_eq!(q.get(), 3);
        assert_eq!(q.get(), 1);
        assert_eq!(q.get_timeout(Duration::from_millis(5)), None);
    });
}

#[test]
fn queue_waiters_killed_or_timed_out_lose_nothing() {
    tasklet::dispatch(|| {
        let q = Rc::new(PriorityQueue::<u32>::bounded(1));
        // Getters killed while parked.
        let getters: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tasklet::spawn(move || q.get())
            })
            .collect();
        tasklet::yield_now();
        getters[0].kill();
        getters[1].kill();
        q.put(7);
        let mut results: Vec<_> = getters.into_iter().map(|h| h.join().ok()).collect();
        results.sort();
        assert_eq!(results, [None, None, Some(7)]);
        // A putter killed while parked on a full queue puts nothing.
        q.put(1);
        let q2 = q.clone();
        let putter = tasklet::spawn(move || q2.put(2));
        tasklet::yield_now();
        putter.kill();
        assert!(putter.join().unwrap_err().is_killed());
        assert_eq!(q.get(), 1);
        assert_eq!(q.try_get(), None);
        // Timeout scope around a get.
        assert!(tasklet::timeout(Duration::from_millis(5), || q.get()).is_err());
        q.put(3);
        assert_eq!(q.get(), 3);
    });
}

#[test]
fn joinable_queue_join_waits_for_task_done() {
    tasklet::dispatch(|| {
        let q = Rc::new(JoinableQueue::new());
        assert!(q.join_timeout(Duration::ZERO));
        for i in 0..20u32 {
            q.put(i);
        }
        let sum = Rc::new(Cell::new(0));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (q, sum) = (q.clone(), sum.clone());
                tasklet::spawn(move || loop {
                    let v = q.get();
                    tasklet::yield_now();
                    sum.set(sum.get() + v);
                    q.task_done().unwrap();
                })
            })
            .collect();
        assert!(!q.join_timeout(Duration::ZERO) || sum.get() == 190);
        q.join();
        assert_eq!(sum.get(), 190);
        assert_eq!(q.unfinished_tasks(), 0);
        assert_eq!(q.task_done(), Err(TaskDoneError));
        let mut workers = workers;
        assert!(tasklet::killall(&mut workers, Some(LONG)));
        // A joiner killed while waiting.
        q.put(1);
        let q2 = q.clone();
        let joiner = tasklet::spawn(move || q2.join());
        tasklet::yield_now();
        joiner.kill();
        assert!(joiner.join().unwrap_err().is_killed());
        assert_eq!(q.get(), 1);
        q.task_done().unwrap();
        q.join();
    });
}

// ------------------------------------------------------------------ RwLock

#[test]
fn rwlock_readers_share_writers_exclude() {
    tasklet::dispatch(|| {
        let lock = Rc::new(RwLock::new(0u32));
        let r1 = lock.read();
        let r2 = lock.try_read().expect("readers share");
        assert!(lock.try_write().is_none());
        drop((r1, r2));
        let mut w = lock.write();
        *w += 1;
        assert!(lock.try_read().is_none());
        assert!(lock.read_timeout(Duration::from_millis(5)).is_none());
        drop(w);
        assert_eq!(*lock.read(), 1);
    });
}

/// A stream of overlapping readers does not starve a writer, and readers
/// queued behind a writer get in right after it: requests are served in
/// arrival order.
#[test]
fn rwlock_is_fair_in_both_directions() {
    tasklet::dispatch(|| {
        let lock = Rc::new(RwLock::new(Vec::<String>::new()));
        let log = Rc::new(RefCell::new(Vec::new()));
        let first = lock.read(); // held while the others queue up
        let mut hs = Vec::new();
        for (i, kind) in ["r", "r", "w", "r", "r", "w", "r"].into_iter().enumerate() {
            let (lock, log) = (lock.clone(), log.clone());
            hs.push(tasklet::spawn(move || {
                let name = format!("{kind}{i}");
                if kind == "w" {
                    let mut g = lock.write();
                    log.borrow_mut().push(format!("+{name}"));
                    tasklet::yield_now();
                    g.push(name.clone());
                    log.borrow_mut().push(format!("-{name}"));
                } else {
                    let _g = lock.read();
                    log.borrow_mut().push(format!("+{name}"));
                    tasklet::yield_now();
                    tasklet::yield_now();
                    log.borrow_mut().push(format!("-{name}"));
                }
            }));
            tasklet::yield_now(); // arrival order = spawn order
        }
        drop(first);
        for h in hs {
            h.join().unwrap();
        }
        let log = log.borrow();
        let pos = |s: &str| log.iter().position(|x| x == s).unwrap();
        // Readers before w2 overlap; w2 runs alone after them; r3 and r4
        // wait for w2 (not admitted past it) and run together; w5 after them.
        assert!(pos("+r1") < pos("-r0"), "{log:?}");
        assert!(
            pos("-r0") < pos("+w2") && pos("-r1") < pos("+w2"),
            "{log:?}"
        );
        assert!(
            pos("-w2") < pos("+r3") && pos("-w2") < pos("+r4"),
            "{log:?}"
        );
        assert!(
            pos("+r4") < pos("-r3"),
            "readers behind a writer go in together: {log:?}"
        );
        assert!(
            pos("-r3") < pos("+w5") && pos("-r4") < pos("+w5"),
            "{log:?}"
        );
        assert!(pos("-w5") < pos("+r6"), "{log:?}");
        assert_eq!(*lock.read(), ["w2", "w5"]);
    });
}

#[test]
fn rwlock_no_writer_starvation_under_a_reader_stream() {
    tasklet::dispatch(|| {
        let lock = Rc::new(RwLock::new(()));
        let stop = Rc::new(Cell::new(false));
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (lock, stop) = (lock.clone(), stop.clone());
                tasklet::spawn(move || {
                    while !stop.get() {
                        let _g = lock.read();
                        tasklet::yield_now();
                    }
                })
            })
            .collect();
        tasklet::yield_now();
        for _ in 0..50 {
            let g = lock.write_timeout(LONG);
            assert!(g.is_some(), "writer starved");
        }
        stop.set(true);
        for r in readers {
            r.join().unwrap();
        }
    });
}

#[test]
fn rwlock_waiters_killed_or_timed_out_leave_it_usable() {
    tasklet::dispatch(|| {
        let lock = Rc::new(RwLock::new(0));
        let w = lock.write();
        let (l1, l2) = (lock.clone(), lock.clone());
        let reader = tasklet::spawn(move || *l1.read());
        let writer = tasklet::spawn(move || *l2.write() += 1);
        tasklet::yield_now();
        reader.kill();
        writer.kill();
        assert!(reader.join().unwrap_err().is_killed());
        assert!(writer.join().unwrap_err().is_killed());
        assert!(tasklet::timeout(Duration::from_millis(5), || lock.read().to_owned()).is_err());
        drop(w);
        *lock.write() += 10;
        assert_eq!(*lock.read(), 10);
        let r = lock.read();
        let r2 = lock.try_read().unwrap();
        drop((r, r2));
        assert!(lock.try_write().is_some());
    });
}

#[test]
fn rwlock_across_threads() {
    let lock = Arc::new(RwLock::new(0u64));
    let ts: Vec<_> = (0..4)
        .map(|t| {
            let lock = lock.clone();
            thread::spawn(move || {
                tasklet::dispatch(move || {
                    for i in 0..2000 {
                        if (i + t) % 3 == 0 {
                            *lock.write() += 1;
                        } else {
                            let v = *lock.read();
                            assert!(v <= 4 * 2000);
                        }
                        if i % 64 == 0 {
                            tasklet::yield_now();
                        }
                    }
                })
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    let expected: u64 = (0..4u64)
        .map(|t| (0..2000u64).filter(|i| (i + t) % 3 == 0).count() as u64)
        .sum();
    assert_eq!(*lock.read(), expected);
}

// -------------------------------------------------------- bounded semaphore

#[test]
fn bounded_semaphore_over_release_is_an_error() {
    tasklet::dispatch(|| {
        let sem = Rc::new(BoundedSemaphore::new(1));
        assert_eq!(sem.release(), Err(OverReleaseError));
        sem.acquire().forget();
        let s2 = sem.clone();
        let waiter = tasklet::spawn(move || s2.acquire_timeout(LONG).map(|p| p.forget()).is_some());
        tasklet::yield_now();
        sem.release().unwrap(); // hands the permit to the waiter
        assert!(waiter.join().unwrap());
        assert_eq!(sem.available_permits(), 0);
        sem.release().unwrap();
        assert_eq!(sem.release(), Err(OverReleaseError));
        assert_eq!(sem.available_permits(), 1);
        // Killed while waiting: the permit is not lost.
        let p = sem.acquire();
        let s3 = sem.clone();
        let killed = tasklet::spawn(move || drop(s3.acquire()));
        tasklet::yield_now();
        killed.kill();
        assert!(killed.join().unwrap_err().is_killed());
        drop(p);
        assert_eq!(sem.available_permits(), 1);
    });
}

/// A tasklet-local value whose destructor panics.
struct PanicsOnDrop(&'static str);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("{} dropped", self.0);
    }
}

tasklet::tasklet_local! {
    static BOMB: RefCell<Option<PanicsOnDrop>> = RefCell::new(None);
}

/// Locals are dropped after the tasklet's unwind is over, so one whose
/// destructor panics is never a panic during unwinding (a process abort):
/// killed or panicking, the tasklet ends as such and the others carry on;
/// one that returned reports the destructor's panic.
#[test]
fn a_tasklet_local_whose_destructor_panics_does_not_abort_a_kill_or_a_panic() {
    tasklet::dispatch(|| {
        let bystander = tasklet::spawn(|| {
            tasklet::sleep(Duration::from_millis(20));
            "carried on"
        });
        let killed = tasklet::spawn(|| {
            BOMB.with(|b| *b.borrow_mut() = Some(PanicsOnDrop("killed's")));
            tasklet::sleep(Duration::from_secs(60));
        });
        let panicked = tasklet::spawn(|| {
            BOMB.with(|b| *b.borrow_mut() = Some(PanicsOnDrop("panicked's")));
            panic!("the body's own panic");
        });
        let returned = tasklet::spawn(|| {
            BOMB.with(|b| *b.borrow_mut() = Some(PanicsOnDrop("returned's")));
            7
        });
        tasklet::yield_now();
        killed.kill();
        assert!(killed.join().unwrap_err().is_killed());
        let e = panicked.join().unwrap_err();
        assert!(e.to_string().contains("the body's own panic"), "{e}");
        let e = returned.join().unwrap_err();
        assert!(e.to_string().contains("returned's dropped"), "{e}");
        assert_eq!(bystander.join().unwrap(), "carried on");
    });
}
