//! The sending half's operations: [`Sender::send`] and its variants.

use std::time::{Duration, Instant};

use super::*;

impl<T> Sender<T> {
    /// The shared channel (for a select's arm).
    pub(in crate::sync) fn chan(&self) -> &Chan<T> {
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
                chan.push(st, v);
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
        let mut reg = Registration::new(chan, &node);
        let why = chan.wait_on(true);
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
                    chan.push(st, v);
                    return chan.sent(guard, granted, None);
                }
                Err(v) => value = v,
            }
            if gave_up {
                return Err(SendTimeoutError::Timeout(value));
            }
            reg.link(st);
            drop(guard);
            // Popped: granted room (or every receiver is gone): retry.
            let popped = match reg.park(deadline, why) {
                Ok(()) => true,
                Err(r) => reg.wait_popped(r, deadline, why).is_some(),
            };
            granted |= popped;
            gave_up = !popped;
            guard = chan.state.lock();
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
