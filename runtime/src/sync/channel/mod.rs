//! Multi-producer, multi-consumer channels (gevent `queue.Queue`, Go channels).
//!
//! Waiters are nodes in their own stack frames, linked into the channel's
//! lists ([`WaitList`]): registering costs no allocation. A value sent while
//! a receiver is parked is handed straight to that receiver (written into
//! its node under the channel lock the sender already holds), so the woken
//! receiver returns without locking again.
//!
//! Across workers a hand-over to a parked receiver costs the receiver's
//! worker a cross-thread wake-up, and each side's cache about six lines
//! from the other core. So a receive that finds the channel empty on a
//! worker with nothing else to run, while cross-thread work is arriving
//! (the hub is "hot", see `hub::idle`), first watches the channel for up
//! to 2 µs — reading a counter senders bump when they queue a value, not
//! taking the lock — and takes a value that comes meanwhile without
//! parking; the sender then finds no receiver parked and just queues it.
//! The same gate as the hub's idle spin decides (no spinning while the
//! CPUs are oversubscribed), a plain `dispatch` never spins, and neither
//! does a receive on a rendezvous channel (its senders hand a value only
//! to a parked receiver).

use std::collections::VecDeque;
use std::fmt;

use crate::shim::Arc;

use super::wait::{Hubs, Registration, WaitList, WaitOn, WaitPlace, Waiter, Wakeup};
use crate::hub::WaitKey;
use crate::util::{SpinGuard, SpinLock};
use std::sync::atomic::{AtomicUsize, Ordering};

mod error;
mod recv;
mod send;

pub use error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
pub use recv::{IntoIter, Iter, TryIter};

pub(super) struct State<T> {
    pub(super) queue: VecDeque<T>,
    senders: usize,
    receivers: usize,
    /// Closed explicitly ([`Sender::close`], [`Receiver::close`]): no more
    /// sends; receivers drain what is queued.
    closed: bool,
    /// Parked receivers. A sender hands its value to the first one instead
    /// of queueing it. Invariant: while a receiver is linked here, `queue`
    /// is empty.
    pub(super) recv_q: WaitList<Option<T>>,
    /// Blocked senders. Whoever makes room for one (a receiver taking a
    /// queued value, or parking on a rendezvous channel) pops it; the sender
    /// then sends itself, so a sender killed before it runs never sends.
    pub(super) send_q: WaitList<()>,
    /// The dispatchers of the waiters, for wake-ups from other threads.
    pub(super) hubs: Hubs,
}

impl<T> State<T> {
    /// Whether sending fails: closed, or every receiver gone.
    #[inline]
    pub(super) fn send_closed(&self) -> bool {
        self.receivers == 0 || self.closed
    }

    /// Whether a receiver finding the queue empty fails: closed, or every
    /// sender gone.
    #[inline]
    pub(super) fn recv_closed(&self) -> bool {
        self.senders == 0 || self.closed
    }

    /// Closes the channel: parked receivers and blocked senders are popped
    /// (to see the close); returns their wake-ups. Queued values stay, for
    /// receivers to drain.
    fn close(&mut self) -> Vec<Wakeup> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        let mut all = self.recv_q.pop_all();
        all.extend(self.send_q.pop_all());
        all
    }

    /// Hands `v` to the longest-parked receiver (returning its wake-up), or
    /// gives it back if no receiver is parked.
    #[inline]
    pub(super) fn hand_over(&mut self, v: T) -> Result<Wakeup, T> {
        self.recv_q.pop_with(v, |slot, v| *slot = Some(v))
    }

    /// After a receiver took a queued value: pops the longest-blocked
    /// sender if that made room for it (not if the queue holds more than
    /// the capacity because a killed receiver gave a value back, nor on a
    /// rendezvous channel, whose senders wait for parked receivers).
    #[inline]
    pub(super) fn pop_sender_if_room(&mut self, chan: &Chan<T>) -> Option<Wakeup> {
        if chan.queue_has_room(self) {
            self.pop_sender()
        } else {
            None
        }
    }

    /// [`hand_over`](Self::hand_over) for a select's send arm: never to the
    /// caller's own receive arm.
    pub(crate) fn hand_over_except_callers(&mut self, v: T) -> Result<Wakeup, T> {
        self.recv_q
            .pop_with_except_callers(v, |slot, v| *slot = Some(v))
    }

    /// [`pop_sender`](Self::pop_sender) for a select's receive arm: never
    /// the caller's own send arm.
    pub(crate) fn pop_sender_except_callers(&mut self) -> Option<Wakeup> {
        self.send_q.pop_with_except_callers((), |_, ()| {}).ok()
    }

    /// Pops the longest-blocked sender, to retry now that there is room.
    #[inline]
    pub(super) fn pop_sender(&mut self) -> Option<Wakeup> {
        if self.send_q.is_empty() {
            return None;
        }
        self.send_q.pop_with((), |_, ()| {}).ok()
    }
}

