//! Adversarial tests of the tasklet core (task blocks with an in-header
//! reference count, the intrusive ready queue, kill/timeout/shutdown paths,
//! stale wake-ups, per-thread block caches).
//!
//! Each test runs its dispatcher on a fresh thread joined with a deadline
//! (`bounded`), so a corrupted ready queue (a cycle) or a lost wake-up fails
//! the test instead of hanging the suite.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tasklet::hub::{self, Unparker};
use tasklet::JoinHandle;

mod common;

/// Runs `f` on its own thread, failing the test on a hang (see
/// `common::on_thread_bounded`).
fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    common::on_thread_bounded("adversarial", limit, f)
}

const LIMIT: Duration = Duration::from_secs(10);

/// Counts its drops into a shared cell.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Parks until `flag` is set, re-checking on every wake-up (spurious ones too).
fn park_until_flag(flag: &Rc<Cell<bool>>, slot: &Rc<RefCell<Option<Unparker>>>) {
    while !flag.get() {
        *slot.borrow_mut() = Some(hub::current_unparker());
        hub::park(None).expect("not interrupted");
    }
}

#[test]
fn kill_not_started_ready_and_blocked_tasklets() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let drops = Rc::new(Cell::new(0));
            let ran = Rc::new(Cell::new(0));

            // Not started: its closure is dropped, its body never runs.
            let (g, r) = (DropCount(drops.clone()), ran.clone());
            let not_started = tasklet::spawn(move || {
                let _g = g;
                r.set(r.get() + 1);
            });
            not_started.kill();
            not_started.kill();

            // Ready: it yielded and sits in the ready queue when killed.
            let (g, r) = (DropCount(drops.clone()), ran.clone());
            let ready = tasklet::spawn(move || {
                let _g = g;
                r.set(r.get() + 1);
                loop {
                    tasklet::yield_now();
                }
            });
            // Blocked: parked with no deadline.
            let (g, r) = (DropCount(drops.clone()), ran.clone());
            let blocked = tasklet::spawn(move || {
                let _g = g;
                r.set(r.get() + 1);
                tasklet::sleep(Duration::from_secs(3600));
            });
            tasklet::yield_now();
            assert_eq!(ran.get(), 2);
            ready.kill();
            blocked.kill();
            // Killing twice and waking afterwards must not queue them twice.
            ready.kill();
            blocked.kill();

            assert!(not_started.join().unwrap_err().is_killed());
            assert!(ready.join().unwrap_err().is_killed());
            assert!(blocked.join().unwrap_err().is_killed());
            assert_eq!(drops.get(), 3);
            assert_eq!(ran.get(), 2, "the tasklet killed before it started ran");
        })
    });
}

#[test]
fn tasklet_kills_itself_through_its_own_handle() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let me: Rc<RefCell<Option<JoinHandle<u32>>>> = Rc::default();
            let after = Rc::new(Cell::new(false));
            let (m, a) = (me.clone(), after.clone());
            let h = tasklet::spawn(move || {
                // The handle moves out, so the tasklet holds its own handle
                // (and its own block) while it unwinds.
                let own = m.borrow_mut().take().expect("handle stored");
                own.kill();
                assert!(!own.is_finished());
                tasklet::yield_now();
                a.set(true);
                7
            });
            let desc = h.tasklet();
            *me.borrow_mut() = Some(h);
            // Give it a pass to kill itself and one to unwind.
            tasklet::yield_now();
            tasklet::yield_now();
            assert!(!after.get(), "code after the self-kill's yield ran");
            assert!(me.borrow().is_none());
            // The description handle outlives the tasklet's block.
            assert!(desc.id().as_u64() > 0);
        })
    });
}

