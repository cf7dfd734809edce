//! Semantics of the core runtime, through the facade as a user sees it:
//! switching order, sleeps, join / kill / timeout / panic, destructors,
//! `dispatch` itself, spawn_later / spawn_loop, fairness and `current()`.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Once;
use std::time::{Duration, Instant};

use tasklet::{hub, Builder};

/// A shared, ordered record of what happened.
type Log = Rc<RefCell<Vec<String>>>;

fn new_log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(log: &Log, s: impl Into<String>) {
    log.borrow_mut().push(s.into());
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// Records `"drop <name>"` when dropped (including during unwinding).
struct Guard {
    log: Log,
    name: &'static str,
}

impl Guard {
    fn new(log: &Log, name: &'static str) -> Guard {
        Guard {
            log: log.clone(),
            name,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        push(&self.log, format!("drop {}", self.name));
    }
}

/// The message of a panic payload (`&str` or `String`).
fn payload_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".to_owned()
    }
}

/// Runs `f` and returns its panic message; fails the test if it does not panic.
fn panic_message_of<R>(f: impl FnOnce() -> R) -> String {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic"),
        Err(p) => payload_message(p.as_ref()),
    }
}

/// "Forever" for a test: long enough never to end on its own during a passing
/// test, short enough that a broken kill or timeout fails the test (the code
/// after the sleep runs, or a join returns Ok) instead of hanging it.
const LONG: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- the example

#[test]
fn users_first_program() {
    let total = tasklet::dispatch(|| {
        let a = tasklet::spawn(|| {
            tasklet::sleep(Duration::from_millis(20));
            1
        });
        let b = Builder::new()
            .name("b")
            .stack_size(128 * 1024)
            .spawn(|| 2)
            .unwrap();
        a.join().unwrap() + b.join().unwrap()
    });
    assert_eq!(total, 3);
}

// ---------------------------------------------------------------- switching

/// gevent's introductory example: two greenlets that `sleep(0)` interleave.
#[test]
fn foo_bar_switching_order() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let (lf, lb) = (l.clone(), l.clone());
        let foo = tasklet::spawn(move || {
            push(&lf, "Running in foo");
            tasklet::sleep(Duration::ZERO);
            push(&lf, "Explicit context switch to foo again");
        });
        let bar = tasklet::spawn(move || {
            push(&lb, "Explicit context to bar");
            tasklet::sleep(Duration::ZERO);
            push(&lb, "Implicit context switch back to bar");
        });
        push(&l, "main spawned both");
        for r in tasklet::joinall([foo, bar]) {
            r.unwrap();
        }
        push(&l, "main joined");
    });
    assert_eq!(
        entries(&log),
        [
            "main spawned both",
            "Running in foo",
            "Explicit context to bar",
            "Explicit context switch to foo again",
            "Implicit context switch back to bar",
            "main joined",
        ]
    );
}

/// `spawn` does not switch; `yield_now` runs every other ready tasklet first, FIFO.
#[test]
fn spawn_does_not_switch_and_yield_is_fifo() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let mut hs = Vec::new();
        for i in 0..3 {
            let l = l.clone();
            hs.push(tasklet::spawn(move || {
                push(&l, format!("t{i} a"));
                tasklet::yield_now();
                push(&l, format!("t{i} b"));
            }));
        }
        push(&l, "main after spawn");
        tasklet::yield_now();
        push(&l, "main after yield");
        for h in hs {
            h.join().unwrap();
        }
    });
    assert_eq!(
        entries(&log),
        [
            "main after spawn",
            "t0 a",
            "t1 a",
            "t2 a",
            "main after yield",
            "t0 b",
            "t1 b",
            "t2 b",
        ]
    );
}

// ---------------------------------------------------------------- sleeping

#[test]
fn concurrent_sleeps_overlap() {
    const N: usize = 100;
    const NAP: Duration = Duration::from_millis(50);
    let total = tasklet::dispatch(|| {
        let t0 = Instant::now();
        let hs: Vec<_> = (0..N)
            .map(|_| {
                tasklet::spawn(|| {
                    let t = Instant::now();
                    tasklet::sleep(NAP);
                    t.elapsed()
                })
            })
            .collect();
        for r in tasklet::joinall(hs) {
            let slept = r.unwrap();
            assert!(slept >= NAP, "a tasklet slept only {slept:?}");
        }
        t0.elapsed()
    });
    // Sequential sleeps would take 5 s.
    assert!(total < Duration::from_secs(1), "100 × 50 ms took {total:?}");
}

#[test]
fn sleeps_wake_in_deadline_order() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        // Wide gaps: the order holds even if the thread is descheduled mid-pass.
        let hs: Vec<_> = [120u64, 40, 80, 0]
            .into_iter()
            .map(|ms| {
                let l = l.clone();
                tasklet::spawn(move || {
                    tasklet::sleep(Duration::from_millis(ms));
                    push(&l, format!("{ms}"));
                })
            })
            .collect();
        for r in tasklet::joinall(hs) {
            r.unwrap();
        }
    });
    assert_eq!(entries(&log), ["0", "40", "80", "120"]);
}

