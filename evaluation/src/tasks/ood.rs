//! Out-of-domain tasks: no adapter is trained for them. Each is a near neighbour of one
//! in-domain task (its `related`), and shares that task's cluster, so routing can be tested
//! on requests that look familiar but that no adapter in the zoo answers.

use rand::rngs::StdRng;
use rand::Rng;

use super::extraction::email_sentence;
use super::formatting::random_date;
use super::numbers::int_list;
use super::template::{join_ints, Instance, TaskSpec};

fn make_sort_descending(rng: &mut StdRng) -> Instance {
    let (mut ints, written) = int_list(rng, 3, 5);
    ints.sort_unstable_by(|a, b| b.cmp(a));
    Instance::x(written, join_ints(&ints))
}

const SORT_DESC_TRAIN: &[&str] = &[
    "Sort these numbers from largest to smallest: {x}",
    "Arrange in descending order: {x}",
    "Put the following values in decreasing order: {x}",
    "Order these numbers from highest to lowest: {x}",
    "List {x} from greatest to least.",
    "Sort the list {x} in descending order.",
    "Write these numbers biggest first: {x}",
    "Rank these values from high to low: {x}",
];

const SORT_DESC_TEST: &[&str] = &[
    "Order these integers high to low: {x}",
    "Reorder {x} so that it goes down.",
    "Arrange the list from the biggest to the tiniest value: {x}",
    "Put {x} into falling order.",
    "Starting with the maximum, list: {x}",
];

fn make_min(rng: &mut StdRng) -> Instance {
    let (ints, written) = int_list(rng, 3, 6);
    let min = ints.iter().copied().min().unwrap_or_default();
    Instance::x(written, min.to_string())
}

const MIN_TRAIN: &[&str] = &[
    "What is the smallest number in this list: {x}",
    "Find the minimum of {x}.",
    "Which of these numbers is the lowest? {x}",
    "Return the least value among {x}.",
    "Pick the smallest number: {x}",
    "Give the minimum value in the list {x}.",
    "Identify the lowest of these values: {x}",
    "What is the min of {x}?",
];

const MIN_TEST: &[&str] = &[
    "Out of {x}, which one is the bottom value?",
    "Report the single least entry in this set: {x}",
    "Determine the minimal element of {x}.",
    "Among the integers {x}, name the smallest one.",
    "Spot the tiniest figure in the sequence {x}.",
];

fn make_subtract(rng: &mut StdRng) -> Instance {
    let a = rng.random_range(11..=60u32);
    let b = rng.random_range(10..a);
    Instance {
        vars: vec![("a", a.to_string()), ("b", b.to_string())],
        answer: (a - b).to_string(),
    }
}

const SUBTRACT_TRAIN: &[&str] = &[
    "What is {a} minus {b}?",
    "Subtract {b} from {a}.",
    "Compute {a} - {b}.",
    "Calculate the difference {a} - {b}.",
    "Take {b} away from {a}.",
    "How much is {a} minus {b}?",
    "Find {a} take away {b}.",
    "What do you get when you subtract {b} from {a}?",
];

const SUBTRACT_TEST: &[&str] = &[
    "Deduct {b} from {a} and state the result.",
    "Tell me the result of {a} - {b}.",
    "I had {a} and gave away {b}. How many are left?",
    "Evaluate the subtraction {a} - {b}.",
    "Reduce {a} by {b}. What is the answer?",
];

fn make_us_date(rng: &mut StdRng) -> Instance {
    let (year, month, day) = random_date(rng);
    Instance::x(
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{month:02}/{day:02}/{year:04}"),
    )
}

const US_DATE_TRAIN: &[&str] = &[
    "Convert this ISO date to US format: {x}",
    "Write {x} as MM/DD/YYYY.",
    "Rewrite the date {x} as month/day/year.",
    "Format this date the American way: {x}",
    "What is {x} in US date format?",
    "Change {x} to month/day/year with slashes.",
    "Express the date {x} in MM/DD/YYYY form.",
    "Turn {x} into a US-style date.",
];

const US_DATE_TEST: &[&str] = &[
    "Give the slash-separated American rendering of {x}.",
    "How would an American write the date {x}?",
    "Reformat {x} with the month first, then day, then year.",
    "US calendar notation please: {x}",
    "Present {x} as MM/DD/YYYY.",
];

fn make_first_email(rng: &mut StdRng) -> Instance {
    let (sentence, emails) = email_sentence(rng, 2);
    let first = emails.into_iter().next().unwrap_or_default();
    Instance::x(sentence, first)
}

const FIRST_EMAIL_TRAIN: &[&str] = &[
    "What is the first email address in this text? {x}",
    "Return only the first email address mentioned here: {x}",
    "Give the earliest email address that appears in: {x}",
    "Extract just the first e-mail address from this sentence: {x}",
    "Find the first email in: {x}",
    "Which email address comes first in this message? {x}",
    "Copy out the first email address from: {x}",
    "Pull the leading email address out of this line: {x}",
];

