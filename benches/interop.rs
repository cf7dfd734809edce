//! Async interop micro-benchmarks (feature `tokio`), each beside a peer.
//!
//! - `block_on_ready`: `block_on` of a future that is ready at once, inside
//!   a tasklet (the runtime's `block_on` and the facade's, which under the
//!   `tokio` feature also tests the tokio-context flag), outside a
//!   dispatcher, and the peers `futures::executor::block_on` and tokio's
//!   current-thread `Runtime::block_on`.
//! - `wake_roundtrip`: two tasklets, each inside `block_on`, hand a token back
//!   and forth through a waker-based signal (one iteration = one wake-up and
//!   one park/resume); the peer is two tokio tasks on a current-thread
//!   runtime doing exactly the same with the same signal type.
//! - `tokio_crossing`: a tasklet `block_on`s a `tokio::spawn`ed task (runs on
//!   the background runtime's worker, whose wake-up crosses back through the
//!   dispatcher's queue and eventfd); the peer is a plain tokio task on that
//!   same runtime doing the same spawn-and-await (no thread crossing), and a
//!   plain thread doing it with `futures::executor::block_on` (the same two
//!   crossings, with a thread park instead of a tasklet park).
//!
//! Run with `cargo bench --features tokio --bench interop`; figures in
//! `docs/benchmarks.md`.

use std::future::{poll_fn, Future};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

fn bench_ready(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_on_ready");
    g.bench_function("tasklet_runtime_in_tasklet", |b| {
        b.iter_custom(|iters| {
            tasklet::dispatch(move || {
                let t0 = Instant::now();
                for i in 0..iters {
                    black_box(tasklet_runtime::block_on(async { black_box(i) }));
                }
                t0.elapsed()
            })
        })
    });
    g.bench_function("facade_tokio_in_tasklet", |b| {
        b.iter_custom(|iters| {
            tasklet::dispatch(move || {
                let t0 = Instant::now();
                for i in 0..iters {
                    black_box(tasklet::block_on(async { black_box(i) }));
                }
                t0.elapsed()
            })
        })
    });
    g.bench_function("tasklet_runtime_outside", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for i in 0..iters {
                black_box(tasklet_runtime::block_on(async { black_box(i) }));
            }
            t0.elapsed()
        })
    });
    g.bench_function("futures_executor", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for i in 0..iters {
                black_box(futures::executor::block_on(async { black_box(i) }));
            }
            t0.elapsed()
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    g.bench_function("tokio_current_thread", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for i in 0..iters {
                black_box(rt.block_on(async { black_box(i) }));
            }
            t0.elapsed()
        })
    });
    g.finish();
}

/// A one-slot signal woken through a `Waker` (the same for both sides).
#[derive(Default)]
struct Signal(Mutex<(bool, Option<Waker>)>);

impl Signal {
    fn set(&self) {
        let mut s = self.0.lock().unwrap();
        s.0 = true;
        if let Some(w) = s.1.take() {
            w.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            let mut s = self.0.lock().unwrap();
            if std::mem::take(&mut s.0) {
                Poll::Ready(())
            } else {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

async fn ping(me: &Signal, peer: &Signal, n: u64, first: bool) {
    for _ in 0..n {
        if first {
            peer.set();
            me.wait().await;
        } else {
            me.wait().await;
            peer.set();
        }
    }
}

fn bench_wake(c: &mut Criterion) {
    let mut g = c.benchmark_group("wake_roundtrip");
    g.bench_function("tasklet_block_on", |b| {
        b.iter_custom(|iters| {
            tasklet::dispatch(move || {
                let (x, y) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
                let (x2, y2) = (x.clone(), y.clone());
                let t0 = Instant::now();
                let other =
                    tasklet::spawn(move || tasklet_runtime::block_on(ping(&y2, &x2, iters, false)));
                tasklet_runtime::block_on(ping(&x, &y, iters, true));
                other.join().unwrap();
                t0.elapsed()
            })
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    g.bench_function("tokio_tasks", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let (x, y) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
                let (x2, y2) = (x.clone(), y.clone());
                let t0 = Instant::now();
                let other = tokio::spawn(async move { ping(&y2, &x2, iters, false).await });
                let me = tokio::spawn(async move { ping(&x, &y, iters, true).await });
                me.await.unwrap();
                other.await.unwrap();
                t0.elapsed()
            })
        })
    });
    g.finish();
}

fn bench_crossing(c: &mut Criterion) {
    let mut g = c.benchmark_group("tokio_crossing");
    g.bench_function("tasklet_block_on_spawned", |b| {
        b.iter_custom(|iters| {
            tasklet::dispatch(move || {
                let t0 = Instant::now();
                for i in 0..iters {
                    let v = tasklet::block_on(tokio::spawn(async move { black_box(i) }));
                    black_box(v.unwrap());
                }
                t0.elapsed()
            })
        })
    });
    g.bench_function("thread_futures_block_on_spawned", |b| {
        b.iter_custom(|iters| {
            let h = tasklet::tokio::handle();
            let t0 = Instant::now();
            for i in 0..iters {
                let v = futures::executor::block_on(h.spawn(async move { black_box(i) }));
                black_box(v.unwrap());
            }
            t0.elapsed()
        })
    });
    g.bench_function("tokio_task_spawned", |b| {
        b.iter_custom(|iters| {
            let h = tasklet::tokio::handle();
            let task = h.spawn(async move {
                let t0 = Instant::now();
                for i in 0..iters {
                    let v = tokio::spawn(async move { black_box(i) }).await;
                    black_box(v.unwrap());
                }
                t0.elapsed()
            });
            futures::executor::block_on(task).unwrap()
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_ready, bench_wake, bench_crossing
}
criterion_main!(benches);
