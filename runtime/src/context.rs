//! The places the runtime reaches through raw pointers: the thread's current
//! dispatcher, the running tasklet, the running tasklet's corosensei
//! yielder, and the ready queue (an intrusive list through task headers).
//! [`crate::raw`] holds the other half: task allocations and their counts.
//!
//! Every pointer is published only for the exact span in which its target
//! is alive and pinned (see the `SAFETY:` comments), and none is ever
//! handed out beyond a borrow, so the rest of the runtime is safe code.

use std::cell::Cell;
use std::ptr;

use corosensei::Yielder;

use crate::dispatcher::Dispatcher;
use crate::overflow::StackInfo;
use crate::task::{Header, TaskRef};

thread_local! {
    static DISPATCHER: Cell<*const Dispatcher> = const { Cell::new(ptr::null()) };
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
                    h.unwinding.set(crate::task::Unwinding::Yes);
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
        SUSPENDED_UNWINDING.with(|c| c.set(base));
        Enter { _d: d }
    }
}

impl Drop for Enter<'_> {
    fn drop(&mut self) {
        DISPATCHER.with(|c| c.set(ptr::null()));
        // Tasklets abandoned at exit are never resumed to undo their count.
        SUSPENDED_UNWINDING.with(|c| c.set(0));
    }
}

/// The raw yielder of a running coroutine, stored in its task header.
pub(crate) type RawYielder = *const Yielder<(), ()>;

/// Switches from the running tasklet back to the dispatcher.
///
/// `yielder` must be the yielder of the coroutine that is running right now.
#[inline]
pub(crate) fn suspend(yielder: RawYielder) {
    debug_assert!(!yielder.is_null());
    // SAFETY: the task header stores its yielder when its coroutine body starts
    // and the pointer targets that coroutine's own root frame, which stays put
    // until the body returns. Callers pass the *current* tasklet's yielder
    // (the dispatcher resumed it and it has not returned), so we are executing
    // on that coroutine's stack and the yielder is alive and ours to suspend.
    unsafe { (*yielder).suspend(()) }
}

/// A non-owning pointer to a live tasklet's header, as kept in the ready
/// queue and as the thread's current tasklet: a thin pointer, so the
/// switch path does no reference counting and no `dyn` layout arithmetic.
pub(crate) type TaskPtr = std::ptr::NonNull<Header>;

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

/// A counted reference to the tasklet being resumed right now, if any.
#[inline]
pub(crate) fn current_task() -> Option<TaskRef> {
    // SAFETY: a published current tasklet is alive (see `set_current`).
    current().map(|p| unsafe { TaskRef::clone_from_ptr(p) })
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

/// The stack description of the tasklet running on this thread, or null.
///
/// Async-signal-safe (one TLS load and an address computation): the stack
/// overflow handler calls it. The pointer stays valid while the tasklet is
/// current, i.e. for the whole time its code can fault.
pub(crate) fn current_stack_info() -> *const StackInfo {
    let h = CURRENT.try_with(Cell::get).unwrap_or(ptr::null());
    if h.is_null() {
        return ptr::null();
    }
    // SAFETY: a non-null CURRENT points to a live header (see `set_current`);
    // `addr_of!` computes the field address without creating a reference.
    unsafe { ptr::addr_of!((*h).stack_info) }
}

/// Borrows the tasklet header behind `p` for as long as `d` is borrowed.
///
/// A module invariant of the dispatcher, not checked here: `p` must be
/// (a) in `d`'s ready queue or `d`'s current tasklet, (b) the pointer of a
/// `TaskRef` the caller holds, or (c) just looked up in `d`'s registry and
/// used before any code runs that could finish that tasklet. Only
/// `dispatcher.rs` calls it, in those three ways.
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

/// The dispatcher's FIFO of ready tasklets: an intrusive singly linked list
/// through the headers' `next` fields, so pushing and popping touch no
/// buffer and never allocate.
///
/// Invariant (upheld by the dispatcher, see `header_at`): every queued
/// tasklet is registered, `Ready`, and queued at most once, so its `next`
/// link belongs to this queue alone.
pub(crate) struct ReadyQueue {
    head: Cell<Option<TaskPtr>>,
    tail: Cell<Option<TaskPtr>>,
    /// Tasklets ever queued: each is resumed once per queueing (the queue
    /// holds only `Ready` tasklets), so this counts switches for
    /// `tasklet::stats` at the cost of one `add` to memory per push.
    pushed: Cell<u64>,
    /// `pushed` when the queue was last taken.
    taken: Cell<u64>,
    /// The longest queue ever taken.
    high_water: Cell<u64>,
}

/// A batch of ready tasklets detached from a [`ReadyQueue`] with
/// [`ReadyQueue::take`]; tasklets readied meanwhile go to the queue.
pub(crate) struct Batch {
    head: Option<TaskPtr>,
}

/// Borrows a queued tasklet's header.
#[inline]
fn queued<'a>(p: TaskPtr) -> &'a Header {
    // SAFETY: queued tasklets are alive (registered) until they leave the
    // queue or batch and run (ReadyQueue invariant); the returned borrow is
    // used only for the `next` link inside the methods below, while that holds.
    unsafe { p.as_ref() }
}

impl ReadyQueue {
    /// An empty queue.
    pub(crate) fn new() -> ReadyQueue {
        ReadyQueue {
            head: Cell::new(None),
            tail: Cell::new(None),
            pushed: Cell::new(0),
            taken: Cell::new(0),
            high_water: Cell::new(0),
        }
    }

    /// Appends a tasklet (which must not be queued already).
    #[inline]
    pub(crate) fn push_back(&self, p: TaskPtr) {
        queued(p).next.set(None);
        match self.tail.get() {
            Some(t) => queued(t).next.set(Some(p)),
            None => self.head.set(Some(p)),
        }
        self.tail.set(Some(p));
        self.pushed.set(self.pushed.get() + 1);
    }

    /// Tasklets queued so far (= switches into tasklets, but for those still queued).
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed.get()
    }

    /// The longest the queue has been when a pass took it.
    pub(crate) fn high_water(&self) -> u64 {
        self.high_water.get()
    }

    /// Detaches every queued tasklet, in order, leaving the queue empty.
    #[inline]
    pub(crate) fn take(&self) -> Batch {
        let pushed = self.pushed.get();
        let len = pushed - self.taken.replace(pushed);
        if len > self.high_water.get() {
            self.high_water.set(len);
        }
        self.tail.set(None);
        Batch {
            head: self.head.take(),
        }
    }

    /// Whether the queue is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.get().is_none()
    }

    /// Forgets every queued tasklet.
    pub(crate) fn clear(&self) {
        self.head.set(None);
        self.tail.set(None);
    }
}

impl Iterator for Batch {
    type Item = TaskPtr;

    /// Takes the next tasklet. Its link is read before it is handed out, so
    /// the tasklet may be queued again (into the queue) right away.
    #[inline]
    fn next(&mut self) -> Option<TaskPtr> {
        let p = self.head?;
        self.head = queued(p).next.get();
        Some(p)
    }
}
