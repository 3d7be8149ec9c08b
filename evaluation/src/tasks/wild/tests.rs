//! The committed wild prompts: enough of them per task, answers the task's scorer accepts
//! and shaped like the task's answers, and never among the generated prompts.

use std::collections::HashSet;

use super::super::formatting::days_in_month;
use super::super::testing::matches_template;
use super::super::{number_to_words, scoring, Split, Suite, Task};
use super::{examples, tasks};

const MIN_PER_TASK: usize = 40;

fn in_domain(suite: &Suite) -> impl Iterator<Item = &dyn Task> {
    suite.in_domain.iter().map(|t| t.as_ref())
}

#[test]
fn every_in_domain_task_has_at_least_forty_wild_prompts_and_no_other_task_has_any() {
    let suite = Suite::default_suite();
    let names: Vec<&str> = in_domain(&suite).map(|t| t.name()).collect();
    assert_eq!(
        tasks().collect::<Vec<_>>(),
        names,
        "one file per task, suite order"
    );
    for task in in_domain(&suite) {
        let n = examples(task.name()).unwrap().len();
        assert!(n >= MIN_PER_TASK, "{}: {n} wild prompts", task.name());
        assert_eq!(suite.wild(task.name()).unwrap().len(), n);
    }
    for task in &suite.out_of_domain {
        assert!(examples(task.name()).unwrap().is_empty(), "{}", task.name());
        assert!(suite.wild(task.name()).unwrap().is_empty());
    }
}

#[test]
fn every_wild_answer_is_accepted_by_its_tasks_scorer() {
    let suite = Suite::default_suite();
    let mut prompts = HashSet::new();
    for task in in_domain(&suite) {
        let wild = examples(task.name()).unwrap();
        for e in &wild {
            let answer = e.answer.as_str();
            assert!(!answer.is_empty() && !answer.contains('\n'), "{e:?}");
            assert_eq!(scoring::normalize(answer), answer, "{e:?}");
            assert!(task.score(answer, answer), "{}: {e:?}", task.name());
            assert!(task.score(&format!(" {answer}.\n"), answer), "{e:?}");
            assert!(!task.score(&format!("The answer is {answer}"), answer));
            assert!(prompts.insert(e.prompt.clone()), "duplicate: {}", e.prompt);
        }
        let answers: HashSet<&str> = wild.iter().map(|e| e.answer.as_str()).collect();
        assert!(answers.len() > 1, "{}: one answer for all", task.name());
    }
}

/// A list answer's items: `"3, 14, 15"` → `["3", "14", "15"]`.
fn items(answer: &str) -> Vec<&str> {
    answer.split(", ").collect()
}

/// Whether `parts` occur in `text` in this order, without overlapping.
fn in_order(text: &str, parts: &[&str]) -> bool {
    let mut rest = text;
    parts.iter().all(|p| match rest.find(p) {
        Some(at) => {
            rest = &rest[at + p.len()..];
            true
        }
        None => false,
    })
}

/// A cheap check per task that an answer could be right for its prompt (the answers were
/// computed by hand; this catches a slipped digit or a wrong format).
fn plausible(task: &str, prompt: &str, answer: &str) -> bool {
    let number = |s: &str| s.parse::<f64>().is_ok();
    match task {
        "add_numbers" | "unit_conversion" => number(answer) && !answer.starts_with('-'),
        "max_number" => number(answer) && prompt.contains(answer),
        "sort_numbers" => {
            let v: Vec<f64> = items(answer)
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            v.len() == items(answer).len() && v.windows(2).all(|w| w[0] <= w[1])
        }
        "extract_numbers" => {
            items(answer).iter().all(|s| number(s)) && in_order(prompt, &items(answer))
        }
        "extract_emails" => {
            items(answer).iter().all(|s| s.contains('@')) && in_order(prompt, &items(answer))
        }
        "json_field" => prompt.contains(answer),
        "iso_date" => {
            let parts: Vec<u32> = answer.split('-').filter_map(|s| s.parse().ok()).collect();
            answer.len() == 10
                && parts.len() == 3
                && (1..=12).contains(&parts[1])
                && (1..=days_in_month(parts[0], parts[1])).contains(&parts[2])
        }
        "number_to_words" => (0..100).any(|n| number_to_words(n).as_deref() == Some(answer)),
        "acronym" => answer.len() >= 2 && answer.bytes().all(|b| b.is_ascii_uppercase()),
        "reverse_words" => {
            let words: Vec<&str> = answer.split(' ').rev().collect();
            words.len() >= 3 && prompt.contains(&words.join(" "))
        }
        "sentiment" => answer == "positive" || answer == "negative",
        other => panic!("no check for task {other}"),
    }
}

#[test]
fn wild_answers_have_the_shape_of_their_tasks_answers() {
    for task in tasks() {
        for e in examples(task).unwrap() {
            assert!(plausible(task, &e.prompt, &e.answer), "{task}: {e:?}");
        }
    }
}

/// Training asks a task for `Split::Train` examples, evaluation for `Split::Test` ones:
/// neither ever yields a wild prompt, nor is a wild prompt any task's template filled in.
#[test]
fn wild_prompts_are_never_generated_and_match_no_template() {
    let suite = Suite::default_suite();
    let all_tasks: Vec<&dyn Task> = in_domain(&suite)
        .chain(suite.out_of_domain.iter().map(|t| t.as_ref()))
        .collect();
    for task in in_domain(&suite) {
        let wild = examples(task.name()).unwrap();
        for split in [Split::Train, Split::Test] {
            let generated: HashSet<String> = task
                .generate(split, 1, 2000)
                .into_iter()
                .map(|e| e.prompt)
                .collect();
            for e in &wild {
                assert!(!generated.contains(&e.prompt), "{split:?}: {}", e.prompt);
                for other in &all_tasks {
                    for template in other.templates(split) {
                        assert!(
                            !matches_template(template, &e.prompt),
                            "{}: {:?} fills the {split:?} template {template:?} of {}",
                            task.name(),
                            e.prompt,
                            other.name()
                        );
                    }
                }
            }
        }
    }
}

/// The code that builds training data (adapters, their registered examples, the gate):
/// it asks for the train split only and never for wild data.
const TRAINING_SOURCES: [(&str, &str); 3] = [
    ("training.rs", include_str!("../../training.rs")),
    ("gate_training.rs", include_str!("../../gate_training.rs")),
    ("zoo.rs", include_str!("../../zoo.rs")),
];

#[test]
fn training_code_asks_only_for_the_train_split() {
    for (file, source) in TRAINING_SOURCES {
        for (at, _) in source.match_indices("Split::") {
            let rest = &source[at + "Split::".len()..];
            assert!(
                rest.starts_with("Train"),
                "{file} asks for Split::{:.8}",
                rest
            );
        }
        assert!(!source.contains("wild"), "{file} mentions wild data");
    }
}
