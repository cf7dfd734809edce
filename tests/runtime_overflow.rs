//! A tasklet stack overflow is reported with one clear line naming the
//! tasklet, and the process aborts (never a bare segfault).
//!
//! Each test re-runs this test binary in a child process with an environment
//! variable that makes the child overflow, and inspects how the child died.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Set in the child: which overflow to commit.
const MODE_ENV: &str = "TASKLET_TEST_OVERFLOW_MODE";

/// Recurses with KiB-sized frames until the stack runs out.
#[inline(never)]
fn bottomless(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 1024]);
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    bottomless(depth + 1) + frame[(depth % 1024) as usize] as u64
}

/// In the child: overflow as `mode` says. Returns only if there was no mode.
fn overflow_if_child() -> bool {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return false;
    };
    match mode.as_str() {
        "named" => tasklet::dispatch(|| {
            let h = tasklet::Builder::new()
                .name("overflower")
                .stack_size(64 * 1024)
                .spawn(|| bottomless(0))
                .unwrap();
            // Not reached: the process aborts inside the child tasklet.
            println!("joined: {:?}", h.join().map_err(|e| e.to_string()));
        }),
        "unnamed" => tasklet::dispatch(|| {
            let _ = tasklet::spawn(|| bottomless(0)).join();
        }),
        "main" => tasklet::Config::new().stack_size(128 * 1024).dispatch(|| {
            std::hint::black_box(bottomless(0));
        }),
        // The default stack size comes from TASKLET_STACK_SIZE (set by the parent).
        "env" => tasklet::dispatch(|| {
            let _ = tasklet::spawn(|| bottomless(0)).join();
        }),
        other => panic!("unknown {MODE_ENV} {other:?}"),
    }
    true
}

/// Re-runs `test` in a child with `mode`; returns its exit status and stderr.
fn run_child(test: &str, mode: &str) -> (ExitStatus, String) {
    run_child_env(test, mode, &[])
}

/// Like [`run_child`], with extra environment variables for the child.
fn run_child_env(test: &str, mode: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(MODE_ENV, mode)
        .env_remove("TASKLET_STACK_SIZE")
        .envs(env.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child test process");
    let pid = child.id();
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let status = child.wait().expect("wait for child");
        let _ = tx.send((status, s));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("child test process (mode {mode}) did not exit within 30 s");
        }
    }
}

fn assert_reported(status: ExitStatus, stderr: &str, who: &str, size: &str) {
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "child should abort (SIGABRT), got {status:?}; stderr:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("overflowed"))
        .unwrap_or_else(|| panic!("no overflow report on stderr:\n{stderr}"));
    assert!(line.contains(who), "report does not name {who}: {line}");
    assert!(
        line.contains(size),
        "report does not give the stack size {size}: {line}"
    );
    assert!(
        line.contains("stack_size"),
        "report does not say how to fix it: {line}"
    );
}

#[test]
fn overflow_in_named_tasklet_is_reported() {
    if overflow_if_child() {
        return;
    }
    let (status, stderr) = run_child("overflow_in_named_tasklet_is_reported", "named");
    assert_reported(status, &stderr, "'overflower'", "65536");
}

#[test]
fn overflow_in_unnamed_tasklet_is_reported() {
    if overflow_if_child() {
        return;
    }
    let (status, stderr) = run_child("overflow_in_unnamed_tasklet_is_reported", "unnamed");
    assert_reported(status, &stderr, "tasklet", "-byte stack");
}

#[test]
fn overflow_in_main_tasklet_is_reported() {
    if overflow_if_child() {
        return;
    }
    let (status, stderr) = run_child("overflow_in_main_tasklet_is_reported", "main");
    assert_reported(status, &stderr, "'main'", "131072");
}

#[test]
fn overflow_report_uses_stack_size_from_environment() {
    if overflow_if_child() {
        return;
    }
    let test = "overflow_report_uses_stack_size_from_environment";
    let (status, stderr) = run_child_env(test, "env", &[("TASKLET_STACK_SIZE", "96k")]);
    assert_reported(status, &stderr, "<unnamed>", "98304");
}
