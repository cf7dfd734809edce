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
//! 4. reads RSS (and the page-table size `VmPTE`) again and prints the delta / count;
//! 5. returns, so every task is torn down (tasklets: `dispatch` kills and
//!    unwinds every sleeper; tokio: the runtime is dropped).
//!
//! A third row, `pages_1m`, is the kernel's floor under the tasklet row:
//! no runtime, just one page populated per 256 KiB of address space (as an
//! idle tasklet's stack costs one fresh page) and unmapped again.
//!
//! Spawn and teardown are timed in wall-clock time and in CPU time
//! (`getrusage`, user and system apart): on a shared machine the wall time
//! swings with the load, the CPU time much less.
//!
//! Scenarios run in passes (`--passes N`, default 3 when benching), tasklet
//! and tokio rows of one size back to back within a pass, so both see the
//! same load; the summary gives the median and the range over the passes.
//!
//! Positional arguments select scenarios by substring (e.g.
//! `cargo bench --bench idle_rss -- 1m --passes 5`); the default runs all of
//! them. Run without `--bench` (as `cargo test --benches` does), it only
//! checks that every scenario works, with 1,000 tasks each and one pass.

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

/// CPU time this process has used so far: (user, system).
fn cpu_time() -> (Duration, Duration) {
    // SAFETY: an all-zero `rusage` is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_SELF needs nothing else.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
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
    /// CPU (user, system) at the start of spawning and after it.
    cpu_start: (Duration, Duration),
    cpu_spawned: (Duration, Duration),
}

fn child_tasklet(count: usize) -> Sample {
    tasklet::dispatch(move || {
        for _ in 0..64 {
            tasklet::spawn(|| ()).join().unwrap();
        }
        let rss_before = rss_bytes();
        let pte_before = status_bytes("VmPTE");
        let started = Rc::new(Cell::new(0usize));
        let cpu_start = cpu_time();
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
        let cpu_spawned = cpu_time();
        Sample {
            rss_before,
            rss_after: rss_bytes(),
            pte_before,
            pte_after: status_bytes("VmPTE"),
            maps: map_count(),
            spawn_time,
            teardown_time: Duration::ZERO,
            cpu_start,
            cpu_spawned,
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
        let cpu_start = cpu_time();
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
        let cpu_spawned = cpu_time();
        Sample {
            rss_before,
            rss_after: rss_bytes(),
            pte_before,
            pte_after: status_bytes("VmPTE"),
            maps: map_count(),
            spawn_time,
            teardown_time: Duration::ZERO,
            cpu_start,
            cpu_spawned,
        }
    })
}

/// The kernel's floor for a tasklet's memory: no runtime, just `count`
/// pages laid out as `count` default-size (256 KiB) stacks would be, each
/// populated with `MADV_POPULATE_WRITE` — a fresh zeroed page (and, per 8
/// of them, a page-table page), as a tasklet's first stack page costs — and
/// unmapped at the end. "spawn" is populating them, "teardown" the munmap.
fn child_pages(count: usize) -> Sample {
    const STRIDE: usize = 256 * 1024;
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    let page = page_size() as usize;
    let len = count * STRIDE;
    // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap {len} bytes");
    // SAFETY: advice on the mapping just made.
    unsafe { libc::madvise(base, len, libc::MADV_NOHUGEPAGE) };
    let rss_before = rss_bytes();
    let pte_before = status_bytes("VmPTE");
    let cpu_start = cpu_time();
    let t0 = Instant::now();
    for i in 0..count {
        let top = base as usize + (i + 1) * STRIDE - page;
        // SAFETY: `top..top + page` lies inside the mapping.
        let r = unsafe { libc::madvise(top as *mut libc::c_void, page, MADV_POPULATE_WRITE) };
        assert_eq!(
            r,
            0,
            "MADV_POPULATE_WRITE: {}",
            std::io::Error::last_os_error()
        );
    }
    let spawn_time = t0.elapsed();
    let cpu_spawned = cpu_time();
    let s = Sample {
        rss_before,
        rss_after: rss_bytes(),
        pte_before,
        pte_after: status_bytes("VmPTE"),
        maps: map_count(),
        spawn_time,
        teardown_time: Duration::ZERO,
        cpu_start,
        cpu_spawned,
    };
    // SAFETY: the whole mapping made above, no longer used.
    unsafe { libc::munmap(base, len) };
    s
}

fn run_child(kind: &str, count: usize) {
    let t0 = Instant::now();
    let mut s = match kind {
        "tasklet" => child_tasklet(count),
        "tokio" => child_tokio(count),
        "pages" => child_pages(count),
        other => panic!("unknown runtime {other:?}"),
    };
    // Everything after the measurement: teardown of all `count` tasks.
    s.teardown_time = t0.elapsed().saturating_sub(s.spawn_time);
    let cpu_end = cpu_time();
    let ns = |d: Duration| d.as_nanos();
    println!(
        "RESULT {} {} {} {} {} {} {} {} {} {} {} {}",
        s.rss_before,
        s.rss_after,
        s.pte_before,
        s.pte_after,
        s.maps,
        ns(s.spawn_time),
        ns(s.teardown_time),
        count,
        ns(s.cpu_spawned.0 - s.cpu_start.0),
        ns(s.cpu_spawned.1 - s.cpu_start.1),
        ns(cpu_end.0 - s.cpu_spawned.0),
        ns(cpu_end.1 - s.cpu_spawned.1),
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
    // The kernel's floor under the tasklet rows: one fresh page each.
    Scenario {
        label: "pages_1m",
        kind: "pages",
        count: 1_000_000,
    },
];

/// One child's figures, per task where it says so.
#[derive(Clone, Copy)]
struct Row {
    count: u128,
    rss_per_task: f64,
    pte_per_task: f64,
    maps: u128,
    /// Wall-clock milliseconds.
    spawn_ms: f64,
    teardown_ms: f64,
    /// CPU (user + system) microseconds per task, and the system part.
    spawn_cpu_us: f64,
    spawn_sys_us: f64,
    teardown_cpu_us: f64,
    teardown_sys_us: f64,
}

fn parse_row(line: &str) -> Row {
    let v: Vec<u128> = line
        .split_whitespace()
        .map(|x| x.parse().expect("child output"))
        .collect();
    let n = v[7];
    let per = |x: u128| x as f64 / n as f64;
    Row {
        count: n,
        rss_per_task: per(v[1].saturating_sub(v[0])),
        pte_per_task: per(v[3].saturating_sub(v[2])),
        maps: v[4],
        spawn_ms: v[5] as f64 / 1e6,
        teardown_ms: v[6] as f64 / 1e6,
        spawn_cpu_us: per(v[8] + v[9]) / 1e3,
        spawn_sys_us: per(v[9]) / 1e3,
        teardown_cpu_us: per(v[10] + v[11]) / 1e3,
        teardown_sys_us: per(v[11]) / 1e3,
    }
}

/// "median (min-max)" of `xs`, each formatted with `f`.
fn spread(xs: &mut [f64], f: impl Fn(f64) -> String) -> String {
    xs.sort_by(f64::total_cmp);
    let median = if xs.len() % 2 == 1 {
        xs[xs.len() / 2]
    } else {
        (xs[xs.len() / 2 - 1] + xs[xs.len() / 2]) / 2.0
    };
    if xs.len() == 1 {
        f(median)
    } else {
        format!("{} ({}-{})", f(median), f(xs[0]), f(xs[xs.len() - 1]))
    }
}

fn ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.2}s", x / 1000.0)
    } else {
        format!("{x:.0}ms")
    }
}

