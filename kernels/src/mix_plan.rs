//! `MixPlan`: for one forward step and one projection, per token row up to k `(slot, weight)`.
//!
//! Stored row-compressed (CSR): `entries[offsets[i]..offsets[i + 1]]` are row i's experts.

use crate::{KernelError, Result};

/// One expert of one row: the adapter's slot in the bank and its mixing weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotWeight {
    pub slot: u32,
    pub weight: f32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MixPlan {
    offsets: Vec<usize>,
    entries: Vec<SlotWeight>,
}

/// Rows grouped by slot: the shape the grouped GEMM wants. `rows_of(g)` and `weights_of(g)`
/// are parallel slices for group g, whose slot is `slots[g]`.
#[derive(Debug, Clone, Default)]
pub struct SlotGroups {
    pub slots: Vec<u32>,
    offsets: Vec<usize>,
    rows: Vec<u32>,
    weights: Vec<f32>,
}

impl MixPlan {
    pub fn new() -> Self {
        Self {
            offsets: vec![0],
            entries: Vec::new(),
        }
    }

    pub fn with_capacity(rows: usize, per_row: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            entries: Vec::with_capacity(rows * per_row),
        }
    }

    /// A plan where every one of `rows` rows gets the same experts.
    pub fn uniform(rows: usize, experts: &[SlotWeight]) -> Self {
        let mut plan = Self::with_capacity(rows, experts.len());
        for _ in 0..rows {
            plan.push_row(experts);
        }
        plan
    }

    /// Appends one row. Zero weights are dropped here so the kernels never do empty work.
    pub fn push_row(&mut self, experts: &[SlotWeight]) {
        self.entries
            .extend(experts.iter().copied().filter(|e| e.weight != 0.0));
        self.offsets.push(self.entries.len());
    }

    /// Appends the rows of `other` after this plan's rows.
    pub fn extend(&mut self, other: &MixPlan) {
        for i in 0..other.rows() {
            self.push_row(other.row(i));
        }
    }

    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn row(&self, i: usize) -> &[SlotWeight] {
        &self.entries[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The most experts any row has (the k the CUDA kernels pad every row to).
    pub fn max_experts(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }

    /// True when no row has any expert: the projection is the base model alone.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks the plan against a stack of `slots` slots and a batch of `rows` rows.
    pub fn validate(&self, rows: usize, slots: usize) -> Result<()> {
        if self.rows() != rows {
            return Err(KernelError::PlanRows {
                plan_rows: self.rows(),
                rows,
            });
        }
        for row in 0..self.rows() {
            for e in self.row(row) {
                if e.slot as usize >= slots {
                    return Err(KernelError::SlotOutOfRange {
                        row,
                        slot: e.slot,
                        slots,
                    });
                }
                if !e.weight.is_finite() {
                    return Err(KernelError::NonFiniteWeight {
                        row,
                        weight: e.weight,
                    });
                }
            }
        }
        Ok(())
    }

    /// Groups rows by slot with a counting sort: O(rows · k + slots).
    /// A row naming the same slot twice gets the weights summed into one entry per group.
    pub fn group_by_slot(&self, slots: usize) -> SlotGroups {
        let mut counts = vec![0usize; slots];
        for e in &self.entries {
            counts[e.slot as usize] += 1;
        }
        let mut group_of_slot = vec![usize::MAX; slots];
        let mut groups = SlotGroups::default();
        groups.offsets.push(0);
        let mut total = 0;
        for (slot, &count) in counts.iter().enumerate() {
            if count > 0 {
                group_of_slot[slot] = groups.slots.len();
                groups.slots.push(slot as u32);
                total += count;
                groups.offsets.push(total);
            }
        }
        let mut cursor: Vec<usize> = groups.offsets[..groups.slots.len()].to_vec();
        groups.rows = vec![0; total];
        groups.weights = vec![0.0; total];
        for row in 0..self.rows() {
            for e in self.row(row) {
                let g = group_of_slot[e.slot as usize];
                let start = groups.offsets[g];
                let at = cursor[g];
                // Same slot twice in one row: merge, so scatter-add never races with itself.
                if at > start && groups.rows[at - 1] == row as u32 {
                    groups.weights[at - 1] += e.weight;
                    continue;
                }
                groups.rows[at] = row as u32;
                groups.weights[at] = e.weight;
                cursor[g] += 1;
            }
        }
        // Merged duplicates leave holes at the end of a group: compact them away.
        let mut compact = SlotGroups {
            slots: groups.slots.clone(),
            offsets: vec![0],
            rows: Vec::with_capacity(total),
            weights: Vec::with_capacity(total),
        };
        for (g, &end) in cursor.iter().enumerate() {
            let start = groups.offsets[g];
            compact.rows.extend_from_slice(&groups.rows[start..end]);
            compact
                .weights
                .extend_from_slice(&groups.weights[start..end]);
            compact.offsets.push(compact.rows.len());
        }
        compact
    }
}

impl SlotGroups {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn rows_of(&self, g: usize) -> &[u32] {
        &self.rows[self.offsets[g]..self.offsets[g + 1]]
    }

    pub fn weights_of(&self, g: usize) -> &[f32] {
        &self.weights[self.offsets[g]..self.offsets[g + 1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(slot: u32, weight: f32) -> SlotWeight {
        SlotWeight { slot, weight }
    }

    #[test]
    fn groups_rows_by_slot_in_row_order() {
        let mut plan = MixPlan::new();
        plan.push_row(&[sw(2, 0.5), sw(0, 0.5)]);
        plan.push_row(&[]);
        plan.push_row(&[sw(2, 1.0)]);
        let groups = plan.group_by_slot(3);
        assert_eq!(groups.slots, vec![0, 2]);
        assert_eq!(groups.rows_of(0), &[0]);
        assert_eq!(groups.rows_of(1), &[0, 2]);
        assert_eq!(groups.weights_of(1), &[0.5, 1.0]);
    }

    #[test]
    fn duplicate_slot_in_a_row_is_merged() {
        let mut plan = MixPlan::new();
        plan.push_row(&[sw(1, 0.25), sw(1, 0.5)]);
        plan.push_row(&[sw(1, 2.0)]);
        let groups = plan.group_by_slot(2);
        assert_eq!(groups.rows_of(0), &[0, 1]);
        assert_eq!(groups.weights_of(0), &[0.75, 2.0]);
    }

    #[test]
    fn zero_weights_are_dropped_and_validation_catches_bad_slots() {
        let mut plan = MixPlan::new();
        plan.push_row(&[sw(0, 0.0)]);
        assert!(plan.is_empty());
        plan.push_row(&[sw(5, 1.0)]);
        assert_eq!(
            plan.validate(2, 4),
            Err(KernelError::SlotOutOfRange {
                row: 1,
                slot: 5,
                slots: 4
            })
        );
        assert!(matches!(
            plan.validate(3, 8),
            Err(KernelError::PlanRows { .. })
        ));
        let mut nan = MixPlan::new();
        nan.push_row(&[sw(0, f32::NAN)]);
        assert!(matches!(
            nan.validate(1, 1),
            Err(KernelError::NonFiniteWeight { .. })
        ));
    }
}
