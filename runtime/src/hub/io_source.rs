//! Sockets and other file descriptors on the hub: [`IoSource`] (register
//! once, edge-triggered; on `WouldBlock` park until readiness), its hub
//! entry, and waiting on several sources at once ([`wait_any`]).

use std::cell::Cell;
use std::fmt;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Weak};
use std::task::Waker as TaskWaker;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Token};

pub(super) use super::io_entry::IoEntry;
use super::{Hub, Shared, Wake};
use crate::dispatcher::context;
use crate::dispatcher::Dispatcher;
use crate::task::header::WaitOn;
use crate::task::id::TaskletId;

/// The readiness a source is registered for: both directions, and on Linux
/// priority data too, so that [`IoSource::has_priority_data`] can tell a
/// read cut short at an urgent mark (which raises no new event).
#[cfg(any(target_os = "linux", target_os = "android"))]
const INTEREST: Interest = Interest::READABLE
    .add(Interest::WRITABLE)
    .add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE);

impl Hub {
    fn register_fd(&self, fd: RawFd) -> io::Result<IoKey> {
        let gen = self.io_gen.get().wrapping_add(1) & 0x7fff_ffff;
        self.io_gen.set(gen);
        let slot = self.io.borrow_mut().insert(IoEntry::new(gen));
        let Ok(slot) = u32::try_from(slot) else {
            self.io.borrow_mut().remove(slot);
            return Err(io::Error::other("too many I/O sources on one dispatcher"));
        };
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
            self.io.borrow_mut().remove(slot as usize);
            return Err(e);
        }
        Ok(IoKey { slot, gen })
    }

    pub(super) fn unregister(&self, reg: IoKey, fd: Option<RawFd>) {
        let mut io = self.io.borrow_mut();
        if matches!(io.get(reg.slot as usize), Some(e) if e.gen == reg.gen) {
            if let Some(e) = io.remove(reg.slot as usize) {
                drop(io);
                let (tasklets, wakers) = e.into_waiters();
                for u in tasklets {
                    u.unpark();
                }
                // A future polling a source that goes away hears of it (its
                // next poll fails); dropped here, outside the slab's borrow.
                for w in wakers {
                    w.wake();
                }
            }
            if let Some(fd) = fd {
                let _ = self.poll.borrow().registry().deregister(&mut SourceFd(&fd));
            }
        }
    }
}

fn make_token(slot: u32, gen: u32) -> Token {
    Token(((gen as usize) << 32) | slot as usize)
}

pub(super) fn split_token(t: Token) -> (usize, u32) {
    (t.0 & 0xffff_ffff, (t.0 >> 32) as u32)
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
                .get_mut(reg.slot as usize)
                .filter(|e| e.gen == reg.gen)
                .ok_or_else(|| io::Error::other("I/O source was deregistered"))?;
            entry.push_waiter(dir, me.clone());
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

/// A source's entry in its hub: the slot of its [`IoEntry`] and the
/// generation that slot had when the source took it (the `mio::Token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IoKey {
    slot: u32,
    gen: u32,
}

/// Where a source is registered: the dispatcher and its entry there.
/// Sixteen bytes, and `Option<Registered>` too (the id is never 0), so a
/// socket's hot state fits one cache line (see netio's `Sock`).
#[derive(Clone, Copy, Debug)]
struct Registered {
    dispatcher: NonZeroU64,
    reg: IoKey,
}

