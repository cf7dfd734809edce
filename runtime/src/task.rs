//! Tasklets: their shared header, join handles, errors and the builder.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::panic::{self, AssertUnwindSafe, Location};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use corosensei::{Coroutine, Yielder};

use crate::context::{self, RawYielder, TaskPtr};
use crate::hub::{Unparker, Wake};
use crate::observe::WaitOn;
use crate::overflow::StackInfo;
pub(crate) use crate::raw::TaskRef;

mod join;
use crate::raw::{RawHeader, TypedRef};
use crate::stack::TaskletStack;
pub use join::{iwait, killall, wait_any, Iwait, JoinTimeoutError};

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
        context::with_current(|h| {
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
    /// ignored: blocking calls fail instead (see [`Header::check_interrupt`]).
    Unknown,
}

/// Returned by low-level blocking operations (see [`hub::park`](crate::hub::park))
/// when the calling tasklet has an interrupt pending but cannot be unwound
/// by it, so the operation must give up without blocking:
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
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("this tasklet is interrupted but cannot be unwound, so it cannot block")
    }
}

impl std::error::Error for Interrupted {}

impl From<Interrupted> for io::Error {
    fn from(e: Interrupted) -> io::Error {
        // Not ErrorKind::Interrupted: std's `write_all`/`read_exact` retry that kind.
        io::Error::other(e)
    }
}

/// The non-generic part of a tasklet, seen by the dispatcher.
///
/// `repr(C)` with the fields the switch path touches first (`next` through
/// `id` fill the first 64 bytes, the coroutine the next 56), so a switch
/// touches two or three cache lines of the header, not four.
#[repr(C)]
pub(crate) struct Header {
    /// The next tasklet in the ready queue (see [`context::ReadyQueue`]).
    pub(crate) next: Cell<Option<TaskPtr>>,
    pub(crate) state: Cell<State>,
    /// An unpark arrived for the current epoch before the tasklet parked.
    pub(crate) notified: Cell<bool>,
    /// Why the last park ended.
    pub(crate) wake: Cell<Wake>,
    /// Whether this tasklet is unwinding (see [`Header::settle`]).
    pub(crate) unwinding: Cell<Unwinding>,
    /// Wait epoch: bumped when a park ends, so stale unparkers are ignored.
    pub(crate) epoch: Cell<u32>,
    pub(crate) interrupt: Cell<Option<Interrupt>>,
    pub(crate) yielder: Cell<RawYielder>,
    pub(crate) id: TaskletId,
    /// Reference count and destructor of the allocation (see [`crate::raw`]).
    pub(crate) raw: RawHeader,
    pub(crate) coroutine: RefCell<Option<Coro>>,
    /// Index in the dispatcher's task registry.
    pub(crate) slot: Cell<usize>,
    /// No `JoinHandle` is left: a panic is logged instead of returned.
    pub(crate) detached: Cell<bool>,
    /// The tasklet blocked in `join` on this one.
    pub(crate) joiner: RefCell<Option<Unparker>>,
    pub(crate) name: Option<Box<str>>,
    pub(crate) stack_info: StackInfo,
    /// How many interrupt payloads ([`Unwind`]) raised in this tasklet are
    /// alive: while one is, the tasklet unwinds from it (or holds a payload
    /// it caught).
    pub(crate) in_flight: Cell<u32>,
    /// The interrupt raised last: raising the same one again means user
    /// code swallowed it, so the tasklet yields first (it must not spin).
    last_raised: Cell<Option<Interrupt>>,
    /// How many times a kill was raised in this tasklet (saturating).
    pub(crate) kill_raises: Cell<u8>,
    /// An interrupt was refused (blocking calls failed instead of unwinding).
    pub(crate) refused: Cell<bool>,
    /// The expired `timeout` scope (outermost) that was opened while the
    /// tasklet was already unwinding: it cannot be raised through the
    /// destructor it runs in, so the scope's blocking calls fail instead.
    /// Kept apart from `interrupt`, whose kill is sticky.
    pub(crate) unwind_timeout: Cell<Option<u64>>,
    /// Its `tasklet_local!` values.
    pub(crate) locals: crate::local::Locals,
    /// When its body ended, in this thread's finishing order (0: not yet):
    /// lets `iwait` yield tasklets in the order they finished.
    pub(crate) finish_seq: Cell<u64>,
    /// What the tasklet waits on while `Blocked` (set by every park; see
    /// [`crate::observe`]). Off the switch path: only blocking calls store it.
    pub(crate) wait_on: Cell<WaitOn>,
    /// The deadline of the current wait, if any.
    pub(crate) wait_deadline: Cell<Option<Instant>>,
    /// When the current wait began (the dispatcher's clock, updated at each hub poll).
    pub(crate) wait_since: Cell<Option<Instant>>,
    /// Where the tasklet was spawned.
    pub(crate) spawned_at: &'static Location<'static>,
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
    /// `Err(Interrupted)` and must give up without blocking. So does a
    /// tasklet whose unwinding cannot be told ([`Unwinding::Unknown`]).
    #[inline(always)]
    pub(crate) fn check_interrupt(&self, no_block: bool, fresh: bool) -> Result<(), Interrupted> {
        match self.interrupt.get() {
            None => Ok(()),
            Some(i) => self.interrupt_now(i, no_block, fresh),
        }
    }