#[test]
fn wakes_from_every_source_in_one_pass_queue_the_tasklet_once() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let slot: Rc<RefCell<Option<Unparker>>> = Rc::default();
            let runs = Rc::new(Cell::new(0u32));
            let (s, r) = (slot.clone(), runs.clone());
            let h = tasklet::spawn(move || {
                let _ = tasklet::timeout(Duration::from_millis(1), || loop {
                    *s.borrow_mut() = Some(hub::current_unparker());
                    // Its own timer, the timeout and the unparkers all fire.
                    let _ = hub::park(Some(Instant::now() + Duration::from_millis(1)));
                    r.set(r.get() + 1);
                });
                r.get()
            });
            tasklet::yield_now();
            let u = slot.borrow_mut().take().unwrap();
            let remote = u.remote();
            // Hold the dispatcher until both timers are due (a busy wait:
            // with the `hook` feature std::thread::sleep would yield).
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(5) {
                std::hint::spin_loop();
            }
            // Local and remote unpark plus kill, while both timers are due.
            assert!(u.unpark());
            assert!(u.clone().unpark());
            remote.unpark();
            h.kill();
            h.kill();
            let t = Instant::now();
            assert!(h.join().unwrap_err().is_killed());
            assert!(t.elapsed() < Duration::from_secs(5));
            // Stale after the tasklet finished: no effect.
            assert!(!u.unpark());
            remote.unpark();
            tasklet::yield_now();
            assert_eq!(runs.get(), 0);
        })
    });
}

#[test]
fn stale_unparkers_never_wake_a_tasklet_reusing_the_slot_or_block() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            // A tasklet parks, hands out unparkers, finishes.
            let slot: Rc<RefCell<Option<Unparker>>> = Rc::default();
            let flag = Rc::new(Cell::new(false));
            let (s, f) = (slot.clone(), flag.clone());
            let old = tasklet::spawn(move || park_until_flag(&f, &s));
            tasklet::yield_now();
            let stale = slot.borrow_mut().take().unwrap();
            let stale_remote = stale.remote();
            flag.set(true);
            assert!(stale.unpark());
            old.join().unwrap();

            // A new tasklet of the same result type gets the freed registry
            // slot and (from the block cache) the freed block.
            let wakes = Rc::new(Cell::new(0u32));
            let slot2: Rc<RefCell<Option<Unparker>>> = Rc::default();
            let flag2 = Rc::new(Cell::new(false));
            let (w, s2, f2) = (wakes.clone(), slot2.clone(), flag2.clone());
            let new = tasklet::spawn(move || {
                while !f2.get() {
                    *s2.borrow_mut() = Some(hub::current_unparker());
                    hub::park(None).expect("not interrupted");
                    w.set(w.get() + 1);
                }
            });
            tasklet::yield_now();
            assert!(!stale.unpark());
            stale_remote.unpark();
            // From another thread as well.
            let r = stale_remote.clone();
            std::thread::spawn(move || r.unpark()).join().unwrap();
            for _ in 0..3 {
                tasklet::sleep(Duration::from_millis(1));
            }
            assert_eq!(wakes.get(), 0, "a stale unparker woke the new tasklet");
            flag2.set(true);
            assert!(slot2.borrow_mut().take().unwrap().unpark());
            new.join().unwrap();
            assert_eq!(wakes.get(), 1);
        })
    });
}

#[test]
fn handles_and_unparkers_outlive_their_dispatcher() {
    bounded(LIMIT, || {
        let (done, killed, sleeper, desc, unparker, remote) = tasklet::dispatch(|| {
            let done = tasklet::spawn(|| String::from("done"));
            let killed = tasklet::spawn(|| String::from("never"));
            killed.kill();
            let slot: Rc<RefCell<Option<Unparker>>> = Rc::default();
            let s = slot.clone();
            let sleeper = tasklet::spawn(move || {
                *s.borrow_mut() = Some(hub::current_unparker());
                tasklet::sleep(Duration::from_secs(3600));
                vec![1u8; 3]
            });
            let t = sleeper.tasklet();
            tasklet::yield_now();
            let u = slot.borrow_mut().take().unwrap();
            let r = u.remote();
            (done, killed, sleeper, t, u, r)
        });
        // Everything is finished (the sleeper killed at exit).
        assert!(done.is_finished() && killed.is_finished() && sleeper.is_finished());
        sleeper.kill();
        assert!(!unparker.unpark());
        remote.unpark();
        assert_eq!(desc.id(), sleeper.id());
        assert_eq!(done.join().unwrap(), "done");
        assert!(killed.join().unwrap_err().is_killed());
        assert!(sleeper.join().unwrap_err().is_killed());
        // A second dispatcher on the same thread ignores the old ones.
        tasklet::dispatch(move || {
            assert!(!unparker.unpark());
            remote.unpark();
            let h = tasklet::spawn(|| 5);
            assert_eq!(h.join().unwrap(), 5);
            drop(desc);
        });
    });
}

