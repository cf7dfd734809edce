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
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::Waker as TaskWaker;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::context;
use crate::dispatcher::Dispatcher;
use crate::observe::WaitOn;
use crate::slab::Slab;
use crate::task::{Interrupt, TaskRef, TaskletId};
use crate::timer::TimerQueue;

pub use crate::task::Interrupted;

const WAKER_TOKEN: Token = Token(usize::MAX);

/// Why a [`park`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// An [`Unparker`] or [`RemoteUnparker`] for this wait fired (or the wake-up was spurious).
    Unparked,
    /// The deadline passed.
    TimedOut,
}

/// What a timer does when it fires.
pub(crate) enum TimerAction {
    /// End a park (`epoch` is the wait it belongs to).
    Wake(TaskRef, u32),
    /// Interrupt the tasklet for the `timeout` scope with this id.
    Interrupt(TaskRef, u64),
    /// End the `timeout` scope with this id, opened while its tasklet was
    /// already unwinding (see `Header::unwind_timeout`).
    InterruptUnwinding(TaskRef, u64),
}

/// A wake-up sent from another thread.
struct RemoteWake {
    slot: u32,
    id: TaskletId,
    epoch: u32,
}

/// Work another thread hands to a dispatcher: run on the dispatcher's
/// thread, in dispatcher context (no tasklet is current), by the hub's next
/// poll. Used by `spawn_on` and cross-thread kills (see [`HubRef::run`]).
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The part of a hub other threads can reach.
pub(crate) struct Shared {
    dispatcher_id: u64,
    queue: SegQueue<RemoteWake>,
    /// Registrations of sources that moved to another thread, for the
    /// dispatcher to free (see [`Shared::release`]).
    released: SegQueue<Reg>,
    /// Jobs from other threads (see [`Job`]).
    jobs: SegQueue<Job>,
    pending: AtomicBool,
    alive: AtomicBool,
    waker: Waker,
    /// A handle on the same epoll instance (a `dup` of its fd), so that
    /// another thread can remove a source that moved away from this
    /// dispatcher while the fd is still known to be that source's.
    registry: Registry,
}

impl Shared {
    fn push(&self, w: RemoteWake) {
        if !self.alive.load(Ordering::Acquire) {
            return;
        }
        self.queue.push(w);
        self.notify();
    }

    /// Forgets a source that was registered with this dispatcher and is now
    /// used (or dropped) on another thread: removes `fd` from this epoll set
    /// at once (so its events stop waking this dispatcher) and queues the
    /// hub entry for this dispatcher to free. `fd` must still be the
    /// source's (not closed), which the calling `IoSource` guarantees.
    fn release(&self, reg: Reg, fd: RawFd) {
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
        self.jobs.push(job);
        self.notify();
        Ok(())
    }

    /// Makes the dispatcher drain its queues (one `Waker` call while a
    /// drain is pending).
    fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!(
                    "tasklet: cannot wake dispatcher {}: {e}",
                    self.dispatcher_id
                );
            }
        }
    }
}

/// Per-registration state: the tasklets waiting for readiness.
struct IoEntry {
    gen: u32,
    readers: Vec<Unparker>,
    writers: Vec<Unparker>,
    /// The hub has seen the read side close (peer FIN, hang-up); sticky.
    read_closed: bool,
    /// The latest event collected for this source reported priority data
    /// (`EPOLLPRI`: a TCP urgent mark, an `AF_UNIX` out-of-band byte).
    priority: bool,
    /// Futures' wakers for the next readable / writable event (see
    /// [`IoSource::register_waker`]).
    read_waker: Option<TaskWaker>,
    write_waker: Option<TaskWaker>,
}

/// The readiness a source is registered for: both directions, and on Linux
/// priority data too, so that [`IoSource::has_priority_data`] can tell a
/// read cut short at an urgent mark (which raises no new event).
#[cfg(any(target_os = "linux", target_os = "android"))]
const INTEREST: Interest = Interest::READABLE
    .add(Interest::WRITABLE)
    .add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE);

/// The event loop of one dispatcher.
pub(crate) struct Hub {
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    io: RefCell<Slab<IoEntry>>,
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
}

