//! A flag tasklets can wait for (gevent `event.Event`).

use std::fmt;
use std::time::{Duration, Instant};

use super::wait::{wait_in, wake, wake_all, WaitOn, WaitState, Waiters, Wakeup};
use crate::util::SpinLock;

pub(super) struct State {
    pub(super) set: bool,
    /// Parked waiters. `set` pops them all: a popped waiter returns `true`
    /// even if the flag was cleared again before it ran.
    waiters: Waiters,
}

impl WaitState for State {
    fn waiters(&mut self) -> &mut Waiters {
        &mut self.waiters
    }

    fn pass_on(&mut self) -> Option<Wakeup> {
        // Every waiter was woken: nothing to pass on.
        None
    }

    fn wait_on(&self, addr: usize) -> WaitOn {
        WaitOn::Sync("sync::Event", addr)
    }
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
    state: SpinLock<State>,
}

impl Default for Event {
    fn default() -> Self {
        Event::new()
    }
}

impl Event {
    /// The state, for a select's arm.
    pub(super) fn lock(&self) -> &SpinLock<State> {
        &self.state
    }

    /// A new, unset event.
    pub fn new() -> Event {
        Event {
            state: SpinLock::new(State {
                set: false,
                waiters: Waiters::default(),
            }),
        }
    }

    /// Sets the flag and wakes every waiter. Setting a set event does nothing.
    pub fn set(&self) {
        let mut st = self.state.lock();
        if st.set {
            return;
        }
        st.set = true;
        let Some(first) = st.waiters.pop() else {
            return;
        };
        if st.waiters.is_empty() {
            // One waiter (the common case): no list to collect.
            drop(st);
            wake(&self.state, first);
            return;
        }
        let rest = st.waiters.pop_all();
        drop(st);
        wake(&self.state, first);
        wake_all(&self.state, rest);
    }

    /// Clears the flag; later waits park again.
    #[inline]
    pub fn clear(&self) {
        self.state.lock().set = false;
    }

    /// Whether the flag is set.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.state.lock().set
    }

    /// Parks until the flag is set (returns at once if it is).
    ///
    /// Called from a destructor while the tasklet is being killed at
    /// `dispatch` exit (when it cannot park) it returns at once.
    #[inline]
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

    // Inlined (with the park) into the caller, which then resumes from the
    // stack switch in its own frame.
    #[inline(always)]
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let st = self.state.lock();
        if st.set {
            return true;
        }
        wait_in(&self.state, st, deadline)
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}
