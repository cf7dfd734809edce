//! [`Slots`]: a `Vec` of slots with an intrusive free list (what is often
//! called a slab; here "slab" is only the stack allocator's unit).
//!
//! Used for the dispatcher's task registry, the hub's I/O registrations and
//! timers: O(1) insert/remove by index, no hashing, and indices stay small so
//! they fit in a `mio::Token` or a `u32`.

/// One slot of a [`Slots`].
enum Slot<T> {
    Full(T),
    /// Free; holds the index of the next free slot (or `usize::MAX`).
    Free(usize),
}

/// Index-addressed storage with slot reuse.
pub(crate) struct Slots<T> {
    slots: Vec<Slot<T>>,
    free: usize,
    len: usize,
}

impl<T> Slots<T> {
    /// An empty slab.
    pub(crate) const fn new() -> Self {
        Slots {
            slots: Vec::new(),
            free: usize::MAX,
            len: 0,
        }
    }

    /// Number of occupied slots.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is occupied.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` and returns its index.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        if self.free != usize::MAX {
            let idx = self.free;
            match std::mem::replace(&mut self.slots[idx], Slot::Full(value)) {
                Slot::Free(next) => self.free = next,
                Slot::Full(_) => unreachable!("slab free list points at a full slot"),
            }
            idx
        } else {
            self.slots.push(Slot::Full(value));
            self.slots.len() - 1
        }
    }

    /// Removes and returns the value at `idx`, if that slot is occupied.
    pub(crate) fn remove(&mut self, idx: usize) -> Option<T> {
        match self.slots.get_mut(idx) {
            Some(slot @ Slot::Full(_)) => {
                let old = std::mem::replace(slot, Slot::Free(self.free));
                self.free = idx;
                self.len -= 1;
                match old {
                    Slot::Full(v) => Some(v),
                    Slot::Free(_) => None,
                }
            }
            _ => None,
        }
    }

    /// The value at `idx`, if occupied.
    pub(crate) fn get(&self, idx: usize) -> Option<&T> {
        match self.slots.get(idx) {
            Some(Slot::Full(v)) => Some(v),
            _ => None,
        }
    }

    /// The value at `idx`, mutably, if occupied.
    pub(crate) fn get_mut(&mut self, idx: usize) -> Option<&mut T> {
        match self.slots.get_mut(idx) {
            Some(Slot::Full(v)) => Some(v),
            _ => None,
        }
    }

    /// Iterates over occupied slots.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Full(v) => Some((i, v)),
            Slot::Free(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn insert_remove_reuse() {
        let mut s = Slots::new();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        let c = s.insert("c");
        assert_eq!(c, a, "freed slot is reused");
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.iter().count(), 2);
        assert!(s.get(99).is_none());
    }
}
