//! The offline evaluation harness: every routing strategy on the suite's test prompts, the
//! way the LoraRetriever and MeteoRA papers compare them, and on the hand-written wild
//! prompts of the same tasks (does routing, and do the adapters, hold off the templates?).
//!
//! The run is model-agnostic: a [`Retriever`] ranks adapters for a prompt and a
//! [`Generator`] answers prompts under adapter mixtures. [`model::ZooModel`] implements
//! both over the runtime, the router and the zoo; tests use small fakes.

pub mod items;
pub mod model;
pub mod plots;
pub mod report;
pub mod results;
pub mod strategy;

use crate::tasks::Suite;
use indicatif::{ProgressBar, ProgressStyle};
use items::{build_items, Item, ItemCounts, Kind};
use results::{
    average_rows, check_targets, ratio, score_rows, EvalResults, Outcome, RetrievalRow, Sample,
    ThroughputRow,
};
use std::collections::BTreeMap;
use std::time::Instant;
use strategy::{mixture, Strategy};

/// One prompt to answer under an adapter mixture (empty: the base model).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub prompt: String,
    pub adapters: Vec<(String, f32)>,
    /// Mix `adapters` per token with the learned gate keeping this many (None: fixed weights).
    pub gate_top_k: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub text: String,
    pub tokens: usize,
}

pub trait Generator {
    /// Greedy answers, one per job, in order; all jobs may share batched passes.
    fn generate(&mut self, jobs: &[Job]) -> anyhow::Result<Vec<Generated>>;
}

pub trait Retriever {
    /// Candidate adapters best first with prior weights summing to 1; empty when the router
    /// falls back to the base model.
    fn retrieve(&self, prompt: &str) -> anyhow::Result<Vec<(String, f32)>>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    pub counts: ItemCounts,
    /// Jobs per generator call (one batched generation).
    pub batch: usize,
    pub quick: bool,
    /// Also run every single adapter on out-of-domain and composite prompts (the "best
    /// single adapter" the mixtures are compared with).
    pub singles: bool,
    /// Learned-gate strategies to run, by top-k (empty when the zoo has no gate).
    pub gates: Vec<usize>,
    /// Only these strategies (by name, e.g. `oracle`, `gate_top2`, `single:acronym`);
    /// `None`: all of them.
    pub strategies: Option<Vec<String>>,
    /// Only prompts of these tasks (a composite counts when either part is listed);
    /// `None`: every task.
    pub tasks: Option<Vec<String>>,
}

impl EvalConfig {
    /// Under 5 minutes on a 2-core CPU.
    pub fn quick() -> Self {
        Self {
            counts: ItemCounts {
                per_in_domain_task: 6,
                per_ood_task: 4,
                composite: 8,
                per_wild_task: 3,
            },
            batch: 48,
            quick: true,
            singles: true,
            gates: Vec::new(),
            strategies: None,
            tasks: None,
        }
    }

    pub fn full() -> Self {
        Self {
            counts: ItemCounts {
                per_in_domain_task: 40,
                per_ood_task: 24,
                composite: 40,
                per_wild_task: usize::MAX,
            },
            batch: 48,
            quick: false,
            singles: true,
            gates: Vec::new(),
            strategies: None,
            tasks: None,
        }
    }
}

/// Runs every strategy over the suite and folds the scores into results.
pub fn run(
    suite: &Suite,
    zoo: &[String],
    config: &EvalConfig,
    retriever: &dyn Retriever,
    generator: &mut dyn Generator,
) -> anyhow::Result<EvalResults> {
    let started = Instant::now();
    let mut items = build_items(suite, &config.counts)?;
    if let Some(tasks) = &config.tasks {
        items.retain(|i| i.task.split('+').any(|t| tasks.iter().any(|w| w == t)));
    }
    let retrieved = retrieve_all(&items, retriever)?;
    let plan = work_plan(&items, zoo, config);
    let total: usize = plan.iter().map(|(_, idx)| idx.len()).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template(
        "eval [{bar:30}] {pos}/{len} generations {msg} {elapsed}/{duration}",
    )?);
    let mut outcomes = Vec::with_capacity(total);
    let mut throughput = Vec::new();
    let mut samples = Vec::new();
    for (strategy, indices) in &plan {
        bar.set_message(strategy.to_string());
        if bar.is_hidden() {
            // Not a terminal (CI, a log file): one line per strategy instead of a bar.
            eprintln!("eval: {strategy} on {} prompts", indices.len());
        }
        let timer = Instant::now();
        let mut tokens = 0;
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        for chunk in indices.chunks(config.batch.max(1)) {
            let jobs: Vec<Job> = chunk
                .iter()
                .map(|&i| Job {
                    prompt: items[i].prompt.clone(),
                    adapters: mixture(strategy, items[i].own_adapter(), &retrieved[i], zoo),
                    gate_top_k: strategy.gate_top_k(),
                })
                .collect();
            let answers = generator.generate(&jobs)?;
            anyhow::ensure!(answers.len() == jobs.len(), "the generator lost answers");
            for (&i, out) in chunk.iter().zip(&answers) {
                let item = &items[i];
                let (correct, parts) = item.score(suite, &out.text);
                tokens += out.tokens;
                outcomes.push(Outcome {
                    strategy: strategy.clone(),
                    kind: item.kind,
                    task: item.task.clone(),
                    correct,
                    parts,
                });
                let seen = shown.entry(item.task.as_str()).or_default();
                if *seen < 2 && !strategy.is_single() {
                    *seen += 1;
                    samples.push(Sample {
                        strategy: strategy.to_string(),
                        task: item.task.clone(),
                        prompt: item.prompt.clone(),
                        output: out.text.clone(),
                        expected: item.expected_text(),
                    });
                }
            }
            bar.inc(chunk.len() as u64);
        }
        let seconds = timer.elapsed().as_secs_f64();
        throughput.push(ThroughputRow {
            strategy: strategy.to_string(),
            requests: indices.len(),
            generated_tokens: tokens,
            seconds,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
        });
    }
    bar.finish_and_clear();
    let retrieval = retrieval_summary(&items, &retrieved);
    let scores = score_rows(&outcomes);
    let mut results = EvalResults {
        suite: "default".into(),
        quick: config.quick,
        seconds: started.elapsed().as_secs_f64(),
        zoo: zoo.to_vec(),
        strategies: plan
            .iter()
            .filter(|(s, _)| !s.is_single())
            .map(|(s, _)| s.to_string())
            .collect(),
        retrieval: retrieval.rows,
        retrieval_top1: retrieval.top1,
        retrieval_top3: retrieval.top3,
        retrieval_wild_top1: retrieval.wild_top1,
        retrieval_wild_top3: retrieval.wild_top3,
        composite_candidates_both: retrieval.composite_both,
        averages: average_rows(&scores),
        scores,
        throughput,
        targets: Vec::new(),
        samples,
    };
    results.targets = check_targets(&results);
    Ok(results)
}

