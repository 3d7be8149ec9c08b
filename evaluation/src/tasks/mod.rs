//! The task suite: small deterministic tasks with exact answers, for training one LoRA
//! adapter per in-domain task, describing it in the routing index, and scoring routing and
//! generation on held-out phrasings.
//!
//! Every task is a set of instruction templates (train and test sets are disjoint, so test
//! prompts are paraphrases the router has never seen) and a generator of short inputs with
//! one exact answer. Generation is a pure function of `(task name, split, seed, n)`. The
//! out-of-domain tasks get no adapter; each is related to one in-domain task. Composite
//! prompts ask for two in-domain tasks at once and are scored per part. The [`wild`] prompts
//! are written by hand, not generated: evaluation only.

mod composite;
mod extraction;
mod formatting;
mod numbers;
mod ood;
pub mod scoring;
mod template;
pub mod wild;
mod words;

#[cfg(test)]
mod testing;

use serde::{Deserialize, Serialize};

pub use composite::{CompositeExample, CompositePart, JOIN_TEMPLATES, TRAIN_JOIN_TEMPLATES};
pub use formatting::number_to_words;

use template::TaskSpec;

/// Which instruction templates a generated example uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    Train,
    Test,
}

/// One prompt (the whole user message: instruction + input) and its exact answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub answer: String,
}

/// A generator of prompts with exact answers.
pub trait Task: Send + Sync {
    /// Snake_case, a valid adapter id (`[a-z0-9][a-z0-9._-]{0,63}`), e.g. `sort_numbers`.
    fn name(&self) -> &'static str;

    /// The family the task belongs to, e.g. `numbers`.
    fn cluster(&self) -> &'static str;

    /// One sentence on what an adapter for the task does: its description in the index.
    fn description(&self) -> &'static str;

    /// For an out-of-domain task, the in-domain task it is related to.
    fn related(&self) -> Option<&'static str> {
        None
    }

    /// The instruction templates of `split`; the train and test sets are disjoint.
    fn templates(&self, split: Split) -> &'static [&'static str];

    /// `n` examples of `split`, a pure function of `(split, seed, n)`; the first `k` of them
    /// are the examples that `n = k` gives. Train uses only the train templates, Test only
    /// the test ones.
    fn generate(&self, split: Split, seed: u64, n: usize) -> Vec<Example>;

    /// `per_template` examples for every template of `split`, template by template: a
    /// sample that covers each phrasing (what an adapter's registered examples need).
    fn generate_covering(&self, split: Split, seed: u64, per_template: usize) -> Vec<Example>;

    /// Exact match after [`scoring::normalize`].
    fn score(&self, output: &str, answer: &str) -> bool {
        scoring::exact_match(output, answer)
    }
}

/// The in-domain tasks (one adapter each) and the out-of-domain ones (no adapter).
pub struct Suite {
    pub in_domain: Vec<Box<dyn Task>>,
    pub out_of_domain: Vec<Box<dyn Task>>,
}

impl Suite {
    /// The 12 in-domain tasks (four clusters) and 5 out-of-domain tasks.
    pub fn default_suite() -> Self {
        let boxed = |specs: Vec<TaskSpec>| {
            specs
                .into_iter()
                .map(|spec| Box::new(spec) as Box<dyn Task>)
                .collect()
        };
        Self {
            in_domain: boxed(in_domain_specs()),
            out_of_domain: boxed(ood::specs()),
        }
    }

    /// The task called `name`, in-domain or out-of-domain.
    pub fn task(&self, name: &str) -> Option<&dyn Task> {
        self.in_domain
            .iter()
            .chain(&self.out_of_domain)
            .find(|task| task.name() == name)
            .map(|task| task.as_ref())
    }

    /// `n` prompts that each ask for two in-domain tasks of different clusters; a pure
    /// function of `(seed, n)` and the in-domain list. Empty with fewer than two tasks.
    pub fn composite(&self, seed: u64, n: usize) -> Vec<CompositeExample> {
        composite::generate(&self.in_domain, Split::Test, seed, n)
    }

    /// Composite prompts for training (the learned gate's data): train templates of the
    /// tasks and joins of their own, never an evaluation prompt's phrasing.
    pub fn composite_for_training(&self, seed: u64, n: usize) -> Vec<CompositeExample> {
        composite::generate(&self.in_domain, Split::Train, seed, n)
    }

    /// The hand-written [`wild`] prompts of the in-domain task `name`, in file order; empty
    /// for any other name. For evaluation only.
    pub fn wild(&self, name: &str) -> anyhow::Result<Vec<Example>> {
        if self.in_domain.iter().any(|t| t.name() == name) {
            wild::examples(name)
        } else {
            Ok(Vec::new())
        }
    }
}

