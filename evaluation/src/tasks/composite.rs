//! Composite prompts: one user message asking for two in-domain tasks of different clusters,
//! built from their Test examples. Each part is scored on its own by [`line_match`].

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::scoring::line_match;
use super::template::{pick, render, task_rng};
use super::{Example, Split, Task};

/// A prompt that asks for two in-domain tasks at once; scored per part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositeExample {
    pub prompt: String,
    pub parts: Vec<CompositePart>,
}

/// One requested task of a composite prompt and its exact answer (a single line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositePart {
    pub task: String,
    pub answer: String,
}

impl CompositeExample {
    /// For each part, whether some non-empty line of `output` is its answer.
    pub fn score_parts(&self, output: &str) -> Vec<bool> {
        self.parts
            .iter()
            .map(|part| line_match(output, &part.answer))
            .collect()
    }
}

/// The ways two prompts are joined; `{a}` and `{b}` are the two single-task prompts, each on
/// a line of its own so no input runs into the next request.
pub const JOIN_TEMPLATES: &[&str] = &[
    "Do two things, each answer on its own line.\nFirst: {a}\nSecond: {b}",
    "Please handle both requests and put each answer on its own line.\n- {a}\n- {b}",
    "Two tasks follow; answer each on a separate line.\nTask one: {a}\nTask two: {b}",
    "Answer both parts, one line each.\nPart A: {a}\nPart B: {b}",
    "I have two requests; answer them on two lines.\n{a}\n{b}",
];

/// Joins for training composites (the gate's training data), apart from the evaluation
/// joins above, so evaluation composites stay unseen in phrasing too.
pub const TRAIN_JOIN_TEMPLATES: &[&str] = &[
    "Handle these two requests, one answer per line.\n1. {a}\n2. {b}",
    "Two questions for you; reply with one line for each.\nQ1: {a}\nQ2: {b}",
    "Please do both of the following and write each result on a new line.\n* {a}\n* {b}",
];

/// The name the composite stream is seeded under (never a task name: it has a space).
const STREAM: &str = "composite stream";

/// `n` composite examples over `tasks` from `split` (its task templates and its joins);
/// empty when no two tasks exist.
pub(super) fn generate(
    tasks: &[Box<dyn Task>],
    split: Split,
    seed: u64,
    n: usize,
) -> Vec<CompositeExample> {
    if tasks.len() < 2 {
        return Vec::new();
    }
    let mut rng = task_rng(STREAM, split, seed);
    (0..n).map(|_| one(tasks, split, &mut rng)).collect()
}