#[test]
fn sleep_until_past_deadline_returns() {
    tasklet::dispatch(|| {
        let t = Instant::now();
        tasklet::sleep_until(t - Duration::from_millis(5));
        tasklet::sleep_until(Instant::now());
        assert!(t.elapsed() < Duration::from_millis(500));
    });
}

// ---------------------------------------------------------------- join

#[test]
fn join_returns_value_and_handle_reports_state() {
    tasklet::dispatch(|| {
        let h = Builder::new()
            .name("adder")
            .spawn(|| {
                tasklet::sleep(Duration::from_millis(2));
                40 + 2
            })
            .unwrap();
        assert_eq!(h.name(), Some("adder"));
        assert!(!h.is_finished());
        let quick = tasklet::spawn(|| String::from("done"));
        tasklet::yield_now();
        assert!(quick.is_finished(), "a finished tasklet reports it");
        assert_eq!(quick.join().unwrap(), "done");
        assert_eq!(h.join().unwrap(), 42);
    });
}

#[test]
fn joinall_keeps_order() {
    let v = tasklet::dispatch(|| {
        let hs: Vec<_> = (0..5u64)
            .map(|i| {
                tasklet::spawn(move || {
                    tasklet::sleep(Duration::from_millis(10 - 2 * i));
                    i
                })
            })
            .collect();
        tasklet::joinall(hs)
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    assert_eq!(v, [0, 1, 2, 3, 4]);
}

#[test]
fn dispatch_returns_main_value() {
    let s = tasklet::dispatch(|| String::from("from main"));
    assert_eq!(s, "from main");
    // `dispatch`'s first tasklet may borrow from the caller.
    let mut local = vec![1, 2];
    tasklet::dispatch(|| local.push(3));
    assert_eq!(local, [1, 2, 3]);
    // Several dispatchers one after another on the same thread.
    for i in 0..3 {
        assert_eq!(
            tasklet::dispatch(move || tasklet::spawn(move || i).join().unwrap()),
            i
        );
    }
}

// ---------------------------------------------------------------- kill

#[test]
fn kill_sleeping_tasklet_runs_destructors() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let l2 = l.clone();
        let h = tasklet::spawn(move || {
            let _g = Guard::new(&l2, "sleeper");
            push(&l2, "sleeping");
            tasklet::sleep(LONG);
            push(&l2, "woke up (must not happen)");
        });
        tasklet::yield_now();
        let t = Instant::now();
        h.kill();
        assert!(!h.is_finished(), "kill does not wait");
        let e = h.join().unwrap_err();
        assert!(e.is_killed() && !e.is_panic(), "{e:?}");
        assert!(e.panic_message().is_none());
        assert!(t.elapsed() < Duration::from_secs(1));
        push(&l, "joined");
    });
    assert_eq!(entries(&log), ["sleeping", "drop sleeper", "joined"]);
}

#[test]
fn kill_before_start_never_runs() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let g = Guard::new(&l, "captured");
        let l2 = l.clone();
        let h = tasklet::spawn(move || {
            let _g = g;
            push(&l2, "ran (must not happen)");
        });
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        push(&l, "joined");
    });
    assert_eq!(entries(&log), ["drop captured", "joined"]);
}

#[test]
fn kill_finished_tasklet_is_noop() {
    tasklet::dispatch(|| {
        let h = tasklet::spawn(|| 7);
        tasklet::yield_now();
        assert!(h.is_finished());
        h.kill();
        h.kill();
        assert_eq!(h.join().unwrap(), 7);

        let p = tasklet::spawn(|| {
            panic!("already dead");
        });
        tasklet::yield_now();
        p.kill();
        let e = p.join().unwrap_err();
        assert!(e.is_panic(), "kill after a panic keeps the panic: {e:?}");
    });
}

#[test]
fn kill_twice_and_kill_yielding_tasklet() {
    tasklet::dispatch(|| {
        let spins = Rc::new(Cell::new(0u64));
        let s = spins.clone();
        let h = tasklet::spawn(move || loop {
            s.set(s.get() + 1);
            tasklet::yield_now();
        });
        for _ in 0..3 {
            tasklet::yield_now();
        }
        h.kill();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        let n = spins.get();
        assert!(n >= 3, "spinner ran {n} times");
        tasklet::yield_now();
        assert_eq!(spins.get(), n, "a killed tasklet runs no more");
    });
}

#[test]
fn kill_tasklet_blocked_in_join() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let target = tasklet::spawn(|| {
            tasklet::sleep(Duration::from_millis(20));
            "target done"
        });
        let l2 = l.clone();
        let joiner = tasklet::spawn(move || {
            let _g = Guard::new(&l2, "joiner");
            let r = target.join();
            push(&l2, format!("joiner got {r:?} (must not happen)"));
        });
        tasklet::yield_now();
        joiner.kill();
        assert!(joiner.join().unwrap_err().is_killed());
        push(&l, "joiner killed");
        // The target was detached by the killed joiner and still completes.
        tasklet::sleep(Duration::from_millis(40));
    });
    assert_eq!(entries(&log), ["drop joiner", "joiner killed"]);
}

