//! Thread offload: [`unblock`] runs a blocking or CPU-heavy closure on a
//! shared pool of OS threads while the calling tasklet parks.
//!
//! The pool is process-wide and bounded. Threads start lazily, on demand,
//! up to the limit (`TASKLET_UNBLOCK_THREADS`, default 64); a thread that has
//! had nothing to do for [`UNBLOCK_IDLE_TIMEOUT`](crate::UNBLOCK_IDLE_TIMEOUT) exits. Jobs beyond the limit wait
//! in a FIFO queue.

use crate::shim::thread;
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::hub;
use crate::sync::wait::{block, Blocked, WaitOn, Wakeup};
use crate::util::lock;

pub(crate) mod threads;

use threads::pool;
pub use threads::IDLE_TIMEOUT;
pub(crate) use threads::{submit, thread_counts, Job};

/// Where the offload thread leaves the outcome for the waiting tasklet.
struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    result: Option<std::thread::Result<T>>,
    waiter: Option<Wakeup>,
}

/// Runs `f` on an OS thread of the offload pool and parks the calling
/// tasklet until it returns (Twisted's `deferToThread`, gevent's
/// `threadpool.apply`).
///
/// Use it for anything that would otherwise stall the dispatcher: blocking
/// system calls and third-party libraries (file I/O, `getaddrinfo`, database
/// drivers) and CPU-heavy work. Other tasklets keep running meanwhile.
///
/// - A panic in `f` is caught on the pool thread and re-raised in the
///   calling tasklet (with [`std::panic::resume_unwind`]).
/// - If the waiting tasklet is killed or its [`timeout`](crate::timeout)
///   expires, it unwinds at once; `f` still runs to completion on its thread
///   (a thread cannot be interrupted) and its result is dropped there. The
///   pool is unaffected.
/// - Called from a destructor while the tasklet is being killed at
///   `dispatch` exit (it cannot park then), it blocks the dispatcher's thread until `f` returns.
/// - **Outside a dispatcher** (a plain thread, including the offload
///   threads themselves) it simply calls `f` on the calling thread: blocking
///   is what such a thread does anyway, and this avoids a pointless hop.
///
/// The pool holds at most `TASKLET_UNBLOCK_THREADS` threads (default 64),
/// started on demand; extra calls queue. Idle threads exit after
/// [`UNBLOCK_IDLE_TIMEOUT`](crate::UNBLOCK_IDLE_TIMEOUT).
///
/// ```
/// use std::time::Duration;
/// let n = tasklet::dispatch(|| {
///     // A blocking call: the dispatcher keeps serving other tasklets meanwhile.
///     let ticker = tasklet::spawn(|| {
///         for _ in 0..3 { tasklet::sleep(Duration::from_millis(5)); }
///     });
///     let n = tasklet::unblock(|| {
///         std::thread::sleep(Duration::from_millis(30));
///         (1..=10u64).product::<u64>()
///     });
///     ticker.join().unwrap();
///     n
/// });
/// assert_eq!(n, 3_628_800);
/// ```
pub fn unblock<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if !hub::in_dispatcher() {
        return f();
    }
    let slot = Arc::new(Slot {
        state: Mutex::new(SlotState {
            result: None,
            waiter: None,
        }),
    });
    let theirs = slot.clone();
    let job: Job = Box::new(move || {
        let r = panic::catch_unwind(AssertUnwindSafe(f));
        let waiter = {
            let mut st = lock(&theirs.state);
            st.result = Some(r);
            st.waiter.take()
        };
        // If the tasklet gave up (killed, timed out) this is a no-op and the
        // result is dropped with the last `Arc` — on this thread.
        if let Some(w) = waiter {
            w.wake();
        }
    });
    if let Err(job) = pool().submit(job) {
        log::warn!(
            "tasklet::unblock: no offload thread available; running on the dispatcher thread"
        );
        job();
    }
    loop {
        {
            let mut st = lock(&slot.state);
            if let Some(r) = st.result.take() {
                return finish(r);
            }
            st.waiter = Some(Wakeup::current());
        }
        if block(None, WaitOn::Offload) == Blocked::Interrupted {
            // Unwinding already (a destructor): we cannot park, so wait for
            // the thread the old-fashioned way.
            return wait_thread(&slot);
        }
    }
}

fn wait_thread<T>(slot: &Slot<T>) -> T {
    loop {
        {
            let mut st = lock(&slot.state);
            if let Some(r) = st.result.take() {
                return finish(r);
            }
            st.waiter = Some(Wakeup::Thread(thread::current()));
        }
        thread::park();
    }
}

fn finish<T>(r: Result<T, Box<dyn Any + Send>>) -> T {
    match r {
        Ok(v) => v,
        Err(payload) => crate::task::reraise(payload),
    }
}