pub(super) struct Chan<T> {
    /// `None`: unbounded.
    pub(super) cap: Option<usize>,
    /// Bumped (under the lock) whenever a value is queued: what a receiver
    /// spinning before it parks watches without taking the lock (see
    /// `Receiver::recv_spinning`, and a select's receive arms). Only a
    /// hint: a value it misses is found under the lock before the receiver
    /// parks.
    pub(super) queued: AtomicUsize,
    pub(super) state: SpinLock<State<T>>,
}

impl<T> Chan<T> {
    /// What a tasklet parked on this channel waits on (dumps, deadlock reports).
    fn wait_on(&self, send: bool) -> WaitOn {
        WaitOn::Channel {
            send,
            addr: self as *const Chan<T> as usize,
        }
    }

    /// Queues `v` at the back (under the lock, `st`), telling spinning
    /// receivers.
    #[inline]
    pub(super) fn push(&self, st: &mut State<T>, v: T) {
        st.queue.push_back(v);
        // Under the lock: no other writer, so no read-modify-write needed.
        let n = self.queued.load(Ordering::Relaxed);
        self.queued.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Takes the oldest queued value, if any: then releases the lock
    /// (`guard`) and wakes a sender parked for the room it leaves. Else
    /// hands the guard back, still locked.
    #[inline(always)]
    pub(super) fn pop_queued<'a>(
        &'a self,
        mut guard: SpinGuard<'a, State<T>>,
    ) -> Result<T, SpinGuard<'a, State<T>>> {
        let Some(v) = guard.queue.pop_front() else {
            return Err(guard);
        };
        let w = guard.pop_sender_if_room(self);
        drop(guard);
        if let Some(w) = w {
            self.wake(w);
        }
        Ok(v)
    }

    /// Whether a value can be queued (a rendezvous channel never queues).
    #[inline]
    pub(super) fn queue_has_room(&self, st: &State<T>) -> bool {
        match self.cap {
            None => true,
            Some(c) => st.queue.len() < c,
        }
    }

    /// Delivers a wake-up popped from one of the lists (after the lock is
    /// released): on the waiter's own dispatcher directly, from anywhere
    /// else through that dispatcher's hub.
    #[inline]
    pub(super) fn wake(&self, w: Wakeup) {
        if let Some(k) = w.wake_popped() {
            self.wake_remote(k);
        }
    }

    #[cold]
    fn wake_remote(&self, k: WaitKey) {
        let u = self.state.lock().hubs.remote(&k);
        if let Some(u) = u {
            u.unpark();
        }
    }

    /// Ends a blocking send that has just handed over or queued its value
    /// (`w`: the receiver to wake). A sender that was granted room passes
    /// on what is left of it (a parked receiver may have taken the value
    /// instead), so no sender stays blocked while there is room.
    fn sent<E>(
        &self,
        mut guard: SpinGuard<'_, State<T>>,
        granted: bool,
        w: Option<Wakeup>,
    ) -> Result<(), E> {
        let next = if granted && self.has_room(&guard) {
            guard.pop_sender()
        } else {
            None
        };
        drop(guard);
        if let Some(w) = w {
            self.wake(w);
        }
        if let Some(w) = next {
            self.wake(w);
        }
        Ok(())
    }

    /// Links the calling receiver's waiter (queue empty, senders left),
    /// lets a rendezvous sender know, and releases the lock.
    #[inline(always)]
    fn park_receiver(&self, mut guard: SpinGuard<'_, State<T>>, reg: &mut RecvRegistration<'_, T>) {
        let st = &mut *guard;
        reg.link(st);
        // A rendezvous sender can now hand over a value.
        let sender = if self.cap == Some(0) {
            st.pop_sender()
        } else {
            None
        };
        drop(guard);
        if let Some(w) = sender {
            self.wake(w);
        }
    }

    /// Closes the channel (see [`Sender::close`]).
    fn close(&self) {
        let waiters = self.state.lock().close();
        for w in waiters {
            self.wake(w);
        }
    }

    /// Whether a blocked sender could send now.
    pub(super) fn has_room(&self, st: &State<T>) -> bool {
        match self.cap {
            // A rendezvous channel accepts a value only for a parked receiver.
            Some(0) => !st.recv_q.is_empty(),
            _ => self.queue_has_room(st),
        }
    }
}

