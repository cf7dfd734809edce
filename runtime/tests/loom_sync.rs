//! Loom models of the `sync` primitives' cross-thread paths: the channel's
//! send/receive hand-off, `Event`, and `Semaphore` permit hand-over.
//!
//! Built only with `RUSTFLAGS="--cfg loom"` (see `scripts/loom.sh`). The
//! primitives under test are the production ones: under `cfg(loom)` their
//! spin lock, wait lists, waiter states and thread parking run on loom's
//! atomics, cells and threads (`runtime/src/shim.rs`), so loom explores
//! every interleaving of their lock/notify/park protocol (up to
//! `LOOM_MAX_PREEMPTIONS` preemptions per execution, 3 unless set) and
//! reports data races on the waiter nodes, lost wake-ups (every thread
//! parked: loom's deadlock error) and leaks.
//!
//! The waiters here are plain threads (the `Wakeup::Thread` path); a
//! tasklet's wait differs only in how it parks and is woken (its `WaitKey`
//! and the hub's cross-thread queue, modelled in the runtime's own
//! `hub::doorbell` loom tests), not in the list protocol checked here.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use tasklet_runtime::sync::{channel, unbounded, BoundedSemaphore, Event, Semaphore};

/// Runs `f` under loom, every interleaving up to the preemption bound
/// (`LOOM_MAX_PREEMPTIONS`, 3 unless set), and prints how many executions
/// that took.
fn check<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    check_bounded(name, None, f)
}

/// [`check`] for a model with three threads contending for the spin lock:
/// at most `cap` preemptions. Loom explores a contended spin lock's yields
/// as schedule branches, so with two spinners beside a preempted holder the
/// executions grow without bound beyond one preemption (loom's "exceeded
/// maximum number of branches"); the same protocol with two threads is
/// checked at the full bound by the other models.
fn check_bounded<F>(name: &str, cap: Option<usize>, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    if std::env::var_os("LOOM_LOG").is_some() {
        // loom::model installs the LOOM_LOG trace subscriber.
        return loom::model(f);
    }
    let mut b = loom::model::Builder::new();
    let bound = b.preemption_bound.unwrap_or(3);
    b.preemption_bound = Some(cap.map_or(bound, |c| c.min(bound)));
    let bound = b.preemption_bound;
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    b.check(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    eprintln!(
        "loom model {name}: {} executions (max preemptions {})",
        n.load(std::sync::atomic::Ordering::Relaxed),
        bound.unwrap_or(0)
    );
}

// ---------------------------------------------------------------- channel

#[test]
fn loom_channel_bounded_handoff() {
    // Capacity 1, two values: the second send blocks until the receiver
    // takes the first (send_q pop), or hands its value straight to a
    // parked receiver (recv_q hand-over). Both values arrive, in order.
    check("channel_bounded_handoff", || {
        let (tx, rx) = channel::<u32>(1);
        let t = thread::spawn(move || {
            tx.send(1).unwrap();
            tx.send(2).unwrap();
        });
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.recv(), Ok(2));
        t.join().unwrap();
        // The sender is gone: the receiver sees the close.
        assert!(rx.recv().is_err());
    });
}

#[test]
fn loom_channel_rendezvous() {
    // Capacity 0: the send completes only by handing the value to a parked
    // receiver (the receiver's park pops the blocked sender).
    check("channel_rendezvous", || {
        let (tx, rx) = channel::<u32>(0);
        let t = thread::spawn(move || tx.send(7).unwrap());
        assert_eq!(rx.recv(), Ok(7));
        t.join().unwrap();
    });
}

#[test]
fn loom_channel_close_wakes_receiver() {
    // A value then the last sender's drop: the parked receiver gets the
    // value, then sees the close (popped without a value), never hangs.
    check("channel_close_wakes_receiver", || {
        let (tx, rx) = unbounded::<u32>();
        let t = thread::spawn(move || {
            tx.send(5).unwrap();
            drop(tx);
        });
        assert_eq!(rx.recv(), Ok(5));
        assert!(rx.recv().is_err());
        t.join().unwrap();
    });
}

#[test]
fn loom_channel_receiver_close_fails_blocked_sender() {
    // A sender blocked on a full channel and the receiver closing it: the
    // send fails with its value back; the queued value is still received.
    check("channel_receiver_close_fails_blocked_sender", || {
        let (tx, rx) = channel::<u32>(1);
        tx.send(1).unwrap();
        let t = thread::spawn(move || tx.send(2).map_err(|e| e.into_inner()));
        rx.close();
        assert_eq!(t.join().unwrap(), Err(2));
        assert_eq!(rx.recv(), Ok(1));
        assert!(rx.recv().is_err());
    });
}

#[test]
fn loom_channel_recv_timeout_never_loses_a_value() {
    // A receive that times out (deadline already passed: its park returns
    // at once) racing a send: the value is either received or still queued
    // afterwards, never lost in a waiter node nobody reads.
    check("channel_recv_timeout_never_loses_a_value", || {
        let (tx, rx) = channel::<u32>(1);
        let t = thread::spawn(move || tx.send(9).unwrap());
        let got = rx.recv_timeout(Duration::ZERO);
        t.join().unwrap();
        match got {
            Ok(v) => {
                assert_eq!(v, 9);
                assert!(rx.try_recv().is_err());
            }
            Err(_) => assert_eq!(rx.try_recv(), Ok(9)),
        }
    });
}

