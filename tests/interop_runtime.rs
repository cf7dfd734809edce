//! Tasklets from async code (features `tokio`): a `#[tokio::main]` program
//! hands blocking-style work to a `tasklet::Runtime` and `.await`s the
//! `RemoteJoinHandle`s; a `Runtime` (and `dispatch`) started from inside a
//! tokio program do not trip tokio's nesting checks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tasklet::{RemoteJoinHandle, Runtime};

const N: u64 = 10_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_program_awaiting_tasklets() -> u64 {
    let (tx, rx) = tokio::sync::oneshot::channel::<Vec<RemoteJoinHandle<u64>>>();
    let tx = Mutex::new(Some(tx));
    let done = Arc::new(tasklet::sync::Event::new());
    let d = done.clone();
    let runtime = std::thread::spawn(move || {
        Runtime::new().workers(2).name("awaited").run(move || {
            if tasklet::worker_index() == Some(0) {
                let handles = (0..N)
                    .map(|i| {
                        tasklet::spawn_on((i % 2) as usize, move || {
                            // Blocking-style work: parks the tasklet.
                            tasklet::sleep(Duration::from_micros(i % 50));
                            i * 3 + tasklet::worker_index().unwrap() as u64
                        })
                    })
                    .collect();
                let tx = tx.lock().unwrap().take().unwrap();
                assert!(tx.send(handles).is_ok(), "the tokio side waits");
            }
            d.wait();
        })
    });
    let handles = rx.await.expect("handles from the runtime");
    let results = futures::future::join_all(handles).await;
    let mut checked = 0;
    for (i, r) in results.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(r.expect("tasklet result"), i * 3 + i % 2);
        checked += 1;
    }
    done.set();
    tokio::task::spawn_blocking(move || runtime.join().unwrap())
        .await
        .unwrap();
    checked
}

#[test]
fn tokio_main_awaits_10_000_remote_join_handles_from_2_workers() {
    assert_eq!(tokio_program_awaiting_tasklets(), N);
}

#[tokio::main]
async fn tokio_program_starting_tasklets() -> (Vec<usize>, Vec<usize>, u32) {
    // Directly on a thread running tokio's `block_on` (its context entered):
    // the workers' dispatchers and their `block_on`s use the background
    // runtime, never a runtime nested in this one.
    let direct = Runtime::new().workers(2).run(|| {
        tasklet::block_on(async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            tokio::spawn(async { 1 }).await.unwrap();
        });
        tasklet::worker_index().unwrap()
    });
    let from_blocking = tokio::task::spawn_blocking(|| {
        Runtime::new().workers(2).run(|| {
            let h = tasklet::spawn_on(1 - tasklet::worker_index().unwrap(), || {
                tasklet::worker_index().unwrap()
            });
            // A tasklet awaits a RemoteJoinHandle as a future, too.
            tasklet::block_on(h).unwrap()
        })
    })
    .await
    .unwrap();
    let plain = tasklet::dispatch(|| {
        tasklet::block_on(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            7u32
        })
    });
    (direct, from_blocking, plain)
}

#[test]
fn runtime_and_dispatch_start_inside_a_tokio_program() {
    let (direct, from_blocking, plain) = tokio_program_starting_tasklets();
    assert_eq!(direct, [0, 1]);
    assert_eq!(from_blocking, [1, 0]);
    assert_eq!(plain, 7);
}
