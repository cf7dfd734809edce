//! Tasklet basics, concurrence style: spawn, sleep, yield_now, spawn_loop,
//! timeout and kill — all on one OS thread.
//!
//! ```sh
//! cargo run --release --example tasklets
//! RUST_LOG=debug cargo run --release --example tasklets
//! ```

use std::cell::Cell;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::{Duration, Instant};

mod common;

const USAGE: &str = "\
tasklets: spawn, sleep, yield_now, spawn_loop, timeout, kill and a contained
panic, all on one OS thread

USAGE:
    tasklets                  (RUST_LOG=debug shows the runtime's events)

OPTIONS:
    -h, --help    print this help

Part 5 panics in a tasklet on purpose: the runtime names the tasklet that
panicked, the report follows in one line marked \"expected\" (no backtrace,
even with RUST_BACKTRACE=1), and the program goes on.";

fn main() {
    common::args::no_options(USAGE);
    quiet_demo_panic();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let started = Instant::now();
    let stamp = move || format!("{:>4} ms", started.elapsed().as_millis());

    let answer = tasklet::dispatch(move || {
        // 1. gevent's foo/bar: two tasklets hand control back and forth.
        println!("[{}] -- switching with yield_now --", stamp());
        let foo_tasklet = tasklet::spawn(move || {
            println!("[{}] foo: running", stamp());
            tasklet::yield_now();
            println!("[{}] foo: explicit context switch to foo again", stamp());
        });
        let bar_tasklet = tasklet::spawn(move || {
            println!("[{}] bar: explicit context to bar", stamp());
            tasklet::yield_now();
            println!("[{}] bar: implicit context switch back to bar", stamp());
        });
        tasklet::joinall([foo_tasklet, bar_tasklet]);

        // 2. Concurrent sleeps: three tasklets sleeping 100 ms take 100 ms, not 300.
        println!("[{}] -- three 100 ms sleeps at once --", stamp());
        let t = Instant::now();
        let sleepers: Vec<_> = (1..=3)
            .map(|i| {
                tasklet::Builder::new()
                    .name(format!("sleeper-{i}"))
                    .spawn(move || {
                        tasklet::sleep(Duration::from_millis(100));
                        i * 10
                    })
                    .expect("spawn")
            })
            .collect();
        let sum: i32 = tasklet::joinall(sleepers)
            .into_iter()
            .map(|r| r.unwrap())
            .sum();
        println!("[{}] sum {sum} after {:?}", stamp(), t.elapsed());

        // 3. spawn_loop: a ticker that runs until killed.
        println!("[{}] -- a ticker killed after 55 ms --", stamp());
        let ticks = Rc::new(Cell::new(0));
        let t2 = ticks.clone();
        let ticker = tasklet::spawn_loop(move || {
            tasklet::sleep(Duration::from_millis(10));
            t2.set(t2.get() + 1);
            ControlFlow::Continue(())
        });
        tasklet::sleep(Duration::from_millis(55));
        ticker.kill();
        let r = ticker.join();
        println!(
            "[{}] ticker ticked {} times, then: {:?}",
            stamp(),
            ticks.get(),
            r.err()
        );

        // 4. timeout: interrupt whatever the closure is blocked in.
        println!("[{}] -- timeout --", stamp());
        let slow = tasklet::timeout(Duration::from_millis(20), || {
            tasklet::sleep(Duration::from_secs(60));
            "finished"
        });
        println!("[{}] slow work: {slow:?}", stamp());

        // 5. A panicking tasklet does not take the others down.
        println!("[{}] -- a panic stays in its tasklet --", stamp());
        let bad = tasklet::Builder::new()
            .name("bad")
            .spawn(|| -> u32 { panic!("{DEMO_PANIC}") })
            .expect("spawn");
        let err = bad.join().unwrap_err();
        println!("[{}] joined 'bad': {err}", stamp());

        // 6. spawn_later, and tasklets still running when dispatch returns
        //    are killed (their destructors run).
        let later = tasklet::spawn_later(Duration::from_millis(5), || 42);
        let _forgotten = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
        later.join().unwrap()
    });
    println!("[{}] dispatch returned {answer}", stamp());
}

/// The message of the deliberate panic in part 5.
const DEMO_PANIC: &str = "something broke";

/// The deliberate panic is part of the demo, not a crash: report it in one
/// line that says so, without the backtrace `RUST_BACKTRACE=1` would add.
/// Any other panic still goes to the default hook, backtrace and all. (The
/// runtime wraps this hook when `dispatch` starts; it calls it for every
/// panic.)
fn quiet_demo_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied());
        if msg == Some(DEMO_PANIC) {
            let at = info
                .location()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            eprintln!("(expected) the demo tasklet 'bad' panicked{at}: {DEMO_PANIC}");
        } else {
            default(info);
        }
    }));
}
