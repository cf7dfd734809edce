//! The context a tasklet runs in: the thread's current dispatcher
//! ([`with`]), the running tasklet seen from it ([`Dispatcher::current_header`]),
//! and the switch out of the tasklet: parking until woken, yielding, and the
//! timer that bounds a park. Every blocking call of the runtime ends in
//! [`Dispatcher::park_on`].
//!
//! The dispatcher pointer is published only for the exact span in which
//! its target is alive and pinned (see the `SAFETY:` comments), and never
//! handed out beyond a borrow, so the rest of the runtime is safe code.

use std::cell::Cell;
use std::ptr;
use std::time::Instant;

use super::Dispatcher;
use crate::hub::{TimerAction, Unparker, Wake};
use crate::task::header::{
    self as header, Cancelled, Header, Interrupt, Joiner, State, Unwind, Unwinding, WaitOn,
    KILL_ROUNDS,
};
pub(crate) use crate::task::header::{current, TaskPtr};
use crate::task::raw::TaskRef;
use std::panic;

thread_local! {
    static DISPATCHER: Cell<*const Dispatcher> = const { Cell::new(ptr::null()) };
}

/// The message every tasklet API panics with outside a dispatcher.
pub(crate) const OUTSIDE: &str = "this tasklet API must be called inside tasklet::dispatch \
     (no dispatcher runs on this thread); start one with `tasklet::dispatch(|| ...)`";

/// Runs `f` with the thread's dispatcher, or returns `None` outside `dispatch`.
#[inline(always)]
pub(crate) fn try_with<R>(f: impl FnOnce(&Dispatcher) -> R) -> Option<R> {
    let p = DISPATCHER.with(Cell::get);
    if p.is_null() {
        return None;
    }
    // SAFETY: the pointer is set by `Enter::new` from a `&Dispatcher` that
    // lives on `dispatch`'s stack frame and is cleared by `Enter::drop` before
    // that dispatcher is dropped or moved (the `Enter` guard borrows it). The
    // dispatcher is only used through shared references and interior
    // mutability, so handing out another `&Dispatcher` here is sound.
    Some(f(unsafe { &*p }))
}

/// Runs `f` with the thread's dispatcher; panics (naming `dispatch`) outside one.
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&Dispatcher) -> R) -> R {
    match try_with(f) {
        Some(r) => r,
        None => outside(),
    }
}

/// Panics with the message for tasklet APIs called outside `dispatch`.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn outside() -> ! {
    panic!("{OUTSIDE}")
}

/// Panics with the message for a tasklet API called outside `dispatch`,
/// naming the API and (through `#[track_caller]`) the caller's location.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn outside_api(api: &str) -> ! {
    panic!("{api} called outside tasklet::dispatch: {OUTSIDE}")
}

/// Whether a dispatcher runs on this thread.
pub(crate) fn is_set() -> bool {
    !DISPATCHER.with(Cell::get).is_null()
}

/// Publishes a dispatcher as the thread's current one for the guard's lifetime.
pub(crate) struct Enter<'a> {
    _d: &'a Dispatcher,
}

impl<'a> Enter<'a> {
    /// Makes `d` the thread's dispatcher. Panics if one is already set.
    pub(crate) fn new(d: &'a Dispatcher) -> Self {
        DISPATCHER.with(|c| {
            assert!(
                c.get().is_null(),
                "tasklet::dispatch called while this thread already runs a dispatcher: \
                 nested dispatch is not supported (use tasklet::spawn inside it)"
            );
            c.set(d as *const Dispatcher);
        });
        // `dispatch` called while this thread unwinds (from a destructor):
        // that panic is on the thread all along, like a suspended
        // tasklet's, and must not be taken for a tasklet's own.
        let base = usize::from(std::thread::panicking());
        header::reset_suspended_unwinding(base);
        Enter { _d: d }
    }
}

impl Drop for Enter<'_> {
    fn drop(&mut self) {
        DISPATCHER.with(|c| c.set(ptr::null()));
        // Tasklets abandoned at exit are never resumed to undo their count.
        header::reset_suspended_unwinding(0);
    }
}

