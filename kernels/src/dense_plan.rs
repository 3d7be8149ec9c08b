//! `DensePlan`: a [`MixPlan`] padded to `[rows, k]` for the kernels, slot −1 marking "no expert".
//!
//! The kernels index the plan by `(row, k)` from a block index, so every row gets the same
//! number of entries: k is the longest row of the plan (at most 4 in practice).

use crate::MixPlan;

#[derive(Debug, Clone, PartialEq)]
pub struct DensePlan {
    rows: usize,
    k: usize,
    slots: Vec<i32>,
    weights: Vec<f32>,
}

impl DensePlan {
    /// Pads `plan`; a slot index that does not fit an i32 becomes −1 (the eligibility check
    /// keeps such stacks off the kernels before this matters).
    pub fn new(plan: &MixPlan) -> Self {
        let rows = plan.rows();
        let k = plan.max_experts();
        let mut slots = vec![-1; rows * k];
        let mut weights = vec![0.0; rows * k];
        for row in 0..rows {
            for (j, e) in plan.row(row).iter().enumerate() {
                slots[row * k + j] = i32::try_from(e.slot).unwrap_or(-1);
                weights[row * k + j] = e.weight;
            }
        }
        Self {
            rows,
            k,
            slots,
            weights,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Entries per row: the longest row of the plan.
    pub fn k(&self) -> usize {
        self.k
    }

    /// `[rows, k]` slot indices, −1 for padding.
    pub fn slots(&self) -> &[i32] {
        &self.slots
    }

    /// `[rows, k]` mixing weights, 0 for padding.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The slot of entry `(row, k)`, or None for padding.
    pub fn slot(&self, row: usize, k: usize) -> Option<usize> {
        usize::try_from(self.slots[row * self.k + k]).ok()
    }

    pub fn weight(&self, row: usize, k: usize) -> f32 {
        self.weights[row * self.k + k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SlotWeight;

    #[test]
    fn pads_short_rows_with_minus_one() {
        let mut plan = MixPlan::new();
        plan.push_row(&[SlotWeight {
            slot: 3,
            weight: 0.5,
        }]);
        plan.push_row(&[]);
        plan.push_row(&[
            SlotWeight {
                slot: 1,
                weight: 0.25,
            },
            SlotWeight {
                slot: 7,
                weight: 0.75,
            },
        ]);
        let dense = DensePlan::new(&plan);
        assert_eq!((dense.rows(), dense.k()), (3, 2));
        assert_eq!(dense.slots(), &[3, -1, -1, -1, 1, 7]);
        assert_eq!(dense.weights(), &[0.5, 0.0, 0.0, 0.0, 0.25, 0.75]);
        assert_eq!(dense.slot(2, 1), Some(7));
        assert_eq!(dense.slot(1, 0), None);
        assert_eq!(DensePlan::new(&MixPlan::uniform(4, &[])).k(), 0);
    }
}
