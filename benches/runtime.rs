//! Core runtime micro-benchmarks, each beside its tokio current-thread twin.
//!
//! Every measurement runs a batch of `iters` operations inside one
//! `tasklet::dispatch` (or one `block_on`) and times only the batch, so
//! dispatcher / runtime construction is not measured.
//!
//! Run with `cargo bench --bench runtime`; figures and goals are in
//! `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

/// The tokio twin: a current-thread runtime with I/O and timers, as
/// `#[tokio::main(flavor = "current_thread")]` builds it.
fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A current-thread tokio runtime with timers only (no I/O driver).
fn tokio_rt_time_only() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// `iters` yields split between two tasklets that take turns: one iteration
/// is one `yield_now`, i.e. one switch out through the dispatcher and into the
/// other tasklet.
fn tasklet_yield_pingpong(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let half = iters / 2;
        let start = Instant::now();
        let a = tasklet::spawn(move || {
            for _ in 0..half {
                tasklet::yield_now();
            }
        });
        let b = tasklet::spawn(move || {
            for _ in 0..iters - half {
                tasklet::yield_now();
            }
        });
        a.join().unwrap();
        b.join().unwrap();
        start.elapsed()
    })
}

fn tokio_yield_pingpong(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        let half = iters / 2;
        let start = Instant::now();
        let a = tokio::spawn(async move {
            for _ in 0..half {
                tokio::task::yield_now().await;
            }
        });
        let b = tokio::spawn(async move {
            for _ in 0..iters - half {
                tokio::task::yield_now().await;
            }
        });
        a.await.unwrap();
        b.await.unwrap();
        start.elapsed()
    })
}

fn bench_yield(c: &mut Criterion) {
    let mut g = c.benchmark_group("yield_pingpong");
    g.bench_function("tasklet", |b| b.iter_custom(tasklet_yield_pingpong));
    let rt = tokio_rt();
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| tokio_yield_pingpong(&rt, iters))
    });
    let rt = tokio_rt_time_only();
    g.bench_function("tokio_time_only", |b| {
        b.iter_custom(|iters| tokio_yield_pingpong(&rt, iters))
    });
    g.finish();
}

/// Tasks taking turns in one ring: one iteration is one `yield_now`, with
/// `TASKS` stacks (or task cells) cycling through the cache.
const TASKS: u64 = 1000;

fn tasklet_yield_many(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let per = iters.div_ceil(TASKS);
        let start = Instant::now();
        let hs: Vec<_> = (0..TASKS)
            .map(|_| {
                tasklet::spawn(move || {
                    for _ in 0..per {
                        tasklet::yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        // Scale to exactly `iters` switches.
        start.elapsed().mul_f64(iters as f64 / (per * TASKS) as f64)
    })
}

fn tokio_yield_many(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        let per = iters.div_ceil(TASKS);
        let start = Instant::now();
        let hs: Vec<_> = (0..TASKS)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..per {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
        start.elapsed().mul_f64(iters as f64 / (per * TASKS) as f64)
    })
}

fn bench_yield_many(c: &mut Criterion) {
    let mut g = c.benchmark_group("yield_ring_1000");
    g.bench_function("tasklet", |b| b.iter_custom(tasklet_yield_many));
    let rt = tokio_rt();
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| tokio_yield_many(&rt, iters))
    });
    g.finish();
}

/// Warm spawn + join of an empty tasklet (stacks come from the pool).
fn tasklet_spawn_join(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        // Warm the stack pool and the dispatcher's queues.
        for _ in 0..64 {
            tasklet::spawn(|| ()).join().unwrap();
        }
        let start = Instant::now();
        for i in 0..iters {
            black_box(tasklet::spawn(move || black_box(i)).join().unwrap());
        }
        start.elapsed()
    })
}

fn tokio_spawn_join(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        for _ in 0..64 {
            tokio::spawn(async {}).await.unwrap();
        }
        let start = Instant::now();
        for i in 0..iters {
            black_box(tokio::spawn(async move { black_box(i) }).await.unwrap());
        }
        start.elapsed()
    })
}

/// tokio's closest analogue of a `!Send` tasklet: `spawn_local` on a `LocalSet`.
fn tokio_local_spawn_join(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    let local = tokio::task::LocalSet::new();
    local.block_on(rt, async move {
        for _ in 0..64 {
            tokio::task::spawn_local(async {}).await.unwrap();
        }
        let start = Instant::now();
        for i in 0..iters {
            black_box(
                tokio::task::spawn_local(async move { black_box(i) })
                    .await
                    .unwrap(),
            );
        }
        start.elapsed()
    })
}

fn bench_spawn_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_join");
    g.bench_function("tasklet", |b| b.iter_custom(tasklet_spawn_join));
    let rt = tokio_rt();
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| tokio_spawn_join(&rt, iters))
    });
    g.bench_function("tokio_local_set", |b| {
        b.iter_custom(|iters| tokio_local_spawn_join(&rt, iters))
    });
    g.finish();
}

/// A timer that has already expired when the task parks on it (a deadline
/// 1 ms in the past, so tokio's millisecond rounding cannot push it into the
/// future): measures arming, firing and the switches, not the clock.
fn tasklet_timer_expired(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let start = Instant::now();
        for _ in 0..iters {
            tasklet::sleep_until(Instant::now() - Duration::from_millis(1));
        }
        start.elapsed()
    })
}

fn tokio_timer_expired(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        let start = Instant::now();
        for _ in 0..iters {
            tokio::time::sleep_until(tokio::time::Instant::now() - Duration::from_millis(1)).await;
        }
        start.elapsed()
    })
}

/// `sleep(1 µs)`: includes the event loop's wait (epoll timeouts have
/// millisecond granularity in both runtimes).
fn tasklet_sleep_1us(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let start = Instant::now();
        for _ in 0..iters {
            tasklet::sleep(Duration::from_micros(1));
        }
        start.elapsed()
    })
}

fn tokio_sleep_1us(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        let start = Instant::now();
        for _ in 0..iters {
            tokio::time::sleep(Duration::from_micros(1)).await;
        }
        start.elapsed()
    })
}

fn bench_timer(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer_expired");
    g.bench_function("tasklet", |b| b.iter_custom(tasklet_timer_expired));
    let rt = tokio_rt();
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| tokio_timer_expired(&rt, iters))
    });
    g.finish();

    let mut g = c.benchmark_group("sleep_1us");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g.bench_function("tasklet", |b| b.iter_custom(tasklet_sleep_1us));
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| tokio_sleep_1us(&rt, iters))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_yield,
    bench_yield_many,
    bench_spawn_join,
    bench_timer
);
criterion_main!(benches);