/// A destructor running while its tasklet unwinds from a kill may block
/// (like gevent's `finally` blocks): it is not unwound a second time.
#[test]
fn destructor_of_killed_tasklet_may_block() {
    struct SleepyDrop(Log, Duration);
    impl Drop for SleepyDrop {
        fn drop(&mut self) {
            let t = Instant::now();
            tasklet::sleep(self.1);
            tasklet::yield_now();
            push(&self.0, format!("drop slept {}", t.elapsed() >= self.1));
        }
    }
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let l2 = l.clone();
        let h = tasklet::spawn(move || {
            let _g = SleepyDrop(l2, Duration::from_millis(30));
            tasklet::sleep(LONG);
        });
        tasklet::yield_now();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
    });
    assert_eq!(entries(&log), ["drop slept true"]);
}

/// At `dispatch` exit a destructor that blocks may do so for a grace period
/// (here: until another dying tasklet releases a lock), but cannot hold up the
/// exit beyond it: then its blocking calls fail at once.
#[test]
fn blocking_in_destructors_at_dispatch_exit_is_bounded() {
    struct SleepyDrop(Log);
    impl Drop for SleepyDrop {
        fn drop(&mut self) {
            let t = Instant::now();
            tasklet::sleep(LONG);
            tasklet::yield_now();
            push(
                &self.0,
                format!(
                    "sleepy drop bounded {}",
                    t.elapsed() < Duration::from_secs(5)
                ),
            );
        }
    }
    struct LockingDrop(Rc<tasklet::sync::Mutex<u32>>, Log);
    impl Drop for LockingDrop {
        fn drop(&mut self) {
            let mut g = self.0.lock();
            *g += 1;
            push(&self.1, format!("locking drop got the lock: {}", *g));
        }
    }
    let log = new_log();
    let l = log.clone();
    let t = Instant::now();
    tasklet::dispatch(move || {
        let l2 = l.clone();
        tasklet::spawn(move || {
            let _g = SleepyDrop(l2);
            tasklet::sleep(LONG);
        });
        // One tasklet holds the lock while it sleeps (and while it unwinds a
        // little); another one's destructor needs it.
        let m = Rc::new(tasklet::sync::Mutex::new(0u32));
        let m2 = m.clone();
        tasklet::spawn(move || {
            let _held = m2.lock();
            tasklet::sleep(LONG);
        });
        let l3 = l.clone();
        tasklet::spawn(move || {
            let _g = LockingDrop(m, l3);
            tasklet::sleep(LONG);
        });
        tasklet::yield_now();
    });
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let mut got = entries(&log);
    got.sort();
    assert_eq!(
        got,
        ["locking drop got the lock: 1", "sleepy drop bounded true"]
    );
}

/// A kill caught with `catch_unwind` is raised again at the next blocking call.
#[test]
fn caught_kill_is_reraised_at_next_blocking_call() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let l2 = l.clone();
        let h = tasklet::spawn(move || {
            let r = panic::catch_unwind(|| tasklet::sleep(LONG));
            push(&l2, format!("caught: {}", r.is_err()));
            // Plain non-blocking code still runs...
            push(&l2, "still running");
            // ...but the next blocking call unwinds again.
            tasklet::sleep(Duration::from_millis(1));
            push(&l2, "slept again (must not happen)");
        });
        tasklet::yield_now();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
    });
    assert_eq!(entries(&log), ["caught: true", "still running"]);
}

// ---------------------------------------------------------------- timeout

#[test]
fn timeout_interrupts_sleep() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let t = Instant::now();
        let r = tasklet::timeout(Duration::from_millis(10), || {
            let _g = Guard::new(&l, "scope");
            tasklet::sleep(LONG);
            push(&l, "slept (must not happen)");
        });
        let e = r.unwrap_err();
        assert!(e.to_string().contains("elapsed"), "{e}");
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(10), "fired early: {el:?}");
        assert!(el < Duration::from_secs(1), "fired late: {el:?}");
        push(&l, "after");
        // The tasklet is usable afterwards: no stray interrupt is left.
        tasklet::sleep(Duration::from_millis(2));
        tasklet::yield_now();
        push(&l, "slept after");
    });
    assert_eq!(entries(&log), ["drop scope", "after", "slept after"]);
}

#[test]
fn timeout_interrupts_join_and_yield_loop() {
    tasklet::dispatch(|| {
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        let slow = tasklet::spawn(move || {
            tasklet::sleep(Duration::from_millis(30));
            d.set(true);
        });
        let r = tasklet::timeout(Duration::from_millis(5), move || slow.join());
        assert!(r.is_err(), "join was not interrupted");
        assert!(!done.get());
        // The joined tasklet is not affected (now detached) and finishes.
        let t = Instant::now();
        while !done.get() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "slow tasklet never finished"
            );
            tasklet::sleep(Duration::from_millis(5));
        }

        let spins = Cell::new(0u64);
        let t = Instant::now();
        let r = tasklet::timeout(Duration::from_millis(10), || loop {
            spins.set(spins.get() + 1);
            tasklet::yield_now();
        });
        assert!(r.is_err());
        assert!(spins.get() > 0);
        assert!(t.elapsed() < Duration::from_secs(1));
    });
}

