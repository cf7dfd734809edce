//! Keeping the dispatcher responsive around blocking work.
//!
//! A heartbeat tasklet ticks every 50 ms while the main tasklet
//! (1) hashes data on the CPU and (2) calls a blocking function — both
//! through `tasklet::unblock`, which runs them on the offload thread pool.
//! Then it does the same CPU work *without* `unblock`, holding the
//! dispatcher: the heartbeat stalls and the watchdog (`RUST_LOG=warn`)
//! names the culprit.
//!
//! ```text
//! RUST_LOG=info cargo run --release --example blocking_offload
//! ```

use std::time::{Duration, Instant};

mod common;

fn cpu_heavy(rounds: u64) -> u64 {
    // A deliberately slow FNV-style hash.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..rounds {
        h ^= i;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn blocking_lookup(key: &str) -> String {
    // Stands in for a blocking driver call, file I/O or getaddrinfo.
    std::thread::sleep(Duration::from_millis(300));
    format!("value-of-{key}")
}

const USAGE: &str = "\
blocking_offload: CPU work and a blocking call through tasklet::unblock while a
heartbeat tasklet keeps ticking, then the same CPU work held on the dispatcher

USAGE:
    blocking_offload          (RUST_LOG=warn shows the watchdog naming the culprit)

OPTIONS:
    -h, --help    print this help";

fn main() {
    common::args::no_options(USAGE);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    tasklet::dispatch(|| {
        let start = Instant::now();
        let heartbeat = tasklet::Builder::new()
            .name("heartbeat")
            .spawn(move || {
                let mut worst = Duration::ZERO;
                let mut last = Instant::now();
                for _ in 0..30 {
                    tasklet::sleep(Duration::from_millis(50));
                    let gap = last.elapsed();
                    worst = worst.max(gap);
                    last = Instant::now();
                }
                worst
            })
            .expect("spawn heartbeat");

        let t = Instant::now();
        let h = tasklet::unblock(|| cpu_heavy(300_000_000));
        println!("offloaded hash {h:016x} in {:?}", t.elapsed());

        let t = Instant::now();
        let v = tasklet::unblock(|| blocking_lookup("answer"));
        println!("offloaded lookup -> {v} in {:?}", t.elapsed());

        let t = Instant::now();
        let h = tasklet::Builder::new()
            .name("inline-hash")
            .spawn(|| cpu_heavy(300_000_000))
            .expect("spawn")
            .join()
            .expect("hash");
        println!(
            "inline hash {h:016x} in {:?} (held the dispatcher: see the watchdog warning)",
            t.elapsed()
        );

        let worst = heartbeat.join().expect("heartbeat");
        println!(
            "heartbeat: worst gap {worst:?} over {:?} (50 ms expected; the inline hash caused the gap)",
            start.elapsed()
        );
    });
}
