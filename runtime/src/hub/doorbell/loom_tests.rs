//! Loom model of the hub's cross-thread wake-up: wakers put items in the
//! production [`Mailbox`] (or, when it is full, a queue) and ring the
//! production [`Doorbell`]; the hub drains, and blocks in a
//! modelled `epoll_wait` only when the doorbell lets it. A lost wake-up
//! leaves the hub blocked with items queued: loom reports the deadlock.
//!
//! What is modelled rather than run: the queue (a `crossbeam_queue::SegQueue`
//! in the hub, a loom `Mutex<VecDeque>` here: only its linearisability
//! matters to the protocol) and the `mio::Waker` / `epoll_wait` pair (an
//! edge flag under a loom `Mutex` + `Condvar`: a write makes the next wait
//! return; mio's `eventfd` is registered edge-triggered, and every write is
//! an edge). The hub loop mirrors `Hub::poll_until`: drain, then (nothing
//! runnable) sleep / poll / awake, then drain again.

use std::collections::VecDeque;

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::{Doorbell, Mailbox};

/// The `eventfd` behind `mio::Waker`, as `epoll_wait` sees it.
struct EventFd {
    edge: Mutex<bool>,
    cv: Condvar,
}

impl EventFd {
    fn write(&self) {
        *self.edge.lock().unwrap() = true;
        self.cv.notify_one();
    }

    /// A blocking `epoll_wait` with only the `eventfd` registered.
    fn wait(&self) {
        let mut edge = self.edge.lock().unwrap();
        while !*edge {
            edge = self.cv.wait(edge).unwrap();
        }
        *edge = false;
    }

    /// A non-blocking poll (timeout zero): consumes an edge if there is one.
    fn poll(&self) {
        *self.edge.lock().unwrap() = false;
    }
}

fn check<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut b = loom::model::Builder::new();
    let bound = b.preemption_bound.unwrap_or(3);
    b.preemption_bound = Some(bound);
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    b.check(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    eprintln!(
        "loom model {name}: {} executions (max preemptions {bound})",
        n.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// `wakers` threads queue `per` items each; the hub (this thread) must
/// receive them all.
fn hub_receives_all(wakers: usize, per: usize) {
    let bell = Arc::new(Doorbell::new());
    let mail = Arc::new(Mailbox::<usize>::new());
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    let efd = Arc::new(EventFd {
        edge: Mutex::new(false),
        cv: Condvar::new(),
    });
    let ts: Vec<_> = (0..wakers)
        .map(|i| {
            let (bell, mail, queue, efd) = (bell.clone(), mail.clone(), queue.clone(), efd.clone());
            thread::spawn(move || {
                for j in 0..per {
                    // `Shared::push`: the mailbox (which rings), or the
                    // queue and ring.
                    match bell.put(&mail, i * per + j) {
                        Ok(true) => efd.write(),
                        Ok(false) => {}
                        Err(x) => {
                            queue.lock().unwrap().push_back(x);
                            if bell.ring() {
                                efd.write();
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut got = Vec::new();
    loop {
        // `Hub::drain_remote`.
        got.extend(bell.take_mail(&mail));
        if bell.take() {
            while let Some(x) = queue.lock().unwrap().pop_front() {
                got.push(x);
            }
        }
        if got.len() == wakers * per {
            break;
        }
        // Nothing runnable: `Hub::idle_wait`.
        if bell.sleep() {
            efd.wait();
        } else {
            efd.poll();
        }
        bell.awake();
    }
    for t in ts {
        t.join().unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, (0..wakers * per).collect::<Vec<_>>());
    // Nothing left behind (`pending` may still be set by an item the hub
    // popped before its ring: the next drain then finds nothing).
    bell.take();
    assert!(bell.take_mail(&mail).is_none());
    assert!(queue.lock().unwrap().is_empty());
}

#[test]
fn loom_doorbell_one_waker_two_items() {
    check("doorbell_one_waker_two_items", || hub_receives_all(1, 2));
}

#[test]
fn loom_doorbell_two_wakers() {
    check("doorbell_two_wakers", || hub_receives_all(2, 1));
}

#[test]
fn loom_doorbell_two_wakers_two_items() {
    // The mailbox fills and empties while both wakers race for it.
    check("doorbell_two_wakers_two_items", || hub_receives_all(2, 2));
}
