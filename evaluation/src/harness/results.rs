//! What an evaluation run found: per-item outcomes folded into the tables of the report,
//! and the targets checked against them.

use super::items::Kind;
use super::strategy::Strategy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One scored generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub strategy: Strategy,
    pub kind: Kind,
    pub task: String,
    pub correct: usize,
    pub parts: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    pub strategy: String,
    pub kind: Kind,
    pub task: String,
    pub correct: usize,
    pub total: usize,
    pub exact_match: f64,
}

/// Exact match of a strategy on a kind, averaged over tasks (each task weighs the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AverageRow {
    pub strategy: String,
    pub kind: Kind,
    pub exact_match: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalRow {
    pub task: String,
    pub prompts: usize,
    pub top1: f64,
    pub top3: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputRow {
    pub strategy: String,
    pub requests: usize,
    pub generated_tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRow {
    pub name: String,
    pub value: f64,
    pub target: String,
    pub met: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub strategy: String,
    pub task: String,
    pub prompt: String,
    pub output: String,
    pub expected: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResults {
    pub suite: String,
    pub quick: bool,
    pub seconds: f64,
    pub zoo: Vec<String>,
    /// The strategies that are not one fixed adapter, in table order.
    #[serde(default)]
    pub strategies: Vec<String>,
    pub retrieval: Vec<RetrievalRow>,
    pub retrieval_top1: f64,
    pub retrieval_top3: f64,
    /// Retrieval on the hand-written wild prompts of the same tasks.
    #[serde(default)]
    pub retrieval_wild_top1: f64,
    #[serde(default)]
    pub retrieval_wild_top3: f64,
    /// Composite prompts whose retrieved candidates hold both parts' adapters.
    #[serde(default)]
    pub composite_candidates_both: f64,
    pub scores: Vec<ScoreRow>,
    pub averages: Vec<AverageRow>,
    pub throughput: Vec<ThroughputRow>,
    pub targets: Vec<TargetRow>,
    pub samples: Vec<Sample>,
}

impl EvalResults {
    pub fn average(&self, strategy: &str, kind: Kind) -> Option<f64> {
        self.averages
            .iter()
            .find(|a| a.strategy == strategy && a.kind == kind)
            .map(|a| a.exact_match)
    }

    /// The single adapter with the best average on `kind`.
    pub fn best_single(&self, kind: Kind) -> Option<(&str, f64)> {
        self.averages
            .iter()
            .filter(|a| a.kind == kind && a.strategy.starts_with("single:"))
            .max_by(|a, b| a.exact_match.total_cmp(&b.exact_match))
            .map(|a| (a.strategy.trim_start_matches("single:"), a.exact_match))
    }
}

/// Per (strategy, kind, task) sums, in a stable order.
pub fn score_rows(outcomes: &[Outcome]) -> Vec<ScoreRow> {
    let mut sums: BTreeMap<(String, Kind, String), (usize, usize)> = BTreeMap::new();
    for o in outcomes {
        let e = sums
            .entry((o.strategy.to_string(), o.kind, o.task.clone()))
            .or_default();
        e.0 += o.correct;
        e.1 += o.parts;
    }
    sums.into_iter()
        .map(|((strategy, kind, task), (correct, total))| ScoreRow {
            strategy,
            kind,
            task,
            correct,
            total,
            exact_match: ratio(correct, total),
        })
        .collect()
}

/// Macro averages: each task's exact match weighs the same. Composite prompts count as one
/// task, scored per part.
pub fn average_rows(rows: &[ScoreRow]) -> Vec<AverageRow> {
    let mut groups: BTreeMap<(String, Kind), (usize, usize, f64)> = BTreeMap::new();
    for r in rows {
        let g = groups.entry((r.strategy.clone(), r.kind)).or_default();
        if r.kind == Kind::Composite {
            g.0 += r.correct;
            g.1 += r.total;
        } else {
            g.2 += r.exact_match;
            g.0 += 1;
        }
    }
    groups
        .into_iter()
        .map(|((strategy, kind), (a, b, sum))| AverageRow {
            strategy,
            kind,
            exact_match: if kind == Kind::Composite {
                ratio(a, b)
            } else {
                sum / a.max(1) as f64
            },
        })
        .collect()
}

pub fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The targets, each with the figure it is judged on.
pub fn check_targets(r: &EvalResults) -> Vec<TargetRow> {
    let mut out = vec![TargetRow {
        name: "retrieval top-1 accuracy, in-domain test prompts".into(),
        value: r.retrieval_top1,
        target: ">= 0.95".into(),
        met: r.retrieval_top1 >= 0.95,
    }];
    // A run limited to some strategies (`--strategies`) checks only what it ran.
    let ind = |s: &str| r.average(s, Kind::InDomain);
    if let (Some(oracle), Some(top1)) = (ind("oracle"), ind("retrieval_top1")) {
        let gap = oracle - top1;
        out.push(TargetRow {
            name: "oracle minus retrieval top-1, in-domain exact match (points)".into(),
            value: gap * 100.0,
            target: "<= 3".into(),
            met: gap * 100.0 <= 3.0,
        });
    }
    let worst = r
        .scores
        .iter()
        .filter(|s| s.kind == Kind::InDomain && s.strategy == "oracle")
        .map(|s| s.exact_match)
        .fold(f64::INFINITY, f64::min);
    if worst.is_finite() {
        out.push(TargetRow {
            name: "worst task with its own adapter (oracle), in-domain exact match".into(),
            value: worst,
            target: ">= 0.80".into(),
            met: worst >= 0.8,
        });
    }
    let mixtures: Vec<&str> = r
        .strategies
        .iter()
        .map(String::as_str)
        .filter(|s| *s == "retrieval_mixture" || *s == "uniform" || s.starts_with("gate_"))
        .collect();
    if let Some((_, single)) = r.best_single(Kind::OutOfDomain) {
        let mix = mixtures
            .iter()
            .filter_map(|s| r.average(s, Kind::OutOfDomain))
            .fold(0.0, f64::max);
        out.push(TargetRow {
            name: "best mixture minus best single adapter, out-of-domain exact match (points)"
                .into(),
            value: (mix - single) * 100.0,
            target: "> 0".into(),
            met: mix > single,
        });
    }
    let gates: Vec<&str> = mixtures
        .iter()
        .copied()
        .filter(|s| s.starts_with("gate_"))
        .collect();
    let best_gate = |kind| {
        gates
            .iter()
            .filter_map(|s| r.average(s, kind).map(|v| (v, *s)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    if let Some((gate, name)) = best_gate(Kind::Composite) {
        let single = r.best_single(Kind::Composite).map_or(0.0, |(_, v)| v);
        let mixture = r
            .average("retrieval_mixture", Kind::Composite)
            .unwrap_or(0.0);
        let rival = single.max(mixture);
        out.push(TargetRow {
            name: format!(
                "{name} minus the better of best single and retrieval mixture, composite per-part exact match (points)"
            ),
            value: (gate - rival) * 100.0,
            target: "> 0".into(),
            met: gate > rival,
        });
    }
    if let (Some((gate, name)), Some(oracle)) = (best_gate(Kind::InDomain), ind("oracle")) {
        let gap = oracle - gate;
        out.push(TargetRow {
            name: format!("oracle minus {name}, in-domain exact match (points)"),
            value: gap * 100.0,
            target: "<= 3".into(),
            met: gap * 100.0 <= 3.0,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(
        strategy: Strategy,
        kind: Kind,
        task: &str,
        correct: usize,
        parts: usize,
    ) -> Outcome {
        Outcome {
            strategy,
            kind,
            task: task.into(),
            correct,
            parts,
        }
    }

    #[test]
    fn averages_weigh_tasks_equally_and_composites_by_part() {
        let outcomes = vec![
            outcome(Strategy::Base, Kind::InDomain, "a", 1, 1),
            outcome(Strategy::Base, Kind::InDomain, "a", 1, 1),
            outcome(Strategy::Base, Kind::InDomain, "a", 0, 1),
            outcome(Strategy::Base, Kind::InDomain, "a", 0, 1),
            outcome(Strategy::Base, Kind::InDomain, "b", 1, 1),
            outcome(Strategy::Base, Kind::Composite, "a+b", 1, 2),
            outcome(Strategy::Base, Kind::Composite, "b+a", 2, 2),
        ];
        let rows = score_rows(&outcomes);
        let a = rows.iter().find(|r| r.task == "a").unwrap();
        assert_eq!((a.correct, a.total), (2, 4));
        let avg = average_rows(&rows);
        let ind = avg.iter().find(|r| r.kind == Kind::InDomain).unwrap();
        assert!(
            (ind.exact_match - 0.75).abs() < 1e-12,
            "mean of 0.5 and 1.0"
        );
        let comp = avg.iter().find(|r| r.kind == Kind::Composite).unwrap();
        assert!((comp.exact_match - 0.75).abs() < 1e-12, "3 of 4 parts");
    }

    #[test]
    fn targets_follow_the_figures() {
        let mut r = EvalResults {
            suite: "t".into(),
            quick: true,
            seconds: 0.0,
            zoo: vec![],
            strategies: ["oracle", "retrieval_top1", "uniform"]
                .map(String::from)
                .to_vec(),
            retrieval: vec![],
            retrieval_top1: 0.96,
            retrieval_top3: 1.0,
            retrieval_wild_top1: 0.9,
            retrieval_wild_top3: 1.0,
            composite_candidates_both: 1.0,
            scores: vec![],
            averages: vec![
                AverageRow {
                    strategy: "oracle".into(),
                    kind: Kind::InDomain,
                    exact_match: 0.90,
                },
                AverageRow {
                    strategy: "retrieval_top1".into(),
                    kind: Kind::InDomain,
                    exact_match: 0.88,
                },
                AverageRow {
                    strategy: "single:a".into(),
                    kind: Kind::OutOfDomain,
                    exact_match: 0.30,
                },
                AverageRow {
                    strategy: "uniform".into(),
                    kind: Kind::OutOfDomain,
                    exact_match: 0.25,
                },
            ],
            throughput: vec![],
            targets: vec![],
            samples: vec![],
        };
        let t = check_targets(&r);
        assert!(t[0].met && t[1].met);
        assert!(
            !t.last().unwrap().met,
            "uniform 0.25 does not beat single 0.30"
        );
        r.averages[3].exact_match = 0.35;
        r.retrieval_top1 = 0.9;
        let t = check_targets(&r);
        assert!(!t[0].met);
        assert!(t.last().unwrap().met);
    }
}
