//! Signals between waits (issue 8, defect 3): a signal the program has
//! waited on once is queued for the next `signal::wait` instead of killing
//! the process, and `signal::reset` restores exactly the disposition the
//! signal had before (`SIG_IGN` under `nohup`, the default otherwise).
//!
//! Each scenario runs in a child process (this test binary re-run with
//! `--exact NAME` and `SIGNAL_QUEUE_CHILD` set), because a failure here is
//! the process being killed by a signal, and dispositions are process-wide.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use tasklet::signal::{self, Signal};

mod common;
use common::{wait_bounded, KillOnDrop};

const CHILD: &str = "SIGNAL_QUEUE_CHILD";
const LIMIT: Duration = Duration::from_secs(30);

/// Runs test `name` of this binary in a child process, with SIGHUP ignored
/// (as under `nohup`) if `ignore_hup`; returns how it ended.
fn run_child(name: &str, ignore_hup: bool) -> ExitStatus {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1");
    if ignore_hup {
        // SAFETY: the closure runs in the forked child before exec and only
        // calls `signal`, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    wait_bounded(&mut child.0, LIMIT)
}

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

fn raise(sig: Signal) {
    // SAFETY: raising a signal at our own process.
    assert_eq!(unsafe { libc::raise(sig.as_raw()) }, 0);
}

/// The current disposition of `sig` (`SIG_DFL`, `SIG_IGN` or a handler).
fn disposition(sig: Signal) -> libc::sighandler_t {
    // SAFETY: querying (not changing) the action into a zeroed local.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig.as_raw(), std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

/// Waits for `sig` once, raising it as soon as the wait is registered.
fn wait_once_raised(sig: Signal) {
    let raiser = tasklet::spawn(move || {
        while signal::waiting(sig) == 0 {
            tasklet::sleep(Duration::from_millis(1));
        }
        raise(sig);
    });
    assert_eq!(signal::wait(&[sig]).unwrap(), sig);
    raiser.join().unwrap();
}

/// The README's reload loop: SIGHUPs arriving during `reload()` (while no
/// wait is registered) are handled by the next iteration, never fatal.
fn reload_loop() {
    tasklet::dispatch(|| {
        tasklet::timeout(LIMIT, || {
            wait_once_raised(Signal::Hup);
            let mut reloads = 1;
            while reloads < 4 {
                // "reload()": 50 ms of work, during which two more SIGHUPs
                // arrive (they coalesce into one pending, like the kernel's).
                raise(Signal::Hup);
                raise(Signal::Hup);
                tasklet::sleep(Duration::from_millis(50));
                assert_eq!(signal::wait(&[Signal::Hup]).unwrap(), Signal::Hup);
                reloads += 1;
            }
            // Coalesced: nothing more is queued.
            let r = tasklet::timeout(Duration::from_millis(100), || signal::wait(&[Signal::Hup]));
            assert!(r.is_err(), "a queued signal is delivered once");
        })
        .expect("child timed out");
    });
}

#[test]
fn a_signal_between_waits_is_queued_for_the_next_wait() {
    if in_child() {
        return reload_loop();
    }
    let st = run_child("a_signal_between_waits_is_queued_for_the_next_wait", false);
    assert!(
        st.success(),
        "the reload loop died: {st:?} (signal {:?})",
        st.signal()
    );
}

/// Under `nohup`: the wait still gets SIGHUP, a SIGHUP after it is queued,
/// and once reset the signal is ignored again.
fn nohup() {
    assert_eq!(disposition(Signal::Hup), libc::SIG_IGN, "started ignored");
    tasklet::dispatch(|| {
        tasklet::timeout(LIMIT, || {
            wait_once_raised(Signal::Hup);
            raise(Signal::Hup);
            tasklet::sleep(Duration::from_millis(50));
            assert_eq!(signal::wait(&[Signal::Hup]).unwrap(), Signal::Hup);
        })
        .expect("child timed out");
    });
    signal::reset(&[Signal::Hup]).unwrap();
    assert_eq!(disposition(Signal::Hup), libc::SIG_IGN, "restored exactly");
    raise(Signal::Hup); // ignored: the process goes on
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn under_nohup_the_ignored_disposition_is_kept_and_restored() {
    if in_child() {
        return nohup();
    }
    let st = run_child(
        "under_nohup_the_ignored_disposition_is_kept_and_restored",
        true,
    );
    assert!(
        st.success(),
        "died under nohup: {st:?} (signal {:?})",
        st.signal()
    );
}

/// `reset` restores the default action (the signal kills again), and drops
/// what was queued; a reset while a wait is in progress takes effect when
/// that wait ends.
fn reset_to_default() {
    assert_eq!(disposition(Signal::Usr1), libc::SIG_DFL);
    tasklet::dispatch(|| {
        tasklet::timeout(LIMIT, || {
            wait_once_raised(Signal::Usr1);
            assert_ne!(disposition(Signal::Usr1), libc::SIG_DFL);

            // Reset during a wait: the wait still gets the signal.
            let waiter = tasklet::spawn(|| signal::wait(&[Signal::Usr1]).unwrap());
            while signal::waiting(Signal::Usr1) == 0 {
                tasklet::sleep(Duration::from_millis(1));
            }
            signal::reset(&[Signal::Usr1]).unwrap();
            assert_ne!(
                disposition(Signal::Usr1),
                libc::SIG_DFL,
                "a wait is in progress"
            );
            raise(Signal::Usr1);
            assert_eq!(waiter.join().unwrap(), Signal::Usr1);
            assert_eq!(
                disposition(Signal::Usr1),
                libc::SIG_DFL,
                "reset once the wait ended"
            );

            // A new wait handles it again; a queued one is dropped by reset.
            wait_once_raised(Signal::Usr1);
            raise(Signal::Usr1);
            tasklet::sleep(Duration::from_millis(50));
            signal::reset(&[Signal::Usr1]).unwrap();
            assert_eq!(disposition(Signal::Usr1), libc::SIG_DFL);
        })
        .expect("child timed out");
    });
    raise(Signal::Usr1); // the default action: the process ends here
    std::thread::sleep(Duration::from_secs(5));
}

#[test]
fn reset_restores_the_default_action() {
    if in_child() {
        return reset_to_default();
    }
    let st = run_child("reset_restores_the_default_action", false);
    assert_eq!(
        st.signal(),
        Some(libc::SIGUSR1),
        "killed by the reset signal: {st:?}"
    );
}

/// `signal::handle` catches a signal before any wait: a SIGTERM raised right
/// after it (a server's start-up window) is queued, not fatal, and the first
/// wait returns it; `reset` then restores the default action.
fn handled_before_any_wait() {
    assert_eq!(disposition(Signal::Term), libc::SIG_DFL, "starts default");
    assert!(signal::handle(&[]).is_err(), "an empty set is refused");
    signal::handle(&[Signal::Int, Signal::Term]).unwrap();
    raise(Signal::Term); // no wait registered yet: queued
    tasklet::dispatch(|| {
        tasklet::timeout(LIMIT, || {
            assert_eq!(
                signal::wait(&[Signal::Int, Signal::Term]).unwrap(),
                Signal::Term
            );
        })
        .expect("child timed out");
    });
    signal::reset(&[Signal::Int, Signal::Term]).unwrap();
    assert_eq!(disposition(Signal::Term), libc::SIG_DFL, "restored");
}

#[test]
fn handle_catches_a_signal_before_the_first_wait() {
    if in_child() {
        return handled_before_any_wait();
    }
    let st = run_child("handle_catches_a_signal_before_the_first_wait", false);
    assert!(
        st.success(),
        "killed before the first wait: {st:?} (signal {:?})",
        st.signal()
    );
}
