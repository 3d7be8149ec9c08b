//! The harness on a tiny suite with a fake model: strategies, scoring, tables and plots,
//! without weights.

use super::items::{build_items, Expected, Kind};
use super::*;
use crate::tasks::Suite;
use std::collections::HashMap;

/// Two in-domain tasks, one out-of-domain task, composites of the two.
fn tiny_suite() -> Suite {
    let mut full = Suite::default_suite();
    let keep = ["sort_numbers", "iso_date"];
    full.in_domain.retain(|t| keep.contains(&t.name()));
    full.out_of_domain.retain(|t| t.name() == "min_number");
    full
}

fn counts() -> ItemCounts {
    ItemCounts {
        per_in_domain_task: 4,
        per_ood_task: 3,
        composite: 4,
        per_wild_task: 5,
    }
}

/// Answers a plain prompt right when its own task's adapter weighs at least 0.5, each part
/// of a composite when that part's adapter weighs at least 0.4 (under the gate: when it is
/// a candidate at all, the gate switching per token), and the out-of-domain task only under
/// a mixture of two or more adapters.
struct FakeModel {
    truth: HashMap<String, (String, Expected)>,
}

impl FakeModel {
    fn new(suite: &Suite) -> Self {
        let truth = build_items(suite, &counts())
            .unwrap()
            .into_iter()
            .map(|i| (i.prompt.clone(), (i.task.clone(), i.expected.clone())))
            .collect();
        Self { truth }
    }
}