    #[cold]
    #[inline(never)]
    fn interrupt_now(&self, i: Interrupt, no_block: bool, fresh: bool) -> Result<(), Interrupted> {
        match self.settle(fresh) {
            Unwinding::No => self.raise(i),
            Unwinding::Yes if !no_block && self.unwind_timeout.get().is_none() => Ok(()),
            Unwinding::Yes | Unwinding::Unknown => {
                self.refused.set(true);
                Err(Interrupted)
            }
        }
    }

    /// Raises interrupt `i` in this tasklet, known not to be unwinding.
    fn raise(&self, mut i: Interrupt) -> ! {
        if self.last_raised.get() == Some(i) {
            // Raised before and swallowed by a `catch_unwind`: let the
            // others run before raising it again, so a tasklet that keeps
            // catching it does not spin (and can be given up on at exit).
            context::with(|d| d.yield_raw(self));
            // A kill may have replaced the interrupt meanwhile. Nothing of
            // the tasklet's own ran: it is still known not to be unwinding.
            if let Some(now) = self.interrupt.get() {
                i = now;
            }
        }
        if i == Interrupt::Kill {
            let n = self.kill_raises.get().saturating_add(1);
            self.kill_raises.set(n);
            if n >= KILL_ROUNDS {
                context::with(|d| d.kill_caught_too_often());
            }
        }
        self.last_raised.set(Some(i));
        self.unwinding.set(Unwinding::Yes);
        self.in_flight.set(self.in_flight.get() + 1);
        panic::resume_unwind(Box::new(Unwind(i, self.id)))
    }

    /// Settles whether this tasklet — the running one — is unwinding.
    ///
    /// `std::thread::panicking()` counts the panics in flight on the whole
    /// thread: while one tasklet is parked in a destructor during its
    /// unwind, every other tasklet of the thread sees it too. A tasklet's
    /// own panics only start and end while it runs, so the thread's state
    /// is the tasklet's own exactly when no suspended tasklet may be
    /// unwinding (the count [`context::suspended_unwinding`] keeps), and
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
        } else if context::suspended_unwinding() == 0
            || (now == Unwinding::Yes && self.in_flight.get() > 0)
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
            context::add_suspended_unwinding(1);
        }
        counted
    }

    /// Undoes [`Header::suspending`]'s count once the tasklet runs again.
    #[inline(always)]
    pub(crate) fn resumed(&self, counted: bool) {
        if counted {
            context::add_suspended_unwinding(-1);
        }
    }
}

