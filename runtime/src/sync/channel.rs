//! Multi-producer, multi-consumer channels (gevent `queue.Queue`, Go channels).
//!
//! Waiters are nodes in their own stack frames, linked into the channel's
//! lists ([`WaitList`]): registering costs no allocation. A value sent while
//! a receiver is parked is handed straight to that receiver (written into
//! its node under the channel lock the sender already holds), so the woken
//! receiver returns without locking again.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wait::{
    block_as, current_wakeup, Blocked, Hubs, SpinGuard, SpinLock, WaitList, WaitOn, Waiter, Wakeup,
};
use crate::hub::{KeyWait, WaitKey};

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
        let (wakeup, key) = current_wakeup(&mut st.hubs);
        // SAFETY: the waiter is not linked (a registration links it only
        // here, and only when it is not), goes only into this list, and
        // stays in its `recv_until` frame until `reg` (dropped before it)
        // has seen it unlinked.
        unsafe { st.recv_q.push_back(reg.node, wakeup) };
        reg.active = true;
        reg.key = key;
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

macro_rules! registration {
    ($(#[$m:meta])* $name:ident, $data:ty) => {
        $(#[$m])*
        ///
        /// However the call ends (return, kill, `timeout`), the waiter is
        /// unlinked under the lock before its frame goes away: that is what
        /// keeps every pointer in the lists valid. Declared after the waiter,
        /// so dropped first.
        struct $name<'a, T> {
            chan: &'a Chan<T>,
            node: &'a Waiter<$data>,
            /// Whether `node` may be linked, or hold a notification not yet seen.
            active: bool,
            /// Counts a tasklet's wait for deadlock detection while it lasts.
            key: Option<KeyWait>,
        }

        impl<T> $name<'_, T> {
            /// The wait is over and `node` is known to be unlinked.
            #[inline]
            fn done(&mut self) {
                self.active = false;
                self.key = None;
            }
        }

        impl<T> Drop for $name<'_, T> {
            #[inline]
            fn drop(&mut self) {
                if self.active {
                    self.abandon();
                }
            }
        }
    };
}

registration!(
    /// A receiving call's registration of its [`Waiter`] in `recv_q`.
    RecvRegistration,
    Option<T>
);

registration!(
    /// A sending call's registration of its [`Waiter`] in `send_q`.
    SendRegistration,
    ()
);

impl<T> RecvRegistration<'_, T> {
    /// Leaves the wait when it is left by unwinding: a value handed over
    /// meanwhile goes to the next parked receiver, or back to the front of
    /// the queue: never lost.
    #[cold]
    fn abandon(&mut self) {
        let mut guard = self.chan.state.lock();
        let st = &mut *guard;
        let mut wake = None;
        if st.recv_q.is_linked(self.node) {
            // SAFETY: linked, and only ever into this channel's `recv_q`.
            unsafe { st.recv_q.remove(self.node) };
        } else if let Some(Some(v)) = self.node.take_notified() {
            match st.hand_over(v) {
                Ok(w) => wake = Some(w),
                Err(v) => st.queue.push_front(v),
            }
        }
        self.done();
        drop(guard);
        if let Some(w) = wake {
            self.chan.wake(w);
        }
    }
}

impl<T> SendRegistration<'_, T> {
    /// Leaves the wait when it is left by unwinding: room granted meanwhile
    /// goes to the next blocked sender.
    #[cold]
    fn abandon(&mut self) {
        let mut guard = self.chan.state.lock();
        let st = &mut *guard;
        let mut wake = None;
        if st.send_q.is_linked(self.node) {
            // SAFETY: linked, and only ever into this channel's `send_q`.
            unsafe { st.send_q.remove(self.node) };
        } else if self.node.take_notified().is_some() && self.chan.has_room(st) {
            wake = st.pop_sender();
        }
        self.done();
        drop(guard);
        if let Some(w) = wake {
            self.chan.wake(w);
        }
    }
}

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

impl<T> Sender<T> {
    /// The shared channel (for a select's arm).
    pub(super) fn chan(&self) -> &Chan<T> {
        &self.chan
    }

