//! `SlotTable`: the bank's residency policy as plain data — adapter key → slot, pin counts,
//! the LRU order of idle (unpinned) resident adapters, free slots, and counters.
//!
//! It knows nothing of tensors: [`SlotTable::plan`] says what an acquire would do
//! (hit, load into a free slot, load over the least recently released idle adapter, or
//! refuse because every slot is pinned) and the mutating methods carry that out. Invariants:
//! an id is in at most one slot; a slot is free, pinned (count ≥ 1) or idle; the idle order
//! holds exactly the idle slots. Nothing here panics, so a poisoned lock around it still
//! guards a consistent table.
//!
//! Not moka, as the issue suggested: moka evicts asynchronously and approximately (TinyLFU)
//! and cannot pop the least recently used *idle* entry on demand, which slot reuse needs.

use std::collections::{BTreeMap, HashMap};

use super::ResidencyKey;

/// Cache counters since the bank was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BankStats {
    /// Acquires that found the adapter resident.
    pub hits: u64,
    /// Acquires that did not (including those refused because the bank was full).
    pub misses: u64,
    /// Adapters assigned a slot and written into the stacks.
    pub loads: u64,
    /// Idle adapters pushed out to make room.
    pub evictions: u64,
}

/// What acquiring an adapter does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotPlan {
    /// Resident already: pin it, write nothing.
    Hit(u32),
    /// Write the adapter into `slot`, evicting the idle adapter there if any.
    Load {
        slot: u32,
        evict: Option<ResidencyKey>,
    },
    /// Every slot is pinned.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// In use by this many leases (≥ 1).
    Pinned(usize),
    /// Unpinned since this tick; the smallest tick is evicted first.
    Idle(u64),
}

#[derive(Debug, Clone)]
struct Resident {
    id: ResidencyKey,
    usage: Use,
}

#[derive(Debug, Clone)]
pub struct SlotTable {
    slots: Vec<Option<Resident>>,
    by_id: HashMap<ResidencyKey, u32>,
    /// Release tick → slot, for idle slots only: the first entry is the LRU victim.
    idle: BTreeMap<u64, u32>,
    tick: u64,
    stats: BankStats,
}

