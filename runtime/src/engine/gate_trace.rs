//! What the learned gate decided for each generated token: the weight of every candidate
//! adapter in every layer, recorded while the step runs and sent to the client with the
//! token (the `routing` object of a response reports them).

use crate::{Candidate, Gate, GateInput};
use loramux_kernels::MixPlan;
use std::sync::Mutex;

/// The gate's weights for the row that produced one token: `weights[layer * candidates + c]`
/// is candidate `c`'s weight in `layer` (0 where the gate dropped it), candidates in the
/// order of the request's adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenGateWeights {
    pub layers: usize,
    pub candidates: usize,
    pub weights: Vec<f32>,
}

impl TokenGateWeights {
    /// Each candidate's weight averaged over the layers.
    pub fn mean_over_layers(&self) -> Vec<f32> {
        let mut mean = vec![0.0; self.candidates];
        for layer in self.weights.chunks_exact(self.candidates.max(1)) {
            for (m, w) in mean.iter_mut().zip(layer) {
                *m += w / self.layers.max(1) as f32;
            }
        }
        mean
    }

    /// The weights of one layer, per candidate.
    pub fn layer(&self, layer: usize) -> &[f32] {
        &self.weights[layer * self.candidates..(layer + 1) * self.candidates]
    }
}

/// A gate that passes every call to `inner` and writes down, for the chosen rows, the
/// weight each of the row's candidates received in each layer.
pub(super) struct TracingGate<'a> {
    inner: &'a dyn Gate,
    layers: usize,
    /// The rows to record, each with its sequence's candidates.
    rows: Vec<(usize, &'a [Candidate])>,
    /// Per recorded row, `[layer * candidates + candidate]`.
    weights: Mutex<Vec<Vec<f32>>>,
}

impl<'a> TracingGate<'a> {
    pub(super) fn new(
        inner: &'a dyn Gate,
        layers: usize,
        rows: Vec<(usize, &'a [Candidate])>,
    ) -> Self {
        let weights = rows
            .iter()
            .map(|(_, c)| vec![0.0; layers * c.len()])
            .collect();
        Self {
            inner,
            layers,
            rows,
            weights: Mutex::new(weights),
        }
    }

    /// The recorded weights, one entry per row given to [`TracingGate::new`], in its order.
    pub(super) fn finish(self) -> Vec<TokenGateWeights> {
        let layers = self.layers;
        let weights = self.weights.into_inner().unwrap_or_else(|p| p.into_inner());
        self.rows
            .iter()
            .zip(weights)
            .map(|((_, cands), weights)| TokenGateWeights {
                layers,
                candidates: cands.len(),
                weights,
            })
            .collect()
    }
}

impl Gate for TracingGate<'_> {
    fn plan(&self, input: &GateInput<'_>) -> MixPlan {
        let plan = self.inner.plan(input);
        if self.rows.is_empty() || input.layer >= self.layers {
            return plan;
        }
        // The lock is uncontended (one forward at a time); a poisoned one only loses the
        // trace, never the step.
        if let Ok(mut all) = self.weights.lock() {
            for ((row, cands), out) in self.rows.iter().zip(all.iter_mut()) {
                if *row >= plan.rows() {
                    continue;
                }
                let layer = &mut out[input.layer * cands.len()..(input.layer + 1) * cands.len()];
                for expert in plan.row(*row) {
                    if let Some(c) = cands.iter().position(|c| c.slot == expert.slot) {
                        layer[c] += expert.weight;
                    }
                }
            }
        }
        plan
    }

    fn reads_hidden(&self) -> bool {
        self.inner.reads_hidden()
    }

    fn bind(&self, slot: u32, id: &str) -> bool {
        self.inner.bind(slot, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FixedGate;
    use loramux_kernels::SlotWeight;

    /// Puts all weight on the row's second candidate in odd layers, the first in even ones.
    struct Alternating;

    impl Gate for Alternating {
        fn plan(&self, input: &GateInput<'_>) -> MixPlan {
            let mut plan = MixPlan::new();
            for cands in input.row_candidates {
                let pick = cands[input.layer % 2 % cands.len()];
                plan.push_row(&[SlotWeight {
                    slot: pick.slot,
                    weight: 1.0,
                }]);
            }
            plan
        }
    }

    fn cand(slot: u32, prior: f32) -> Candidate {
        Candidate { slot, prior }
    }

    #[test]
    fn records_each_layers_weights_for_the_chosen_rows_only() {
        let a = [cand(5, 0.5), cand(2, 0.5)];
        let b = [cand(7, 1.0)];
        let rows: Vec<&[Candidate]> = vec![&a, &a, &b];
        let hidden = vec![0.0; 3 * 4];
        let gate = TracingGate::new(&Alternating, 3, vec![(1, &a), (2, &b)]);
        for layer in 0..3 {
            let plan = gate.plan(&GateInput {
                layer,
                hidden: &hidden,
                hidden_size: 4,
                row_candidates: &rows,
            });
            assert_eq!(
                plan,
                Alternating.plan(&GateInput {
                    layer,
                    hidden: &hidden,
                    hidden_size: 4,
                    row_candidates: &rows,
                }),
                "the trace must not change the plan"
            );
        }
        let trace = gate.finish();
        assert_eq!(trace.len(), 2);
        assert_eq!(trace[0].weights, vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        assert_eq!(trace[0].layer(1), &[0.0, 1.0]);
        let mean = trace[0].mean_over_layers();
        assert!((mean[0] - 2.0 / 3.0).abs() < 1e-6 && (mean[1] - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(trace[1].weights, vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn a_fixed_mixture_records_its_priors_in_every_layer() {
        let a = [cand(0, 0.25), cand(1, 0.75)];
        let rows: Vec<&[Candidate]> = vec![&a];
        let gate = TracingGate::new(&FixedGate, 2, vec![(0, &a)]);
        for layer in 0..2 {
            gate.plan(&GateInput {
                layer,
                hidden: &[0.0; 2],
                hidden_size: 2,
                row_candidates: &rows,
            });
        }
        let trace = gate.finish().remove(0);
        assert_eq!(trace.weights, vec![0.25, 0.75, 0.25, 0.75]);
        assert_eq!(trace.mean_over_layers(), vec![0.25, 0.75]);
    }
}
