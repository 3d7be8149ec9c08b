//! Retrieval (LoraRetriever-style): embed the prompt, find the nearest adapter texts,
//! aggregate per adapter, keep the top N with a softmax prior, or fall back to the base
//! model when nothing is similar enough.
//!
//! An adapter scores the best similarity among its texts (max, not mean: one example that
//! matches the prompt closely is the evidence; an adapter with many loosely related
//! examples should not win by volume).

use std::collections::HashMap;

use loramux_index::{AdapterId, Embedder, Hit, VectorIndex};

use crate::plan::{RouteCandidate, RoutePlan};
use crate::{Result, RouterError};

#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalConfig {
    /// Texts fetched from the index before aggregating per adapter.
    pub search_k: usize,
    /// Candidates kept.
    pub top_n: usize,
    /// Softmax temperature of the prior over candidate similarities.
    pub temperature: f32,
    /// Below this best similarity the request runs on the base model.
    pub threshold: f32,
    /// Experts per token the gate may mix (carried in the plan).
    pub top_k: usize,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            search_k: 40,
            top_n: 3,
            temperature: 0.05,
            // Calibrated on all-MiniLM-L6-v2 with the test set of router/tests: held-out
            // paraphrases score 0.22 and up against their adapter's best text, unrelated
            // prompts ("capital of Mongolia", gibberish) 0.17 at most. Retune per embedder.
            threshold: 0.2,
            top_k: 2,
        }
    }
}

impl RetrievalConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(RouterError::Config {
                field,
                reason: reason.into(),
            })
        };
        if self.top_n == 0 {
            return bad("top_n", "must be at least 1");
        }
        if self.search_k < self.top_n {
            return bad("search_k", "must be at least top_n");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad("temperature", "must be a positive number");
        }
        if !(-1.0..=1.0).contains(&self.threshold) {
            return bad("threshold", "a cosine similarity lies in [-1, 1]");
        }
        if self.top_k == 0 || self.top_k > self.top_n {
            return bad("top_k", "must be in 1..=top_n");
        }
        Ok(())
    }
}

/// Embeds `prompt` and plans from the index's nearest texts.
pub fn retrieve(
    embedder: &dyn Embedder,
    index: &VectorIndex,
    prompt: &str,
    cfg: &RetrievalConfig,
) -> Result<RoutePlan> {
    let query = {
        let _span = tracing::debug_span!("embed_prompt").entered();
        embedder.embed_one(prompt)?
    };
    let hits = {
        let _span = tracing::debug_span!("search", k = cfg.search_k).entered();
        index.search(&query, cfg.search_k)?
    };
    plan_from_hits(&hits, cfg)
}

/// Aggregates hits per adapter (best similarity), keeps the top N, weighs them by
/// softmax(similarity / temperature); `Base` when the best is under the threshold.
pub fn plan_from_hits(hits: &[Hit], cfg: &RetrievalConfig) -> Result<RoutePlan> {
    let mut per: HashMap<&str, (f32, usize)> = HashMap::new();
    for h in hits {
        let e = per.entry(h.key.as_str()).or_insert((f32::NEG_INFINITY, 0));
        e.0 = e.0.max(h.similarity);
        e.1 += 1;
    }
    let mut ranked: Vec<(&str, f32, usize)> =
        per.into_iter().map(|(k, (s, n))| (k, s, n)).collect();
    // Best similarity first; more hits, then the name, break ties so plans are deterministic.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(b.0)));
    ranked.truncate(cfg.top_n);
    let Some(&(_, best, _)) = ranked.first() else {
        return Ok(RoutePlan::Base);
    };
    if best < cfg.threshold {
        return Ok(RoutePlan::Base);
    }
    let exps: Vec<f32> = ranked
        .iter()
        .map(|(_, s, _)| ((s - best) / cfg.temperature).exp())
        .collect();
    let total: f32 = exps.iter().sum();
    let mut candidates = Vec::with_capacity(ranked.len());
    for ((key, similarity, hits), e) in ranked.iter().zip(exps) {
        candidates.push(RouteCandidate {
            id: AdapterId::new(key)?,
            similarity: *similarity,
            prior: e / total,
            hits: *hits,
        });
    }
    let top_k = cfg.top_k.min(candidates.len());
    Ok(RoutePlan::Auto { candidates, top_k })
}

#[cfg(test)]
mod tests {
    use super::*;
    use loramux_index::{AdapterId, TextKind};

    fn hit(k: &str, s: f32) -> Hit {
        Hit {
            key: AdapterId::new(k).unwrap(),
            kind: TextKind::Example,
            similarity: s,
        }
    }

    #[test]
    fn aggregates_by_best_hit_and_weighs_with_a_softmax() {
        let cfg = RetrievalConfig {
            top_n: 2,
            ..Default::default()
        };
        let hits = [
            hit("a", 0.6),
            hit("b", 0.7),
            hit("a", 0.65),
            hit("c", 0.5),
            hit("b", 0.1),
        ];
        let RoutePlan::Auto { candidates, top_k } = plan_from_hits(&hits, &cfg).unwrap() else {
            panic!("expected candidates")
        };
        assert_eq!(top_k, 2);
        let names: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!((candidates[0].hits, candidates[1].hits), (2, 2));
        let expected_b = 1.0 / (1.0 + (-0.05f32 / 0.05).exp());
        assert!((candidates[0].prior - expected_b).abs() < 1e-5);
        assert!((candidates.iter().map(|c| c.prior).sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn falls_back_to_base_below_the_threshold_or_without_hits() {
        let cfg = RetrievalConfig::default();
        assert_eq!(
            plan_from_hits(&[hit("a", 0.19)], &cfg).unwrap(),
            RoutePlan::Base
        );
        assert_eq!(plan_from_hits(&[], &cfg).unwrap(), RoutePlan::Base);
    }

    #[test]
    fn config_validation_names_the_field() {
        for (cfg, field) in [
            (
                RetrievalConfig {
                    top_n: 0,
                    ..Default::default()
                },
                "top_n",
            ),
            (
                RetrievalConfig {
                    search_k: 1,
                    ..Default::default()
                },
                "search_k",
            ),
            (
                RetrievalConfig {
                    temperature: 0.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                RetrievalConfig {
                    threshold: 2.0,
                    ..Default::default()
                },
                "threshold",
            ),
            (
                RetrievalConfig {
                    top_k: 4,
                    ..Default::default()
                },
                "top_k",
            ),
        ] {
            assert!(
                matches!(cfg.validate(), Err(RouterError::Config { field: f, .. }) if f == field)
            );
        }
        assert!(RetrievalConfig::default().validate().is_ok());
    }
}
