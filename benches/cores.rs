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
//!   Its peer is the machine: the same 2-vs-1 ratio for bare `corosensei`
//!   switches (a coroutine suspending to its thread, no runtime) on plain
//!   threads, run right before and after ours in each pass. This VM's two
//!   vCPUs alternate, over seconds, between two speeds for switch-heavy code
//!   (about 65 and 105 million tasklet switches a second, on either CPU, in
//!   the same process), which a pass may straddle; the peer shows what the
//!   machine gave switching code at that moment.
//! - `channel round trip`: a value to the other worker and back over two
//!   capacity-1 channels; tokio multi-thread (2 workers) with two tasks and
//!   `tokio::sync::mpsc`; crossbeam between two plain threads.
//! - `spawn_on + join`: one at a time (latency) and 1000 in flight
//!   (throughput), worker 0 to worker 1; tokio multi-thread `spawn` + `.await`
//!   from outside its workers (so every task crosses threads).
//!
//! A second tokio peer, like for like with a tasklet that never migrates:
//! two `current_thread` runtimes, each driven by its own thread, so every
//! hop crosses threads (`tokio x-thread` below): the channel round trip
//! between a task on each, and `Handle::spawn` onto the other thread's
//! runtime + `.await` from the first. (The multi-thread peer above is the
//! issue's; its scheduler may run both ping-pong tasks on one worker.)
//!
//! The tasklet cross-worker cases run twice: with the default idle spin
//! (`Runtime::idle_spin`, 50 µs) and with it off (`idle_spin(ZERO)`: every
//! wake-up of an idle worker goes through its `eventfd`). Next to the
//! latency, the CPU time the whole process spent per operation (all
//! threads, from `getrusage`): a spinning worker trades CPU for latency.
//!
//! `CASES=channel,spawn` runs only the named groups (`scaling`, `channel`,
//! `spawn`); `CASES=tasklet-channel` and `CASES=tasklet-channel-nospin` run
//! one tasklet channel case alone, to count its system calls per round
//! trip (20,000 round trips per pass):
//!
//! A hub does not spin while the CPUs are oversubscribed (it would slow
//! wake-ups down there), so on a loaded machine the "spin" cases equal the
//! "spin off" ones; `FORCE_SPIN=1` makes the hubs spin anyway, to see what
//! the spin does where a CPU is free (say with the bench at real-time
//! priority, `chrt -f 10`).
//!
//! ```text
//! CASES=tasklet-channel PASSES=1 perf stat -e 'syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait' \
//!     target/release/deps/cores-* --bench
//! ```

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

/// Switches per tasklet per run: about 50–80 ms of a worker's time.
const YIELDS: u64 = 2_500_000;

/// With `n` plain threads each resuming a bare `corosensei` coroutine that
/// suspends straight back (two switches per resume, as a tasklet's yield
/// goes through its dispatcher): aggregate switches per wall-clock second
/// (the slowest thread's time).
fn machine_scaling(n: usize) -> f64 {
    use corosensei::{Coroutine, CoroutineResult};
    let threads: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(|| {
                let mut co = Coroutine::new(|yielder, ()| {
                    for _ in 0..2 * YIELDS {
                        yielder.suspend(());
                    }
                });
                let start = Instant::now();
                while let CoroutineResult::Yield(()) = co.resume(()) {}
                start.elapsed()
            })
        })
        .collect();
    let slowest = threads
        .into_iter()
        .map(|t| t.join().expect("machine peer thread"))
        .max()
        .unwrap();
    (n as u64 * 4 * YIELDS) as f64 / slowest.as_secs_f64()
}

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