    /// Sends `value`, parking the tasklet (or blocking the thread, outside a
    /// dispatcher) while the channel is full.
    ///
    /// Fails, handing the value back, when every receiver has been dropped
    /// — or when the tasklet is being killed at `dispatch` exit and this is
    /// called from a destructor, where it cannot wait.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_until(value, None)
            .map_err(|e| SendError(e.into_inner()))
    }

    /// Sends `value` if there is room right now.
    #[inline]
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let chan = &*self.chan;
        let mut guard = chan.state.lock();
        let st = &mut *guard;
        if st.send_closed() {
            return Err(TrySendError::Disconnected(value));
        }
        match st.hand_over(value) {
            Ok(w) => {
                drop(guard);
                chan.wake(w);
                Ok(())
            }
            Err(v) if chan.queue_has_room(st) => {
                st.queue.push_back(v);
                Ok(())
            }
            Err(v) => Err(TrySendError::Full(v)),
        }
    }

    /// Like [`send`](Sender::send), giving up after `timeout`.
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, Instant::now().checked_add(timeout))
    }

    /// Like [`send`](Sender::send), giving up at `deadline`.
    pub fn send_deadline(&self, value: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, Some(deadline))
    }

    #[inline]
    fn send_until(&self, value: T, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        // A parked receiver or room right now (the common case): no waiter
        // to set up.
        match self.try_send(value) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(v)) => Err(SendTimeoutError::Disconnected(v)),
            Err(TrySendError::Full(v)) => self.send_blocking(v, deadline),
        }
    }

    #[inline(never)]
    fn send_blocking(
        &self,
        mut value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        let chan = &*self.chan;
        let node = Waiter::new(());
        let mut reg = SendRegistration {
            chan,
            node: &node,
            active: false,
            key: None,
        };
        let mut guard = chan.state.lock();
        let mut gave_up = false;
        let mut granted = false;
        loop {
            // Not linked here; `guard` is held.
            let st = &mut *guard;
            if st.send_closed() {
                return Err(SendTimeoutError::Disconnected(value));
            }
            match st.hand_over(value) {
                Ok(w) => return chan.sent(guard, granted, Some(w)),
                Err(v) if chan.queue_has_room(st) => {
                    st.queue.push_back(v);
                    return chan.sent(guard, granted, None);
                }
                Err(v) => value = v,
            }
            if gave_up {
                return Err(SendTimeoutError::Timeout(value));
            }
            let (wakeup, key) = current_wakeup(&mut st.hubs);
            // SAFETY: `node` is not linked, goes only into this list, and
            // stays in this frame until `reg` (dropped before it) has seen
            // it unlinked.
            unsafe { st.send_q.push_back(&node, wakeup) };
            reg.active = true;
            reg.key = key;
            drop(guard);
            loop {
                let r = block_as(reg.key.is_some(), deadline, chan.wait_on(true));
                if node.take_notified().is_some() {
                    // Granted room (or every receiver is gone): retry.
                    reg.done();
                    granted = true;
                    guard = chan.state.lock();
                    break;
                }
                guard = chan.state.lock();
                let st = &mut *guard;
                if !st.send_q.is_linked(&node) {
                    node.take_notified();
                    reg.done();
                    granted = true;
                    break;
                }
                if r != Blocked::Woken {
                    // SAFETY: linked, into this list.
                    unsafe { st.send_q.remove(&node) };
                    reg.done();
                    gave_up = true;
                    break;
                }
                // Woken spuriously: wait again in the same place, reachable
                // in the new wait epoch.
                let (wakeup, key) = current_wakeup(&mut st.hubs);
                // SAFETY: linked, into this list.
                unsafe { st.send_q.set_wakeup(&node, wakeup) };
                reg.key = key;
                drop(guard);
            }
        }
    }

    /// Whether sending fails now: every receiver has been dropped or the
    /// channel was [closed](Sender::close).
    pub fn is_closed(&self) -> bool {
        self.chan.state.lock().send_closed()
    }

    /// Closes the channel (Go's `close`, gevent `Queue.shutdown`): every
    /// later send, and every send blocked now, fails with the value handed
    /// back; receivers still get every value queued before the close, then
    /// fail with [`RecvError`]. Closing a closed channel does nothing.
    ///
    /// ```
    /// let (tx, rx) = tasklet::sync::channel(4);
    /// tx.send(1).unwrap();
    /// tx.send(2).unwrap();
    /// tx.close();
    /// assert_eq!(tx.send(3).unwrap_err().into_inner(), 3);
    /// assert_eq!(rx.recv(), Ok(1)); // drained first
    /// assert_eq!(rx.recv(), Ok(2));
    /// assert!(rx.recv().is_err());
    /// ```
    pub fn close(&self) {
        self.chan.close();
    }

    /// Number of values queued.
    pub fn len(&self) -> usize {
        self.chan.state.lock().queue.len()
    }

    /// Whether no value is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity (`None` for an unbounded channel).
    pub fn capacity(&self) -> Option<usize> {
        self.chan.cap
    }

    /// Whether both senders belong to the same channel.
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }
}

