//! Stack allocation failure (issue 15 item 4): in a child process whose
//! address space is capped (`RLIMIT_AS`), `Builder::spawn` returns an
//! `io::Error` that says what failed, `spawn` panics with a clear message
//! (caught like any panic), tasklets already running carry on, spawning
//! works again once stacks are freed, and nothing aborts.
//!
//! The scenario runs in a child (this test binary again, with
//! [`CHILD_ENV`] set): the cap would hurt anything else in the process. The
//! child keeps heap room for the panic machinery: glibc is told not to
//! trim or `mmap` (`mallopt`) and a block is allocated and freed before the
//! cap, so small allocations after it need no new mapping.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Set in the child.
const CHILD_ENV: &str = "TASKLET_FAULT_STACK_CHILD";
/// Printed by a child whose scenario ran to its end.
const DONE: &str = "FAULT-STACK-SCENARIO-DONE";

/// Address space of this process in bytes (`VmSize`).
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmSize in /proc/self/status");
    kib * 1024
}

/// Parks until killed.
fn park_forever() {
    loop {
        tasklet::sleep(Duration::from_secs(3600));
    }
}

/// Spawns parked tasklets with `stack_size` (`None`: the default) until
/// `Builder::spawn` fails; returns them and the error.
fn fill(stack_size: Option<usize>) -> (Vec<tasklet::JoinHandle<()>>, std::io::Error) {
    let mut held = Vec::new();
    loop {
        let b = tasklet::Builder::new();
        let b = match stack_size {
            Some(n) => b.stack_size(n),
            None => b,
        };
        match b.spawn(park_forever) {
            Ok(h) => held.push(h),
            Err(e) => return (held, e),
        }
        assert!(
            held.len() < 1_000_000,
            "the address-space cap has no effect"
        );
    }
}

fn scenario() {
    // Heap room for what runs after the cap (see the file's comment).
    // SAFETY: mallopt only tunes glibc's allocator; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    drop(std::hint::black_box(vec![1u8; 24 << 20]));
    let cap = vm_size() + (256 << 20);
    let rl = libc::rlimit {
        rlim_cur: cap,
        rlim_max: cap,
    };
    // SAFETY: setrlimit reads a valid local rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);

    tasklet::dispatch(|| {
        // A stack larger than what is left of the address space.
        let e = tasklet::Builder::new()
            .stack_size(1 << 30)
            .spawn(|| ())
            .expect_err("a 1 GiB stack under a 256 MiB cap");
        println!("1 GiB stack: {e}");
        assert!(e.to_string().contains("mmap"), "unclear error: {e}");

        // Fill the address space with 4 MiB stacks, then with default ones.
        let (mut held, e) = fill(Some(4 << 20));
        println!("{} tasklets with 4 MiB stacks, then: {e}", held.len());
        assert!(
            held.len() >= 16,
            "only {} 4 MiB stacks fit in 256 MiB",
            held.len()
        );
        let (more, e) = fill(None);
        println!("{} more with default stacks, then: {e}", more.len());
        held.extend(more);

        // `spawn` panics, with a message that says why; the panic is an
        // ordinary one, caught here.
        let p = std::panic::catch_unwind(|| tasklet::spawn(|| ()))
            .expect_err("spawn with no address space left");
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| format!("{:?}", p.downcast_ref::<&str>()));
        println!("spawn panicked: {msg}");
        assert!(
            msg.starts_with("tasklet::spawn: cannot create a tasklet: failed to mmap"),
            "unclear panic: {msg}"
        );

        // What runs carries on: timers, and the parked tasklets can be killed.
        let r = tasklet::timeout(Duration::from_millis(10), || {
            tasklet::sleep(Duration::from_secs(3600))
        });
        assert!(r.is_err());
        let n = held.len();
        for r in tasklet::joinall(held.drain(..).inspect(|h| h.kill())) {
            assert!(r.unwrap_err().is_killed());
        }
        // Their stacks are free again: spawning works.
        let h = tasklet::spawn(|| 42);
        assert_eq!(h.join().unwrap(), 42);
        println!("{n} tasklets killed, spawning works again");
    });
}

#[test]
fn stack_allocation_failure_is_an_error_or_a_clear_panic_never_an_abort() {
    if std::env::var_os(CHILD_ENV).is_some() {
        scenario();
        println!("{DONE}");
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stack_allocation_failure_is_an_error_or_a_clear_panic_never_an_abort",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env_remove("TASKLET_STACK_SIZE")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    let err = errs.join().unwrap();
    eprintln!("{out}");
    assert!(
        status.success() && out.contains(DONE),
        "child: {status}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}
