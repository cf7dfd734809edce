//! `tasklet::sync::Select` / `tasklet::select!` over two channels, side by
//! side with tokio's `select!` (two mpsc channels, one current-thread
//! runtime) and crossbeam's `select!`.
//!
//! - `select_ready`: one iteration sends one value to one of two channels
//!   (alternating) and selects over both, finding it ready: the cost of a
//!   select that does not wait (all on one thread; crossbeam too).
//! - `select_stream`: a producer alternates values between two bounded
//!   channels (capacity 16); the consumer selects over both. One iteration
//!   is one value. tasklet: two tasklets of one dispatcher; tokio: two tasks
//!   of one current-thread runtime; crossbeam: two OS threads (it has no
//!   tasks), so its row includes cross-thread wake-ups.
//!
//! Run with `cargo bench --bench select`; figures are in
//! `docs/benchmarks.md` ("Select").

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

fn tasklet_ready_builder(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let (tx1, rx1) = tasklet::sync::unbounded::<u64>();
        let (tx2, rx2) = tasklet::sync::unbounded::<u64>();
        let start = Instant::now();
        let mut sum = 0;
        for i in 0..iters {
            if i % 2 == 0 { &tx1 } else { &tx2 }.send(i).unwrap();
            sum += tasklet::sync::Select::new()
                .recv(&rx1, |v| v.unwrap())
                .recv(&rx2, |v| v.unwrap())
                .wait();
        }
        let t = start.elapsed();
        assert_eq!(sum, iters * iters.saturating_sub(1) / 2);
        t
    })
}

fn tasklet_ready_macro(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let (tx1, rx1) = tasklet::sync::unbounded::<u64>();
        let (tx2, rx2) = tasklet::sync::unbounded::<u64>();
        let start = Instant::now();
        let mut sum = 0;
        for i in 0..iters {
            if i % 2 == 0 { &tx1 } else { &tx2 }.send(i).unwrap();
            tasklet::select! {
                recv(rx1) -> v => sum += v.unwrap(),
                recv(rx2) -> v => sum += v.unwrap(),
            }
        }
        let t = start.elapsed();
        assert_eq!(sum, iters * iters.saturating_sub(1) / 2);
        t
    })
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn tokio_ready(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        let (tx1, mut rx1) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let (tx2, mut rx2) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let start = Instant::now();
        let mut sum = 0;
        for i in 0..iters {
            if i % 2 == 0 { &tx1 } else { &tx2 }.send(i).unwrap();
            tokio::select! {
                v = rx1.recv() => sum += v.unwrap(),
                v = rx2.recv() => sum += v.unwrap(),
            }
        }
        let t = start.elapsed();
        assert_eq!(sum, iters * iters.saturating_sub(1) / 2);
        t
    })
}

fn crossbeam_ready(iters: u64) -> Duration {
    let (tx1, rx1) = crossbeam_channel::unbounded::<u64>();
    let (tx2, rx2) = crossbeam_channel::unbounded::<u64>();
    let start = Instant::now();
    let mut sum = 0;
    for i in 0..iters {
        if i % 2 == 0 { &tx1 } else { &tx2 }.send(i).unwrap();
        crossbeam_channel::select! {
            recv(rx1) -> v => sum += v.unwrap(),
            recv(rx2) -> v => sum += v.unwrap(),
        }
    }
    let t = start.elapsed();
    assert_eq!(sum, iters * iters.saturating_sub(1) / 2);
    t
}

fn tasklet_stream(iters: u64) -> Duration {
    tasklet::dispatch(move || {
        let (tx1, rx1) = tasklet::sync::channel::<u64>(16);
        let (tx2, rx2) = tasklet::sync::channel::<u64>(16);
        let producer = tasklet::spawn(move || {
            for i in 0..iters {
                if i % 2 == 0 { &tx1 } else { &tx2 }.send(i).unwrap();
            }
            (tx1, tx2) // kept open: a closed channel is a ready arm
        });
        let start = Instant::now();
        let mut n = 0;
        while n < iters {
            tasklet::select! {
                recv(rx1) -> v => { v.unwrap(); n += 1; }
                recv(rx2) -> v => { v.unwrap(); n += 1; }
            }
        }
        let t = start.elapsed();
        producer.join().unwrap();
        t
    })
}

fn tokio_stream(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        let (tx1, mut rx1) = tokio::sync::mpsc::channel::<u64>(16);
        let (tx2, mut rx2) = tokio::sync::mpsc::channel::<u64>(16);
        let producer = tokio::task::spawn(async move {
            for i in 0..iters {
                if i % 2 == 0 { &tx1 } else { &tx2 }.send(i).await.unwrap();
            }
            (tx1, tx2)
        });
        let start = Instant::now();
        let mut n = 0;
        while n < iters {
            tokio::select! {
                v = rx1.recv() => { v.unwrap(); n += 1; }
                v = rx2.recv() => { v.unwrap(); n += 1; }
            }
        }
        let t = start.elapsed();
        producer.await.unwrap();
        t
    })
}

fn crossbeam_stream(iters: u64) -> Duration {
    let (tx1, rx1) = crossbeam_channel::bounded::<u64>(16);
    let (tx2, rx2) = crossbeam_channel::bounded::<u64>(16);
    let producer = std::thread::spawn(move || {
        for i in 0..iters {
            if i % 2 == 0 { &tx1 } else { &tx2 }.send(i).unwrap();
        }
        (tx1, tx2)
    });
    let start = Instant::now();
    let mut n = 0;
    while n < iters {
        crossbeam_channel::select! {
            recv(rx1) -> v => { v.unwrap(); n += 1; }
            recv(rx2) -> v => { v.unwrap(); n += 1; }
        }
    }
    let t = start.elapsed();
    producer.join().unwrap();
    t
}

fn benches(c: &mut Criterion) {
    let rt = tokio_rt();
    let mut g = c.benchmark_group("select_ready");
    g.bench_function("tasklet_builder", |b| b.iter_custom(tasklet_ready_builder));
    g.bench_function("tasklet_macro", |b| b.iter_custom(tasklet_ready_macro));
    g.bench_function("tokio", |b| b.iter_custom(|n| tokio_ready(&rt, n)));
    g.bench_function("crossbeam", |b| b.iter_custom(crossbeam_ready));
    g.finish();
    let mut g = c.benchmark_group("select_stream");
    g.bench_function("tasklet", |b| b.iter_custom(tasklet_stream));
    g.bench_function("tokio", |b| b.iter_custom(|n| tokio_stream(&rt, n)));
    g.bench_function("crossbeam_threads", |b| b.iter_custom(crossbeam_stream));
    g.finish();
}

criterion_group!(name = select; config = Criterion::default(); targets = benches);
criterion_main!(select);
