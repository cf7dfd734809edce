//! Waiting that works for tasklets and plain OS threads alike.
//!
//! Every primitive in [`crate::sync`] keeps its state behind a `std` mutex
//! that is only ever held for a few instructions and never across a park, so
//! on one dispatcher it is always uncontended. A caller that must wait leaves
//! a [`Wakeup`] in a [`WaitQueue`] under that mutex, releases it, and
//! [`block`]s. A tasklet parks (its dispatcher keeps running other tasklets);
//! a thread outside any dispatcher parks the thread.

use std::collections::VecDeque;
use std::thread::{self, Thread};
use std::time::Instant;

use crate::hub::{self, RemoteUnparker, Wake};

/// How to wake one waiter.
pub(crate) enum Wakeup {
    /// A parked tasklet, on this or another dispatcher.
    Tasklet(RemoteUnparker),
    /// A plain OS thread blocked in [`block`].
    Thread(Thread),
}

impl Wakeup {
    /// A wake-up for the caller's next [`block`].
    pub(crate) fn current() -> Wakeup {
        if hub::in_dispatcher() {
            Wakeup::Tasklet(hub::current_unparker().remote())
        } else {
            Wakeup::Thread(thread::current())
        }
    }

    /// Delivers the wake-up (same dispatcher: no syscall).
    pub(crate) fn wake(self) {
        match self {
            Wakeup::Tasklet(u) => u.unpark(),
            Wakeup::Thread(t) => t.unpark(),
        }
    }
}

/// Why [`block`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Woken (possibly spuriously: re-check the condition).
    Woken,
    /// The deadline passed.
    TimedOut,
    /// The tasklet is unwinding (a blocking call from a destructor during a
    /// kill or timeout) and cannot wait: give up.
    Interrupted,
}

/// Waits for the [`Wakeup`] made by [`Wakeup::current`] or until `deadline`.
///
/// In a tasklet a kill or `timeout` unwinds out of this call (see
/// [`hub::park`]); keep waiter cleanup in a drop guard.
pub(crate) fn block(deadline: Option<Instant>) -> Blocked {
    if hub::in_dispatcher() {
        match hub::park(deadline) {
            Ok(Wake::Unparked) => Blocked::Woken,
            Ok(Wake::TimedOut) => Blocked::TimedOut,
            Err(_) => Blocked::Interrupted,
        }
    } else {
        match deadline {
            None => {
                thread::park();
                Blocked::Woken
            }
            Some(dl) => {
                let now = Instant::now();
                if now >= dl {
                    return Blocked::TimedOut;
                }
                thread::park_timeout(dl - now);
                if Instant::now() >= dl {
                    Blocked::TimedOut
                } else {
                    Blocked::Woken
                }
            }
        }
    }
}

/// A FIFO of waiters, kept under the owning primitive's mutex.
///
/// Each registration gets a key; a waiter that finds its key gone was
/// notified (popped by [`WaitQueue::pop`]) and, if it does not use the
/// notification, passes it on so no wake-up is lost.
#[derive(Default)]
pub(crate) struct WaitQueue {
    next_key: u64,
    entries: VecDeque<(u64, Wakeup)>,
}

impl WaitQueue {
    pub(crate) fn new() -> WaitQueue {
        WaitQueue::default()
    }

    /// Registers the caller; returns its key.
    pub(crate) fn push(&mut self, w: Wakeup) -> u64 {
        self.next_key = self.next_key.wrapping_add(1);
        self.entries.push_back((self.next_key, w));
        self.next_key
    }

    /// Removes a registration; `false` if it was already popped (notified).
    pub(crate) fn remove(&mut self, key: u64) -> bool {
        // Waiters usually leave from the front (FIFO wake-up order).
        match self.entries.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Takes the longest-waiting registration, to be woken after the lock is released.
    pub(crate) fn pop(&mut self) -> Option<Wakeup> {
        self.entries.pop_front().map(|(_, w)| w)
    }

    /// Takes every registration.
    pub(crate) fn take_all(&mut self) -> VecDeque<(u64, Wakeup)> {
        std::mem::take(&mut self.entries)
    }
}

/// Wakes every registration in `list` (call without holding the lock).
pub(crate) fn wake_all(list: VecDeque<(u64, Wakeup)>) {
    for (_, w) in list {
        w.wake();
    }
}

/// Locks a std mutex, ignoring poisoning: the primitives' critical sections
/// never run user code that could panic halfway through an update.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
