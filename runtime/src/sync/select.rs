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

use super::channel::{Chan, Receiver, RecvError, SendError, Sender};
use super::wait::{block_as, current_wakeup, Blocked, SpinLock, WaitState, Waiter};
use super::{AsyncResult, Event};
use crate::hub::{self, KeyWait};
use crate::observe::WaitOn;
use crate::task::JoinHandle;

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
        for k in 0..n {
            let i = (start + k) % n;
            if self.arms[i].try_or_register(false) == Try::Done {
                return self.arms[i].finish();
            }
        }
        let tasklet = hub::in_dispatcher();
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
                    for k in 0..n {
                        let i = (start + k) % n;
                        if self.arms[i].try_or_register(false) == Try::Done {
                            return self.arms[i].finish();
                        }
                    }
                    return self.take_deadline();
                }
                Blocked::Interrupted => {
                    for k in 0..n {
                        let i = (start + k) % n;
                        if self.arms[i].try_or_register(false) == Try::Done {
                            return self.arms[i].finish();
                        }
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

// ---------------------------------------------------------------- channels

struct RecvArm<'a, T, F> {
    chan: &'a Chan<T>,
    node: Waiter<Option<T>>,
    /// Whether `node` may be linked or hold a value not yet seen.
    linked: bool,
    key: Option<KeyWait>,
    got: Option<Result<T, RecvError>>,
    f: Option<F>,
}

impl<T, F> RecvArm<'_, T, F> {
    /// Gives a value taken from the channel back: to the next parked
    /// receiver, else to the front of the queue (where it was).
    fn put_back(&self, v: T) {
        let mut st = self.chan.state.lock();
        match st.hand_over(v) {
            Ok(w) => {
                drop(st);
                self.chan.wake(w);
            }
            Err(v) => st.queue.push_front(v),
        }
    }

    fn unlink(&mut self) -> bool {
        if !self.linked {
            return false;
        }
        let mut st = self.chan.state.lock();
        self.linked = false;
        self.key = None;
        if st.recv_q.is_linked(&self.node) {
            // SAFETY: linked, and only ever into this channel's `recv_q`.
            unsafe { st.recv_q.remove(&self.node) };
            return false;
        }
        drop(st);
        match self.node.take_notified() {
            Some(Some(v)) => {
                self.got = Some(Ok(v));
                true
            }
            // Popped by a close: the retry sees it.
            _ => false,
        }
    }
}

impl<T, F: FnOnce(Result<T, RecvError>) -> R, R> Arm<R> for RecvArm<'_, T, F> {
    fn try_or_register(&mut self, register: bool) -> Try {
        let chan = self.chan;
        let mut guard = chan.state.lock();
        let st = &mut *guard;
        if let Some(v) = st.queue.pop_front() {
            let w = st.pop_sender_if_room(chan);
            drop(guard);
            if let Some(w) = w {
                chan.wake(w);
            }
            self.got = Some(Ok(v));
            return Try::Done;
        }
        if st.recv_closed() {
            self.got = Some(Err(RecvError));
            return Try::Done;
        }
        if register {
            let (wakeup, key) = current_wakeup(&mut st.hubs);
            // SAFETY: the node is not linked (`linked` is false between
            // registrations), goes only into this list, and is boxed with
            // the arm, which unlinks it (`withdraw` or drop) before it goes.
            unsafe { st.recv_q.push_back(&self.node, wakeup) };
            self.linked = true;
            self.key = key;
            // A rendezvous sender can now hand over a value.
            let sender = if chan.cap == Some(0) {
                st.pop_sender()
            } else {
                None
            };
            drop(guard);
            if let Some(w) = sender {
                chan.wake(w);
            }
        }
        Try::Pending
    }

    fn withdraw(&mut self) -> bool {
        self.unlink()
    }

    fn give_back(&mut self) {
        if let Some(Ok(v)) = self.got.take() {
            self.put_back(v);
        }
    }

    fn finish(&mut self) -> R {
        let got = self.got.take().unwrap_or(Err(RecvError));
        (self.f.take().expect("select arm taken twice"))(got)
    }

    fn interrupted(&mut self) -> R {
        (self.f.take().expect("select arm taken twice"))(Err(RecvError))
    }

    fn fails_when_interrupted(&self) -> bool {
        true
    }
}