#[test]
fn timeout_in_time_returns_ok_and_is_disarmed() {
    tasklet::dispatch(|| {
        let r = tasklet::timeout(Duration::from_millis(200), || {
            tasklet::sleep(Duration::from_millis(1));
            "fast"
        });
        assert_eq!(r, Ok("fast"));
        // Sleep past the old deadline: nothing interrupts us.
        tasklet::sleep(Duration::from_millis(250));
        let r = tasklet::timeout(Duration::from_secs(10), || 5);
        assert_eq!(r, Ok(5));
        let r = tasklet::timeout_at(Instant::now() + Duration::from_secs(10), || 6);
        assert_eq!(r, Ok(6));
        // A huge duration means "no timeout".
        assert_eq!(tasklet::timeout(Duration::MAX, || 7), Ok(7));
    });
}

#[test]
fn nested_timeout_inner_fires() {
    tasklet::dispatch(|| {
        let r = tasklet::timeout(Duration::from_secs(10), || {
            let inner = tasklet::timeout(Duration::from_millis(5), || tasklet::sleep(LONG));
            assert!(inner.is_err(), "inner timeout did not fire");
            // The outer scope carries on normally.
            tasklet::sleep(Duration::from_millis(1));
            "outer finished"
        });
        assert_eq!(r, Ok("outer finished"));
    });
}

#[test]
fn nested_timeout_outer_fires_while_inner_pending() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let t = Instant::now();
        let r = tasklet::timeout(Duration::from_millis(10), || {
            let inner = tasklet::timeout(Duration::from_secs(10), || {
                let _g = Guard::new(&l, "inner scope");
                tasklet::sleep(LONG)
            });
            push(&l, format!("inner returned {inner:?} (must not happen)"));
        });
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        // The inner timer (10 s) was disarmed: nothing fires later.
        tasklet::sleep(Duration::from_millis(5));
        push(&l, "after");
    });
    assert_eq!(entries(&log), ["drop inner scope", "after"]);
}

#[test]
fn nested_timeout_outer_wins_when_both_expired() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let r = tasklet::timeout(Duration::from_millis(20), || {
            let inner = tasklet::timeout(Duration::from_millis(10), || {
                // Both deadlines pass while this tasklet does not block
                // (a busy wait: with the `hook` feature std::thread::sleep yields).
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(40) {
                    std::hint::spin_loop();
                }
                tasklet::yield_now();
                push(&l, "inner body survived (must not happen)");
            });
            push(&l, format!("inner returned {inner:?} (must not happen)"));
        });
        assert!(r.is_err());
        push(&l, "outer expired");
    });
    assert_eq!(entries(&log), ["outer expired"]);
}

#[test]
fn caught_timeout_is_reraised_and_still_elapses() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let r = tasklet::timeout(Duration::from_millis(5), || {
            let caught = panic::catch_unwind(|| tasklet::sleep(LONG));
            push(&l, format!("caught: {}", caught.is_err()));
            tasklet::sleep(LONG);
            push(&l, "must not happen");
        });
        assert!(r.is_err());
        // The interrupt belonged to the scope: we are free again.
        tasklet::sleep(Duration::from_millis(1));
        push(&l, "free");
    });
    assert_eq!(entries(&log), ["caught: true", "free"]);
}

#[test]
fn elapsed_is_a_timed_out_io_error() {
    tasklet::dispatch(|| {
        let e = tasklet::timeout(Duration::from_millis(1), || tasklet::sleep(LONG)).unwrap_err();
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    });
}

#[test]
fn timeout_does_not_leak_into_other_tasklets() {
    tasklet::dispatch(|| {
        let bystander = tasklet::spawn(|| {
            tasklet::sleep(Duration::from_millis(30));
            "bystander ok"
        });
        let r = tasklet::timeout(Duration::from_millis(5), || tasklet::sleep(LONG));
        assert!(r.is_err());
        assert_eq!(bystander.join().unwrap(), "bystander ok");
    });
}

// ---------------------------------------------------------------- panics

#[test]
fn join_returns_panic_payload() {
    tasklet::dispatch(|| {
        let h = tasklet::spawn(|| -> u32 { panic!("boom {}", std::hint::black_box(7)) });
        let e = h.join().unwrap_err();
        assert!(e.is_panic() && !e.is_killed());
        assert_eq!(e.panic_message(), Some("boom 7"));
        assert!(e.to_string().contains("boom 7"), "{e}");
        let payload = e.into_panic();
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some("boom 7")
        );

        let h = tasklet::spawn(|| {
            panic::panic_any(42u8);
        });
        let e = h.join().unwrap_err();
        assert!(e.is_panic());
        assert_eq!(e.panic_message(), None);
        assert_eq!(e.try_into_panic().unwrap().downcast_ref::<u8>(), Some(&42));

        let h = tasklet::spawn(|| tasklet::sleep(LONG));
        h.kill();
        let e = h.join().unwrap_err();
        assert!(e.try_into_panic().unwrap_err().is_killed());
    });
}