/// CPU time of the whole process (every thread), user + system.
fn process_cpu() -> Duration {
    // SAFETY: an all-zero `rusage` is valid for getrusage to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage for getrusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `f` and returns its result and the process CPU time it took, in
/// ns per `ops` operations.
fn with_cpu<R>(ops: u64, f: impl FnOnce() -> R) -> (R, f64) {
    let cpu = process_cpu();
    let r = f();
    (r, (process_cpu() - cpu).as_nanos() as f64 / ops as f64)
}

// ---- channel round trip ----

const ROUND_TRIPS: u64 = 20_000;

fn tasklet_channel_rt(spin: Option<Duration>) -> f64 {
    let (to1, from0) = tasklet::sync::channel::<u64>(1);
    let (to0, from1) = tasklet::sync::channel::<u64>(1);
    // Each worker takes its two ends: when worker 0 is done and drops its
    // sender, worker 1's loop ends.
    let ping = std::sync::Mutex::new(Some((to1, from1)));
    let pong = std::sync::Mutex::new(Some((to0, from0)));
    let mut rt = Runtime::new().workers(2);
    if let Some(s) = spin {
        rt = rt.idle_spin(s);
    }
    let out = rt.run(move || {
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

/// Two tokio `current_thread` runtimes on two threads: runs `f` on the
/// first (in `block_on`) with a handle to the second, which another thread
/// drives until `f` returns.
fn tokio_two_threads<R: Send + 'static>(
    f: impl FnOnce(tokio::runtime::Handle) -> std::pin::Pin<Box<dyn std::future::Future<Output = R>>>
        + Send
        + 'static,
) -> R {
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime")
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let b = std::thread::spawn(move || {
        let rt = current();
        handle_tx.send(rt.handle().clone()).unwrap();
        rt.block_on(async move {
            let _ = stopped.await;
        });
    });
    let other = handle_rx.recv().unwrap();
    let r = current().block_on(f(other));
    stop.send(()).unwrap();
    b.join().unwrap();
    r
}

fn tokio_xthread_channel_rt() -> f64 {
    tokio_two_threads(|other| {
        Box::pin(async move {
            let (to1, mut from0) = tokio::sync::mpsc::channel::<u64>(1);
            let (to0, mut from1) = tokio::sync::mpsc::channel::<u64>(1);
            let echo = other.spawn(async move {
                while let Some(v) = from0.recv().await {
                    to0.send(v).await.unwrap();
                }
            });
            let start = Instant::now();
            for i in 0..ROUND_TRIPS {
                to1.send(i).await.unwrap();
                assert_eq!(from1.recv().await, Some(i));
            }
            let t = start.elapsed();
            drop(to1);
            echo.await.unwrap();
            t.as_nanos() as f64 / ROUND_TRIPS as f64
        })
    })
}

// ---- spawn_on + join ----

const SPAWNS: u64 = 20_000;
const IN_FLIGHT: u64 = 1000;

/// (ns per spawn+join one at a time, ns per spawn+join with 1000 in flight)
fn tasklet_spawn_join(spin: Option<Duration>) -> (f64, f64) {
    let mut rt = Runtime::new().workers(2);
    if let Some(s) = spin {
        rt = rt.idle_spin(s);
    }
    let out = rt.run(|| {
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

/// (one at a time, 1000 in flight), as [`tokio_spawn_join`], but every task
/// spawned onto the other thread's `current_thread` runtime.
fn tokio_xthread_spawn_join() -> (f64, f64) {
    tokio_two_threads(|other| {
        Box::pin(async move {
            let start = Instant::now();
            for i in 0..SPAWNS {
                assert_eq!(other.spawn(async move { i }).await.unwrap(), i);
            }
            let one = start.elapsed().as_nanos() as f64 / SPAWNS as f64;
            let start = Instant::now();
            for _ in 0..SPAWNS / IN_FLIGHT {
                let hs: Vec<_> = (0..IN_FLIGHT)
                    .map(|i| other.spawn(async move { i }))
                    .collect();
                for (i, h) in hs.into_iter().enumerate() {
                    assert_eq!(h.await.unwrap(), i as u64);
                }
            }
            let batch = start.elapsed().as_nanos() as f64 / SPAWNS as f64;
            (one, batch)
        })
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let passes = if quick { 1 } else { passes() };
    if std::env::var_os("FORCE_SPIN").is_some() {
        // Spin even while the CPUs look oversubscribed (see the module doc).
        tasklet::__force_idle_spin(true);
    }
    let rt = tokio_mt(2);
    let cases = std::env::var("CASES").unwrap_or_else(|_| "scaling,channel,spawn".into());
    let on = |group: &str| cases.split(',').any(|c| c.trim() == group);
    let off = Some(Duration::ZERO);
    let names = [
        "scaling: tasklet 1 worker (switches/s)",
        "scaling: tasklet 2 workers (switches/s)",
        "scaling: tasklet 1 worker (switches/CPU-s)",
        "scaling: tasklet 2 workers (sum of switches/CPU-s)",
        "channel round trip: tasklet 2 workers (ns)",
        "channel round trip: tasklet, idle spin off (ns)",
        "channel round trip: tokio multi-thread 2 workers (ns)",
        "channel round trip: crossbeam 2 threads (ns)",
        "channel round trip: tasklet, CPU (ns/rt)",
        "channel round trip: tasklet, spin off, CPU (ns/rt)",
        "channel round trip: tokio, CPU (ns/rt)",
        "channel round trip: crossbeam, CPU (ns/rt)",
        "spawn_on+join one at a time: tasklet (ns)",
        "spawn_on+join one at a time: tasklet, spin off (ns)",
        "spawn+await one at a time: tokio multi-thread (ns)",
        "spawn_on+join 1000 in flight: tasklet (ns/op)",
        "spawn_on+join 1000 in flight: tasklet, spin off (ns/op)",
        "spawn+await 1000 in flight: tokio multi-thread (ns/op)",
        "spawn_on+join both cases: tasklet, CPU (ns/op)",
        "spawn_on+join both cases: tasklet, spin off, CPU (ns/op)",
        "spawn+await both cases: tokio, CPU (ns/op)",
        "channel round trip: tokio x-thread 2 current_thread (ns)",
        "spawn+await one at a time: tokio x-thread (ns)",
        "spawn+await 1000 in flight: tokio x-thread (ns/op)",
        "scaling: machine, bare switches, 1 thread (switches/s)",
        "scaling: machine, bare switches, 2 threads (switches/s)",
    ];
    let mut stats: Vec<Stats> = names.iter().map(|_| Stats(Vec::new())).collect();
    for pass in 0..passes {
        let mut v = vec![f64::NAN; names.len()];
        if on("scaling") {
            // Each 2-vs-1 pair back to back: the machine's regime changes
            // over seconds, a run takes tens of milliseconds.
            v[24] = machine_scaling(1);
            v[25] = machine_scaling(2);
            (v[0], v[2]) = tasklet_scaling(1);
            (v[1], v[3]) = tasklet_scaling(2);
        }
        if on("channel") || on("tasklet-channel") {
            (v[4], v[8]) = with_cpu(ROUND_TRIPS, || tasklet_channel_rt(None));
        }
        if on("channel") {
            (v[6], v[10]) = with_cpu(ROUND_TRIPS, || tokio_channel_rt(&rt));
        }
        if on("channel") || on("tasklet-channel-nospin") {
            (v[5], v[9]) = with_cpu(ROUND_TRIPS, || tasklet_channel_rt(off));
        }
        if on("channel") {
            (v[7], v[11]) = with_cpu(ROUND_TRIPS, crossbeam_channel_rt);
            v[21] = tokio_xthread_channel_rt();
        }
        if on("spawn") {
            ((v[12], v[15]), v[18]) = with_cpu(2 * SPAWNS, || tasklet_spawn_join(None));
            ((v[14], v[17]), v[20]) = with_cpu(2 * SPAWNS, || tokio_spawn_join(&rt));
            ((v[13], v[16]), v[19]) = with_cpu(2 * SPAWNS, || tasklet_spawn_join(off));
            (v[22], v[23]) = tokio_xthread_spawn_join();
        }
        for (s, v) in stats.iter_mut().zip(v) {
            if !v.is_nan() {
                s.0.push(v);
            }
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
        if s.0.is_empty() {
            continue;
        }
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
        (
            "scaling ratio 2/1 bare switches, machine (per pass)",
            25,
            24,
        ),
        ("channel rt ratio tasklet/tokio (per pass)", 4, 6),
        ("channel rt ratio tasklet/crossbeam (per pass)", 4, 7),
        ("channel rt ratio tasklet spin on/off (per pass)", 4, 5),
        ("spawn_on+join ratio tasklet/tokio, one (per pass)", 12, 14),
        ("spawn_on+join ratio tasklet/tokio, 1000 (per pass)", 15, 17),
        ("channel rt ratio tasklet/tokio x-thread (per pass)", 4, 21),
        ("spawn_on+join ratio tasklet/tokio x-thread, one", 12, 22),
        ("spawn_on+join ratio tasklet/tokio x-thread, 1000", 15, 23),
    ] {
        if stats[two].0.is_empty() || stats[one].0.is_empty() {
            continue;
        }
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
    if !stats[0].0.is_empty() {
        // Our scaling over the machine's, pass by pass: 1.0 is all the
        // machine gave switching code at that moment.
        let of_machine = Stats(
            (0..stats[0].0.len())
                .map(|i| (stats[1].0[i] / stats[0].0[i]) / (stats[25].0[i] / stats[24].0[i]))
                .collect(),
        );
        println!(
            "{:<56} median {:>14.2}   spread {:.2} .. {:.2}",
            "scaling 2/1 workers over the machine's 2/1 (per pass)",
            of_machine.median(),
            of_machine.min(),
            of_machine.max()
        );
    }
}
