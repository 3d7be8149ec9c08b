//! `RoutePlan`: which adapters serve a request, and `Choice`: what the request asked for.

use loramux_runtime::AdapterId;
use serde::{Deserialize, Serialize};

use crate::{Result, RouterError};

/// One retrieved adapter: its best similarity to the prompt and its prior weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteCandidate {
    pub id: AdapterId,
    /// Highest cosine similarity between the prompt and one of the adapter's texts.
    pub similarity: f32,
    /// Softmax of the similarities over the candidates; sums to 1.
    pub prior: f32,
    /// How many of the retrieved texts belong to this adapter.
    pub hits: usize,
}

/// Which adapters a request runs with (DESIGN: `Base | Fixed | Auto`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoutePlan {
    /// The base model alone.
    Base,
    /// Given adapters with given weights (summing to 1).
    Fixed { adapters: Vec<(AdapterId, f32)> },
    /// Retrieved candidates; the gate mixes up to `top_k` of them per token.
    Auto {
        candidates: Vec<RouteCandidate>,
        top_k: usize,
    },
}

/// What a request asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Retrieve candidates for the prompt.
    Auto,
    Base,
    Named(AdapterId),
    /// An explicit mixture; weights are positive and are normalized to sum to 1.
    Weighted(Vec<(AdapterId, f32)>),
}

impl Choice {
    /// Parses the request's model field: `auto`, `base`, or an adapter id.
    pub fn parse(model: &str) -> Result<Self> {
        Ok(match model {
            "auto" => Self::Auto,
            "base" => Self::Base,
            name => Self::Named(AdapterId::new(name)?),
        })
    }
}

/// Weights of an explicit mixture: finite, positive, no id twice; normalized to sum 1.
pub(crate) fn normalize_weights(list: &[(AdapterId, f32)]) -> Result<Vec<(AdapterId, f32)>> {
    let bad = |reason: String| Err(RouterError::InvalidChoice { reason });
    if list.is_empty() {
        return bad("the adapter list is empty".into());
    }
    let mut seen = std::collections::HashSet::new();
    for (id, w) in list {
        if !w.is_finite() || *w <= 0.0 {
            return bad(format!("weight {w} for {id} must be a positive number"));
        }
        if !seen.insert(id) {
            return bad(format!("{id} is listed twice"));
        }
    }
    let total: f32 = list.iter().map(|(_, w)| w).sum();
    Ok(list.iter().map(|(id, w)| (id.clone(), w / total)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AdapterId {
        AdapterId::new(s).unwrap()
    }

    #[test]
    fn parses_the_model_field() {
        assert_eq!(Choice::parse("auto").unwrap(), Choice::Auto);
        assert_eq!(Choice::parse("base").unwrap(), Choice::Base);
        assert_eq!(Choice::parse("sql").unwrap(), Choice::Named(id("sql")));
        assert!(Choice::parse("Not An Id").is_err());
    }

    #[test]
    fn weights_are_checked_and_normalized() {
        let w = normalize_weights(&[(id("a"), 3.0), (id("b"), 1.0)]).unwrap();
        assert_eq!(w, [(id("a"), 0.75), (id("b"), 0.25)]);
        for bad in [
            vec![],
            vec![(id("a"), 0.0)],
            vec![(id("a"), f32::NAN)],
            vec![(id("a"), 1.0), (id("a"), 1.0)],
        ] {
            assert!(
                matches!(
                    normalize_weights(&bad),
                    Err(RouterError::InvalidChoice { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn plans_serialize_with_a_kind_tag() {
        let json = serde_json::to_value(RoutePlan::Fixed {
            adapters: vec![(id("a"), 1.0)],
        })
        .unwrap();
        assert_eq!(json["kind"], "fixed");
        assert_eq!(
            serde_json::to_value(RoutePlan::Base).unwrap()["kind"],
            "base"
        );
    }
}