/// Re-raises a panic payload caught by the runtime (`unblock`, `Pool`,
/// `timeout`'s pass-through) in the running tasklet, which is unwinding
/// from then on.
pub(crate) fn reraise(payload: Box<dyn Any + Send + 'static>) -> ! {
    context::with_current(|h| h.unwinding.set(Unwinding::Yes));
    panic::resume_unwind(payload)
}

/// Where a spawned tasklet's result waits for its `JoinHandle`.
pub(crate) type ResultSlot<T> = RefCell<Option<Result<T, JoinError>>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A tasklet's identifier: unique in the process for its lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskletId(NonZeroU64);

impl TaskletId {
    /// The id as a number (for atomics).
    #[inline]
    pub(crate) fn to_u64(self) -> u64 {
        self.0.get()
    }

    /// The id [`to_u64`](Self::to_u64) gave (`None` for 0).
    #[inline]
    pub(crate) fn from_u64(n: u64) -> Option<TaskletId> {
        NonZeroU64::new(n).map(TaskletId)
    }

    /// A fresh id. Threads take ids from the global counter in blocks of
    /// 1024, so spawning does no atomic read-modify-write.
    #[inline]
    pub(crate) fn next() -> TaskletId {
        const BLOCK: u64 = 1024;
        thread_local! {
            static RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
        }
        let n = RANGE.with(|r| {
            let (next, end) = r.get();
            if next < end {
                r.set((next + 1, end));
                next
            } else {
                let start = NEXT_ID.fetch_add(BLOCK, Ordering::Relaxed);
                r.set((start + 1, start + BLOCK));
                start
            }
        });
        TaskletId(NonZeroU64::new(n).expect("tasklet id counter wrapped"))
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }
}

impl FromStr for TaskletId {
    type Err = std::num::ParseIntError;

    /// Parses a tasklet id as printed (`17`); zero is rejected.
    fn from_str(s: &str) -> Result<TaskletId, Self::Err> {
        // `NonZeroU64`'s parser rejects "0" with a `ParseIntError`.
        s.trim().parse::<NonZeroU64>().map(TaskletId)
    }
}

