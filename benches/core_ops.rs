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

fn main() {
    // `cargo bench` passes `--bench`; skip flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (case, n) = match args.as_slice() {
        [case, n] => (case.as_str(), n.parse::<u64>().expect("N: a number")),
        [] => return, // `cargo bench` with no arguments: nothing to count.
        _ => panic!("usage: core_ops switch|spawn_join|channel N"),
    };
    match case {
        "switch" => switch(n),
        "spawn_join" => spawn_join(n),
        "channel" => channel(n),
        _ => panic!("unknown case {case}: switch, spawn_join or channel"),
    }
}
