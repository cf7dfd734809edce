//! The thread-per-core `Runtime`: workers, `spawn_on`, `RemoteJoinHandle`,
//! cross-worker sync primitives, early returns and panics, and the `Send`
//! stop/kill handles for plain threads.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use tasklet::sync::{self, Event};
use tasklet::{spawn_on, try_spawn_on, worker_index, workers, Runtime};

/// Generous bound for waits on a loaded machine.
const LONG: Duration = Duration::from_secs(60);

#[test]
fn run_returns_every_worker_result_in_order_on_named_threads() {
    let out = Runtime::new().workers(3).name("wk").run(|| {
        let i = worker_index().unwrap();
        assert_eq!(workers(), 3);
        (i, thread::current().name().unwrap().to_owned())
    });
    assert_eq!(
        out,
        [
            (0, "wk-0".to_owned()),
            (1, "wk-1".to_owned()),
            (2, "wk-2".to_owned())
        ]
    );
    // Outside a runtime.
    assert_eq!(worker_index(), None);
    assert_eq!(workers(), 1);
    tasklet::dispatch(|| {
        assert_eq!(worker_index(), None);
        assert_eq!(workers(), 1);
    });
}

/// The calling thread's allowed CPUs (`sched_getaffinity`).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(r, 0);
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE and `set` was filled above.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

#[test]
fn default_worker_count_is_the_allowed_cpus_and_pinning_works() {
    let n = thread::available_parallelism().unwrap().get();
    let out = Runtime::new()
        .pin_to_cores(true)
        .run(|| allowed_cpus().len());
    assert_eq!(out.len(), n);
    assert!(
        out.iter().all(|&c| c == 1),
        "each worker pinned to one CPU: {out:?}"
    );
}

#[test]
fn unpinned_workers_keep_every_allowed_cpu() {
    let allowed = allowed_cpus();
    if allowed.len() < 2 {
        eprintln!("one CPU allowed: nothing to spread");
        return;
    }
    // Each worker's CPU at the start of its first tasklet, and its mask:
    // moving a worker to its home CPU (see `affinity`) must not pin it.
    let out = Runtime::new().workers(2).run(|| {
        // SAFETY: no arguments, no memory accessed.
        let cpu = unsafe { libc::sched_getcpu() };
        (cpu, allowed_cpus())
    });
    for (cpu, mask) in &out {
        assert_eq!(mask, &allowed, "an unpinned worker keeps every allowed CPU");
        assert!(allowed.contains(&(*cpu as usize)), "{out:?}");
    }
}

#[test]
fn spawn_on_runs_on_the_target_workers_thread() {
    Runtime::new().workers(2).run(|| {
        if worker_index() != Some(0) {
            return;
        }
        let me = thread::current().id();
        let h = spawn_on(1, move || {
            assert_ne!(thread::current().id(), me);
            (worker_index(), thread::current().name().map(str::to_owned))
        });
        assert_eq!(h.join().unwrap(), (Some(1), Some("tasklet-1".to_owned())));
        // To itself: also fine.
        let h = spawn_on(0, move || thread::current().id() == me);
        assert!(h.join().unwrap());
    });
}

#[test]
fn a_hundred_thousand_spawn_on_and_join_across_workers_lose_nothing() {
    const N: u64 = 100_000;
    const BATCH: u64 = 1000;
    let sums = Runtime::new().workers(2).run(|| {
        let me = worker_index().unwrap();
        let other = 1 - me;
        let mut sum = 0u64;
        // Both workers hand work to each other at once.
        for b in 0..N / 2 / BATCH {
            let handles: Vec<_> = (0..BATCH)
                .map(|i| {
                    let v = b * BATCH + i;
                    spawn_on(other, move || {
                        assert_eq!(worker_index(), Some(other));
                        v * 2
                    })
                })
                .collect();
            for h in handles {
                sum += h.join().unwrap();
            }
        }
        sum
    });
    let half = N / 2;
    let expected = half * (half - 1); // 2 * sum(0..half)
    assert_eq!(sums, [expected, expected]);
}

