//! Multi-producer, multi-consumer channels (gevent `queue.Queue`, Go channels).
//!
//! A value sent while a receiver is parked is handed straight to that
//! receiver (written into a slot on its stack, under the channel lock it
//! already holds), so the woken receiver returns without locking again.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wait::{block, Blocked, SpinLock, Ticket, WaitQueue, Wakeup};

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receivers: usize,
    /// Parked receivers, each with the slot a sender fills. Invariant: while
    /// a receiver is registered here, `queue` is empty (a sender hands its
    /// value to the first registered receiver instead of queueing it) —
    /// except transiently after a killed receiver gives back a value it was
    /// handed and no other receiver waits.
    recv_q: WaitQueue<SlotRef<T>>,
    send_q: WaitQueue,
}

impl<T> State<T> {
    /// Hands `v` to the longest-parked receiver (returning its wake-up), or
    /// gives it back if no receiver is parked.
    #[inline]
    fn hand_over(&mut self, v: T) -> Result<Wakeup, T> {
        match self.recv_q.pop_with() {
            Some((w, slot)) => {
                // SAFETY: `slot` was just removed from `recv_q` under the
                // channel lock we hold, so the receiver that registered it is
                // still inside `recv_until` (it removes its slot under this
                // lock before its frame ends; see `RecvRegistration`) and
                // nobody else can reach the slot any more.
                unsafe { slot.fill(v) };
                Ok(w)
            }
            None => Err(v),
        }
    }
}

struct Chan<T> {
    /// `None`: unbounded.
    cap: Option<usize>,
    state: SpinLock<State<T>>,
}

impl<T> Chan<T> {
    fn has_room(&self, st: &State<T>) -> bool {
        match self.cap {
            None => true,
            // A rendezvous channel accepts a value only for a parked receiver.
            Some(0) => !st.recv_q.is_empty(),
            Some(c) => st.queue.len() < c,
        }
    }
}

/// Where a sender hands a value to one parked receiver: lives on the stack
/// of that receiver's `recv_until` call.
///
/// Protocol: only a thread holding the channel lock that has just popped the
/// slot's [`SlotRef`] from `recv_q` writes `value` and then sets `filled`
/// (`Release`). The receiver reads `value` only after seeing `filled`
/// (`Acquire`), when no [`SlotRef`] to it is left anywhere.
struct Slot<T> {
    value: UnsafeCell<Option<T>>,
    filled: AtomicBool,
}

impl<T> Slot<T> {
    fn new() -> Slot<T> {
        Slot {
            value: UnsafeCell::new(None),
            filled: AtomicBool::new(false),
        }
    }

    /// Takes the handed-over value if there is one.
    fn take(&self) -> Option<T> {
        if !self.filled.load(Ordering::Acquire) {
            return None;
        }
        self.filled.store(false, Ordering::Relaxed);
        // SAFETY: `filled` was set (Acquire pairs with the filler's Release
        // store, so its write of `value` is visible) after the filler
        // removed the slot's only `SlotRef` from `recv_q`; nobody else
        // accesses `value` any more, and this receiver's own accesses are
        // sequential.
        unsafe { (*self.value.get()).take() }
    }
}

/// A pointer to a parked receiver's [`Slot`], kept in `recv_q`.
struct SlotRef<T>(NonNull<Slot<T>>);

// SAFETY: a `SlotRef` only moves a `T` into the slot (from whichever thread
// pops it, under the channel lock), which is sound for `T: Send`; the slot's
// other field is atomic.
unsafe impl<T: Send> Send for SlotRef<T> {}

impl<T> SlotRef<T> {
    fn new(slot: &Slot<T>) -> SlotRef<T> {
        SlotRef(NonNull::from(slot))
    }

    /// Moves `v` into the slot and marks it filled.
    ///
    /// # Safety
    /// The caller holds the channel lock and has just removed this
    /// `SlotRef` from `recv_q` (so the slot is alive and unshared).
    unsafe fn fill(self, v: T) {
        // SAFETY: per the contract, the receiver's frame is alive and it does
        // not touch `value` until it sees `filled`.
        let slot = unsafe { self.0.as_ref() };
        // SAFETY: as above: no other access to `value` is possible now.
        unsafe { *slot.value.get() = Some(v) };
        slot.filled.store(true, Ordering::Release);
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
            recv_q: WaitQueue::new(),
            send_q: WaitQueue::new(),
        }),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// A blocked sender's registration; removes it (passing on an unused
