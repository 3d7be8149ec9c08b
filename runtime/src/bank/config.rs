//! `BankConfig`: how many adapters the bank holds at once and the largest rank a slot takes.
//!
//! Memory per (layer, module) stack is `slots · r_max · (d_in + d_out)` f32 values.

use crate::{Result, RuntimeError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BankConfig {
    /// Adapters resident at once (slots per stack).
    pub slots: usize,
    /// Largest adapter rank a slot can hold; smaller ranks are zero-padded.
    pub r_max: usize,
}

impl Default for BankConfig {
    fn default() -> Self {
        Self {
            slots: 16,
            r_max: 64,
        }
    }
}

impl BankConfig {
    pub fn validate(&self) -> Result<()> {
        if self.slots == 0 {
            return Err(RuntimeError::BankConfig {
                field: "slots",
                value: self.slots,
                reason: "the bank needs at least one slot",
            });
        }
        // Slots travel as u32 in every MixPlan.
        if u32::try_from(self.slots).is_err() {
            return Err(RuntimeError::BankConfig {
                field: "slots",
                value: self.slots,
                reason: "more slots than a u32 slot index can name",
            });
        }
        if self.r_max == 0 {
            return Err(RuntimeError::BankConfig {
                field: "r_max",
                value: self.r_max,
                reason: "a slot must hold at least rank 1",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        let cfg = BankConfig::default();
        assert_eq!((cfg.slots, cfg.r_max), (16, 64));
        cfg.validate().unwrap();
    }

    #[test]
    fn refuses_empty_banks_and_ranks() {
        for (cfg, field) in [
            (BankConfig { slots: 0, r_max: 8 }, "slots"),
            (BankConfig { slots: 4, r_max: 0 }, "r_max"),
        ] {
            let err = cfg.validate().unwrap_err();
            assert!(
                matches!(err, RuntimeError::BankConfig { field: f, .. } if f == field),
                "{err}"
            );
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
