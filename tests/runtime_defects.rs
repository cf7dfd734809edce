//! Regression tests for the runtime defects of issue 8 (1, 4, 5 and 8).
//!
//! Each scenario runs in a child process (this test binary re-run with
//! `--exact NAME` and [`CHILD_ENV`] set): before the fixes they aborted the
//! process, spun forever or overflowed a stack, which must fail one test,
//! not take the whole test binary down. The parent asserts that the child
//! exited normally, in time, after printing its [`DONE`] line.

use std::cell::Cell;
use std::io::Read;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tasklet::sync::{AsyncResult, Mutex};

/// Set in the child to the name of the test it runs.
const CHILD_ENV: &str = "TASKLET_TEST_DEFECT_CHILD";
/// Printed by a child whose scenario ran to its end.
const DONE: &str = "DEFECT-SCENARIO-DONE";
/// How long a child may take (generous: the machine may be loaded).
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Runs `scenario` in a child process (this binary, test `name`) with extra
/// environment variables; asserts it exits successfully after it printed
/// [`DONE`]. In the child itself, runs the scenario and prints [`DONE`].
fn in_child(name: &str, env: &[(&str, &str)], scenario: fn()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        scenario();
        println!("{DONE}");
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env_remove("TASKLET_STACK_SIZE")
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child test process");
    let pid = child.id();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let e = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut o = String::new();
        let _ = out.read_to_string(&mut o);
        let e = e.join().unwrap_or_default();
        let status = child.wait().expect("wait for child");
        let _ = tx.send((status, o, e));
    });
    let (status, stdout, stderr) = match rx.recv_timeout(CHILD_LIMIT) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("child {name} did not finish within {CHILD_LIMIT:?} (hang or spin)");
        }
    };
    assert!(
        status.success() && stdout.contains(DONE),
        "child {name} failed: {status:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

/// Sleeps in its destructor: blocks while its tasklet unwinds.
struct SlowDrop(Duration);

impl Drop for SlowDrop {
    fn drop(&mut self) {
        tasklet::sleep(self.0);
    }
}

/// Asserts that a `timeout` in the calling tasklet fires on time.
fn assert_timeout_fires() {
    let t = Instant::now();
    let r = tasklet::timeout(Duration::from_millis(50), || {
        tasklet::sleep(Duration::from_secs(3))
    });
    let took = t.elapsed();
    assert!(
        r.is_err() && took < Duration::from_millis(1500),
        "timeout(50 ms, sleep(3 s)) returned {:?} after {took:?}",
        r.map_err(|_| ())
    );
}

/// Asserts that killing a fresh, unrelated tasklet works.
fn assert_kill_works() {
    let h = tasklet::spawn(|| {
        tasklet::sleep(Duration::from_secs(3));
        "survived"
    });
    tasklet::yield_now();
    h.kill();
    let t = Instant::now();
    let r = h.join();
    assert!(
        r.as_ref().is_err_and(|e| e.is_killed()) && t.elapsed() < Duration::from_millis(1500),
        "kill of an unrelated tasklet: {:?} after {:?}",
        r.map_err(|e| e.to_string()),
        t.elapsed()
    );
}

// ---------------------------------------------------------------- defect 1

/// B panics and sleeps in a destructor; A's `unblock` closure panics, so
/// `unblock` re-raises with `resume_unwind`, and A sleeps in a destructor
/// too; both are killed at `dispatch` exit. Raising either kill in those
/// destructors aborts ("panic in a destructor during cleanup").
#[test]
fn unblock_reraise_while_a_panicking_tasklet_blocks_in_a_destructor() {
    in_child(
        "unblock_reraise_while_a_panicking_tasklet_blocks_in_a_destructor",
        &[],
        || {
            tasklet::dispatch(|| {
                let b = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(300));
                    panic!("b fails");
                });
                tasklet::yield_now(); // b parks in its destructor
                let a = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(300));
                    tasklet::unblock(|| panic!("a's closure fails"));
                });
                // a waits for the offload thread, then parks in its destructor.
                tasklet::sleep(Duration::from_millis(50));
                assert_timeout_fires();
                assert_kill_works();
                drop((a, b)); // killed at exit, both parked in destructors
            });
        },
    );
}

