//! When no adapter fits: the similarity under which `auto` serves the base model, learned
//! from prompts the zoo is for and everyday prompts it is not for.
//!
//! A prompt's evidence is its best similarity to any registered text. The threshold is fit
//! on a calibration half (held-out in-domain prompts and half of the committed general
//! prompts) and measured on the other half; `routing.json` beside the zoo manifest records
//! both, and `serve` and `eval` read their retrieval settings from it, so the served router
//! is the measured one.

use crate::tasks::{Split, Suite};
use anyhow::Context;
use loramux_router::{RetrievalConfig, RoutePlan, Router, RouterConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The routing settings of the zoo, beside its manifest.
pub const ROUTING_FILE: &str = "routing.json";

/// Everyday prompts no zoo adapter is for (chat, knowledge, writing, code, ...): even
/// lines calibrate, odd lines test.
const GENERAL_PROMPTS: &str = include_str!("../data/general_prompts.jsonl");

/// Texts fetched from the index per prompt. Every zoo adapter registers ~37 texts: search
/// deep enough that the nearest texts span several adapters, or the runner-up candidates
/// never appear.
pub const ZOO_SEARCH_K: usize = 160;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneralPrompt {
    pub category: String,
    pub prompt: String,
}

/// Which half of a labelled set a prompt belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Calibration,
    Test,
}

impl Half {
    fn of(index: usize) -> Self {
        if index.is_multiple_of(2) {
            Half::Calibration
        } else {
            Half::Test
        }
    }
}

/// The committed general prompts of `half`.
pub fn general_prompts(half: Half) -> anyhow::Result<Vec<GeneralPrompt>> {
    let mut out = Vec::new();
    for (i, line) in GENERAL_PROMPTS.lines().enumerate() {
        let p: GeneralPrompt = serde_json::from_str(line)
            .with_context(|| format!("general_prompts.jsonl line {}", i + 1))?;
        if Half::of(i) == half {
            out.push(p);
        }
    }
    Ok(out)
}

/// In-domain prompts (held-out templates) of `half`, as (task, prompt).
pub fn in_domain_prompts(suite: &Suite, per_task: usize, half: Half) -> Vec<(String, String)> {
    let seed = match half {
        Half::Calibration => 7_001,
        Half::Test => 7_002,
    };
    suite
        .in_domain
        .iter()
        .flat_map(|t| {
            t.generate(Split::Test, seed, per_task)
                .into_iter()
                .map(|e| (t.name().to_string(), e.prompt))
        })
        .collect()
}

/// The threshold that keeps at least `min_base_rate` of the general prompts on the base
/// model and, within that, routes as many in-domain prompts as it can: halfway between the
/// highest general score it must reject and the next score above it (so a prompt scoring
/// exactly a calibration score is not decided by rounding).
pub fn fit_threshold(in_domain: &[f32], general: &[f32], min_base_rate: f64) -> f32 {
    assert!(!general.is_empty(), "no general prompts to calibrate on");
    let mut neg: Vec<f32> = general.to_vec();
    neg.sort_by(f32::total_cmp);
    // Rejected general prompts score strictly under the threshold: the lowest `need` of them.
    let need = ((min_base_rate * neg.len() as f64).ceil() as usize).clamp(1, neg.len());
    let must_reject = neg[need - 1];
    let above = neg
        .iter()
        .chain(in_domain)
        .copied()
        .filter(|&s| s > must_reject)
        .fold(f32::INFINITY, f32::min);
    if above.is_finite() {
        (must_reject + above) / 2.0
    } else {
        must_reject + 1e-3
    }
}

/// How a threshold splits labelled prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitFigures {
    pub general_prompts: usize,
    /// General prompts served by the base model.
    pub general_to_base: f64,
    pub in_domain_prompts: usize,
    /// In-domain prompts routed to some adapter.
    pub in_domain_routed: f64,
    /// In-domain prompts whose top candidate is their own task's adapter.
    pub in_domain_top1: f64,
}

/// The zoo's routing settings and the evidence behind them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingCalibration {
    /// The embedder the similarities come from (a threshold holds for one embedder).
    pub embedder: String,
    pub search_k: usize,
    pub threshold: f32,
    /// The share of general calibration prompts the threshold was fit to keep on base.
    pub min_general_base_rate: f64,
    pub calibration: SplitFigures,
    pub test: SplitFigures,
    pub rebuild: String,
}

impl RoutingCalibration {
    pub fn load(zoo_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = zoo_dir.join(ROUTING_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let cal: Self =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(cal))
    }