/// Sets a flag when dropped (to see a tasklet unwind).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn killing_a_remote_join_handle_unwinds_the_remote_tasklet() {
    Runtime::new().workers(2).run(|| {
        if worker_index() != Some(0) {
            return;
        }
        let unwound = Arc::new(AtomicBool::new(false));
        let started = Arc::new(Event::new());
        let (u, s) = (unwound.clone(), started.clone());
        let h = spawn_on(1, move || {
            let _guard = SetOnDrop(u);
            s.set();
            tasklet::sleep(Duration::from_secs(3600));
        });
        assert!(started.wait_timeout(LONG));
        assert!(!h.is_finished());
        h.kill();
        let e = h.join().unwrap_err();
        assert!(e.is_killed(), "{e}");
        assert!(unwound.load(Ordering::SeqCst), "destructors ran");

        // Killed before it ever ran: the body never runs. Worker 1's
        // thread is held (blocked outside its dispatcher's control) so that
        // the spawn and the kill are both queued before it looks.
        let gate = Arc::new(std::sync::Barrier::new(2));
        let g = gate.clone();
        let blocker = spawn_on(1, move || {
            g.wait();
            g.wait();
        });
        tasklet::unblock({
            let g = gate.clone();
            move || g.wait()
        });
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let h = spawn_on(1, move || r.store(true, Ordering::SeqCst));
        h.kill();
        tasklet::unblock(move || gate.wait());
        blocker.join().unwrap();
        // The kill was requested before the tasklet existed on worker 1:
        // it is killed as soon as it is created, before its body runs.
        assert!(h.join().unwrap_err().is_killed());
        assert!(!ran.load(Ordering::SeqCst));
        // Killing a finished one is a no-op.
        let h = spawn_on(1, || 5);
        while !h.is_finished() {
            tasklet::sleep(Duration::from_millis(1));
        }
        h.kill();
        assert_eq!(h.join().unwrap(), 5);
    });
}

#[test]
fn a_panic_in_a_spawn_on_tasklet_comes_back_from_join() {
    Runtime::new().workers(2).run(|| {
        if worker_index() == Some(0) {
            let e = spawn_on(1, || panic!("boom on 1")).join().unwrap_err();
            assert!(e.is_panic());
            assert_eq!(e.panic_message(), Some("boom on 1"));
            // The worker carries on.
            assert_eq!(spawn_on(1, || 7).join().unwrap(), 7);
        }
    });
}

#[test]
fn out_of_range_worker_is_a_clear_error() {
    Runtime::new().workers(2).run(|| {
        let e = try_spawn_on(2, || ()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("worker 2 is out of range"), "{e}");
        assert!(e.to_string().contains("2 worker(s)"), "{e}");
        let p = panic::catch_unwind(|| spawn_on(7, || ())).unwrap_err();
        let msg = p.downcast_ref::<String>().unwrap();
        assert!(
            msg.starts_with("tasklet::spawn_on: worker 7 is out of range"),
            "{msg}"
        );
    });
    // Plain dispatch: worker 0 is the dispatcher itself.
    tasklet::dispatch(|| {
        assert_eq!(spawn_on(0, || 3).join().unwrap(), 3);
        assert!(try_spawn_on(1, || ()).is_err());
    });
    // No dispatcher at all.
    let e = try_spawn_on(0, || ()).unwrap_err();
    assert!(e.to_string().contains("outside a tasklet::Runtime"), "{e}");
}

#[test]
#[should_panic(expected = "at least one worker")]
fn zero_workers_is_refused() {
    let _ = Runtime::new().workers(0);
}