impl Hub {
    pub(crate) fn new(dispatcher_id: u64) -> io::Result<Hub> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        let registry = poll.registry().try_clone()?;
        Ok(Hub {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(1024)),
            io: RefCell::new(Slab::new()),
            io_gen: Cell::new(0),
            io_tick: Cell::new(0),
            timers: RefCell::new(TimerQueue::new()),
            shared: Arc::new(Shared {
                dispatcher_id,
                queue: SegQueue::new(),
                released: SegQueue::new(),
                jobs: SegQueue::new(),
                pending: AtomicBool::new(false),
                alive: AtomicBool::new(true),
                waker,
                registry,
            }),
            key_waits: Cell::new(0),
            woken: RefCell::new(Vec::new()),
        })
    }

    /// Whether nothing could produce an event: no armed timer, no registered
    /// source and no pending cross-thread wake-up. Lets a pass of ready
    /// tasklets skip the poll entirely.
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        self.timers.borrow().is_empty()
            && self.io.borrow().is_empty()
            && !self.shared.pending.load(Ordering::Relaxed)
    }

    /// Runs expired timers, cross-thread wake-ups and I/O events.
    ///
    /// With `may_block`, waits in `epoll_wait` when no tasklet is ready, up to
    /// the next timer deadline or `limit`. Returns `Err(())` if it would wait
    /// forever with nothing able to wake it (a deadlock).
    pub(crate) fn poll_until(
        &self,
        d: &Dispatcher,
        may_block: bool,
        limit: Option<Instant>,
    ) -> Result<(), ()> {
        self.drain_remote(d);
        // One clock read per poll: it dates waits for `dump` (see `park_on`).
        let n = Instant::now();
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
            match self.timers.borrow_mut().next_deadline() {
                Some(dl) => Some(dl.saturating_duration_since(now.unwrap_or_else(Instant::now))),
                None => {
                    if !io_live && self.key_waits.get() == 0 && Arc::strong_count(&self.shared) == 1
                    {
                        // The last `RemoteUnparker` may have queued its
                        // wake-up after `drain_remote` above and then been
                        // dropped: its `Release` decrement pairs with this
                        // fence, so that wake-up is visible here.
                        std::sync::atomic::fence(Ordering::Acquire);
                        if !self.shared.pending.load(Ordering::Acquire) {
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
            (None, Some(l)) => Some(l.saturating_duration_since(Instant::now())),
            (Some(t), Some(l)) => Some(t.min(l.saturating_duration_since(Instant::now()))),
        };
        self.poll_io(d, timeout);
        if block {
            self.drain_remote(d);
            if !self.timers.borrow().is_empty() {
                self.fire_timers(d, Instant::now());
            }
        }
        Ok(())
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
        let mut io = self.io.borrow_mut();
        let mut n = 0u64;
        for ev in events.iter() {
            n += 1;
            let token = ev.token();
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
                for u in entry.readers.drain(..) {
                    u.unpark_in(d);
                }
                if let Some(w) = entry.read_waker.take() {
                    self.woken.borrow_mut().push(w);
                }
            }
            if ev.is_writable() || ev.is_write_closed() || err {
                for u in entry.writers.drain(..) {
                    u.unpark_in(d);
                }
                if let Some(w) = entry.write_waker.take() {
                    self.woken.borrow_mut().push(w);
                }
            }
        }
        d.obs.events.set(d.obs.events.get() + n);
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

    /// Whether a cross-thread wake-up is queued and not yet drained.
    pub(crate) fn remote_pending(&self) -> bool {
        // Pairs with the Release in `Shared::notify` (see `poll_until`).
        std::sync::atomic::fence(Ordering::Acquire);
        self.shared.pending.load(Ordering::Acquire)
    }

    fn fire_timers(&self, d: &Dispatcher, now: Instant) {
        loop {
            // Pop one at a time: a woken tasklet does not run until the next
            // pass, but releasing the borrow keeps `Drop` impls free to re-arm.
            let action = self.timers.borrow_mut().pop_expired(now);
            match action {
                None => break,
                Some(TimerAction::Wake(task, epoch)) => {
                    d.wake(&task, epoch, Wake::TimedOut);
                }
                Some(TimerAction::Interrupt(task, id)) => {
                    d.interrupt(&task, Interrupt::Timeout(id))
                }
                Some(TimerAction::InterruptUnwinding(task, id)) => d.interrupt_unwinding(&task, id),
            }
        }
    }

    fn drain_remote(&self, d: &Dispatcher) {
        if !self.shared.pending.load(Ordering::Acquire) {
            return;
        }
        self.shared.pending.store(false, Ordering::SeqCst);
        while let Some(w) = self.shared.queue.pop() {
            d.wake_slot(w.slot as usize, w.id, w.epoch, Wake::Unparked);
        }
        while let Some(reg) = self.shared.released.pop() {
            // Already out of the epoll set (`Shared::release`).
            self.unregister(reg, None);
        }
        while let Some(job) = self.shared.jobs.pop() {
            // Jobs are the runtime's own code, but dropping what they carry
            // runs user destructors: never let a panic unwind the dispatcher.
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                log::error!(
                    "tasklet: a cross-thread job panicked on dispatcher {}: {}",
                    self.shared.dispatcher_id,
                    crate::task::payload_str(p.as_ref()).unwrap_or("(non-string payload)")
                );
            }
        }
    }

    fn register_fd(&self, fd: RawFd) -> io::Result<Reg> {
        let gen = self.io_gen.get().wrapping_add(1) & 0x7fff_ffff;
        self.io_gen.set(gen);
        let slot = self.io.borrow_mut().insert(IoEntry {
            gen,
            readers: Vec::new(),
            writers: Vec::new(),
            read_closed: false,
            priority: false,
            read_waker: None,
            write_waker: None,
        });
        let token = make_token(slot, gen);
        let interest = INTEREST;
        let poll = self.poll.borrow();
        let mut r = poll
            .registry()
            .register(&mut SourceFd(&fd), token, interest);
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) {
            // The fd is still in this epoll set from an earlier stay in this
            // dispatcher (the source moved to another one and came back):
            // point the existing registration at the new slot.
            r = poll
                .registry()
                .reregister(&mut SourceFd(&fd), token, interest);
        }
        drop(poll);
        if let Err(e) = r {
            self.io.borrow_mut().remove(slot);
            return Err(e);
        }
        Ok(Reg { slot, gen })
    }

    fn unregister(&self, reg: Reg, fd: Option<RawFd>) {
        let mut io = self.io.borrow_mut();
        if matches!(io.get(reg.slot), Some(e) if e.gen == reg.gen) {
            if let Some(e) = io.remove(reg.slot) {
                drop(io);
                for u in e.readers.into_iter().chain(e.writers) {
                    u.unpark();
                }
                // A future polling a source that goes away hears of it (its
                // next poll fails); dropped here, outside the slab's borrow.
                for w in e.read_waker.into_iter().chain(e.write_waker) {
                    w.wake();
                }
            }
            if let Some(fd) = fd {
                let _ = self.poll.borrow().registry().deregister(&mut SourceFd(&fd));
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shared.alive.store(false, Ordering::Release);
        while self.shared.queue.pop().is_some() {}
        while self.shared.released.pop().is_some() {}
        // Jobs that never ran: dropping them drops what they carry (a
        // `spawn_on` closure reports its tasklet killed).
        while let Some(job) = self.shared.jobs.pop() {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(job))).is_err() {
                log::error!("tasklet: dropping a cross-thread job that never ran panicked");
            }
        }
    }
}

