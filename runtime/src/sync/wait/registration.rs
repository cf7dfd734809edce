//! One wait protocol for every primitive: a [`Registration`] links a
//! waiter into a [`WaitPlace`]'s list, parks, and settles what woke it
//! (handed-over data, a timeout, a kill), passing a notification on when
//! it leaves unwinding. [`wait_in`] is the common case over a
//! [`SpinLock`]-guarded [`WaitState`].

use super::*;

/// Where a waiter of a primitive waits: the lock over the primitive's
/// state and, in that state, a [`WaitList`] of waiters carrying `D` (with
/// the dispatchers of its waiters). One primitive may have several places,
/// told apart by `D` (a channel's receivers carry the value handed over,
/// its senders nothing).
pub(crate) trait WaitPlace<D> {
    /// The primitive's state, behind [`lock`](Self::lock).
    type State;

    /// The lock over the state.
    fn lock(&self) -> &SpinLock<Self::State>;

    /// The list waiters of this place go into, and the dispatchers noted
    /// for waking them from other threads.
    fn list(st: &mut Self::State) -> (&mut WaitList<D>, &mut Hubs);

    /// A waiter popped with `data` leaves (killed, timed out) without using
    /// it: passes it on under the lock. Returns the waiter to wake, if any.
    fn pass_on(&self, st: &mut Self::State, data: D) -> Option<Wakeup>;

    /// Delivers a wake-up popped from this place's list (called without the
    /// lock held): on the waiter's own dispatcher directly, from anywhere
    /// else through that dispatcher's hub.
    fn wake(&self, w: Wakeup);
}

/// How a wait looked under the lock after a park that ended without the
/// waiter seen popped (see [`Registration::settle`]).
pub(crate) enum Settled<D> {
    /// Popped after all (between the park and the lock), with this data.
    Popped(D),
    /// The deadline passed, or the tasklet cannot park: unlinked.
    GaveUp,
    /// Woken spuriously: linked again in the same place, reachable in the
    /// new wait epoch.
    Relinked,
}

/// A waiting call's registration of its [`Waiter`] (which lives in the
/// call's frame) in a [`WaitPlace`]: the one wait protocol of every `sync`
/// primitive.
///
/// [`link`](Self::link) it under the lock, release the lock,
/// [`park`](Self::park); if that did not find the waiter popped, [`settle`]
/// under the lock (or let [`wait_popped`](Self::wait_popped) do the loop).
/// However the call ends (return, kill, `timeout`), the waiter is unlinked
/// under the lock before its frame goes away: that is what keeps every
/// pointer in the lists valid. Declare it after the waiter, so it is
/// dropped first.
///
/// [`settle`]: Self::settle
pub(crate) struct Registration<'a, P: WaitPlace<D>, D: Default> {
    place: &'a P,
    node: &'a Waiter<D>,
    /// Whether `node` may be linked, or hold a notification not yet seen.
    active: bool,
    /// Counts a tasklet's wait for deadlock detection while it lasts.
    key: Option<KeyWait>,
}

impl<'a, P: WaitPlace<D>, D: Default> Registration<'a, P, D> {
    /// A registration of `node` (unlinked) in `place`.
    #[inline(always)]
    pub(crate) fn new(place: &'a P, node: &'a Waiter<D>) -> Self {
        Registration {
            place,
            node,
            active: false,
            key: None,
        }
    }

    /// Links the waiter at the back of its list, to be woken in the
    /// caller's current wait. Call under the place's lock (`st` is its
    /// state), with the waiter not linked.
    #[inline(always)]
    pub(crate) fn link(&mut self, st: &mut P::State) {
        let (list, hubs) = P::list(st);
        let (wakeup, key) = current_wakeup(hubs);
        // SAFETY: the waiter is not linked (the caller's contract: it is
        // linked only here, when it is not), goes only into this place's
        // list, and stays in the caller's frame until this registration
        // (dropped before it) has seen it unlinked.
        unsafe { list.push_back(self.node, wakeup) };
        self.active = true;
        self.key = key;
    }

    /// Parks once (the lock released): the waiter's data if it was popped,
    /// else how the park ended (then [`settle`](Self::settle) under the
    /// lock).
    ///
    /// Always inlined, with the hub's park: the waiting call resumes from
    /// the stack switch in its own frame (see [`block_as`]).
    #[inline(always)]
    pub(crate) fn park(&mut self, deadline: Option<Instant>, why: WaitOn) -> Result<D, Blocked> {
        let r = self.block(deadline, why);
        match self.popped() {
            Some(data) => Ok(data),
            None => Err(r),
        }
    }

    /// [`park`](Self::park) in two steps, for a caller that matches on the
    /// data directly: parks once and returns how the park ended...
    #[inline(always)]
    pub(crate) fn block(&mut self, deadline: Option<Instant>, why: WaitOn) -> Blocked {
        block_as(self.key.is_some(), deadline, why)
    }