impl fmt::Display for TaskletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Creates the task allocation and its coroutine (not yet scheduled).
///
/// The outcome of `f` lands in the task's result slot.
pub(crate) fn new_task<T, F>(
    id: TaskletId,
    name: Option<String>,
    stack: TaskletStack,
    spawned_at: &'static Location<'static>,
    f: F,
) -> TypedRef<T>
where
    F: FnOnce() -> T,
{
    let name: Option<Box<str>> = name.map(String::into_boxed_str);
    let stack_info = StackInfo::new(&stack, id.as_u64(), name.as_deref());
    let task = TypedRef::<T>::new(|raw| Header {
        raw,
        next: Cell::new(None),
        id,
        name,
        state: Cell::new(State::Ready),
        interrupt: Cell::new(None),
        epoch: Cell::new(0),
        notified: Cell::new(false),
        wake: Cell::new(Wake::Unparked),
        coroutine: RefCell::new(None),
        yielder: Cell::new(std::ptr::null()),
        joiner: RefCell::new(None),
        slot: Cell::new(usize::MAX),
        detached: Cell::new(false),
        unwinding: Cell::new(Unwinding::No),
        stack_info,
        in_flight: Cell::new(0),
        last_raised: Cell::new(None),
        kill_raises: Cell::new(0),
        refused: Cell::new(false),
        unwind_timeout: Cell::new(None),
        locals: Default::default(),
        finish_seq: Cell::new(0),
        wait_on: Cell::new(WaitOn::Parked),
        wait_deadline: Cell::new(None),
        wait_since: Cell::new(None),
        spawned_at,
    });
    let inner = task.clone();
    let body = move |yielder: &Yielder<(), ()>, ()| {
        let header: &Header = &inner;
        header.yielder.set(yielder as *const Yielder<(), ()>);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            // Its tasklet-locals go when it ends, also by a kill or panic.
            let _locals = crate::local::DropLocals(&header.locals);
            // A tasklet killed before it first ran never calls `f`.
            let _ = header.check_interrupt(false, true);
            let value = f();
            // A kill that reached a call which could not unwind (see
            // `hub::catch_interrupt`) and is still pending ends the tasklet
            // as killed, not with the value it went on to return.
            if header.interrupt.get() == Some(Interrupt::Kill) {
                let _ = header.check_interrupt(false, false);
            }
            value
        }));
        let outcome = match outcome {
            // Killed, but the kill could not be raised (its blocking calls
            // failed instead): it still ends killed.
            Ok(_) if header.refused.get() && header.interrupt.get() == Some(Interrupt::Kill) => {
                Err(JoinError::killed())
            }
            Ok(v) => Ok(v),
            Err(p) => Err(JoinError::from_payload(p)),
        };
        header.finish_seq.set(join::next_finish_seq());
        if !header.detached.get() {
            *inner.result().borrow_mut() = Some(outcome);
        } else {
            if let Err(e) = &outcome {
                if e.is_panic() {
                    crate::observe::report(
                        crate::observe::Kind::UnjoinedPanic,
                        log::Level::Error,
                        format_args!(
                            "tasklet {} panicked and nobody joins it: {e}",
                            header.describe()
                        ),
                    );
                }
            }
            // Nobody can take the result: drop it here, on the tasklet's own
            // stack, so a destructor that panics (the value's, or a panic
            // payload's) is caught and logged instead of unwinding the
            // dispatcher when it releases the finished tasklet.
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(move || drop(outcome))) {
                log::error!(
                    "tasklet {}: dropping its unjoined result panicked: {}",
                    header.describe(),
                    payload_str(p.as_ref()).unwrap_or("(non-string payload)")
                );
                // The payload may panic on drop too; leak it rather than risk that.
                std::mem::forget(p);
            }
        }
        // `inner` is dropped here, breaking the task -> coroutine -> task cycle.
    };
    // SAFETY: `with_stack_unchecked` requires everything `body` borrows to
    // outlive every run of the coroutine. Spawned tasklets are `'static`.
    // For the main tasklet of `dispatch`, `f` may borrow from `dispatch`'s
    // caller: the coroutine only runs while the dispatcher resumes it, inside
    // `dispatch`. A coroutine that has not finished when `dispatch` returns
    // or unwinds is never resumed again: `abandon` forgets it, and one left
    // suspended when the dispatcher is dropped stays in its
    // task -> coroutine -> task cycle and is leaked, not dropped (dropping
    // would unwind it). Coroutines are owned by tasks that cannot leave the
    // dispatcher thread.
    let coroutine = unsafe { Coroutine::with_stack_unchecked(stack, body) };
    *task.coroutine.borrow_mut() = Some(coroutine);
    task
}

/// Why a tasklet did not return a value.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Panic(Box<dyn Any + Send + 'static>),
    Killed,
}

impl JoinError {
    pub(crate) fn killed() -> JoinError {
        JoinError { repr: Repr::Killed }
    }

    pub(crate) fn from_payload(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        match payload.downcast_ref::<Unwind>() {
            Some(Unwind(Interrupt::Kill, _)) => JoinError::killed(),
            _ => JoinError {
                repr: Repr::Panic(payload),
            },
        }
    }

    /// The tasklet panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// The tasklet was killed (`JoinHandle::kill`, or dispatcher shutdown).
    pub fn is_killed(&self) -> bool {
        matches!(self.repr, Repr::Killed)
    }