/// The same with a kill instead of B's panic.
#[test]
fn unblock_reraise_while_a_killed_tasklet_blocks_in_a_destructor() {
    in_child(
        "unblock_reraise_while_a_killed_tasklet_blocks_in_a_destructor",
        &[],
        || {
            tasklet::dispatch(|| {
                let b = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(300));
                    tasklet::sleep(Duration::from_secs(3600));
                });
                tasklet::yield_now();
                b.kill();
                tasklet::yield_now(); // b parks in its destructor
                let a = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(300));
                    tasklet::unblock(|| panic!("a's closure fails"));
                });
                tasklet::sleep(Duration::from_millis(50));
                a.kill();
                assert_eq!(
                    a.join().unwrap_err().panic_message(),
                    Some("a's closure fails")
                );
                assert!(b.join().unwrap_err().is_killed());
            });
        },
    );
}

/// The documented `resume_unwind(e.into_panic())` pattern (a user
/// `resume_unwind`, invisible to the runtime) in A, parked in a destructor
/// while B is too, then a kill.
#[test]
fn user_resume_unwind_then_kill_while_another_tasklet_unwinds() {
    in_child(
        "user_resume_unwind_then_kill_while_another_tasklet_unwinds",
        &[],
        || {
            tasklet::dispatch(|| {
                let b = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(400));
                    panic!("b fails");
                });
                tasklet::yield_now(); // b parks in its destructor
                let a = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(300));
                    let e = tasklet::spawn(|| panic!("inner fails")).join().unwrap_err();
                    panic::resume_unwind(e.into_panic());
                });
                tasklet::sleep(Duration::from_millis(20)); // a parks in its destructor
                a.kill();
                assert_timeout_fires();
                assert_eq!(a.join().unwrap_err().panic_message(), Some("inner fails"));
                assert_eq!(b.join().unwrap_err().panic_message(), Some("b fails"));
            });
        },
    );
}

/// Panics after the program replaced the panic hook (the runtime's hook no
/// longer sees them), two tasklets parked in destructors, both killed.
#[test]
fn panics_behind_the_programs_own_hook_then_kills() {
    in_child(
        "panics_behind_the_programs_own_hook_then_kills",
        &[],
        || {
            tasklet::dispatch(|| {
                // Replaces the runtime's hook, installed by `dispatch`.
                panic::set_hook(Box::new(|_| {}));
                let b = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(300));
                    panic!("b fails");
                });
                tasklet::yield_now();
                let a = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(300));
                    panic!("a fails");
                });
                tasklet::yield_now();
                a.kill();
                b.kill();
                assert_timeout_fires();
                assert_kill_works();
                assert_eq!(a.join().unwrap_err().panic_message(), Some("a fails"));
                assert_eq!(b.join().unwrap_err().panic_message(), Some("b fails"));
            });
            let _ = panic::take_hook();
        },
    );
}

/// B parks mid-unwind; A starts unwinding with a user `resume_unwind` and
/// parks in a destructor; B finishes. An unrelated `timeout` must still
/// fire (it was taken for an unwinding tasklet's and ran to its end).
#[test]
fn unrelated_timeout_fires_after_the_first_unwinding_tasklet_finished() {
    in_child(
        "unrelated_timeout_fires_after_the_first_unwinding_tasklet_finished",
        &[],
        || {
            tasklet::dispatch(|| {
                let b = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(100));
                    panic!("b fails");
                });
                tasklet::yield_now(); // b parks in its destructor
                let a = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(2500));
                    panic::resume_unwind(Box::new("a fails"));
                });
                tasklet::yield_now(); // a parks in its destructor
                assert!(b.join().is_err()); // b is done; a still unwinds
                assert_timeout_fires();
                assert_kill_works();
                assert_eq!(a.join().unwrap_err().panic_message(), Some("a fails"));
            });
        },
    );
}

