//! Waiting for the first of several things (Go's `select`, gevent's
//! `wait(objects, count=1)`): [`Select`] and the [`select!`](crate::select)
//! macro.
//!
//! A select registers one waiter per arm, each in its own primitive's wait
//! list (the same intrusive [`WaitList`](super::wait::WaitList) nodes a
//! plain `recv` uses, living in the select's arms), then parks once. Whoever
//! wakes it first wins; every other registration is withdrawn under its
//! primitive's lock before the select returns. An arm that is not taken
//! loses nothing: a value a sender handed to the select's receive waiter
//! meanwhile goes on to the next receiver or back to the front of the
//! channel, and a send arm's value is moved into the channel only when that
//! arm is the one taken.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::channel::{Receiver, RecvError, SendError, Sender};
use super::wait::{block_as, Blocked, Waiter};
use super::{AsyncResult, Event};
use crate::hub;
use crate::task::header::WaitOn;
use crate::task::JoinHandle;

mod arms;
mod macros;

use arms::{JoinArm, RecvArm, SendArm, Slot, WaitersArm};

/// How an arm ends a try under its primitive's lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Try {
    /// Completed now: take this arm.
    Done,
    /// Not ready; the waiter is linked if registering was asked for.
    Pending,
}

/// One arm of a [`Select`], boxed so its waiter node stays in place while
/// linked.
trait Arm<R> {
    /// Completes the arm now if it can; else, if `register`, links its
    /// waiter (for the current wait epoch) under the same lock.
    fn try_or_register(&mut self, register: bool) -> Try;
    /// Unlinks the waiter if it is linked. Returns whether the arm completed
    /// while linked (a value was handed over, an event fired).
    fn withdraw(&mut self) -> bool;
    /// Another arm was taken after this one completed in
    /// [`withdraw`](Arm::withdraw): undo it (give a handed-over value back).
    fn give_back(&mut self);
    /// The arm's result, once taken.
    fn finish(&mut self) -> R;
    /// The arm's result when the select cannot wait (the tasklet is being
    /// unwound at `dispatch` exit): an error where the arm has one.
    fn interrupted(&mut self) -> R;
    /// Whether [`interrupted`](Arm::interrupted) reports an error (channel
    /// arms) rather than pretending the arm fired.
    fn fails_when_interrupted(&self) -> bool {
        false
    }
    /// For an arm that may complete by a value queued from another thread
    /// without a wake-up (a receive on a buffered channel): a counter that
    /// moves when one is, read without its lock. `None` for other arms.
    fn hint(&self) -> Option<usize> {
        None
    }
}

/// Waits for the first of several operations: receiving from or sending on
/// a channel, a [`JoinHandle`] finishing, an [`Event`] being set, an
/// [`AsyncResult`] becoming ready, or a deadline.
///
/// Each arm comes with a closure that turns its outcome into the select's
/// result; only the closure of the arm taken runs, after every other arm
/// has been withdrawn. When several arms are ready, the first one tried
/// wins, and every select starts trying at a random arm: no arm starves.
/// Arms that are not taken have no effect: no value is taken from their
/// channel, and no send arm's value is sent; with
/// [`send_from`](Select::send_from) the value stays in the caller's slot.
///
/// Works in tasklets (parks the tasklet) and on plain threads (blocks the
/// thread); senders may be on any thread. [`select!`](crate::select) is the
/// same thing as a macro.
///
/// ```
/// use std::time::Duration;
/// use tasklet::sync::{unbounded, Select};
///
/// enum Msg { Number(u32), Word(&'static str), Closed, Idle }
///
/// tasklet::dispatch(|| {
///     let (ntx, nrx) = unbounded();
///     let (wtx, wrx) = unbounded();
///     tasklet::spawn(move || { wtx.send("hello").unwrap(); ntx.send(7).unwrap() });
///     let mut got = Vec::new();
///     while got.len() < 2 {
///         let msg = Select::new()
///             .recv(&nrx, |r| r.map_or(Msg::Closed, Msg::Number))
///             .recv(&wrx, |r| r.map_or(Msg::Closed, Msg::Word))
///             .timeout(Duration::from_secs(10), || Msg::Idle)
///             .wait();
///         match msg {
///             Msg::Number(n) => got.push(n.to_string()),
///             Msg::Word(w) => got.push(w.to_string()),
///             Msg::Closed => {} // one is closed and drained; the other may still hold a value
///             Msg::Idle => panic!("nothing for 10 s"),
///         }
///     }
///     got.sort();
///     assert_eq!(got, ["7", "hello"]);
/// });
/// ```
#[must_use = "a select does nothing until `wait` is called"]
pub struct Select<'a, R> {
    arms: Vec<Box<dyn Arm<R> + 'a>>,
    deadline: Option<(Instant, Box<dyn FnOnce() -> R + 'a>)>,
}

