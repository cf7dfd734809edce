//! Regression tests for the defects the fault matrix (`tests/fault_matrix.rs`)
//! found. Alone in their binary: before the fixes they aborted the process.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Panics when dropped.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("capture's destructor panics");
    }
}

/// Killing a tasklet before it first ran dropped its closure during the
/// kill's unwind, so a capture whose destructor panics aborted the process
/// ("panic in a destructor during cleanup"). Now `join` reports that panic.
#[test]
fn kill_before_first_run_with_a_capture_that_panics_on_drop() {
    tasklet::dispatch(|| {
        let p = PanicOnDrop;
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let h = tasklet::spawn(move || {
            r.set(true);
            drop(p);
        });
        h.kill();
        let e = h.join().unwrap_err();
        assert!(e.is_panic(), "{e}");
        assert_eq!(e.panic_message(), Some("capture's destructor panics"));
        assert!(!ran.get(), "a tasklet killed before it ran never runs");
        // The dispatcher carries on.
        assert_eq!(tasklet::spawn(|| 5).join().unwrap(), 5);
    });
}

/// The same for tasklets that `dispatch`'s exit kills before they ran, with
/// an unrelated tasklet parked mid-unwind in a destructor meanwhile.
#[test]
fn exit_kills_unstarted_tasklets_whose_captures_panic_on_drop() {
    struct SlowDrop;
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            tasklet::sleep(Duration::from_millis(20));
        }
    }
    let dropped = Rc::new(Cell::new(0));
    let d = dropped.clone();
    tasklet::dispatch(move || {
        let slow = tasklet::spawn(|| {
            let _s = SlowDrop;
            tasklet::sleep(Duration::from_secs(3600));
        });
        tasklet::yield_now();
        slow.kill(); // parks in SlowDrop, mid-unwind
        tasklet::yield_now();
        for _ in 0..3 {
            let (p, d) = (PanicOnDrop, d.clone());
            drop(tasklet::spawn(move || {
                drop(p);
                d.set(d.get() + 100);
            }));
        }
        d.set(d.get() + 1);
        // Returning kills the three before they run.
    });
    assert_eq!(dropped.get(), 1, "the unstarted tasklets never ran");
}
