//! Diagnostics that need no logger: deadlock panics naming every stuck
//! tasklet (issue 17, item 1), stall warnings, the watchdog and unjoined
//! panic reports on stderr, and the panic line naming the tasklet (item 4).
//!
//! `harness = false`: each scenario runs in a child process (this binary
//! again, `TASKLET_DIAG_CHILD=<scenario>`) on its main thread, with no
//! `log` logger installed and — unlike under libtest — no other thread
//! unless the scenario starts one, which is what the deadlock proof counts.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklet::sync::{channel, Event, Mutex};

const CHILD_ENV: &str = "TASKLET_DIAG_CHILD";

/// Runs one scenario in this (child) process.
fn child(scenario: &str) {
    match scenario {
        "rendezvous_cycle" => tasklet::dispatch(|| {
            let (tx_a, rx_a) = channel::<u32>(0);
            let (tx_b, rx_b) = channel::<u32>(0);
            let alpha = tasklet::Builder::new()
                .name("alpha")
                .spawn(move || {
                    let v = rx_a.recv().unwrap();
                    tx_b.send(v).unwrap();
                })
                .unwrap();
            let beta = tasklet::Builder::new()
                .name("beta")
                .spawn(move || {
                    let v = rx_b.recv().unwrap();
                    tx_a.send(v).unwrap();
                })
                .unwrap();
            alpha.join().unwrap();
            beta.join().unwrap();
        }),
        "lone_event" => tasklet::dispatch(|| {
            let ev = Event::new();
            ev.wait();
        }),
        "mutex_twice" => tasklet::dispatch(|| {
            let m = Arc::new(Mutex::new(0));
            let locker = tasklet::Builder::new()
                .name("locker")
                .spawn(move || {
                    let _first = m.lock();
                    let _second = m.lock();
                })
                .unwrap();
            locker.join().unwrap();
        }),
        "stall_with_other_thread" => {
            // Another thread exists (holding the sender): the deadlock cannot
            // be proved, so the dispatcher warns once, then the thread sends.
            let (tx, rx) = channel::<u32>(0);
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                tx.send(7).unwrap();
            });
            let v = tasklet::Config::new()
                .stall_warning(Some(Duration::from_millis(300)))
                .dispatch(|| {
                    tasklet::Builder::new()
                        .name("waiter")
                        .spawn(move || rx.recv().unwrap())
                        .unwrap()
                        .join()
                        .unwrap()
                });
            t.join().unwrap();
            assert_eq!(v, 7);
            eprintln!("child: received {v}");
        }
        "cross_thread_ok" => {
            // Legitimate cross-thread waits of every kind, ended by a plain
            // thread after a while: never reported.
            let (tx, rx) = channel::<u32>(0);
            let ev = Arc::new(Event::new());
            let m = Arc::new(Mutex::new(0));
            let (ev2, m2) = (ev.clone(), m.clone());
            let guard_taken = Arc::new(Event::new());
            let gt = guard_taken.clone();
            let t = std::thread::spawn(move || {
                let g = m2.lock();
                gt.set();
                std::thread::sleep(Duration::from_millis(400));
                drop(g);
                std::thread::sleep(Duration::from_millis(300));
                ev2.set();
                std::thread::sleep(Duration::from_millis(300));
                tx.send(1).unwrap();
            });
            tasklet::dispatch(|| {
                guard_taken.wait();
                *m.lock() += 1;
                ev.wait();
                assert_eq!(rx.recv().unwrap(), 1);
            });
            t.join().unwrap();
            eprintln!("child: done");
        }
        "no_logger" => {
            tasklet::Config::new()
                .max_blocking(Some(Duration::from_millis(50)))
                .dispatch(|| {
                    let w = tasklet::Builder::new()
                        .name("worker-3")
                        .spawn(|| panic!("boom in worker"))
                        .unwrap();
                    drop(w); // detached: nobody joins the panic
                    tasklet::yield_now();
                    tasklet::Builder::new()
                        .name("hog")
                        .spawn(|| {
                            // Hold the dispatcher with a busy wait (under the
                            // `hook` feature `std::thread::sleep` would park).
                            let t = std::time::Instant::now();
                            while t.elapsed() < Duration::from_millis(600) {
                                std::hint::spin_loop();
                            }
                        })
                        .unwrap()
                        .join()
                        .unwrap();
                    // Let the watchdog see the dispatcher switch back.
                    tasklet::sleep(Duration::from_millis(100));
                });
            eprintln!("child: done");
        }
        "lone_signal_wait" => {
            // The only tasklet waits for SIGTERM, which a process outside
            // sends well after the 50 ms at which a stall is first checked
            // for a deadlock (std's `Command` starts no thread; nothing is
            // registered with the hub).
            use tasklet::signal::{self, Signal};
            signal::handle(&[Signal::Term]).unwrap();
            let mut killer = std::process::Command::new("sh")
                .args([
                    "-c",
                    &format!("sleep 0.5; kill -TERM {}", std::process::id()),
                ])
                .spawn()
                .expect("sh");
            let got = tasklet::dispatch(|| signal::wait(&[Signal::Term]).unwrap());
            eprintln!("child: got {got:?}");
            killer.wait().expect("sh");
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// Runs `scenario` in a child process; returns (success, stderr).
fn run(scenario: &str) -> (bool, String) {
    let exe = std::env::current_exe().expect("test executable");
    let mut c = Command::new(exe)
        .env(CHILD_ENV, scenario)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut err = c.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = c.try_wait().expect("wait child") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!(
                "scenario {scenario}: child still running after 60 s (a silent hang); stderr:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), reader.join().unwrap())
}

fn expect_deadlock(scenario: &str, needles: &[&str]) {
    let (ok, err) = run(scenario);
    assert!(!ok, "{scenario}: expected a deadlock panic; stderr:\n{err}");
    assert!(
        err.contains("tasklet::dispatch: deadlock:"),
        "{scenario}: no deadlock panic; stderr:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{scenario}: {n:?} missing; stderr:\n{err}");
    }
}

fn deadlocks_panic_naming_each_tasklet() {
    expect_deadlock(
        "rendezvous_cycle",
        &[
            "tasklet 1 'main' waits on join of tasklet",
            "'alpha' waits on channel receive",
            "'beta' waits on channel receive",
            "spawned at tests/diagnostics.rs:",
        ],
    );
    expect_deadlock("lone_event", &["tasklet 1 'main' waits on sync::Event"]);
    expect_deadlock(
        "mutex_twice",
        &["'locker' waits on sync::Mutex", "'main' waits on join"],
    );
}

fn undecidable_stall_warns_once() {
    let (ok, err) = run("stall_with_other_thread");
    assert!(ok, "stall scenario failed; stderr:\n{err}");
    assert!(err.contains("child: received 7"), "stderr:\n{err}");
    assert_eq!(
        err.matches("[WARN tasklet] tasklet: dispatcher 1: every tasklet has been blocked")
            .count(),
        1,
        "expected exactly one stall warning; stderr:\n{err}"
    );
    assert!(
        err.contains("'waiter' waits on channel receive"),
        "stderr:\n{err}"
    );
    assert!(
        !err.contains("tasklet::dispatch: deadlock"),
        "stderr:\n{err}"
    );
}

fn cross_thread_waits_are_never_reported() {
    let (ok, err) = run("cross_thread_ok");
    assert!(ok, "cross-thread scenario failed; stderr:\n{err}");
    assert!(err.contains("child: done"), "stderr:\n{err}");
    assert!(!err.contains("deadlock"), "stderr:\n{err}");
    assert!(!err.contains("[WARN tasklet]"), "stderr:\n{err}");
}

fn a_lone_signal_wait_is_not_a_deadlock() {
    let (ok, err) = run("lone_signal_wait");
    assert!(ok, "lone signal wait failed; stderr:\n{err}");
    assert!(err.contains("child: got Term"), "stderr:\n{err}");
    assert!(!err.contains("deadlock"), "stderr:\n{err}");
}

fn diagnostics_reach_stderr_without_a_logger() {
    let (ok, err) = run("no_logger");
    assert!(ok, "no_logger scenario failed; stderr:\n{err}");
    assert!(
        err.contains("tasklet 'worker-3' (id ")
            && err.contains("panicked at tests/diagnostics.rs:"),
        "panic line does not name the tasklet; stderr:\n{err}"
    );
    assert!(
        err.contains("'worker-3'")
            && err.contains("panicked and nobody joins it: tasklet panicked: boom in worker"),
        "unjoined panic report missing; stderr:\n{err}"
    );
    assert!(
        err.contains("'hog'") && err.contains("without yielding"),
        "watchdog warning missing; stderr:\n{err}"
    );
}

fn outside_dispatch_panics_name_the_api_and_caller() {
    let cases: [(&str, fn()); 4] = [
        ("tasklet::spawn", || {
            tasklet::spawn(|| ());
        }),
        ("tasklet::yield_now", || {
            tasklet::yield_now();
        }),
        ("tasklet::sleep", || {
            tasklet::sleep(Duration::from_millis(1))
        }),
        ("tasklet::dump", || {
            tasklet::dump();
        }),
    ];
    let prev = std::panic::take_hook();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        let file = info
            .location()
            .map(|l| l.file().to_owned())
            .unwrap_or_default();
        s.lock().unwrap().push((msg, file));
    }));
    for (_, f) in cases {
        assert!(std::panic::catch_unwind(f).is_err());
    }
    std::panic::set_hook(prev);
    let seen = seen.lock().unwrap();
    for ((api, _), (msg, file)) in cases.iter().zip(seen.iter()) {
        assert!(
            msg.starts_with(&format!("{api} called outside tasklet::dispatch")),
            "{api}: {msg}"
        );
        assert_eq!(
            file, "tests/diagnostics.rs",
            "{api}: location not the caller's"
        );
    }
}

fn main() {
    if let Ok(s) = std::env::var(CHILD_ENV) {
        child(&s);
        return;
    }
    // A minimal harness: libtest's arguments (filters, --list) are ignored.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tests: [(&str, fn()); 6] = [
        (
            "deadlocks_panic_naming_each_tasklet",
            deadlocks_panic_naming_each_tasklet,
        ),
        ("undecidable_stall_warns_once", undecidable_stall_warns_once),
        (
            "cross_thread_waits_are_never_reported",
            cross_thread_waits_are_never_reported,
        ),
        (
            "a_lone_signal_wait_is_not_a_deadlock",
            a_lone_signal_wait_is_not_a_deadlock,
        ),
        (
            "diagnostics_reach_stderr_without_a_logger",
            diagnostics_reach_stderr_without_a_logger,
        ),
        (
            "outside_dispatch_panics_name_the_api_and_caller",
            outside_dispatch_panics_name_the_api_and_caller,
        ),
    ];
    for (name, t) in tests {
        println!("test {name} ...");
        t();
        println!("test {name} ... ok");
    }
}