fn make_token(slot: usize, gen: u32) -> Token {
    Token(((gen as usize) << 32) | (slot & 0xffff_ffff))
}

fn split_token(t: Token) -> (usize, u32) {
    (t.0 & 0xffff_ffff, (t.0 >> 32) as u32)
}

/// Wakes one tasklet from one particular [`park`], on the same thread.
///
/// Bound to the wait that was current when it was made: once that park has
/// returned, `unpark` is a no-op, so a stale unparker can never disturb a
/// later wait. Unparking before the tasklet has parked makes its next park
/// return at once (like `std::thread::park`). Not `Send`: use
/// [`Unparker::remote`] to wake a tasklet from another thread.
#[derive(Clone)]
pub struct Unparker {
    task: TaskRef,
    epoch: u32,
}

impl Unparker {
    pub(crate) fn new(task: TaskRef, epoch: u32) -> Unparker {
        Unparker { task, epoch }
    }

    /// Wakes the tasklet if it is still in the wait this unparker belongs to.
    ///
    /// Returns whether the wake-up was delivered (false if that wait is over
    /// or the tasklet finished). The tasklet runs later, when the caller
    /// blocks or yields.
    pub fn unpark(&self) -> bool {
        context::try_with(|d| self.unpark_in(d)).unwrap_or(false)
    }

    pub(crate) fn unpark_in(&self, d: &Dispatcher) -> bool {
        d.wake(&self.task, self.epoch, Wake::Unparked)
    }

    /// Whether both unparkers wake the same tasklet.
    pub fn same_tasklet(&self, other: &Unparker) -> bool {
        TaskRef::ptr_eq(&self.task, &other.task)
    }

    /// The id of the tasklet this unparker wakes.
    pub fn tasklet_id(&self) -> TaskletId {
        self.task.id
    }

    /// A `Send + Sync` unparker for the same wait, usable from any thread.
    ///
    /// # Panics
    /// Outside the tasklet's dispatcher thread.
    pub fn remote(&self) -> RemoteUnparker {
        context::with(|d| RemoteUnparker {
            shared: d.hub.shared.clone(),
            slot: self.task.slot.get() as u32,
            id: self.task.id,
            epoch: self.epoch,
        })
    }
}

impl fmt::Debug for Unparker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unparker")
            .field("tasklet", &self.task.id)
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// Wakes one tasklet from one particular [`park`], from any thread.
///
/// From the tasklet's own dispatcher thread it wakes directly; from another
/// thread it queues the wake-up and wakes the dispatcher's `epoll_wait`
/// through its `mio::Waker` (one syscall, coalesced while wake-ups are
/// pending). A dispatcher that has exited ignores it. While any
/// `RemoteUnparker` exists, the dispatcher never reports a deadlock.
#[derive(Clone)]
pub struct RemoteUnparker {
    shared: Arc<Shared>,
    slot: u32,
    id: TaskletId,
    epoch: u32,
}

impl RemoteUnparker {
    /// Wakes the tasklet if it is still in that wait.
    pub fn unpark(&self) {
        let local = context::try_with(|d| {
            if d.id == self.shared.dispatcher_id {
                d.wake_slot(self.slot as usize, self.id, self.epoch, Wake::Unparked);
                true
            } else {
                false
            }
        });
        if local != Some(true) {
            self.shared.push(RemoteWake {
                slot: self.slot,
                id: self.id,
                epoch: self.epoch,
            });
        }
    }

