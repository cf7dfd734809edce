//! The hub: each dispatcher's event loop (a `mio::Poll` plus timers and a
//! cross-thread wake-up queue), and the low-level API other crates build
//! blocking operations on.
//!
//! # Building a blocking operation
//!
//! The pattern every cooperative primitive follows (channels, sockets,
//! locks): try the operation; if it would block, leave an [`Unparker`] where
//! the event will find it, [`park`], and try again when woken. Wake-ups may be
//! spurious, so always re-check.
//!
//! ```
//! use std::{cell::RefCell, rc::Rc};
//! use tasklet::hub::{self, Unparker};
//!
//! tasklet::dispatch(|| {
//!     let slot: Rc<RefCell<(Option<u32>, Option<Unparker>)>> = Default::default();
//!     let s = slot.clone();
//!     let waiter = tasklet::spawn(move || loop {
//!         if let Some(v) = s.borrow_mut().0.take() {
//!             return v;
//!         }
//!         s.borrow_mut().1 = Some(hub::current_unparker());
//!         hub::park(None).expect("not interrupted");
//!     });
//!     tasklet::yield_now();
//!     slot.borrow_mut().0 = Some(7);
//!     if let Some(u) = slot.borrow_mut().1.take() {
//!         u.unpark();
//!     }
//!     assert_eq!(waiter.join().unwrap(), 7);
//! });
//! ```
//!
//! Sockets and other file descriptors go through [`IoSource`], which
//! registers once with the hub (edge-triggered, readable and writable) and
//! parks the calling tasklet on `WouldBlock`.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Waker as TaskWaker;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use mio::unix::SourceFd;
use mio::{Events, Poll, Registry, Token, Waker};

use crate::affinity::Home;
use crate::dispatcher::Dispatcher;
use crate::slots::Slots;
use crate::task::header::Interrupt;
use crate::task::id::TaskletId;
use crate::task::raw::TaskRef;
use crate::timer::TimerQueue;
use doorbell::{Doorbell, Mailbox};
use idle::{IdleSpin, SpinEnd};

mod doorbell;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod far_timer;
pub(crate) mod idle;
mod io_entry;
mod io_source;
mod job;
mod key;
mod park;

#[allow(deprecated)]
pub use crate::task::header::Interrupted;
pub use crate::task::header::{Cancelled, Wake};
pub use io_source::{io_tick, registered_sources, wait_any, Direction, IoSource};
use io_source::{split_token, IoEntry, IoKey};
pub(crate) use job::{Job, JobList, JobNode, RawJob};
pub(crate) use key::{HubRef, KeyWait, TaskAddr, WaitKey};
pub use park::{
    catch_interrupt, current_unparker, in_dispatcher, in_tasklet, park, park_as, RemoteUnparker,
    Unparker,
};

const WAKER_TOKEN: Token = Token(usize::MAX);

/// What a timer does when it fires.
pub(crate) enum TimerAction {
    /// The tasklet's park timer: ends its current park if that park's
    /// deadline has passed, else re-arms for it (see
    /// `Dispatcher::arm_park_timer`).
    ParkDeadline(TaskRef),
    /// Interrupt the tasklet for the `timeout` scope with this id.
    Interrupt(TaskRef, u64),
    /// End the `timeout` scope with this id, opened while its tasklet was
    /// already unwinding (see `Header::unwind_timeout`).
    InterruptUnwinding(TaskRef, u64),
}

/// A wake-up sent from another thread.
#[derive(Clone, Copy)]
struct RemoteWake {
    slot: u32,
    id: TaskletId,
    epoch: u32,
}

/// The part of a hub other threads can reach.
pub(crate) struct Shared {
    dispatcher_id: u64,
    queue: SegQueue<RemoteWake>,
    /// Registrations of sources that moved to another thread, for the
    /// dispatcher to free (see [`Shared::release`]).
    released: SegQueue<IoKey>,
    /// Jobs from other threads (see [`Job`]): boxed ones, and embedded
    /// ones (`spawn_on`) in an intrusive list.
    jobs: SegQueue<Job>,
    raw_jobs: JobList,
    /// The doorbell and the wake-up mailbox, on their own cache line.
    door: Door,
    alive: AtomicBool,
    waker: Waker,
    /// A handle on the same epoll instance (a `dup` of its fd), so that
    /// another thread can remove a source that moved away from this
    /// dispatcher while the fd is still known to be that source's.
    registry: Registry,
}