/// A counted reference to the tasklet being resumed right now, if any.
#[inline]
pub(crate) fn current_task() -> Option<TaskRef> {
    // SAFETY: a published current tasklet is alive (see `set_current`).
    current().map(|p| unsafe { TaskRef::clone_from_ptr(p) })
}

/// Borrows the tasklet header behind `p` for as long as `d` is borrowed.
///
/// A module invariant of the dispatcher, not checked here: `p` must be
/// (a) in `d`'s ready queue or `d`'s current tasklet, (b) the pointer of a
/// `TaskRef` the caller holds, or (c) just looked up in `d`'s registry and
/// used before any code runs that could finish that tasklet. Only
/// the dispatcher calls it, in those three ways.
#[inline]
pub(crate) fn header_at(d: &Dispatcher, p: TaskPtr) -> &Header {
    let _ = d;
    // SAFETY: in each allowed case the block is alive for the borrow: (a) a
    // tasklet is only queued or current while registered and not `Done`
    // (wake/interrupt enqueue only `Blocked` tasklets, yield only the running
    // one, `finish` runs after it left both, and `abandon` clears the queue
    // before it drops registry entries), and the registry's `TaskRef` keeps
    // it alive until `finish`/`abandon`; (b) the caller's `TaskRef` keeps it
    // alive; (c) the registry's does, and nothing can remove it before the
    // pointer is used. Only shared references are ever created from it.
    unsafe { p.as_ref() }
}

/// Unwinds the running tasklet if an interrupt is pending.
///
/// `fresh`: the tasklet ran no code of its own since its last switch
/// out (the check right after a park or yield resumed it, or before its
/// body starts), so what was settled then still holds.
///
/// While the tasklet is already unwinding (a destructor that blocks) it
/// is not unwound again — a second panic would abort. It may then block
/// normally (gevent lets `finally` blocks block too), unless `no_block`
/// (late in the dispatcher's shutdown, see `Dispatcher::shutdown`) or a
/// `timeout` opened inside the destructor expired: then it gets
/// `Err(Cancelled)` and must give up without blocking. So does a
/// tasklet whose unwinding cannot be told ([`Unwinding::Unknown`]).
#[inline(always)]
pub(crate) fn check_interrupt(h: &Header, no_block: bool, fresh: bool) -> Result<(), Cancelled> {
    match h.interrupt.get() {
        None => Ok(()),
        Some(i) => match interrupt_now(h, i, no_block, fresh)? {
            None => Ok(()),
            // Raised here, in the caller's frame, not inside the cold
            // function: each frame between the raise and the tasklet's
            // `catch_unwind` costs two DWARF unwind steps (search and
            // cleanup phase, ~2,000 instructions each), and a kill of a
            // parked tasklet is mostly those steps.
            Some(payload) => panic::resume_unwind(payload),
        },
    }
}

/// Decides what [`check_interrupt`] does about pending interrupt `i`:
/// `Ok(None)` go on (the tasklet is already unwinding and may block),
/// `Ok(Some(payload))` unwind the tasklet with that [`Unwind`] payload,
/// `Err(Cancelled)` fail the blocking call.
#[cold]
#[inline(never)]
fn interrupt_now(
    h: &Header,
    i: Interrupt,
    no_block: bool,
    fresh: bool,
) -> Result<Option<Box<Unwind>>, Cancelled> {
    match h.settle(fresh) {
        Unwinding::No => Ok(Some(raise(h, i))),
        Unwinding::Yes if !no_block && h.unwind_timeout.get().is_none() => Ok(None),
        Unwinding::Yes | Unwinding::Unknown => {
            h.refused.set(true);
            Err(Cancelled)
        }
    }
}

/// Prepares raising interrupt `i` in this tasklet, known not to be
/// unwinding: from here on it counts as unwinding with the returned
/// payload in flight, which the caller must raise at once.
#[inline(always)]
fn raise(h: &Header, mut i: Interrupt) -> Box<Unwind> {
    if h.last_raised.get() == Some(i) {
        // Raised before and swallowed by a `catch_unwind`: let the
        // others run before raising it again, so a tasklet that keeps
        // catching it does not spin (and can be given up on at exit).
        with(|d| d.yield_raw(h));
        // A kill may have replaced the interrupt meanwhile. Nothing of
        // the tasklet's own ran: it is still known not to be unwinding.
        if let Some(now) = h.interrupt.get() {
            i = now;
        }
    }
    if i == Interrupt::Kill {
        let n = h.kill_raises.get().saturating_add(1);
        h.kill_raises.set(n);
        if n >= KILL_ROUNDS {
            with(|d| d.kill_caught_too_often());
        }
    }
    h.last_raised.set(Some(i));
    h.unwinding.set(Unwinding::Yes);
    h.in_flight.set(h.in_flight.get() + 1);
    Box::new(Unwind(i, h.id))
}

