//! Routing strategies the harness compares, and the adapter mixture each one picks for a
//! prompt: a pure function of the strategy, the prompt's own task and its retrieval.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a prompt's adapters are chosen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// No adapter.
    Base,
    /// The task's own adapter: perfect selection (in-domain only).
    Oracle,
    /// The best retrieved adapter alone.
    RetrievalTop1,
    /// The retrieved candidates mixed with their prior weights (LoraRetriever's mixture).
    RetrievalMixture,
    /// Every adapter of the zoo with equal weight.
    Uniform,
    /// One given adapter for every prompt.
    Single(String),
    /// The retrieved candidates mixed per token by the learned gate, keeping the top k.
    Gate(usize),
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Base => f.write_str("base"),
            Self::Oracle => f.write_str("oracle"),
            Self::RetrievalTop1 => f.write_str("retrieval_top1"),
            Self::RetrievalMixture => f.write_str("retrieval_mixture"),
            Self::Uniform => f.write_str("uniform"),
            Self::Single(id) => write!(f, "single:{id}"),
            Self::Gate(k) => write!(f, "gate_top{k}"),
        }
    }
}

impl Strategy {
    /// Strategies that are not one fixed adapter: the rows of the headline table.
    pub fn headline(in_domain: bool) -> Vec<Strategy> {
        let mut s = vec![Self::Base];
        if in_domain {
            s.push(Self::Oracle);
        }
        s.extend([Self::RetrievalTop1, Self::RetrievalMixture, Self::Uniform]);
        s
    }

    pub fn is_single(&self) -> bool {
        matches!(self, Self::Single(_))
    }

    /// The top-k of the learned gate this strategy runs with, if it is a gate strategy.
    pub fn gate_top_k(&self) -> Option<usize> {
        match self {
            Self::Gate(k) => Some(*k),
            _ => None,
        }
    }
}

/// Retrieved candidates of a prompt, best first, with prior weights summing to 1 (empty when
/// the router fell back to the base model).
pub type Retrieved = [(String, f32)];

/// The `(adapter, weight)` list `strategy` uses for a prompt of task `own` (the oracle needs
/// it; `None` for prompts without a single own adapter) over the zoo `all`.
pub fn mixture(
    strategy: &Strategy,
    own: Option<&str>,
    retrieved: &Retrieved,
    all: &[String],
) -> Vec<(String, f32)> {
    match strategy {
        Strategy::Base => Vec::new(),
        Strategy::Oracle => own
            .filter(|o| all.iter().any(|a| a == o))
            .map(|o| vec![(o.to_string(), 1.0)])
            .unwrap_or_default(),
        Strategy::RetrievalTop1 => retrieved
            .first()
            .map(|(id, _)| vec![(id.clone(), 1.0)])
            .unwrap_or_default(),
        // The gate sees the same candidates and priors; it reweighs them per token.
        Strategy::RetrievalMixture | Strategy::Gate(_) => {
            let total: f32 = retrieved.iter().map(|(_, w)| w).sum();
            if total <= 0.0 {
                return Vec::new();
            }
            retrieved
                .iter()
                .map(|(id, w)| (id.clone(), w / total))
                .collect()
        }
        Strategy::Uniform => {
            let w = 1.0 / all.len().max(1) as f32;
            all.iter().map(|id| (id.clone(), w)).collect()
        }
        Strategy::Single(id) => vec![(id.clone(), 1.0)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zoo() -> Vec<String> {
        ["a", "b", "c", "d"].map(String::from).to_vec()
    }

    #[test]
    fn each_strategy_picks_its_adapters() {
        let retrieved = vec![("c".to_string(), 0.6), ("a".to_string(), 0.2)];
        let all = zoo();
        assert!(mixture(&Strategy::Base, Some("a"), &retrieved, &all).is_empty());
        assert_eq!(
            mixture(&Strategy::Oracle, Some("b"), &retrieved, &all),
            vec![("b".to_string(), 1.0)]
        );
        assert!(
            mixture(&Strategy::Oracle, Some("zz"), &retrieved, &all).is_empty(),
            "no oracle for a task without an adapter"
        );
        assert_eq!(
            mixture(&Strategy::RetrievalTop1, None, &retrieved, &all),
            vec![("c".to_string(), 1.0)]
        );
        let mix = mixture(&Strategy::RetrievalMixture, None, &retrieved, &all);
        assert_eq!(mix.len(), 2);
        assert!((mix[0].1 - 0.75).abs() < 1e-6 && (mix[1].1 - 0.25).abs() < 1e-6);
        let uni = mixture(&Strategy::Uniform, None, &retrieved, &all);
        assert_eq!(mixture(&Strategy::Gate(1), None, &retrieved, &all), mix);
        assert_eq!(uni.len(), 4);
        assert!(uni.iter().all(|(_, w)| (*w - 0.25).abs() < 1e-6));
        assert_eq!(
            mixture(&Strategy::Single("d".into()), Some("a"), &retrieved, &all),
            vec![("d".to_string(), 1.0)]
        );
    }

    #[test]
    fn retrieval_fallback_means_base() {
        let all = zoo();
        assert!(mixture(&Strategy::RetrievalTop1, None, &[], &all).is_empty());
        assert!(mixture(&Strategy::RetrievalMixture, None, &[], &all).is_empty());
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(Strategy::RetrievalMixture.to_string(), "retrieval_mixture");
        assert_eq!(Strategy::Single("x".into()).to_string(), "single:x");
        assert_eq!(Strategy::Gate(2).to_string(), "gate_top2");
        assert_eq!(Strategy::headline(true).len(), 5);
        assert_eq!(Strategy::headline(false).len(), 4);
    }
}