impl<T> Receiver<T> {
    /// The shared channel (for a select's arm).
    pub(super) fn chan(&self) -> &Chan<T> {
        &self.chan
    }

    /// Takes the next value, parking the tasklet (or blocking the thread,
    /// outside a dispatcher) while the channel is empty.
    ///
    /// Values still queued are delivered after the senders are gone; then
    /// it fails with [`RecvError`]. It also fails when the tasklet is being
    /// killed and this is called from a destructor, where it cannot wait.
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_until(None).map_err(|_| RecvError)
    }

    /// Takes a value if one is queued right now.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let chan = &*self.chan;
        let mut guard = chan.state.lock();
        let st = &mut *guard;
        match st.queue.pop_front() {
            Some(v) => {
                let w = st.pop_sender_if_room(chan);
                drop(guard);
                if let Some(w) = w {
                    chan.wake(w);
                }
                Ok(v)
            }
            None if st.recv_closed() => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Like [`recv`](Receiver::recv), giving up after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(Instant::now().checked_add(timeout))
    }

    /// Like [`recv`](Receiver::recv), giving up at `deadline`.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    // Inlined into the caller: a receive that parks resumes from the stack
    // switch in its caller's frame, saving the mispredicted return every
    // frame between the switch and the caller costs (the rare cases go on
    // in the out-of-line `recv_again`).
    #[inline(always)]
    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let chan = &*self.chan;
        let node = Waiter::new(None);
        let mut reg = RecvRegistration {
            chan,
            node: &node,
            active: false,
            key: None,
        };
        let mut guard = chan.state.lock();
        let st = &mut *guard;
        if let Some(v) = st.queue.pop_front() {
            let w = st.pop_sender_if_room(chan);
            drop(guard);
            if let Some(w) = w {
                chan.wake(w);
            }
            return Ok(v);
        }
        if st.recv_closed() {
            return Err(RecvTimeoutError::Disconnected);
        }
        chan.park_receiver(guard, &mut reg);
        let r = block_as(reg.key.is_some(), deadline, self.chan.wait_on(false));
        match node.take_notified() {
            // Popped by a sender with its value (the common case: no need
            // to lock again).
            Some(Some(v)) => {
                reg.done();
                Ok(v)
            }
            // Popped by the last sender closing the channel.
            Some(None) => {
                reg.done();
                self.recv_again(&mut reg, None, deadline)
            }
            None => self.recv_again(&mut reg, Some(r), deadline),
        }
    }

    /// The rest of a receive whose first wait ended without a value:
    /// `woken` is how a park ended if the waiter may still be linked
    /// (`None`: it is not linked).
    #[inline(never)]
    fn recv_again(
        &self,
        reg: &mut RecvRegistration<'_, T>,
        mut woken: Option<Blocked>,
        deadline: Option<Instant>,
    ) -> Result<T, RecvTimeoutError> {
        let chan = &*self.chan;
        let node = reg.node;
        let mut gave_up = false;
        loop {
            let mut guard = chan.state.lock();
            let st = &mut *guard;
            if let Some(r) = woken.take() {
                if !st.recv_q.is_linked(node) {
                    // Popped after all, between the park and the lock.
                    let v = node.take_notified();
                    reg.done();
                    if let Some(Some(v)) = v {
                        return Ok(v);
                    }
                } else if r != Blocked::Woken {
                    // SAFETY: linked, into this list.
                    unsafe { st.recv_q.remove(node) };
                    reg.done();
                    gave_up = true;
                } else {
                    // Woken spuriously: wait again in the same place,
                    // reachable in the new wait epoch.
                    let (wakeup, key) = current_wakeup(&mut st.hubs);
                    // SAFETY: linked, into this list.
                    unsafe { st.recv_q.set_wakeup(node, wakeup) };
                    reg.key = key;
                    drop(guard);
                    match self.wait_received(reg, deadline) {
                        Ok(w) => woken = w,
                        Err(v) => return Ok(v),
                    }
                    continue;
                }
            }
            // Not linked here; `guard` is held.
            if let Some(v) = st.queue.pop_front() {
                let w = st.pop_sender_if_room(chan);
                drop(guard);
                if let Some(w) = w {
                    chan.wake(w);
                }
                return Ok(v);
            }
            if st.recv_closed() {
                return Err(RecvTimeoutError::Disconnected);
            }
            if gave_up {
                return Err(RecvTimeoutError::Timeout);
            }
            chan.park_receiver(guard, reg);
            match self.wait_received(reg, deadline) {
                Ok(w) => woken = w,
                Err(v) => return Ok(v),
            }
        }
    }

    /// Parks once for a linked receiver: `Err(v)` if a value was handed
    /// over, else how the park ended (`None`: popped without a value, so no
    /// longer linked).
    #[inline]
    fn wait_received(
        &self,
        reg: &mut RecvRegistration<'_, T>,
        deadline: Option<Instant>,
    ) -> Result<Option<Blocked>, T> {
        let r = block_as(reg.key.is_some(), deadline, self.chan.wait_on(false));
        match reg.node.take_notified() {
            Some(v) => {
                reg.done();
                match v {
                    Some(v) => Err(v),
                    None => Ok(None),
                }
            }
            None => Ok(Some(r)),
        }
    }

    /// A blocking iterator over received values; ends when the channel is
    /// closed and drained.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// An iterator over the values queued right now; never parks.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }

    /// Whether every sender has been dropped or the channel was
    /// [closed](Receiver::close) (values may still be queued).
    pub fn is_closed(&self) -> bool {
        self.chan.state.lock().recv_closed()
    }

    /// Closes the channel from the receiving side (tokio's
    /// `Receiver::close`): senders fail from now on (blocked ones too,
    /// getting their value back); what is queued can still be received,
    /// after which receiving fails with [`RecvError`].
    ///
    /// ```
    /// let (tx, rx) = tasklet::sync::unbounded();
    /// tx.send("queued").unwrap();
    /// rx.close();
    /// assert!(tx.send("late").is_err());
    /// assert_eq!(rx.recv(), Ok("queued"));
    /// assert!(rx.recv().is_err());
    /// ```
    pub fn close(&self) {
        self.chan.close();
    }

    /// Number of values queued.
    pub fn len(&self) -> usize {
        self.chan.state.lock().queue.len()
    }

    /// Whether no value is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity (`None` for an unbounded channel).
    pub fn capacity(&self) -> Option<usize> {
        self.chan.cap
    }
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