    /// The id of the tasklet this unparker wakes.
    pub fn tasklet_id(&self) -> TaskletId {
        self.id
    }
}

impl fmt::Debug for RemoteUnparker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteUnparker")
            .field("dispatcher", &self.shared.dispatcher_id)
            .field("tasklet", &self.id)
            .finish()
    }
}

/// A `Send` wake-up key for one wait of one tasklet: plain integers, no
/// reference count (cheaper to make and drop than a [`RemoteUnparker`]).
///
/// Used by the `sync` primitives for their waiter queues. On the tasklet's
/// own dispatcher thread [`WaitKey::wake_local`] wakes it directly; from any
/// other thread the waker needs the dispatcher's [`HubRef`] (which the
/// primitive caches once per dispatcher) to build a [`RemoteUnparker`].
/// While a key is registered (between [`WaitKey::register`] and the drop of
/// its [`KeyWait`]) the dispatcher counts it as a possible cross-thread
/// wake-up and does not report a deadlock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaitKey {
    dispatcher: u64,
    slot: u32,
    id: TaskletId,
    epoch: u32,
}

/// Ends a [`WaitKey`] registration when dropped (on the waiting tasklet's
/// own thread: it is not `Send`).
pub(crate) struct KeyWait {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for KeyWait {
    #[inline]
    fn drop(&mut self) {
        context::try_with(|d| d.hub.key_waits.set(d.hub.key_waits.get() - 1));
    }
}

impl WaitKey {
    /// A key for the calling tasklet's current wait, and the guard that keeps
    /// the dispatcher from reporting a deadlock while it is registered.
    /// `None` outside a dispatcher.
    #[inline]
    pub(crate) fn register() -> Option<(WaitKey, KeyWait)> {
        context::try_with(|d| {
            let h = d.current_header();
            d.hub.key_waits.set(d.hub.key_waits.get() + 1);
            (
                WaitKey {
                    dispatcher: d.id,
                    slot: h.slot.get() as u32,
                    id: h.id,
                    epoch: h.epoch.get(),
                },
                KeyWait {
                    _not_send: std::marker::PhantomData,
                },
            )
        })
    }

    /// The dispatcher the waiting tasklet runs on.
    #[inline]
    pub(crate) fn dispatcher(&self) -> u64 {
        self.dispatcher
    }

    /// Whether the calling thread runs this key's dispatcher (so
    /// [`wake_local`](WaitKey::wake_local) delivers it).
    #[inline]
    pub(crate) fn is_local(&self) -> bool {
        context::try_with(|d| d.id == self.dispatcher).unwrap_or(false)
    }

    /// Wakes the tasklet if it is still in that wait. Only on the key's own
    /// dispatcher thread (see [`is_local`](WaitKey::is_local)); elsewhere it
    /// does nothing and returns `false`.
    #[inline]
    pub(crate) fn wake_local(&self) -> bool {
        context::try_with(|d| {
            if d.id != self.dispatcher {
                return false;
            }
            d.wake_slot(self.slot as usize, self.id, self.epoch, Wake::Unparked);
            true
        })
        .unwrap_or(false)
    }

    /// A [`RemoteUnparker`] for this key, if `hub` is its dispatcher's and
    /// that dispatcher still runs.
    pub(crate) fn remote(&self, hub: &HubRef) -> Option<RemoteUnparker> {
        if hub.dispatcher != self.dispatcher {
            return None;
        }
        hub.shared.upgrade().map(|shared| RemoteUnparker {
            shared,
            slot: self.slot,
            id: self.id,
            epoch: self.epoch,
        })
    }
}

/// A weak, `Send + Sync` reference to a dispatcher's cross-thread wake-up
/// queue: does not keep it alive and does not count against deadlock
/// detection. See [`WaitKey`].
#[derive(Clone)]
pub(crate) struct HubRef {
    dispatcher: u64,
    shared: Weak<Shared>,
}

impl HubRef {
    /// The calling thread's dispatcher (`None` outside one).
    pub(crate) fn current() -> Option<HubRef> {
        context::try_with(|d| HubRef {
            dispatcher: d.id,
            shared: Arc::downgrade(&d.hub.shared),
        })
    }

    /// The dispatcher's id.
    #[inline]
    pub(crate) fn dispatcher(&self) -> u64 {
        self.dispatcher
    }

    /// Whether that dispatcher has exited.
    pub(crate) fn is_gone(&self) -> bool {
        self.shared.strong_count() == 0
    }

