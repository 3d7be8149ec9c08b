//! `Gate`: the per-layer decision of which adapters each token row uses, and how much.
//!
//! The model calls the gate once per layer with the hidden states entering that layer and
//! every row's candidate adapters; the returned `MixPlan` drives all LoRA-targeted
//! projections of the layer. The retrieval prior alone ([`FixedGate`]) lives here; the
//! learned per-token gate implements the same trait in the router crate.

use loramux_kernels::{MixPlan, SlotWeight};

/// One candidate adapter of a sequence: its bank slot and its prior (or fixed) weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub slot: u32,
    pub prior: f32,
}

/// What the gate sees for one layer of one step.
pub struct GateInput<'a> {
    pub layer: usize,
    /// `[rows, hidden_size]`, the normalized input of the layer's attention block.
    pub hidden: &'a [f32],
    pub hidden_size: usize,
    /// Per row, the candidates of the row's sequence.
    pub row_candidates: &'a [&'a [Candidate]],
}

pub trait Gate: Send + Sync {
    fn plan(&self, input: &GateInput<'_>) -> MixPlan;
}

/// Fixed weights per sequence: every token of a sequence uses its candidates with their
/// prior weights, in every layer (a fixed adapter, an explicit mixture, LoraRetriever's
/// mixture). The base model is the same path with no candidates.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedGate;

impl Gate for FixedGate {
    fn plan(&self, input: &GateInput<'_>) -> MixPlan {
        let rows = input.row_candidates.len();
        let mut plan = MixPlan::with_capacity(rows, 2);
        let mut experts = Vec::new();
        for cands in input.row_candidates {
            experts.clear();
            experts.extend(cands.iter().map(|c| SlotWeight {
                slot: c.slot,
                weight: c.prior,
            }));
            plan.push_row(&experts);
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_gate_copies_each_rows_candidates() {
        let a = [
            Candidate {
                slot: 3,
                prior: 0.25,
            },
            Candidate {
                slot: 1,
                prior: 0.75,
            },
        ];
        let none: [Candidate; 0] = [];
        let rows: Vec<&[Candidate]> = vec![&a, &none, &a];
        let hidden = vec![0.5f32; 3 * 4];
        let plan = FixedGate.plan(&GateInput {
            layer: 0,
            hidden: &hidden,
            hidden_size: 4,
            row_candidates: &rows,
        });
        assert_eq!(plan.rows(), 3);
        assert_eq!(
            plan.row(0),
            &[
                SlotWeight {
                    slot: 3,
                    weight: 0.25
                },
                SlotWeight {
                    slot: 1,
                    weight: 0.75
                }
            ]
        );
        assert!(plan.row(1).is_empty());
        assert_eq!(plan.row(2), plan.row(0));
    }
}
