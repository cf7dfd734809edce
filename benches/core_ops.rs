//! The core operations as a plain program for instruction counters:
//! `core_ops CASE N` runs N operations of CASE inside one `dispatch` and
//! exits, so `perf stat -e instructions:u` (or callgrind) over two values of
//! N gives the instructions per operation without criterion's own work:
//!
//! ```text
//! cargo bench --bench core_ops --no-run
//! benches/core_ops.sh            # every case, 100k and 1.1M operations
//! ```
//!
//! Cases: `switch` (one `yield_now` between two tasklets), `spawn_join`
//! (spawn a tasklet and join it), `channel` (a same-dispatcher round trip
//! over two bounded channels: two sends, two receives, two switches).
//!
//! Cross-worker cases, on a 2-worker `Runtime` with the idle spin off (a
//! spin's instruction count depends on how long the other thread takes,
//! so it would make the counts load-dependent): `xchannel` (a round trip
//! from worker 0 to worker 1 and back over two bounded channels),
//! `xspawn` (`spawn_on(1, ..)` + `join` one at a time), `xspawn1000`
//! (the same with 1000 in flight). Their counts cover both workers (and
//! callgrind runs the threads one at a time, so how often a worker finds
//! its queue empty and sleeps differs from a run on two free CPUs).
//! `SPIN=1` runs them with the default idle spin, forced on (for a
//! profile under `chrt -f`, where the CPUs are free for the workers).
//! `tokio_xspawn1000` is the `cores` bench's tokio peer of `xspawn1000`
//! (`tokio::spawn` + `.await` from `block_on` on a 2-worker multi-thread
//! runtime).

use std::hint::black_box;

fn switch(n: u64) {
    tasklet::dispatch(move || {
        let b = tasklet::spawn(move || {
            for _ in 0..n {
                tasklet::yield_now();
            }
        });
        for _ in 0..n {
            tasklet::yield_now();
        }
        b.join().unwrap();
    })
}

fn spawn_join(n: u64) {
    tasklet::dispatch(move || {
        for i in 0..n {
            black_box(tasklet::spawn(move || black_box(i)).join().unwrap());
        }
    })
}

fn channel(n: u64) {
    tasklet::dispatch(move || {
        let (to_b, from_a) = tasklet::sync::channel::<u64>(1);
        let (to_a, from_b) = tasklet::sync::channel::<u64>(1);
        let b = tasklet::spawn(move || {
            for v in &from_a {
                to_a.send(v + 1).unwrap();
            }
        });
        let mut v = 0;
        for _ in 0..n {
            to_b.send(v).unwrap();
            v = from_b.recv().unwrap();
        }
        assert_eq!(v, n);
        drop(to_b);
        b.join().unwrap();
    })
}

/// A 2-worker runtime without the idle spin (unless `SPIN` is set), running
/// `f` on worker 0.
fn on_worker0(f: impl Fn() + Send + Sync + 'static) {
    let mut rt = tasklet::Runtime::new().workers(2);
    if std::env::var_os("SPIN").is_some() {
        tasklet::__force_idle_spin(true);
    } else {
        rt = rt.idle_spin(std::time::Duration::ZERO);
    }
    rt.run(move || {
        if tasklet::worker_index() == Some(0) {
            f();
        }
    });
}

fn xchannel(n: u64) {
    let (to1, from0) = tasklet::sync::channel::<u64>(1);
    let (to0, from1) = tasklet::sync::channel::<u64>(1);
    let ends = std::sync::Mutex::new(Some((to1, from1, to0, from0)));
    on_worker0(move || {
        let (to1, from1, to0, from0) = ends.lock().unwrap().take().unwrap();
        let echo = tasklet::spawn_on(1, move || {
            for v in from0.iter() {
                to0.send(v + 1).unwrap();
            }
        });
        let mut v = 0;
        for _ in 0..n {
            to1.send(v).unwrap();
            v = from1.recv().unwrap();
        }
        assert_eq!(v, n);
        drop(to1);
        echo.join().unwrap();
    })
}

fn xspawn(n: u64, in_flight: u64) {
    on_worker0(move || {
        let mut left = n;
        while left > 0 {
            let k = left.min(in_flight);
            let hs: Vec<_> = (0..k)
                .map(|i| tasklet::spawn_on(1, move || black_box(i)))
                .collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.join().unwrap(), i as u64);
            }
            left -= k;
        }
    })
}

fn tokio_xspawn(n: u64, in_flight: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let mut left = n;
        while left > 0 {
            let k = left.min(in_flight);
            let hs: Vec<_> = (0..k)
                .map(|i| tokio::spawn(async move { black_box(i) }))
                .collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.await.unwrap(), i as u64);
            }
            left -= k;
        }
    })
}

fn main() {
    // `cargo bench` passes `--bench`; skip flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (case, n) = match args.as_slice() {
        [case, n] => (case.as_str(), n.parse::<u64>().expect("N: a number")),
        [] => return, // `cargo bench` with no arguments: nothing to count.
        _ => panic!("usage: core_ops CASE N (see the file)"),
    };
    match case {
        "switch" => switch(n),
        "spawn_join" => spawn_join(n),
        "channel" => channel(n),
        "xchannel" => xchannel(n),
        "xspawn" => xspawn(n, 1),
        "xspawn1000" => xspawn(n, 1000),
        "tokio_xspawn" => tokio_xspawn(n, 1),
        "tokio_xspawn1000" => tokio_xspawn(n, 1000),
        _ => panic!(
            "unknown case {case}: switch, spawn_join, channel, xchannel, xspawn, xspawn1000, \
             tokio_xspawn, tokio_xspawn1000"
        ),
    }
}