    /// Wakes the tasklet at registry `slot` with id `id` if `epoch` is its
    /// current wait, from any thread: directly on the dispatcher's own
    /// thread, through its cross-thread queue elsewhere. Nothing happens if
    /// the dispatcher has exited.
    #[inline]
    pub(crate) fn wake_task(&self, slot: u32, id: TaskletId, epoch: u32) {
        let local = context::try_with(|d| {
            d.id == self.dispatcher && {
                d.wake_slot(slot as usize, id, epoch, Wake::Unparked);
                true
            }
        });
        if local != Some(true) {
            if let Some(shared) = self.shared.upgrade() {
                shared.push(RemoteWake { slot, id, epoch });
            }
        }
    }
    /// Whether the calling thread runs this dispatcher.
    pub(crate) fn is_current(&self) -> bool {
        context::try_with(|d| d.id == self.dispatcher).unwrap_or(false)
    }

    /// Runs `job` on that dispatcher's thread in dispatcher context: at once
    /// if that is the calling thread, else at its hub's next poll (its
    /// `epoll_wait` is woken). Hands the job back if the dispatcher has
    /// exited (or exits before running it: then it is dropped there).
    pub(crate) fn run(&self, job: Job) -> Result<(), Job> {
        if self.is_current() {
            job();
            return Ok(());
        }
        match self.shared.upgrade() {
            Some(s) => s.push_job(job),
            None => Err(job),
        }
    }
}

/// Where a tasklet lives in its dispatcher's registry: enough to kill it
/// from another thread (`Send`, no reference count).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskAddr {
    pub(crate) slot: u32,
    pub(crate) id: TaskletId,
}

impl TaskAddr {
    /// The running tasklet's address (`None` outside a tasklet).
    pub(crate) fn current() -> Option<TaskAddr> {
        context::try_with(|d| {
            context::current().map(|_| {
                let h = d.current_header();
                TaskAddr {
                    slot: h.slot.get() as u32,
                    id: h.id,
                }
            })
        })
        .flatten()
    }

    /// Kills the tasklet at this address on `hub`'s dispatcher, from any
    /// thread (nothing happens if it has finished or the dispatcher exited).
    pub(crate) fn kill(self, hub: &HubRef) {
        let _ = hub.run(Box::new(move || {
            context::with(|d| d.kill_slot(self.slot as usize, self.id))
        }));
    }
}

/// An unparker for the calling tasklet's next (or current) [`park`].
///
/// # Panics
/// Outside a tasklet.
#[track_caller]
pub fn current_unparker() -> Unparker {
    match context::try_with(|d| d.current_unparker()) {
        Some(u) => u,
        None => context::outside_api("tasklet::hub::current_unparker"),
    }
}

/// Suspends the calling tasklet until an unparker for this wait fires or
/// `deadline` passes.
///
/// If the tasklet is killed or its [`timeout`](crate::timeout) expires while
/// parked (or before), `park` unwinds it instead of returning — put cleanup in
/// destructors (guards). A tasklet that is *already* unwinding (a destructor
/// that blocks, say to flush a socket) is not unwound again: it parks
/// normally, like gevent's `finally` blocks. Such a park returns
/// `Err(Interrupted)` instead (after one yield when it has not parked yet):
/// give up without blocking. That happens late in the dispatcher's shutdown
/// (`dispatch`'s first tasklet has returned and the rest are being killed),
/// when a `timeout` opened inside the destructor expires, and for an
/// interrupt that arrives while the runtime cannot tell whether the tasklet
/// is unwinding (see `Interrupted`).
#[inline]
#[track_caller]
pub fn park(deadline: Option<Instant>) -> Result<Wake, Interrupted> {
    match context::try_with(
        #[inline(always)]
        |d| d.park(deadline),
    ) {
        Some(r) => r,
        None => context::outside_api("tasklet::hub::park"),
    }
}

/// [`park`], recording `what` the tasklet waits on (a short phrase such as
/// `"server stop"`), which [`crate::dump`] and deadlock reports show.
///
/// ```
/// tasklet::dispatch(|| {
///     let h = tasklet::spawn(|| { let _ = tasklet::hub::park_as(None, "a demo"); });
///     tasklet::yield_now();
///     let dump = tasklet::dump();
///     assert!(dump.to_string().contains("a demo"));
///     h.kill();
/// });
/// ```
#[inline]
#[track_caller]
pub fn park_as(deadline: Option<Instant>, what: &'static str) -> Result<Wake, Interrupted> {
    match context::try_with(|d| d.park_on(deadline, WaitOn::Other(what))) {
        Some(r) => r,
        None => context::outside_api("tasklet::hub::park_as"),
    }
}

/// Whether the calling thread is running a dispatcher (inside `dispatch`).
pub fn in_dispatcher() -> bool {
    context::is_set()
}

/// Whether a tasklet is running on the calling thread right now.
///
/// `false` on threads without a dispatcher and also in the dispatcher's own
/// code between tasklets (the hub's `epoll_wait`, timers): one thread-local
/// load. The `hook` feature uses it to leave the runtime's own system calls
/// alone.
#[inline(always)]
pub fn in_tasklet() -> bool {
    context::current().is_some()
}