/// notification) if the wait is left by unwinding (a kill or `timeout`).
struct SendRegistration<'a, T> {
    chan: &'a Chan<T>,
    ticket: Option<Ticket>,
}

impl<T> SendRegistration<'_, T> {
    /// Removes the registration under the lock; returns whether it had been
    /// notified (popped by a receiver) in the meantime.
    fn leave(&mut self, st: &mut State<T>) -> bool {
        let Some(Ticket { key, .. }) = self.ticket.take() else {
            return false;
        };
        !st.send_q.remove(key)
    }
}

impl<T> Drop for SendRegistration<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.ticket.is_some() {
            self.abandon();
        }
    }
}

impl<T> SendRegistration<'_, T> {
    /// Leaves the queue when the wait is left by unwinding.
    #[cold]
    fn abandon(&mut self) {
        let mut st = self.chan.state.lock();
        let next = if self.leave(&mut st) {
            st.send_q.pop()
        } else {
            None
        };
        drop(st);
        if let Some(w) = next {
            w.wake();
        }
    }
}

/// A parked receiver's registration of its [`Slot`].
///
/// However `recv_until` ends (return, kill, `timeout`), this removes the
/// slot from `recv_q` under the lock before the slot goes away: that is what
/// keeps every [`SlotRef`] valid. A value handed to a receiver that then
/// unwinds is passed to the next parked receiver, or put back at the front
/// of the queue: never lost.
struct RecvRegistration<'a, T> {
    chan: &'a Chan<T>,
    slot: &'a Slot<T>,
    ticket: Option<Ticket>,
}

impl<T> RecvRegistration<'_, T> {
    /// Ends the registration under the lock; returns the value a sender
    /// handed over, if any.
    fn leave(&mut self, st: &mut State<T>) -> Option<T> {
        let Ticket { key, .. } = self.ticket.take()?;
        let v = self.slot.take();
        if v.is_none() {
            // Still queued, or taken by a closing sender without a value.
            st.recv_q.remove(key);
        }
        v
    }
}

impl<T> Drop for RecvRegistration<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.ticket.is_some() {
            self.abandon();
        }
    }
}

