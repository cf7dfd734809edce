//! The receiving half's operations ([`Receiver::recv`] and its variants)
//! and its iterators.

use std::time::{Duration, Instant};

use super::*;
use crate::sync::wait::Blocked;

impl<T> Receiver<T> {
    /// The shared channel (for a select's arm).
    pub(in crate::sync) fn chan(&self) -> &Chan<T> {
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
        match self.chan.pop_queued(self.chan.state.lock()) {
            Ok(v) => Ok(v),
            Err(st) if st.recv_closed() => Err(TryRecvError::Disconnected),
            Err(_) => Err(TryRecvError::Empty),
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
        let mut reg = Registration::new(chan, &node);
        let guard = match chan.pop_queued(chan.state.lock()) {
            Ok(v) => return Ok(v),
            Err(guard) => guard,
        };
        if guard.recv_closed() {
            return Err(RecvTimeoutError::Disconnected);
        }
        // A rendezvous sender hands over only to a parked receiver: no
        // value is queued to wait for.
        if let Some(spin) = (chan.cap != Some(0))
            .then(crate::hub::wait_spin_budget)
            .flatten()
        {
            let seen = chan.queued.load(std::sync::atomic::Ordering::Relaxed);
            drop(guard);
            return self.recv_spinning(&mut reg, seen, spin.until(deadline), deadline);
        }
        chan.park_receiver(guard, &mut reg);
        let r = reg.block(deadline, chan.wait_on(false));
        match reg.popped() {
            // Popped by a sender with its value (the common case: no need
            // to lock again).
            Some(Some(v)) => Ok(v),
            // Popped by the last sender closing the channel.
            Some(None) => self.recv_again(&mut reg, None, deadline),
            None => self.recv_again(&mut reg, Some(r), deadline),
        }
    }

    /// A receive that found the channel empty on a worker with nothing else
    /// to run, while values come from other threads: tries again for up to
    /// the granted `spin` (not past `deadline`) before it parks, so a value sent
    /// meanwhile is taken without a park, a switch and a cross-thread
    /// wake-up of this worker (crossbeam's `Backoff::snooze` before
    /// blocking, Go's spinning before it parks an M).
    #[cold]
    #[inline(never)]
    fn recv_spinning(
        &self,
        reg: &mut RecvRegistration<'_, T>,
        mut seen: usize,
        spin: crate::hub::idle::WaitSpin,
        deadline: Option<Instant>,
    ) -> Result<T, RecvTimeoutError> {
        use std::sync::atomic::Ordering;
        let mut got = None;
        // Watch the hint (a shared read, no write to the line the sender
        // locks) and lock only when a value was queued.
        spin.spin(|| {
            let now = self.chan.queued.load(Ordering::Relaxed);
            if now == seen {
                return false;
            }
            seen = now;
            match self.try_recv() {
                Ok(v) => got = Some(Ok(v)),
                Err(TryRecvError::Disconnected) => got = Some(Err(RecvTimeoutError::Disconnected)),
                // Another receiver was quicker.
                Err(TryRecvError::Empty) => {}
            }
            got.is_some()
        });
        match got {
            Some(r) => r,
            None => self.recv_again(reg, None, deadline),
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
        let why = chan.wait_on(false);
        let mut gave_up = false;
        loop {
            if let Some(r) = woken.take() {
                match reg.wait_popped(r, deadline, why) {
                    Some(Some(v)) => return Ok(v),
                    Some(None) => {}
                    None => gave_up = true,
                }
            }
            // Not linked here.
            let guard = match chan.pop_queued(chan.state.lock()) {
                Ok(v) => return Ok(v),
                Err(guard) => guard,
            };
            if guard.recv_closed() {
                return Err(RecvTimeoutError::Disconnected);
            }
            if gave_up {
                return Err(RecvTimeoutError::Timeout);
            }
            chan.park_receiver(guard, reg);
            match reg.park(deadline, why) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(r) => woken = Some(r),
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