impl SlotTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: vec![None; capacity],
            by_id: HashMap::new(),
            idle: BTreeMap::new(),
            tick: 0,
            stats: BankStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn stats(&self) -> BankStats {
        self.stats
    }

    pub fn slot_of(&self, id: &ResidencyKey) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// Leases currently holding `slot` (0 for idle or free slots).
    pub fn pins(&self, slot: u32) -> usize {
        match self.resident(slot) {
            Some(Resident {
                usage: Use::Pinned(n),
                ..
            }) => *n,
            _ => 0,
        }
    }

    /// Resident adapters in slot order.
    pub fn resident_ids(&self) -> Vec<ResidencyKey> {
        self.slots.iter().flatten().map(|r| r.id.clone()).collect()
    }

    /// Resident adapters some lease pins, in slot order.
    pub fn pinned_ids(&self) -> Vec<ResidencyKey> {
        self.slots
            .iter()
            .flatten()
            .filter(|r| matches!(r.usage, Use::Pinned(_)))
            .map(|r| r.id.clone())
            .collect()
    }

    /// Idle adapters, next victim first.
    pub fn idle_order(&self) -> Vec<ResidencyKey> {
        self.idle
            .values()
            .filter_map(|&s| self.resident(s).map(|r| r.id.clone()))
            .collect()
    }

    fn resident(&self, slot: u32) -> Option<&Resident> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// What acquiring `id` would do now. Free slots go lowest first; with none free, the
    /// least recently released idle adapter makes room.
    pub fn plan(&self, id: &ResidencyKey) -> SlotPlan {
        if let Some(slot) = self.slot_of(id) {
            return SlotPlan::Hit(slot);
        }
        if let Some(free) = self.slots.iter().position(Option::is_none) {
            return SlotPlan::Load {
                slot: free as u32,
                evict: None,
            };
        }
        match self.idle.values().next() {
            Some(&slot) => SlotPlan::Load {
                slot,
                evict: self.resident(slot).map(|r| r.id.clone()),
            },
            None => SlotPlan::Full,
        }
    }

    /// Plans and carries out an acquire of `id`: on `Hit` and `Load` the adapter ends up
    /// resident and pinned once more. After a `Load` the caller writes the weights, and
    /// calls [`SlotTable::forget`] if that fails.
    pub fn acquire(&mut self, id: &ResidencyKey) -> SlotPlan {
        let plan = self.plan(id);
        match &plan {
            SlotPlan::Hit(slot) => {
                self.stats.hits += 1;
                self.pin(*slot);
            }
            SlotPlan::Load { slot, evict } => {
                self.stats.misses += 1;
                self.stats.loads += 1;
                if evict.is_some() {
                    self.stats.evictions += 1;
                }
                self.forget(*slot);
                if let Some(entry) = self.slots.get_mut(*slot as usize) {
                    *entry = Some(Resident {
                        id: id.clone(),
                        usage: Use::Pinned(1),
                    });
                    self.by_id.insert(id.clone(), *slot);
                }
            }
            SlotPlan::Full => self.stats.misses += 1,
        }
        plan
    }

    fn pin(&mut self, slot: u32) {
        if let Some(Some(r)) = self.slots.get_mut(slot as usize) {
            r.usage = match r.usage {
                Use::Pinned(n) => Use::Pinned(n + 1),
                Use::Idle(since) => {
                    self.idle.remove(&since);
                    Use::Pinned(1)
                }
            };
        }
    }

    /// Drops one pin of `slot`; the last one makes the adapter idle (most recently used).
    /// Releasing a free or idle slot does nothing.
    pub fn release(&mut self, slot: u32) {
        let tick = self.tick;
        if let Some(Some(r)) = self.slots.get_mut(slot as usize) {
            match r.usage {
                Use::Pinned(n) if n > 1 => r.usage = Use::Pinned(n - 1),
                Use::Pinned(_) => {
                    r.usage = Use::Idle(tick);
                    self.idle.insert(tick, slot);
                    self.tick += 1;
                }
                Use::Idle(_) => {}
            }
        }
    }

    /// Empties `slot`, whatever it held (used to evict, and to undo a failed load).
    pub fn forget(&mut self, slot: u32) {
        if let Some(entry) = self.slots.get_mut(slot as usize) {
            if let Some(old) = entry.take() {
                self.by_id.remove(&old.id);
                if let Use::Idle(since) = old.usage {
                    self.idle.remove(&since);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> ResidencyKey {
        crate::AdapterId::new(name).unwrap().into()
    }

    fn load(slot: u32, evict: Option<&str>) -> SlotPlan {
        SlotPlan::Load {
            slot,
            evict: evict.map(id),
        }
    }

    #[test]
    fn fills_free_slots_lowest_first_then_hits() {
        let mut t = SlotTable::new(2);
        assert_eq!(t.acquire(&id("a")), load(0, None));
        assert_eq!(t.acquire(&id("b")), load(1, None));
        assert_eq!(t.acquire(&id("a")), SlotPlan::Hit(0));
        assert_eq!(t.pins(0), 2);
        assert_eq!(t.resident_ids(), [id("a"), id("b")]);
    }

    #[test]
    fn evicts_the_least_recently_released_idle_adapter() {
        let mut t = SlotTable::new(3);
        for name in ["a", "b", "c"] {
            t.acquire(&id(name));
        }
        // Released in the order c, a, b: c is the LRU victim, then a.
        t.release(2);
        t.release(0);
        t.release(1);
        assert_eq!(t.idle_order(), [id("c"), id("a"), id("b")]);
        assert_eq!(t.plan(&id("d")), load(2, Some("c")));
        assert_eq!(t.acquire(&id("d")), load(2, Some("c")));
        assert_eq!(t.slot_of(&id("c")), None);
        // Re-acquiring a pulls it out of the idle order; the next victim is b.
        assert_eq!(t.acquire(&id("a")), SlotPlan::Hit(0));
        assert_eq!(t.acquire(&id("e")), load(1, Some("b")));
        assert_eq!(t.idle_order(), Vec::<ResidencyKey>::new());
    }

    #[test]
    fn pinned_adapters_are_never_evicted() {
        let mut t = SlotTable::new(2);
        t.acquire(&id("a"));
        t.acquire(&id("a"));
        t.acquire(&id("b"));
        t.release(0); // a still holds one pin
        t.release(1); // b idle
        assert_eq!(t.acquire(&id("c")), load(1, Some("b")));
        assert_eq!(t.acquire(&id("d")), SlotPlan::Full);
        assert_eq!(t.slot_of(&id("a")), Some(0));
        t.release(0);
        assert_eq!(t.acquire(&id("d")), load(0, Some("a")));
    }

    #[test]
    fn full_when_every_slot_is_pinned() {
        let mut t = SlotTable::new(1);
        t.acquire(&id("a"));
        assert_eq!(t.plan(&id("b")), SlotPlan::Full);
        assert_eq!(t.acquire(&id("b")), SlotPlan::Full);
        assert_eq!(t.slot_of(&id("b")), None);
        // A hit still works when full.
        assert_eq!(t.acquire(&id("a")), SlotPlan::Hit(0));
    }

    #[test]
    fn counts_hits_misses_loads_and_evictions() {
        let mut t = SlotTable::new(1);
        t.acquire(&id("a")); // miss, load
        t.acquire(&id("a")); // hit
        t.acquire(&id("b")); // miss, full
        t.release(0);
        t.release(0);
        t.acquire(&id("b")); // miss, load, eviction
        assert_eq!(
            t.stats(),
            BankStats {
                hits: 1,
                misses: 3,
                loads: 2,
                evictions: 1
            }
        );
    }

    #[test]
    fn forget_frees_a_slot_and_stray_releases_are_ignored() {
        let mut t = SlotTable::new(2);
        t.acquire(&id("a"));
        t.forget(0);
        assert_eq!(t.slot_of(&id("a")), None);
        t.release(0);
        t.release(7);
        assert_eq!(t.plan(&id("b")), load(0, None));
        t.acquire(&id("b"));
        t.release(0);
        t.release(0);
        assert_eq!(t.idle_order(), [id("b")]);
        t.forget(0);
        assert!(t.idle_order().is_empty() && t.resident_ids().is_empty());
    }
}
