//! A bounded table of shared slots by key: work that many workers may ask for at once with the
//! same inputs (a commit's render, a bundle's validation) is done in the slot the first of them
//! finds, and the others wait on the same slot. The oldest slot goes once the table is full.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Slots `S` (a once-cell of some kind) by key `K`, at most `kept` of them.
pub(crate) struct Slots<K, S> {
    kept: usize,
    table: Mutex<VecDeque<(K, Arc<S>)>>,
}

impl<K, S> Slots<K, S> {
    /// An empty table keeping at most `kept` slots (usable in a `static`).
    pub(crate) const fn new(kept: usize) -> Self {
        Slots {
            kept,
            table: Mutex::new(VecDeque::new()),
        }
    }

    fn table(&self) -> MutexGuard<'_, VecDeque<(K, Arc<S>)>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops `slot` (its work failed in a way not to remember); holders keep their copy.
    pub(crate) fn forget(&self, slot: &Arc<S>) {
        self.table().retain(|(_, s)| !Arc::ptr_eq(s, slot));
    }

    /// How many slots have a key `which` accepts (for tests).
    #[cfg(test)]
    pub(crate) fn count(&self, which: impl Fn(&K) -> bool) -> usize {
        self.table().iter().filter(|(k, _)| which(k)).count()
    }
}

impl<K: PartialEq, S: Default> Slots<K, S> {
    /// The slot of `key`: the existing one, or a new empty one (dropping the oldest when full).
    pub(crate) fn slot(&self, key: K) -> Arc<S> {
        let mut table = self.table();
        if let Some((_, slot)) = table.iter().find(|(k, _)| *k == key) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(S::default());
        if table.len() >= self.kept {
            table.pop_front();
        }
        table.push_back((key, Arc::clone(&slot)));
        slot
    }
}
