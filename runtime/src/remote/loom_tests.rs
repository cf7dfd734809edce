//! Loom models of the [`RemoteJoinHandle`] completion: the tasklet's
//! outcome delivered on its dispatcher's thread ([`Deliver`]) racing a
//! `join` (thread parking through the completion's `Event`), an `.await`
//! (the stored `Waker`), a drop of the handle (detached outcome) and a
//! `kill` that comes before the tasklet exists.
//!
//! These run the production `Completion`, `Deliver` and `RemoteJoinHandle`
//! (the completion's spin lock, its `done` flag, the `UnsafeCell` of the
//! outcome and thread parking are loom's under `cfg(loom)`, see
//! `crate::shim`; the reference count lives under the spin lock, and the
//! allocation is freed by whichever side releases last). The delivering side is a
//! loom thread standing in for the tasklet's dispatcher: what happens there
//! before `Deliver::finish` (the tasklet running) is single-threaded.
//! Run with `scripts/loom.sh`.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::*;

/// Runs `f` under loom (every interleaving up to `LOOM_MAX_PREEMPTIONS`,
/// 3 unless set) and prints how many executions that took.
fn check<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut b = loom::model::Builder::new();
    let bound = b.preemption_bound.unwrap_or(3);
    b.preemption_bound = Some(bound);
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    b.check(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    eprintln!(
        "loom model {name}: {} executions (max preemptions {bound})",
        n.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// A handle and the delivery end its tasklet would hold.
fn pair<T>() -> (RemoteJoinHandle<T>, Deliver<T>) {
    let c = new_cell::<T, ()>(None, None, Location::caller(), 2, None);
    // SAFETY: the delivering side's reference of the fresh cell.
    let deliver = unsafe { Deliver::new(c) };
    (
        RemoteJoinHandle {
            c,
            _owns: PhantomData,
        },
        deliver,
    )
}

#[test]
fn loom_remote_join_vs_finish() {
    check("remote_join_vs_finish", || {
        let (h, d) = pair::<u32>();
        let t = thread::spawn(move || d.finish(Ok(42)));
        assert_eq!(h.join().unwrap(), 42);
        t.join().unwrap();
    });
}

#[test]
fn loom_remote_join_vs_never_ran() {
    // The job carrying `Deliver` is dropped (dispatcher gone, or the
    // tasklet killed before it started): the join reports "killed".
    check("remote_join_vs_never_ran", || {
        let (h, d) = pair::<u32>();
        let t = thread::spawn(move || drop(d));
        assert!(h.join().unwrap_err().is_killed());
        t.join().unwrap();
    });
}

/// A value that counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn loom_remote_drop_handle_vs_finish() {
    // The handle dropped (detached) while the outcome is delivered: the
    // value is dropped exactly once, on whichever side comes last.
    check("remote_drop_handle_vs_finish", || {
        let drops = Arc::new(AtomicUsize::new(0));
        let (h, d) = pair::<Counted>();
        let v = Counted(drops.clone());
        let t = thread::spawn(move || d.finish(Ok(v)));
        drop(h);
        t.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    });
}

/// Wakes a loom thread parked in [`block_on`].
struct Unpark(thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: polls `f`, parking the (loom) thread between
/// wake-ups. A wake-up that is lost leaves the thread parked for good,
/// which loom reports.
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(std::sync::Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

#[test]
fn loom_remote_await_vs_finish() {
    // `.await` from another thread's executor: the waker stored by `poll`
    // is woken by the delivery (loom reports a lost wake-up as a deadlock).
    check("remote_await_vs_finish", || {
        let (h, d) = pair::<u32>();
        let t = thread::spawn(move || d.finish(Ok(7)));
        assert_eq!(block_on(h).unwrap(), 7);
        t.join().unwrap();
    });
}

#[test]
fn loom_remote_kill_before_target_vs_finish() {
    // `kill` before the tasklet exists only records the request (to be
    // acted on by `set_target`), and never disturbs an outcome delivered
    // meanwhile.
    check("remote_kill_before_target_vs_finish", || {
        let (h, d) = pair::<u32>();
        let t = thread::spawn(move || d.finish(Ok(1)));
        h.kill();
        {
            let g = h.completion().inner.lock();
            // Either recorded (no outcome yet) or ignored (finished).
            assert!(g.kill_requested || g.finished);
            assert!(g.addr.is_none());
        }
        t.join().unwrap();
        assert!(h.is_finished());
        assert_eq!(h.join().unwrap(), 1);
    });
}

#[test]
fn loom_remote_job_dropped_unrun_vs_join() {
    // The `spawn_on` job is dropped without running (its dispatcher is
    // gone) on another thread while the handle joins: the closure is
    // dropped exactly once and the join reports "killed".
    check("remote_job_dropped_unrun_vs_join", || {
        let drops = Arc::new(AtomicUsize::new(0));
        let c = new_cell::<u32, Counted>(
            None,
            Some(Counted(drops.clone())),
            Location::caller(),
            2,
            None,
        );
        let h = RemoteJoinHandle::<u32> {
            c,
            _owns: PhantomData,
        };
        let cell = c.cast::<Cell<u32, Counted>>();
        // SAFETY: the job owns the delivering side's reference; only its
        // drop is ever called.
        let job = unsafe {
            (*cell.as_ptr()).job =
                JobNode::new(drop_spawn::<u32, Counted>, drop_spawn::<u32, Counted>);
            RawJob::new(NonNull::from(&(*cell.as_ptr()).job))
        };
        let t = thread::spawn(move || drop(Job::Raw(job)));
        assert!(h.join().unwrap_err().is_killed());
        t.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    });
}