/// Runs `f` in the calling tasklet; if a kill or an expired
/// [`timeout`](crate::timeout) interrupts it (at a blocking call inside `f`),
/// stops the unwinding at this point and returns `Err(Interrupted)` instead.
///
/// The interrupt stays pending: the tasklet's next blocking call outside
/// `catch_interrupt` raises it again, a `timeout` scope whose deadline
/// passed still returns `Err(Elapsed)`, and a killed tasklet that returns
/// is reported as killed by `join`. For code that must not unwind — an
/// `extern "C"` function, such as the `hook` feature's interposed libc
/// calls — and that reports the interruption as an error instead. Other
/// panics pass through unchanged. Outside a tasklet it just runs `f`.
///
/// If the interrupt was already pending when `catch_interrupt` was called
/// (the tasklet went on making blocking calls after one reported it), the
/// tasklet yields before `Err` returns, so a loop that retries failed calls
/// cannot hold the dispatcher.
pub fn catch_interrupt<R>(f: impl FnOnce() -> R) -> Result<R, Interrupted> {
    let Some(task) = context::current_task() else {
        return Ok(f());
    };
    let unwinding = task.unwinding.get();
    let pending = task.interrupt.get().is_some();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Ok(r),
        Err(payload) if payload.is::<crate::task::Unwind>() => {
            // The runtime's own unwind stops here: back to the state at entry.
            task.unwinding.set(unwinding);
            drop(payload);
            if pending {
                context::try_with(|d| d.yield_unchecked());
            }
            Err(Interrupted)
        }
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// Parks the calling tasklet until any of `sources` reports readiness in
/// its direction (or a spurious wake-up), like [`IoSource::wait`] for
/// several sources at once (`poll(2)` over many descriptors).
///
/// Same contract as [`IoSource::wait`]: check the sources first (the
/// readiness is edge-triggered); fails with `ErrorKind::TimedOut` when
/// `deadline` passes and unwinds on kill or timeout.
pub fn wait_any<S: AsRawFd>(
    sources: &[(&IoSource<S>, Direction)],
    deadline: Option<Instant>,
) -> io::Result<()> {
    context::with(|d| {
        let me = d.current_unparker();
        let id = me.tasklet_id();
        let mut guards = Vec::with_capacity(sources.len());
        for &(src, dir) in sources {
            let reg = src.registration(d)?;
            let mut io = d.hub.io.borrow_mut();
            let entry = io
                .get_mut(reg.slot)
                .filter(|e| e.gen == reg.gen)
                .ok_or_else(|| io::Error::other("I/O source was deregistered"))?;
            match dir {
                Direction::Read => entry.readers.push(me.clone()),
                Direction::Write => entry.writers.push(me.clone()),
            }
            drop(io);
            guards.push(WaiterGuard { d, reg, dir, id });
        }
        match d.park(deadline)? {
            Wake::Unparked => Ok(()),
            Wake::TimedOut => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "operation timed out",
            )),
        }
    })
}

/// The hub's I/O poll counter on this thread (`None` outside a dispatcher).
///
/// It changes every time the hub collects readiness events (each
/// `epoll_wait`). Readiness events for a source nobody waits on are dropped,
/// which is why an operation is normally retried before waiting. But if a
/// tasklet saw a source drained (say a short read from a TCP socket) and the
/// counter has not changed since, no event for that source can have been
/// dropped in between, so the tasklet may go straight to [`IoSource::wait`]:
/// the next edge wakes it. The socket layer uses this to save the `EAGAIN`
/// read per message that a retry would cost.
#[inline]
pub fn io_tick() -> Option<u64> {
    context::try_with(|d| d.hub.io_tick.get())
}

/// How many [`IoSource`]s are registered with this thread's hub (`None`
/// outside a dispatcher).
///
/// A diagnostic, like [`io_tick`]: it counts sources that have waited on
/// this dispatcher and have since been neither dropped, unwrapped, nor used
/// on another thread (see [`IoSource::adopt`]).
///
/// ```
/// tasklet::dispatch(|| assert_eq!(tasklet::hub::registered_sources(), Some(0)));
/// assert_eq!(tasklet::hub::registered_sources(), None);
/// ```
pub fn registered_sources() -> Option<usize> {
    context::try_with(|d| d.hub.io.borrow().len())
}

/// Which readiness a tasklet waits for on an [`IoSource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Readable (or read-closed / error).
    Read,
    /// Writable (or write-closed / error).
    Write,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reg {
    slot: usize,
    gen: u32,
}

#[derive(Clone, Copy, Debug)]
struct Registration {
    dispatcher: u64,
    reg: Reg,
}