thread_local! {
    static CAPTURED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Captures log records per thread (each test runs on its own thread).
struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.level(), record.args());
        CAPTURED.with(|c| c.borrow_mut().push(line));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&CaptureLogger).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
    CAPTURED.with(|c| c.borrow_mut().clear());
}

#[test]
fn detached_panic_is_logged_and_disturbs_nobody() {
    capture_logs();
    let survivors = tasklet::dispatch(|| {
        let steady = tasklet::spawn(|| {
            let mut n = 0;
            for _ in 0..5 {
                tasklet::sleep(Duration::from_millis(2));
                n += 1;
            }
            n
        });
        drop(
            Builder::new()
                .name("doomed")
                .spawn(|| {
                    tasklet::sleep(Duration::from_millis(3));
                    panic!("kaboom");
                })
                .unwrap(),
        );
        // Joined later but panicking first: its handle is dropped unjoined.
        let unjoined = tasklet::spawn(|| {
            panic!("nobody looks");
        });
        tasklet::sleep(Duration::from_millis(10));
        drop(unjoined);
        steady.join().unwrap()
    });
    assert_eq!(survivors, 5);
    let logs = CAPTURED.with(|c| c.borrow().clone());
    assert!(
        logs.iter()
            .any(|l| l.starts_with("ERROR") && l.contains("doomed") && l.contains("kaboom")),
        "detached panic not logged: {logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.starts_with("ERROR") && l.contains("nobody looks")),
        "panic of a dropped unjoined handle not logged: {logs:?}"
    );
}

/// A value whose destructor panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("drop of the result blew up");
    }
}

#[test]
fn panicking_drop_of_a_detached_result_disturbs_nobody() {
    capture_logs();
    let n = tasklet::dispatch(|| {
        // Detached before it finishes: the runtime drops the result itself.
        drop(
            Builder::new()
                .name("bad-result")
                .spawn(|| {
                    tasklet::sleep(Duration::from_millis(2));
                    PanicsOnDrop
                })
                .unwrap(),
        );
        let steady = tasklet::spawn(|| {
            tasklet::sleep(Duration::from_millis(10));
            7
        });
        steady.join().unwrap()
    });
    assert_eq!(n, 7);
    let logs = CAPTURED.with(|c| c.borrow().clone());
    assert!(
        logs.iter().any(|l| l.starts_with("ERROR")
            && l.contains("bad-result")
            && l.contains("drop of the result blew up")),
        "panicking result destructor not logged: {logs:?}"
    );
}

#[test]
fn panic_payload_of_a_detached_results_destructor_is_dropped_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    /// A panic payload that counts its drops.
    struct Payload;
    impl Drop for Payload {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
    struct PanicsWithPayload;
    impl Drop for PanicsWithPayload {
        fn drop(&mut self) {
            panic::panic_any(Payload);
        }
    }
    let n = tasklet::dispatch(|| {
        drop(tasklet::spawn(|| {
            tasklet::yield_now();
            PanicsWithPayload
        }));
        tasklet::spawn(|| {
            tasklet::sleep(Duration::from_millis(5));
            7
        })
        .join()
        .unwrap()
    });
    assert_eq!(n, 7);
    // Neither leaked nor dropped twice.
    assert_eq!(DROPPED.load(Ordering::SeqCst), 1);
}

#[test]
fn panic_in_main_is_reraised_after_cleanup() {
    let log = new_log();
    let l = log.clone();
    let msg = panic_message_of(move || {
        tasklet::dispatch(move || {
            let l2 = l.clone();
            let _child = tasklet::spawn(move || {
                let _g = Guard::new(&l2, "child");
                tasklet::sleep(LONG);
            });
            tasklet::yield_now();
            panic!("main failed: {}", 3);
        })
    });
    assert_eq!(msg, "main failed: 3");
    assert_eq!(entries(&log), ["drop child"]);
}

// ---------------------------------------------------------------- dispatch

#[test]
fn tasklets_alive_at_exit_are_killed_with_destructors() {
    let log = new_log();
    let l = log.clone();
    let v = tasklet::dispatch(move || {
        // Sleeping.
        let l1 = l.clone();
        let sleeper = tasklet::spawn(move || {
            let _g = Guard::new(&l1, "sleeper");
            tasklet::sleep(LONG);
            push(&l1, "sleeper woke (must not happen)");
        });
        // Blocked in join on the sleeper.
        let l2 = l.clone();
        let joiner = tasklet::spawn(move || {
            let _g = Guard::new(&l2, "joiner");
            let _ = sleeper.join();
            push(&l2, "joiner returned (must not happen)");
        });
        // Yielding forever.
        let l3 = l.clone();
        let spinner = tasklet::spawn(move || {
            let _g = Guard::new(&l3, "spinner");
            loop {
                tasklet::yield_now();
            }
        });
        // Parked with nothing that can wake it (main still finishes, so no deadlock).
        let l5 = l.clone();
        let parked = tasklet::spawn(move || {
            let _g = Guard::new(&l5, "parked");
            loop {
                let _ = hub::park(None);
            }
        });
        tasklet::yield_now();
        // Never started: its closure (and the guard it owns) is still dropped.
        let g = Guard::new(&l, "never started");
        let l4 = l.clone();
        let unstarted = tasklet::spawn(move || {
            let _g = g;
            push(&l4, "unstarted ran (must not happen)");
        });
        // Handles dropped or still held when main returns: all are killed at exit.
        drop((joiner, spinner, parked));
        let _held = unstarted;
        "main value"
    });
    assert_eq!(v, "main value");
    let mut got = entries(&log);
    got.sort();
    assert_eq!(
        got,
        [
            "drop joiner",
            "drop never started",
            "drop parked",
            "drop sleeper",
            "drop spinner"
        ]
    );
}

