//! The tasklet header: the type-independent part of a tasklet that the
//! dispatcher, the hub and every wait see — scheduling state, wait epoch,
//! pending interrupt, unwinding bookkeeping — the thread's running tasklet
//! ([`current`]), and the switch out of it ([`Header::suspend`]).
//! [`super::raw`] holds the allocation and its counted reference
//! ([`TaskRef`](super::TaskRef)).
//!
//! The running tasklet is published only for the exact span in which its
//! header is alive and pinned (see the `SAFETY:` comments), and never handed
//! out beyond a borrow.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::RawFd;
use std::panic::{self, Location};
use std::ptr;
use std::time::Instant;

use corosensei::{Coroutine, Yielder};

use super::id::TaskletId;
use crate::stack::StackInfo;
use crate::stack::TaskletStack;
use crate::timer::TimerKey;

thread_local! {
    /// The tasklet being resumed right now (null while the dispatcher itself
    /// runs). Const-initialised and without destructor, so the stack
    /// overflow handler can read it with a plain TLS load.
    static CURRENT: Cell<*const Header> = const { Cell::new(ptr::null()) };
    /// How many suspended tasklets of this thread may be unwinding (see
    /// `Header::settle`), plus one while the dispatcher itself runs inside
    /// an unwind (`dispatch` called from a destructor).
    static SUSPENDED_UNWINDING: Cell<usize> = const { Cell::new(0) };
}

/// How many suspended tasklets of this thread may be unwinding.
#[inline]
pub(crate) fn suspended_unwinding() -> usize {
    SUSPENDED_UNWINDING.with(Cell::get)
}

/// Adjusts [`suspended_unwinding`] by `delta`.
#[inline]
pub(crate) fn add_suspended_unwinding(delta: isize) {
    SUSPENDED_UNWINDING.with(|c| c.set(c.get().wrapping_add_signed(delta)));
}

/// Sets [`suspended_unwinding`] (a dispatcher starts or ends on this thread).
#[inline]
pub(crate) fn reset_suspended_unwinding(n: usize) {
    SUSPENDED_UNWINDING.with(|c| c.set(n));
}

/// The tasklet the dispatcher is resuming right now, if any.
#[inline]
pub(crate) fn current() -> Option<TaskPtr> {
    TaskPtr::new(CURRENT.with(Cell::get).cast_mut())
}

/// Runs `f` with the header of the tasklet running on this thread, if any.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&Header) -> R) -> Option<R> {
    let h = CURRENT.try_with(Cell::get).ok()?;
    if h.is_null() {
        return None;
    }
    // SAFETY: a non-null CURRENT is the live header of the tasklet running
    // on this thread (see `set_current`); the borrow ends with `f`, before
    // that tasklet could switch out, let alone finish.
    Some(f(unsafe { &*h }))
}

/// Publishes the tasklet about to be resumed (`None` once it switched back).
///
/// Only the dispatcher calls this, with a tasklet from its ready queue, and
/// clears it before that tasklet can finish, so the published header is
/// alive whenever `CURRENT` is non-null.
#[inline]
pub(crate) fn set_current(p: Option<TaskPtr>) {
    let raw = match p {
        Some(p) => p.as_ptr().cast_const(),
        None => ptr::null(),
    };
    CURRENT.with(|c| c.set(raw));
}

/// Runs `f` with the stack description, id and name of the tasklet
/// running on this thread, if any.
///
/// Async-signal-safe (one TLS load, plain field reads): the stack overflow
/// handler calls it. The header stays valid while the tasklet is current,
/// i.e. for the whole time its code can fault.
pub(crate) fn with_current_stack<R>(
    f: impl FnOnce(&StackInfo, u64, Option<&str>) -> R,
) -> Option<R> {
    let h = CURRENT.try_with(Cell::get).unwrap_or(ptr::null());
    if h.is_null() {
        return None;
    }
    // SAFETY: a non-null CURRENT is the live header of the tasklet running
    // on this thread (see `set_current`), and the borrow ends with `f`. The
    // fields read are set at spawn and never change.
    let h = unsafe { &*h };
    Some(f(&h.stack_info, h.id.as_u64(), h.name.as_deref()))
}

/// The raw yielder of a running coroutine, stored in its task header.
pub(crate) type RawYielder = *const Yielder<(), ()>;

/// A non-owning pointer to a live tasklet's header, as kept in the ready
/// queue and as the thread's current tasklet: a thin pointer, so the
/// switch path does no reference counting and no `dyn` layout arithmetic.
pub(crate) type TaskPtr = std::ptr::NonNull<Header>;