    pub fn save(&self, zoo_dir: &Path) -> anyhow::Result<()> {
        let path = zoo_dir.join(ROUTING_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The retrieval settings these figures were measured with, over `base`.
    pub fn apply(&self, base: RetrievalConfig) -> RetrievalConfig {
        RetrievalConfig {
            search_k: self.search_k.max(base.top_n),
            threshold: self.threshold,
            ..base
        }
    }
}

/// The router settings for the zoo at `zoo_dir`: its calibrated threshold when
/// `routing.json` exists, the router's defaults (with a search deep enough for the zoo)
/// otherwise.
pub fn zoo_router_config(zoo_dir: &Path) -> anyhow::Result<RouterConfig> {
    let mut config = RouterConfig::default();
    config.retrieval.search_k = config.retrieval.search_k.max(ZOO_SEARCH_K);
    if let Some(cal) = RoutingCalibration::load(zoo_dir)? {
        config.retrieval = cal.apply(config.retrieval);
    }
    Ok(config)
}

/// A prompt's best similarity and top candidate under a router that never falls back.
pub fn best_match(router: &Router, prompt: &str) -> anyhow::Result<Option<(String, f32)>> {
    Ok(match router.route(prompt)? {
        RoutePlan::Auto { candidates, .. } => candidates
            .first()
            .map(|c| (c.id.as_str().to_string(), c.similarity)),
        RoutePlan::Base | RoutePlan::Fixed { .. } => None,
    })
}

/// Scored prompts of one half: general best similarities, in-domain (task, top-1, score).
pub struct ScoredHalf {
    pub general: Vec<f32>,
    pub in_domain: Vec<(String, String, f32)>,
}

impl ScoredHalf {
    pub fn figures(&self, threshold: f32) -> SplitFigures {
        let share = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        let routed = |s: f32| s >= threshold;
        SplitFigures {
            general_prompts: self.general.len(),
            general_to_base: share(
                self.general.iter().filter(|&&s| !routed(s)).count(),
                self.general.len(),
            ),
            in_domain_prompts: self.in_domain.len(),
            in_domain_routed: share(
                self.in_domain.iter().filter(|(_, _, s)| routed(*s)).count(),
                self.in_domain.len(),
            ),
            in_domain_top1: share(
                self.in_domain
                    .iter()
                    .filter(|(task, top, s)| routed(*s) && task == top)
                    .count(),
                self.in_domain.len(),
            ),
        }
    }

    pub fn in_domain_scores(&self) -> Vec<f32> {
        self.in_domain.iter().map(|(_, _, s)| *s).collect()
    }
}

/// Scores `half` with `router` (which must not fall back: threshold -1), `on_prompt`
/// hearing each prompt scored.
pub fn score_half(
    router: &Router,
    suite: &Suite,
    per_task: usize,
    half: Half,
    on_prompt: &mut dyn FnMut(),
) -> anyhow::Result<ScoredHalf> {
    let mut general = Vec::new();
    for p in general_prompts(half)? {
        let (_, s) = best_match(router, &p.prompt)?.context("the index is empty")?;
        general.push(s);
        on_prompt();
    }
    let mut in_domain = Vec::new();
    for (task, prompt) in in_domain_prompts(suite, per_task, half) {
        let (top, s) = best_match(router, &prompt)?.context("the index is empty")?;
        in_domain.push((task, top, s));
        on_prompt();
    }
    Ok(ScoredHalf { general, in_domain })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_general_prompts_parse_split_evenly_and_cover_every_category() {
        let cal = general_prompts(Half::Calibration).unwrap();
        let test = general_prompts(Half::Test).unwrap();
        assert!(cal.len() + test.len() >= 200);
        assert!(cal.len().abs_diff(test.len()) <= 1);
        let cats = |v: &[GeneralPrompt]| {
            let mut c: Vec<String> = v.iter().map(|p| p.category.clone()).collect();
            c.sort();
            c.dedup();
            c
        };
        assert_eq!(cats(&cal), cats(&test));
        assert!(cats(&cal).len() >= 4);
        assert_eq!(cal[0].prompt, "Give me three tips for learning a language.");
    }

    #[test]
    fn the_threshold_rejects_the_asked_share_of_general_prompts_and_keeps_the_rest_routed() {
        let general = [0.10, 0.20, 0.25, 0.30, 0.38, 0.41, 0.15, 0.22, 0.33, 0.36];
        let in_domain = [0.45, 0.50, 0.60, 0.39, 0.80];
        let t = fit_threshold(&in_domain, &general, 0.9);
        // Nine of ten general prompts must fall under it: the 0.38 one, not the 0.41 one.
        assert!(t > 0.38 && t <= 0.39, "{t}");
        let rejected = general.iter().filter(|&&s| s < t).count();
        assert_eq!(rejected, 9);
        assert_eq!(in_domain.iter().filter(|&&s| s >= t).count(), 5);
        // Asking for all of them moves it over the highest general score, losing 0.39.
        let all = fit_threshold(&in_domain, &general, 1.0);
        assert!(general.iter().all(|&s| s < all));
        assert!(all > 0.41 && all < 0.45, "{all}");
    }

    #[test]
    fn figures_count_what_a_threshold_routes() {
        let half = ScoredHalf {
            general: vec![0.1, 0.5],
            in_domain: vec![
                ("a".into(), "a".into(), 0.6),
                ("a".into(), "b".into(), 0.7),
                ("b".into(), "b".into(), 0.2),
            ],
        };
        let f = half.figures(0.4);
        assert_eq!(f.general_to_base, 0.5);
        assert!((f.in_domain_routed - 2.0 / 3.0).abs() < 1e-12);
        assert!((f.in_domain_top1 - 1.0 / 3.0).abs() < 1e-12);
    }
}