impl<R> Default for Select<'_, R> {
    fn default() -> Self {
        Select::new()
    }
}

impl<'a, R> Select<'a, R> {
    /// A select without arms.
    pub fn new() -> Self {
        Select {
            arms: Vec::new(),
            deadline: None,
        }
    }

    /// Adds an arm receiving from `rx`; `f` gets what
    /// [`Receiver::recv`] would return (`Err` once the channel is closed and
    /// drained).
    pub fn recv<T: 'a>(
        mut self,
        rx: &'a Receiver<T>,
        f: impl FnOnce(Result<T, RecvError>) -> R + 'a,
    ) -> Self {
        self.arms.push(Box::new(RecvArm {
            chan: rx.chan(),
            node: Waiter::new(None),
            linked: false,
            key: None,
            got: None,
            f: Some(f),
        }));
        self
    }

    /// Adds an arm sending `value` on `tx`; `f` gets what [`Sender::send`]
    /// would return (`Err` with the value if the channel is closed). If
    /// another arm is taken, `value` is not sent and is dropped with the
    /// select; use [`send_from`](Select::send_from) to keep it.
    pub fn send<T: 'a>(
        mut self,
        tx: &'a Sender<T>,
        value: T,
        f: impl FnOnce(Result<(), SendError<T>>) -> R + 'a,
    ) -> Self {
        self.arms.push(Box::new(SendArm {
            chan: tx.chan(),
            node: Waiter::new(()),
            linked: false,
            key: None,
            value: Slot::Owned(Some(value)),
            result: None,
            f: Some(f),
        }));
        self
    }

    /// Like [`send`](Select::send), with the value in the caller's `slot`:
    /// it is taken from there only if this arm is taken, and stays there
    /// otherwise, so a value not sent is never lost. An empty slot makes
    /// the arm never ready.
    ///
    /// ```
    /// use tasklet::sync::{channel, Select};
    /// let (tx, _rx) = channel::<String>(0); // nobody receives
    /// let mut pending = Some("precious".to_string());
    /// let sent = Select::new()
    ///     .send_from(&tx, &mut pending, |r| r.is_ok())
    ///     .otherwise(|| false)
    ///     .wait();
    /// assert!(!sent);
    /// assert_eq!(pending.as_deref(), Some("precious")); // still ours
    /// ```
    pub fn send_from<T: 'a>(
        mut self,
        tx: &'a Sender<T>,
        slot: &'a mut Option<T>,
        f: impl FnOnce(Result<(), SendError<T>>) -> R + 'a,
    ) -> Self {
        self.arms.push(Box::new(SendArm {
            chan: tx.chan(),
            node: Waiter::new(()),
            linked: false,
            key: None,
            value: Slot::Borrowed(slot),
            result: None,
            f: Some(f),
        }));
        self
    }

    /// Adds an arm taken when `handle`'s tasklet has finished; `f` runs
    /// then, and [`JoinHandle::join`] afterwards returns at once. The handle
    /// is borrowed mutably: one waiter per tasklet at a time.
    ///
    /// # Panics
    /// In [`wait`](Select::wait) outside a tasklet (tasklets are joined from
    /// their own dispatcher).
    pub fn finished<T: 'a>(
        mut self,
        handle: &'a mut JoinHandle<T>,
        f: impl FnOnce() -> R + 'a,
    ) -> Self {
        self.arms.push(Box::new(JoinArm {
            handle,
            registered: false,
            f: Some(f),
        }));
        self
    }

    /// Adds an arm taken when `event` is set.
    pub fn event(mut self, event: &'a Event, f: impl FnOnce() -> R + 'a) -> Self {
        self.arms.push(Box::new(WaitersArm {
            lock: event.lock(),
            ready: |s| s.set,
            node: Waiter::new(()),
            linked: false,
            key: None,
            f: Some(f),
        }));
        self
    }

    /// Adds an arm taken when `result` is ready (set or failed); read it in
    /// `f` with [`AsyncResult::try_get`] or after the select with
    /// [`AsyncResult::take`].
    pub fn ready<T: 'a, E: 'a>(
        mut self,
        result: &'a AsyncResult<T, E>,
        f: impl FnOnce() -> R + 'a,
    ) -> Self {
        self.arms.push(Box::new(WaitersArm {
            lock: result.lock(),
            ready: |s| s.is_ready(),
            node: Waiter::new(()),
            linked: false,
            key: None,
            f: Some(f),
        }));
        self
    }

    /// Adds an arm taken at `deadline` if no other arm was taken first
    /// (replaces an earlier deadline arm).
    pub fn deadline(mut self, deadline: Instant, f: impl FnOnce() -> R + 'a) -> Self {
        self.deadline = Some((deadline, Box::new(f)));
        self
    }

    /// Adds an arm taken after `timeout` if no other arm was taken first.
    pub fn timeout(self, timeout: Duration, f: impl FnOnce() -> R + 'a) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.deadline(d, f),
            None => self,
        }
    }

    /// Adds an arm taken at once if no other arm is ready now: the select
    /// never waits (crossbeam's `default`).
    pub fn otherwise(self, f: impl FnOnce() -> R + 'a) -> Self {
        self.deadline(Instant::now(), f)
    }

    /// Waits until an arm can be taken, takes it and returns what its
    /// closure returns.
    ///
    /// A kill or [`timeout`](crate::timeout) unwinds out of the wait like
    /// out of any blocking call, withdrawing every arm (nothing is lost).
    /// Called from a destructor while the tasklet is being killed at
    /// `dispatch` exit, when it cannot wait, a select that finds nothing
    /// ready takes its deadline arm, else a channel arm with its error
    /// (`RecvError`, `SendError`), else its first arm.
    ///
    /// # Panics
    /// If there are no arms at all (it would wait forever), and for a
    /// [`finished`](Select::finished) arm outside a tasklet.
    pub fn wait(mut self) -> R {
        let n = self.arms.len();
        assert!(
            n > 0 || self.deadline.is_some(),
            "Select::wait with no arms would wait forever"
        );
        let deadline = self.deadline.as_ref().map(|d| d.0);
        let start = if n > 1 { random_below(n) } else { 0 };
        // Cheap pass: something ready now needs no registration.
        if let Some(i) = self.try_now(start) {
            return self.arms[i].finish();
        }
        let tasklet = hub::in_dispatcher();
        if tasklet {
            if let Some(i) = self.spin_for_a_value(start, deadline) {
                return self.arms[i].finish();
            }
        }
        loop {
            if let Some(dl) = deadline {
                if Instant::now() >= dl {
                    return self.take_deadline();
                }
            }
            // Register every arm, each checked again under its lock (so no
            // event between the check and the link is missed).
            let mut won = None;
            let mut registered = 0;
            for k in 0..n {
                let i = (start + k) % n;
                if self.arms[i].try_or_register(true) == Try::Done {
                    won = Some(i);
                    break;
                }
                registered = k + 1;
            }
            let mut blocked = Blocked::Woken;
            if won.is_none() {
                blocked = block_as(tasklet, deadline, WaitOn::Other("select"));
            }
            // Withdraw in the same order; the first arm found completed wins.
            for k in 0..registered {
                let i = (start + k) % n;
                if self.arms[i].withdraw() {
                    if won.is_none() {
                        won = Some(i);
                    } else {
                        self.arms[i].give_back();
                    }
                }
            }
            if let Some(i) = won {
                return self.arms[i].finish();
            }
            match blocked {
                Blocked::Woken => {}
                Blocked::TimedOut => {
                    // One last try, then the deadline arm.
                    if let Some(i) = self.try_now(start) {
                        return self.arms[i].finish();
                    }
                    return self.take_deadline();
                }
                Blocked::Interrupted => {
                    if let Some(i) = self.try_now(start) {
                        return self.arms[i].finish();
                    }
                    if self.deadline.is_some() {
                        return self.take_deadline();
                    }
                    let i = (0..n)
                        .find(|&i| self.arms[i].fails_when_interrupted())
                        .unwrap_or(0);
                    return self.arms[i].interrupted();
                }
            }
        }
    }

    /// Like a plain receive (see `Receiver::recv`), a select whose receive
    /// arms are all empty, on a worker with nothing else to run while
    /// values come from other threads, watches those channels for the
    /// granted spin before it registers and parks: a value queued meanwhile
    /// is taken without a park, a switch and a cross-thread wake-up.
    /// Returns the arm taken, if any.
    #[cold]
    #[inline(never)]
    fn spin_for_a_value(&mut self, start: usize, deadline: Option<Instant>) -> Option<usize> {
        // The hints only ever grow (wrapping), one step per queued value,
        // so their sum moves exactly when one of them does.
        let sum = |arms: &[Box<dyn Arm<R> + 'a>]| -> Option<usize> {
            arms.iter()
                .filter_map(|a| a.hint())
                .reduce(usize::wrapping_add)
        };
        let mut seen = sum(&self.arms)?;
        let spin = hub::wait_spin_budget()?.until(deadline);
        let mut won = None;
        spin.spin(|| {
            // `sum` is `Some`: the arms do not change during the spin.
            let now = sum(&self.arms).unwrap_or(seen);
            if now == seen {
                return false;
            }
            seen = now;
            won = self.try_now(start);
            won.is_some()
        });
        won
    }

    /// Tries every arm once without registering, from arm `start` on;
    /// returns the first that completed.
    fn try_now(&mut self, start: usize) -> Option<usize> {
        let n = self.arms.len();
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.arms[i].try_or_register(false) == Try::Done)
    }

    fn take_deadline(&mut self) -> R {
        match self.deadline.take() {
            Some((_, f)) => f(),
            // Only reached with a deadline: `wait` checks.
            None => unreachable!("select deadline without a deadline arm"),
        }
    }
}

impl<R> std::fmt::Debug for Select<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("arms", &self.arms.len())
            .field("deadline", &self.deadline.as_ref().map(|d| d.0))
            .finish()
    }
}

/// A random index below `n` (xorshift per thread: fairness, not security).
fn random_below(n: usize) -> usize {
    thread_local! {
        static SEED: Cell<u64> = const { Cell::new(0) };
    }
    SEED.with(|s| {
        let mut x = s.get();
        if x == 0 {
            // Seed from the stack address and the clock: differs per thread.
            x = (&x as *const u64 as u64)
                ^ Instant::now().elapsed().as_nanos() as u64
                ^ 0x9e37_79b9_7f4a_7c15;
            x |= 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x % n as u64) as usize
    })
}
