//! `AdapterLease`: a pin on one resident adapter's slot, released on `Drop`.
//!
//! While a lease lives, its slot keeps its adapter: MixPlans may name `slot()`. Dropping the
//! last lease makes the adapter idle — still resident and a hit for the next acquire, but
//! the first candidate for eviction once its slot is needed.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::SlotTable;
use crate::AdapterId;

#[derive(Debug)]
pub struct AdapterLease {
    table: Arc<Mutex<SlotTable>>,
    slot: u32,
    id: AdapterId,
}

impl AdapterLease {
    /// Called with the slot already pinned in `table`.
    pub(crate) fn new(table: Arc<Mutex<SlotTable>>, slot: u32, id: AdapterId) -> Self {
        Self { table, slot, id }
    }

    /// The slot to name in a `MixPlan`.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    pub fn id(&self) -> &AdapterId {
        &self.id
    }
}

impl Drop for AdapterLease {
    fn drop(&mut self) {
        lock(&self.table).release(self.slot);
    }
}

/// Locks the table. `SlotTable` never panics halfway through an update, so a lock poisoned
/// by a panic elsewhere still guards a consistent table; recovering beats panicking in `Drop`.
pub(crate) fn lock(table: &Mutex<SlotTable>) -> MutexGuard<'_, SlotTable> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_releases_the_pin_and_leases_cross_threads() {
        let table = Arc::new(Mutex::new(SlotTable::new(1)));
        let id = AdapterId::new("a").unwrap();
        let key = crate::bank::ResidencyKey::from(id.clone());
        lock(&table).acquire(&key);
        lock(&table).acquire(&key);
        let first = AdapterLease::new(table.clone(), 0, id.clone());
        let second = AdapterLease::new(table.clone(), 0, id.clone());
        assert_eq!((first.slot(), first.id()), (0, &id));
        drop(first);
        assert_eq!(lock(&table).pins(0), 1);
        std::thread::spawn(move || drop(second)).join().unwrap();
        assert_eq!(lock(&table).pins(0), 0);
        assert_eq!(lock(&table).idle_order(), [key]);
    }
}