impl<T> RecvRegistration<'_, T> {
    /// Leaves the queue when the wait is left by unwinding, passing on a
    /// value handed over in the meantime.
    #[cold]
    fn abandon(&mut self) {
        let mut st = self.chan.state.lock();
        let w = match self.leave(&mut st) {
            Some(v) => match st.hand_over(v) {
                Ok(w) => Some(w),
                Err(v) => {
                    st.queue.push_front(v);
                    None
                }
            },
            None => None,
        };
        drop(st);
        if let Some(w) = w {
            w.wake();
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
        let mut st = self.chan.state.lock();
        if st.receivers == 0 {
            return Err(TrySendError::Disconnected(value));
        }
        if !self.chan.has_room(&st) {
            return Err(TrySendError::Full(value));
        }
        let w = match st.hand_over(value) {
            Ok(w) => Some(w),
            Err(v) => {
                st.queue.push_back(v);
                None
            }
        };
        drop(st);
        if let Some(w) = w {
            w.wake();
        }
        Ok(())
    }

    /// Like [`send`](Sender::send), giving up after `timeout`.
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, Instant::now().checked_add(timeout))
    }

    /// Like [`send`](Sender::send), giving up at `deadline`.
    pub fn send_deadline(&self, value: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, Some(deadline))
    }

    fn send_until(&self, value: T, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        // Room right now (the common case): no registration to set up.
        match self.try_send(value) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(v)) => Err(SendTimeoutError::Disconnected(v)),
            Err(TrySendError::Full(v)) => self.send_blocking(v, deadline),
        }
    }

    fn send_blocking(
        &self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        let chan = &*self.chan;
        let mut reg = SendRegistration { chan, ticket: None };
        let mut gave_up = false;
        loop {
            let mut st = chan.state.lock();
            let notified = reg.leave(&mut st);
            if st.receivers == 0 {
                return Err(SendTimeoutError::Disconnected(value));
            }
            if chan.has_room(&st) {
                let w = match st.hand_over(value) {
                    Ok(w) => Some(w),
                    Err(v) => {
                        st.queue.push_back(v);
                        None
                    }
                };
                // Room for more: let the next blocked sender try too.
                let next = if notified && chan.has_room(&st) {
                    st.send_q.pop()
                } else {
                    None
                };
                drop(st);
                if let Some(w) = w {
                    w.wake();
                }
                if let Some(w) = next {
                    w.wake();
                }
                return Ok(());
            }
            if gave_up {
                let next = if notified { st.send_q.pop() } else { None };
                drop(st);
                if let Some(w) = next {
                    w.wake();
                }
                return Err(SendTimeoutError::Timeout(value));
            }
            reg.ticket = Some(st.send_q.push_current());
            drop(st);
            match block(deadline) {
                Blocked::Woken => {}
                Blocked::TimedOut | Blocked::Interrupted => gave_up = true,
            }
        }
    }

    /// Whether every receiver has been dropped.
    pub fn is_closed(&self) -> bool {
        self.chan.state.lock().receivers == 0
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
    /// Takes the next value, parking the tasklet (or blocking the thread,
    /// outside a dispatcher) while the channel is empty.
    ///
    /// Values still queued are delivered after the senders are gone; then
    /// it fails with [`RecvError`]. It also fails when the tasklet is being
    /// killed and this is called from a destructor, where it cannot wait.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_until(None).map_err(|_| RecvError)
    }

    /// Takes a value if one is queued right now.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut st = self.chan.state.lock();
        match st.queue.pop_front() {
            Some(v) => {
                let w = st.send_q.pop();
                drop(st);
                if let Some(w) = w {
                    w.wake();
                }
                Ok(v)
            }
            None if st.senders == 0 => Err(TryRecvError::Disconnected),
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

    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let chan = &*self.chan;
        let slot = Slot::new();
        let mut reg = RecvRegistration {
            chan,
            slot: &slot,
            ticket: None,
        };
        let mut gave_up = false;
        loop {
            let mut st = chan.state.lock();
            if let Some(v) = reg.leave(&mut st) {
                return Ok(v);
            }
            if let Some(v) = st.queue.pop_front() {
                let w = st.send_q.pop();
                drop(st);
                if let Some(w) = w {
                    w.wake();
                }
                return Ok(v);
            }
            if st.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            if gave_up {
                return Err(RecvTimeoutError::Timeout);
            }
            reg.ticket = Some(st.recv_q.push_current_with(SlotRef::new(&slot)));
            // A rendezvous sender can now hand over a value.
            let sender = if chan.cap == Some(0) {
                st.send_q.pop()
            } else {
                None
            };
            drop(st);
            if let Some(w) = sender {
                w.wake();
            }
            let r = block(deadline);
            if let Some(v) = slot.take() {
                // Handed over by a sender, which removed the registration:
                // no need to lock again.
                reg.ticket = None;
                return Ok(v);
            }
            match r {
                Blocked::Woken => {}
                Blocked::TimedOut | Blocked::Interrupted => gave_up = true,
            }
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

    /// Whether every sender has been dropped (values may still be queued).
    pub fn is_closed(&self) -> bool {
        self.chan.state.lock().senders == 0
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
        let mut st = self.chan.state.lock();
        st.senders -= 1;
        if st.senders > 0 {
            return;
        }
        let waiters = st.recv_q.take_all();
        drop(st);
        super::wait::wake_all(waiters);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.chan.state.lock();
        st.receivers -= 1;
        if st.receivers > 0 {
            return;
        }
        let waiters = st.send_q.take_all();
        let queued = std::mem::take(&mut st.queue);
        drop(st);
        super::wait::wake_all(waiters);
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