    /// The panic payload; panics if the tasklet was killed instead.
    ///
    /// Re-raise it in the caller with [`std::panic::resume_unwind`].
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self.try_into_panic() {
            Ok(p) => p,
            Err(e) => panic!("JoinError::into_panic called on {e}"),
        }
    }

    /// The panic payload, or `Err(self)` if the tasklet was killed.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panic(p) => Ok(p),
            Repr::Killed => Err(self),
        }
    }

    /// The panic message, when the payload is a string.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panic(p) => payload_str(p.as_ref()),
            Repr::Killed => None,
        }
    }
}

/// A panic payload's message, when it is a `&str` or `String`.
pub(crate) fn payload_str(p: &(dyn Any + Send)) -> Option<&str> {
    p.downcast_ref::<&'static str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Killed => f.write_str("tasklet was killed"),
            Repr::Panic(p) => match payload_str(p.as_ref()) {
                Some(m) => write!(f, "tasklet panicked: {m}"),
                None => f.write_str("tasklet panicked"),
            },
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Killed => f.write_str("JoinError::Killed"),
            Repr::Panic(p) => write!(f, "JoinError::Panic({:?})", payload_str(p.as_ref())),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for io::Error {
    fn from(e: JoinError) -> io::Error {
        io::Error::other(e.to_string())
    }
}

/// An owned permission to join a tasklet (wait for its result) or kill it.
///
/// Dropping the handle detaches the tasklet: it keeps running, and a panic in
/// it is then logged with `log::error!` instead of being returned.
///
/// `JoinHandle` is `!Send` by design: tasklets never leave their
/// dispatcher's thread, and the handle reads the tasklet's state without
/// synchronisation. For another thread (an admin or signal thread, another
/// `Runtime` worker, `async` code) turn it into a `Send`
/// [`RemoteJoinHandle`](crate::RemoteJoinHandle) with
/// [`into_remote`](JoinHandle::into_remote): join, kill, `is_finished`,
/// and `.await`. (Sending a handle to another thread is a compile error
/// that names the handle's `*const ()` marker.)
///
/// ```compile_fail
/// let h = tasklet::dispatch(|| tasklet::spawn(|| 1));
/// std::thread::spawn(move || drop(h)); // error: `*const ()` cannot be sent between threads
/// ```
pub struct JoinHandle<T> {
    /// Makes the handle `!Send` and `!Sync`; see the type's docs.
    _not_send: PhantomData<*const ()>,
    pub(crate) task: HandleRef<T>,
}

/// The task reference inside a [`JoinHandle`]. Its thread-safety is decided
/// by the handle's `_not_send` marker alone, so that the compiler's "cannot
/// be sent between threads" error names that marker rather than runtime
/// internals.
pub(crate) struct HandleRef<T>(pub(crate) TypedRef<T>);

// SAFETY: a `HandleRef` exists only inside a `JoinHandle`, whose
// `PhantomData<*const ()>` marker keeps it `!Send` and `!Sync`; so the task
// reference never actually crosses threads.
unsafe impl<T> Send for HandleRef<T> {}

// SAFETY: as for `Send`: the enclosing `JoinHandle` is `!Sync`.
unsafe impl<T> Sync for HandleRef<T> {}

impl<T> std::ops::Deref for HandleRef<T> {
    type Target = TypedRef<T>;
    fn deref(&self) -> &TypedRef<T> {
        &self.0
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: TypedRef<T>) -> Self {
        JoinHandle {
            _not_send: PhantomData,
            task: HandleRef(task),
        }
    }

    /// Waits for the tasklet to finish and returns its value.
    ///
    /// Parks the calling tasklet (never the thread). Returns `Err` if the
    /// tasklet panicked (with the payload) or was killed. A destructor of a
    /// killed tasklet may `join`; only where the caller may not park (late
    /// in `dispatch`'s exit, see [`hub::park`](crate::hub::park)) `join`
    /// cannot wait and returns `Err` (killed) at once.
    ///
    /// ```
    /// let v = tasklet::dispatch(|| tasklet::spawn(|| 6 * 7).join().unwrap());
    /// assert_eq!(v, 42);
    /// ```
    #[inline]
    #[track_caller]
    pub fn join(self) -> Result<T, JoinError> {
        /// Withdraws the joiner's registration however the wait ends (also
        /// when a kill or timeout unwinds it), so the target does not keep
        /// the joining tasklet alive or wake it later.
        struct Registered<'a>(&'a Header);
        impl Drop for Registered<'_> {
            fn drop(&mut self) {
                self.0.joiner.borrow_mut().take();
            }
        }
        loop {
            if let Some(r) = self.task.result().borrow_mut().take() {
                return r;
            }
            let Some(me) = context::try_with(|d| d.current_unparker()) else {
                context::outside_api("tasklet::JoinHandle::join")
            };
            *self.task.joiner.borrow_mut() = Some(me);
            let registered = Registered(&self.task);
            let target = self.task.id;
            let parked = context::with(|d| d.park_on(None, WaitOn::Join(target)));
            drop(registered);
            if parked.is_err() {
                return Err(JoinError::killed());
            }
        }
    }

    /// Whether the tasklet has finished (returned, panicked or been killed).
    pub fn is_finished(&self) -> bool {
        self.task.state.get() == State::Done
    }

    /// Kills the tasklet (gevent `Greenlet.kill`): it is woken at its blocking
    /// point and unwound, running its destructors; `join` then returns a
    /// killed `JoinError`. Does not wait; `join` afterwards to wait for the
    /// unwinding to finish. A tasklet that has not started yet never runs.
    /// A finished tasklet is left alone.
    ///
    /// ```
    /// use std::time::Duration;
    /// tasklet::dispatch(|| {
    ///     let h = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
    ///     tasklet::yield_now();
    ///     h.kill();
    ///     assert!(h.join().unwrap_err().is_killed());
    /// });
    /// ```
    pub fn kill(&self)
    where
        T: 'static,
    {
        if self.is_finished() {
            return;
        }
        context::try_with(|d| d.interrupt(self.task.erased(), Interrupt::Kill));
    }

    /// The tasklet's id.
    pub fn id(&self) -> TaskletId {
        self.task.id
    }

    /// The tasklet's name, if it was given one with [`Builder::name`].
    pub fn name(&self) -> Option<&str> {
        self.task.name.as_deref()
    }

    /// A handle describing the tasklet (id and name), as [`current`] returns.
    pub fn tasklet(&self) -> Tasklet
    where
        T: 'static,
    {
        Tasklet {
            task: self.task.erased().clone(),
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let header: &Header = &self.task;
        header.detached.set(true);
        if let Some(Err(e)) = &*self.task.result().borrow() {
            if e.is_panic() {
                crate::observe::report(
                    crate::observe::Kind::UnjoinedPanic,
                    log::Level::Error,
                    format_args!(
                        "tasklet {} panicked and its JoinHandle was dropped without join: {e}",
                        header.describe()
                    ),
                );
            }
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Describes a tasklet: its id and name. Returned by [`current`].
#[derive(Clone)]
pub struct Tasklet {
    task: TaskRef,
}

impl Tasklet {
    /// The tasklet's id.
    pub fn id(&self) -> TaskletId {
        self.task.id
    }

    /// The tasklet's name, if any.
    pub fn name(&self) -> Option<&str> {
        self.task.name.as_deref()
    }

    /// Kills the tasklet, like [`JoinHandle::kill`]: it is unwound at its
    /// blocking point. Does nothing to a finished tasklet, or outside the
    /// dispatcher the tasklet lives on.
    pub fn kill(&self) {
        if self.task.state.get() != State::Done {
            context::try_with(|d| d.interrupt(&self.task, Interrupt::Kill));
        }
    }
}

impl fmt::Debug for Tasklet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasklet")
            .field("id", &self.id())
            .field("name", &self.name())
            .finish()
    }
}

/// The tasklet that calls this.
///
/// ```
/// tasklet::dispatch(|| {
///     let h = tasklet::Builder::new()
///         .name("worker")
///         .spawn(|| tasklet::current().name().map(str::to_owned))
///         .unwrap();
///     assert_eq!(h.join().unwrap().as_deref(), Some("worker"));
/// });
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch).
#[track_caller]
pub fn current() -> Tasklet {
    match context::try_with(|d| d.current_task()) {
        Some(task) => Tasklet { task },
        None => context::outside_api("tasklet::current"),
    }
}