/// The specs of the in-domain tasks, cluster by cluster.
fn in_domain_specs() -> Vec<TaskSpec> {
    [
        extraction::specs(),
        numbers::specs(),
        formatting::specs(),
        words::specs(),
    ]
    .concat()
}

/// Whether `id` is a valid adapter id: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn is_valid_adapter_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    first_ok
        && id.len() <= 64
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SAMPLES: usize = 200;

    fn all_tasks(suite: &Suite) -> impl Iterator<Item = &dyn Task> {
        suite
            .in_domain
            .iter()
            .chain(&suite.out_of_domain)
            .map(|t| t.as_ref())
    }

    #[test]
    fn default_suite_has_twelve_valid_unique_in_domain_tasks() {
        let suite = Suite::default_suite();
        assert_eq!(suite.in_domain.len(), 12);
        assert!(suite.out_of_domain.len() >= 4);
        let names: HashSet<&str> = all_tasks(&suite).map(|t| t.name()).collect();
        assert_eq!(
            names.len(),
            suite.in_domain.len() + suite.out_of_domain.len()
        );
        for task in all_tasks(&suite) {
            assert!(is_valid_adapter_id(task.name()), "{}", task.name());
            assert!(!task.description().is_empty());
            assert!(task.description().ends_with('.'), "{}", task.name());
        }
        let clusters: HashSet<&str> = suite.in_domain.iter().map(|t| t.cluster()).collect();
        let expected: HashSet<&str> = ["extraction", "numbers", "formatting", "words"].into();
        assert_eq!(clusters, expected);
    }

    #[test]
    fn in_domain_tasks_have_no_relation_and_ood_ones_do() {
        let suite = Suite::default_suite();
        assert!(suite.in_domain.iter().all(|t| t.related().is_none()));
        for task in &suite.out_of_domain {
            let related = task.related().expect("an OOD task names its related task");
            let base = suite.task(related).expect("the related task exists");
            assert!(base.related().is_none(), "{related} is in-domain");
            assert_eq!(task.cluster(), base.cluster(), "{}", task.name());
        }
        for name in [
            "sort_descending",
            "min_number",
            "subtract_numbers",
            "us_date",
        ] {
            assert!(suite.out_of_domain.iter().any(|t| t.name() == name));
        }
    }

    #[test]
    fn task_lookup_searches_both_lists() {
        let suite = Suite::default_suite();
        assert_eq!(
            suite.task("sort_numbers").map(|t| t.name()),
            Some("sort_numbers")
        );
        assert_eq!(
            suite.task("us_date").map(|t| t.cluster()),
            Some("formatting")
        );
        assert!(suite.task("pig_latin").is_none());
        assert!(suite.task("").is_none());
    }

    #[test]
    fn adapter_id_check_follows_the_pattern() {
        assert!(is_valid_adapter_id("sort_numbers"));
        assert!(is_valid_adapter_id("a"));
        assert!(is_valid_adapter_id("0-v1.2"));
        assert!(!is_valid_adapter_id(""));
        assert!(!is_valid_adapter_id("_x"));
        assert!(!is_valid_adapter_id("Sort"));
        assert!(!is_valid_adapter_id("a b"));
        assert!(is_valid_adapter_id(&"a".repeat(64)));
        assert!(!is_valid_adapter_id(&"a".repeat(65)));
    }

    #[test]
    fn template_sets_are_large_disjoint_and_unique() {
        let suite = Suite::default_suite();
        for task in all_tasks(&suite) {
            let train = task.templates(Split::Train);
            let test = task.templates(Split::Test);
            let (min_train, min_test) = if task.related().is_none() {
                (10, 5)
            } else {
                (5, 5)
            };
            assert!(train.len() >= min_train, "{}", task.name());
            assert!(test.len() >= min_test, "{}", task.name());
            let train_set: HashSet<&str> = train.iter().copied().collect();
            let test_set: HashSet<&str> = test.iter().copied().collect();
            assert_eq!(train_set.len(), train.len(), "{}: duplicate", task.name());
            assert_eq!(test_set.len(), test.len(), "{}: duplicate", task.name());
            assert!(train_set.is_disjoint(&test_set), "{}", task.name());
            for template in train.iter().chain(test) {
                // No digits: tests recover the numbers of a prompt from the whole prompt.
                assert!(
                    !template.bytes().any(|b| b.is_ascii_digit()),
                    "{}: {template}",
                    task.name()
                );
            }
        }
    }

    #[test]
    fn every_template_uses_each_variable_exactly_once() {
        for spec in in_domain_specs().into_iter().chain(ood::specs()) {
            let mut rng = template::task_rng(spec.name, Split::Train, 0);
            let instance = (spec.make)(&mut rng);
            for template in spec.train.iter().chain(spec.test) {
                for (key, _) in &instance.vars {
                    let placeholder = format!("{{{key}}}");
                    assert_eq!(
                        template.matches(&placeholder).count(),
                        1,
                        "{}: {template}",
                        spec.name
                    );
                }
            }
        }
    }

    #[test]
    fn generation_is_deterministic_and_seed_dependent() {
        let suite = Suite::default_suite();
        for task in all_tasks(&suite) {
            for split in [Split::Train, Split::Test] {
                let a = task.generate(split, 7, 30);
                assert_eq!(a.len(), 30);
                assert_eq!(a, task.generate(split, 7, 30), "{}", task.name());
                assert_eq!(a[..10], task.generate(split, 7, 10), "{}", task.name());
                assert_ne!(a, task.generate(split, 8, 30), "{}", task.name());
            }
            assert!(task.generate(Split::Train, 1, 0).is_empty());
        }
    }

    #[test]
    fn covering_samples_use_every_template_of_the_split_only() {
        let suite = Suite::default_suite();
        for task in all_tasks(&suite) {
            for split in [Split::Train, Split::Test] {
                let templates = task.templates(split);
                let a = task.generate_covering(split, 5, 2);
                assert_eq!(a.len(), templates.len() * 2, "{}", task.name());
                assert_eq!(a, task.generate_covering(split, 5, 2), "{}", task.name());
                assert_eq!(
                    testing::templates_used(templates, &a),
                    templates.len(),
                    "{}: a template is missing",
                    task.name()
                );
                assert!(a.iter().all(|e| task.score(&e.answer, &e.answer)));
            }
        }
    }

    #[test]
    fn same_seed_gives_different_prompts_across_tasks() {
        let suite = Suite::default_suite();
        let firsts: HashSet<String> = all_tasks(&suite)
            .map(|t| t.generate(Split::Train, 3, 1)[0].prompt.clone())
            .collect();
        assert_eq!(
            firsts.len(),
            suite.in_domain.len() + suite.out_of_domain.len()
        );
    }

    #[test]
    fn prompts_follow_their_split_and_never_cross() {
        let suite = Suite::default_suite();
        for task in all_tasks(&suite) {
            let train = task.generate(Split::Train, 11, SAMPLES);
            let test = task.generate(Split::Test, 11, SAMPLES);
            let train_prompts: HashSet<&str> = train.iter().map(|e| e.prompt.as_str()).collect();
            for example in &test {
                assert!(
                    !train_prompts.contains(example.prompt.as_str()),
                    "{}: {}",
                    task.name(),
                    example.prompt
                );
            }
            for (examples, split) in [(&train, Split::Train), (&test, Split::Test)] {
                let used = testing::templates_used(task.templates(split), examples);
                assert!(used > 1, "{}: only {used} template(s) used", task.name());
                let other = match split {
                    Split::Train => Split::Test,
                    Split::Test => Split::Train,
                };
                assert_eq!(
                    testing::templates_used(task.templates(other), examples),
                    0,
                    "{}: a {split:?} prompt matches a template of the other split",
                    task.name()
                );
            }
        }
    }

    #[test]
    fn prompts_are_short_and_answers_are_single_line() {
        let suite = Suite::default_suite();
        for task in all_tasks(&suite) {
            for split in [Split::Train, Split::Test] {
                for example in task.generate(split, 5, SAMPLES) {
                    let words = example.prompt.split_whitespace().count();
                    assert!(words <= 40, "{}: {}", task.name(), example.prompt);
                    assert!(!example.answer.is_empty());
                    assert!(!example.answer.contains('\n'));
                    assert_eq!(scoring::normalize(&example.answer), example.answer);
                }
            }
        }
    }

    #[test]
    fn answers_score_themselves_and_wrong_answers_fail() {
        let suite = Suite::default_suite();
        for task in all_tasks(&suite) {
            let examples = task.generate(Split::Test, 2, 50);
            let distinct: HashSet<&str> = examples.iter().map(|e| e.answer.as_str()).collect();
            assert!(distinct.len() > 1, "{}: one answer for all", task.name());
            for example in &examples {
                let answer = example.answer.as_str();
                assert!(task.score(answer, answer));
                assert!(task.score(&format!("  {answer}.\n"), answer));
                assert!(!task.score(&format!("{answer} extra"), answer));
                assert!(!task.score(&format!("The answer is {answer}"), answer));
                assert!(!task.score("", answer));
                let other = examples.iter().find(|e| e.answer != example.answer);
                if let Some(other) = other {
                    assert!(!task.score(&other.answer, answer), "{}", task.name());
                }
            }
        }
    }

    #[test]
    fn examples_round_trip_through_json() {
        let example = &Suite::default_suite().in_domain[0].generate(Split::Train, 0, 1)[0];
        let json = serde_json::to_string(example).unwrap();
        assert_eq!(&serde_json::from_str::<Example>(&json).unwrap(), example);
        let split: Split =
            serde_json::from_str(&serde_json::to_string(&Split::Test).unwrap()).unwrap();
        assert_eq!(split, Split::Test);
    }
}