/// Counts its drops into a shared atomic (usable across threads).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A handle kept in a thread-local until the thread exits.
type Kept = JoinHandle<(Vec<u64>, Counted)>;

thread_local! {
    static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
    static KEPT_UNPARKERS: RefCell<Vec<Unparker>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn handles_dropped_at_thread_exit() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    bounded(LIMIT, move || {
        let d2 = d.clone();
        tasklet::dispatch(move || {
            for i in 0..20u64 {
                let c = Counted(d2.clone());
                let h = tasklet::spawn(move || {
                    if i % 2 == 0 {
                        let _c = c;
                        tasklet::sleep(Duration::from_secs(3600));
                        unreachable!("killed at exit");
                    }
                    // Odd results (with their `Counted`) live in the
                    // thread-local until the thread exits.
                    (vec![i; 40], c)
                });
                KEPT.with(|k| k.borrow_mut().push(h));
            }
            tasklet::yield_now();
            KEPT_UNPARKERS.with(|k| k.borrow_mut().push(hub::current_unparker()));
        });
        // The handles and an unparker stay in thread-locals; the thread exits
        // and thread-local destruction frees their blocks (after or before the
        // block cache's own destructor).
    });
    assert_eq!(dropped.load(Ordering::SeqCst), 20);
}

#[test]
fn many_dispatchers_on_many_threads_churn_blocks_of_every_size() {
    #[repr(align(32))]
    struct Aligned([u8; 32]);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            std::thread::spawn(move || {
                bounded(LIMIT, move || {
                    let mut sum = 0u64;
                    for round in 0..5u64 {
                        sum += tasklet::Config::new().stack_size(32 * 1024).dispatch(|| {
                            let mut s = 0u64;
                            for i in 0..200u64 {
                                let small = tasklet::spawn(move || i);
                                let mid = tasklet::spawn(move || [i; 20]);
                                let big = tasklet::spawn(move || [i; 100]);
                                let al = tasklet::spawn(move || Aligned([i as u8; 32]));
                                if i % 3 == 0 {
                                    tasklet::yield_now();
                                }
                                if i % 5 == 0 {
                                    drop(tasklet::spawn(move || [t; 9]));
                                }
                                s += small.join().unwrap();
                                s += mid.join().unwrap()[19];
                                s += big.join().unwrap()[99];
                                s += al.join().unwrap().0[31] as u64;
                            }
                            s + round
                        });
                    }
                    sum
                })
            })
        })
        .collect();
    // Per dispatch: 3 * sum(0..200) + sum(i as u8 for i < 200) + round.
    let per: u64 = 3 * (0..200u64).sum::<u64>() + (0..200u64).map(|i| i as u8 as u64).sum::<u64>();
    for t in threads {
        assert_eq!(t.join().unwrap(), 5 * per + (0..5).sum::<u64>());
    }
}

#[test]
fn hundred_thousand_spawns_finish_in_one_pass() {
    bounded(Duration::from_secs(30), || {
        tasklet::Config::new().stack_size(16 * 1024).dispatch(|| {
            const N: u64 = 100_000;
            let finished = Rc::new(Cell::new(0u64));
            let mut handles = Vec::with_capacity(N as usize / 2);
            for i in 0..N {
                let f = finished.clone();
                let h = tasklet::spawn(move || {
                    f.set(f.get() + 1);
                    i
                });
                if i % 2 == 0 {
                    handles.push(h);
                } // odd ones are detached
            }
            // One yield: every spawned tasklet runs (and finishes) in the pass
            // that starts now, before this one runs again.
            tasklet::yield_now();
            assert_eq!(finished.get(), N);
            let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(sum, (0..N).step_by(2).sum::<u64>());
        })
    });
}