#[test]
fn loom_channel_send_timeout_never_duplicates() {
    // A send that times out on a full channel racing a receive that makes
    // room: either the send went through (two values received in order) or
    // it failed with its value back, and then exactly one value is queued.
    check("channel_send_timeout_never_duplicates", || {
        let (tx, rx) = channel::<u32>(1);
        tx.send(1).unwrap();
        let t = thread::spawn(move || rx.recv().map(|v| (v, rx)));
        let sent = tx.send_timeout(2, Duration::ZERO);
        let (first, rx) = t.join().unwrap().unwrap();
        assert_eq!(first, 1);
        match sent {
            Ok(()) => assert_eq!(rx.try_recv(), Ok(2)),
            Err(e) => assert_eq!(e.into_inner(), 2),
        }
        assert!(rx.try_recv().is_err());
    });
}

#[test]
fn loom_channel_two_receivers_each_value_once() {
    // Two parked receivers, two values: each value goes to exactly one.
    check("channel_two_receivers_each_value_once", || {
        let (tx, rx) = unbounded::<u32>();
        let rx2 = rx.clone();
        let t = thread::spawn(move || rx2.recv().unwrap());
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        let a = rx.recv().unwrap();
        let b = t.join().unwrap();
        assert_eq!(a + b, 3);
        assert_ne!(a, b);
    });
}

// ------------------------------------------------------------------ Event

#[test]
fn loom_event_set_wakes_every_waiter() {
    check_bounded("event_set_wakes_every_waiter", Some(1), || {
        let ev = Arc::new(Event::new());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let ev = ev.clone();
                thread::spawn(move || ev.wait())
            })
            .collect();
        ev.set();
        for w in waiters {
            w.join().unwrap();
        }
        assert!(ev.is_set());
    });
}

#[test]
fn loom_event_wait_timeout_vs_set() {
    // A timed wait racing `set`: a `true` result means the flag was set;
    // the waiter's node is unlinked either way (loom would report a race
    // or a dangling access on it otherwise).
    check("event_wait_timeout_vs_set", || {
        let ev = Arc::new(Event::new());
        let e = ev.clone();
        let t = thread::spawn(move || e.set());
        let got = ev.wait_timeout(Duration::ZERO);
        t.join().unwrap();
        assert!(ev.is_set());
        let _ = got;
        // A second wait returns at once.
        assert!(ev.wait_timeout(Duration::ZERO));
    });
}

#[test]
fn loom_event_clear_then_set_again() {
    // set / clear / set from one thread while another waits: the waiter
    // wakes (it is popped by the first set even if the flag is cleared
    // before it runs).
    check("event_clear_then_set_again", || {
        let ev = Arc::new(Event::new());
        let e = ev.clone();
        let t = thread::spawn(move || e.wait());
        ev.set();
        ev.clear();
        ev.set();
        t.join().unwrap();
    });
}

// -------------------------------------------------------------- Semaphore

/// One permit, `n` threads (the main one included): never two holders at
/// once; the permit is handed over to parked waiters; all get it; it is
/// back at the end.
fn semaphore_handover(n: usize) {
    let sem = Arc::new(Semaphore::new(1));
    let holders = Arc::new(AtomicUsize::new(0));
    let hold = |sem: &Semaphore, holders: &AtomicUsize| {
        let _p = sem.acquire();
        assert_eq!(holders.fetch_add(1, Ordering::Relaxed), 0);
        holders.fetch_sub(1, Ordering::Relaxed);
    };
    let ts: Vec<_> = (1..n)
        .map(|_| {
            let sem = sem.clone();
            let holders = holders.clone();
            thread::spawn(move || hold(&sem, &holders))
        })
        .collect();
    hold(&sem, &holders);
    for t in ts {
        t.join().unwrap();
    }
    assert_eq!(sem.available_permits(), 1);
}

#[test]
fn loom_semaphore_permit_handover() {
    check("semaphore_permit_handover", || semaphore_handover(2));
}

#[test]
fn loom_semaphore_permit_handover_three() {
    check_bounded("semaphore_permit_handover_three", Some(1), || {
        semaphore_handover(3)
    });
}

#[test]
fn loom_semaphore_timeout_never_leaks_a_permit() {
    // A waiter that times out racing the release that hands it the permit:
    // the permit is either taken (and returned by the guard) or stays
    // free; never lost, never doubled.
    check("semaphore_timeout_never_leaks_a_permit", || {
        let sem = Arc::new(Semaphore::new(1));
        let p = sem.acquire();
        p.forget();
        let s = sem.clone();
        let t = thread::spawn(move || s.acquire_timeout(Duration::ZERO).is_some());
        // The forgotten permit comes back (handed to the waiter if parked).
        sem.add_permits(1);
        let _ = t.join().unwrap();
        assert_eq!(sem.available_permits(), 1);
    });
}

#[test]
fn loom_semaphore_add_permits_to_two_waiters() {
    // `add_permits(2)` with two parked waiters hands one to each.
    check_bounded("semaphore_add_permits_to_two_waiters", Some(1), || {
        let sem = Arc::new(Semaphore::new(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let sem = sem.clone();
                thread::spawn(move || sem.acquire().forget())
            })
            .collect();
        sem.add_permits(2);
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(sem.available_permits(), 0);
    });
}

#[test]
fn loom_bounded_semaphore_release_vs_acquire() {
    // A release from another thread racing an acquire: the bound holds
    // (the release is refused only when every permit is free).
    check("bounded_semaphore_release_vs_acquire", || {
        let sem = Arc::new(BoundedSemaphore::new(1));
        sem.acquire().forget();
        let s = sem.clone();
        let t = thread::spawn(move || s.release());
        let p = sem.acquire();
        assert_eq!(t.join().unwrap(), Ok(()));
        drop(p);
        assert_eq!(sem.available_permits(), 1);
        assert!(sem.release().is_err());
    });
}