const FIRST_EMAIL_TEST: &[&str] = &[
    "Of the addresses in \"{x}\", which one is mentioned first?",
    "Name the opening email contact in this snippet: {x}",
    "Report the initial e-mail address written here: {x}",
    "Here is some text: \"{x}\". Give me its first email address only.",
    "Scan this and output the email that shows up before any other: {x}",
];

pub(super) fn specs() -> Vec<TaskSpec> {
    vec![
        TaskSpec {
            name: "sort_descending",
            cluster: super::numbers::CLUSTER,
            description: "Sorts a short list of numbers in descending order, from largest \
                          to smallest.",
            related: Some("sort_numbers"),
            train: SORT_DESC_TRAIN,
            test: SORT_DESC_TEST,
            make: make_sort_descending,
        },
        TaskSpec {
            name: "min_number",
            cluster: super::numbers::CLUSTER,
            description: "Finds the smallest number in a short list of numbers.",
            related: Some("max_number"),
            train: MIN_TRAIN,
            test: MIN_TEST,
            make: make_min,
        },
        TaskSpec {
            name: "subtract_numbers",
            cluster: super::numbers::CLUSTER,
            description: "Subtracts one whole number from another and answers with the \
                          difference.",
            related: Some("add_numbers"),
            train: SUBTRACT_TRAIN,
            test: SUBTRACT_TEST,
            make: make_subtract,
        },
        TaskSpec {
            name: "us_date",
            cluster: super::formatting::CLUSTER,
            description: "Rewrites an ISO date such as 2021-03-05 in US format, MM/DD/YYYY \
                          (03/05/2021).",
            related: Some("iso_date"),
            train: US_DATE_TRAIN,
            test: US_DATE_TEST,
            make: make_us_date,
        },
        TaskSpec {
            name: "extract_first_email",
            cluster: super::extraction::CLUSTER,
            description: "Returns only the first email address mentioned in a piece of text.",
            related: Some("extract_emails"),
            train: FIRST_EMAIL_TRAIN,
            test: FIRST_EMAIL_TEST,
            make: make_first_email,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::super::formatting::days_in_month;
    use super::super::testing::ints;
    use super::super::{Split, Task};
    use super::*;

    fn spec(name: &str) -> TaskSpec {
        specs()
            .into_iter()
            .find(|s| s.name == name)
            .expect("a task of this file")
    }

    fn check(name: &str, recompute: impl Fn(&[u32], &str) -> String) {
        let task = spec(name);
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 12, 200) {
                assert_eq!(
                    recompute(&ints(&e.prompt), &e.prompt),
                    e.answer,
                    "{}",
                    e.prompt
                );
            }
        }
    }

    #[test]
    fn sort_descending_answers_are_the_prompt_list_descending() {
        check("sort_descending", |ints, _| {
            assert!((3..=5).contains(&ints.len()));
            let mut sorted = ints.to_vec();
            sorted.sort_unstable();
            sorted.reverse();
            join_ints(&sorted)
        });
        assert!(!spec("sort_descending").score("1, 5, 9", "9, 5, 1"));
    }

    #[test]
    fn min_answers_are_the_smallest_of_the_prompt() {
        check("min_number", |ints, _| {
            assert!((3..=6).contains(&ints.len()));
            ints.iter().min().unwrap().to_string()
        });
    }

    #[test]
    fn subtract_answers_are_larger_minus_smaller() {
        // Templates name b before a ("Subtract b from a"); a is always the larger.
        check("subtract_numbers", |ints, _| {
            assert_eq!(ints.len(), 2);
            let (a, b) = (ints[0].max(ints[1]), ints[0].min(ints[1]));
            assert!(10 <= b && b < a && a <= 60, "{a} {b}");
            (a - b).to_string()
        });
        assert!(!spec("subtract_numbers").score("-7", "7"));
    }

    #[test]
    fn us_dates_reorder_the_iso_fields() {
        check("us_date", |ints, prompt| {
            assert_eq!(ints.len(), 3, "{prompt}");
            let (year, month, day) = (ints[0], ints[1], ints[2]);
            assert!((1990..=2030).contains(&year));
            assert!((1..=12).contains(&month));
            assert!(day >= 1 && day <= days_in_month(year, month));
            format!("{month:02}/{day:02}/{year}")
        });
        let task = spec("us_date");
        assert!(task.score("03/05/2021", "03/05/2021"));
        assert!(!task.score("05/03/2021", "03/05/2021"));
        assert!(!task.score("3/5/2021", "03/05/2021"));
    }

    #[test]
    fn first_email_is_the_first_address_of_the_prompt() {
        check("extract_first_email", |_, prompt| {
            let emails: Vec<&str> = prompt
                .split_whitespace()
                .filter(|w| w.contains('@'))
                .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
                .collect();
            assert_eq!(emails.len(), 2, "{prompt}");
            assert_ne!(emails[0], emails[1]);
            emails[0].to_string()
        });
    }
}
