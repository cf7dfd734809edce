//! Randomised stress of the core runtime with a deterministic generator:
//! many tasklets spawning, joining, killing, sleeping, yielding, timing out,
//! panicking and catching unwinds at random, for several fixed seeds.
//!
//! Checks: nothing crashes or hangs, every join returns the value of the
//! tasklet it belongs to (or a consistent error), and every tasklet's
//! destructor runs exactly once — including for tasklets killed at
//! `dispatch` exit.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::JoinHandle;

/// xorshift64*: small, deterministic, good enough to pick operations.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fork(&mut self) -> Rng {
        Rng(self.next() | 1)
    }
}

/// Counts live tasklet bodies; each worker holds one `Alive` for its life.
#[derive(Default)]
struct Stats {
    created: Cell<u64>,
    dropped: Cell<u64>,
    joined_ok: Cell<u64>,
    joined_killed: Cell<u64>,
    joined_panic: Cell<u64>,
    /// Inconsistencies seen anywhere (inside tasklets a failed assert could
    /// go unnoticed, so they are collected and checked at the end).
    bad: RefCell<Vec<String>>,
}

struct Alive(Rc<Stats>);

impl Alive {
    fn new(stats: &Rc<Stats>) -> Alive {
        stats.created.set(stats.created.get() + 1);
        Alive(stats.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.dropped.set(self.0.dropped.get() + 1);
    }
}

/// A worker's handle with the value it must return.
type Pool = Rc<RefCell<Vec<(JoinHandle<u64>, u64)>>>;

const MAX_LIVE: u64 = 300;

fn record(stats: &Stats, r: Result<u64, tasklet::JoinError>, expect: u64) {
    match r {
        Ok(v) => {
            if expect != 0 && v != expect {
                stats
                    .bad
                    .borrow_mut()
                    .push(format!("join returned {v:#x}, expected {expect:#x}"));
            }
            stats.joined_ok.set(stats.joined_ok.get() + 1);
        }
        Err(e) if e.is_killed() => stats.joined_killed.set(stats.joined_killed.get() + 1),
        Err(e) => {
            if e.panic_message() != Some("chaos panic") {
                stats
                    .bad
                    .borrow_mut()
                    .push(format!("unexpected panic: {e}"));
            }
            stats.joined_panic.set(stats.joined_panic.get() + 1);
        }
    }
}

fn spawn_worker(rng: &mut Rng, stats: &Rc<Stats>, pool: &Pool, depth: u32) {
    let live = stats.created.get() - stats.dropped.get();
    if live >= MAX_LIVE {
        return;
    }
    let value = rng.next();
    let mut child_rng = rng.fork();
    let alive = Alive::new(stats);
    let (s, p) = (stats.clone(), pool.clone());
    let h = tasklet::spawn(move || {
        let _alive = alive;
        worker(&mut child_rng, &s, &p, depth);
        value
    });
    pool.borrow_mut().push((h, value));
}

fn take_random(rng: &mut Rng, pool: &Pool) -> Option<(JoinHandle<u64>, u64)> {
    let mut p = pool.borrow_mut();
    if p.is_empty() {
        return None;
    }
    let i = rng.below(p.len() as u64) as usize;
    Some(p.swap_remove(i))
}

fn worker(rng: &mut Rng, stats: &Rc<Stats>, pool: &Pool, depth: u32) {
    let steps = 5 + rng.below(20);
    for _ in 0..steps {
        match rng.below(12) {
            0 | 1 => tasklet::yield_now(),
            2 => tasklet::sleep(Duration::from_micros(rng.below(3000))),
            3 | 4 if depth < 6 => spawn_worker(rng, stats, pool, depth + 1),
            5 => {
                if let Some((h, _)) = take_random(rng, pool) {
                    h.kill();
                    // Killed handles go back: someone joins them later.
                    pool.borrow_mut().push((h, 0));
                }
            }
            6 => {
                if let Some((h, expect)) = take_random(rng, pool) {
                    let ms = rng.below(5);
                    let s = stats.clone();
                    // A join bounded by a timeout; on expiry the handle is dropped (detached).
                    let _ = tasklet::timeout(Duration::from_millis(ms), move || {
                        record(&s, h.join(), expect)
                    });
                }
            }
            7 => {
                let outer = rng.below(4);
                let inner = rng.below(4);
                let nap = rng.below(6);
                let _ = tasklet::timeout(Duration::from_millis(outer), || {
                    let _ = tasklet::timeout(Duration::from_millis(inner), || {
                        tasklet::sleep(Duration::from_millis(nap))
                    });
                    tasklet::yield_now();
                });
            }
            8 => {
                // A well-behaved catch_unwind: rethrows what it does not own.
                let r = panic::catch_unwind(AssertUnwindSafe(|| {
                    tasklet::sleep(Duration::from_micros(rng.below(2000)))
                }));
                if let Err(p) = r {
                    panic::resume_unwind(p);
                }
            }
            9 if rng.below(20) == 0 => panic!("chaos panic"),
            10 => {
                // Park with a deadline and a wake-up from a sibling.
                let u = tasklet::hub::current_unparker();
                let waker = tasklet::spawn(move || {
                    u.unpark();
                });
                let _ = tasklet::hub::park(Some(Instant::now() + Duration::from_millis(3)));
                drop(waker);
            }
            _ => tasklet::yield_now(),
        }
    }
}

fn run_seed(seed: u64) {
    let stats = Rc::new(Stats::default());
    let st = stats.clone();
    tasklet::dispatch(move || {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let pool: Pool = Rc::default();
        for _ in 0..40 {
            spawn_worker(&mut rng, &st, &pool, 0);
        }
        // Join what is left for a while; whatever is still alive after that
        // is killed by `dispatch` on exit.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Some((h, expect)) = take_random(&mut rng, &pool) else {
                break;
            };
            record(&st, h.join(), expect);
        }
        if rng.below(2) == 0 {
            // Leave a few sleepers behind for dispatch to kill.
            for _ in 0..5 {
                let alive = Alive::new(&st);
                drop(tasklet::spawn(move || {
                    let _a = alive;
                    tasklet::sleep(Duration::from_secs(20));
                }));
            }
            tasklet::yield_now();
        }
    });
    assert!(stats.created.get() >= 40);
    let bad = stats.bad.borrow();
    assert!(bad.is_empty(), "seed {seed}: {bad:?}");
    assert_eq!(
        stats.created.get(),
        stats.dropped.get(),
        "seed {seed}: every tasklet body is dropped exactly once"
    );
    assert!(
        stats.joined_ok.get() + stats.joined_killed.get() + stats.joined_panic.get() > 0,
        "seed {seed}: nothing was joined"
    );
}

#[test]
fn chaos_fixed_seeds() {
    let t = Instant::now();
    for seed in 1..=12 {
        run_seed(seed);
    }
    assert!(
        t.elapsed() < Duration::from_secs(50),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn chaos_more_seeds_in_parallel_threads() {
    let threads: Vec<_> = (100..104)
        .map(|base| {
            std::thread::spawn(move || {
                for seed in [base, base + 10, base + 20] {
                    run_seed(seed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