/// Installs (once per process) a panic hook that marks the tasklet running
/// on the panicking thread as unwinding, writes a line naming it to stderr
/// (`tasklet 'worker-3' (id 17) panicked at src/main.rs:9:5`), then calls
/// the hook that was installed before (so the usual report follows). A hook installed
/// later by the program replaces it; the runtime then falls back to
/// settling a tasklet's unwinding at its switches (see `Header::settle`).
pub(crate) fn install_panic_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    if std::thread::panicking() {
        // The hook cannot be changed from a panicking thread.
        return;
    }
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(h) = CURRENT.try_with(Cell::get) {
                if !h.is_null() {
                    // SAFETY: a non-null CURRENT is the live header of the
                    // tasklet running on this thread (see `set_current`),
                    // which is the one panicking; only `Cell`s and immutable
                    // fields are touched.
                    let h = unsafe { &*h };
                    h.unwinding.set(Unwinding::Yes);
                    let who = match &h.name {
                        Some(n) => format!("'{n}' (id {})", h.id),
                        None => format!("(id {})", h.id),
                    };
                    let at = match info.location() {
                        Some(l) => format!(" at {l}"),
                        None => String::new(),
                    };
                    use std::io::Write as _;
                    let _ = std::io::stderr()
                        .lock()
                        .write_all(format!("tasklet {who} panicked{at}:\n").as_bytes());
                }
            }
            previous(info);
        }));
    });
}

/// Why a [`park`](crate::hub::park) returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// An [`Unparker`](crate::hub::Unparker) or [`RemoteUnparker`](crate::hub::RemoteUnparker) for this wait fired (or the wake-up was spurious).
    Unparked,
    /// The deadline passed.
    TimedOut,
}

/// What a parked tasklet waits on, as recorded in its header by every park.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitOn {
    /// A bare [`crate::hub::park`] (no reason given).
    Parked,
    /// `sleep`/`sleep_until` (the deadline is recorded separately).
    Sleep,
    /// `JoinHandle::join` of this tasklet.
    Join(TaskletId),
    /// Readiness of a file descriptor.
    Io { fd: RawFd, write: bool },
    /// A `sync::channel` (`send` or receive) at this address.
    Channel { send: bool, addr: usize },
    /// Another `sync` primitive (its name) at this address.
    Sync(&'static str, usize),
    /// `unblock`: a call running on an offload thread.
    Offload,
    /// A reason given to [`crate::hub::park_as`].
    Other(&'static str),
}

/// The reference count and type-erased destructor every [`Header`] starts
/// with (see [`super::raw`]). Only `TypedRef::new` makes one, for the `T` it allocates.
pub(crate) struct RawHeader {
    pub(super) refs: Cell<usize>,
    /// Drops the `Task<T>` behind the header and frees its block.
    pub(super) drop_and_free: unsafe fn(TaskPtr),
}

/// Who to wake when a tasklet finishes: one wait of the joining tasklet,
/// by its registry address (see `Dispatcher::unpark_slot`), so the finished
/// tasklet neither counts a reference to its joiner nor can wake a later
/// wait of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Joiner {
    pub(crate) slot: u32,
    pub(crate) id: TaskletId,
    pub(crate) epoch: u32,
}

/// The coroutine type every tasklet runs in.
pub(crate) type Coro = Coroutine<(), (), (), TaskletStack>;

/// Scheduling state of a tasklet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// In the ready queue (or about to be put there).
    Ready,
    /// Being resumed by the dispatcher right now.
    Running,
    /// Parked: waiting for an unpark, a timer or an interrupt.
    Blocked,
    /// Its body returned; the coroutine and stack are gone.
    Done,
}

/// A request to unwind a tasklet at its next blocking point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// `JoinHandle::kill` or dispatcher shutdown: sticky, never cleared.
    Kill,
    /// The `timeout` scope with this id expired.
    Timeout(u64),
}

/// The panic payload used to unwind an interrupted tasklet.
///
/// Raised with `resume_unwind`, so the panic hook does not run and nothing is
/// printed. The second field is the tasklet it was raised in: while the
/// payload lives its unwind may still be in flight (see [`Header::in_flight`]).
pub(crate) struct Unwind(pub(crate) Interrupt, pub(crate) TaskletId);