#[test]
fn channels_events_and_mutexes_work_between_workers() {
    let (tx, rx) = sync::channel::<u64>(16);
    let rx = Mutex::new(Some(rx));
    let tx = Mutex::new(Some(tx));
    let ready = Event::new();
    let counter = Arc::new(sync::Mutex::new(0u64));
    let out = Runtime::new().workers(2).run(|| {
        let me = worker_index().unwrap();
        // Mutex: both workers' tasklets increment under the lock, yielding
        // while holding it.
        let mut hs = Vec::new();
        for _ in 0..10 {
            let counter = counter.clone();
            hs.push(tasklet::spawn(move || {
                for _ in 0..100 {
                    let mut g = counter.lock();
                    let v = *g;
                    tasklet::yield_now();
                    *g = v + 1;
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        if me == 0 {
            // Channel: worker 0 produces, worker 1 consumes.
            let tx = tx.lock().unwrap().take().unwrap();
            ready.wait();
            for i in 0..10_000 {
                tx.send(i).unwrap();
            }
            0
        } else {
            let rx = rx.lock().unwrap().take().unwrap();
            ready.set();
            rx.iter().sum::<u64>()
        }
    });
    assert_eq!(out[1], (0..10_000).sum::<u64>());
    assert_eq!(*counter.try_lock().unwrap(), 2 * 10 * 100);
}

#[test]
fn a_worker_that_returns_early_does_not_stop_the_others() {
    let t0 = Instant::now();
    let out = Runtime::new().workers(2).run(|| {
        if worker_index() == Some(0) {
            // A tasklet left running on worker 0 keeps serving until the end.
            tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
            return "early";
        }
        tasklet::sleep(Duration::from_millis(200));
        // Worker 0 returned but still runs work handed to it.
        assert_eq!(spawn_on(0, worker_index).join().unwrap(), Some(0));
        "late"
    });
    assert_eq!(out, ["early", "late"]);
    assert!(t0.elapsed() >= Duration::from_millis(200));
}

#[test]
fn a_panic_in_one_worker_stops_the_others_and_is_reraised() {
    let unwound = Arc::new(AtomicBool::new(false));
    let u = unwound.clone();
    let r = panic::catch_unwind(AssertUnwindSafe(move || {
        Runtime::new().workers(2).run(move || {
            if worker_index() == Some(1) {
                tasklet::sleep(Duration::from_millis(20));
                panic!("worker 1 failed");
            }
            let _guard = SetOnDrop(u.clone());
            // Also a second tasklet on worker 0: unwound at shutdown.
            tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
            tasklet::sleep(Duration::from_secs(3600));
        })
    }));
    let p = r.unwrap_err();
    assert_eq!(p.downcast_ref::<&str>(), Some(&"worker 1 failed"));
    assert!(
        unwound.load(Ordering::SeqCst),
        "worker 0's first tasklet was unwound"
    );
}

/// A minimal `block_on`: polls on this thread, parks it between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

#[test]
fn remote_join_handles_are_futures_and_join_from_plain_threads() {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let rt = thread::spawn(move || {
        Runtime::new().workers(2).run(move || {
            let go = Arc::new(Event::new());
            let g = go.clone();
            let h = tasklet::spawn(move || {
                g.wait();
                worker_index().unwrap() * 10
            })
            .into_remote();
            tx.lock().unwrap().send((h, go)).unwrap();
            // Stay up until the plain thread got both results.
            tasklet::sleep(Duration::from_millis(100));
        })
    });
    let (a, ga) = rx.recv_timeout(LONG).unwrap();
    let (b, gb) = rx.recv_timeout(LONG).unwrap();
    // Awaited from a hand-rolled executor on this plain thread.
    let waiter = thread::spawn(move || block_on(a).unwrap());
    thread::sleep(Duration::from_millis(10));
    ga.set();
    let va = waiter.join().unwrap();
    gb.set();
    let vb = b
        .join_timeout(LONG)
        .map_err(|_| "timed out")
        .unwrap()
        .unwrap();
    let mut v = [va, vb];
    v.sort();
    assert_eq!(v, [0, 10]);
    rt.join().unwrap();
}

#[test]
fn a_plain_thread_kills_a_tasklet_through_its_remote_handle() {
    tasklet::dispatch(|| {
        let unwound = Arc::new(AtomicBool::new(false));
        let u = unwound.clone();
        let started = Arc::new(Event::new());
        let s = started.clone();
        let h = tasklet::spawn(move || {
            let _g = SetOnDrop(u);
            s.set();
            tasklet::sleep(Duration::from_secs(3600));
        })
        .into_remote();
        started.wait();
        let admin = thread::spawn(move || {
            assert!(!h.is_finished());
            h.kill();
            h.join()
        });
        let deadline = Instant::now() + LONG;
        while !admin.is_finished() {
            assert!(Instant::now() < deadline);
            tasklet::sleep(Duration::from_millis(1));
        }
        assert!(admin.join().unwrap().unwrap_err().is_killed());
        assert!(unwound.load(Ordering::SeqCst));
    });
    // A handle outliving its dispatcher reports the tasklet killed.
    let h = tasklet::dispatch(|| {
        tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600))).into_remote()
    });
    assert!(h.join().unwrap_err().is_killed());
    // Finished before the conversion: the value is kept.
    let h = tasklet::dispatch(|| {
        let h = tasklet::spawn(|| 9);
        tasklet::yield_now();
        h.into_remote()
    });
    assert_eq!(h.join().unwrap(), 9);
}

#[test]
fn spawn_on_a_worker_that_has_shut_down_reports_killed() {
    // A handle kept past `run`: its worker is gone.
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    Runtime::new().workers(1).run(move || {
        let h = spawn_on(0, || tasklet::sleep(Duration::from_secs(3600)));
        tx.lock().unwrap().send(h).unwrap();
    });
    let h = rx.recv().unwrap();
    assert!(h.join().unwrap_err().is_killed());
}

#[test]
fn a_runtime_handle_spawns_on_workers_from_plain_threads() {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(Some(tx));
    let out = Runtime::new().workers(2).run(move || {
        if let Some(tx) = tx.lock().unwrap().take() {
            tx.send(tasklet::RuntimeHandle::current().unwrap()).unwrap();
        }
        // Stay up until the plain thread below has used the handle.
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let rt = tasklet::RuntimeHandle::current().unwrap();
        let plain = thread::spawn(move || {
            let hs: Vec<_> = (0..rt.workers())
                .map(|w| rt.spawn_on(w, worker_index))
                .collect();
            let v: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            d.store(true, Ordering::SeqCst);
            v
        });
        while !done.load(Ordering::SeqCst) {
            tasklet::sleep(Duration::from_millis(1));
        }
        plain.join().unwrap()
    });
    assert_eq!(out, [vec![Some(0), Some(1)], vec![Some(0), Some(1)]]);
    let rt = rx.recv().unwrap();
    assert_eq!(rt.workers(), 2);
    let e = rt.try_spawn_on(2, || ()).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    // The runtime has shut down: the tasklet never runs.
    assert!(rt.spawn_on(0, || ()).join().unwrap_err().is_killed());
    assert!(tasklet::RuntimeHandle::current().is_none());
}
