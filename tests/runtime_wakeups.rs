//! Cross-worker wake-ups of the `Runtime`: the sleep/wake handshake loses
//! none (a waker skips the `eventfd` write while the target worker is awake
//! or spinning), and the idle spin stays bounded — an idle runtime sleeps,
//! and only cross-thread work makes a hub spin.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tasklet::sync::{self, RecvTimeoutError};
use tasklet::{spawn_on, worker_index, Config, Runtime, RuntimeHandle};

/// Generous bound for one wake-up on a loaded machine: a lost wake-up shows
/// as this timeout, not as a hung test.
const LONG: Duration = Duration::from_secs(30);

/// CPU time of the calling thread (tasklets never leave their thread, so
/// inside a tasklet this is its worker's CPU time).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A small xorshift generator: reproducible pauses without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A random pause that leaves the calling worker in one of the states a
/// waker can find it in: running (busy), switching tasklets, asleep in
/// `epoll_wait` with a timer armed, or blocked in the kernel outside
/// `epoll_wait` (so it looks awake, and must see the wake-up before it
/// blocks in `epoll_wait`).
fn pause(rng: &mut Rng) {
    match rng.next() % 8 {
        0..=2 => {}
        3 => {
            let until = Instant::now() + Duration::from_micros(rng.next() % 40);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        4 => tasklet::yield_now(),
        5 => tasklet::sleep(Duration::from_micros(rng.next() % 200)),
        6 => std::thread::sleep(Duration::from_micros(rng.next() % 100)),
        _ => std::thread::yield_now(),
    }
}

/// Worker 0 sends `n` values to worker 1 and waits for each back, both
/// pausing at random between steps; every receive is bounded by [`LONG`].
fn ping_pong(rt: Runtime, n: u64, seed: u64) {
    let (to1, from0) = sync::channel::<u64>(1);
    let (to0, from1) = sync::channel::<u64>(1);
    let ends = Mutex::new((Some((to1, from1)), Some((to0, from0))));
    rt.workers(2).run(|| {
        let me = worker_index().unwrap();
        let mut rng = Rng(seed + me as u64);
        if me == 0 {
            let (to1, from1) = ends.lock().unwrap().0.take().unwrap();
            for i in 0..n {
                to1.send(i).unwrap();
                pause(&mut rng);
                let t = Instant::now();
                match from1.recv_timeout(LONG) {
                    Ok(v) => {
                        assert_eq!(v, i);
                        assert!(t.elapsed() < LONG, "round trip {i}: lost wake-up");
                    }
                    Err(e) => {
                        panic!("round trip {i}: no reply after {LONG:?} ({e:?}): lost wake-up")
                    }
                }
                pause(&mut rng);
            }
        } else {
            let (to0, from0) = ends.lock().unwrap().1.take().unwrap();
            for i in 0..n {
                let t = Instant::now();
                match from0.recv_timeout(LONG) {
                    Ok(v) => {
                        assert_eq!(v, i);
                        assert!(t.elapsed() < LONG, "message {i}: lost wake-up");
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        panic!("message {i}: not received after {LONG:?}: lost wake-up")
                    }
                    Err(e) => panic!("message {i}: {e:?}"),
                }
                pause(&mut rng);
                to0.send(i).unwrap();
            }
        }
    });
}

#[test]
fn cross_worker_ping_pong_with_random_pauses_loses_no_wakeup_with_the_default_spin() {
    ping_pong(Runtime::new(), 5_000, 1);
}

#[test]
fn cross_worker_ping_pong_with_random_pauses_loses_no_wakeup_without_spin() {
    ping_pong(Runtime::new().idle_spin(Duration::ZERO), 5_000, 2);
}

#[test]
fn cross_worker_ping_pong_with_random_pauses_loses_no_wakeup_with_short_spins() {
    // Spins that often run out just as the other worker sends: the race
    // between "stop spinning, go to sleep" and "skip the eventfd write".
    ping_pong(Runtime::new().idle_spin(Duration::from_micros(3)), 5_000, 3);
}

/// A plain thread unparks a tasklet `n` times, each time a random 0–20 µs
/// after the tasklet published its unparker and went to park, so that the
/// wake-ups land in every phase of the dispatcher going idle (still
/// running, draining its queue, spinning, giving up the spin, raising its
/// `sleeping` flag, inside `epoll_wait`).
fn race_remote_unparks(spin: Duration, n: u64) {
    let slot: Arc<Mutex<Option<tasklet::hub::RemoteUnparker>>> = Arc::default();
    let s = slot.clone();
    let waker = std::thread::spawn(move || {
        let mut rng = Rng(99);
        for _ in 0..n {
            let u = loop {
                if let Some(u) = s.lock().unwrap().take() {
                    break u;
                }
                // Polls often enough to catch the tasklet going idle, and
                // leaves the CPU to it when they share one.
                std::thread::yield_now();
            };
            let until = Instant::now() + Duration::from_nanos(rng.next() % 20_000);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            u.unpark();
        }
    });
    Config::new().idle_spin(spin).dispatch(|| {
        for i in 0..n {
            *slot.lock().unwrap() = Some(tasklet::hub::current_unparker().remote());
            let deadline = Instant::now() + LONG;
            // Until the waker thread has taken the unparker (and so will
            // unpark this wait); other wake-ups are spurious.
            loop {
                match tasklet::hub::park(Some(deadline)).unwrap() {
                    // Woken at the deadline: only the timer ended the park,
                    // the wake-up (drained with it) was lost until then.
                    tasklet::hub::Wake::Unparked if slot.lock().unwrap().is_none() => {
                        assert!(
                            Instant::now() < deadline,
                            "wake-up {i} delivered only at the {LONG:?} deadline: lost wake-up"
                        );
                        break;
                    }
                    tasklet::hub::Wake::Unparked => {}
                    tasklet::hub::Wake::TimedOut => {
                        panic!("wake-up {i} not delivered after {LONG:?}: lost wake-up")
                    }
                }
            }
        }
    });
    waker.join().unwrap();
}

#[test]
fn remote_unparks_racing_a_dispatcher_into_sleep_are_never_lost() {
    race_remote_unparks(Duration::ZERO, 5_000);
}

#[test]
fn remote_unparks_racing_a_spinning_dispatcher_are_never_lost() {
    // Spins that run out in the middle of the wakers' delays.
    race_remote_unparks(Duration::from_micros(5), 5_000);
    race_remote_unparks(Duration::from_micros(15), 5_000);
}

#[test]
fn three_workers_spawn_on_and_join_each_other_with_random_pauses() {
    const N: u64 = 3_000;
    let sums = Runtime::new()
        .workers(3)
        .idle_spin(Duration::from_micros(10))
        .run(|| {
            let me = worker_index().unwrap();
            let mut rng = Rng(10 + me as u64);
            let mut sum = 0;
            for i in 0..N {
                let to = (me + 1 + (rng.next() % 2) as usize) % 3;
                let pause_there = rng.next();
                let h = spawn_on(to, move || {
                    pause(&mut Rng(pause_there | 1));
                    i
                });
                pause(&mut rng);
                match h.join_timeout(LONG) {
                    Ok(r) => sum += r.unwrap(),
                    Err(_) => panic!("spawn_on {i} to worker {to}: not joined after {LONG:?}"),
                }
            }
            sum
        });
    assert_eq!(sums, [N * (N - 1) / 2; 3]);
}

#[test]
fn a_plain_thread_hands_work_to_spinning_and_sleeping_workers() {
    const N: u64 = 2_000;
    Runtime::new().workers(2).run(|| {
        if worker_index() != Some(0) {
            return;
        }
        let rt = RuntimeHandle::current().unwrap();
        let done = Arc::new(tasklet::sync::Event::new());
        let d = done.clone();
        let t = std::thread::spawn(move || {
            let mut rng = Rng(7);
            for i in 0..N {
                let h = rt.spawn_on((i % 2) as usize, move || i + 1);
                if rng.next().is_multiple_of(4) {
                    std::thread::sleep(Duration::from_micros(rng.next() % 200));
                }
                assert_eq!(h.join_timeout(LONG).ok().unwrap().unwrap(), i + 1);
            }
            d.set();
        });
        assert!(
            done.wait_timeout(LONG * 4),
            "the plain thread did not finish"
        );
        t.join().unwrap();
    });
}

#[test]
fn an_idle_runtime_sleeps_after_cross_worker_traffic() {
    // Long enough that a worker spinning without bound would show clearly
    // (hundreds of ms of CPU even on a loaded machine), and the default
    // spin (50 µs once, then asleep) is far below the bound.
    const IDLE: Duration = Duration::from_secs(1);
    const BOUND: Duration = Duration::from_millis(50);
    let (to1, from0) = sync::channel::<u64>(1);
    let (to0, from1) = sync::channel::<u64>(1);
    let ends = Mutex::new((Some((to1, from1)), Some((to0, from0))));
    let idle_cpu = Runtime::new().workers(2).run(|| {
        let me = worker_index().unwrap();
        if me == 0 {
            let (to1, from1) = ends.lock().unwrap().0.take().unwrap();
            // Traffic first: both workers learn that spinning pays.
            for i in 0..2_000 {
                to1.send(i).unwrap();
                assert_eq!(from1.recv_timeout(LONG).unwrap(), i);
            }
            // Then nothing for a second (a timer is this worker's only
            // wake-up), then one more message to end worker 1's wait.
            let cpu = thread_cpu();
            tasklet::sleep(IDLE);
            let idle = thread_cpu() - cpu;
            to1.send(u64::MAX).unwrap();
            idle
        } else {
            let (to0, from0) = ends.lock().unwrap().1.take().unwrap();
            for _ in 0..2_000 {
                let v = from0.recv_timeout(LONG).unwrap();
                to0.send(v).unwrap();
            }
            // Parked on the channel, no timer: only worker 0 can wake it.
            let cpu = thread_cpu();
            assert_eq!(from0.recv_timeout(LONG * 2).unwrap(), u64::MAX);
            thread_cpu() - cpu
        }
    });
    for (w, cpu) in idle_cpu.iter().enumerate() {
        assert!(
            *cpu < BOUND,
            "worker {w} used {cpu:?} of CPU while idle for {IDLE:?} (bound {BOUND:?})"
        );
    }
}

#[test]
fn timer_wakeups_do_not_make_a_hub_spin() {
    // A long spin limit: if timer wake-ups made the hub spin, 100 of them
    // would cost ~100 × 5 ms of CPU; only the cross-thread wake-up (the
    // `unblock` result) may cause one spin.
    const SPIN: Duration = Duration::from_millis(5);
    let cpu = Config::new().idle_spin(SPIN).dispatch(|| {
        assert_eq!(tasklet::unblock(|| 1), 1);
        let cpu = thread_cpu();
        for _ in 0..100 {
            tasklet::sleep(Duration::from_millis(5));
        }
        thread_cpu() - cpu
    });
    assert!(
        cpu < Duration::from_millis(100),
        "100 timer wake-ups cost {cpu:?} of CPU with idle_spin({SPIN:?})"
    );
}

#[test]
fn the_idle_spin_is_configurable_and_zero_disables_it() {
    let rt = Runtime::new().workers(2);
    assert!(format!("{rt:?}").contains("idle_spin: 50µs"), "{rt:?}");
    let rt = Runtime::new().workers(1);
    assert!(format!("{rt:?}").contains("idle_spin: 0ns"), "{rt:?}");
    let rt = Runtime::new().workers(2).idle_spin(Duration::ZERO);
    assert!(format!("{rt:?}").contains("idle_spin: 0ns"), "{rt:?}");
    assert_eq!(tasklet::DEFAULT_IDLE_SPIN, Duration::from_micros(50));
    let v = Runtime::new()
        .workers(2)
        .idle_spin(Duration::ZERO)
        .run(|| spawn_on(1, || 5).join().unwrap());
    assert_eq!(v, [5, 5]);
}

#[test]
fn a_receive_that_spins_before_it_parks_still_times_out_and_sees_a_close() {
    // A receive that finds the channel empty on a hot worker with nothing
    // else to run spins a moment for a value from the other worker before
    // it parks: its deadline and a close must still end it, neither early
    // nor never.
    let (to0, from1) = sync::channel::<u32>(1);
    let (go_tx, go_rx) = sync::channel::<()>(1);
    let ends = Mutex::new((Some((from1, go_tx)), Some((to0, go_rx))));
    Runtime::new().workers(2).run(|| {
        if worker_index() == Some(0) {
            let (from1, go_tx) = ends.lock().unwrap().0.take().unwrap();
            // Cross-worker traffic first: this worker's hub is hot.
            for i in 0..100 {
                assert_eq!(from1.recv_timeout(LONG), Ok(i));
            }
            // Nothing comes: timeouts shorter and longer than the spin.
            for timeout in [Duration::from_micros(1), Duration::from_micros(500)] {
                for _ in 0..20 {
                    let t = Instant::now();
                    assert_eq!(from1.recv_timeout(timeout), Err(RecvTimeoutError::Timeout));
                    assert!(t.elapsed() >= timeout, "ended before its deadline");
                }
            }
            go_tx.send(()).unwrap();
            // Worker 1 drops the only sender: the waiting receive sees it.
            let t = Instant::now();
            assert_eq!(
                from1.recv_timeout(LONG),
                Err(RecvTimeoutError::Disconnected)
            );
            assert!(t.elapsed() < LONG);
        } else {
            let (to0, go_rx) = ends.lock().unwrap().1.take().unwrap();
            for i in 0..100 {
                to0.send(i).unwrap();
            }
            go_rx.recv().unwrap();
            drop(to0);
        }
    });
}

#[test]
fn a_rendezvous_channel_between_workers_hands_every_value_over() {
    // On a rendezvous channel a sender waits for a parked receiver: a
    // receive must not spin for a queued value that never comes.
    let (tx, rx) = sync::channel::<u32>(0);
    let ends = Mutex::new((Some(rx), Some(tx)));
    let out = Runtime::new().workers(2).run(|| {
        if worker_index() == Some(0) {
            let rx = ends.lock().unwrap().0.take().unwrap();
            let mut sum = 0;
            for i in 0..2_000 {
                assert_eq!(rx.recv_timeout(LONG), Ok(i));
                sum += i;
            }
            sum
        } else {
            let tx = ends.lock().unwrap().1.take().unwrap();
            for i in 0..2_000 {
                tx.send_timeout(i, LONG).unwrap();
            }
            0
        }
    });
    assert_eq!(out[0], (0..2_000).sum::<u32>());
}

#[test]
fn a_select_that_spins_for_values_from_the_other_worker_takes_each_once() {
    // A select whose receive arms are empty on a hot worker spins a moment
    // for a value queued from the other worker before it registers and
    // parks: every value must be taken exactly once, from the arm it was
    // sent on, in order; an event set from the other worker (not watched
    // by the spin) must still end it; and its deadline must hold.
    #[derive(Debug, PartialEq)]
    enum Got {
        A(u32),
        B(u32),
        Closed,
        Event,
        Timeout,
    }
    let (a_tx, a_rx) = sync::channel::<u32>(4);
    let (b_tx, b_rx) = sync::channel::<u32>(1);
    let event = std::sync::Arc::new(sync::Event::new());
    let (go_tx, go_rx) = sync::channel::<()>(1);
    // Worker 1 keeps the senders until worker 0 has seen the event: their
    // drop would make the receive arms ready (closed) too.
    let (done_tx, done_rx) = sync::channel::<()>(1);
    let ends = Mutex::new((
        Some((a_rx, b_rx, go_tx, done_tx)),
        Some((a_tx, b_tx, go_rx, done_rx)),
    ));
    let ev = event.clone();
    Runtime::new().workers(2).run(move || {
        if worker_index() == Some(0) {
            let (a_rx, b_rx, go_tx, done_tx) = ends.lock().unwrap().0.take().unwrap();
            let select = |timeout: Duration| {
                sync::Select::new()
                    .recv(&a_rx, |r| r.map_or(Got::Closed, Got::A))
                    .recv(&b_rx, |r| r.map_or(Got::Closed, Got::B))
                    .event(&ev, || Got::Event)
                    .timeout(timeout, || Got::Timeout)
                    .wait()
            };
            let (mut next_a, mut next_b) = (0, 0);
            while next_a < 2_000 || next_b < 2_000 {
                match select(LONG) {
                    Got::A(v) => {
                        assert_eq!(v, next_a, "A out of order or twice");
                        next_a += 1;
                    }
                    Got::B(v) => {
                        assert_eq!(v, next_b, "B out of order or twice");
                        next_b += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            for timeout in [Duration::from_micros(1), Duration::from_micros(500)] {
                for _ in 0..20 {
                    let t = Instant::now();
                    assert_eq!(select(timeout), Got::Timeout);
                    assert!(t.elapsed() >= timeout, "ended before its deadline");
                }
            }
            go_tx.send(()).unwrap();
            let t = Instant::now();
            assert_eq!(select(LONG), Got::Event);
            assert!(t.elapsed() < LONG);
            done_tx.send(()).unwrap();
        } else {
            let (a_tx, b_tx, go_rx, done_rx) = ends.lock().unwrap().1.take().unwrap();
            for i in 0..2_000 {
                a_tx.send(i).unwrap();
                b_tx.send(i).unwrap();
                if i % 7 == 0 {
                    // Let the other worker drain and spin on empty channels.
                    tasklet::sleep(Duration::from_micros(20));
                }
            }
            go_rx.recv().unwrap();
            ev.set();
            done_rx.recv_timeout(LONG).unwrap();
            drop((a_tx, b_tx));
        }
    });
    assert!(event.is_set());
}