/// A tasklet that panicked and caught its panic is no longer unwinding:
/// its timeouts work while another tasklet is parked mid-unwind.
#[test]
fn timeout_after_a_caught_panic_while_another_tasklet_unwinds() {
    in_child(
        "timeout_after_a_caught_panic_while_another_tasklet_unwinds",
        &[],
        || {
            tasklet::dispatch(|| {
                let b = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(2500));
                    panic!("b fails");
                });
                tasklet::yield_now(); // b parks in its destructor
                assert!(panic::catch_unwind(|| panic!("caught")).is_err());
                tasklet::yield_now();
                assert_timeout_fires();
                assert_kill_works();
                assert!(b.join().is_err());
            });
        },
    );
}

/// Where the state is known the interrupt is still raised (unwinding the
/// scope), not merely failing its blocking call: a tasklet that parked
/// before another started unwinding, and one whose kill unwinds it while it
/// blocks in a destructor, keep exact semantics.
#[test]
fn known_states_keep_exact_interrupts_while_another_tasklet_unwinds() {
    in_child(
        "known_states_keep_exact_interrupts_while_another_tasklet_unwinds",
        &[],
        || {
            tasklet::dispatch(|| {
                let ran_on = Rc::new(Cell::new(false));
                let r = ran_on.clone();
                let c = tasklet::spawn(move || {
                    tasklet::timeout(Duration::from_millis(100), || {
                        tasklet::sleep(Duration::from_secs(3));
                        r.set(true); // only if the timeout failed the sleep
                    })
                });
                struct Timed(Rc<Cell<Duration>>);
                impl Drop for Timed {
                    fn drop(&mut self) {
                        let t = Instant::now();
                        tasklet::sleep(Duration::from_millis(200));
                        self.0.set(t.elapsed());
                    }
                }
                let slept = Rc::new(Cell::new(Duration::ZERO));
                let s = slept.clone();
                let k = tasklet::spawn(move || {
                    let _g = Timed(s);
                    tasklet::sleep(Duration::from_secs(3600));
                });
                tasklet::yield_now(); // c and k park before anything unwinds
                let b = tasklet::spawn(|| {
                    let _g = SlowDrop(Duration::from_millis(600));
                    panic!("b fails");
                });
                tasklet::yield_now(); // b parks in its destructor
                let t = Instant::now();
                assert!(c.join().unwrap().is_err());
                assert!(t.elapsed() < Duration::from_millis(1500));
                assert!(!ran_on.get(), "the timeout was not raised in c");

                // The kill unwinds k, whose destructor then blocks normally
                // (the kill is neither raised again nor cuts the sleep short).
                k.kill();
                assert!(k.join().unwrap_err().is_killed());
                assert!(
                    slept.get() >= Duration::from_millis(200),
                    "{:?}",
                    slept.get()
                );
                assert!(b.join().is_err());
            });
        },
    );
}

// ---------------------------------------------------------------- defect 4

/// Shared by the defect 4 scenarios: at `dispatch` exit, tasklet `holder`
/// (holding something) and `waiter` are killed; `waiter`'s destructor makes a
/// blocking runtime call that has to wait for `holder`, whose destructor
/// sleeps past the shutdown grace period (1 s) before letting go.
fn destructor_waits_past_the_grace_period(
    hold: impl FnOnce() + 'static,
    wait_in_drop: impl FnOnce() + 'static,
) -> bool {
    static DONE_WAITING: AtomicBool = AtomicBool::new(false);
    struct OnDrop<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for OnDrop<F> {
        fn drop(&mut self) {
            (self.0.take().unwrap())();
            DONE_WAITING.store(true, Ordering::SeqCst);
        }
    }
    tasklet::dispatch(move || {
        // The waiter first: at exit it is killed, and woken when the grace
        // period ends, before the holder lets go.
        let w = OnDrop(Some(wait_in_drop));
        let _waiter = tasklet::spawn(move || {
            let _w = w;
            tasklet::sleep(Duration::from_secs(3600));
        });
        let _holder = tasklet::spawn(hold);
        // Let the holder (and whatever it spawns) run and park.
        tasklet::sleep(Duration::from_millis(20));
    });
    DONE_WAITING.load(Ordering::SeqCst)
}

