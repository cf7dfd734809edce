//! ThreadSanitizer's view of tasklet stacks: one TSan *fiber* per tasklet.
//!
//! Compiled only into ThreadSanitizer builds (`-Zsanitizer=thread`, where
//! `build.rs` sets `cfg(tasklet_tsan)`); other builds do not contain it.
//! `scripts/tsan.sh` runs the cross-thread tests this way.
//!
//! TSan keeps a shadow call stack and a vector clock per thread. A tasklet
//! switch that TSan is not told about leaves the dispatcher's thread state
//! attributed to whatever stack runs, and the shadow stack (pushed and popped
//! by every instrumented function) out of step with the real one. So each
//! tasklet gets a fiber (`__tsan_create_fiber`, its own shadow stack and
//! clock, reported as a thread named after the tasklet), and the dispatcher
//! tells TSan whenever it runs one ([`Fiber::run`]).
//!
//! Both switches of a resume are announced by the dispatcher, around
//! `Coroutine::resume`, not on each side of the stack switch inside it
//! (corosensei's assembly): a tasklet's frames are then pushed and popped on
//! its own shadow stack and the dispatcher's on its own, whatever the switch
//! does in between, and the only code TSan attributes to the wrong fiber is
//! corosensei's few instructions on either side of the switch, on the
//! dispatcher's thread. Announcing the switch out in `Header::suspend`
//! instead would push `suspend`'s frame on one shadow stack and pop it from
//! the other, drifting both by a frame per switch.
//!
//! Happens-before: a tasklet and its dispatcher run on one thread, one after
//! the other, so every switch *is* ordered and TSan must see it so; not
//! synchronizing would report the dispatcher's and its tasklets' accesses to
//! the same header as races. The edge is made explicitly, with
//! `__tsan_release`/`__tsan_acquire` on the [`Fiber`]'s own address and the
//! switch itself `__tsan_switch_to_fiber_no_sync`, rather than by
//! `__tsan_switch_to_fiber`'s default synchronization: that one syncs on the
//! address of TSan's fiber state, which is freed by `__tsan_destroy_fiber`
//! and may then be reused for a fiber of *another* thread, whose first
//! switch would inherit this thread's clock — a false happens-before edge
//! between two dispatcher threads, which could hide a real race. The
//! `Fiber` lives in the tasklet's header: its block is reused only on the
//! same thread, and when it is really freed TSan forgets the sync object
//! (`free` clears them). This adds no edge other threads could ride on: the
//! clock a tasklet acquires is its own dispatcher thread's.

use std::cell::Cell;
use std::ffi::{c_char, c_uint, c_void, CString};
use std::ptr;

// The fiber and synchronization part of
// compiler-rt/include/sanitizer/tsan_interface.h, provided by the TSan
// runtime that `-Zsanitizer=thread` links in.
extern "C" {
    fn __tsan_get_current_fiber() -> *mut c_void;
    fn __tsan_create_fiber(flags: c_uint) -> *mut c_void;
    fn __tsan_destroy_fiber(fiber: *mut c_void);
    fn __tsan_switch_to_fiber(fiber: *mut c_void, flags: c_uint);
    fn __tsan_set_fiber_name(fiber: *mut c_void, name: *const c_char);
    fn __tsan_acquire(addr: *mut c_void);
    fn __tsan_release(addr: *mut c_void);
}

/// `__tsan_switch_to_fiber_no_sync`: switch without a happens-before edge
/// (this module makes its own, see the module docs).
const SWITCH_NO_SYNC: c_uint = 1;

/// A tasklet's TSan fiber: created the first time the tasklet runs,
/// destroyed when it finishes (or with its header, if it never does).
pub(crate) struct Fiber(Cell<*mut c_void>);

impl Fiber {
    pub(crate) const fn new() -> Fiber {
        Fiber(Cell::new(ptr::null_mut()))
    }

    /// The address both sides of a switch synchronize on.
    #[inline(always)]
    fn sync_addr(&self) -> *mut c_void {
        self as *const Fiber as *mut c_void
    }

