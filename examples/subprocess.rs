//! Cooperative subprocesses and files: `tasklet::process` and `tasklet::fs`.
//!
//! 1. Twenty children run at once, each in its own tasklet (`output()`
//!    parks only that tasklet): the batch takes about as long as the
//!    slowest child, not the sum.
//! 2. One tasklet streams a child's stdout line by line while a heartbeat
//!    tasklet keeps ticking on the same thread.
//! 3. A child that takes too long is given up with `tasklet::timeout`;
//!    `kill_on_drop(true)` kills it (and it is reaped in the background).
//! 4. Two children are chained with a pipe, and the result is written to and
//!    read back from a file with `tasklet::fs`.
//!
//! ```sh
//! cargo run --release --example subprocess
//! ```

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::process::{Command, Stdio};

mod common;

const USAGE: &str = "\
subprocess: concurrent children, streamed output, a timed-out child and a pipeline
through tasklet::process and tasklet::fs

USAGE:
    subprocess

OPTIONS:
    -h, --help    print this help";

fn main() {
    common::args::no_options(USAGE);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    tasklet::dispatch(|| {
        if let Err(e) = run() {
            eprintln!("subprocess example failed: {e}");
            std::process::exit(1);
        }
    });
}

fn run() -> std::io::Result<()> {
    // 1. Concurrent children.
    let start = Instant::now();
    let jobs: Vec<_> = (0..20u32)
        .map(|i| {
            tasklet::spawn(move || {
                // Each sleeps 0.1 .. 0.5 s, then reports.
                let script = format!("sleep 0.{}; echo job {i} done", 1 + i % 5);
                Command::new("sh").arg("-c").arg(script).output()
            })
        })
        .collect();
    let mut lines = Vec::new();
    for job in jobs {
        let out = job.join().expect("job tasklet")?;
        lines.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    println!(
        "1. {} children (6 s of sleeping in total) finished in {:.2} s; first: {:?}",
        lines.len(),
        start.elapsed().as_secs_f64(),
        lines[0]
    );

    // 2. Streaming a child's output while another tasklet keeps time.
    let stop = Rc::new(Cell::new(false));
    let ticks = Rc::new(Cell::new(0u32));
    let heartbeat = {
        let (stop, ticks) = (stop.clone(), ticks.clone());
        tasklet::spawn(move || {
            while !stop.get() {
                tasklet::sleep(Duration::from_millis(50));
                ticks.set(ticks.get() + 1);
            }
        })
    };
    let mut child = Command::new("sh")
        .args([
            "-c",
            "for i in 1 2 3 4 5; do echo progress $((i * 20))%; sleep 0.2; done",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        println!(
            "2. child says {:?} (heartbeat has ticked {} times)",
            line?,
            ticks.get()
        );
    }
    let status = child.wait()?;
    stop.set(true);
    heartbeat.join().expect("heartbeat");
    println!("2. child exited with {status}");

    // 3. Giving up on a slow child.
    let slow = tasklet::timeout(Duration::from_millis(300), || {
        Command::new("sleep").arg("10").kill_on_drop(true).status()
    });
    println!(
        "3. `sleep 10` with a 300 ms timeout: {}",
        match slow {
            Ok(r) => format!("finished: {r:?}"),
            Err(_) => "timed out; the child was killed".to_string(),
        }
    );

    // 4. A pipeline, and its output through a file.
    let mut producer = Command::new("printf")
        .arg("cherry\\napple\\nbanana\\n")
        .stdout(Stdio::piped())
        .spawn()?;
    let sorter = Command::new("sort")
        .stdin(Stdio::from(producer.stdout.take().expect("piped stdout")))
        .stdout(Stdio::piped())
        .spawn()?;
    let sorted = sorter.wait_with_output()?;
    producer.wait()?;
    let path = std::env::temp_dir().join(format!("tasklet-subprocess-{}.txt", std::process::id()));
    tasklet::fs::write(&path, &sorted.stdout)?;
    let back = tasklet::fs::read_to_string(&path)?;
    tasklet::fs::remove_file(&path)?;
    println!("4. printf | sort, through {}: {:?}", path.display(), back);
    Ok(())
}