impl<T, F> Drop for RecvArm<'_, T, F> {
    fn drop(&mut self) {
        // Left by unwinding (a kill or timeout while parked), or not taken:
        // nothing handed over may be lost.
        if self.unlink() {
            if let Some(Ok(v)) = self.got.take() {
                self.put_back(v);
            }
        }
    }
}

struct SendArm<'a, T, F> {
    chan: &'a Chan<T>,
    node: Waiter<()>,
    linked: bool,
    key: Option<KeyWait>,
    /// The value while it is not sent: the arm's own, or the caller's
    /// slot (`send_from`), where it stays if another arm is taken.
    value: Slot<'a, T>,
    result: Option<Result<(), SendError<T>>>,
    f: Option<F>,
}

/// Where a send arm's value waits.
enum Slot<'a, T> {
    Owned(Option<T>),
    Borrowed(&'a mut Option<T>),
}

impl<T> Slot<'_, T> {
    fn get(&mut self) -> &mut Option<T> {
        match self {
            Slot::Owned(v) => v,
            Slot::Borrowed(v) => v,
        }
    }
}

impl<T, F> SendArm<'_, T, F> {
    /// Unlinks the waiter; room granted meanwhile goes to the next blocked
    /// sender (the retry competes for it again).
    fn unlink(&mut self) {
        if !self.linked {
            return;
        }
        let chan = self.chan;
        let mut guard = chan.state.lock();
        let st = &mut *guard;
        self.linked = false;
        self.key = None;
        let mut next = None;
        if st.send_q.is_linked(&self.node) {
            // SAFETY: linked, and only ever into this channel's `send_q`.
            unsafe { st.send_q.remove(&self.node) };
        } else if self.node.take_notified().is_some() && chan.has_room(st) {
            next = st.pop_sender();
        }
        drop(guard);
        if let Some(w) = next {
            chan.wake(w);
        }
    }
}

impl<T, F: FnOnce(Result<(), SendError<T>>) -> R, R> Arm<R> for SendArm<'_, T, F> {
    fn try_or_register(&mut self, register: bool) -> Try {
        let chan = self.chan;
        let Some(value) = self.value.get().take() else {
            return Try::Pending;
        };
        let mut guard = chan.state.lock();
        let st = &mut *guard;
        if st.send_closed() {
            self.result = Some(Err(SendError(value)));
            return Try::Done;
        }
        match st.hand_over(value) {
            Ok(w) => {
                drop(guard);
                chan.wake(w);
                self.result = Some(Ok(()));
                return Try::Done;
            }
            Err(v) if chan.queue_has_room(st) => {
                st.queue.push_back(v);
                self.result = Some(Ok(()));
                return Try::Done;
            }
            Err(v) => *self.value.get() = Some(v),
        }
        if register {
            let (wakeup, key) = current_wakeup(&mut st.hubs);
            // SAFETY: as for the receive arm: unlinked between
            // registrations, only into this list, unlinked before the boxed
            // arm goes.
            unsafe { st.send_q.push_back(&self.node, wakeup) };
            self.linked = true;
            self.key = key;
        }
        Try::Pending
    }

    fn withdraw(&mut self) -> bool {
        // Being popped only grants room: the retry sends.
        self.unlink();
        false
    }

    fn give_back(&mut self) {}

    fn finish(&mut self) -> R {
        let r = self.result.take().unwrap_or_else(|| {
            Err(SendError(
                self.value
                    .get()
                    .take()
                    .expect("select send arm without value"),
            ))
        });
        (self.f.take().expect("select arm taken twice"))(r)
    }

    fn interrupted(&mut self) -> R {
        let v = self
            .value
            .get()
            .take()
            .expect("select send arm without value");
        (self.f.take().expect("select arm taken twice"))(Err(SendError(v)))
    }

    fn fails_when_interrupted(&self) -> bool {
        match &self.value {
            Slot::Owned(v) => v.is_some(),
            Slot::Borrowed(v) => v.is_some(),
        }
    }
}

impl<T, F> Drop for SendArm<'_, T, F> {
    fn drop(&mut self) {
        self.unlink();
    }
}

// ------------------------------------------------- events, results, joins

/// An arm over a primitive whose waiters are [`wait::Waiters`] and whose
/// waiters are all popped when it becomes ready (an event, a one-shot
/// result): being popped is the whole message.
struct WaitersArm<'a, S: WaitState, F> {
    lock: &'a SpinLock<S>,
    ready: fn(&S) -> bool,
    node: Waiter<()>,
    linked: bool,
    key: Option<KeyWait>,
    f: Option<F>,
}