#[test]
fn yielding_tasklets_interleave_fifo_across_detached_batches() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let log = Rc::new(RefCell::new(Vec::new()));
            let mk = |name: char| {
                let l = log.clone();
                tasklet::spawn(move || {
                    for _ in 0..3 {
                        l.borrow_mut().push(name);
                        tasklet::yield_now();
                    }
                })
            };
            let a = mk('a');
            let b = mk('b');
            // c spawns d while its pass runs: d joins the next batch, behind
            // the tasklets that yielded in this one.
            let l = log.clone();
            let c = tasklet::spawn(move || {
                l.borrow_mut().push('c');
                let l2 = l.clone();
                let d = tasklet::spawn(move || l2.borrow_mut().push('d'));
                tasklet::yield_now();
                l.borrow_mut().push('c');
                d.join().unwrap();
            });
            a.join().unwrap();
            b.join().unwrap();
            c.join().unwrap();
            let s: String = log.borrow().iter().collect();
            assert_eq!(s, "abcabdcab");
        })
    });
}

#[test]
fn spawn_and_kill_from_destructors_during_shutdown() {
    let ran = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let killed_joins = Arc::new(AtomicUsize::new(0));
    let (r, d, kj) = (ran.clone(), dropped.clone(), killed_joins.clone());
    bounded(LIMIT, move || {
        struct Spawner {
            ran: Arc<AtomicUsize>,
            dropped: Arc<AtomicUsize>,
            killed_joins: Arc<AtomicUsize>,
            victim: Option<JoinHandle<()>>,
        }
        impl Drop for Spawner {
            fn drop(&mut self) {
                // Kill and join another tasklet from a destructor at exit.
                if let Some(v) = self.victim.take() {
                    v.kill();
                    if v.join().is_err_and(|e| e.is_killed()) {
                        self.killed_joins.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Spawn from a destructor at exit: the new tasklet is killed
                // before it starts; its closure is dropped.
                let (r, d) = (self.ran.clone(), self.dropped.clone());
                struct Flag(Arc<AtomicUsize>);
                impl Drop for Flag {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let flag = Flag(d);
                let k = self.killed_joins.clone();
                let h = tasklet::spawn(move || {
                    let _f = flag;
                    r.fetch_add(1, Ordering::SeqCst);
                });
                // Blocking (join) while unwinding at exit is allowed.
                if h.join().is_err_and(|e| e.is_killed()) {
                    k.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        tasklet::dispatch(move || {
            for _ in 0..10 {
                let victim = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
                let s = Spawner {
                    ran: r.clone(),
                    dropped: d.clone(),
                    killed_joins: kj.clone(),
                    victim: Some(victim),
                };
                drop(tasklet::spawn(move || {
                    let _s = s;
                    tasklet::sleep(Duration::from_secs(3600));
                }));
            }
            tasklet::yield_now();
        });
    });
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(dropped.load(Ordering::SeqCst), 10);
    assert_eq!(killed_joins.load(Ordering::SeqCst), 20);
}

#[test]
fn dispatch_after_a_deadlock_panic_starts_clean() {
    bounded(LIMIT, || {
        let r = panic::catch_unwind(|| {
            tasklet::dispatch(|| {
                let h = tasklet::spawn(|| hub::park(None).map(|_| ()));
                tasklet::yield_now();
                // Main waits for a tasklet nothing can wake.
                let _ = h.join();
            })
        });
        assert!(r.is_err(), "deadlock not reported");
        assert!(!hub::in_dispatcher());
        let v = tasklet::dispatch(|| {
            let hs: Vec<_> = (0..100u32).map(|i| tasklet::spawn(move || i)).collect();
            tasklet::joinall(hs)
                .into_iter()
                .map(Result::unwrap)
                .sum::<u32>()
        });
        assert_eq!(v, (0..100).sum());
    });
}

#[test]
fn panic_in_main_kills_the_rest_and_reraises() {
    bounded(LIMIT, || {
        let drops = Rc::new(Cell::new(0));
        let d = drops.clone();
        let r = panic::catch_unwind(AssertUnwindSafe(move || {
            tasklet::dispatch(move || {
                for _ in 0..50 {
                    let g = DropCount(d.clone());
                    drop(tasklet::spawn(move || {
                        let _g = g;
                        tasklet::sleep(Duration::from_secs(3600));
                    }));
                }
                tasklet::yield_now();
                std::panic::panic_any(42u32);
            })
        }));
        assert_eq!(*r.unwrap_err().downcast::<u32>().unwrap(), 42);
        assert_eq!(drops.get(), 50);
    });
}

#[test]
fn kill_inside_nested_timeouts_is_a_kill() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let h = tasklet::spawn(|| {
                tasklet::timeout(Duration::from_secs(60), || {
                    tasklet::timeout(Duration::from_secs(30), || {
                        tasklet::sleep(Duration::from_secs(3600))
                    })
                })
            });
            tasklet::yield_now();
            h.kill();
            assert!(h.join().unwrap_err().is_killed());

            // A kill racing an expiring timeout (both due in the same poll).
            let h = tasklet::spawn(|| {
                let r = tasklet::timeout(Duration::from_millis(2), || {
                    tasklet::sleep(Duration::from_secs(3600))
                });
                assert!(r.is_err());
                tasklet::sleep(Duration::from_secs(3600));
            });
            tasklet::yield_now();
            std::thread::sleep(Duration::from_millis(5));
            h.kill();
            assert!(h.join().unwrap_err().is_killed());

            // The timeout scope's own deadline fires while the inner one's
            // destructor (which does not block) runs: the inner wins.
            let r = tasklet::timeout(Duration::from_millis(50), || {
                tasklet::timeout(Duration::from_millis(5), || {
                    tasklet::sleep(Duration::from_secs(3600))
                })
            });
            assert_eq!(r, Ok(Err(tasklet_elapsed())));
        })
    });
}

#[test]
fn spawn_from_a_destructor_during_shutdown_without_blocking() {
    let ran = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (r, d) = (ran.clone(), dropped.clone());
    bounded(LIMIT, move || {
        struct Spawner(Arc<AtomicUsize>, Arc<AtomicUsize>);
        impl Drop for Spawner {
            fn drop(&mut self) {
                let (r, c) = (self.0.clone(), Counted(self.1.clone()));
                drop(tasklet::spawn(move || {
                    let _c = c;
                    r.fetch_add(1, Ordering::SeqCst);
                    tasklet::sleep(Duration::from_secs(3600));
                }));
            }
        }
        tasklet::dispatch(move || {
            for _ in 0..10 {
                let s = Spawner(r.clone(), d.clone());
                drop(tasklet::spawn(move || {
                    let _s = s;
                    tasklet::sleep(Duration::from_secs(3600));
                }));
            }
            tasklet::yield_now();
        });
    });
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a tasklet spawned at exit ran"
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 10);
}

