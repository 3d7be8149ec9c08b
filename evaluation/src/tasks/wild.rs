//! The wild split: prompts written by hand for every in-domain task the way users write
//! them (other phrasings, value ranges and formats than the generators', typos, numbers as
//! words), with exact answers, committed under `evaluation/data/wild/`.
//!
//! They are data, not a [`super::Split`]: every training path asks a task for a `Split`,
//! and a `Split` can only name generated examples, so no training code can reach these.
//! Embedded in the binary: `loramux eval` never needs the source tree at run time.

use anyhow::Context;

use super::Example;

/// `(task, its JSONL: one {"prompt", "answer"} per line)`, in suite order.
const FILES: [(&str, &str); 12] = [
    (
        "extract_emails",
        include_str!("../../data/wild/extract_emails.jsonl"),
    ),
    (
        "json_field",
        include_str!("../../data/wild/json_field.jsonl"),
    ),
    (
        "extract_numbers",
        include_str!("../../data/wild/extract_numbers.jsonl"),
    ),
    (
        "add_numbers",
        include_str!("../../data/wild/add_numbers.jsonl"),
    ),
    (
        "sort_numbers",
        include_str!("../../data/wild/sort_numbers.jsonl"),
    ),
    (
        "max_number",
        include_str!("../../data/wild/max_number.jsonl"),
    ),
    (
        "unit_conversion",
        include_str!("../../data/wild/unit_conversion.jsonl"),
    ),
    ("iso_date", include_str!("../../data/wild/iso_date.jsonl")),
    (
        "number_to_words",
        include_str!("../../data/wild/number_to_words.jsonl"),
    ),
    ("acronym", include_str!("../../data/wild/acronym.jsonl")),
    (
        "reverse_words",
        include_str!("../../data/wild/reverse_words.jsonl"),
    ),
    ("sentiment", include_str!("../../data/wild/sentiment.jsonl")),
];

/// The tasks that have wild prompts.
pub fn tasks() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(task, _)| *task)
}

/// The wild examples of `task`, in file order; empty for a task without a file (an
/// out-of-domain task, or one added to the suite before anyone wrote its prompts).
pub fn examples(task: &str) -> anyhow::Result<Vec<Example>> {
    let Some((_, text)) = FILES.iter().find(|(name, _)| *name == task) else {
        return Ok(Vec::new());
    };
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("data/wild/{task}.jsonl line {}", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests;