/// Blocking iterator returned by [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    #[inline]
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

/// Non-blocking iterator returned by [`Receiver::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// Owning blocking iterator (`for v in receiver`).
#[derive(Debug)]
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    #[inline]
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// [`Sender::send`] failed: every receiver is gone. Holds the value.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// [`Sender::try_send`] failed. Holds the value.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// The channel is full (or, for a rendezvous channel, no receiver waits).
    Full(T),
    /// Every receiver is gone.
    Disconnected(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Disconnected(v) => v,
        }
    }
}

/// [`Sender::send_timeout`] failed. Holds the value.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SendTimeoutError<T> {
    /// The channel stayed full until the deadline.
    Timeout(T),
    /// Every receiver is gone.
    Disconnected(T),
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(v) | SendTimeoutError::Disconnected(v) => v,
        }
    }
}

/// [`Receiver::recv`] failed: the channel is empty and every sender is gone.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct RecvError;

/// [`Receiver::try_recv`] failed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TryRecvError {
    /// Nothing is queued right now.
    Empty,
    /// Nothing is queued and every sender is gone.
    Disconnected,
}

/// [`Receiver::recv_timeout`] failed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum RecvTimeoutError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// Nothing is queued and every sender is gone.
    Disconnected,
}

macro_rules! value_error {
    ($ty:ident { $($var:ident => $msg:expr),* }) => {
        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($ty::$var(_) => f.write_str(concat!(stringify!($ty), "::", stringify!($var), "(..)")),)* }
            }
        }
        impl<T> fmt::Display for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($ty::$var(_) => f.write_str($msg),)* }
            }
        }
        impl<T> std::error::Error for $ty<T> {}
    };
}

value_error!(TrySendError { Full => "sending on a full channel", Disconnected => "sending on a closed channel" });
value_error!(SendTimeoutError { Timeout => "timed out sending on a full channel", Disconnected => "sending on a closed channel" });

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a closed channel")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on a closed and empty channel")
    }
}

impl std::error::Error for RecvError {}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("receiving on an empty channel"),
            TryRecvError::Disconnected => f.write_str("receiving on a closed and empty channel"),
        }
    }
}

impl std::error::Error for TryRecvError {}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out receiving on an empty channel"),
            RecvTimeoutError::Disconnected => {
                f.write_str("receiving on a closed and empty channel")
            }
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

impl From<RecvError> for io::Error {
    fn from(e: RecvError) -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, e)
    }
}

impl From<RecvTimeoutError> for io::Error {
    fn from(e: RecvTimeoutError) -> io::Error {
        let kind = match e {
            RecvTimeoutError::Timeout => io::ErrorKind::TimedOut,
            RecvTimeoutError::Disconnected => io::ErrorKind::BrokenPipe,
        };
        io::Error::new(kind, e)
    }
}
