//! The learned per-token gate (MeteoRA-style): in every layer, each token's hidden state
//! scores the candidate adapters of its sequence; the retrieval prior enters as a bias; the
//! top-k survive and a softmax over them gives the mixing weights.
//!
//! [`LearnedGate`] implements the runtime's `Gate`; [`train`] fits its weights with the base
//! model and the adapters frozen. The gate scores adapters by id, the runtime names them by
//! bank slot: whoever leases adapters binds each slot to its id ([`LearnedGate::bind`]). A
//! candidate the gate was not trained on keeps its retrieval prior, per adapter; the others
//! are still scored.

pub mod train;
mod weights;

#[cfg(test)]
mod tests;

pub use weights::GateWeights;

use loramux_kernels::{MixPlan, SlotWeight};
use loramux_runtime::{prior_row, Gate, GateInput};
use std::sync::RwLock;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateConfig {
    /// Experts kept per token.
    pub top_k: usize,
    /// Weight of `ln(prior)` added to each candidate's logit (0: the gate alone decides).
    pub prior_weight: f32,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            top_k: 2,
            prior_weight: 1.0,
        }
    }
}

pub struct LearnedGate {
    weights: GateWeights,
    config: GateConfig,
    /// Bank slot → expert index of the adapter in it (`None`: unknown to the gate).
    slots: RwLock<Vec<Option<usize>>>,
}

/// Smallest prior that enters the log (a zero prior would be -inf: never chosen at all).
const MIN_PRIOR: f32 = 1e-6;

impl LearnedGate {
    pub fn new(weights: GateWeights, config: GateConfig) -> Self {
        Self {
            weights,
            config: GateConfig {
                top_k: config.top_k.max(1),
                ..config
            },
            slots: RwLock::new(Vec::new()),
        }
    }

    pub fn weights(&self) -> &GateWeights {
        &self.weights
    }

    /// One row's experts. Candidates the gate knows compete for their share of the prior
    /// mass (the sum of their priors): logits plus `ln(prior)`, top-k, softmax, scaled by
    /// that share. A candidate the gate was not trained on keeps its retrieval prior as its
    /// weight, so one new adapter does not switch the gate off for the whole row.
    fn plan_row(
        &self,
        layer: usize,
        h: &[f32],
        cands: &[loramux_runtime::Candidate],
        experts: &[Option<usize>],
        scored: &mut Vec<(f32, u32)>,
        out: &mut Vec<SlotWeight>,
    ) {
        scored.clear();
        out.clear();
        let mut known_mass = 0.0;
        for c in cands {
            match experts.get(c.slot as usize).copied().flatten() {
                Some(e) => {
                    known_mass += c.prior;
                    let bias = self.config.prior_weight * c.prior.max(MIN_PRIOR).ln();
                    scored.push((self.weights.logit(layer, e, h) + bias, c.slot));
                }
                None => out.push(SlotWeight {
                    slot: c.slot,
                    weight: c.prior,
                }),
            }
        }
        if scored.is_empty() {
            return;
        }
        // Highest logit first; the slot breaks ties so plans are deterministic.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(self.config.top_k);
        let top = scored[0].0;
        let total: f32 = scored.iter().map(|(l, _)| (l - top).exp()).sum();
        out.extend(scored.iter().map(|&(l, slot)| SlotWeight {
            slot,
            weight: known_mass * (l - top).exp() / total,
        }));
    }
}

impl Gate for LearnedGate {
    /// Records that bank `slot` holds adapter `id`; returns whether the gate knows it.
    fn bind(&self, slot: u32, id: &str) -> bool {
        let expert = self.weights.expert(id);
        if let Ok(mut slots) = self.slots.write() {
            let i = slot as usize;
            if slots.len() <= i {
                slots.resize(i + 1, None);
            }
            slots[i] = expert;
        }
        expert.is_some()
    }

    fn plan(&self, input: &GateInput<'_>) -> MixPlan {
        let rows = input.row_candidates.len();
        let mut plan = MixPlan::with_capacity(rows, self.config.top_k);
        // Read the slot table once per call, without copying it (this runs in every layer).
        let guard = self.slots.read();
        let experts: &[Option<usize>] = guard.as_deref().map_or(&[], |s| s.as_slice());
        let usable =
            input.layer < self.weights.num_layers && input.hidden_size == self.weights.hidden_size;
        let mut row = Vec::with_capacity(self.config.top_k);
        let mut scored = Vec::new();
        for (r, cands) in input.row_candidates.iter().enumerate() {
            if cands.is_empty() {
                plan.push_row(&[]);
                continue;
            }
            if usable {
                let h = &input.hidden[r * input.hidden_size..(r + 1) * input.hidden_size];
                self.plan_row(input.layer, h, cands, experts, &mut scored, &mut row);
            } else {
                // A gate for another model shape: never guess, use the prior.
                prior_row(cands, &mut row);
            }
            plan.push_row(&row);
        }
        plan
    }
}