impl Dispatcher {
    /// The running tasklet. Panics if called from the dispatcher itself.
    pub(crate) fn current_task(&self) -> TaskRef {
        match current_task() {
            Some(t) => t,
            None => panic!("{}", OUTSIDE),
        }
    }

    /// The running tasklet's header. Panics if called from the dispatcher itself.
    #[inline]
    pub(crate) fn current_header(&self) -> &Header {
        match current() {
            Some(p) => header_at(self, p),
            None => panic!("{}", OUTSIDE),
        }
    }

    /// The running tasklet's current wait, as a [`Joiner`] for a tasklet it
    /// joins.
    #[inline]
    pub(crate) fn current_joiner(&self) -> Joiner {
        let h = self.current_header();
        Joiner {
            slot: h.slot.get() as u32,
            id: h.id,
            epoch: h.epoch.get(),
        }
    }

    /// An unparker for the running tasklet's current wait.
    pub(crate) fn current_unparker(&self) -> Unparker {
        let task = self.current_task();
        let epoch = task.epoch.get();
        Unparker::new(task, epoch)
    }

    /// Suspends the running tasklet until woken; see [`crate::hub::park`].
    ///
    /// Inlined into its callers (with [`crate::hub::park`]): every function
    /// frame between the switch and the code that resumes running after it
    /// costs a mispredicted return, because the CPU's return-address
    /// predictor still holds the dispatcher's frames after a stack switch.
    #[inline(always)]
    pub(crate) fn park(&self, deadline: Option<Instant>) -> Result<Wake, Cancelled> {
        self.park_on(deadline, WaitOn::Parked)
    }

    /// [`park`](Self::park), recording what the tasklet waits on (shown by
    /// [`crate::dump`] and deadlock reports). The record is three stores on
    /// the blocking path; yielding never touches it.
    #[inline(always)]
    pub(crate) fn park_on(
        &self,
        deadline: Option<Instant>,
        why: WaitOn,
    ) -> Result<Wake, Cancelled> {
        let h = self.current_header();
        if let Err(e) = check_interrupt(h, self.no_block.get(), false) {
            return Err(self.refuse_to_block(e));
        }
        let epoch = h.epoch.get();
        if h.notified.replace(false) {
            h.epoch.set(epoch.wrapping_add(1));
            return Ok(Wake::Unparked);
        }
        match deadline {
            Some(dl) => self.arm_park_timer(h, dl),
            None => {
                if h.park_timer.get().is_some() {
                    self.cancel_park_timer(h);
                }
            }
        }
        h.wait_on.set(why);
        h.wait_deadline.set(deadline);
        h.wait_since.set(Some(self.obs.clock.get()));
        h.state.set(State::Blocked);
        let counted = h.suspending();
        h.suspend();
        h.resumed(counted);
        h.epoch.set(epoch.wrapping_add(1));
        h.notified.set(false);
        let reason = h.wake_reason.replace(Wake::Unparked);
        // An unfired park timer stays armed for the next wait.
        check_interrupt(h, self.no_block.get(), true)?;
        Ok(reason)
    }

    /// The blocking call of an unwinding tasklet late in shutdown fails; it
    /// still yields once, so a destructor that retries in a loop lets the
    /// dispatcher run (and eventually give up on it) instead of spinning.
    #[cold]
    #[inline(never)]
    fn refuse_to_block(&self, e: Cancelled) -> Cancelled {
        self.yield_now();
        e
    }

