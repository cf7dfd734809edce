//! A tasklet killed before it ever ran: its body never runs, and what its
//! closure captured is dropped exactly once — by dropping the closure, not
//! by unwinding (a kill's cost is mostly its DWARF unwind) — on the
//! tasklet's own stack, so a destructor may still block, and one that
//! panics is reported like any tasklet panic.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

mod common;

/// Runs `f` on its own thread, failing the test on a hang (see
/// `common::on_thread_bounded`).
fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    common::on_thread_bounded("kill_unstarted", limit, f)
}

const LIMIT: Duration = Duration::from_secs(30);

/// Counts its drops, and the drops that happened during an unwind.
struct Probe {
    drops: Rc<Cell<usize>>,
    unwinding: Rc<Cell<usize>>,
}

impl Probe {
    fn new(drops: &Rc<Cell<usize>>, unwinding: &Rc<Cell<usize>>) -> Probe {
        Probe {
            drops: drops.clone(),
            unwinding: unwinding.clone(),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
        if std::thread::panicking() {
            self.unwinding.set(self.unwinding.get() + 1);
        }
    }
}

#[test]
fn killed_before_run_drops_its_captures_exactly_once_without_unwinding() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let drops = Rc::new(Cell::new(0));
            let unwinding = Rc::new(Cell::new(0));
            let ran = Rc::new(Cell::new(false));
            let (a, b) = (
                Probe::new(&drops, &unwinding),
                Probe::new(&drops, &unwinding),
            );
            let many: Vec<Probe> = (0..3).map(|_| Probe::new(&drops, &unwinding)).collect();
            let r = ran.clone();
            let h = tasklet::spawn(move || {
                r.set(true);
                let _keep = (a, b, many);
            });
            h.kill();
            h.kill();
            // Not dropped at the kill: when the tasklet gets its turn.
            assert_eq!(drops.get(), 0);
            assert!(h.join().unwrap_err().is_killed());
            assert!(
                !ran.get(),
                "a tasklet killed before it started ran its body"
            );
            assert_eq!(drops.get(), 5, "each capture dropped exactly once");
            assert_eq!(unwinding.get(), 0, "the captures were dropped by an unwind");
            // The dispatcher goes on normally.
            assert_eq!(tasklet::spawn(|| 7).join().unwrap(), 7);
        })
    });
}

#[test]
fn unstarted_tasklets_are_dropped_without_unwinding_at_dispatch_exit() {
    bounded(LIMIT, || {
        let drops = Rc::new(Cell::new(0));
        let unwinding = Rc::new(Cell::new(0));
        let ran = Rc::new(Cell::new(0));
        let (d, u, r) = (drops.clone(), unwinding.clone(), ran.clone());
        tasklet::dispatch(move || {
            for _ in 0..100 {
                let (p, r) = (Probe::new(&d, &u), r.clone());
                drop(tasklet::spawn(move || {
                    r.set(r.get() + 1);
                    drop(p);
                }));
            }
            // Returning without yielding: none of them has run.
        });
        assert_eq!(ran.get(), 0);
        assert_eq!(drops.get(), 100);
        assert_eq!(unwinding.get(), 0);
    });
}

/// Blocks (sleeps) in its destructor and records what it saw there.
struct BlockingDrop {
    log: Rc<RefCell<Vec<String>>>,
}

impl Drop for BlockingDrop {
    fn drop(&mut self) {
        let me = tasklet::current().id();
        tasklet::sleep(Duration::from_millis(5));
        self.log.borrow_mut().push(format!("dropped in {me}"));
    }
}

#[test]
fn a_destructor_of_an_unstarted_killed_tasklet_may_block() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let log = Rc::new(RefCell::new(Vec::new()));
            let g = BlockingDrop { log: log.clone() };
            let h = tasklet::spawn(move || drop(g));
            let id = h.id();
            h.kill();
            assert!(h.join().unwrap_err().is_killed());
            // It ran as the killed tasklet itself, and its sleep completed.
            assert_eq!(*log.borrow(), vec![format!("dropped in {id}")]);
        })
    });
}

struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("capture destructor failed");
    }
}

#[test]
fn a_panicking_destructor_of_an_unstarted_killed_tasklet_is_its_panic() {
    bounded(LIMIT, || {
        tasklet::dispatch(|| {
            let drops = Rc::new(Cell::new(0));
            let unwinding = Rc::new(Cell::new(0));
            let (bad, p) = (PanicOnDrop, Probe::new(&drops, &unwinding));
            let h = tasklet::spawn(move || {
                let _keep = (bad, p);
            });
            h.kill();
            let e = h.join().unwrap_err();
            assert!(e.is_panic(), "{e}");
            assert_eq!(e.panic_message(), Some("capture destructor failed"));
            // The other capture is still dropped (during that panic's unwind).
            assert_eq!(drops.get(), 1);
            // Neither the dispatcher nor other tasklets are affected.
            assert_eq!(tasklet::spawn(|| 7).join().unwrap(), 7);
        })
    });
}
