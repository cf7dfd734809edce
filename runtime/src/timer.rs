//! The hub's timers: a binary min-heap of deadlines plus a slab of live timers.
//!
//! Cancelling a timer removes it from the slab in O(1); its heap entry stays
//! behind and is skipped when it surfaces (its id no longer matches). When
//! stale entries outnumber live ones the heap is rebuilt, so a server that
//! arms and cancels a read timeout per request does not grow without bound.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::slots::Slots;

/// Identifies an armed timer so it can be cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    slot: u32,
    id: u64,
}

struct Entry<A> {
    id: u64,
    action: A,
}

/// A queue of actions ordered by deadline.
pub(crate) struct TimerQueue<A> {
    heap: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    live: Slots<Entry<A>>,
    next_id: u64,
}

impl<A> TimerQueue<A> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            live: Slots::new(),
            next_id: 0,
        }
    }

    /// Number of armed (not cancelled, not fired) timers.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no timer is armed.
    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Arms a timer that yields `action` once `deadline` has passed.
    pub(crate) fn insert(&mut self, deadline: Instant, action: A) -> TimerKey {
        self.next_id += 1;
        let id = self.next_id;
        let slot = self.live.insert(Entry { id, action }) as u32;
        self.heap.push(Reverse((deadline, id, slot)));
        TimerKey { slot, id }
    }

    /// Disarms a timer; returns its action if it had not fired yet.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<A> {
        let slot = key.slot as usize;
        match self.live.get(slot) {
            Some(e) if e.id == key.id => {}
            _ => return None,
        }
        let action = self.live.remove(slot).map(|e| e.action);
        // Compact when stale heap entries dominate.
        if self.heap.len() > 64 && self.heap.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.heap.retain(
                |Reverse((_, id, slot))| matches!(live.get(*slot as usize), Some(e) if e.id == *id),
            );
        }
        action
    }

    /// Removes stale heap entries at the top and returns the earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, id, slot))) = self.heap.peek().copied() {
            match self.live.get(slot as usize) {
                Some(e) if e.id == id => return Some(deadline),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// Pops one timer whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<A> {
        loop {
            let Reverse((deadline, id, slot)) = *self.heap.peek()?;
            let live = matches!(self.live.get(slot as usize), Some(e) if e.id == id);
            if live && deadline > now {
                return None;
            }
            self.heap.pop();
            if live {
                return self.live.remove(slot as usize).map(|e| e.action);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TimerQueue;
    use std::time::{Duration, Instant};

    #[test]
    fn fires_in_deadline_order_and_skips_cancelled() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.insert(t0 + Duration::from_millis(30), "c");
        let b = q.insert(t0 + Duration::from_millis(20), "b");
        q.insert(t0 + Duration::from_millis(10), "a");
        assert_eq!(q.cancel(b), Some("b"));
        assert_eq!(q.cancel(b), None, "double cancel is a no-op");
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(q.pop_expired(t0), None);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(q.pop_expired(later), Some("a"));
        assert_eq!(q.pop_expired(later), Some("c"));
        assert_eq!(q.pop_expired(later), None);
        assert!(q.is_empty());
    }

    #[test]
    fn reused_slot_does_not_fire_early() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let k = q.insert(t0 + Duration::from_millis(1), 1);
        q.cancel(k);
        q.insert(t0 + Duration::from_secs(60), 2);
        assert_eq!(q.pop_expired(t0 + Duration::from_millis(5)), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn heap_is_compacted_after_many_cancels() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        for i in 0..10_000u64 {
            let k = q.insert(t0 + Duration::from_secs(30 + i), i);
            q.cancel(k);
        }
        assert!(
            q.heap.len() < 200,
            "heap kept {} stale entries",
            q.heap.len()
        );
    }
}