    /// ...then takes the data if the waiter was popped (lock-free; the
    /// wait is then over).
    #[inline(always)]
    pub(crate) fn popped(&mut self) -> Option<D> {
        let data = self.node.take_notified()?;
        self.done();
        Some(data)
    }

    /// Under the place's lock (`st`), after a park that ended with `r`
    /// without finding the waiter popped: whether it was popped meanwhile,
    /// gives up (unlinked), or was woken spuriously and waits again
    /// (linked anew in the same place).
    #[inline]
    pub(crate) fn settle(&mut self, st: &mut P::State, r: Blocked) -> Settled<D> {
        let (list, hubs) = P::list(st);
        if !list.is_linked(self.node) {
            let data = self.node.take_notified().unwrap_or_default();
            self.done();
            return Settled::Popped(data);
        }
        if r != Blocked::Woken {
            // SAFETY: linked, into this list.
            unsafe { list.remove(self.node) };
            self.done();
            return Settled::GaveUp;
        }
        let (wakeup, key) = current_wakeup(hubs);
        // SAFETY: linked, into this list.
        unsafe { list.set_wakeup(self.node, wakeup) };
        self.key = key;
        Settled::Relinked
    }

    /// The rest of a wait whose first [`park`](Self::park) ended with `r`:
    /// waits (through spurious wake-ups) until the waiter is popped (its
    /// data) or the wait gives up (`None`).
    #[inline(never)]
    pub(crate) fn wait_popped(
        &mut self,
        mut r: Blocked,
        deadline: Option<Instant>,
        why: WaitOn,
    ) -> Option<D> {
        loop {
            let mut guard = self.place.lock().lock();
            match self.settle(&mut guard, r) {
                Settled::Popped(data) => return Some(data),
                Settled::GaveUp => return None,
                Settled::Relinked => {}
            }
            drop(guard);
            match self.park(deadline, why) {
                Ok(data) => return Some(data),
                Err(next) => r = next,
            }
        }
    }

    /// The wait is over and the waiter is known to be unlinked.
    #[inline(always)]
    fn done(&mut self) {
        self.active = false;
        self.key = None;
    }

    /// Leaves the wait when it is left by unwinding: a notification received
    /// meanwhile is passed on ([`WaitPlace::pass_on`]).
    #[cold]
    fn abandon(&mut self) {
        let mut guard = self.place.lock().lock();
        let st = &mut *guard;
        let mut next = None;
        let (list, _) = P::list(st);
        if list.is_linked(self.node) {
            // SAFETY: linked, and only ever into this place's list.
            unsafe { list.remove(self.node) };
        } else if let Some(data) = self.node.take_notified() {
            next = self.place.pass_on(st, data);
        }
        self.done();
        drop(guard);
        if let Some(w) = next {
            self.place.wake(w);
        }
    }
}

impl<P: WaitPlace<D>, D: Default> Drop for Registration<'_, P, D> {
    #[inline]
    fn drop(&mut self) {
        if self.active {
            self.abandon();
        }
    }
}

/// The [`Waiters`] of a primitive whose state is `S`.
impl<S: WaitState> WaitPlace<()> for SpinLock<S> {
    type State = S;

    #[inline(always)]
    fn lock(&self) -> &SpinLock<S> {
        self
    }

    #[inline(always)]
    fn list(st: &mut S) -> (&mut WaitList<()>, &mut Hubs) {
        let w = st.waiters();
        (&mut w.list, &mut w.hubs)
    }

    fn pass_on(&self, st: &mut S, (): ()) -> Option<Wakeup> {
        st.pass_on()
    }

    #[inline]
    fn wake(&self, w: Wakeup) {
        wake(self, w)
    }
}

/// Waits, in the list of the primitive whose lock `guard` holds, until the
/// waiter is popped (`true`) or `deadline` passes (`false`; also when the
/// tasklet cannot park: see [`Blocked::Interrupted`]). The caller has seen
/// under that lock that it must wait; the lock is released while parked.
/// A waiter that was popped and is then killed or times out before using
/// the notification passes it on ([`WaitState::pass_on`]).
///
/// Always inlined, with the park: the waiting call resumes from the stack
/// switch in its own frame (see [`block_as`]). Spurious wake-ups (the
/// waiter keeps its place) and timeouts continue out of line.
#[inline(always)]
pub(crate) fn wait_in<S: WaitState>(
    lock: &SpinLock<S>,
    mut guard: SpinGuard<'_, S>,
    deadline: Option<Instant>,
) -> bool {
    let node = Waiter::new(());
    let mut reg = Registration::new(lock, &node);
    let why = guard.wait_on(lock as *const SpinLock<S> as usize);
    reg.link(&mut guard);
    drop(guard);
    match reg.park(deadline, why) {
        Ok(()) => true,
        Err(r) => reg.wait_popped(r, deadline, why).is_some(),
    }
}