/// What every waker writes: `pending` (something is queued and not yet
/// drained) and `sleeping` (the dispatcher is in, or about to enter, a
/// blocking `epoll_wait`: only then does a wake-up need the `Waker`), see
/// `idle` and `doorbell`; and a mailbox for one wake-up, which a waker that
/// finds it empty uses instead of the queue (one cache line crossing to the
/// hub instead of three).
#[repr(align(128))]
struct Door {
    bell: Doorbell,
    mail: Mailbox<RemoteWake>,
}

impl Shared {
    fn push(&self, w: RemoteWake) {
        if !self.alive.load(Ordering::Acquire) {
            return;
        }
        match self.door.bell.put(&self.door.mail, w) {
            Ok(false) => {}
            Ok(true) => self.wake_waker(),
            Err(w) => {
                self.queue.push(w);
                self.notify();
            }
        }
    }

    /// Forgets a source that was registered with this dispatcher and is now
    /// used (or dropped) on another thread: removes `fd` from this epoll set
    /// at once (so its events stop waking this dispatcher) and queues the
    /// hub entry for this dispatcher to free. `fd` must still be the
    /// source's (not closed), which the calling `IoSource` guarantees.
    fn release(&self, reg: IoKey, fd: RawFd) {
        if !self.alive.load(Ordering::Acquire) {
            return;
        }
        // epoll_ctl is thread-safe; the fd may already be gone from the set
        // (ENOENT), which is fine.
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        self.released.push(reg);
        self.notify();
    }

    /// Queues a job; hands it back if the dispatcher has exited.
    fn push_job(&self, job: Job) -> Result<(), Job> {
        if !self.alive.load(Ordering::Acquire) {
            return Err(job);
        }
        match job {
            Job::Raw(j) => self.raw_jobs.push(j),
            job => self.jobs.push(job),
        }
        self.notify();
        Ok(())
    }

    /// Makes the dispatcher drain its queues: one `Waker` call while a
    /// drain is pending, and none while the dispatcher is awake (running
    /// tasklets or spinning), since it drains before it blocks (the
    /// handshake is described in the `idle` module).
    fn notify(&self) {
        if self.door.bell.ring() {
            self.wake_waker();
        }
    }

    /// Ends the dispatcher's `epoll_wait` (an `eventfd` write).
    fn wake_waker(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!(
                "tasklet: cannot wake dispatcher {}: {e}",
                self.dispatcher_id
            );
        }
    }
}

/// The event loop of one dispatcher.
pub(crate) struct Hub {
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    io: RefCell<Slots<IoEntry>>,
    io_gen: Cell<u32>,
    /// Bumped each time readiness events are collected; see [`io_tick`].
    io_tick: Cell<u64>,
    pub(crate) timers: RefCell<TimerQueue<TimerAction>>,
    shared: Arc<Shared>,
    /// Waits registered through [`WaitKey::register`] and not yet ended:
    /// like a live `RemoteUnparker`, each may be woken from another thread,
    /// so the dispatcher does not report a deadlock while any exists.
    key_waits: Cell<usize>,
    /// Futures' wakers collected by an I/O poll, woken once the slab is no
    /// longer borrowed (a waker may drop the last reference to a future
    /// that owns another `IoSource`). Kept to reuse its capacity.
    woken: RefCell<Vec<TaskWaker>>,
    /// Whether and how long to spin before blocking (see `idle`).
    spin: IdleSpin,
    /// When `poll_io` last ran: a spin ended by a cross-thread wake-up
    /// polls the sockets too if that was a while ago, so that a stream of
    /// such wake-ups cannot starve them.
    io_polled_at: Cell<Instant>,
    /// Far deadlines without an `epoll_wait` timeout (see `far_timer`).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    far: far_timer::FarTimer,
}