impl<S: WaitState, F> WaitersArm<'_, S, F> {
    fn unlink(&mut self) -> bool {
        if !self.linked {
            return false;
        }
        let mut st = self.lock.lock();
        self.linked = false;
        self.key = None;
        let list = st.waiters().list();
        if list.is_linked(&self.node) {
            // SAFETY: linked, and only ever into this primitive's list.
            unsafe { list.remove(&self.node) };
            return false;
        }
        drop(st);
        self.node.take_notified().is_some()
    }
}

impl<S: WaitState, F: FnOnce() -> R, R> Arm<R> for WaitersArm<'_, S, F> {
    fn try_or_register(&mut self, register: bool) -> Try {
        let mut st = self.lock.lock();
        if (self.ready)(&st) {
            return Try::Done;
        }
        if register {
            let w = st.waiters();
            let (wakeup, key) = current_wakeup(w.hubs());
            // SAFETY: unlinked between registrations, only into this list,
            // unlinked (`withdraw` or drop) before the boxed arm goes.
            unsafe { w.list().push_back(&self.node, wakeup) };
            self.linked = true;
            self.key = key;
        }
        Try::Pending
    }

    fn withdraw(&mut self) -> bool {
        self.unlink()
    }

    fn give_back(&mut self) {
        // Every waiter was popped: nothing to pass on.
    }

    fn finish(&mut self) -> R {
        (self.f.take().expect("select arm taken twice"))()
    }

    fn interrupted(&mut self) -> R {
        self.finish()
    }
}

impl<S: WaitState, F> Drop for WaitersArm<'_, S, F> {
    fn drop(&mut self) {
        self.unlink();
    }
}

struct JoinArm<'a, T, F> {
    handle: &'a mut JoinHandle<T>,
    registered: bool,
    f: Option<F>,
}

impl<T, F: FnOnce() -> R, R> Arm<R> for JoinArm<'_, T, F> {
    fn try_or_register(&mut self, register: bool) -> Try {
        if self.handle.is_finished() {
            return Try::Done;
        }
        if register {
            self.handle.set_joiner(Some(hub::current_unparker()));
            self.registered = true;
        }
        Try::Pending
    }

    fn withdraw(&mut self) -> bool {
        if self.registered {
            self.registered = false;
            self.handle.set_joiner(None);
        }
        // Finishing is seen by the retry.
        false
    }

    fn give_back(&mut self) {}

    fn finish(&mut self) -> R {
        (self.f.take().expect("select arm taken twice"))()
    }

    fn interrupted(&mut self) -> R {
        self.finish()
    }
}

impl<T, F> Drop for JoinArm<'_, T, F> {
    fn drop(&mut self) {
        if self.registered {
            self.handle.set_joiner(None);
        }
    }
}

/// Waits for the first of several channel operations, tasklets, events or
/// results, like Go's `select` or crossbeam's `select!`, and runs the body
/// of the arm taken.
///
/// Arms (separated by commas; a body is an expression or a block):
///
/// - `recv(rx) -> v => body` — `v: Result<T, RecvError>` from a
///   [`Receiver`](crate::sync::Receiver);
/// - `send(tx, value) -> r => body` — `r: Result<(), SendError<T>>`; the
///   value is sent only if this arm is taken (else dropped with the select,
///   like Go's);
/// - `send_from(tx, slot) -> r => body` — the same with the value in an
///   `Option<T>` place, taken from it only if this arm is taken: a value
///   not sent stays in `slot`;
/// - `finished(handle) => body` — a `&mut`-borrowable
///   [`JoinHandle`](crate::JoinHandle) has finished (`join` it in the body);
/// - `wait(event) => body` — an [`Event`](crate::sync::Event) is set;
/// - `ready(result) => body` — an [`AsyncResult`](crate::sync::AsyncResult)
///   is ready;
/// - `timeout(duration) => body`, `deadline(instant) => body`, or
///   `default => body` (taken at once if nothing is ready), at most one.
///
/// Fair (it starts trying at a random arm) and cancel-safe: an arm that is
/// not taken takes no value from its channel and sends none. Bodies run
/// after the select is over, in the caller's frame: `return`, `break`, `?`
/// work in them. See [`Select`](crate::sync::Select) for the details.
///
/// ```
/// use std::time::Duration;
/// use tasklet::sync::{channel, Event};
///
/// tasklet::dispatch(|| {
///     let (tx, rx) = channel::<u32>(1);
///     let (out_tx, out_rx) = channel::<u32>(0);
///     let stop = Event::new();
///     tx.send(1).unwrap();
///     let mut seen = Vec::new();
///     for _ in 0..3 {
///         tasklet::select! {
///             recv(rx) -> v => seen.push(v.unwrap()),
///             send(out_tx, 9) -> r => { r.unwrap(); }
///             wait(stop) => break,
///             timeout(Duration::from_millis(20)) => { stop.set(); }
///         }
///     }
///     assert_eq!(seen, [1]);
///     assert!(out_rx.try_recv().is_err()); // nobody took the rendezvous: nothing was sent
/// });
/// ```
#[macro_export]
macro_rules! select {
    ($($arms:tt)*) => {
        $crate::__select_parse!(
            (__s0 __s1 __s2 __s3 __s4 __s5 __s6 __s7 __s8 __s9 __s10 __s11 __s12 __s13 __s14 __s15)
            () () ()
            $($arms)*
        )
    };
}

