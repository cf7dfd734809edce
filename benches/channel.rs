//! `tasklet::sync` channel benchmarks, side by side with crossbeam-channel
//! between two OS threads and tokio's mpsc in one current-thread runtime.
//!
//! - `channel_pingpong`: one iteration is one round trip (A sends to B, B
//!   sends back). `tasklet_2_yields` is the floor the goal is stated
//!   against: two dispatcher switches and nothing else (`_no_watchdog`:
//!   the same with the watchdog off, to show its switch-path cost).
//! - `channel_stream`: a producer streams values to a consumer on the same
//!   dispatcher (tokio: the same runtime) through a bounded channel of
//!   capacity 1 or 16; one iteration is one value. Unlike the ping-pong,
//!   the producer keeps finding the channel full, so this measures the
//!   blocked-sender path.
//! - `mutex_contended`: two tasklets (tokio: two tasks of one
//!   current-thread runtime) each take a mutex, yield while holding it and
//!   release it, so every lock after the first waits for the other's
//!   unlock (a FIFO hand-over in both); one iteration is one lock (and
//!   one yield). The tokio runtime has no I/O or time driver here.
//! - `cross_thread_roundtrip`: a plain OS thread sends to a receiver that
//!   must be woken on another thread (a parked tasklet on its dispatcher, a
//!   tokio task, or a thread) and gets a reply back; one iteration is one
//!   round trip, i.e. two cross-thread wake-ups.
//!
//! Run with `cargo bench --bench channel`; figures are in
//! `docs/benchmarks.md` ("Sync & offload").

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

fn tasklet_pingpong(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let (to_b, from_a) = tasklet::sync::channel::<u64>(1);
        let (to_a, from_b) = tasklet::sync::channel::<u64>(1);
        let b = tasklet::spawn(move || {
            for v in &from_a {
                to_a.send(v + 1).unwrap();
            }
        });
        tasklet::yield_now();
        let start = Instant::now();
        let mut v = 0;
        for _ in 0..iters {
            to_b.send(v).unwrap();
            v = from_b.recv().unwrap();
        }
        let t = start.elapsed();
        assert_eq!(v, iters);
        drop(to_b);
        b.join().unwrap();
        t
    })
}

fn tasklet_two_yields(iters: u64) -> Duration {
    two_yields(tasklet::Config::new(), iters)
}

/// The same with the blocked-dispatcher watchdog off: shows what its
/// switch-path hook costs.
fn tasklet_two_yields_no_watchdog(iters: u64) -> Duration {
    two_yields(tasklet::Config::new().max_blocking(None), iters)
}

fn two_yields(config: tasklet::Config, iters: u64) -> Duration {
    config.dispatch(move || {
        let b = tasklet::spawn(move || {
            for _ in 0..iters {
                tasklet::yield_now();
            }
        });
        let start = Instant::now();
        for _ in 0..iters {
            tasklet::yield_now();
        }
        let t = start.elapsed();
        b.join().unwrap();
        t
    })
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn tokio_pingpong(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        let (to_b, mut from_a) = tokio::sync::mpsc::channel::<u64>(1);
        let (to_a, mut from_b) = tokio::sync::mpsc::channel::<u64>(1);
        let b = tokio::spawn(async move {
            while let Some(v) = from_a.recv().await {
                to_a.send(v + 1).await.unwrap();
            }
        });
        tokio::task::yield_now().await;
        let start = Instant::now();
        let mut v = 0;
        for _ in 0..iters {
            to_b.send(v).await.unwrap();
            v = from_b.recv().await.unwrap();
        }
        let t = start.elapsed();
        assert_eq!(v, iters);
        drop(to_b);
        b.await.unwrap();
        t
    })
}

fn crossbeam_pingpong(iters: u64) -> Duration {
    let (to_b, from_a) = crossbeam_channel::bounded::<u64>(1);
    let (to_a, from_b) = crossbeam_channel::bounded::<u64>(1);
    let b = std::thread::spawn(move || {
        for v in from_a {
            to_a.send(v + 1).unwrap();
        }
    });
    let start = Instant::now();
    let mut v = 0;
    for _ in 0..iters {
        to_b.send(v).unwrap();
        v = from_b.recv().unwrap();
    }
    let t = start.elapsed();
    assert_eq!(v, iters);
    drop(to_b);
    b.join().unwrap();
    t
}

fn tasklet_stream(cap: usize, iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let (tx, rx) = tasklet::sync::channel::<u64>(cap);
        let consumer = tasklet::spawn(move || rx.iter().fold(0u64, |a, v| a.wrapping_add(v)));
        let start = Instant::now();
        for i in 0..iters {
            tx.send(i).unwrap();
        }
        drop(tx);
        let sum = consumer.join().unwrap();
        let t = start.elapsed();
        assert_eq!(sum, (0..iters).fold(0u64, |a, v| a.wrapping_add(v)));
        t
    })
}

fn tokio_stream(rt: &tokio::runtime::Runtime, cap: usize, iters: u64) -> Duration {
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(cap);
        let consumer = tokio::spawn(async move {
            let mut sum = 0u64;
            while let Some(v) = rx.recv().await {
                sum = sum.wrapping_add(v);
            }
            sum
        });
        let start = Instant::now();
        for i in 0..iters {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        let sum = consumer.await.unwrap();
        let t = start.elapsed();
        assert_eq!(sum, (0..iters).fold(0u64, |a, v| a.wrapping_add(v)));
        t
    })
}

