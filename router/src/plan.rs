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

impl RoutePlan {
    /// The plan for an explicit choice (the base model, one adapter, a weighted list), each
    /// id checked with `registered`; `None` for `Auto`, which needs retrieval. Every
    /// catalog resolves explicit choices here, so they follow one set of rules.
    pub fn explicit(
        choice: &Choice,
        registered: impl Fn(&AdapterId) -> bool,
    ) -> Option<Result<RoutePlan>> {
        let check = |id: &AdapterId| {
            if registered(id) {
                Ok(())
            } else {
                Err(RouterError::UnknownAdapter { id: id.to_string() })
            }
        };
        Some(match choice {
            Choice::Auto => return None,
            Choice::Base => Ok(RoutePlan::Base),
            Choice::Named(id) => check(id).map(|()| RoutePlan::Fixed {
                adapters: vec![(id.clone(), 1.0)],
            }),
            Choice::Weighted(list) => normalize_weights(list).and_then(|adapters| {
                adapters.iter().try_for_each(|(id, _)| check(id))?;
                Ok(RoutePlan::Fixed { adapters })
            }),
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
    // Summed in f64: relative weights near f32::MAX would overflow an f32 sum to infinity
    // and normalize to zeros.
    let total: f64 = list.iter().map(|(_, w)| *w as f64).sum();
    Ok(list
        .iter()
        .map(|(id, w)| (id.clone(), (*w as f64 / total) as f32))
        .collect())
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
        // Huge relative weights stay a proper mixture.
        let w = normalize_weights(&[(id("a"), 3e38), (id("b"), 3e38), (id("c"), 1e30)]).unwrap();
        assert_eq!(w[0].1, 0.5);
        assert!(w.iter().all(|(_, x)| x.is_finite()));
        for bad in [
            vec![],
            vec![(id("a"), 0.0)],
            vec![(id("a"), 1.0), (id("b"), -5.0)],
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
    fn explicit_choices_are_checked_against_the_registered_ids() {
        let known = |i: &AdapterId| i.as_str() != "ghost";
        assert!(RoutePlan::explicit(&Choice::Auto, known).is_none());
        assert_eq!(
            RoutePlan::explicit(&Choice::Base, known).unwrap().unwrap(),
            RoutePlan::Base
        );
        let two = Choice::Weighted(vec![(id("a"), 1.0), (id("b"), 3.0)]);
        assert_eq!(
            RoutePlan::explicit(&two, known).unwrap().unwrap(),
            RoutePlan::Fixed {
                adapters: vec![(id("a"), 0.25), (id("b"), 0.75)]
            }
        );
        for bad in [
            Choice::Named(id("ghost")),
            Choice::Weighted(vec![(id("a"), 1.0), (id("ghost"), 1.0)]),
        ] {
            assert!(matches!(
                RoutePlan::explicit(&bad, known).unwrap(),
                Err(RouterError::UnknownAdapter { .. })
            ));
        }
        let twice = Choice::Weighted(vec![(id("a"), 1.0), (id("a"), 1.0)]);
        assert!(matches!(
            RoutePlan::explicit(&twice, known).unwrap(),
            Err(RouterError::InvalidChoice { .. })
        ));
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