impl Hub {
    /// A hub that spins for up to `idle_spin` before blocking, when
    /// cross-thread work has been arriving (see `idle`).
    pub(crate) fn new(dispatcher_id: u64, idle_spin: Duration) -> io::Result<Hub> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        let registry = poll.registry().try_clone()?;
        Ok(Hub {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(1024)),
            io: RefCell::new(Slots::new()),
            io_gen: Cell::new(0),
            io_tick: Cell::new(0),
            timers: RefCell::new(TimerQueue::new()),
            shared: Arc::new(Shared {
                dispatcher_id,
                queue: SegQueue::new(),
                released: SegQueue::new(),
                jobs: SegQueue::new(),
                raw_jobs: JobList::new(),
                door: Door {
                    bell: Doorbell::new(),
                    mail: Mailbox::new(),
                },
                alive: AtomicBool::new(true),
                waker,
                registry,
            }),
            key_waits: Cell::new(0),
            woken: RefCell::new(Vec::new()),
            spin: IdleSpin::new(idle_spin),
            io_polled_at: Cell::new(Instant::now()),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            far: far_timer::FarTimer::new(),
        })
    }

    /// Whether nothing could produce an event: no armed timer, no registered
    /// source and no pending cross-thread wake-up. Lets a pass of ready
    /// tasklets skip the poll entirely.
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        self.timers.borrow().is_empty()
            && self.io.borrow().is_empty()
            && !self.shared.door.bell.is_pending(Ordering::Relaxed)
    }

    /// Runs expired timers, cross-thread wake-ups and I/O events.
    ///
    /// With `may_block`, waits in `epoll_wait` when no tasklet is ready, up to
    /// the next timer deadline or `limit`. Returns `Err(())` if it would wait
    /// forever with nothing able to wake it (a deadlock).
    ///
    /// `n` is the caller's clock read, taken just before (the caller's
    /// `limit` was computed from it): it fires the timers, dates waits for
    /// `dump` (see `park_on`) and measures the time left to `limit`, so the
    /// poll reads the clock again only to spin or after a wait.
    pub(crate) fn poll_until(
        &self,
        d: &Dispatcher,
        may_block: bool,
        limit: Option<Instant>,
        n: Instant,
    ) -> Result<(), ()> {
        self.drain_remote(d);
        d.obs.clock.set(n);
        let mut now = None;
        if !self.timers.borrow().is_empty() {
            self.fire_timers(d, n);
            now = Some(n);
        }
        let block = may_block && d.ready_is_empty();
        let io_live = !self.io.borrow().is_empty();
        if !block && !io_live {
            return Ok(());
        }
        let timeout = if !block {
            Some(Duration::ZERO)
        } else {
            let next = self.timers.borrow_mut().next_deadline();
            match next {
                Some(dl) => self.timeout_until(dl, now.unwrap_or_else(Instant::now)),
                None => {
                    if !io_live && self.key_waits.get() == 0 && Arc::strong_count(&self.shared) == 1
                    {
                        // The last `RemoteUnparker` may have queued its
                        // wake-up after `drain_remote` above and then been
                        // dropped: its `Release` decrement pairs with this
                        // fence, so that wake-up is visible here.
                        std::sync::atomic::fence(Ordering::Acquire);
                        if !self.shared.door.bell.is_pending(Ordering::Acquire) {
                            return Err(());
                        }
                        // Not a deadlock: the next poll drains the wake-up.
                        return Ok(());
                    }
                    None
                }
            }
        };
        let timeout = match (timeout, limit) {
            (t, None) => t,
            (None, Some(l)) => Some(l.saturating_duration_since(n)),
            (Some(t), Some(l)) => Some(t.min(l.saturating_duration_since(n))),
        };
        let events = d.obs.events.get();
        if timeout == Some(Duration::ZERO) {
            self.poll_io(d, timeout);
        } else {
            self.idle_wait(d, timeout, io_live);
        }
        if block {
            self.drain_remote(d);
            // A wait that ended with events leaves the timers to the next
            // poll, which fires them before anything else (after the
            // tasklets made ready meanwhile have run): a clock read and a
            // timer-queue check less per wake-up of a server. A wait that
            // ended without events may have ended at a deadline.
            if d.obs.events.get() == events && !self.timers.borrow().is_empty() {
                self.fire_timers(d, Instant::now());
            }
        }
        Ok(())
    }

    /// The `epoll_wait` timeout of a blocking poll at `now` whose next timer
    /// is due at `deadline` (`None`: the `timerfd` of a far deadline wakes it).
    #[inline]
    fn timeout_until(&self, deadline: Instant, now: Instant) -> Option<Duration> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            self.far
                .timeout(self.poll.borrow().registry(), deadline, now)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Some(deadline.saturating_duration_since(now))
        }
    }

    /// Waits for up to `timeout` (`None`: forever) with no tasklet
    /// runnable: spins first if that pays, then blocks in `epoll_wait` with
    /// the `sleeping` flag raised (see `idle`).
    fn idle_wait(&self, d: &Dispatcher, mut timeout: Option<Duration>, io_live: bool) {
        if let Some(budget) = self.spin.budget(timeout) {
            let start = Instant::now();
            let end = self.spin.spin(budget, &self.shared.door.bell, io_live, || {
                self.poll_io(d, Some(Duration::ZERO));
                !d.ready_is_empty()
            });
            match end {
                SpinEnd::Io => return,
                // The caller drains the queues next.
                SpinEnd::Woken
                    if !io_live || self.io_polled_at.get().elapsed() < idle::IO_CHECK =>
                {
                    return
                }
                SpinEnd::Woken => timeout = Some(Duration::ZERO),
                SpinEnd::Expired => {
                    timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
                }
            }
        }
        // Raise `sleeping` before blocking; something queued before it was
        // visible did not write the `eventfd`, so then do not block.
        if timeout != Some(Duration::ZERO) && !self.shared.door.bell.sleep() {
            timeout = Some(Duration::ZERO);
        }
        self.poll_io(d, timeout);
        self.shared.door.bell.awake();
    }

    fn poll_io(&self, d: &Dispatcher, timeout: Option<Duration>) {
        let mut events = self.events.borrow_mut();
        d.obs.polls.set(d.obs.polls.get() + 1);
        loop {
            match self.poll.borrow_mut().poll(&mut events, timeout) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if timeout.is_none() {
                        continue;
                    }
                    // A signal cut a timed wait short: the loop recomputes it.
                    events.clear();
                    break;
                }
                Err(e) => {
                    log::error!("tasklet: epoll_wait failed: {e}");
                    events.clear();
                    break;
                }
            }
        }
        self.io_tick.set(self.io_tick.get().wrapping_add(1));
        if !self.spin.is_off() {
            self.io_polled_at.set(Instant::now());
        }
        let mut io = self.io.borrow_mut();
        let mut woken = self.woken.borrow_mut();
        let mut n = 0u64;
        for ev in events.iter() {
            let token = ev.token();
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if token == far_timer::FAR_TOKEN {
                // Not counted as an event: the caller then fires the timers.
                self.far.fired();
                continue;
            }
            n += 1;
            if token == WAKER_TOKEN {
                continue;
            }
            let (slot, gen) = split_token(token);
            let Some(entry) = io.get_mut(slot) else {
                continue;
            };
            if entry.gen != gen {
                continue;
            }
            let err = ev.is_error();
            entry.priority = ev.is_priority();
            if ev.is_read_closed() {
                entry.read_closed = true;
            }
            if ev.is_readable() || ev.is_read_closed() || err {
                entry.wake(d, Direction::Read, &mut woken);
            }
            if ev.is_writable() || ev.is_write_closed() || err {
                entry.wake(d, Direction::Write, &mut woken);
            }
        }
        d.obs.events.set(d.obs.events.get() + n);
        drop(woken);
        drop(io);
        drop(events);
        self.wake_futures();
    }

    /// Wakes the futures' wakers [`poll_io`](Self::poll_io) collected, with
    /// no borrow of the hub held.
    fn wake_futures(&self) {
        if self.woken.borrow().is_empty() {
            return;
        }
        let mut woken = std::mem::take(&mut *self.woken.borrow_mut());
        for w in woken.drain(..) {
            w.wake();
        }
        let mut slot = self.woken.borrow_mut();
        if slot.capacity() < woken.capacity() {
            *slot = woken;
        }
    }

    /// Whether no timer is armed and no source registered: only an
    /// [`Unparker`] fired by a tasklet or another thread can wake anyone.
    pub(crate) fn is_quiet(&self) -> bool {
        self.timers.borrow().is_empty() && self.io.borrow().is_empty()
    }

    /// Armed timers.
    pub(crate) fn timer_count(&self) -> usize {
        self.timers.borrow().len()
    }

    /// Gives this hub's thread a home CPU to spin on (see `affinity`).
    pub(crate) fn set_home(&self, home: Home) {
        self.spin.set_home(home);
    }

    /// Whether a cross-thread wake-up is queued and not yet drained.
    pub(crate) fn remote_pending(&self) -> bool {
        // Pairs with the Release in `Shared::notify` (see `poll_until`).
        std::sync::atomic::fence(Ordering::Acquire);
        self.shared.door.bell.is_pending(Ordering::Acquire)
    }

    fn fire_timers(&self, d: &Dispatcher, now: Instant) {
        loop {
            // Pop one at a time: a woken tasklet does not run until the next
            // pass, but releasing the borrow keeps `Drop` impls free to re-arm.
            let action = self.timers.borrow_mut().pop_expired(now);
            match action {
                None => break,
                Some(TimerAction::ParkDeadline(task)) => d.park_deadline(&task, now),
                Some(TimerAction::Interrupt(task, id)) => {
                    d.interrupt(&task, Interrupt::Timeout(id))
                }
                Some(TimerAction::InterruptUnwinding(task, id)) => d.interrupt_unwinding(&task, id),
            }
        }
    }

    fn drain_remote(&self, d: &Dispatcher) {
        // The mailbox is not behind `pending` (a full one counts as pending
        // by itself). Then `take` acquires the wakers' swaps, and with them
        // the items they queued (an item queued after it sets `pending`
        // again).
        let door = &self.shared.door;
        if let Some(w) = door.bell.take_mail(&door.mail) {
            self.spin.note_remote();
            d.unpark_slot(w.slot as usize, w.id, w.epoch, Wake::Unparked);
        }
        if !door.bell.take() {
            return;
        }
        self.spin.note_remote();
        while let Some(w) = self.shared.queue.pop() {
            d.unpark_slot(w.slot as usize, w.id, w.epoch, Wake::Unparked);
        }
        while let Some(reg) = self.shared.released.pop() {
            // Already out of the epoll set (`Shared::release`).
            self.unregister(reg, None);
        }
        let raw = self.shared.raw_jobs.take_all().map(Job::Raw);
        for job in raw.chain(std::iter::from_fn(|| self.shared.jobs.pop())) {
            // Jobs are the runtime's own code, but dropping what they carry
            // runs user destructors: never let a panic unwind the dispatcher.
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run())) {
                log::error!(
                    "tasklet: a cross-thread job panicked on dispatcher {}: {}",
                    self.shared.dispatcher_id,
                    crate::task::error::payload_str(p.as_ref()).unwrap_or("(non-string payload)")
                );
            }
        }
    }
}

/// How long the calling tasklet, about to park for a value another thread
/// sends, may spin for it first (see `IdleSpin::wait_budget`); `None`
/// outside a dispatcher, or when it should park at once.
#[inline]
pub(crate) fn wait_spin_budget() -> Option<idle::WaitSpin> {
    crate::dispatcher::context::try_with(|d| d.hub.spin.wait_budget(|| d.ready_is_empty()))
        .flatten()
}

/// Gives the calling worker's hub a home CPU (see `affinity`).
///
/// # Panics
/// Outside a dispatcher.
pub(crate) fn set_home_cpu(home: Home) {
    crate::dispatcher::context::with(|d| d.hub.set_home(home));
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shared.alive.store(false, Ordering::Release);
        while self.shared.queue.pop().is_some() {}
        while self.shared.released.pop().is_some() {}
        // Jobs that never ran: dropping them drops what they carry (a
        // `spawn_on` closure reports its tasklet killed).
        let raw = self.shared.raw_jobs.take_all().map(Job::Raw);
        for job in raw.chain(std::iter::from_fn(|| self.shared.jobs.pop())) {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(job))).is_err() {
                log::error!("tasklet: dropping a cross-thread job that never ran panicked");
            }
        }
    }
}