/// Which items each strategy answers: the headline strategies everywhere (the oracle only
/// where a prompt has its own adapter), single adapters on out-of-domain and composite
/// prompts.
fn work_plan(items: &[Item], zoo: &[String], config: &EvalConfig) -> Vec<(Strategy, Vec<usize>)> {
    let mut plan: Vec<(Strategy, Vec<usize>)> = Vec::new();
    let of_kind = |pred: &dyn Fn(Kind) -> bool| -> Vec<usize> {
        (0..items.len()).filter(|&i| pred(items[i].kind)).collect()
    };
    for s in Strategy::headline(true) {
        let idx = if s == Strategy::Oracle {
            of_kind(&|k| k.has_own_adapter())
        } else {
            of_kind(&|_| true)
        };
        plan.push((s, idx));
    }
    for &k in &config.gates {
        plan.push((Strategy::Gate(k), of_kind(&|_| true)));
    }
    if config.singles {
        for id in zoo {
            plan.push((
                Strategy::Single(id.clone()),
                of_kind(&|k| matches!(k, Kind::OutOfDomain | Kind::Composite)),
            ));
        }
    }
    plan.retain(|(_, idx)| !idx.is_empty());
    if let Some(names) = &config.strategies {
        plan.retain(|(s, _)| names.iter().any(|n| *n == s.to_string()));
    }
    plan
}

/// Retrieval accuracy on in-domain test prompts, per task and overall, and on wild prompts
/// overall.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalSummary {
    pub rows: Vec<RetrievalRow>,
    pub top1: f64,
    pub top3: f64,
    pub wild_top1: f64,
    pub wild_top3: f64,
    /// Composite prompts whose candidates include the adapters of both parts (what a
    /// per-token gate over the candidates needs).
    pub composite_both: f64,
}

/// Retrieval alone (no generation): seconds instead of minutes, for tuning the router.
pub fn evaluate_retrieval(
    suite: &Suite,
    counts: &ItemCounts,
    retriever: &dyn Retriever,
) -> anyhow::Result<RetrievalSummary> {
    let items = build_items(suite, counts)?;
    let retrieved = retrieve_all(&items, retriever)?;
    Ok(retrieval_summary(&items, &retrieved))
}

/// Every item's retrieved candidates, in item order.
fn retrieve_all(
    items: &[Item],
    retriever: &dyn Retriever,
) -> anyhow::Result<Vec<Vec<(String, f32)>>> {
    items
        .iter()
        .map(|it| retriever.retrieve(&it.prompt))
        .collect()
}

fn retrieval_summary(items: &[Item], retrieved: &[Vec<(String, f32)>]) -> RetrievalSummary {
    let of_kind = |kind| -> Vec<usize> {
        (0..items.len())
            .filter(|&i| items[i].kind == kind)
            .collect()
    };
    let (in_domain, wild) = (of_kind(Kind::InDomain), of_kind(Kind::Wild));
    let hit = |i: &usize, k: usize| {
        retrieved[*i]
            .iter()
            .take(k)
            .any(|(id, _)| *id == items[*i].task)
    };
    let accuracy = |of: &[usize], k| ratio(of.iter().filter(|i| hit(i, k)).count(), of.len());
    let composites = of_kind(Kind::Composite);
    let both = composites
        .iter()
        .filter(|&&i| {
            items[i]
                .task
                .split('+')
                .all(|t| retrieved[i].iter().any(|(id, _)| id == t))
        })
        .count();
    RetrievalSummary {
        composite_both: ratio(both, composites.len()),
        rows: retrieval_rows(items, retrieved),
        top1: accuracy(&in_domain, 1),
        top3: accuracy(&in_domain, 3),
        wild_top1: accuracy(&wild, 1),
        wild_top3: accuracy(&wild, 3),
    }
}

fn retrieval_rows(items: &[Item], retrieved: &[Vec<(String, f32)>]) -> Vec<RetrievalRow> {
    let mut per: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for (item, r) in items.iter().zip(retrieved) {
        if item.kind != Kind::InDomain {
            continue;
        }
        let e = per.entry(item.task.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(r.first().is_some_and(|(id, _)| *id == item.task));
        e.2 += usize::from(r.iter().take(3).any(|(id, _)| *id == item.task));
    }
    per.into_iter()
        .map(|(task, (n, t1, t3))| RetrievalRow {
            task: task.into(),
            prompts: n,
            top1: ratio(t1, n),
            top3: ratio(t3, n),
        })
        .collect()
}

#[cfg(test)]
mod tests;