/// A plain thread pings a tasklet parked on a dispatcher in another thread.
fn tasklet_cross_thread(iters: u64) -> Duration {
    let (to_t, from_thread) = tasklet::sync::channel::<u64>(1);
    let (to_thread, from_t) = tasklet::sync::channel::<u64>(1);
    let d = std::thread::spawn(move || {
        tasklet::dispatch(move || {
            for v in &from_thread {
                to_thread.send(v + 1).unwrap();
            }
        })
    });
    let start = Instant::now();
    let mut v = 0;
    for _ in 0..iters {
        to_t.send(v).unwrap();
        v = from_t.recv().unwrap();
    }
    let t = start.elapsed();
    assert_eq!(v, iters);
    drop(to_t);
    d.join().unwrap();
    t
}

/// A plain thread pings a tokio task in a current-thread runtime on another thread.
fn tokio_cross_thread(iters: u64) -> Duration {
    let (to_t, mut from_thread) = tokio::sync::mpsc::channel::<u64>(1);
    let (to_thread, mut from_t) = tokio::sync::mpsc::channel::<u64>(1);
    let d = std::thread::spawn(move || {
        tokio_rt().block_on(async move {
            while let Some(v) = from_thread.recv().await {
                to_thread.send(v + 1).await.unwrap();
            }
        })
    });
    let start = Instant::now();
    let mut v = 0;
    for _ in 0..iters {
        to_t.blocking_send(v).unwrap();
        v = from_t.blocking_recv().unwrap();
    }
    let t = start.elapsed();
    assert_eq!(v, iters);
    drop(to_t);
    d.join().unwrap();
    t
}

fn tasklet_mutex_contended(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let m = std::rc::Rc::new(tasklet::sync::Mutex::new(0u64));
        let m2 = m.clone();
        let start = Instant::now();
        let b = tasklet::spawn(move || {
            for _ in 0..iters / 2 {
                let mut g = m2.lock();
                *g += 1;
                tasklet::yield_now();
            }
        });
        for _ in 0..iters - iters / 2 {
            let mut g = m.lock();
            *g += 1;
            tasklet::yield_now();
        }
        b.join().unwrap();
        let t = start.elapsed();
        assert_eq!(*m.lock(), iters);
        t
    })
}

fn tokio_mutex_contended(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        let m = std::sync::Arc::new(tokio::sync::Mutex::new(0u64));
        let m2 = m.clone();
        let start = Instant::now();
        let b = tokio::spawn(async move {
            for _ in 0..iters / 2 {
                let mut g = m2.lock().await;
                *g += 1;
                tokio::task::yield_now().await;
            }
        });
        for _ in 0..iters - iters / 2 {
            let mut g = m.lock().await;
            *g += 1;
            tokio::task::yield_now().await;
        }
        b.await.unwrap();
        let t = start.elapsed();
        assert_eq!(*m.lock().await, iters);
        t
    })
}

fn bench_mutex(c: &mut Criterion) {
    let mut g = c.benchmark_group("mutex_contended");
    g.bench_function("tasklet", |b| b.iter_custom(tasklet_mutex_contended));
    // Without the I/O and time drivers: tokio's `yield_now` defers the task
    // past a driver poll, which with the I/O driver is an `epoll_wait` per
    // yield (the tasklet hub skips its poll while no socket is registered).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    g.bench_function("tokio", |b| {
        b.iter_custom(|n| tokio_mutex_contended(&rt, n))
    });
    g.finish();
}

fn bench_pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel_pingpong");
    g.bench_function("tasklet", |b| b.iter_custom(tasklet_pingpong));
    g.bench_function("tasklet_2_yields", |b| b.iter_custom(tasklet_two_yields));
    g.bench_function("tasklet_2_yields_no_watchdog", |b| {
        b.iter_custom(tasklet_two_yields_no_watchdog)
    });
    let rt = tokio_rt();
    g.bench_function("tokio_mpsc", |b| b.iter_custom(|n| tokio_pingpong(&rt, n)));
    g.bench_function("crossbeam_threads", |b| b.iter_custom(crossbeam_pingpong));
    g.finish();
}

fn bench_stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel_stream");
    let rt = tokio_rt();
    for cap in [1, 16] {
        g.bench_function(format!("tasklet_cap{cap}"), |b| {
            b.iter_custom(|n| tasklet_stream(cap, n))
        });
        g.bench_function(format!("tokio_mpsc_cap{cap}"), |b| {
            b.iter_custom(|n| tokio_stream(&rt, cap, n))
        });
    }
    g.finish();
}

fn bench_cross_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_thread_roundtrip");
    g.sample_size(30);
    g.bench_function("tasklet", |b| b.iter_custom(tasklet_cross_thread));
    g.bench_function("tokio_mpsc", |b| b.iter_custom(tokio_cross_thread));
    g.bench_function("crossbeam_threads", |b| b.iter_custom(crossbeam_pingpong));
    g.finish();
}

criterion_group!(
    benches,
    bench_pingpong,
    bench_stream,
    bench_mutex,
    bench_cross_thread
);
criterion_main!(benches);