#[test]
fn tasklet_spawned_during_shutdown_is_killed() {
    struct SpawnOnDrop(Log);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let l = self.0.clone();
            let g = Guard::new(&l, "spawned in drop");
            let l2 = l.clone();
            drop(tasklet::spawn(move || {
                let _g = g;
                push(&l2, "late tasklet ran (must not happen)");
            }));
        }
    }
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        drop(tasklet::spawn(move || {
            let _s = SpawnOnDrop(l);
            tasklet::sleep(LONG);
        }));
        tasklet::yield_now();
    });
    assert_eq!(entries(&log), ["drop spawned in drop"]);
}

#[test]
fn nested_dispatch_panics_naming_dispatch() {
    let outer_ok = tasklet::dispatch(|| {
        let msg = panic_message_of(|| tasklet::dispatch(|| 1));
        assert!(msg.contains("dispatch"), "message: {msg}");
        assert!(msg.contains("nested"), "message: {msg}");
        // The outer dispatcher is intact.
        tasklet::spawn(|| 2).join().unwrap()
    });
    assert_eq!(outer_ok, 2);
}

#[test]
fn tasklet_apis_outside_dispatch_panic_naming_dispatch() {
    assert!(!hub::in_dispatcher());
    let msgs = [
        panic_message_of(|| tasklet::sleep(Duration::from_millis(1))),
        panic_message_of(|| tasklet::spawn(|| ())),
        panic_message_of(tasklet::yield_now),
        panic_message_of(tasklet::current),
        panic_message_of(|| tasklet::timeout(Duration::from_millis(1), || ())),
        panic_message_of(|| hub::park(None)),
    ];
    for m in msgs {
        assert!(
            m.contains("dispatch"),
            "message does not name dispatch: {m}"
        );
    }
    // The thread is still usable for a dispatcher afterwards.
    assert!(tasklet::dispatch(hub::in_dispatcher));
}

/// Runs `f` on a fresh thread and returns its panic message, failing the
/// test (instead of hanging it) if `f` has not finished within 10 s.
fn panic_message_on_thread(f: impl FnOnce() + Send + 'static) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(panic_message_of(f));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("no deadlock detected within 10 s: the dispatcher hangs")
}

#[test]
fn deadlock_is_detected() {
    let msg = panic_message_on_thread(|| {
        tasklet::dispatch(|| {
            let stuck = tasklet::spawn(|| loop {
                let _ = hub::park(None);
            });
            stuck.join().unwrap();
        })
    });
    assert!(msg.contains("deadlock"), "message: {msg}");

    // Main parking alone is a deadlock too.
    let msg = panic_message_on_thread(|| {
        tasklet::dispatch(|| {
            let _ = hub::park(None);
        })
    });
    assert!(msg.contains("deadlock"), "message: {msg}");
}

#[test]
fn pending_timer_is_not_a_deadlock() {
    let v = tasklet::dispatch(|| {
        let h = tasklet::spawn(|| {
            tasklet::sleep(Duration::from_millis(10));
            9
        });
        h.join().unwrap()
    });
    assert_eq!(v, 9);
}

// ---------------------------------------------------------------- spawn_later / spawn_loop

#[test]
fn spawn_later_runs_in_delay_order() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let t0 = Instant::now();
        let mk = |ms: u64| {
            let l = l.clone();
            tasklet::spawn_later(Duration::from_millis(ms), move || {
                push(&l, format!("later {ms}"));
                t0.elapsed()
            })
        };
        let c = mk(90);
        let a = mk(30);
        let b = mk(60);
        let l2 = l.clone();
        let now = tasklet::spawn(move || push(&l2, "now"));
        let cancelled = mk(45);
        cancelled.kill();
        assert!(cancelled.join().unwrap_err().is_killed());
        now.join().unwrap();
        for (h, ms) in [(a, 30), (b, 60), (c, 90)] {
            let at = h.join().unwrap();
            assert!(
                at >= Duration::from_millis(ms),
                "ran after {at:?}, before {ms} ms"
            );
        }
    });
    assert_eq!(entries(&log), ["now", "later 30", "later 60", "later 90"]);
}

