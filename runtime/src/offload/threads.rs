//! The offload thread pool itself: process-wide, bounded, threads started
//! on demand and retired when idle. Knows nothing of tasklets.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use crate::util::lock;

/// How long an idle offload thread waits for work before it exits.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

const DEFAULT_MAX_THREADS: usize = 64;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

pub(super) struct PoolState {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

pub(super) struct ThreadPool {
    state: Mutex<PoolState>,
    work: Condvar,
    max_threads: usize,
}

pub(super) fn pool() -> &'static ThreadPool {
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
    pub(super) fn submit(&'static self, job: Job) -> Result<(), Job> {
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
