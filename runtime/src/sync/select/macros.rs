//! The [`select!`](crate::select) macro.

/// Waits for the first of several channel operations, tasklets, events or
/// results, like Go's `select` or crossbeam's `select!`, and runs the body
/// of the arm taken.
///
/// Arms (separated by commas; a body is an expression or a block):
///
/// - `recv(rx) -> v => body` — `v: Result<T, RecvError>` from a
///   [`Receiver`](crate::sync::Receiver);
/// - `send(tx, value) -> r => body` — `r: Result<(), SendError<T>>`; the
///   value is sent only if this arm is taken (else dropped with the select,
///   like Go's);
/// - `send_from(tx, slot) -> r => body` — the same with the value in an
///   `Option<T>` place, taken from it only if this arm is taken: a value
///   not sent stays in `slot`;
/// - `finished(handle) => body` — a `&mut`-borrowable
///   [`JoinHandle`](crate::JoinHandle) has finished (`join` it in the body);
/// - `wait(event) => body` — an [`Event`](crate::sync::Event) is set;
/// - `ready(result) => body` — an [`AsyncResult`](crate::sync::AsyncResult)
///   is ready;
/// - `timeout(duration) => body`, `deadline(instant) => body`, or
///   `default => body` (taken at once if nothing is ready), at most one.
///
/// Fair (it starts trying at a random arm) and cancel-safe: an arm that is
/// not taken takes no value from its channel and sends none. Bodies run
/// after the select is over, in the caller's frame: `return`, `break`, `?`
/// work in them. See [`Select`](crate::sync::Select) for the details.
///
/// ```
/// use std::time::Duration;
/// use tasklet::sync::{channel, Event};
///
/// tasklet::dispatch(|| {
///     let (tx, rx) = channel::<u32>(1);
///     let (out_tx, out_rx) = channel::<u32>(0);
///     let stop = Event::new();
///     tx.send(1).unwrap();
///     let mut seen = Vec::new();
///     for _ in 0..3 {
///         tasklet::select! {
///             recv(rx) -> v => seen.push(v.unwrap()),
///             send(out_tx, 9) -> r => { r.unwrap(); }
///             wait(stop) => break,
///             timeout(Duration::from_millis(20)) => { stop.set(); }
///         }
///     }
///     assert_eq!(seen, [1]);
///     assert!(out_rx.try_recv().is_err()); // nobody took the rendezvous: nothing was sent
/// });
/// ```
#[macro_export]
macro_rules! select {
    ($($arms:tt)*) => {
        $crate::__select_parse!(
            (__s0 __s1 __s2 __s3 __s4 __s5 __s6 __s7 __s8 __s9 __s10 __s11 __s12 __s13 __s14 __s15)
            () () ()
            $($arms)*
        )
    };
}

/// Internal: parses [`select!`] arms one by one. Each arm gets a slot
/// variable of its own (from the list of names, which all come from one
/// expansion so they resolve to each other), a builder call whose closure
/// fills the slot, and an `if let` on the slot that runs its body after the
/// select is over.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_parse {
    // Done: generate.
    (($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*)) => {{
        $($decl)*
        $crate::sync::Select::<()>::new() $($build)* .wait();
        $($matches)* { ::core::unreachable!("tasklet::select!: no arm taken") }
    }};
    // A body: a block (comma optional) or an expression (comma unless last).
    (@body $name:ident ($pat:pat) ($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*) ($($call:tt)*) $body:block , $($rest:tt)*) => {
        $crate::__select_parse!(($($names)*) ($($decl)* let mut $name = ::core::option::Option::None;) ($($build)* $($call)*) ($($matches)* if let ::core::option::Option::Some($pat) = $name $body else) $($rest)*)
    };
    (@body $name:ident ($pat:pat) ($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*) ($($call:tt)*) $body:block $($rest:tt)*) => {
        $crate::__select_parse!(($($names)*) ($($decl)* let mut $name = ::core::option::Option::None;) ($($build)* $($call)*) ($($matches)* if let ::core::option::Option::Some($pat) = $name $body else) $($rest)*)
    };
    (@body $name:ident ($pat:pat) ($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*) ($($call:tt)*) $body:expr , $($rest:tt)*) => {
        $crate::__select_parse!(($($names)*) ($($decl)* let mut $name = ::core::option::Option::None;) ($($build)* $($call)*) ($($matches)* if let ::core::option::Option::Some($pat) = $name { $body } else) $($rest)*)
    };
    (@body $name:ident ($pat:pat) ($($names:ident)*) ($($decl:tt)*) ($($build:tt)*) ($($matches:tt)*) ($($call:tt)*) $body:expr) => {
        $crate::__select_parse!(($($names)*) ($($decl)* let mut $name = ::core::option::Option::None;) ($($build)* $($call)*) ($($matches)* if let ::core::option::Option::Some($pat) = $name { $body } else))
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt recv($rx:expr) -> $pat:pat => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name ($pat) ($($names)*) $d $b $m
            (.recv(&$rx, |__r| $name = ::core::option::Option::Some(__r))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt send($tx:expr, $v:expr) -> $pat:pat => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name ($pat) ($($names)*) $d $b $m
            (.send(&$tx, $v, |__r| $name = ::core::option::Option::Some(__r))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt send_from($tx:expr, $slot:expr) -> $pat:pat => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name ($pat) ($($names)*) $d $b $m
            (.send_from(&$tx, &mut $slot, |__r| $name = ::core::option::Option::Some(__r))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt finished($h:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.finished(&mut $h, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt wait($e:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.event(&$e, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt ready($r:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.ready(&$r, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt timeout($t:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.timeout($t, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt deadline($t:expr) => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.deadline($t, || $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (($name:ident $($names:ident)*) $d:tt $b:tt $m:tt default => $($rest:tt)*) => {
        $crate::__select_parse!(@body $name (()) ($($names)*) $d $b $m
            (.otherwise(|| $name = ::core::option::Option::Some(()))) $($rest)*)
    };
    (() $d:tt $b:tt $m:tt $($rest:tt)+) => {
        ::core::compile_error!("tasklet::select!: at most 16 arms")
    };
    ($n:tt $d:tt $b:tt $m:tt $($rest:tt)+) => {
        ::core::compile_error!(
            "tasklet::select!: expected `recv(rx) -> v => ..`, `send(tx, value) -> r => ..`, \
             `send_from(tx, slot) -> r => ..`, \
             `finished(handle) => ..`, `wait(event) => ..`, `ready(result) => ..`, \
             `timeout(d) => ..`, `deadline(t) => ..` or `default => ..`"
        )
    };
}
