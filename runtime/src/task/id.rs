//! [`TaskletId`]: a tasklet's identifier.

use std::cell::Cell;
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A tasklet's identifier: unique in the process for its lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskletId(NonZeroU64);

impl TaskletId {
    /// The id as a number (for atomics).
    #[inline]
    pub(crate) fn to_u64(self) -> u64 {
        self.0.get()
    }

    /// The id [`to_u64`](Self::to_u64) gave (`None` for 0).
    #[inline]
    pub(crate) fn from_u64(n: u64) -> Option<TaskletId> {
        NonZeroU64::new(n).map(TaskletId)
    }

    /// A fresh id. Threads take ids from the global counter in blocks of
    /// 1024, so spawning does no atomic read-modify-write.
    #[inline]
    pub(crate) fn next() -> TaskletId {
        const BLOCK: u64 = 1024;
        thread_local! {
            static RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
        }
        let n = RANGE.with(|r| {
            let (next, end) = r.get();
            if next < end {
                r.set((next + 1, end));
                next
            } else {
                let start = NEXT_ID.fetch_add(BLOCK, Ordering::Relaxed);
                r.set((start + 1, start + BLOCK));
                start
            }
        });
        TaskletId(NonZeroU64::new(n).expect("tasklet id counter wrapped"))
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }
}

impl FromStr for TaskletId {
    type Err = std::num::ParseIntError;

    /// Parses a tasklet id as printed (`17`); zero is rejected.
    fn from_str(s: &str) -> Result<TaskletId, Self::Err> {
        // `NonZeroU64`'s parser rejects "0" with a `ParseIntError`.
        s.trim().parse::<NonZeroU64>().map(TaskletId)
    }
}

impl fmt::Display for TaskletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