impl Drop for Unwind {
    fn drop(&mut self) {
        // The payload is gone: its unwind ended (caught, not re-raised).
        // Whatever else the owner is doing now is unknown until its next
        // switch (a newer panic may be running this very drop).
        with_current(|h| {
            if h.id == self.1 {
                let n = h.in_flight.get().saturating_sub(1);
                h.in_flight.set(n);
                if n == 0 && h.unwinding.get() == Unwinding::Yes {
                    h.unwinding.set(Unwinding::Unknown);
                }
            }
        });
    }
}

/// What the runtime knows about whether a tasklet is unwinding (has a panic
/// in flight on its stack); see [`Header::settle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Unwinding {
    /// Known not to be unwinding.
    No,
    /// Known to be unwinding.
    Yes,
    /// Cannot be told: the tasklet ran code while another suspended tasklet
    /// of the thread was unwinding, so the thread's panic state could be
    /// either's. Interrupts are neither raised (that could abort) nor
    /// ignored: blocking calls fail instead (see [`check_interrupt`](crate::dispatcher::context::check_interrupt)).
    Unknown,
}

/// The calling tasklet is cancelled — killed, or its
/// [`timeout`](crate::timeout) expired — and cannot be unwound, so the
/// operation gives up without blocking. Returned by low-level blocking
/// operations (see [`hub::park`](crate::hub::park)) and by
/// [`hub::catch_interrupt`](crate::hub::catch_interrupt). (Not to be confused
/// with `std::io::ErrorKind::Interrupted`, a call to retry.)
///
/// A blocking operation returns it when the tasklet has an interrupt
/// pending but cannot be unwound by it:
///
/// - the dispatcher is shutting down (the first tasklet returned and every
///   other tasklet is being killed), the tasklet is already unwinding — a
///   destructor that blocks — and the exit's grace period (1 s) is over;
/// - a [`timeout`](crate::timeout) scope opened inside such a destructor
///   expired (the scope then returns `Err(Elapsed)`);
/// - the runtime cannot tell whether the tasklet is unwinding. That happens
///   only while another tasklet of the thread is parked in a destructor
///   mid-unwind *and* this tasklet ran code since it was last known not to
///   be unwinding: `std::thread::panicking()` is per thread, and a panic
///   started with `std::panic::resume_unwind` (or one that reaches no
///   runtime panic hook) and ended by `catch_unwind` are invisible, so
///   raising could abort the process. A timeout then still ends its scope
///   with `Err(Elapsed)` and a kill still ends the tasklet as killed; only
///   the code between the failed call and the scope's end runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("this tasklet is cancelled (killed or timed out) but cannot be unwound, so it cannot block")
    }
}

impl std::error::Error for Cancelled {}

impl From<Cancelled> for io::Error {
    fn from(e: Cancelled) -> io::Error {
        // Not ErrorKind::Interrupted: std's `write_all`/`read_exact` retry that kind.
        io::Error::other(e)
    }
}

/// The former name of [`Cancelled`], which read like
/// `std::io::ErrorKind::Interrupted` (a call to retry, where this one means
/// give up).
#[deprecated(note = "renamed to `Cancelled`")]
pub type Interrupted = Cancelled;

