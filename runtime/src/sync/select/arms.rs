//! The arms of a [`Select`](super::Select): a channel receive or send, an
//! event or one-shot result, a tasklet's end.

use super::{Arm, Try};
use crate::dispatcher::context;
use crate::hub::KeyWait;
use crate::sync::channel::{Chan, RecvError, SendError};
use crate::sync::wait::{current_wakeup, WaitState, Waiter};
use crate::task::JoinHandle;
use crate::util::SpinLock;

// ---------------------------------------------------------------- channels

pub(super) struct RecvArm<'a, T, F> {
    pub(super) chan: &'a Chan<T>,
    pub(super) node: Waiter<Option<T>>,
    /// Whether `node` may be linked or hold a value not yet seen.
    pub(super) linked: bool,
    pub(super) key: Option<KeyWait>,
    pub(super) got: Option<Result<T, RecvError>>,
    pub(super) f: Option<F>,
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
        let mut guard = match chan.pop_queued(chan.state.lock()) {
            Ok(v) => {
                self.got = Some(Ok(v));
                return Try::Done;
            }
            Err(guard) => guard,
        };
        let st = &mut *guard;
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
                st.pop_sender_except_callers()
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

    fn hint(&self) -> Option<usize> {
        // A rendezvous sender hands over only to a parked receiver: no
        // value is queued to watch for.
        (self.chan.cap != Some(0))
            .then(|| self.chan.queued.load(std::sync::atomic::Ordering::Relaxed))
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

pub(super) struct SendArm<'a, T, F> {
    pub(super) chan: &'a Chan<T>,
    pub(super) node: Waiter<()>,
    pub(super) linked: bool,
    pub(super) key: Option<KeyWait>,
    /// The value while it is not sent: the arm's own, or the caller's
    /// slot (`send_from`), where it stays if another arm is taken.
    pub(super) value: Slot<'a, T>,
    pub(super) result: Option<Result<(), SendError<T>>>,
    pub(super) f: Option<F>,
}

/// Where a send arm's value waits.
pub(super) enum Slot<'a, T> {
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
        match st.hand_over_except_callers(value) {
            Ok(w) => {
                drop(guard);
                chan.wake(w);
                self.result = Some(Ok(()));
                return Try::Done;
            }
            Err(v) if chan.queue_has_room(st) => {
                chan.push(st, v);
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

/// An arm over a primitive whose waiters are [`crate::sync::wait::Waiters`] and whose
/// waiters are all popped when it becomes ready (an event, a one-shot
/// result): being popped is the whole message.
pub(super) struct WaitersArm<'a, S: WaitState, F> {
    pub(super) lock: &'a SpinLock<S>,
    pub(super) ready: fn(&S) -> bool,
    pub(super) node: Waiter<()>,
    pub(super) linked: bool,
    pub(super) key: Option<KeyWait>,
    pub(super) f: Option<F>,
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

pub(super) struct JoinArm<'a, T, F> {
    pub(super) handle: &'a mut JoinHandle<T>,
    pub(super) registered: bool,
    pub(super) f: Option<F>,
}

impl<T, F: FnOnce() -> R, R> Arm<R> for JoinArm<'_, T, F> {
    fn try_or_register(&mut self, register: bool) -> Try {
        if self.handle.is_finished() {
            return Try::Done;
        }
        if register {
            self.handle
                .set_joiner(Some(context::with(|d| d.current_joiner())));
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