/// An `Elapsed` value (the type has no public constructor).
fn tasklet_elapsed() -> tasklet::Elapsed {
    tasklet::timeout(Duration::ZERO, || tasklet::sleep(Duration::from_secs(1))).unwrap_err()
}

/// Sleeps in its destructor, i.e. blocks while its tasklet unwinds.
struct SlowDrop(Duration);

impl Drop for SlowDrop {
    fn drop(&mut self) {
        tasklet::sleep(self.0);
    }
}

#[test]
fn interrupts_work_while_another_tasklet_blocks_in_a_destructor() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let a = tasklet::spawn(|| {
                let _slow = SlowDrop(Duration::from_millis(300));
                tasklet::sleep(Duration::from_secs(3600));
            });
            tasklet::yield_now();
            a.kill();
            // `a` unwinds and parks in SlowDrop::drop for 300 ms.
            tasklet::yield_now();
            assert!(!a.is_finished());

            // A tasklet killed before it started must never run.
            let ran = Rc::new(Cell::new(false));
            let r = ran.clone();
            let b = tasklet::spawn(move || r.set(true));
            b.kill();
            let b_killed = b.join().is_err_and(|e| e.is_killed());

            // A timeout in another tasklet fires on time.
            let t = Instant::now();
            let timed_out = tasklet::timeout(Duration::from_millis(10), || {
                tasklet::sleep(Duration::from_secs(2))
            })
            .is_err();
            let took = t.elapsed();

            assert!(a.join().unwrap_err().is_killed());
            assert!(
                !ran.get(),
                "a tasklet killed before it started ran its body"
            );
            assert!(
                b_killed,
                "join of a tasklet killed before it started was not Killed"
            );
            assert!(
                timed_out && took < Duration::from_millis(250),
                "timeout fired after {took:?}"
            );
        })
    });
}

