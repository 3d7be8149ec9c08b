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
    /// `[rows, hidden_size]`, the normalized input of the layer's attention block. Empty
    /// when the gate says it does not read it ([`Gate::reads_hidden`]): a device backend
    /// then skips copying it to the host.
    pub hidden: &'a [f32],
    pub hidden_size: usize,
    /// Per row, the candidates of the row's sequence.
    pub row_candidates: &'a [&'a [Candidate]],
}

/// A row's candidates at their prior (or fixed) weights: the plan row of a fixed mixture.
pub fn prior_row(cands: &[Candidate], out: &mut Vec<SlotWeight>) {
    out.clear();
    out.extend(cands.iter().map(|c| SlotWeight {
        slot: c.slot,
        weight: c.prior,
    }));
}

pub trait Gate: Send + Sync {
    fn plan(&self, input: &GateInput<'_>) -> MixPlan;

    /// Whether `plan` reads `GateInput::hidden`. A gate that plans from the candidates
    /// alone says `false`, and the model may then pass no hidden state.
    fn reads_hidden(&self) -> bool {
        true
    }

    /// Hears that bank `slot` now holds adapter `id` (called whenever an adapter is leased):
    /// a gate that scores adapters by identity needs it. Returns whether the gate scores the
    /// adapter; one it does not score keeps its fixed weight, and a sequence none of whose
    /// adapters are scored is not gated at all. A gate that plans without identities scores
    /// every adapter alike: the default.
    fn bind(&self, _slot: u32, _id: &str) -> bool {
        true
    }
}

/// One batch, two kinds of rows: rows flagged `true` are planned by `gated` (sequences
/// routed per token), the others get their candidates' fixed weights (an explicit adapter or
/// mixture). Flags are per token row, in the model's row order.
pub struct RowSplitGate<'a> {
    pub gated: &'a dyn Gate,
    pub rows: &'a [bool],
}

impl Gate for RowSplitGate<'_> {
    fn reads_hidden(&self) -> bool {
        self.rows.contains(&true) && self.gated.reads_hidden()
    }

    fn plan(&self, input: &GateInput<'_>) -> MixPlan {
        let n = input.row_candidates.len();
        if self.rows.len() != n || !self.rows.contains(&true) {
            return FixedGate.plan(input);
        }
        if self.rows.iter().all(|&g| g) {
            return self.gated.plan(input);
        }
        let h = input.hidden_size;
        let picked: Vec<usize> = (0..n).filter(|&r| self.rows[r]).collect();
        // An empty hidden state (the gated gate does not read it) stays empty.
        let hidden: Vec<f32> = picked
            .iter()
            .flat_map(|&r| input.hidden.get(r * h..(r + 1) * h).unwrap_or_default())
            .copied()
            .collect();
        let cands: Vec<&[Candidate]> = picked.iter().map(|&r| input.row_candidates[r]).collect();
        let sub = self.gated.plan(&GateInput {
            layer: input.layer,
            hidden: &hidden,
            hidden_size: h,
            row_candidates: &cands,
        });
        let mut plan = MixPlan::with_capacity(n, 2);
        let mut next = 0;
        let mut fixed = Vec::new();
        for r in 0..n {
            if self.rows[r] {
                plan.push_row(sub.row(next));
                next += 1;
            } else {
                prior_row(input.row_candidates[r], &mut fixed);
                plan.push_row(&fixed);
            }
        }
        plan
    }
}

/// Fixed weights per sequence: every token of a sequence uses its candidates with their
/// prior weights, in every layer (a fixed adapter, an explicit mixture, LoraRetriever's
/// mixture). The base model is the same path with no candidates.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedGate;

impl Gate for FixedGate {
    fn reads_hidden(&self) -> bool {
        false
    }

    fn plan(&self, input: &GateInput<'_>) -> MixPlan {
        let rows = input.row_candidates.len();
        let mut plan = MixPlan::with_capacity(rows, 2);
        let mut experts = Vec::new();
        for cands in input.row_candidates {
            prior_row(cands, &mut experts);
            plan.push_row(&experts);
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives every row one expert: its last candidate at weight 1, marking what it planned.
    struct LastOnly;

    impl Gate for LastOnly {
        fn plan(&self, input: &GateInput<'_>) -> MixPlan {
            let mut plan = MixPlan::new();
            for (r, c) in input.row_candidates.iter().enumerate() {
                // The hidden row travels with its candidates.
                let weight = input.hidden[r * input.hidden_size];
                plan.push_row(&[SlotWeight {
                    slot: c.last().map_or(0, |c| c.slot),
                    weight,
                }]);
            }
            plan
        }
    }

    #[test]
    fn row_split_sends_flagged_rows_to_the_gate_and_keeps_the_rest_fixed() {
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
        let rows: Vec<&[Candidate]> = vec![&a, &a, &a, &a];
        // Row r's hidden state starts with 1 + r, so the gated plan shows which row it saw.
        let hidden: Vec<f32> = (0..4).flat_map(|r| [1.0 + r as f32, 0.0]).collect();
        let input = GateInput {
            layer: 0,
            hidden: &hidden,
            hidden_size: 2,
            row_candidates: &rows,
        };
        let flags = [false, true, false, true];
        let plan = RowSplitGate {
            gated: &LastOnly,
            rows: &flags,
        }
        .plan(&input);
        let fixed = FixedGate.plan(&input);
        assert_eq!(plan.row(0), fixed.row(0));
        assert_eq!(plan.row(2), fixed.row(2));
        assert_eq!(
            plan.row(1),
            &[SlotWeight {
                slot: 1,
                weight: 2.0
            }]
        );
        assert_eq!(
            plan.row(3),
            &[SlotWeight {
                slot: 1,
                weight: 4.0
            }]
        );
        let none = RowSplitGate {
            gated: &LastOnly,
            rows: &[false; 4],
        }
        .plan(&input);
        assert_eq!(none, fixed);
    }

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