/// The live tasklet of the current dispatcher with this id, if any (for
/// operators' tools such as the console's `kill ID`; ids come from
/// [`dump`](crate::dump) and parse with `str::parse`).
///
/// ```
/// tasklet::dispatch(|| {
///     let h = tasklet::spawn(|| tasklet::sleep(std::time::Duration::from_secs(60)));
///     let t = tasklet::lookup(h.id()).unwrap();
///     t.kill();
///     assert!(h.join().unwrap_err().is_killed());
/// });
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch).
#[track_caller]
pub fn lookup(id: TaskletId) -> Option<Tasklet> {
    match context::try_with(|d| d.find(id)) {
        Some(t) => t.map(|task| Tasklet { task }),
        None => context::outside_api("tasklet::lookup"),
    }
}

/// Configures a tasklet before spawning it (std's `thread::Builder`).
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with the dispatcher's default stack size and no name.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the tasklet (shown in logs, panics, overflow reports and the watchdog).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Sets the tasklet's stack size in bytes (rounded up to whole pages and
    /// to at least 48 KiB, room for a panic with `RUST_BACKTRACE` set to
    /// reach `join`; only the pages it touches cost memory).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the tasklet on the current dispatcher.
    ///
    /// Fails with an `io::Error` when its stack cannot be allocated (out of
    /// memory or address space, or `vm.max_map_count` reached).
    ///
    /// ```
    /// tasklet::dispatch(|| {
    ///     let h = tasklet::Builder::new().name("b").stack_size(128 * 1024).spawn(|| 2).unwrap();
    ///     assert_eq!(h.join().unwrap(), 2);
    /// });
    /// ```
    ///
    /// # Panics
    /// Outside [`dispatch`](crate::dispatch).
    #[track_caller]
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let at = Location::caller();
        match context::try_with(|d| d.spawn(self.name, self.stack_size, at, f)) {
            Some(r) => r,
            None => context::outside_api("tasklet::Builder::spawn"),
        }
    }
}