impl Generator for FakeModel {
    fn generate(&mut self, jobs: &[Job]) -> anyhow::Result<Vec<Generated>> {
        Ok(jobs
            .iter()
            .map(|job| {
                let weight = |id: &str| {
                    job.adapters
                        .iter()
                        .filter(|(a, _)| a == id)
                        .map(|(_, w)| *w)
                        .sum::<f32>()
                };
                let (task, expected) = &self.truth[&job.prompt];
                let text = match expected {
                    Expected::One(answer) if task == "min_number" && job.adapters.len() >= 2 => {
                        answer.clone()
                    }
                    Expected::One(answer) if weight(task) >= 0.5 => answer.clone(),
                    Expected::One(_) => "no idea".into(),
                    Expected::Parts(c) => c
                        .parts
                        .iter()
                        .map(|p| {
                            let gated = job.gate_top_k.is_some() && weight(&p.task) > 0.0;
                            if gated || weight(&p.task) >= 0.4 {
                                p.answer.clone()
                            } else {
                                "?".into()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                };
                Generated { text, tokens: 3 }
            })
            .collect())
    }
}

/// Retrieves the right adapter for sort prompts; for date prompts the wrong one ranks
/// first half the time.
struct FakeRetriever {
    flip: std::cell::Cell<bool>,
}

impl Retriever for FakeRetriever {
    fn retrieve(&self, prompt: &str) -> anyhow::Result<Vec<(String, f32)>> {
        let sort = ("sort_numbers".to_string(), 0.7);
        let date = ("iso_date".to_string(), 0.3);
        let lower = prompt.to_lowercase();
        if lower.contains("date") || lower.contains("iso") || lower.contains("yyyy") {
            self.flip.set(!self.flip.get());
            if self.flip.get() {
                return Ok(vec![sort, date]);
            }
            return Ok(vec![(date.0, 0.7), (sort.0, 0.3)]);
        }
        Ok(vec![sort, date])
    }
}

fn config() -> EvalConfig {
    EvalConfig {
        counts: counts(),
        batch: 5,
        quick: true,
        singles: true,
        gates: vec![2],
        strategies: None,
        tasks: None,
    }
}

fn zoo() -> Vec<String> {
    vec!["sort_numbers".into(), "iso_date".into()]
}

#[test]
fn strategies_are_scored_as_the_fake_model_answers() {
    let suite = tiny_suite();
    let mut model = FakeModel::new(&suite);
    let retriever = FakeRetriever {
        flip: std::cell::Cell::new(false),
    };
    let r = run(&suite, &zoo(), &config(), &retriever, &mut model).unwrap();
    let avg = |s: &str, k| r.average(s, k).unwrap();
    assert_eq!(avg("oracle", Kind::InDomain), 1.0);
    assert_eq!(avg("base", Kind::InDomain), 0.0);
    assert_eq!(
        avg("uniform", Kind::InDomain),
        1.0,
        "each adapter weighs 0.5"
    );
    // Sort prompts always retrieve right; date prompts alternate between right and wrong.
    let top1 = avg("retrieval_top1", Kind::InDomain);
    assert!(top1 > 0.5 && top1 < 1.0, "top-1 {top1}");
    assert!(
        (r.retrieval_top1 - top1).abs() < 1e-9,
        "top-1 accuracy equals its exact match here"
    );
    assert_eq!(r.retrieval_top3, 1.0);
    // The out-of-domain task is solved by mixtures only: every single adapter scores 0.
    assert_eq!(avg("uniform", Kind::OutOfDomain), 1.0);
    assert_eq!(r.best_single(Kind::OutOfDomain).unwrap().1, 0.0);
    let target = |prefix: &str| {
        r.targets
            .iter()
            .find(|t| t.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no target {prefix}"))
    };
    assert!(
        target("best mixture").met,
        "a mixture beats every single adapter"
    );
    // The gate gets both parts of every composite (both tasks are always candidates).
    assert_eq!(avg("gate_top2", Kind::Composite), 1.0);
    assert!(target("gate_top2 minus").met);
    assert!(r.strategies.contains(&"gate_top2".to_string()));
    // Composite parts: uniform (0.5 each) gets both parts, a single adapter one of two
    // at most.
    assert_eq!(avg("uniform", Kind::Composite), 1.0);
    assert!(r.best_single(Kind::Composite).unwrap().1 <= 0.5 + 1e-9);
    assert!(
        r.average("oracle", Kind::OutOfDomain).is_none(),
        "no oracle outside the zoo"
    );
    assert_eq!(r.throughput.len(), 6 + zoo().len());
    assert!(r
        .throughput
        .iter()
        .all(|t| t.generated_tokens == 3 * t.requests));
}

/// `--tasks` and `--strategies`: only those prompts and strategies run, and the targets
/// that need a strategy that did not run are left out instead of judged on a zero.
#[test]
fn a_run_limited_to_some_tasks_and_strategies_checks_only_what_ran() {
    let suite = tiny_suite();
    let mut model = FakeModel::new(&suite);
    let retriever = FakeRetriever {
        flip: std::cell::Cell::new(false),
    };
    let mut cfg = config();
    cfg.tasks = Some(vec!["sort_numbers".into()]);
    cfg.strategies = Some(vec!["retrieval_top1".into(), "gate_top2".into()]);
    let r = run(&suite, &zoo(), &cfg, &retriever, &mut model).unwrap();
    assert_eq!(r.strategies, vec!["retrieval_top1", "gate_top2"]);
    assert!(r
        .scores
        .iter()
        .all(|s| s.task.split('+').any(|t| t == "sort_numbers")));
    assert!(r.scores.iter().any(|s| s.kind == Kind::Composite));
    assert!(
        !r.targets.iter().any(|t| t.name.starts_with("oracle minus")),
        "no oracle ran, so no oracle gap: {:?}",
        r.targets
    );
}

#[test]
fn report_and_plots_are_written() {
    let suite = tiny_suite();
    let mut model = FakeModel::new(&suite);
    let retriever = FakeRetriever {
        flip: std::cell::Cell::new(false),
    };
    let r = run(&suite, &zoo(), &config(), &retriever, &mut model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plots = plots::write_all(&r, dir.path()).unwrap();
    for p in &plots {
        let bytes = std::fs::read(dir.path().join(p)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{p} is a PNG");
        assert!(bytes.len() > 5_000, "{p} has content");
    }
    let md = report::markdown(&r, &plots);
    for needle in [
        "## Targets",
        "| oracle | 100.0 |",
        "| strategy | in-domain | wild | out-of-domain | composite |",
        "## Wild exact match per task",
        "Wild prompts (same tasks, hand-written wording): top-1",
        "| sort_numbers |",
        "min_number",
        "accuracy_by_strategy.png",
        "retrieval top-1 accuracy",
    ] {
        assert!(md.contains(needle), "report lacks {needle:?}:\n{md}");
    }
    let json = serde_json::to_string(&r).unwrap();
    let back: results::EvalResults = serde_json::from_str(&json).unwrap();
    // Timings are arbitrary floats that JSON may round in the last bit; the rest is exact.
    assert_eq!(
        (
            &back.scores,
            &back.averages,
            &back.strategies,
            &back.samples
        ),
        (&r.scores, &r.averages, &r.strategies, &r.samples)
    );
    assert_eq!((&back.retrieval, &back.zoo), (&r.retrieval, &r.zoo));
}

/// Answers right exactly the prompts a wild file holds: a wild cell that fell back to
/// generated test prompts (or to none) scores 0 here instead of 1.
struct AnswersOnlyWildPrompts {
    wild: HashMap<String, String>,
}

impl Generator for AnswersOnlyWildPrompts {
    fn generate(&mut self, jobs: &[Job]) -> anyhow::Result<Vec<Generated>> {
        Ok(jobs
            .iter()
            .map(|job| Generated {
                text: self.wild.get(&job.prompt).cloned().unwrap_or_default(),
                tokens: 1,
            })
            .collect())
    }
}

#[test]
fn the_wild_cells_score_the_committed_prompts() {
    let suite = tiny_suite();
    let committed: Vec<(String, crate::tasks::Example)> = suite
        .in_domain
        .iter()
        .flat_map(|t| {
            let name = t.name().to_string();
            suite
                .wild(&name)
                .unwrap()
                .into_iter()
                .map(move |e| (name.clone(), e))
        })
        .collect();
    let mut model = AnswersOnlyWildPrompts {
        wild: committed
            .iter()
            .map(|(_, e)| (e.prompt.clone(), e.answer.clone()))
            .collect(),
    };
    let retriever = FakeRetriever {
        flip: std::cell::Cell::new(false),
    };
    let r = run(&suite, &zoo(), &config(), &retriever, &mut model).unwrap();
    for s in ["base", "oracle", "retrieval_top1", "uniform", "gate_top2"] {
        assert_eq!(r.average(s, Kind::Wild), Some(1.0), "{s}");
        assert_eq!(r.average(s, Kind::InDomain), Some(0.0), "{s}");
    }
    for task in ["sort_numbers", "iso_date"] {
        let row = r
            .scores
            .iter()
            .find(|s| s.strategy == "oracle" && s.kind == Kind::Wild && s.task == task)
            .unwrap_or_else(|| panic!("no wild oracle row for {task}"));
        assert_eq!(row.total, counts().per_wild_task, "{task}");
    }
    assert!(
        !r.scores
            .iter()
            .any(|s| s.kind == Kind::Wild && s.strategy.starts_with("single:")),
        "single adapters run only where no adapter is the prompt's own"
    );
}

#[test]
fn wild_items_are_a_spread_sample_of_the_committed_prompts() {
    let suite = tiny_suite();
    let quick = EvalConfig::quick().counts;
    assert!((1..=5).contains(&quick.per_wild_task), "quick stays quick");
    for (counts, whole) in [(quick, false), (EvalConfig::full().counts, true)] {
        let items = build_items(&suite, &counts).unwrap();
        for task in ["sort_numbers", "iso_date"] {
            let committed: Vec<String> = suite
                .wild(task)
                .unwrap()
                .into_iter()
                .map(|e| e.prompt)
                .collect();
            let wild: Vec<&str> = items
                .iter()
                .filter(|i| i.kind == Kind::Wild && i.task == task)
                .map(|i| i.prompt.as_str())
                .collect();
            if whole {
                assert_eq!(
                    wild, committed,
                    "{task}: the full run scores every wild prompt"
                );
            } else {
                assert_eq!(wild.len(), quick.per_wild_task, "{task}");
                assert!(wild.iter().all(|p| committed.iter().any(|c| c == p)));
                assert_eq!(wild[0], committed[0]);
                let last = committed.iter().position(|c| c == wild[wild.len() - 1]);
                assert!(
                    last.unwrap() > committed.len() / 2,
                    "{task}: not only the first lines"
                );
            }
            let test = suite.task(task).unwrap().generate(
                crate::tasks::Split::Test,
                items::EVAL_SEED,
                200,
            );
            assert!(
                wild.iter().all(|p| test.iter().all(|e| e.prompt != *p)),
                "{task}"
            );
        }
    }
    let all: Vec<u32> = (0..10).collect();
    assert_eq!(
        items::spread(&all, 3).copied().collect::<Vec<_>>(),
        [0, 3, 6]
    );
    assert_eq!(items::spread(&all, 50).count(), 10);
    assert_eq!(items::spread(&all, 0).count(), 0);
}