fn us(x: f64) -> String {
    format!("{x:.2}")
}

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
    let passes: usize = match args.iter().position(|a| a == "--passes") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .expect("--passes <N>, N >= 1"),
        None if benching => 3,
        None => 1,
    };
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|&(i, a)| !a.starts_with('-') && (i == 0 || args[i - 1] != "--passes"))
        .map(|(_, a)| a)
        .collect();
    let exe = std::env::current_exe().expect("current_exe");
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|sc| filters.is_empty() || filters.iter().any(|f| sc.label.contains(f.as_str())))
        .collect();
    println!(
        "{:<14} {:>4} {:>9} {:>10} {:>9} {:>5} {:>9} {:>9} {:>13} {:>13}",
        "scenario",
        "pass",
        "tasks",
        "RSS/task",
        "PTE/task",
        "maps",
        "spawn",
        "teardown",
        "spawn CPU/t",
        "tear CPU/t"
    );
    let mut rows: Vec<Vec<Row>> = vec![Vec::new(); chosen.len()];
    let mut failed = 0;
    for pass in 1..=passes {
        for (sc, out_rows) in chosen.iter().zip(rows.iter_mut()) {
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
            let r = parse_row(line);
            println!(
                "{:<14} {:>4} {:>9} {:>8.0} B {:>7.0} B {:>5} {:>9} {:>9} {:>7.2} µs/{:.2} {:>7.2} µs/{:.2}",
                sc.label,
                pass,
                r.count,
                r.rss_per_task,
                r.pte_per_task,
                r.maps,
                ms(r.spawn_ms),
                ms(r.teardown_ms),
                r.spawn_cpu_us,
                r.spawn_sys_us,
                r.teardown_cpu_us,
                r.teardown_sys_us,
            );
            out_rows.push(r);
        }
    }
    if passes > 1 {
        println!("\nmedian (min-max) over {passes} passes; CPU is user+system µs per task");
        for (sc, rs) in chosen.iter().zip(&rows) {
            if rs.is_empty() {
                continue;
            }
            let col = |f: fn(&Row) -> f64| rs.iter().map(f).collect::<Vec<f64>>();
            println!(
                "{:<14} RSS/task {} B  spawn {}  teardown {}  spawn CPU {} µs  teardown CPU {} µs",
                sc.label,
                spread(&mut col(|r| r.rss_per_task), |x| format!("{x:.0}")),
                spread(&mut col(|r| r.spawn_ms), ms),
                spread(&mut col(|r| r.teardown_ms), ms),
                spread(&mut col(|r| r.spawn_cpu_us), us),
                spread(&mut col(|r| r.teardown_cpu_us), us),
            );
        }
    }
    if failed > 0 {
        eprintln!("idle_rss: {failed} scenario(s) failed");
        std::process::exit(1);
    }
}