/// Creates a bounded channel holding at most `capacity` values.
///
/// [`Sender::send`] parks while the channel is full. With `capacity` 0 the
/// channel is a rendezvous: a send completes only when a receiver is waiting
/// for the value. The channel can be created anywhere (also outside
/// [`dispatch`](crate::dispatch)); both ends are `Send` when `T` is, so a
/// plain thread or another dispatcher can feed tasklets through it.
///
/// ```
/// use tasklet::sync::channel;
/// tasklet::dispatch(|| {
///     let (tx, rx) = channel::<u32>(2);
///     let producer = tasklet::spawn(move || {
///         for i in 0..5 {
///             tx.send(i).unwrap(); // parks while 2 values are queued
///         }
///         // `tx` dropped here: the channel closes once drained.
///     });
///     let got: Vec<u32> = rx.iter().collect();
///     assert_eq!(got, [0, 1, 2, 3, 4]);
///     producer.join().unwrap();
/// });
/// ```
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    new_chan(Some(capacity))
}

/// Creates a channel without a size limit: [`Sender::send`] never parks.
///
/// ```
/// let (tx, rx) = tasklet::sync::unbounded();
/// // Works from a plain thread too: no dispatcher needed to send.
/// std::thread::spawn(move || for i in 0..3 { tx.send(i).unwrap() }).join().unwrap();
/// let v = tasklet::dispatch(move || rx.iter().sum::<i32>());
/// assert_eq!(v, 3);
/// ```
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    new_chan(None)
}

fn new_chan<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        cap,
        queued: AtomicUsize::new(0),
        state: SpinLock::new(State {
            queue: VecDeque::with_capacity(cap.unwrap_or(0).min(1024)),
            senders: 1,
            receivers: 1,
            closed: false,
            recv_q: WaitList::default(),
            send_q: WaitList::default(),
            hubs: Hubs::default(),
        }),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// The channel's receivers wait in `recv_q`, carrying the value a sender
/// hands over.
impl<T> WaitPlace<Option<T>> for Chan<T> {
    type State = State<T>;

    #[inline(always)]
    fn lock(&self) -> &SpinLock<State<T>> {
        &self.state
    }

    #[inline(always)]
    fn list(st: &mut State<T>) -> (&mut WaitList<Option<T>>, &mut Hubs) {
        (&mut st.recv_q, &mut st.hubs)
    }

    /// A value handed over to a receiver that left goes to the next parked
    /// receiver, or back to the front of the queue: never lost.
    fn pass_on(&self, st: &mut State<T>, data: Option<T>) -> Option<Wakeup> {
        let v = data?;
        match st.hand_over(v) {
            Ok(w) => Some(w),
            Err(v) => {
                st.queue.push_front(v);
                None
            }
        }
    }

    #[inline]
    fn wake(&self, w: Wakeup) {
        Chan::wake(self, w)
    }
}

/// The channel's blocked senders wait in `send_q`.
impl<T> WaitPlace<()> for Chan<T> {
    type State = State<T>;

    #[inline(always)]
    fn lock(&self) -> &SpinLock<State<T>> {
        &self.state
    }

    #[inline(always)]
    fn list(st: &mut State<T>) -> (&mut WaitList<()>, &mut Hubs) {
        (&mut st.send_q, &mut st.hubs)
    }

    /// Room granted to a sender that left goes to the next blocked sender.
    fn pass_on(&self, st: &mut State<T>, (): ()) -> Option<Wakeup> {
        if self.has_room(st) {
            st.pop_sender()
        } else {
            None
        }
    }

    #[inline]
    fn wake(&self, w: Wakeup) {
        Chan::wake(self, w)
    }
}

/// A receiving call's registration in the channel's `recv_q`.
type RecvRegistration<'a, T> = Registration<'a, Chan<T>, Option<T>>;

/// The sending half of a channel. Cloning it adds a sender; the channel
/// closes for receivers when the last one is dropped.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving half of a channel. Cloning it adds a receiver (each value
/// goes to exactly one of them); the channel closes for senders when the
/// last one is dropped.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.state.lock().senders += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.chan.state.lock().receivers += 1;
        Receiver {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut guard = self.chan.state.lock();
        let st = &mut *guard;
        st.senders -= 1;
        if st.senders > 0 {
            return;
        }
        // Parked receivers are popped without a value: they see the close.
        let waiters = st.recv_q.pop_all();
        drop(guard);
        for w in waiters {
            self.chan.wake(w);
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut guard = self.chan.state.lock();
        let st = &mut *guard;
        st.receivers -= 1;
        if st.receivers > 0 {
            return;
        }
        let waiters = st.send_q.pop_all();
        let queued = std::mem::take(&mut st.queue);
        drop(guard);
        for w in waiters {
            self.chan.wake(w);
        }
        // Values nobody can receive any more are dropped now, outside the lock.
        drop(queued);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.chan.cap)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("capacity", &self.chan.cap)
            .finish_non_exhaustive()
    }
}