/// Spawns a tasklet running `f` on the current dispatcher and returns its handle.
///
/// The new tasklet goes to the back of the ready queue; the caller keeps
/// running until it blocks or yields. `f` need not be `Send`: tasklets never
/// leave their dispatcher's thread.
///
/// ```
/// use std::time::Duration;
/// let total = tasklet::dispatch(|| {
///     let a = tasklet::spawn(|| { tasklet::sleep(Duration::from_millis(20)); 1 });
///     let b = tasklet::spawn(|| 2);
///     a.join().unwrap() + b.join().unwrap()
/// });
/// assert_eq!(total, 3);
/// ```
///
/// # Panics
/// Outside [`dispatch`](crate::dispatch), or if no stack can be allocated
/// (use [`Builder::spawn`] to get that as an error).
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let at = Location::caller();
    let r = match context::try_with(|d| d.spawn(None, None, at, f)) {
        Some(r) => r,
        None => context::outside_api("tasklet::spawn"),
    };
    match r {
        Ok(h) => h,
        Err(e) => panic!("tasklet::spawn: cannot create a tasklet: {e}"),
    }
}

/// Waits for every handle in turn and returns their results in order
/// (gevent `joinall`).
pub fn joinall<T, I>(handles: I) -> Vec<Result<T, JoinError>>
where
    I: IntoIterator<Item = JoinHandle<T>>,
{
    handles.into_iter().map(JoinHandle::join).collect()
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
}