/// A file descriptor owned by a value `S` (a socket, pipe…), made cooperative.
///
/// Operations are tried first; only on `WouldBlock` does the calling tasklet
/// park until the hub reports readiness. The descriptor is registered with
/// the current dispatcher's `epoll` once, lazily on the first wait
/// (edge-triggered, readable and writable), and is forgotten by the hub when
/// the `IoSource` is dropped. A source sent to another thread leaves its
/// former dispatcher at its first operation there ([`adopt`](Self::adopt)),
/// or when dropped. `S` should be in non-blocking mode.
///
/// Several tasklets may wait on one source at once (say one reading and one
/// writing through `&IoSource`); every waiter for a direction is woken on its
/// event and retries.
pub struct IoSource<S: AsRawFd> {
    source: S,
    reg: Cell<Option<Registration>>,
    /// The cross-thread half of the hub `reg` is in (set with `reg`), to
    /// deregister from another thread when the source moves.
    home: Cell<Option<Weak<Shared>>>,
}

impl<S: AsRawFd> IoSource<S> {
    /// Wraps `source`. Registration with the hub happens on the first wait.
    pub fn new(source: S) -> IoSource<S> {
        IoSource {
            source,
            reg: Cell::new(None),
            home: Cell::new(None),
        }
    }

    /// The wrapped value.
    pub fn get_ref(&self) -> &S {
        &self.source
    }

    /// The wrapped value, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Unwraps the value, deregistering it from the hub.
    pub fn into_inner(self) -> S {
        let me = std::mem::ManuallyDrop::new(self);
        me.deregister();
        // SAFETY: `me` is never used or dropped again after these reads, so
        // each field is moved out exactly once (`reg` is `Copy`; `home` was
        // emptied by `deregister` and is dropped here).
        unsafe {
            drop(std::ptr::read(&me.home));
            std::ptr::read(&me.source)
        }
    }

    /// Makes the calling thread this source's home: if it is registered
    /// with a dispatcher other than the calling thread's (it waited there,
    /// then moved to this thread), deregisters it there, so that dispatcher
    /// neither keeps its entry nor is woken by its events. In a dispatcher,
    /// the next wait registers it with this one.
    ///
    /// Cheap when nothing moved (a thread-local read). [`do_io`](Self::do_io)
    /// and the socket layer call it before each operation; a source is also
    /// deregistered wherever it is dropped or unwrapped.
    #[inline]
    pub fn adopt(&self) {
        if let Some(r) = self.reg.get() {
            if context::try_with(|d| d.id) != Some(r.dispatcher) {
                self.deregister();
            }
        }
    }

    /// Removes the source from the hub it is registered with, if any (the
    /// calling thread's, or another dispatcher's, see [`adopt`](Self::adopt)).
    /// A later wait registers it again.
    #[cold]
    pub fn deregister(&self) {
        let Some(r) = self.reg.take() else {
            return;
        };
        let home = self.home.take();
        let fd = self.source.as_raw_fd();
        let local = context::try_with(|d| {
            if d.id == r.dispatcher {
                d.hub.unregister(r.reg, Some(fd));
                true
            } else {
                false
            }
        });
        if local != Some(true) {
            if let Some(shared) = home.and_then(|h| h.upgrade()) {
                shared.release(r.reg, fd);
            }
        }
    }

    fn registration(&self, d: &Dispatcher) -> io::Result<Reg> {
        if let Some(r) = self.reg.get() {
            if r.dispatcher == d.id {
                return Ok(r.reg);
            }
            // Moved here from another dispatcher: leave that one first.
            self.deregister();
        }
        let reg = d.hub.register_fd(self.source.as_raw_fd())?;
        self.reg.set(Some(Registration {
            dispatcher: d.id,
            reg,
        }));
        self.home.set(Some(Arc::downgrade(&d.hub.shared)));
        Ok(reg)
    }

    /// Whether the hub has reported that the read side of this source is
    /// closed (peer FIN or hang-up). Sticky: edge-triggered epoll reports it
    /// once, and a read may still find data before the end-of-file. Used
    /// together with [`io_tick`] to decide that a drained source can be
    /// waited on without retrying the operation first.
    pub fn is_read_closed(&self) -> bool {
        self.with_entry(|e| e.read_closed)
    }

    /// Whether the latest readiness event the hub collected for this source
    /// reported priority data (`EPOLLPRI`): TCP urgent data (`MSG_OOB`) not
    /// yet read past, or an `AF_UNIX` out-of-band byte. A stream read stops
    /// at the urgent mark with more data queued and no new event to follow,
    /// so a short read does not prove such a source drained. Always `true`
    /// where the hub cannot watch for priority data (not Linux): callers
    /// then assume the worst.
    pub fn has_priority_data(&self) -> bool {
        if cfg!(not(any(target_os = "linux", target_os = "android"))) {
            return true;
        }
        self.with_entry(|e| e.priority)
    }

    /// `f` of this source's hub entry in the current dispatcher; `false` if
    /// it has none there.
    fn with_entry(&self, f: impl FnOnce(&IoEntry) -> bool) -> bool {
        let Some(r) = self.reg.get() else {
            return false;
        };
        context::try_with(|d| {
            d.id == r.dispatcher
                && matches!(d.hub.io.borrow().get(r.reg.slot), Some(e) if e.gen == r.reg.gen && f(e))
        })
        .unwrap_or(false)
    }

