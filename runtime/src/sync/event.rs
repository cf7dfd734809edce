//! A flag tasklets can wait for (gevent `event.Event`).

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::wait::{block, lock, wake_all, Blocked, Ticket, WaitQueue};

struct State {
    set: bool,
    /// Bumped by every `set` that raised the flag: a waiter woken by it
    /// returns even if the flag was cleared again before it ran.
    generation: u64,
    waiters: WaitQueue,
}

/// A boolean flag: [`wait`](Event::wait) parks until it is set; [`set`](Event::set)
/// wakes every waiter.
///
/// ```
/// use std::rc::Rc;
/// use tasklet::sync::Event;
/// tasklet::dispatch(|| {
///     let ready = Rc::new(Event::new());
///     let r = ready.clone();
///     let waiter = tasklet::spawn(move || { r.wait(); "go" });
///     tasklet::yield_now();
///     ready.set();
///     assert_eq!(waiter.join().unwrap(), "go");
/// });
/// ```
pub struct Event {
    state: Mutex<State>,
}

impl Default for Event {
    fn default() -> Self {
        Event::new()
    }
}

impl Event {
    /// A new, unset event.
    pub fn new() -> Event {
        Event {
            state: Mutex::new(State {
                set: false,
                generation: 0,
                waiters: WaitQueue::new(),
            }),
        }
    }

    /// Sets the flag and wakes every waiter. Setting a set event does nothing.
    pub fn set(&self) {
        let mut st = lock(&self.state);
        if st.set {
            return;
        }
        st.set = true;
        st.generation = st.generation.wrapping_add(1);
        let waiters = st.waiters.take_all();
        drop(st);
        wake_all(waiters);
    }

    /// Clears the flag; later waits park again.
    pub fn clear(&self) {
        lock(&self.state).set = false;
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        lock(&self.state).set
    }

    /// Parks until the flag is set (returns at once if it is).
    ///
    /// Called from a destructor while the tasklet is being killed at
    /// `dispatch` exit (when it cannot park) it returns at once.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Parks until the flag is set or `timeout` passes; returns whether it was set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Parks until the flag is set or `deadline` passes; returns whether it was set.
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.wait_until(Some(deadline))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut st = lock(&self.state);
        if st.set {
            return true;
        }
        let generation = st.generation;
        let mut guard = Leave {
            ev: self,
            key: Some(st.waiters.push_current()),
        };
        drop(st);
        loop {
            let r = block(deadline);
            let mut st = lock(&self.state);
            if let Some(k) = guard.key.take() {
                st.waiters.remove(k.key);
            }
            if st.set || st.generation != generation {
                return true;
            }
            if r != Blocked::Woken {
                return false;
            }
            // Spurious wake-up: register again for the next park.
            guard.key = Some(st.waiters.push_current());
        }
    }
}

/// Removes an unwinding waiter from the queue.
struct Leave<'a> {
    ev: &'a Event,
    key: Option<Ticket>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            lock(&self.ev.state).waiters.remove(k.key);
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}
