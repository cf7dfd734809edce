//! `tasklet::process`: cooperative children, pipes and exit waits.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use tasklet::process::{Command, Stdio};

mod common;

/// Generous bound for anything that should take milliseconds.
const LIMIT: Duration = Duration::from_secs(60);

/// Whether process `pid` is gone: reaped (no `/proc` entry), not a zombie.
fn reaped(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            assert!(!state.is_empty(), "unexpected /proc/{pid}/stat: {stat}");
            false
        }
    }
}

/// Waits (polling /proc from the test thread) until `pid` has been reaped.
fn assert_reaped_soon(pid: u32) {
    let start = Instant::now();
    while !reaped(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "child {pid} was not reaped: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_hundred_concurrent_children_on_one_dispatcher() {
    let (elapsed, spawning) = tasklet::dispatch(|| {
        let start = Instant::now();
        // Time the dispatcher spends inside `spawn` (fork/exec, done by std
        // and blocking, as in std and tokio): seconds on a loaded machine.
        let spawning = std::rc::Rc::new(std::cell::Cell::new(Duration::ZERO));
        let jobs: Vec<_> = (0..200)
            .map(|i| {
                let spawning = spawning.clone();
                tasklet::spawn(move || {
                    let t = Instant::now();
                    let child = Command::new("sh")
                        .args(["-c", "sleep 0.2; echo $i"])
                        .env("i", i.to_string())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    spawning.set(spawning.get() + t.elapsed());
                    child.wait_with_output().unwrap()
                })
            })
            .collect();
        for (i, job) in jobs.into_iter().enumerate() {
            let out = job.join().unwrap();
            assert!(out.status.success(), "child {i}: {:?}", out.status);
            assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{i}\n"));
            assert!(out.stderr.is_empty());
        }
        (start.elapsed(), spawning.get())
    });
    // One after the other they would take 40 s. The bound is 2 s, or, where
    // the OS alone took longer than 1 s to start the 200 processes (a
    // loaded machine), that time plus 1 s: the waits themselves overlap.
    let bound = Duration::from_secs(2).max(spawning + Duration::from_secs(1));
    assert!(
        elapsed < bound,
        "200 children of 0.2 s took {elapsed:?} ({spawning:?} of it starting them)"
    );
}

/// Ticks every 10 ms until told to stop; returns the number of ticks and
/// the longest gap between two of them.
fn ticker(stop: std::rc::Rc<std::cell::Cell<bool>>) -> tasklet::JoinHandle<(u32, Duration)> {
    tasklet::spawn(move || {
        let mut ticks = 0;
        let mut worst = Duration::ZERO;
        let mut last = Instant::now();
        while !stop.get() {
            tasklet::sleep(Duration::from_millis(10));
            worst = worst.max(last.elapsed());
            last = Instant::now();
            ticks += 1;
        }
        (ticks, worst)
    })
}

#[test]
fn ticker_stays_on_schedule_while_a_tasklet_streams_a_childs_stdout() {
    tasklet::dispatch(|| {
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let ticks = ticker(stop.clone());
        let start = Instant::now();

        // A child that writes a line every 20 ms for about a second.
        let mut child = Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); sleep 0.02; done",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map(Result::unwrap)
            .collect();
        assert!(child.wait().unwrap().success());
        let want: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
        assert_eq!(lines, want);
        let paced = start.elapsed();

        // Then a bulk stream: 64 MiB as fast as the child can write it.
        let mut child = Command::new("head")
            .args(["-c", "67108864", "/dev/zero"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == 0));
            total += n;
        }
        assert_eq!(total, 64 << 20);
        assert!(child.wait().unwrap().success());

        // A child far faster than its reader (40 us of work per 4 KiB): the
        // pipe is always full, reads never park, and only the pipe's
        // periodic yield lets the ticker run.
        let mut child = Command::new("head")
            .args(["-c", "67108864", "/dev/zero"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(40) {
                std::hint::spin_loop();
            }
        }
        assert_eq!(total, 64 << 20);
        assert!(child.wait().unwrap().success());

        stop.set(true);
        let (n, worst) = ticks.join().unwrap();
        let elapsed = start.elapsed();
        // Blocking reads would have held the dispatcher for the whole
        // stream (`paced` alone is about a second): no ticks at all.
        assert!(
            paced > Duration::from_millis(700),
            "the paced child finished in {paced:?}"
        );
        assert!(
            worst < Duration::from_millis(250),
            "ticker gap of {worst:?} while streaming ({n} ticks in {elapsed:?})"
        );
        assert!(
            u128::from(n) * 10 * 3 >= elapsed.as_millis(),
            "only {n} ticks of 10 ms in {elapsed:?}"
        );
    });
}