#[test]
fn kill_during_a_blocking_destructor_of_an_expired_timeout_is_not_lost() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let h = tasklet::spawn(|| {
                let r = tasklet::timeout(Duration::from_millis(10), || {
                    let _slow = SlowDrop(Duration::from_millis(100));
                    tasklet::sleep(Duration::from_secs(3600));
                });
                assert!(r.is_err());
                // Killed at ~30 ms: this sleep must be interrupted.
                tasklet::sleep(Duration::from_secs(2));
                "survived the kill"
            });
            tasklet::sleep(Duration::from_millis(30));
            h.kill();
            let r = h.join();
            assert!(
                r.as_ref().is_err_and(|e| e.is_killed()),
                "kill was lost: {:?}",
                r.map_err(|e| e.to_string())
            );
        })
    });
}

#[test]
fn outer_timeout_expiring_during_inner_unwind_is_not_lost() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let start = Instant::now();
            let r = tasklet::timeout(Duration::from_millis(40), || {
                let inner = tasklet::timeout(Duration::from_millis(10), || {
                    let _slow = SlowDrop(Duration::from_millis(100));
                    tasklet::sleep(Duration::from_secs(3600));
                });
                assert!(inner.is_err());
                // The outer deadline passed at 40 ms: this must not run to the end.
                tasklet::sleep(Duration::from_secs(2));
            });
            assert!(r.is_err(), "outer timeout lost after {:?}", start.elapsed());
        })
    });
}

#[test]
fn joiner_that_gave_up_does_not_keep_its_result_alive() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let drops = Rc::new(Cell::new(0));
            let target = tasklet::spawn(|| tasklet::sleep(Duration::from_millis(200)));
            let d = drops.clone();
            let x = tasklet::spawn(move || {
                // Gives up joining `target` (the handle is consumed).
                let r = tasklet::timeout(Duration::from_millis(5), move || target.join());
                assert!(r.is_err());
                DropCount(d)
            });
            while !x.is_finished() {
                tasklet::sleep(Duration::from_millis(1));
            }
            // x finished with its result stored; dropping the only handle
            // should drop that result now, not when `target` finishes.
            drop(x);
            assert_eq!(
                drops.get(),
                1,
                "the finished tasklet's result is still alive after its handle was dropped"
            );
        })
    });
}

#[test]
fn destructor_joining_during_kill_and_timeout_in_destructor() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            struct JoinOnDrop(Option<JoinHandle<u32>>, Rc<Cell<u32>>);
            impl Drop for JoinOnDrop {
                fn drop(&mut self) {
                    let h = self.0.take().unwrap();
                    // A timeout inside a destructor of a killed tasklet.
                    let r = tasklet::timeout(Duration::from_secs(5), move || h.join());
                    self.1.set(r.unwrap().unwrap());
                }
            }
            let got = Rc::new(Cell::new(0));
            let child = tasklet::spawn(|| {
                tasklet::sleep(Duration::from_millis(5));
                99
            });
            let g = JoinOnDrop(Some(child), got.clone());
            let parent = tasklet::spawn(move || {
                let _g = g;
                tasklet::sleep(Duration::from_secs(3600));
            });
            tasklet::yield_now();
            parent.kill();
            assert!(parent.join().unwrap_err().is_killed());
            assert_eq!(got.get(), 99);
        })
    });
}