    /// Parks until the hub reports `dir` readiness (or a spurious wake-up).
    ///
    /// Readiness is edge-triggered: call this only after the operation
    /// failed with `WouldBlock` (as [`do_io`](Self::do_io) does). A source
    /// that is already ready produces no new event, so waiting on it without
    /// trying first sleeps until the deadline.
    ///
    /// Fails with `ErrorKind::TimedOut` when `deadline` passes first, and with
    /// an error if the tasklet is being unwound (see [`park`]).
    pub fn wait(&self, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        context::with(|d| {
            let reg = self.registration(d)?;
            let me = d.current_unparker();
            let id = me.tasklet_id();
            {
                let mut io = d.hub.io.borrow_mut();
                let entry = io
                    .get_mut(reg.slot)
                    .filter(|e| e.gen == reg.gen)
                    .ok_or_else(|| io::Error::other("I/O source was deregistered"))?;
                match dir {
                    Direction::Read => entry.readers.push(me),
                    Direction::Write => entry.writers.push(me),
                }
            }
            let _guard = WaiterGuard { d, reg, dir, id };
            let why = WaitOn::Io {
                fd: self.source.as_raw_fd(),
                write: dir == Direction::Write,
            };
            match d.park_on(deadline, why)? {
                Wake::Unparked => Ok(()),
                Wake::TimedOut => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "operation timed out",
                )),
            }
        })
    }

    /// Arranges for `waker` to be woken at the next `dir` readiness event of
    /// this source: the non-parking counterpart of [`wait`](Self::wait), for
    /// `Future`/`AsyncRead`-style code polled on this dispatcher (say under
    /// [`block_on`](crate::block_on)).
    ///
    /// Call it after the operation failed with `WouldBlock` (edge-triggered,
    /// as for `wait`), then return `Poll::Pending`. One waker per direction
    /// is kept: a later registration replaces the earlier one (a waker that
    /// [`will_wake`](TaskWaker::will_wake) the same task is not cloned
    /// again). The waker also fires when the source is dropped.
    ///
    /// # Errors
    /// Outside a dispatcher (there is no hub to watch the source), or if the
    /// source cannot be registered with `epoll`.
    pub fn register_waker(&self, dir: Direction, waker: &TaskWaker) -> io::Result<()> {
        let registered = context::try_with(|d| {
            let reg = self.registration(d)?;
            let mut io = d.hub.io.borrow_mut();
            let entry = io
                .get_mut(reg.slot)
                .filter(|e| e.gen == reg.gen)
                .ok_or_else(|| io::Error::other("I/O source was deregistered"))?;
            let slot = match dir {
                Direction::Read => &mut entry.read_waker,
                Direction::Write => &mut entry.write_waker,
            };
            match slot {
                Some(w) if w.will_wake(waker) => {}
                _ => {
                    // The replaced waker is dropped after the borrow ends.
                    let old = slot.replace(waker.clone());
                    drop(io);
                    drop(old);
                }
            }
            Ok(())
        });
        registered.unwrap_or_else(|| {
            Err(io::Error::other(
                "tasklet: an I/O source can only be polled as a future inside \
                 tasklet::dispatch (no dispatcher runs on this thread)",
            ))
        })
    }

    /// Runs `op` until it does not fail with `WouldBlock`, parking for `dir`
    /// readiness in between. Any other result (including other errors) is returned.
    pub fn do_io<R>(
        &self,
        dir: Direction,
        deadline: Option<Instant>,
        mut op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        self.adopt();
        loop {
            match op(&self.source) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(dir, deadline)?,
                r => return r,
            }
        }
    }
}

impl<S: AsRawFd> Drop for IoSource<S> {
    fn drop(&mut self) {
        let Some(r) = self.reg.get() else {
            return;
        };
        // On the home dispatcher, closing the fd removes it from epoll; only
        // the slot is freed here (no syscall on the common path).
        let local = context::try_with(|d| {
            if d.id == r.dispatcher {
                d.hub.unregister(r.reg, None);
                true
            } else {
                false
            }
        });
        if local != Some(true) {
            // Dropped on another thread: the fd is still open here (the
            // source is dropped after this), so it can be removed by number.
            self.deregister();
        }
    }
}

impl<S: AsRawFd + fmt::Debug> fmt::Debug for IoSource<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoSource")
            .field("source", &self.source)
            .finish()
    }
}

impl<S: AsRawFd> AsRawFd for IoSource<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.source.as_raw_fd()
    }
}

/// Removes a waiter from its registration when its wait ends in any way.
struct WaiterGuard<'a> {
    d: &'a Dispatcher,
    reg: Reg,
    dir: Direction,
    id: TaskletId,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut io = self.d.hub.io.borrow_mut();
        if let Some(e) = io.get_mut(self.reg.slot).filter(|e| e.gen == self.reg.gen) {
            let list = match self.dir {
                Direction::Read => &mut e.readers,
                Direction::Write => &mut e.writers,
            };
            list.retain(|u| u.tasklet_id() != self.id);
        }
    }
}