#[test]
fn output_with_megabytes_on_stdout_and_stderr_does_not_deadlock() {
    // Both streams are written at once, 8 MiB each, far beyond a pipe's 64 KiB.
    let script = "head -c 8388608 /dev/zero | tr '\\0' a & \
                  head -c 8388608 /dev/zero | tr '\\0' b >&2; wait";
    let check = |out: std::process::Output| {
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), 8 << 20);
        assert_eq!(out.stderr.len(), 8 << 20);
        assert!(out.stdout.iter().all(|&b| b == b'a'));
        assert!(out.stderr.iter().all(|&b| b == b'b'));
    };
    tasklet::dispatch(|| {
        let out = tasklet::timeout(LIMIT, || {
            Command::new("sh").args(["-c", script]).output().unwrap()
        })
        .expect("output() deadlocked");
        check(out);

        // The same through spawn + wait_with_output, stdout first in the script.
        let child = Command::new("sh")
            .args([
                "-c",
                "head -c 4194304 /dev/zero; head -c 4194304 /dev/zero >&2; echo done",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = tasklet::timeout(LIMIT, move || child.wait_with_output().unwrap())
            .expect("wait_with_output() deadlocked");
        assert_eq!(out.stdout.len(), (4 << 20) + 5);
        assert_eq!(out.stderr.len(), 4 << 20);
    });
    // Outside a dispatcher: std's blocking behaviour, same results.
    check(Command::new("sh").args(["-c", script]).output().unwrap());
    let child = Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check(child.wait_with_output().unwrap());
}

#[test]
fn exit_codes_and_signals_are_reported() {
    let run = |script: &str| Command::new("sh").args(["-c", script]).status().unwrap();
    tasklet::dispatch(move || {
        let ok = run("exit 0");
        assert!(ok.success());
        assert_eq!(ok.code(), Some(0));

        let three = run("exit 3");
        assert!(!three.success());
        assert_eq!(three.code(), Some(3));
        assert_eq!(three.signal(), None);

        let term = run("kill -TERM $$");
        assert_eq!(term.code(), None);
        assert_eq!(term.signal(), Some(libc::SIGTERM));

        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert_eq!(child.try_wait().unwrap(), None);
        child.kill().unwrap();
        let killed = child.wait().unwrap();
        assert_eq!(killed.signal(), Some(libc::SIGKILL));
        // Waiting again, or killing a reaped child, is harmless (std's behaviour).
        assert_eq!(child.wait().unwrap(), killed);
        assert_eq!(child.try_wait().unwrap(), Some(killed));
        child.kill().unwrap();

        let out = Command::new("sh")
            .args(["-c", "echo partial; kill -KILL $$"])
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGKILL));
        assert_eq!(out.stdout, b"partial\n");
    });
    // The same outside a dispatcher.
    assert_eq!(run("exit 7").code(), Some(7));
    assert_eq!(run("kill -TERM $$").signal(), Some(libc::SIGTERM));
}

#[test]
fn timeout_of_a_tasklet_waiting_on_a_child_leaves_the_child_usable() {
    tasklet::dispatch(|| {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let r = tasklet::timeout(Duration::from_millis(50), || child.wait());
        assert!(r.is_err(), "wait returned {r:?}");
        // Still running, and can be waited for again.
        assert_eq!(child.try_wait().unwrap(), None);
        assert!(!reaped(pid));
        child.kill().unwrap();
        let st = tasklet::timeout(LIMIT, || child.wait().unwrap()).unwrap();
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        assert!(reaped(pid));
    });
}