#[test]
fn detached_tasklets_panicking_and_killed_in_bulk() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let mut hs = Vec::new();
            for i in 0..2000u32 {
                let h = tasklet::spawn(move || {
                    match i % 4 {
                        0 => panic!("boom {i}"),
                        1 => tasklet::sleep(Duration::from_secs(3600)),
                        2 => tasklet::yield_now(),
                        _ => {}
                    }
                    i
                });
                if i % 2 == 0 {
                    hs.push(h);
                } else {
                    h.kill();
                }
            }
            tasklet::yield_now();
            // Every even one is now finished (0 mod 4: panicked) or queued
            // after its yield (2 mod 4); kill them all before joining any.
            for h in &hs {
                h.kill();
            }
            let mut ok = 0;
            for h in hs {
                match h.join() {
                    Ok(_) => ok += 1,
                    Err(e) => assert!(e.is_panic() || e.is_killed()),
                }
            }
            // i % 4 == 2 ran to its yield, then was killed there; 0 panicked.
            assert_eq!(ok, 0);
        })
    });
}

#[test]
fn result_released_by_a_stale_joiner_does_not_unwind_the_dispatcher() {
    bounded(LIMIT, || {
        struct PanicOnDrop;
        impl Drop for PanicOnDrop {
            fn drop(&mut self) {
                panic!("result destructor");
            }
        }
        let caught_in_main = tasklet::dispatch(|| {
            let target = tasklet::spawn(|| tasklet::sleep(Duration::from_millis(50)));
            let x = tasklet::spawn(move || {
                let r = tasklet::timeout(Duration::from_millis(5), move || target.join());
                assert!(r.is_err());
                PanicOnDrop
            });
            while !x.is_finished() {
                tasklet::sleep(Duration::from_millis(1));
            }
            // The owner of the handle drops the result: its panic belongs here.
            let caught = panic::catch_unwind(AssertUnwindSafe(move || drop(x))).is_err();
            // `target` finishes meanwhile and releases the stale joiner.
            tasklet::sleep(Duration::from_millis(100));
            caught
        });
        assert!(caught_in_main);
    });
}

/// Waits in its destructor, by yielding or by short sleeps, for a flag that
/// nobody sets.
struct WaitForever {
    flag: Rc<Cell<bool>>,
    by_sleeping: bool,
}

impl Drop for WaitForever {
    fn drop(&mut self) {
        while !self.flag.get() {
            if self.by_sleeping {
                tasklet::sleep(Duration::from_millis(1));
            } else {
                tasklet::yield_now();
            }
        }
    }
}

fn exit_with_a_destructor_that_waits_forever(by_sleeping: bool) {
    bounded(Duration::from_secs(5), move || {
        tasklet::dispatch(move || {
            let flag = Rc::new(Cell::new(false));
            let g = WaitForever {
                flag: flag.clone(),
                by_sleeping,
            };
            drop(tasklet::spawn(move || {
                let _g = g;
                tasklet::sleep(Duration::from_secs(3600));
            }));
            tasklet::yield_now();
        });
    });
}

#[test]
fn exit_is_bounded_when_a_destructor_waits_by_yielding() {
    exit_with_a_destructor_that_waits_forever(false);
}

#[test]
fn exit_is_bounded_when_a_destructor_waits_by_sleeping() {
    exit_with_a_destructor_that_waits_forever(true);
}