#[test]
fn spawn_loop_until_break() {
    tasklet::dispatch(|| {
        let count = Rc::new(Cell::new(0));
        let c = count.clone();
        let h = tasklet::spawn_loop(move || {
            c.set(c.get() + 1);
            if c.get() == 5 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        h.join().unwrap();
        assert_eq!(count.get(), 5);
    });
}

#[test]
fn spawn_loop_until_killed() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        // A busy loop body (never blocks) and a blocking one.
        let busy = Rc::new(Cell::new(0u64));
        let b = busy.clone();
        let busy_h = tasklet::spawn_loop(move || {
            b.set(b.get() + 1);
            ControlFlow::Continue(())
        });
        let ticks = Rc::new(Cell::new(0u64));
        let t = ticks.clone();
        let g = Guard::new(&l, "loop state");
        let tick_h = tasklet::spawn_loop(move || {
            let _keep = &g;
            tasklet::sleep(Duration::from_millis(1));
            t.set(t.get() + 1);
            ControlFlow::Continue(())
        });
        // The busy loop yields between iterations, so main gets to run.
        let t0 = Instant::now();
        while ticks.get() < 3 {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "sleeping loop starved"
            );
            tasklet::sleep(Duration::from_millis(1));
        }
        busy_h.kill();
        tick_h.kill();
        assert!(busy_h.join().unwrap_err().is_killed());
        assert!(tick_h.join().unwrap_err().is_killed());
        assert!(busy.get() > 0);
        let (b_at_kill, t_at_kill) = (busy.get(), ticks.get());
        tasklet::sleep(Duration::from_millis(5));
        assert_eq!((busy.get(), ticks.get()), (b_at_kill, t_at_kill));
    });
    assert_eq!(entries(&log), ["drop loop state"]);
}

// ---------------------------------------------------------------- fairness

#[test]
fn yield_loop_does_not_starve_sleeper() {
    tasklet::dispatch(|| {
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                tasklet::spawn(|| loop {
                    tasklet::yield_now();
                })
            })
            .collect();
        let sleeper = tasklet::spawn(|| {
            let t = Instant::now();
            tasklet::sleep(Duration::from_millis(10));
            t.elapsed()
        });
        let t = Instant::now();
        tasklet::sleep(Duration::from_millis(10));
        let main_slept = t.elapsed();
        let child_slept = sleeper.join().unwrap();
        for s in &spinners {
            s.kill();
        }
        for s in spinners {
            assert!(s.join().unwrap_err().is_killed());
        }
        for slept in [main_slept, child_slept] {
            assert!(slept >= Duration::from_millis(10), "{slept:?}");
            assert!(
                slept < Duration::from_millis(500),
                "sleeper starved: {slept:?}"
            );
        }
    });
}

// ---------------------------------------------------------------- identity, stacks

#[test]
fn current_id_and_name() {
    tasklet::dispatch(|| {
        let me = tasklet::current();
        assert_eq!(me.name(), Some("main"));
        let named = Builder::new()
            .name("worker-1")
            .spawn(|| {
                let c = tasklet::current();
                (c.id(), c.name().map(str::to_owned))
            })
            .unwrap();
        let anon = tasklet::spawn(|| {
            let c = tasklet::current();
            (c.id(), c.name().map(str::to_owned))
        });
        let (named_id, anon_id) = (named.id(), anon.id());
        assert_eq!(anon.name(), None);
        let (id, name) = named.join().unwrap();
        assert_eq!((id, name.as_deref()), (named_id, Some("worker-1")));
        let (id, name) = anon.join().unwrap();
        assert_eq!((id, name), (anon_id, None));
        assert_ne!(named_id, anon_id);
        assert_ne!(me.id(), named_id);
        assert_eq!(tasklet::current().id(), me.id());
        assert!(named_id.as_u64() > 0);
        assert_eq!(format!("{named_id}"), named_id.as_u64().to_string());
    });
}

/// Recurses with KiB-sized frames until `target` bytes of stack below `top`
/// are in use (whatever the frame size of this build), and returns the depth
/// in bytes it reached.
#[inline(never)]
fn deep_from(top: usize, target: usize) -> usize {
    let frame = std::hint::black_box([7u8; 1024]);
    let used = top.abs_diff(frame.as_ptr() as usize);
    if used >= target {
        return used;
    }
    let below = deep_from(top, target);
    std::hint::black_box(below.max(frame[used % 1024] as usize))
}

/// Uses at least `target` bytes of the calling tasklet's stack.
fn use_stack(target: usize) -> usize {
    let marker = 0u8;
    deep_from(std::hint::black_box(&marker) as *const u8 as usize, target)
}

const MIB: usize = 1024 * 1024;

#[test]
fn builder_stack_size_is_honoured() {
    tasklet::dispatch(|| {
        // 1.25 MiB of live frames: far more than the 256 KiB default.
        let h = Builder::new()
            .name("deep")
            .stack_size(2 * MIB)
            .spawn(|| use_stack(MIB + MIB / 4))
            .unwrap();
        assert!(h.join().unwrap() >= MIB + MIB / 4);
        let small = Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| use_stack(16 * 1024))
            .unwrap();
        assert!(small.join().unwrap() >= 16 * 1024);
    });
    // The global default is configurable too.
    let v = tasklet::Config::new()
        .stack_size(2 * MIB)
        .dispatch(|| tasklet::spawn(|| use_stack(MIB + MIB / 4)).join().unwrap());
    assert!(v >= MIB + MIB / 4);
}