#[test]
fn kill_of_a_tasklet_waiting_on_a_child() {
    let (kept, killed) = tasklet::dispatch(|| {
        let (tx, rx) = tasklet::sync::unbounded::<u32>();
        // One waits on a child started with kill_on_drop, one on a plain child.
        let spawn_waiter = |kill_on_drop: bool, tx: tasklet::sync::Sender<u32>| {
            tasklet::spawn(move || {
                let mut child = Command::new("sleep")
                    .arg("30")
                    .kill_on_drop(kill_on_drop)
                    .spawn()
                    .unwrap();
                tx.send(child.id()).unwrap();
                child.wait()
            })
        };
        let a = spawn_waiter(true, tx.clone());
        let b = spawn_waiter(false, tx);
        let pid_a = rx.recv().unwrap();
        let pid_b = rx.recv().unwrap();
        // Both are parked in `wait` once this tasklet runs again.
        tasklet::yield_now();
        a.kill();
        b.kill();
        assert!(a.join().unwrap_err().is_killed());
        assert!(b.join().unwrap_err().is_killed());
        (pid_b, pid_a)
    });
    // kill_on_drop: the child died with the tasklet and was reaped.
    assert_reaped_soon(killed);
    // Without it the child runs on; kill it by pid: the reaper reaps it.
    assert!(!reaped(kept));
    // SAFETY: `kill` only sends a signal to a pid; the child is still ours
    // (not reaped, as just checked), so the pid cannot have been reused.
    assert_eq!(unsafe { libc::kill(kept as libc::pid_t, libc::SIGKILL) }, 0);
    assert_reaped_soon(kept);
}

#[test]
fn dropped_children_are_reaped_in_the_background() {
    let pids = tasklet::dispatch(|| {
        let mut pids = Vec::new();
        // Exits on its own a little later.
        pids.push(Command::new("sleep").arg("0.1").spawn().unwrap().id());
        // Already exited when dropped (its stdout is at EOF).
        let mut quick = Command::new("echo")
            .arg("hi")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut s = String::new();
        quick.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        pids.push(quick.id());
        drop(quick);
        // Killed on drop.
        let mut c = Command::new("sleep");
        c.arg("30").kill_on_drop(true);
        pids.push(c.spawn().unwrap().id());
        pids
    });
    // Outside a dispatcher too.
    let plain = Command::new("sleep").arg("0.1").spawn().unwrap().id();
    for pid in pids.into_iter().chain([plain]) {
        assert_reaped_soon(pid);
    }
}

#[test]
fn missing_program_gives_not_found() {
    let name = "tasklet-no-such-program-7f3a";
    tasklet::dispatch(move || {
        let e = Command::new(name).spawn().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        let e = Command::new(name).output().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        let e = Command::new("/nonexistent/dir/prog").status().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    });
    let e = Command::new(name).spawn().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn stdin_and_stdout_stream_concurrently_through_cat() {
    tasklet::dispatch(|| {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        // 4 MiB in and out: writing it all before reading would deadlock.
        let writer = tasklet::spawn(move || {
            input.write_all(&data).unwrap();
            // Dropping `input` closes the pipe: cat sees EOF.
        });
        let mut got = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == expect, "cat returned {} bytes, differing", got.len());
        assert!(child.wait().unwrap().success());
    });
}

#[test]
fn pipes_chain_children_and_work_outside_a_dispatcher() {
    let run = || {
        let mut first = Command::new("echo")
            .arg("hello pipeline")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let second = Command::new("tr")
            .args(["a-z", "A-Z"])
            .stdin(Stdio::from(first.stdout.take().unwrap()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = second.wait_with_output().unwrap();
        assert!(first.wait().unwrap().success());
        assert_eq!(out.stdout, b"HELLO PIPELINE\n");

        // Streams not configured for output() default to null stdin and captured output.
        let out = Command::new("cat").output().unwrap();
        assert!(out.status.success());
        assert!(out.stdout.is_empty());
        // ... and a later spawn inherits again: stdout not captured.
        let mut c = Command::new("true");
        let _ = c.output().unwrap();
        let child = c.spawn().unwrap();
        assert!(child.stdout.is_none());
        let mut child = child;
        assert!(child.wait().unwrap().success());
    };
    tasklet::dispatch(run);
    run();
}

#[test]
fn write_to_a_child_that_exited_is_broken_pipe() {
    tasklet::dispatch(|| {
        let mut child = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        assert!(child.wait().unwrap().success());
        let big = vec![1u8; 1 << 20];
        let e = input.write_all(&big).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    });
}

#[test]
fn subprocess_example_runs() {
    // The example binary, run (and bounded) by this very module.
    let out = tasklet::dispatch(|| {
        tasklet::timeout(LIMIT, || {
            Command::new(common::example("subprocess"))
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        })
        .expect("example hung")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1. 20 children"), "{stdout}");
    assert_eq!(stdout.matches("2. child says").count(), 5, "{stdout}");
    assert!(
        stdout.contains("timed out; the child was killed"),
        "{stdout}"
    );
    assert!(stdout.contains(r#""apple\nbanana\ncherry\n""#), "{stdout}");
}