#[test]
fn stale_remote_wakes_from_other_threads_hit_reused_slots_harmlessly() {
    bounded(LIMIT, || {
        let (tx, rx) = mpsc::channel::<hub::RemoteUnparker>();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammers: Vec<_> = {
            // One thread collects the stale unparkers; two keep firing them.
            let all = Arc::new(std::sync::Mutex::new(Vec::new()));
            let a = all.clone();
            let st = stop.clone();
            let collector = std::thread::spawn(move || {
                while let Ok(r) = rx.recv() {
                    a.lock().unwrap().push(r);
                }
                st.store(true, Ordering::SeqCst);
            });
            let mut v = vec![collector];
            for _ in 0..2 {
                let (a, st) = (all.clone(), stop.clone());
                v.push(std::thread::spawn(move || {
                    while !st.load(Ordering::SeqCst) {
                        let batch: Vec<_> = a.lock().unwrap().clone();
                        for r in &batch {
                            r.unpark();
                        }
                        std::thread::yield_now();
                    }
                }));
            }
            v
        };
        let spurious = tasklet::dispatch(move || {
            let spurious = Rc::new(Cell::new(0u32));
            for _ in 0..1000 {
                let slot: Rc<RefCell<Option<Unparker>>> = Rc::default();
                let flag = Rc::new(Cell::new(false));
                let (s, f, sp) = (slot.clone(), flag.clone(), spurious.clone());
                // Same registry slot, same first epoch as every earlier one:
                // only the tasklet id tells the stale wake-ups apart.
                let h = tasklet::spawn(move || loop {
                    *s.borrow_mut() = Some(hub::current_unparker());
                    hub::park(None).expect("not interrupted");
                    if f.get() {
                        return;
                    }
                    sp.set(sp.get() + 1);
                });
                tasklet::yield_now();
                let u = slot.borrow_mut().take().unwrap();
                let r = u.remote();
                // Poll the hub (draining the hammers' wake-ups) while it is parked.
                tasklet::sleep(Duration::from_micros(20));
                flag.set(true);
                assert!(u.unpark());
                h.join().unwrap();
                tx.send(r).unwrap();
            }
            drop(tx);
            spurious.get()
        });
        for h in hammers {
            h.join().unwrap();
        }
        assert_eq!(spurious, 0, "stale remote wake-ups woke later tasklets");
    });
}

#[test]
fn timeout_inside_a_destructor_of_a_killed_tasklet_fires() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            struct TimedDrop(Rc<Cell<Option<(bool, Duration)>>>);
            impl Drop for TimedDrop {
                fn drop(&mut self) {
                    let t = Instant::now();
                    let r = tasklet::timeout(Duration::from_millis(20), || {
                        tasklet::sleep(Duration::from_secs(2))
                    });
                    self.0.set(Some((r.is_err(), t.elapsed())));
                }
            }
            let seen = Rc::new(Cell::new(None));
            let g = TimedDrop(seen.clone());
            let a = tasklet::spawn(move || {
                let _g = g;
                tasklet::sleep(Duration::from_secs(3600));
            });
            tasklet::yield_now();
            a.kill();
            assert!(a.join().unwrap_err().is_killed());
            let (elapsed, took) = seen.get().expect("destructor ran");
            assert!(
                elapsed && took < Duration::from_millis(500),
                "timeout in the destructor: elapsed={elapsed}, took {took:?}"
            );
        })
    });
}

/// Sleeps in its destructor (a `finally` block that blocks).
struct SleepyDrop(Rc<Cell<u32>>);

impl Drop for SleepyDrop {
    fn drop(&mut self) {
        tasklet::sleep(Duration::from_millis(5));
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn killing_tasklets_that_block_in_destructors_while_panicking_does_not_abort() {
    // Two tasklets panic (one while the other is already parked in a
    // destructor during its unwind), both block in destructors, and both are
    // killed meanwhile: raising the kill inside those destructors would be a
    // panic during unwinding (an abort). A third, ordinary tasklet must still
    // be killable while they unwind.
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let dropped = Rc::new(Cell::new(0));
            let (d1, d2) = (dropped.clone(), dropped.clone());
            let a = tasklet::spawn(move || {
                let _g = SleepyDrop(d1);
                panic!("a fails");
            });
            tasklet::yield_now(); // a is now parked in its destructor
            let b = tasklet::spawn(move || {
                let _g = SleepyDrop(d2);
                panic!("b fails");
            });
            tasklet::yield_now(); // b too
            a.kill();
            b.kill();
            let c = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
            tasklet::yield_now();
            c.kill();
            assert!(c.join().unwrap_err().is_killed());
            assert_eq!(a.join().unwrap_err().panic_message(), Some("a fails"));
            assert_eq!(b.join().unwrap_err().panic_message(), Some("b fails"));
            assert_eq!(dropped.get(), 2);
        });
    });
}
