//! The core runtime at scale: many concurrent tasklets, memory stability
//! over many spawn/join cycles, and 100,000 live tasklets under the default
//! `vm.max_map_count` (65530).
//!
//! The tests in this file take a common lock: they measure process-wide
//! figures (RSS, memory mappings) that a concurrently running test would
//! disturb.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tasklet::hub::{self, Unparker};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What these tests need from AddressSanitizer (`scripts/sanitize.sh`
/// builds with the `sanitizer` feature).
#[cfg(feature = "sanitizer")]
mod asan {
    extern "C" {
        // compiler-rt's `sanitizer/allocator_interface.h`.
        fn __sanitizer_purge_allocator();
    }

    /// Empties ASan's quarantine (freed blocks it holds back, up to
    /// 256 MiB, to catch use-after-free) and returns free memory to the OS,
    /// so RSS measures what the program keeps, not what ASan holds.
    pub(crate) fn purge() {
        // SAFETY: no preconditions; ASan drains its quarantine and caches.
        unsafe { __sanitizer_purge_allocator() };
    }
}

/// Resident set size of this process in bytes (`/proc/self/statm`).
fn rss_bytes() -> usize {
    #[cfg(feature = "sanitizer")]
    asan::purge();
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("parse /proc/self/statm");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

/// Number of memory mappings of this process (`/proc/self/maps` lines).
fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .count()
}

const MIB: usize = 1024 * 1024;

#[test]
fn ten_thousand_concurrent_sleepers() {
    let _s = serial();
    const N: usize = 10_000;
    let (sum, elapsed) = tasklet::dispatch(|| {
        let t0 = Instant::now();
        let hs: Vec<_> = (0..N)
            .map(|i| {
                tasklet::spawn(move || {
                    tasklet::sleep(Duration::from_millis(20 + (i % 7) as u64));
                    i
                })
            })
            .collect();
        let sum: usize = tasklet::joinall(hs).into_iter().map(Result::unwrap).sum();
        (sum, t0.elapsed())
    });
    assert_eq!(sum, N * (N - 1) / 2);
    assert!(
        elapsed < Duration::from_secs(10),
        "10k sleepers took {elapsed:?}"
    );
}

#[test]
fn spawn_join_cycles_do_not_grow_memory() {
    let _s = serial();
    tasklet::dispatch(|| {
        let cycle = |n: usize| {
            for i in 0..n {
                let v = tasklet::spawn(move || i ^ 0x5a).join().unwrap();
                assert_eq!(v, i ^ 0x5a);
            }
        };
        // Warm up: stack pool, queues, allocator arenas.
        cycle(20_000);
        let before = rss_bytes();
        cycle(200_000);
        let after = rss_bytes();
        let growth = after.saturating_sub(before);
        assert!(
            growth < 4 * MIB,
            "RSS grew by {} KiB over 200,000 spawn/join cycles ({before} -> {after} bytes)",
            growth / 1024
        );
    });
}

#[test]
fn kill_timeout_and_detach_cycles_do_not_grow_memory() {
    let _s = serial();
    tasklet::dispatch(|| {
        let cycle = |n: usize| {
            for i in 0..n {
                // A sleeper killed at its blocking point (timer cancelled).
                let h = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(20)));
                // A timeout that completes in time (timer armed and cancelled).
                let r = tasklet::timeout(Duration::from_secs(60), tasklet::yield_now);
                assert!(r.is_ok());
                h.kill();
                assert!(h.join().unwrap_err().is_killed());
                // A detached tasklet that finishes on its own.
                drop(tasklet::spawn(move || std::hint::black_box(i)));
            }
            tasklet::yield_now();
        };
        cycle(5_000);
        let before = rss_bytes();
        cycle(50_000);
        let after = rss_bytes();
        let growth = after.saturating_sub(before);
        assert!(
            growth < 4 * MIB,
            "RSS grew by {} KiB over 50,000 kill/timeout/detach cycles",
            growth / 1024
        );
    });
}

/// A one-shot gate built on the hub API: tasklets park until it opens.
#[derive(Default)]
struct Gate {
    open: Cell<bool>,
    waiters: RefCell<Vec<Unparker>>,
}

impl Gate {
    fn wait(&self) {
        while !self.open.get() {
            self.waiters.borrow_mut().push(hub::current_unparker());
            // No deadline: the test's own bound is the main tasklet's timeout.
            hub::park(None).expect("not interrupted");
        }
    }

    fn open(&self) {
        self.open.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for u in waiters {
            u.unpark();
        }
    }
}