    /// Runs `resume` — the resume of this tasklet's coroutine — as this
    /// fiber, then switches TSan back to the caller's (the dispatcher's)
    /// fiber. `name` names a new fiber in reports.
    ///
    /// Inlined, and every switch made in this frame: a function of our own
    /// around the switches would have its entry and exit recorded on two
    /// different shadow stacks.
    #[inline(always)]
    pub(crate) fn run<R>(&self, name: impl FnOnce() -> String, resume: impl FnOnce() -> R) -> R {
        if self.0.get().is_null() {
            self.create(format!("tasklet {}", name()));
        }
        let fiber = self.0.get();
        let sync = self.sync_addr();
        // SAFETY: the TSan runtime is linked in (this module is compiled only
        // with `-Zsanitizer=thread`). `fiber` is a live fiber made by
        // `create` and not destroyed (`destroy` nulls the cell, and `create`
        // ran above if it was null); it is not the current one (only this
        // call switches to it, and it switches back before returning).
        // `dispatcher` is the running fiber, alive for as long as this call.
        // `sync` is the address of `self`, valid memory that is only used as
        // a sync object's key.
        let dispatcher = unsafe {
            let dispatcher = __tsan_get_current_fiber();
            __tsan_release(sync);
            __tsan_switch_to_fiber(fiber, SWITCH_NO_SYNC);
            __tsan_acquire(sync);
            dispatcher
        };
        let result = resume();
        // SAFETY: as above; `dispatcher` is the fiber that was running when
        // this call began, still alive (a thread's own fiber, or a fiber
        // nothing destroys while it runs a dispatcher).
        unsafe {
            __tsan_release(sync);
            __tsan_switch_to_fiber(dispatcher, SWITCH_NO_SYNC);
            __tsan_acquire(sync);
        }
        result
    }

    #[cold]
    #[inline(never)]
    fn create(&self, name: String) {
        // SAFETY: the TSan runtime is linked in; flags must be 0. The new
        // fiber starts with a happens-before edge from the current one.
        let fiber = unsafe { __tsan_create_fiber(0) };
        if let Ok(name) = CString::new(name) {
            // SAFETY: `fiber` was just created; TSan copies the name.
            unsafe { __tsan_set_fiber_name(fiber, name.as_ptr()) };
        }
        self.0.set(fiber);
    }

    /// Destroys the fiber once its tasklet has finished (idempotent).
    pub(crate) fn destroy(&self) {
        let fiber = self.0.replace(ptr::null_mut());
        if !fiber.is_null() {
            // SAFETY: `fiber` was made by `create` and is destroyed once (the
            // cell is nulled first). It is not the current fiber: it is
            // current only inside `run`, whose caller (the dispatcher) holds
            // this header then, and a finished or dropped tasklet is never
            // inside `run`.
            unsafe { __tsan_destroy_fiber(fiber) };
        }
    }
}

impl Drop for Fiber {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// The canaries: TSan must still see a race that goes through a tasklet, and
/// name the tasklet in its report (the rest of `scripts/tsan.sh` shows that it
/// reports nothing for correctly synchronized code).
#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Written without synchronization by a plain thread and by a tasklet.
    struct Racy(std::cell::UnsafeCell<u64>);
    // SAFETY: not sound, on purpose: the canary races on it.
    unsafe impl Sync for Racy {}

    static RACY: Racy = Racy(std::cell::UnsafeCell::new(0));
    /// Relaxed: orders the two writes in time without a happens-before edge.
    static WRITTEN: AtomicBool = AtomicBool::new(false);

    /// Run only by `a_race_with_a_tasklet_is_reported_and_names_it`, in a
    /// child process (TSan's report ends it).
    #[test]
    #[ignore = "a deliberate data race, run in a child process by the canary"]
    fn racy_child() {
        let t = std::thread::spawn(|| {
            // SAFETY: none; this is the race TSan must report.
            unsafe { *RACY.0.get() = 1 };
            WRITTEN.store(true, Ordering::Relaxed);
        });
        crate::dispatch(|| {
            let h = crate::Builder::new()
                .name("racer")
                .spawn(|| {
                    while !WRITTEN.load(Ordering::Relaxed) {
                        crate::yield_now();
                    }
                    // SAFETY: none; the other half of the race.
                    unsafe { *RACY.0.get() = 2 };
                })
                .unwrap();
            h.join().unwrap();
        });
        t.join().unwrap();
    }

    #[test]
    fn a_race_with_a_tasklet_is_reported_and_names_it() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tsan::tests::racy_child",
                "--ignored",
                "--test-threads=1",
            ])
            .env("TSAN_OPTIONS", "halt_on_error=1:exitcode=66")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(66),
            "child: {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("WARNING: ThreadSanitizer: data race"),
            "{stderr}"
        );
        // The tasklet's side is attributed to its own fiber, by name.
        assert!(stderr.contains("tasklet 'racer'"), "{stderr}");
        assert!(stderr.contains("racy_child"), "{stderr}");
    }
}