/// The dispatcher's id as a [`Registered::dispatcher`]. Ids count up from 1,
/// so `MAX` (never an id either) only stands in for an impossible 0.
#[inline]
fn home_id(d: &Dispatcher) -> NonZeroU64 {
    NonZeroU64::new(d.id).unwrap_or(NonZeroU64::MAX)
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
    reg: Cell<Option<Registered>>,
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
            if context::try_with(home_id) != Some(r.dispatcher) {
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
            if home_id(d) == r.dispatcher {
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

    fn registration(&self, d: &Dispatcher) -> io::Result<IoKey> {
        if let Some(r) = self.reg.get() {
            if r.dispatcher == home_id(d) {
                return Ok(r.reg);
            }
            // Moved here from another dispatcher: leave that one first.
            self.deregister();
        }
        let reg = d.hub.register_fd(self.source.as_raw_fd())?;
        self.reg.set(Some(Registered {
            dispatcher: home_id(d),
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

    /// Whether this source, which a read found drained at hub I/O tick
    /// `tick` (see [`io_tick`]), can be waited on for reading without
    /// trying the read again: the hub has not collected events since
    /// (`io_tick() == Some(tick)`), the source's read side is not closed
    /// ([`is_read_closed`](Self::is_read_closed)) and its latest event
    /// reported no priority data ([`has_priority_data`](Self::has_priority_data)).
    ///
    /// The three checks in one look at the thread's dispatcher and the
    /// source's hub entry: the socket layer makes it before each read that
    /// follows a short one.
    #[inline]
    pub fn drained_since(&self, tick: u64) -> bool {
        if cfg!(not(any(target_os = "linux", target_os = "android"))) {
            return false; // see `has_priority_data`
        }
        context::try_with(|d| {
            if d.hub.io_tick.get() != tick {
                return false;
            }
            let Some(r) = self.reg.get() else {
                return true;
            };
            if home_id(d) != r.dispatcher {
                return true;
            }
            match d.hub.io.borrow().get(r.reg.slot as usize) {
                Some(e) if e.gen == r.reg.gen => !e.read_closed && !e.priority,
                _ => true,
            }
        })
        .unwrap_or(false)
    }

    /// `f` of this source's hub entry in the current dispatcher; `false` if
    /// it has none there.
    fn with_entry(&self, f: impl FnOnce(&IoEntry) -> bool) -> bool {
        let Some(r) = self.reg.get() else {
            return false;
        };
        context::try_with(|d| {
            home_id(d) == r.dispatcher
                && matches!(d.hub.io.borrow().get(r.reg.slot as usize), Some(e) if e.gen == r.reg.gen && f(e))
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
    /// an error if the tasklet is being unwound (see [`park`](super::park)).
    pub fn wait(&self, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        context::with(|d| {
            let reg = self.registration(d)?;
            let me = d.current_unparker();
            let id = me.tasklet_id();
            {
                let mut io = d.hub.io.borrow_mut();
                let entry = io
                    .get_mut(reg.slot as usize)
                    .filter(|e| e.gen == reg.gen)
                    .ok_or_else(|| io::Error::other("I/O source was deregistered"))?;
                entry.push_waiter(dir, me);
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
                .get_mut(reg.slot as usize)
                .filter(|e| e.gen == reg.gen)
                .ok_or_else(|| io::Error::other("I/O source was deregistered"))?;
            let slot = entry.waker_slot(dir);
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
        op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        self.adopt();
        self.do_io_with(op, |_| self.wait(dir, deadline))
    }

    /// The loop of [`do_io`](Self::do_io) with the waiting left to the
    /// caller: runs `op` until it does not fail with `WouldBlock`; after
    /// each `WouldBlock`, `on_would_block` gets the error and either waits
    /// for readiness (`Ok`: `op` is tried again) or gives up (`Err`, which
    /// is returned). The socket layer uses it to apply its own timeouts,
    /// non-blocking mode, and a `poll(2)` wait outside a dispatcher.
    ///
    /// Unlike `do_io` it does not [adopt](Self::adopt) the source: call
    /// that first (once per operation) if the source may have moved
    /// between threads.
    #[inline]
    pub fn do_io_with<R>(
        &self,
        mut op: impl FnMut(&S) -> io::Result<R>,
        mut on_would_block: impl FnMut(io::Error) -> io::Result<()>,
    ) -> io::Result<R> {
        loop {
            match op(&self.source) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => on_would_block(e)?,
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
            if home_id(d) == r.dispatcher {
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
    reg: IoKey,
    dir: Direction,
    id: TaskletId,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut io = self.d.hub.io.borrow_mut();
        if let Some(e) = io
            .get_mut(self.reg.slot as usize)
            .filter(|e| e.gen == self.reg.gen)
        {
            e.remove_waiter(self.dir, self.id);
        }
    }
}