/// Internal: parses [`select!`] arms one by one. Each arm gets a slot
/// variable of its own (from the list of names, which all come from one
/// expansion so they resolve to each other), a builder call whose closure
/// fills the slot, and an `if let` on the slot that runs its body after the
/// select is over.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_parse {
    // Done: generate.
    (($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*)) => {{
        $($decl)*
        $crate::sync::Select::<()>::new() $($build)* .wait();
        $($matches)* { ::core::unreachable!("tasklet::select!: no arm taken") }
    }};
    // A body: a block (comma optional) or an expression (comma unless last).
    (@body $name:ident ($pat:pat) ($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*) ($($call:tt)*) $body:block , $($rest:tt)*) => {
        $crate::__select_parse!(($($names)*) ($($decl)* let mut $name = ::core::option::Option::None;) ($($build)* $($call)*) ($($matches)* if let ::core::option::Option::Some($pat) = $name $body else) $($rest)*)
    };
    (@body $name:ident ($pat:pat) ($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*) ($($call:tt)*) $body:block $($rest:tt)*) => {
        $crate::__select_parse!(($($names)*) ($($decl)* let mut $name = ::core::option::Option::None;) ($($build)* $($call)*) ($($matches)* if let ::core::option::Option::Some($pat) = $name $body else) $($rest)*)
    };
    (@body $name:ident ($pat:pat) ($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*) ($($call:tt)*) $body:expr , $($rest:tt)*) => {
        $crate::__select_parse!(($($names)*) ($($decl)* let mut $name = ::core::option::Option::None;) ($($build)* $($call)*) ($($matches)* if let ::core::option::Option::Some($pat) = $name { $body } else) $($rest)*)
    };
    (@body $name:ident ($pat:pat) ($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*) ($($call:tt)*) $body:expr) => {
        $crate::__select_parse!(($($names)*) ($($decl)* let mut $name = ::core::option::Option::None;) ($($build)* $($call)*) ($($matches)* if let ::core::option::Option::Some($pat) = $name { $body } else))
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt recv($rx:expr) -> $pat:pat => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name ($pat) ($($names)*) $d $b $m
            (.recv(&$rx, |__r| $name = ::core::option::Option::Some(__r))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt send($tx:expr, $v:expr) -> $pat:pat => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name ($pat) ($($names)*) $d $b $m
            (.send(&$tx, $v, |__r| $name = ::core::option::Option::Some(__r))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt send_from($tx:expr, $slot:expr) -> $pat:pat => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name ($pat) ($($names)*) $d $b $m
            (.send_from(&$tx, &mut $slot, |__r| $name = ::core::option::Option::Some(__r))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt finished($h:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.finished(&mut $h, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt wait($e:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.event(&$e, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt ready($r:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.ready(&$r, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt timeout($t:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.timeout($t, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt deadline($t:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.deadline($t, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt default => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.otherwise(|| $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (() $d:tt $b:tt $m:tt $($rest:tt)+) => {
        ::core::compile_error!("tasklet::select!: at most 16 arms")
    };
    ($n:tt $d:tt $b:tt $m:tt $($rest:tt)+) => {
        ::core::compile_error!(
            "tasklet::select!: expected `recv(rx) -> v => ..`, `send(tx, value) -> r => ..`, \
             `send_from(tx, slot) -> r => ..`, \
             `finished(handle) => ..`, `wait(event) => ..`, `ready(result) => ..`, \
             `timeout(d) => ..`, `deadline(t) => ..` or `default => ..`"
        )
    };
}
