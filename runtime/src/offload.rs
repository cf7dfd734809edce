//! Thread offload: [`unblock`] runs a blocking or CPU-heavy closure on a
//! shared pool of OS threads while the calling tasklet parks.
//!
//! The pool is process-wide and bounded. Threads start lazily, on demand,
//! up to the limit (`TASKLET_UNBLOCK_THREADS`, default 64); a thread that has
//! had nothing to do for [`UNBLOCK_IDLE_TIMEOUT`](crate::UNBLOCK_IDLE_TIMEOUT) exits. Jobs beyond the limit wait
//! in a FIFO queue.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use crate::hub;
use crate::sync::wait::{block, lock, Blocked, WaitOn, Wakeup};

/// How long an idle offload thread waits for work before it exits.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

const DEFAULT_MAX_THREADS: usize = 64;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

struct PoolState {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

struct ThreadPool {
    state: Mutex<PoolState>,
    work: Condvar,
    max_threads: usize,
}

fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let max_threads = std::env::var("TASKLET_UNBLOCK_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_MAX_THREADS);
        ThreadPool {
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
            }),
            work: Condvar::new(),
            max_threads,
        }
    })
}

impl ThreadPool {
    /// Queues `job`; gives it back if no thread exists and none can be started.
    fn submit(&'static self, job: Job) -> Result<(), Job> {
        let mut st = lock(&self.state);
        st.queue.push_back(job);
        if st.idle >= st.queue.len() {
            drop(st);
            self.work.notify_one();
            return Ok(());
        }
        if st.threads >= self.max_threads {
            // A busy thread picks it up when it finishes.
            return Ok(());
        }
        st.threads += 1;
        drop(st);
        let spawned = thread::Builder::new()
            .name("tasklet-unblock".into())
            .spawn(move || self.worker());
        if let Err(e) = spawned {
            let mut st = lock(&self.state);
            st.threads -= 1;
            log::error!("tasklet::unblock: cannot start an offload thread: {e}");
            if st.threads == 0 {
                // Nobody will ever run it: hand the newest job back.
                if let Some(job) = st.queue.pop_back() {
                    return Err(job);
                }
            }
        }
        Ok(())
    }

    fn worker(&self) {
        let mut st = lock(&self.state);
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job();
                st = lock(&self.state);
                continue;
            }
            st.idle += 1;
            let (guard, res) = self
                .work
                .wait_timeout(st, IDLE_TIMEOUT)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st = guard;
            st.idle -= 1;
            if res.timed_out() && st.queue.is_empty() {
                st.threads -= 1;
                return;
            }
        }
    }
}

/// Queues `job` on the offload pool without waiting for it (the caller
/// arranges its own completion signal); runs it on the calling thread if no
/// pool thread can be started. Used by [`crate::fs`] for write-behind.
pub(crate) fn submit(job: Job) {
    if let Err(job) = pool().submit(job) {
        log::warn!("tasklet: no offload thread available; running on the calling thread");
        job();
    }
}

/// Offload threads running a job and waiting idle for one, for
/// [`crate::stats`] and the deadlock check (an idle one runs no user code).
pub(crate) fn thread_counts() -> (usize, usize) {
    let st = lock(&pool().state);
    (st.threads - st.idle, st.idle)
}

/// Where the offload thread leaves the outcome for the waiting tasklet.
struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    result: Option<thread::Result<T>>,
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