#[test]
fn hundred_thousand_live_tasklets_under_default_max_map_count() {
    let _s = serial();
    const N: usize = 100_000;
    let maps_before = map_count();
    let (maps_live, done) = tasklet::dispatch(|| {
        let r = tasklet::timeout(Duration::from_secs(60), || {
            let gate = Rc::new(Gate::default());
            let started = Rc::new(Cell::new(0usize));
            let finished = Rc::new(Cell::new(0usize));
            let mut hs = Vec::with_capacity(N);
            for i in 0..N {
                let (g, s, f) = (gate.clone(), started.clone(), finished.clone());
                hs.push(tasklet::spawn(move || {
                    s.set(s.get() + 1);
                    g.wait();
                    f.set(f.get() + 1);
                    i
                }));
            }
            while started.get() < N {
                tasklet::yield_now();
            }
            // Every tasklet is alive and parked at once.
            assert_eq!(finished.get(), 0);
            let maps_live = map_count();
            gate.open();
            let mut sum = 0usize;
            for r in tasklet::joinall(hs) {
                sum += r.unwrap();
            }
            assert_eq!(sum, N * (N - 1) / 2);
            (maps_live, finished.get())
        });
        r.expect("100,000 tasklets did not complete within 60 s")
    });
    assert_eq!(done, N);
    // Two mappings per stack would need 200,000 > 65,530; the slab allocator
    // needs a handful.
    assert!(
        maps_live < 10_000,
        "{maps_live} mappings with {N} live tasklets (before: {maps_before}); \
         vm.max_map_count is 65530 by default"
    );
}

#[test]
fn hundred_thousand_sleepers_and_teardown_at_exit() {
    let _s = serial();
    const N: usize = 100_000;
    let dropped = Rc::new(Cell::new(0usize));
    let d = dropped.clone();
    struct Counted(Rc<Cell<usize>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let t0 = Instant::now();
    tasklet::dispatch(move || {
        for _ in 0..N {
            let c = Counted(d.clone());
            drop(tasklet::spawn(move || {
                let _c = c;
                tasklet::sleep(Duration::from_secs(20));
            }));
        }
        tasklet::yield_now();
        // Returning kills and unwinds every sleeper.
    });
    assert_eq!(dropped.get(), N, "every sleeper's destructor ran at exit");
    let el = t0.elapsed();
    assert!(el < Duration::from_secs(30), "took {el:?}");
}

#[test]
fn hundred_thousand_unstarted_tasklets_dropped_at_exit() {
    let _s = serial();
    const N: usize = 100_000;
    let dropped = Rc::new(Cell::new(0usize));
    let ran = Rc::new(Cell::new(0usize));
    struct Counted(Rc<Cell<usize>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let (d, r) = (dropped.clone(), ran.clone());
    tasklet::dispatch(move || {
        for _ in 0..N {
            let (c, r) = (Counted(d.clone()), r.clone());
            drop(tasklet::spawn(move || {
                r.set(r.get() + 1);
                drop(c);
            }));
        }
        // Returning without a yield: every one of them is killed before it ran.
    });
    assert_eq!(ran.get(), 0, "a tasklet killed before it started ran");
    assert_eq!(
        dropped.get(),
        N,
        "every unstarted tasklet's capture dropped once"
    );
}

/// Recurses with KiB-sized frames until `target` bytes of stack are in use.
#[inline(never)]
fn touch_stack(top: usize, target: usize) -> usize {
    let frame = std::hint::black_box([1u8; 1024]);
    let used = top.abs_diff(frame.as_ptr() as usize);
    if used >= target {
        return used;
    }
    touch_stack(top, target).max(frame[used % 1024] as usize)
}

#[test]
fn stack_pool_limit_returns_memory_of_freed_stacks() {
    let _s = serial();
    const N: usize = 2000;
    const TOUCH: usize = 64 * 1024;
    let run = |pool: usize| {
        tasklet::Config::new().stack_pool_size(pool).dispatch(|| {
            let before = rss_bytes();
            let hs: Vec<_> = (0..N)
                .map(|_| {
                    tasklet::spawn(|| {
                        let marker = 0u8;
                        let top = std::hint::black_box(&marker) as *const u8 as usize;
                        let used = touch_stack(top, TOUCH);
                        // All N stacks are touched and alive at once.
                        tasklet::yield_now();
                        used
                    })
                })
                .collect();
            // FIFO: every tasklet runs up to its yield before main resumes.
            tasklet::yield_now();
            let peak = rss_bytes();
            for r in tasklet::joinall(hs) {
                assert!(r.unwrap() >= TOUCH);
            }
            let after = rss_bytes();
            (before, peak, after)
        })
    };
    let (before, peak, after) = run(0);
    // Restore the process-wide default for whatever runs next.
    tasklet::Config::new().stack_pool_size(1024).dispatch(|| ());
    let touched = N * TOUCH;
    assert!(
        peak.saturating_sub(before) >= touched / 2,
        "the stacks were not touched? peak growth {} KiB",
        peak.saturating_sub(before) / 1024
    );
    // Under AddressSanitizer, the shadow of every stack (an eighth of its
    // 256 KiB + guard) stays resident after the stack's own pages are
    // released: corosensei unpoisons the whole stack when a coroutine ends,
    // which writes that shadow. ASan's cost, not the pool's.
    #[cfg(feature = "sanitizer")]
    let asan_shadow = N * (256 * 1024 + 4096) / 8;
    #[cfg(not(feature = "sanitizer"))]
    let asan_shadow = 0;
    assert!(
        after.saturating_sub(before) < touched / 8 + asan_shadow,
        "with a pool limit of 0, freed stacks keep {} KiB of {} KiB touched",
        after.saturating_sub(before) / 1024,
        touched / 1024
    );
}