/// The non-generic part of a tasklet, seen by the dispatcher.
///
/// `repr(C)` with the fields the switch path touches first (`next` through
/// `id` fill the first 64 bytes, the coroutine the next 56), so a switch
/// touches two or three cache lines of the header, not four.
#[repr(C)]
pub(crate) struct Header {
    /// The next tasklet in the ready queue (see [`crate::dispatcher::ready::ReadyQueue`]).
    pub(crate) next: Cell<Option<TaskPtr>>,
    pub(crate) state: Cell<State>,
    /// An unpark arrived for the current epoch before the tasklet parked.
    pub(crate) notified: Cell<bool>,
    /// Why the last park ended.
    pub(crate) wake_reason: Cell<Wake>,
    /// Whether this tasklet is unwinding (see [`Header::settle`]).
    pub(crate) unwinding: Cell<Unwinding>,
    /// Wait epoch: bumped when a park ends, so stale unparkers are ignored.
    pub(crate) epoch: Cell<u32>,
    pub(crate) interrupt: Cell<Option<Interrupt>>,
    pub(crate) yielder: Cell<RawYielder>,
    pub(crate) id: TaskletId,
    /// Reference count and destructor of the allocation (see [`crate::task::raw`]).
    pub(crate) raw: RawHeader,
    pub(crate) coroutine: RefCell<Option<Coro>>,
    /// Index in the dispatcher's task registry.
    pub(crate) slot: Cell<usize>,
    // The small fields share one word (see `idle_header_fits_its_size_class`).
    /// How many interrupt payloads ([`Unwind`]) raised in this tasklet are
    /// alive: while one is, the tasklet unwinds from it (or holds a payload
    /// it caught).
    pub(crate) in_flight: Cell<u32>,
    /// How many times a kill was raised in this tasklet (saturating).
    pub(crate) kill_raises: Cell<u8>,
    /// An interrupt was refused (blocking calls failed instead of unwinding).
    pub(crate) refused: Cell<bool>,
    /// No `JoinHandle` is left: a panic is logged instead of returned.
    pub(crate) detached: Cell<bool>,
    /// The tasklet blocked in `join` on this one.
    pub(crate) joiner: Cell<Option<Joiner>>,
    pub(crate) name: Option<Box<str>>,
    pub(crate) stack_info: StackInfo,
    /// The interrupt raised last: raising the same one again means user
    /// code swallowed it, so the tasklet yields first (it must not spin).
    pub(crate) last_raised: Cell<Option<Interrupt>>,
    /// The expired `timeout` scope (outermost) that was opened while the
    /// tasklet was already unwinding: it cannot be raised through the
    /// destructor it runs in, so the scope's blocking calls fail instead.
    /// Kept apart from `interrupt`, whose kill is sticky. (Scope ids start
    /// at 1, so `None` costs no extra word.)
    pub(crate) unwind_timeout: Cell<Option<NonZeroU64>>,
    /// Its `tasklet_local!` values.
    pub(crate) locals: crate::task::locals::Locals,
    /// When its body ended, in this thread's finishing order (0: not yet):
    /// lets `iwait` yield tasklets in the order they finished.
    pub(crate) finish_seq: Cell<u64>,
    /// What the tasklet waits on while `Blocked` (set by every park; see
    /// [`crate::observe`]). Off the switch path: only blocking calls store it.
    pub(crate) wait_on: Cell<WaitOn>,
    /// The deadline of the current wait, if any.
    pub(crate) wait_deadline: Cell<Option<Instant>>,
    /// The tasklet's park timer, if one is armed, and when it fires: it may
    /// outlive the wait it was armed for (see `Dispatcher::arm_park_timer`).
    pub(crate) park_timer: Cell<Option<(TimerKey, Instant)>>,
    /// When the current wait began (the dispatcher's clock, updated at each hub poll).
    pub(crate) wait_since: Cell<Option<Instant>>,
    /// Where the tasklet was spawned.
    pub(crate) spawned_at: &'static Location<'static>,
    /// Its ThreadSanitizer fiber (TSan builds only; see `crate::tsan`).
    #[cfg(tasklet_tsan)]
    pub(crate) tsan_fiber: crate::tsan::Fiber,
}

/// A kill raised this many times (the tasklet caught it each time) marks a
/// tasklet that will not die: at `dispatch` exit it is abandoned.
pub(crate) const KILL_ROUNDS: u8 = 64;

