//! Numbers cluster: add two integers, sort a short list, find its maximum, convert units.

use rand::rngs::StdRng;
use rand::Rng;

use super::template::{distinct_ints, join_ints, pick, Instance, TaskSpec};

pub(super) const CLUSTER: &str = "numbers";

/// `count` distinct integers in 1..=99, in random order, and that list written out.
pub(super) fn int_list(rng: &mut StdRng, min: usize, max: usize) -> (Vec<u32>, String) {
    let count = rng.random_range(min..=max);
    let ints = distinct_ints(rng, count, 1, 99);
    let written = join_ints(&ints);
    (ints, written)
}

fn make_add(rng: &mut StdRng) -> Instance {
    let a = rng.random_range(1..=50u32);
    let b = rng.random_range(1..=50u32);
    Instance {
        vars: vec![("a", a.to_string()), ("b", b.to_string())],
        answer: (a + b).to_string(),
    }
}

const ADD_TRAIN: &[&str] = &[
    "What is {a} plus {b}?",
    "Add {a} and {b}.",
    "Compute the sum of {a} and {b}.",
    "Calculate {a} + {b}.",
    "What do you get when you add {a} to {b}?",
    "Find the total of {a} and {b}.",
    "Sum these two numbers: {a} and {b}",
    "How much is {a} added to {b}?",
    "Please add together {a} and {b}.",
    "What is the sum of {a} and {b}?",
    "Add up {a} and {b} and give the result.",
    "Work out {a} plus {b}.",
];

const ADD_TEST: &[&str] = &[
    "If you combine {a} and {b}, what total do you get?",
    "Tell me the result of {a} + {b}.",
    "I have {a} and then get {b} more. How many in all?",
    "Evaluate the addition {a} + {b}.",
    "Give the sum: {a}, {b}",
    "Increase {a} by {b}. What is the answer?",
];

fn make_sort(rng: &mut StdRng) -> Instance {
    let (mut ints, written) = int_list(rng, 3, 5);
    ints.sort_unstable();
    Instance::x(written, join_ints(&ints))
}

const SORT_TRAIN: &[&str] = &[
    "Sort these numbers from smallest to largest: {x}",
    "Arrange in ascending order: {x}",
    "Put the following values in increasing order: {x}",
    "Order these numbers from lowest to highest: {x}",
    "Sort in ascending order: {x}",
    "List these numbers from least to greatest: {x}",
    "Rearrange {x} so the numbers go up.",
    "Please sort the list {x} in increasing order.",
    "Sort the following integers ascending: {x}",
    "Write these numbers smallest first: {x}",
    "Can you put {x} in order from small to big?",
    "Give these numbers in ascending order: {x}",
];

const SORT_TEST: &[&str] = &[
    "Order these integers low to high: {x}",
    "Rank the values {x} starting with the minimum.",
    "Reorder the sequence {x} into non-decreasing order.",
    "Here are some numbers: {x}. Return them sorted upward.",
    "Arrange the list from the tiniest to the biggest value: {x}",
    "Put {x} into rising order.",
];

fn make_max(rng: &mut StdRng) -> Instance {
    let (ints, written) = int_list(rng, 3, 6);
    let max = ints.iter().copied().max().unwrap_or_default();
    Instance::x(written, max.to_string())
}

const MAX_TRAIN: &[&str] = &[
    "What is the largest number in this list: {x}",
    "Find the maximum of {x}.",
    "Which of these numbers is the biggest? {x}",
    "Return the highest value among {x}.",
    "Pick the greatest number: {x}",
    "Give the maximum value in the list {x}.",
    "Which number is largest: {x}?",
    "Identify the biggest of these values: {x}",
    "Find the largest integer in: {x}",
    "What is the max of {x}?",
    "Tell me which value is the greatest in {x}.",
    "Select the highest number from: {x}",
];

const MAX_TEST: &[&str] = &[
    "Out of {x}, which one is the top value?",
    "Report the single greatest entry in this set: {x}",
    "Determine the maximal element of {x}.",
    "Among the integers {x}, name the largest one.",
    "Here is a list: {x}. Which number beats all the others?",
    "Spot the highest figure in the sequence {x}.",
];

/// (from, to, factor): "N {from} to {to}" is N × factor.
pub(super) const UNITS: [(&str, &str, u32); 4] = [
    ("km", "meters", 1000),
    ("kg", "grams", 1000),
    ("m", "centimeters", 100),
    ("liters", "milliliters", 1000),
];

fn make_unit(rng: &mut StdRng) -> Instance {
    let (from, to, factor) = pick(rng, &UNITS);
    let n = rng.random_range(1..=20u32);
    Instance::x(format!("{n} {from} to {to}"), (n * factor).to_string())
}

