//! All cores: `tasklet::Runtime` against itself with one worker, tokio's
//! multi-thread runtime and crossbeam threads, in the same run.
//!
//! ```text
//! cargo bench --bench cores            # 5 interleaved passes
//! PASSES=9 cargo bench --bench cores
//! ```
//!
//! Every case runs once per pass, the cases alternating within a pass, so
//! machine drift hits all of them alike. Printed: the median over passes and
//! the spread (min–max). Figures and goals are in `docs/benchmarks.md`.
//!
//! - `scaling`: CPU-bound aggregate switch rate — every worker runs two
//!   tasklets that `yield_now` to each other — with 2 workers vs 1 (goal ≥ 1.9×).
//! - `channel round trip`: a value to the other worker and back over two
//!   capacity-1 channels; tokio multi-thread (2 workers) with two tasks and
//!   `tokio::sync::mpsc`; crossbeam between two plain threads.
//! - `spawn_on + join`: one at a time (latency) and 1000 in flight
//!   (throughput), worker 0 to worker 1; tokio multi-thread `spawn` + `.await`
//!   from outside its workers (so every task crosses threads).

use std::time::{Duration, Instant};

use tasklet::{spawn_on, worker_index, Runtime};

fn passes() -> usize {
    std::env::var("PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Median and spread of one case's per-pass figures.
struct Stats(Vec<f64>);

impl Stats {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }
    fn min(&self) -> f64 {
        self.0.iter().cloned().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.0.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
    }
}

// ---- scaling ----

const YIELDS: u64 = 1_000_000;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// With `n` workers: (aggregate `yield_now` switches per wall-clock second,
/// aggregate switches per second of each worker's own CPU time). The second
/// is what the workers would reach with a free core each: on a loaded
/// machine the first is capped by the CPU the scheduler grants.
fn tasklet_scaling(n: usize) -> (f64, f64) {
    let per_worker = Runtime::new().workers(n).run(|| {
        let start = Instant::now();
        let cpu = thread_cpu();
        let a = tasklet::spawn(|| {
            for _ in 0..YIELDS {
                tasklet::yield_now();
            }
        });
        let b = tasklet::spawn(|| {
            for _ in 0..YIELDS {
                tasklet::yield_now();
            }
        });
        a.join().unwrap();
        b.join().unwrap();
        (start.elapsed(), thread_cpu() - cpu)
    });
    let slowest = per_worker.iter().map(|w| w.0).max().unwrap().as_secs_f64();
    let per_cpu: f64 = per_worker
        .iter()
        .map(|w| (2 * YIELDS) as f64 / w.1.as_secs_f64())
        .sum();
    ((n as u64 * 2 * YIELDS) as f64 / slowest, per_cpu)
}

// ---- channel round trip ----

const ROUND_TRIPS: u64 = 20_000;

fn tasklet_channel_rt() -> f64 {
    let (to1, from0) = tasklet::sync::channel::<u64>(1);
    let (to0, from1) = tasklet::sync::channel::<u64>(1);
    // Each worker takes its two ends: when worker 0 is done and drops its
    // sender, worker 1's loop ends.
    let ping = std::sync::Mutex::new(Some((to1, from1)));
    let pong = std::sync::Mutex::new(Some((to0, from0)));
    let out = Runtime::new().workers(2).run(move || {
        if worker_index() == Some(0) {
            let (to1, from1) = ping.lock().unwrap().take().unwrap();
            let start = Instant::now();
            for i in 0..ROUND_TRIPS {
                to1.send(i).unwrap();
                assert_eq!(from1.recv().unwrap(), i);
            }
            start.elapsed()
        } else {
            let (to0, from0) = pong.lock().unwrap().take().unwrap();
            for v in from0.iter() {
                to0.send(v).unwrap();
            }
            Duration::ZERO
        }
    });
    out[0].as_nanos() as f64 / ROUND_TRIPS as f64
}

fn tokio_mt(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .build()
        .expect("tokio runtime")
}

fn tokio_channel_rt(rt: &tokio::runtime::Runtime) -> f64 {
    rt.block_on(async {
        let (to1, mut from0) = tokio::sync::mpsc::channel::<u64>(1);
        let (to0, mut from1) = tokio::sync::mpsc::channel::<u64>(1);
        let echo = tokio::spawn(async move {
            while let Some(v) = from0.recv().await {
                to0.send(v).await.unwrap();
            }
        });
        let start = Instant::now();
        let ping = tokio::spawn(async move {
            for i in 0..ROUND_TRIPS {
                to1.send(i).await.unwrap();
                assert_eq!(from1.recv().await, Some(i));
            }
        });
        ping.await.unwrap();
        let t = start.elapsed();
        echo.await.unwrap();
        t.as_nanos() as f64 / ROUND_TRIPS as f64
    })
}

fn crossbeam_channel_rt() -> f64 {
    let (to1, from0) = crossbeam_channel::bounded::<u64>(1);
    let (to0, from1) = crossbeam_channel::bounded::<u64>(1);
    let echo = std::thread::spawn(move || {
        for v in from0.iter() {
            to0.send(v).unwrap();
        }
    });
    let start = Instant::now();
    for i in 0..ROUND_TRIPS {
        to1.send(i).unwrap();
        assert_eq!(from1.recv().unwrap(), i);
    }
    let t = start.elapsed();
    drop(to1);
    echo.join().unwrap();
    t.as_nanos() as f64 / ROUND_TRIPS as f64
}

// ---- spawn_on + join ----

const SPAWNS: u64 = 20_000;
const IN_FLIGHT: u64 = 1000;

/// (ns per spawn+join one at a time, ns per spawn+join with 1000 in flight)
fn tasklet_spawn_join() -> (f64, f64) {
    let out = Runtime::new().workers(2).run(|| {
        if worker_index() != Some(0) {
            return (0.0, 0.0);
        }
        let start = Instant::now();
        for i in 0..SPAWNS {
            assert_eq!(spawn_on(1, move || i).join().unwrap(), i);
        }
        let one = start.elapsed().as_nanos() as f64 / SPAWNS as f64;
        let start = Instant::now();
        for _ in 0..SPAWNS / IN_FLIGHT {
            let hs: Vec<_> = (0..IN_FLIGHT).map(|i| spawn_on(1, move || i)).collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.join().unwrap(), i as u64);
            }
        }
        let batch = start.elapsed().as_nanos() as f64 / SPAWNS as f64;
        (one, batch)
    });
    out[0]
}

