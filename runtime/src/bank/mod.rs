//! `AdapterBank`: adapters resident in compute memory, one slot index per adapter.
//!
//! Shape contract: per (layer, module) one `SlotStack` with A `[slots, r_max, d_in]` and
//! B `[slots, d_out, r_max]`, allocated the first time a loaded adapter targets that module.
//! Slot s holds the same adapter in every stack; a module the adapter does not target has
//! rank 0 in slot s. Which adapter occupies which slot, what is pinned and what is evicted
//! next is decided by the pure [`SlotTable`]; [`AdapterLease`] pins a slot until dropped.

mod adapter_bank;
mod config;
mod lease;
mod residency_key;
mod slot_table;
mod stacks;

pub use adapter_bank::AdapterBank;
pub use config::BankConfig;
pub use lease::AdapterLease;
pub use residency_key::ResidencyKey;
pub use slot_table::{BankStats, SlotPlan, SlotTable};
