//! The prompts one evaluation run scores: test-split examples of every in-domain and
//! out-of-domain task, composite prompts, and the hand-written wild prompts of the in-domain
//! tasks, each with what a correct answer looks like.

use crate::tasks::{CompositeExample, Split, Suite};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    InDomain,
    OutOfDomain,
    Composite,
    /// In-domain tasks asked the way users write, not through any template.
    Wild,
}

impl Kind {
    /// In table order: wild beside in-domain, the same tasks asked another way.
    pub const ALL: [Kind; 4] = [
        Kind::InDomain,
        Kind::Wild,
        Kind::OutOfDomain,
        Kind::Composite,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::InDomain => "in-domain",
            Self::OutOfDomain => "out-of-domain",
            Self::Composite => "composite",
            Self::Wild => "wild",
        }
    }

    /// Whether a prompt of this kind asks for one in-domain task (its adapter is the
    /// perfect choice).
    pub fn has_own_adapter(self) -> bool {
        matches!(self, Self::InDomain | Self::Wild)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    One(String),
    Parts(CompositeExample),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: Kind,
    /// The task (composite: the two part tasks joined with `+`).
    pub task: String,
    pub prompt: String,
    pub expected: Expected,
}

impl Item {
    /// `(correct parts, parts)` of an output: one part for plain tasks, one per request of
    /// a composite prompt.
    pub fn score(&self, suite: &Suite, output: &str) -> (usize, usize) {
        match &self.expected {
            Expected::One(answer) => {
                let ok = suite
                    .task(&self.task)
                    .is_some_and(|t| t.score(output, answer));
                (usize::from(ok), 1)
            }
            Expected::Parts(c) => {
                let parts = c.score_parts(output);
                (parts.iter().filter(|&&p| p).count(), parts.len())
            }
        }
    }

    /// The task whose adapter is this prompt's perfect choice (in-domain and wild prompts).
    pub fn own_adapter(&self) -> Option<&str> {
        self.kind.has_own_adapter().then_some(self.task.as_str())
    }

    pub fn expected_text(&self) -> String {
        match &self.expected {
            Expected::One(a) => a.clone(),
            Expected::Parts(c) => c
                .parts
                .iter()
                .map(|p| p.answer.as_str())
                .collect::<Vec<_>>()
                .join(" | "),
        }
    }
}

/// How many prompts of each kind a run scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ItemCounts {
    pub per_in_domain_task: usize,
    pub per_ood_task: usize,
    pub composite: usize,
    /// Wild prompts per in-domain task, spread over its file; more than it holds: all.
    #[serde(default)]
    pub per_wild_task: usize,
}

/// Seed of the evaluation prompts (test split, so apart from training by template too).
pub const EVAL_SEED: u64 = 7_777;

pub fn build_items(suite: &Suite, counts: &ItemCounts) -> anyhow::Result<Vec<Item>> {
    let mut items = Vec::new();
    for (kind, tasks, n) in [
        (Kind::InDomain, &suite.in_domain, counts.per_in_domain_task),
        (Kind::OutOfDomain, &suite.out_of_domain, counts.per_ood_task),
    ] {
        for task in tasks.iter() {
            for e in task.generate(Split::Test, EVAL_SEED, n) {
                items.push(Item {
                    kind,
                    task: task.name().to_string(),
                    prompt: e.prompt,
                    expected: Expected::One(e.answer),
                });
            }
        }
    }
    for c in suite.composite(EVAL_SEED, counts.composite) {
        items.push(Item {
            kind: Kind::Composite,
            task: c
                .parts
                .iter()
                .map(|p| p.task.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            prompt: c.prompt.clone(),
            expected: Expected::Parts(c),
        });
    }
    for task in &suite.in_domain {
        let wild = suite.wild(task.name())?;
        for e in spread(&wild, counts.per_wild_task) {
            items.push(Item {
                kind: Kind::Wild,
                task: task.name().to_string(),
                prompt: e.prompt.clone(),
                expected: Expected::One(e.answer.clone()),
            });
        }
    }
    Ok(items)
}

/// `n` of `all` at evenly spaced positions (all of them when `n` covers it): a small
/// sample still spans the whole file, not only its first lines' wording.
pub fn spread<T>(all: &[T], n: usize) -> impl Iterator<Item = &T> {
    let take = n.min(all.len());
    (0..take).map(move |i| &all[i * all.len() / take])
}
