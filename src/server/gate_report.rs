//! The learned gate's weights for a response, as the `routing.gate_weights` object reports
//! them: per completion token (averaged over layers), per layer (averaged over the tokens)
//! and overall, in the order of the routing's adapters.

use loramux_runtime::engine::TokenGateWeights;
use serde::Serialize;

/// Weights are rounded to this many decimals: enough to read, short to send.
const DECIMALS: i32 = 6;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateWeights {
    /// The column order of every weight list below.
    pub adapters: Vec<String>,
    /// Each adapter's weight over all completion tokens and layers.
    pub mean: Vec<f64>,
    /// Per layer (index = layer), each adapter's weight averaged over the completion tokens.
    pub per_layer: Vec<Vec<f64>>,
    /// Per completion token, each adapter's weight averaged over the layers.
    pub per_token: Vec<TokenWeights>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenWeights {
    pub token: String,
    pub weights: Vec<f64>,
}

/// Collects the engine's per-token gate events for one response.
#[derive(Debug, Default)]
pub struct GateTally {
    /// Weights announced for the token that comes next.
    pending: Option<TokenGateWeights>,
    layers: usize,
    /// `[layer * candidates + candidate]`, summed over the tokens.
    layer_sums: Vec<f32>,
    tokens: Vec<(u32, Vec<f32>)>,
}

impl GateTally {
    pub fn gate(&mut self, weights: TokenGateWeights) {
        self.pending = Some(weights);
    }

    /// Token `id` arrived: the pending weights were its.
    pub fn token(&mut self, id: u32) {
        let Some(w) = self.pending.take() else {
            return;
        };
        if self.layer_sums.len() != w.weights.len() {
            if !self.tokens.is_empty() {
                return; // a different shape mid-response cannot happen; never mix shapes
            }
            self.layer_sums = vec![0.0; w.weights.len()];
            self.layers = w.layers;
        }
        for (sum, x) in self.layer_sums.iter_mut().zip(&w.weights) {
            *sum += x;
        }
        self.tokens.push((id, w.mean_over_layers()));
    }

    /// The report, or `None` when no token carried gate weights (an ungated response).
    pub fn report(
        &self,
        adapters: &[String],
        token_text: impl Fn(u32) -> String,
    ) -> Option<GateWeights> {
        let n = self.tokens.len();
        if n == 0 || self.layers == 0 {
            return None;
        }
        let candidates = self.layer_sums.len() / self.layers;
        if candidates != adapters.len() {
            return None;
        }
        let per_layer: Vec<Vec<f64>> = self
            .layer_sums
            .chunks_exact(candidates.max(1))
            .map(|l| l.iter().map(|s| round(s / n as f32)).collect())
            .collect();
        let mean = (0..candidates)
            .map(|c| {
                let total: f32 = self.tokens.iter().map(|(_, w)| w[c]).sum();
                round(total / n as f32)
            })
            .collect();
        let per_token = self
            .tokens
            .iter()
            .map(|(id, w)| TokenWeights {
                token: token_text(*id),
                weights: w.iter().copied().map(round).collect(),
            })
            .collect();
        Some(GateWeights {
            adapters: adapters.to_vec(),
            mean,
            per_layer,
            per_token,
        })
    }
}

/// In f64, so the JSON says 0.8269 and not the f32 nearest to it (0.8269000053405762).
fn round(x: f32) -> f64 {
    let scale = 10f64.powi(DECIMALS);
    (x as f64 * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(per_layer: &[[f32; 2]]) -> TokenGateWeights {
        TokenGateWeights {
            layers: per_layer.len(),
            candidates: 2,
            weights: per_layer.iter().flatten().copied().collect(),
        }
    }

    #[test]
    fn averages_per_token_per_layer_and_overall() {
        let mut tally = GateTally::default();
        tally.gate(weights(&[[1.0, 0.0], [0.5, 0.5]]));
        tally.token(7);
        tally.token(8); // no weights announced: not counted
        tally.gate(weights(&[[0.0, 1.0], [0.0, 1.0]]));
        tally.token(9);
        let ids = ["a".to_string(), "b".to_string()];
        let report = tally.report(&ids, |id| format!("t{id}")).unwrap();
        assert_eq!(report.adapters, ids);
        assert_eq!(report.per_token.len(), 2);
        assert_eq!(report.per_token[0].token, "t7");
        assert_eq!(report.per_token[0].weights, vec![0.75, 0.25]);
        assert_eq!(report.per_token[1].weights, vec![0.0, 1.0]);
        assert_eq!(report.per_layer, vec![vec![0.5, 0.5], vec![0.25, 0.75]]);
        assert_eq!(report.mean, vec![0.375, 0.625]);
    }

    #[test]
    fn no_gate_events_no_report() {
        let mut tally = GateTally::default();
        tally.token(3);
        assert!(tally.report(&["a".into()], |_| String::new()).is_none());
    }

    #[test]
    fn a_column_count_that_does_not_match_the_adapters_gives_no_report() {
        let mut tally = GateTally::default();
        tally.gate(weights(&[[0.5, 0.5]]));
        tally.token(1);
        assert!(tally.report(&["only".into()], |_| String::new()).is_none());
    }
}
