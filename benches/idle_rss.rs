//! Memory per idle (sleeping) tasklet, beside tokio's current-thread twin,
//! and the 1,000,000-idle-tasklets run.
//!
//! `cargo bench --bench idle_rss` runs each scenario in a fresh child process
//! (this same binary, re-executed with `--child <runtime> <count>`) so one
//! scenario's freed memory cannot flatter the next one. A child:
//!
//! 1. starts its runtime and warms it up (a few spawn+join cycles);
//! 2. reads its resident set size from `/proc/self/statm`;
//! 3. spawns `count` tasks that each bump a counter and then sleep for an hour,
//!    and waits until every one of them has run and is parked on its timer;
//! 4. reads RSS (and the page-table size `VmPTE`) again and prints the delta / count.
//!
//! Positional arguments select scenarios by substring (e.g.
//! `cargo bench --bench idle_rss -- 100k`); the default runs all of them.
//! Run without `--bench` (as `cargo test --benches` does), it only checks
//! that every scenario works, with 1,000 tasks each.

use std::cell::Cell;
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);

/// Resident set size of this process in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("parse /proc/self/statm");
    resident * page_size()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// A `/proc/self/status` field in bytes (the file reports kB).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

/// What a child measured.
struct Sample {
    rss_before: u64,
    rss_after: u64,
    pte_before: u64,
    pte_after: u64,
    maps: usize,
    spawn_time: Duration,
    teardown_time: Duration,
}

fn child_tasklet(count: usize) -> Sample {
    tasklet::dispatch(move || {
        for _ in 0..64 {
            tasklet::spawn(|| ()).join().unwrap();
        }
        let rss_before = rss_bytes();
        let pte_before = status_bytes("VmPTE");
        let started = Rc::new(Cell::new(0usize));
        let t0 = Instant::now();
        for _ in 0..count {
            let started = started.clone();
            // Detached: the handles would only add their own size to the figure.
            drop(tasklet::spawn(move || {
                started.set(started.get() + 1);
                tasklet::sleep(HOUR);
            }));
        }
        while started.get() < count {
            tasklet::yield_now();
        }
        let spawn_time = t0.elapsed();
        Sample {
            rss_before,
            rss_after: rss_bytes(),
            pte_before,
            pte_after: status_bytes("VmPTE"),
            maps: map_count(),
            spawn_time,
            teardown_time: Duration::ZERO,
        }
    })
}

fn child_tokio(count: usize) -> Sample {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        for _ in 0..64 {
            tokio::spawn(async {}).await.unwrap();
        }
        let rss_before = rss_bytes();
        let pte_before = status_bytes("VmPTE");
        let started = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        for _ in 0..count {
            let started = started.clone();
            drop(tokio::spawn(async move {
                started.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(HOUR).await;
            }));
        }
        // A task bumps the counter and polls its sleep in the same poll, so
        // once the count is complete every task is parked on its timer.
        while started.load(Ordering::Relaxed) < count {
            tokio::task::yield_now().await;
        }
        let spawn_time = t0.elapsed();
        Sample {
            rss_before,
            rss_after: rss_bytes(),
            pte_before,
            pte_after: status_bytes("VmPTE"),
            maps: map_count(),
            spawn_time,
            teardown_time: Duration::ZERO,
        }
    })
}

fn run_child(kind: &str, count: usize) {
    let t0 = Instant::now();
    let mut s = match kind {
        "tasklet" => child_tasklet(count),
        "tokio" => child_tokio(count),
        other => panic!("unknown runtime {other:?}"),
    };
    // Everything after the measurement: teardown of all `count` tasks.
    s.teardown_time = t0.elapsed().saturating_sub(s.spawn_time);
    println!(
        "RESULT {} {} {} {} {} {} {} {}",
        s.rss_before,
        s.rss_after,
        s.pte_before,
        s.pte_after,
        s.maps,
        s.spawn_time.as_nanos(),
        s.teardown_time.as_nanos(),
        count
    );
}

struct Scenario {
    label: &'static str,
    kind: &'static str,
    count: usize,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        label: "tasklet_100k",
        kind: "tasklet",
        count: 100_000,
    },
    Scenario {
        label: "tokio_100k",
        kind: "tokio",
        count: 100_000,
    },
    Scenario {
        label: "tasklet_1m",
        kind: "tasklet",
        count: 1_000_000,
    },
    Scenario {
        label: "tokio_1m",
        kind: "tokio",
        count: 1_000_000,
    },
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let kind = args.get(1).expect("--child <runtime> <count>");
        let count: usize = args
            .get(2)
            .and_then(|c| c.parse().ok())
            .expect("--child <runtime> <count>");
        run_child(kind, count);
        return;
    }
    // `cargo bench` passes `--bench`; other positional arguments filter.
    let benching = args.iter().any(|a| a == "--bench");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let exe = std::env::current_exe().expect("current_exe");
    println!(
        "{:<14} {:>10} {:>12} {:>14} {:>12} {:>7} {:>10} {:>10}",
        "scenario", "tasks", "RSS delta", "RSS/task", "PTE/task", "maps", "spawn", "teardown"
    );
    let mut failed = 0;
    for sc in SCENARIOS {
        if !filters.is_empty() && !filters.iter().any(|f| sc.label.contains(f.as_str())) {
            continue;
        }
        let count = if benching { sc.count } else { 1_000 };
        let out = Command::new(&exe)
            .args(["--child", sc.kind, &count.to_string()])
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
            println!(
                "{:<14} FAILED ({}): {}",
                sc.label,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            failed += 1;
            continue;
        };
        let v: Vec<u128> = line
            .split_whitespace()
            .map(|x| x.parse().expect("child output"))
            .collect();
        let (rss0, rss1, pte0, pte1, maps, spawn_ns, down_ns, n) =
            (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
        let delta = rss1.saturating_sub(rss0);
        println!(
            "{:<14} {:>10} {:>9.1} MiB {:>10.0} B {:>9.0} B {:>7} {:>8.0}ms {:>8.0}ms",
            sc.label,
            n,
            delta as f64 / (1024.0 * 1024.0),
            delta as f64 / n as f64,
            pte1.saturating_sub(pte0) as f64 / n as f64,
            maps,
            spawn_ns as f64 / 1e6,
            down_ns as f64 / 1e6,
        );
    }
    if failed > 0 {
        eprintln!("idle_rss: {failed} scenario(s) failed");
        std::process::exit(1);
    }
}