impl Header {
    /// The tasklet's name for log lines: `'name' (id 7)` or `#7`.
    pub(crate) fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("'{n}' (id {})", self.id),
            None => format!("#{}", self.id),
        }
    }

    /// Settles whether this tasklet — the running one — is unwinding.
    ///
    /// `std::thread::panicking()` counts the panics in flight on the whole
    /// thread: while one tasklet is parked in a destructor during its
    /// unwind, every other tasklet of the thread sees it too. A tasklet's
    /// own panics only start and end while it runs, so the thread's state
    /// is the tasklet's own exactly when no suspended tasklet may be
    /// unwinding (the count [`suspended_unwinding`] keeps), and
    /// nothing panics at all when `panicking()` is false. Otherwise what was
    /// known stays known if the tasklet ran nothing since (`fresh`) or its
    /// unwind is one of the runtime's interrupts still in flight; anything
    /// else is [`Unwinding::Unknown`]. Every runtime raise and re-raise and
    /// the panic hook set [`Unwinding::Yes`] when they start an unwind.
    pub(crate) fn settle(&self, fresh: bool) -> Unwinding {
        let now = self.unwinding.get();
        let s = if !std::thread::panicking() {
            Unwinding::No
        } else if fresh && now != Unwinding::Unknown {
            now
        } else if suspended_unwinding() == 0 || (now == Unwinding::Yes && self.in_flight.get() > 0)
        {
            // The thread's panic is this tasklet's own, or this tasklet
            // unwinds from a runtime interrupt whose payload is alive.
            Unwinding::Yes
        } else {
            Unwinding::Unknown
        };
        self.unwinding.set(s);
        s
    }

    /// Switches from this tasklet — the running one — back to the
    /// dispatcher; returns when the dispatcher resumes it.
    #[inline]
    pub(crate) fn suspend(&self) {
        let yielder = self.yielder.get();
        debug_assert!(!yielder.is_null());
        // SAFETY: the header stores its yielder when its coroutine body
        // starts and the pointer targets that coroutine's own root frame,
        // which stays put until the body returns. This is called only on the
        // *current* tasklet's header (the dispatcher resumed it and it has
        // not returned), so we are executing on that coroutine's stack and
        // the yielder is alive and ours to suspend.
        unsafe { (*yielder).suspend(()) }
    }

    /// Bookkeeping before this (running) tasklet switches out: settles its
    /// unwinding state and counts it among the suspended tasklets that may
    /// be unwinding. Returns whether it was counted; pass that to
    /// [`Header::resumed`].
    #[inline(always)]
    pub(crate) fn suspending(&self) -> bool {
        if std::thread::panicking() {
            return self.suspending_panicking();
        }
        // Nothing panics on the thread. (A plain store: cheaper than a test.)
        self.unwinding.set(Unwinding::No);
        false
    }

    #[cold]
    #[inline(never)]
    fn suspending_panicking(&self) -> bool {
        let counted = self.settle(false) != Unwinding::No;
        if counted {
            add_suspended_unwinding(1);
        }
        counted
    }

    /// Undoes [`Header::suspending`]'s count once the tasklet runs again.
    #[inline(always)]
    pub(crate) fn resumed(&self, counted: bool) {
        if counted {
            add_suspended_unwinding(-1);
        }
    }
}

/// Re-raises a panic payload caught by the runtime (`unblock`, `Pool`,
/// `timeout`'s pass-through) in the running tasklet, which is unwinding
/// from then on.
pub(crate) fn reraise(payload: Box<dyn Any + Send + 'static>) -> ! {
    with_current(|h| h.unwinding.set(Unwinding::Yes));
    panic::resume_unwind(payload)
}

/// The next number in this thread's finishing order (see
/// `Header::finish_seq`).
pub(crate) fn next_finish_seq() -> u64 {
    thread_local! {
        static SEQ: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    SEQ.with(|s| {
        let n = s.get() + 1;
        s.set(n);
        n
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn switch_path_fields_share_the_first_cache_line() {
        for off in [
            offset_of!(Header, next),
            offset_of!(Header, state),
            offset_of!(Header, interrupt),
            offset_of!(Header, yielder),
            offset_of!(Header, id),
        ] {
            assert!(off < 64, "hot header field at offset {off}");
        }
        assert_eq!(offset_of!(Header, coroutine), 64);
        assert!(std::mem::size_of::<Option<Coro>>() + std::mem::size_of::<usize>() <= 64);
    }

    /// An idle tasklet's heap block is its header plus a result slot,
    /// served from 64-byte size classes (see `task::raw`): a `Task<()>` of
    /// 384 bytes or less takes a 384-byte block (400 bytes of `malloc`
    /// chunk), one byte more the next class (464). That is the difference
    /// between meeting and missing the ≤ 4.5 KiB RSS per idle tasklet of
    /// `benches/idle_rss.rs`. Print the layout with
    /// `cargo test -p tasklet-runtime --lib idle_header -- --nocapture`.
    #[test]
    fn idle_header_fits_its_size_class() {
        use crate::task::raw::Task;
        use std::mem::size_of;
        eprintln!(
            "Header {} B (stack_info {}, locals {}, wait_on {}, park_timer {}), Task<()> {} B",
            size_of::<Header>(),
            size_of::<StackInfo>(),
            size_of::<crate::task::locals::Locals>(),
            size_of::<WaitOn>(),
            size_of::<Option<(TimerKey, Instant)>>(),
            size_of::<Task<()>>()
        );
        // With the `sanitizer` feature (ASan builds only) corosensei's
        // coroutine also carries the parent stack's bounds for ASan.
        let limit = if cfg!(feature = "sanitizer") {
            448
        } else {
            384
        };
        assert!(
            size_of::<Task<()>>() <= limit,
            "Task<()> is {} B",
            size_of::<Task<()>>()
        );
    }
}