#[test]
fn mutex_lock_in_a_destructor_past_the_exit_grace_period() {
    in_child(
        "mutex_lock_in_a_destructor_past_the_exit_grace_period",
        &[],
        || {
            let m = Rc::new(Mutex::new(0));
            let (m1, m2) = (m.clone(), m.clone());
            let done = destructor_waits_past_the_grace_period(
                move || {
                    let _g = m1.lock();
                    let _s = SlowDrop(Duration::from_secs(3));
                    tasklet::sleep(Duration::from_secs(3600));
                },
                move || *m2.lock() += 1,
            );
            assert!(done);
            assert_eq!(*m.lock_timeout(Duration::ZERO).unwrap(), 1);
        },
    );
}

#[test]
fn pool_spawn_in_a_destructor_past_the_exit_grace_period() {
    in_child(
        "pool_spawn_in_a_destructor_past_the_exit_grace_period",
        &[],
        || {
            let pool = tasklet::Pool::new(1);
            let (p1, p2) = (pool.clone(), pool.clone());
            let ran = Rc::new(Cell::new(false));
            let r = ran.clone();
            let done = destructor_waits_past_the_grace_period(
                move || {
                    // Takes the pool's only slot until its destructor ends.
                    let _member = p1.spawn(|| {
                        let _s = SlowDrop(Duration::from_secs(3));
                        tasklet::sleep(Duration::from_secs(3600));
                    });
                    tasklet::sleep(Duration::from_secs(3600));
                },
                move || {
                    let h = p2.spawn(move || r.set(true));
                    // Spawned during the exit: killed before it runs.
                    assert!(h.join().is_err_and(|e| e.is_killed()));
                },
            );
            assert!(done);
            assert!(!ran.get());
        },
    );
}

#[test]
fn async_result_wait_in_a_destructor_past_the_exit_grace_period() {
    in_child(
        "async_result_wait_in_a_destructor_past_the_exit_grace_period",
        &[],
        || {
            let r: Rc<AsyncResult<u32, ()>> = Rc::new(AsyncResult::new());
            let (r1, r2) = (r.clone(), r.clone());
            struct SetOnDrop(Rc<AsyncResult<u32, ()>>);
            impl Drop for SetOnDrop {
                fn drop(&mut self) {
                    self.0.set(7);
                }
            }
            let done = destructor_waits_past_the_grace_period(
                move || {
                    let _set = SetOnDrop(r1);
                    let _s = SlowDrop(Duration::from_secs(3));
                    tasklet::sleep(Duration::from_secs(3600));
                },
                move || assert_eq!(r2.wait(), Ok(7)),
            );
            assert!(done);
        },
    );
}

/// `Pool::map` and `imap_unordered` from a destructor at `dispatch` exit:
/// the workers they spawn are killed before they run, which made them panic
/// ("a worker tasklet ended abnormally") inside the unwinding destructor.
#[test]
fn pool_map_in_a_destructor_at_exit() {
    in_child("pool_map_in_a_destructor_at_exit", &[], || {
        static SUM: AtomicUsize = AtomicUsize::new(0);
        struct MapOnDrop(tasklet::Pool);
        impl Drop for MapOnDrop {
            fn drop(&mut self) {
                let v = self.0.map(1..=3usize, |x| x * 10);
                let w: usize = self.0.imap_unordered(1..=2usize, |x| x).sum();
                SUM.store(v.iter().sum::<usize>() + w, Ordering::SeqCst);
            }
        }
        tasklet::dispatch(|| {
            let g = MapOnDrop(tasklet::Pool::new(2));
            tasklet::spawn(move || {
                let _g = g;
                tasklet::sleep(Duration::from_secs(3600));
            });
            tasklet::yield_now();
        });
        assert_eq!(SUM.load(Ordering::SeqCst), 63);
    });
}

