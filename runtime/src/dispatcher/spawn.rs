//! A tasklet's birth: its allocation, its coroutine and the root frame its
//! body runs in (which catches its panic, drops its tasklet-locals and
//! leaves its outcome for the `JoinHandle`).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe, Location};

use corosensei::{Coroutine, Yielder};

use super::context::check_interrupt;
use crate::stack::{StackInfo, TaskletStack};
use crate::task::error::{payload_str, JoinError};
use crate::task::header::{next_finish_seq, Header, Interrupt, State, Unwinding, WaitOn, Wake};
use crate::task::id::TaskletId;
use crate::task::raw::TypedRef;

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
    let stack_info = StackInfo::new(&stack);
    let task = TypedRef::<T>::new(|raw| Header {
        raw,
        next: Cell::new(None),
        id,
        name,
        state: Cell::new(State::Ready),
        interrupt: Cell::new(None),
        epoch: Cell::new(0),
        notified: Cell::new(false),
        wake_reason: Cell::new(Wake::Unparked),
        coroutine: RefCell::new(None),
        yielder: Cell::new(std::ptr::null()),
        joiner: Cell::new(None),
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
        park_timer: Cell::new(None),
        wait_since: Cell::new(None),
        spawned_at,
        #[cfg(tasklet_tsan)]
        tsan_fiber: crate::tsan::Fiber::new(),
    });
    let inner = task.clone();
    let body = move |yielder: &Yielder<(), ()>, ()| {
        let header: &Header = &inner;
        header.yielder.set(yielder as *const Yielder<(), ()>);
        let outcome = if header.interrupt.get() == Some(Interrupt::Kill) {
            drop_unstarted(header, f)
        } else {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                let _ = check_interrupt(header, false, true);
                let value = f();
                // A kill that reached a call which could not unwind (see
                // `hub::catch_interrupt`) and is still pending ends the tasklet
                // as killed, not with the value it went on to return.
                if header.interrupt.get() == Some(Interrupt::Kill) {
                    let _ = check_interrupt(header, false, false);
                }
                value
            }));
            // Its tasklet-locals go when it ends — returned, panicked or
            // killed — once its unwind is over: a local whose destructor
            // panics is then a panic of the tasklet (if it ended well), not
            // a panic during unwinding, which would abort the process.
            let outcome = match header.locals.destroy() {
                Some(p) if outcome.is_ok() => Err(p),
                _ => outcome,
            };
            match outcome {
                // Killed, but the kill could not be raised (its blocking calls
                // failed instead): it still ends killed.
                Ok(_)
                    if header.refused.get() && header.interrupt.get() == Some(Interrupt::Kill) =>
                {
                    Err(JoinError::killed())
                }
                Ok(v) => Ok(v),
                Err(p) => Err(JoinError::from_payload(p)),
            }
        };
        header.finish_seq.set(next_finish_seq());
        if !header.detached.get() {
            *inner.result().borrow_mut() = Some(outcome);
        } else {
            if let Err(e) = &outcome {
                if e.is_panic() {
                    crate::diag::report(
                        crate::diag::Kind::UnjoinedPanic,
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
                // The payload may panic on drop too: only the payload of that
                // second panic is leaked rather than risk a third.
                if let Err(p) = panic::catch_unwind(AssertUnwindSafe(move || drop(p))) {
                    std::mem::forget(p);
                }
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

/// Ends a tasklet killed before it first ran: `f` is never called, and is
/// dropped here — what it captured is destroyed exactly as an unwind from
/// the start of the tasklet would, but without one (a kill is mostly its
/// DWARF unwind). It runs on the tasklet's own stack, as the running
/// tasklet, so a destructor may block as in any killed tasklet; the kill is
/// set aside meanwhile (it would otherwise be raised at the first blocking
/// call), so only a new kill unwinds such a destructor. A destructor that
/// panics ends the tasklet with that panic, as with any tasklet.
#[cold]
fn drop_unstarted<T, F: FnOnce() -> T>(header: &Header, f: F) -> Result<T, JoinError> {
    header.interrupt.set(None);
    let dropped = panic::catch_unwind(AssertUnwindSafe(move || drop(f)));
    let dropped = match header.locals.destroy() {
        Some(p) if dropped.is_ok() => Err(p),
        _ => dropped,
    };
    header.interrupt.set(Some(Interrupt::Kill));
    match dropped {
        Ok(()) => Err(JoinError::killed()),
        Err(p) => Err(JoinError::from_payload(p)),
    }
}