fn tokio_spawn_join(rt: &tokio::runtime::Runtime) -> (f64, f64) {
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..SPAWNS {
            assert_eq!(tokio::spawn(async move { i }).await.unwrap(), i);
        }
        let one = start.elapsed().as_nanos() as f64 / SPAWNS as f64;
        let start = Instant::now();
        for _ in 0..SPAWNS / IN_FLIGHT {
            let hs: Vec<_> = (0..IN_FLIGHT)
                .map(|i| tokio::spawn(async move { i }))
                .collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.await.unwrap(), i as u64);
            }
        }
        let batch = start.elapsed().as_nanos() as f64 / SPAWNS as f64;
        (one, batch)
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let passes = if quick { 1 } else { passes() };
    let rt = tokio_mt(2);
    let names = [
        "scaling: tasklet 1 worker (switches/s)",
        "scaling: tasklet 2 workers (switches/s)",
        "scaling: tasklet 1 worker (switches/CPU-s)",
        "scaling: tasklet 2 workers (sum of switches/CPU-s)",
        "channel round trip: tasklet 2 workers (ns)",
        "channel round trip: tokio multi-thread 2 workers (ns)",
        "channel round trip: crossbeam 2 threads (ns)",
        "spawn_on+join one at a time: tasklet (ns)",
        "spawn+await one at a time: tokio multi-thread (ns)",
        "spawn_on+join 1000 in flight: tasklet (ns/op)",
        "spawn+await 1000 in flight: tokio multi-thread (ns/op)",
    ];
    let mut stats: Vec<Stats> = names.iter().map(|_| Stats(Vec::new())).collect();
    for pass in 0..passes {
        let (s1, c1) = tasklet_scaling(1);
        let (s2, c2) = tasklet_scaling(2);
        let ct = tasklet_channel_rt();
        let ck = tokio_channel_rt(&rt);
        let cc = crossbeam_channel_rt();
        let (t1, tb) = tasklet_spawn_join();
        let (k1, kb) = tokio_spawn_join(&rt);
        for (s, v) in stats
            .iter_mut()
            .zip([s1, s2, c1, c2, ct, ck, cc, t1, k1, tb, kb])
        {
            s.0.push(v);
        }
        eprintln!("pass {}/{passes} done", pass + 1);
    }
    println!(
        "# cores: {passes} interleaved pass(es), {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (name, s) in names.iter().zip(&stats) {
        println!(
            "{name:<56} median {:>14.1}   spread {:.1} .. {:.1}",
            s.median(),
            s.min(),
            s.max()
        );
    }
    for (name, two, one) in [
        ("scaling ratio 2/1 workers, wall clock (per pass)", 1, 0),
        ("scaling ratio 2/1 workers, per CPU-s (per pass)", 3, 2),
    ] {
        let ratio = Stats(
            stats[two]
                .0
                .iter()
                .zip(&stats[one].0)
                .map(|(b, a)| b / a)
                .collect(),
        );
        println!(
            "{name:<56} median {:>14.2}   spread {:.2} .. {:.2}",
            ratio.median(),
            ratio.min(),
            ratio.max()
        );
    }
}