const UNIT_TRAIN: &[&str] = &[
    "Convert {x}.",
    "Convert the following: {x}",
    "Do this unit conversion: {x}",
    "What is {x}? Answer with the number only.",
    "Please convert {x}",
    "Unit conversion: {x}",
    "Change the units: {x}",
    "Calculate {x}.",
    "How much is {x}?",
    "Convert this measurement: {x}",
    "Perform the conversion {x} and give just the number.",
    "Express this in the new unit: {x}",
];

const UNIT_TEST: &[&str] = &[
    "Translate the quantity into the other unit: {x}",
    "Rewrite {x}, reporting only the numeric result.",
    "I need {x} converted.",
    "Switch units for {x}.",
    "Measurement conversion please: {x}",
    "Work out the value of {x} in the target unit.",
];

pub(super) fn specs() -> Vec<TaskSpec> {
    vec![
        TaskSpec {
            name: "add_numbers",
            cluster: CLUSTER,
            description: "Adds two whole numbers and answers with their sum.",
            related: None,
            train: ADD_TRAIN,
            test: ADD_TEST,
            make: make_add,
        },
        TaskSpec {
            name: "sort_numbers",
            cluster: CLUSTER,
            description: "Sorts a short list of numbers in ascending order, from smallest \
                          to largest.",
            related: None,
            train: SORT_TRAIN,
            test: SORT_TEST,
            make: make_sort,
        },
        TaskSpec {
            name: "max_number",
            cluster: CLUSTER,
            description: "Finds the largest number in a short list of numbers.",
            related: None,
            train: MAX_TRAIN,
            test: MAX_TEST,
            make: make_max,
        },
        TaskSpec {
            name: "unit_conversion",
            cluster: CLUSTER,
            description: "Converts a quantity between metric units, such as kilometers to \
                          meters or liters to milliliters, and answers with the number.",
            related: None,
            train: UNIT_TRAIN,
            test: UNIT_TEST,
            make: make_unit,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testing::ints;
    use super::super::{Split, Task};
    use super::*;

    fn spec(name: &str) -> TaskSpec {
        specs()
            .into_iter()
            .find(|s| s.name == name)
            .expect("a task of this file")
    }

    /// Checks every example of `name` against `recompute(integers of the prompt)`.
    fn check(name: &str, mut recompute: impl FnMut(&[u32], &str) -> String) {
        let task = spec(name);
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 4, 200) {
                let found = ints(&e.prompt);
                assert_eq!(recompute(&found, &e.prompt), e.answer, "{}", e.prompt);
            }
        }
    }

    #[test]
    fn add_answers_are_the_sum_of_the_prompt() {
        check("add_numbers", |ints, _| {
            assert_eq!(ints.len(), 2);
            assert!(ints.iter().all(|n| (1..=50).contains(n)));
            (ints[0] + ints[1]).to_string()
        });
        assert!(!spec("add_numbers").score("12", "21"));
    }

    #[test]
    fn sort_answers_are_the_prompt_list_ascending() {
        check("sort_numbers", |ints, _| {
            assert!((3..=5).contains(&ints.len()));
            let mut sorted = ints.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), ints.len(), "distinct");
            join_ints(&sorted)
        });
        let task = spec("sort_numbers");
        assert!(!task.score("9, 5, 1", "1, 5, 9"));
        assert!(!task.score("1, 5", "1, 5, 9"));
    }

    #[test]
    fn max_answers_are_the_largest_of_the_prompt() {
        check("max_number", |ints, _| {
            assert!((3..=6).contains(&ints.len()));
            assert!(ints.iter().all(|n| (1..=99).contains(n)));
            ints.iter().max().unwrap().to_string()
        });
    }

    #[test]
    fn unit_answers_follow_the_named_units() {
        let mut seen = std::collections::HashSet::new();
        check("unit_conversion", |ints, prompt| {
            assert_eq!(ints.len(), 1);
            let words: Vec<&str> = prompt.split(|c: char| !c.is_ascii_alphanumeric()).collect();
            // The unit pair follows the number: "N <from> to <to>".
            let at = words
                .iter()
                .position(|w| *w == ints[0].to_string())
                .unwrap();
            let factor = match (words[at + 1], words[at + 3]) {
                ("km", "meters") | ("kg", "grams") | ("liters", "milliliters") => 1000,
                ("m", "centimeters") => 100,
                other => panic!("unknown units {other:?} in {prompt}"),
            };
            seen.insert(words[at + 1].to_string());
            assert!((1..=20).contains(&ints[0]));
            (ints[0] * factor).to_string()
        });
        assert_eq!(seen.len(), UNITS.len());
        assert!(!spec("unit_conversion").score("5000 meters", "5000"));
    }
}