    /// Makes sure the running tasklet `h`, about to park until `deadline`,
    /// has a park timer that fires at or before `deadline`.
    ///
    /// Park timers are lazy: a park that ends before its deadline leaves its
    /// timer armed, and the next park with a deadline at or after it keeps
    /// it instead of arming its own. When it fires early,
    /// [`park_deadline`](Self::park_deadline) re-arms it for the park then
    /// current. A server that reads with an idle timeout (each read parks
    /// until now + timeout) thus touches the timer queue about once per
    /// timeout period per connection, instead of an insert and a cancel
    /// per read — and no stale heap entry surfaces per read either.
    #[inline(always)]
    fn arm_park_timer(&self, h: &Header, deadline: Instant) {
        match h.park_timer.get() {
            Some((_, at)) if at <= deadline => {}
            _ => self.rearm_park_timer(h, deadline),
        }
    }

    /// Arms `h`'s park timer for `deadline`, replacing an armed one.
    #[inline(never)]
    fn rearm_park_timer(&self, h: &Header, deadline: Instant) {
        let task = self.current_task();
        let mut timers = self.hub.timers.borrow_mut();
        if let Some((key, _)) = h.park_timer.take() {
            timers.cancel(key);
        }
        let key = timers.insert(deadline, TimerAction::ParkDeadline(task));
        h.park_timer.set(Some((key, deadline)));
    }

    /// Disarms `h`'s park timer, if armed: a park without a deadline (so
    /// that the timer queue empties when every wait is untimed, which
    /// deadlock detection relies on), and a finished tasklet.
    #[inline(never)]
    pub(super) fn cancel_park_timer(&self, h: &Header) {
        if let Some((key, _)) = h.park_timer.take() {
            // The action holds a reference to the tasklet: dropped after
            // the queue's borrow ends.
            let action = self.hub.timers.borrow_mut().cancel(key);
            drop(action);
        }
    }

    /// `task`'s park timer fired at `now`: wakes it with `TimedOut` if it
    /// is parked with a deadline that has passed, re-arms the timer if it
    /// is parked with a later deadline, and forgets it otherwise (it is
    /// running or ready, or parked without a deadline).
    pub(crate) fn park_deadline(&self, task: &TaskRef, now: Instant) {
        let h: &Header = task;
        h.park_timer.set(None);
        if h.state.get() != State::Blocked {
            return;
        }
        match h.wait_deadline.get() {
            Some(dl) if dl <= now => {
                self.unpark(task, h.epoch.get(), Wake::TimedOut);
            }
            Some(dl) => {
                let key = self
                    .hub
                    .timers
                    .borrow_mut()
                    .insert(dl, TimerAction::ParkDeadline(task.clone()));
                h.park_timer.set(Some((key, dl)));
            }
            None => {}
        }
    }

    #[inline(always)]
    pub(super) fn yield_now(&self) {
        let Some(p) = current() else { outside() };
        let h = header_at(self, p);
        // `Err` only for an unwinding tasklet late in shutdown: it cannot be
        // unwound again, and yielding is not blocking, so it still yields
        // (a destructor that waits by yielding must let the dispatcher run).
        let _ = check_interrupt(h, self.no_block.get(), false);
        h.state.set(State::Ready);
        self.ready.push_back(p);
        let counted = h.suspending();
        h.suspend();
        h.resumed(counted);
        let _ = check_interrupt(h, self.no_block.get(), true);
    }

    /// Yields the running tasklet `h` without checking interrupts or
    /// settling its unwinding state (the caller just settled it, as not
    /// unwinding: it is not counted among the suspended unwinding ones).
    #[cold]
    pub(crate) fn yield_raw(&self, h: &Header) {
        let Some(p) = current() else { outside() };
        debug_assert!(std::ptr::eq(p.as_ptr(), h));
        h.state.set(State::Ready);
        self.ready.push_back(p);
        h.suspend();
    }

    /// Yields without raising a pending interrupt: for `hub::catch_interrupt`,
    /// whose callers cannot unwind, when the tasklet keeps making blocking
    /// calls after its kill (so a retry loop does not hold the dispatcher).
    pub(crate) fn yield_unchecked(&self) {
        let Some(p) = current() else {
            return;
        };
        let h = header_at(self, p);
        h.state.set(State::Ready);
        self.ready.push_back(p);
        let counted = h.suspending();
        h.suspend();
        h.resumed(counted);
    }

    pub(super) fn next_timeout_id(&self) -> u64 {
        let id = self.next_timeout.get() + 1;
        self.next_timeout.set(id);
        id
    }
}