fn one(tasks: &[Box<dyn Task>], split: Split, rng: &mut StdRng) -> CompositeExample {
    let a = rng.random_range(0..tasks.len());
    let cluster = tasks[a].cluster();
    let mut others: Vec<usize> = (0..tasks.len())
        .filter(|&j| tasks[j].cluster() != cluster)
        .collect();
    if others.is_empty() {
        // Every task shares one cluster: any other task will do.
        others = (0..tasks.len()).filter(|&j| j != a).collect();
    }
    let b = pick(rng, &others);
    let join = pick(
        rng,
        match split {
            Split::Train => TRAIN_JOIN_TEMPLATES,
            Split::Test => JOIN_TEMPLATES,
        },
    );
    let mut parts = Vec::with_capacity(2);
    let mut prompts = Vec::with_capacity(2);
    for index in [a, b] {
        let task = &tasks[index];
        let example = task
            .generate(split, rng.random(), 1)
            .into_iter()
            .next()
            .unwrap_or_else(|| Example {
                prompt: String::new(),
                answer: String::new(),
            });
        prompts.push(example.prompt);
        parts.push(CompositePart {
            task: task.name().to_string(),
            answer: example.answer,
        });
    }
    let vars = [("a", prompts[0].clone()), ("b", prompts[1].clone())];
    CompositeExample {
        prompt: render(join, &vars),
        parts,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::Suite;
    use super::*;

    #[test]
    fn composites_are_deterministic_and_seed_dependent() {
        let suite = Suite::default_suite();
        let a = suite.composite(1, 50);
        assert_eq!(a.len(), 50);
        assert_eq!(a, suite.composite(1, 50));
        assert_eq!(a[..20], suite.composite(1, 20));
        assert_ne!(a, suite.composite(2, 50));
    }

    #[test]
    fn composites_pair_two_in_domain_tasks_of_different_clusters() {
        let suite = Suite::default_suite();
        let mut pairs = HashSet::new();
        let mut joins = HashSet::new();
        for example in suite.composite(3, 300) {
            assert_eq!(example.parts.len(), 2);
            let [a, b] = [&example.parts[0], &example.parts[1]];
            let (ta, tb) = (suite.task(&a.task).unwrap(), suite.task(&b.task).unwrap());
            assert!(ta.related().is_none() && tb.related().is_none());
            assert_ne!(ta.cluster(), tb.cluster(), "{}", example.prompt);
            for part in &example.parts {
                assert!(!part.answer.is_empty() && !part.answer.contains('\n'));
            }
            pairs.insert((a.task.clone(), b.task.clone()));
            let join = JOIN_TEMPLATES
                .iter()
                .position(|j| example.prompt.starts_with(j.split('{').next().unwrap()));
            joins.insert(join.expect("a join template"));
        }
        assert!(pairs.len() > 40, "{} pairs", pairs.len());
        assert_eq!(joins.len(), JOIN_TEMPLATES.len());
    }

    #[test]
    fn composite_prompts_embed_test_prompts_of_their_tasks() {
        let suite = Suite::default_suite();
        for example in suite.composite(4, 50) {
            for part in &example.parts {
                let task = suite.task(&part.task).unwrap();
                let embeds_test = task.templates(Split::Test).iter().any(|t| {
                    // A template's leading literal text appears in the composite prompt.
                    let head = t.split('{').next().unwrap();
                    head.is_empty() || example.prompt.contains(head)
                });
                assert!(embeds_test, "{}: {}", part.task, example.prompt);
            }
        }
    }

    #[test]
    fn training_composites_share_no_phrasing_with_evaluation_composites() {
        let suite = Suite::default_suite();
        let train = suite.composite_for_training(4, 60);
        assert_eq!(train, suite.composite_for_training(4, 60));
        for example in &train {
            let head = |j: &&str| example.prompt.starts_with(j.split('{').next().unwrap());
            assert!(TRAIN_JOIN_TEMPLATES.iter().any(head), "{}", example.prompt);
            assert!(!JOIN_TEMPLATES.iter().any(head), "{}", example.prompt);
            for part in &example.parts {
                let task = suite.task(&part.task).unwrap();
                let uses_test = task.templates(Split::Test).iter().any(|t| {
                    let head = t.split('{').next().unwrap();
                    !head.is_empty() && example.prompt.contains(head)
                });
                assert!(!uses_test, "{}: {}", part.task, example.prompt);
            }
        }
    }

    #[test]
    fn parts_are_scored_per_line() {
        let example = CompositeExample {
            prompt: String::new(),
            parts: vec![
                CompositePart {
                    task: "sort_numbers".into(),
                    answer: "1, 5, 9".into(),
                },
                CompositePart {
                    task: "acronym".into(),
                    answer: "PNG".into(),
                },
            ],
        };
        assert_eq!(example.score_parts("1, 5, 9\nPNG"), [true, true]);
        assert_eq!(example.score_parts("  PNG. \n\n1, 5, 9.\n"), [true, true]);
        assert_eq!(example.score_parts("1, 5, 9"), [true, false]);
        assert_eq!(example.score_parts("9, 5, 1\nPNG"), [false, true]);
        assert_eq!(example.score_parts("1, 5, 9 PNG"), [false, false]);
        assert_eq!(example.score_parts("png\n1 5 9"), [false, false]);
        assert_eq!(example.score_parts(""), [false, false]);
    }

    #[test]
    fn own_answers_score_every_part() {
        let suite = Suite::default_suite();
        for example in suite.composite(5, 100) {
            let output: Vec<&str> = example.parts.iter().map(|p| p.answer.as_str()).collect();
            assert_eq!(example.score_parts(&output.join("\n")), [true, true]);
            let one_line = format!("{} {}", output[0], output[1]);
            assert_eq!(example.score_parts(&one_line), [false, false]);
        }
    }

    #[test]
    fn too_few_tasks_give_no_composites() {
        let suite = Suite {
            in_domain: Suite::default_suite()
                .in_domain
                .into_iter()
                .take(1)
                .collect(),
            out_of_domain: Vec::new(),
        };
        assert!(suite.composite(0, 10).is_empty());
        let empty = Suite {
            in_domain: Vec::new(),
            out_of_domain: Vec::new(),
        };
        assert!(empty.composite(0, 10).is_empty());
    }
}