// ---------------------------------------------------------------- defect 5

/// Catches whatever unwinds its sleeps, forever; counts rounds.
fn catch_forever(rounds: Rc<Cell<u64>>) {
    loop {
        let _ = panic::catch_unwind(AssertUnwindSafe(|| {
            tasklet::sleep(Duration::from_millis(10))
        }));
        rounds.set(rounds.get() + 1);
    }
}

#[test]
fn killed_tasklet_catching_its_kill_yields_and_is_abandoned_at_exit() {
    in_child(
        "killed_tasklet_catching_its_kill_yields_and_is_abandoned_at_exit",
        &[],
        || {
            let exit_took = tasklet::dispatch(|| {
                let rounds = Rc::new(Cell::new(0));
                let r = rounds.clone();
                let catcher = tasklet::spawn(move || catch_forever(r));
                tasklet::yield_now();
                catcher.kill();
                // The others keep running while it re-raises and catches.
                let ticks = Rc::new(Cell::new(0u32));
                let t = ticks.clone();
                let ticker = tasklet::spawn(move || {
                    for _ in 0..20 {
                        tasklet::sleep(Duration::from_millis(1));
                        t.set(t.get() + 1);
                    }
                });
                ticker.join().unwrap();
                assert_eq!(ticks.get(), 20);
                assert!(rounds.get() > 0, "the kill was never raised");
                assert!(!catcher.is_finished());

                // A timeout swallowed the same way does not spin either.
                let r2 = Rc::new(Cell::new(0));
                let r = r2.clone();
                let timed = tasklet::spawn(move || {
                    let _ = tasklet::timeout(Duration::from_millis(5), || catch_forever(r));
                });
                tasklet::sleep(Duration::from_millis(50));
                assert!(r2.get() > 0 && !timed.is_finished());
                drop(timed);
                Instant::now()
            })
            .elapsed();
            // Abandoned after 64 rounds, not after the exit's 2 s hard limit.
            assert!(
                exit_took < Duration::from_millis(900),
                "dispatch exit took {exit_took:?}"
            );
        },
    );
}

// ---------------------------------------------------------------- defect 8

/// Panics on the minimum stack with backtraces on: the panic must reach
/// `join` (the hook's backtrace printing needs stack).
fn panic_on_minimum_stack_reaches_join() {
    static JOINED: AtomicUsize = AtomicUsize::new(0);
    tasklet::dispatch(|| {
        let explicit = tasklet::Builder::new()
            .stack_size(1)
            .spawn(|| panic!("small stack"))
            .unwrap();
        let e = explicit.join().unwrap_err();
        assert_eq!(e.panic_message(), Some("small stack"));
        JOINED.fetch_add(1, Ordering::SeqCst);
    });
    // The default stack from TASKLET_STACK_SIZE=1 (set by the parent).
    tasklet::dispatch(|| {
        let e = tasklet::spawn(|| panic!("env stack")).join().unwrap_err();
        assert_eq!(e.panic_message(), Some("env stack"));
        JOINED.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(JOINED.load(Ordering::SeqCst), 2);
}

#[test]
fn panic_with_backtrace_on_the_minimum_stack_reaches_join() {
    in_child(
        "panic_with_backtrace_on_the_minimum_stack_reaches_join",
        &[("RUST_BACKTRACE", "1"), ("TASKLET_STACK_SIZE", "1")],
        panic_on_minimum_stack_reaches_join,
    );
}

#[test]
fn panic_with_full_backtrace_on_the_minimum_stack_reaches_join() {
    in_child(
        "panic_with_full_backtrace_on_the_minimum_stack_reaches_join",
        &[("RUST_BACKTRACE", "full"), ("TASKLET_STACK_SIZE", "1")],
        panic_on_minimum_stack_reaches_join,
    );
}