#[test]
fn huge_stack_request_is_an_error_not_a_panic() {
    tasklet::dispatch(|| {
        let r = Builder::new().stack_size(usize::MAX / 2).spawn(|| ());
        assert!(r.is_err(), "an impossible stack must be an io::Error");
        // The dispatcher still works.
        assert_eq!(tasklet::spawn(|| 1).join().unwrap(), 1);
    });
}

#[test]
fn impossible_config_stack_size_is_a_clear_panic_naming_the_setting() {
    let msg = panic_message_of(|| {
        tasklet::Config::new()
            .stack_size(usize::MAX)
            .dispatch(|| ())
    });
    assert!(msg.contains("Config::stack_size"), "unclear message: {msg}");
    // A tiny one is rounded up, not refused.
    let v = tasklet::Config::new()
        .stack_size(0)
        .dispatch(|| tasklet::spawn(|| 5).join().unwrap());
    assert_eq!(v, 5);
}

// ---------------------------------------------------------------- interplay

#[test]
fn panic_inside_timeout_scope_propagates() {
    tasklet::dispatch(|| {
        let h = tasklet::spawn(|| {
            tasklet::timeout(Duration::from_secs(10), || -> u32 {
                tasklet::yield_now();
                panic!("inside scope {}", std::hint::black_box(1))
            })
        });
        let e = h.join().unwrap_err();
        assert_eq!(e.panic_message(), Some("inside scope 1"));
        // The scope's timer was disarmed: main is not interrupted later.
        tasklet::sleep(Duration::from_millis(2));
    });
}

#[test]
fn kill_wins_over_pending_timeout() {
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let l2 = l.clone();
        let h = tasklet::spawn(move || {
            let r = tasklet::timeout(Duration::from_secs(10), || tasklet::sleep(LONG));
            push(&l2, format!("timeout returned {r:?} (must not happen)"));
        });
        tasklet::yield_now();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());

        // Kill after the scope's deadline passed but before the tasklet ran.
        let l3 = l.clone();
        let h = tasklet::spawn(move || {
            let r = tasklet::timeout(Duration::from_millis(1), || {
                std::thread::sleep(Duration::from_millis(5));
                tasklet::yield_now();
            });
            push(&l3, format!("timeout returned {r:?} (must not happen)"));
        });
        tasklet::yield_now();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
    });
    assert!(entries(&log).is_empty(), "{:?}", entries(&log));
}

/// A destructor running during a kill may `join` another tasklet.
#[test]
fn join_in_destructor_of_killed_tasklet_waits() {
    struct JoinOnDrop(Option<tasklet::JoinHandle<u32>>, Log);
    impl Drop for JoinOnDrop {
        fn drop(&mut self) {
            let h = self.0.take().unwrap();
            let r = h.join();
            push(&self.1, format!("join in drop: {:?}", r.ok()));
        }
    }
    let log = new_log();
    let l = log.clone();
    tasklet::dispatch(move || {
        let l2 = l.clone();
        let h = tasklet::spawn(move || {
            let other = tasklet::spawn(|| {
                tasklet::sleep(Duration::from_millis(20));
                1
            });
            let _g = JoinOnDrop(Some(other), l2);
            tasklet::sleep(LONG);
        });
        tasklet::yield_now();
        let t = Instant::now();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        assert!(t.elapsed() < Duration::from_secs(5));
    });
    assert_eq!(entries(&log), ["join in drop: Some(1)"]);
}

#[test]
fn dispatchers_on_several_threads_are_independent() {
    let threads: Vec<_> = (0..4u64)
        .map(|k| {
            std::thread::spawn(move || {
                tasklet::dispatch(move || {
                    let hs: Vec<_> = (0..1000u64)
                        .map(|i| {
                            tasklet::spawn(move || {
                                tasklet::sleep(Duration::from_millis(i % 5));
                                tasklet::yield_now();
                                k * 1_000_000 + i
                            })
                        })
                        .collect();
                    tasklet::joinall(hs)
                        .into_iter()
                        .map(Result::unwrap)
                        .sum::<u64>()
                })
            })
        })
        .collect();
    for (k, t) in threads.into_iter().enumerate() {
        let k = k as u64;
        assert_eq!(t.join().unwrap(), k * 1_000_000 * 1000 + 999 * 1000 / 2);
    }
}

#[test]
fn tasklet_ids_are_unique_across_threads() {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                tasklet::dispatch(|| {
                    let mut ids = vec![tasklet::current().id().as_u64()];
                    // More than one id block per thread.
                    for _ in 0..3000 {
                        let h = tasklet::spawn(|| tasklet::current().id());
                        let id = h.id();
                        assert_eq!(h.join().unwrap(), id);
                        ids.push(id.as_u64());
                    }
                    ids
                })
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a tasklet id was handed out twice");
    assert!(all.iter().all(|&id| id > 0));
}
