//! The health endpoint's connection slots: a bounded number of connections at a time, and when they are all
//! taken, the oldest one still sending its request head gives its slot to the newcomer. So a flood of clients
//! that connect and stall (slowloris) cannot keep a health check out: each new connection pushes the oldest
//! stalled one out, and a real client's request, sent at once, is answered before its turn to be pushed comes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// The slots (cheap to clone; one per endpoint).
#[derive(Clone, Debug)]
pub struct ConnectionSlots {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    next_id: u64,
    /// Connections holding a slot.
    open: usize,
    /// Those still reading their request head, oldest first, with how to push each out.
    reading: VecDeque<(u64, CancellationToken)>,
}

/// One connection's slot: released when dropped. `evicted` fires when a newer connection took the slot.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    pub evicted: CancellationToken,
    inner: Arc<Mutex<Inner>>,
}

impl ConnectionSlots {
    pub fn new(capacity: usize) -> Self {
        let inner = Inner { capacity: capacity.max(1), next_id: 0, open: 0, reading: VecDeque::new() };
        ConnectionSlots { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
        // Every update is a few field changes: a poisoned lock still holds consistent counts.
        inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection, pushing out the oldest connection still reading its head when all are taken;
    /// `None` when every slot is busy answering (the newcomer is then closed unanswered).
    pub fn take(&self) -> Option<Slot> {
        let mut inner = Self::lock(&self.inner);
        if inner.open >= inner.capacity {
            let (_, oldest) = inner.reading.pop_front()?;
            oldest.cancel();
            inner.open -= 1;
        }
        inner.open += 1;
        inner.next_id += 1;
        let (id, evicted) = (inner.next_id, CancellationToken::new());
        inner.reading.push_back((id, evicted.clone()));
        Some(Slot { id, evicted, inner: self.inner.clone() })
    }

    /// Connections holding a slot now (for the tests' bookkeeping checks).
    #[cfg(test)]
    fn open(&self) -> usize {
        Self::lock(&self.inner).open
    }
}

impl Slot {
    /// The request head is in: from now on the connection is answered, not pushed out.
    pub fn answering(&self) {
        ConnectionSlots::lock(&self.inner).reading.retain(|(id, _)| *id != self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Asked under the lock: `take` evicts under it, so a slot is never counted out twice.
        let mut inner = ConnectionSlots::lock(&self.inner);
        if self.evicted.is_cancelled() {
            return; // its slot was given to a newer connection already
        }
        inner.reading.retain(|(id, _)| *id != self.id);
        inner.open = inner.open.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_stalled_connection_makes_room_and_answering_ones_are_kept() {
        let slots = ConnectionSlots::new(2);
        let first = slots.take().expect("a slot");
        let second = slots.take().expect("a slot");
        second.answering();
        let third = slots.take().expect("the first one makes room");
        assert!(first.evicted.is_cancelled() && !second.evicted.is_cancelled());
        assert_eq!(slots.open(), 2);
        drop(first);
        assert_eq!(slots.open(), 2, "an evicted slot was counted out already");
        third.answering();
        assert!(slots.take().is_none(), "every slot is answering: the newcomer is refused");
        drop(second);
        assert!(slots.take().is_some());
    }
}
