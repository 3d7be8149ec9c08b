//! Formatting cluster: rewrite a date in ISO form, spell a number in words, form an acronym.

use rand::rngs::StdRng;
use rand::Rng;

use super::template::{pick_distinct, Instance, TaskSpec};

pub(super) const CLUSTER: &str = "formatting";

pub(super) const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Days in `month` (1-based) of `year`, Gregorian.
pub(super) fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = match (year % 400, year % 100, year % 4) {
        (0, _, _) => true,
        (_, 0, _) => false,
        (_, _, 0) => true,
        _ => false,
    };
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A valid date with a year in 1990..=2030: (year, month 1-12, day).
pub(super) fn random_date(rng: &mut StdRng) -> (u32, u32, u32) {
    let year = rng.random_range(1990..=2030);
    let month = rng.random_range(1..=12);
    let day = rng.random_range(1..=days_in_month(year, month));
    (year, month, day)
}

/// The date written "March 5, 2021" (`month_first`) or "5 March 2021", and its ISO form.
fn date_instance(year: u32, month: u32, day: u32, month_first: bool) -> Instance {
    let name = MONTHS[(month as usize).clamp(1, 12) - 1];
    let written = if month_first {
        format!("{name} {day}, {year}")
    } else {
        format!("{day} {name} {year}")
    };
    Instance::x(written, format!("{year:04}-{month:02}-{day:02}"))
}

fn make_iso(rng: &mut StdRng) -> Instance {
    let (year, month, day) = random_date(rng);
    date_instance(year, month, day, rng.random_bool(0.5))
}

// No template may hold a month name: tests find the month by name in the prompt.
const ISO_TRAIN: &[&str] = &[
    "Convert this date to ISO format: {x}",
    "Write {x} in YYYY-MM-DD format.",
    "Rewrite the date {x} as year-month-day.",
    "Give the ISO form of {x}.",
    "Format this date as YYYY-MM-DD: {x}",
    "What is {x} in ISO date format?",
    "Turn the date {x} into ISO format.",
    "Express {x} as an ISO date.",
    "Change this date to year-month-day with dashes: {x}",
    "Normalize the date to ISO: {x}",
    "Please convert {x} to the YYYY-MM-DD format.",
    "ISO date for: {x}",
];

const ISO_TEST: &[&str] = &[
    "Standardize the calendar date {x} into the international numeric layout.",
    "Represent {x} with a four-digit year, then month, then day, separated by hyphens.",
    "Machine-readable date please: {x}",
    "How would {x} look as YYYY-MM-DD?",
    "Reformat {x} into the sortable ISO style.",
    "Produce the dashed numeric version of the date {x}.",
];

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// English words for `n` in 0..=99, tens hyphenated ("forty-two"); `None` above 99.
pub fn number_to_words(n: u32) -> Option<String> {
    let (tens, ones) = (n as usize / 10, n as usize % 10);
    let words = match n {
        0..=19 => ONES[n as usize].to_string(),
        20..=99 if ones == 0 => TENS[tens].to_string(),
        20..=99 => format!("{}-{}", TENS[tens], ONES[ones]),
        _ => return None,
    };
    Some(words)
}

fn make_words(rng: &mut StdRng) -> Instance {
    let n = rng.random_range(0..=99u32);
    let words = number_to_words(n).unwrap_or_default();
    Instance::x(n.to_string(), words)
}

const WORDS_TRAIN: &[&str] = &[
    "Write {x} in words.",
    "Spell out the number {x}.",
    "How do you write {x} in English words?",
    "Convert {x} to words.",
    "Express the number {x} in words.",
    "Write out {x} as English text.",
    "What is {x} spelled in words?",
    "Spell {x} in English.",
    "Give the English words for the number {x}.",
    "Turn the number {x} into words.",
    "Please write the number {x} using letters instead of digits.",
    "Number to words: {x}",
];

const WORDS_TEST: &[&str] = &[
    "Verbalize the integer {x}.",
    "How would you say {x} out loud, written as words?",
    "Render {x} as an English word phrase rather than numerals.",
    "Replace the numeral {x} with its written-out name.",
    "Type the written form of {x}.",
    "Give me the cheque-style wording for {x}.",
];

pub(super) const ACRONYM_WORDS: [&str; 48] = [
    "portable",
    "network",
    "graphics",
    "central",
    "processing",
    "unit",
    "random",
    "access",
    "memory",
    "global",
    "position",
    "system",
    "local",
    "area",
    "user",
    "interface",
    "data",
    "base",
    "light",
    "emitting",
    "diode",
    "public",
    "key",
    "open",
    "source",
    "machine",
    "learning",
    "digital",
    "signal",
    "virtual",
    "private",
    "cloud",
    "service",
    "file",
    "transfer",
    "protocol",
    "power",
    "supply",
    "remote",
    "control",
    "energy",
    "storage",
    "home",
    "office",
    "frequency",
    "wireless",
    "language",
    "model",
];

/// The uppercase initials of the words of `phrase`: "portable network graphics" → "PNG".
pub(super) fn acronym_of(phrase: &str) -> String {
    phrase
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn make_acronym(rng: &mut StdRng) -> Instance {
    let count = rng.random_range(2..=4);
    let phrase = pick_distinct(rng, &ACRONYM_WORDS, count).join(" ");
    let initials = acronym_of(&phrase);
    Instance::x(phrase, initials)
}

// Each template quotes the phrase or ends with ": {x}" (tests read the phrase back).
const ACRONYM_TRAIN: &[&str] = &[
    "What is the acronym for \"{x}\"?",
    "Make an acronym from: {x}",
    "Abbreviate this phrase using its initials: {x}",
    "Form the acronym of \"{x}\".",
    "Give the initials of each word in uppercase: {x}",
    "Turn \"{x}\" into an acronym.",
    "Write the acronym for the following phrase: {x}",
    "Create an abbreviation from the first letters of: {x}",
    "What would \"{x}\" be as an acronym?",
    "Shorten this phrase to its capital initials: {x}",
    "Acronym please: {x}",
    "Take the first letter of every word and capitalize: {x}",
];

const ACRONYM_TEST: &[&str] = &[
    "Condense \"{x}\" into an uppercase abbreviation made of initial letters.",
    "Build the initialism for the phrase: {x}",
    "How would you abbreviate \"{x}\" with capital first letters?",
    "Collapse these words into their leading letters, uppercased: {x}",
    "Give the short letter form of \"{x}\".",
    "Produce the all-caps initialism of: {x}",
];

pub(super) fn specs() -> Vec<TaskSpec> {
    vec![
        TaskSpec {
            name: "iso_date",
            cluster: CLUSTER,
            description: "Rewrites a date such as March 5, 2021 in ISO format, \
                          YYYY-MM-DD (2021-03-05).",
            related: None,
            train: ISO_TRAIN,
            test: ISO_TEST,
            make: make_iso,
        },
        TaskSpec {
            name: "number_to_words",
            cluster: CLUSTER,
            description: "Spells out a number from zero to ninety-nine in English words.",
            related: None,
            train: WORDS_TRAIN,
            test: WORDS_TEST,
            make: make_words,
        },
        TaskSpec {
            name: "acronym",
            cluster: CLUSTER,
            description: "Forms the uppercase acronym of a phrase from the first letter of \
                          each word.",
            related: None,
            train: ACRONYM_TRAIN,
            test: ACRONYM_TEST,
            make: make_acronym,
        },
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::testing::{ints, quoted_or_after_colon};
    use super::super::{Split, Task};
    use super::*;

    fn spec(name: &str) -> TaskSpec {
        specs()
            .into_iter()
            .find(|s| s.name == name)
            .expect("a task of this file")
    }

    #[test]
    fn number_to_words_hand_checked() {
        let cases = [
            (0, "zero"),
            (7, "seven"),
            (13, "thirteen"),
            (19, "nineteen"),
            (20, "twenty"),
            (21, "twenty-one"),
            (42, "forty-two"),
            (70, "seventy"),
            (90, "ninety"),
            (99, "ninety-nine"),
        ];
        for (n, words) in cases {
            assert_eq!(number_to_words(n).as_deref(), Some(words), "{n}");
        }
        assert_eq!(number_to_words(100), None);
        let all: HashSet<String> = (0..100).filter_map(number_to_words).collect();
        assert_eq!(all.len(), 100);
        for n in 0..100 {
            let words = number_to_words(n).unwrap();
            assert_eq!(words.contains('-'), n > 20 && n % 10 != 0, "{words}");
        }
    }

    #[test]
    fn number_answers_spell_the_prompt_number() {
        let task = spec("number_to_words");
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 5, 200) {
                let found = ints(&e.prompt);
                assert_eq!(found.len(), 1, "{}", e.prompt);
                assert_eq!(number_to_words(found[0]).unwrap(), e.answer);
            }
        }
        assert!(!task.score("Forty-two", "forty-two"));
        assert!(!task.score("forty two", "forty-two"));
        assert!(!task.score("42", "forty-two"));
    }

    #[test]
    fn iso_dates_hand_checked() {
        assert_eq!(days_in_month(2020, 2), 29);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2021, 4), 30);
        assert_eq!(days_in_month(2021, 12), 31);
        let expect = |x: &str, answer: &str| Instance::x(x.to_string(), answer.to_string());
        assert_eq!(
            date_instance(2021, 3, 5, true),
            expect("March 5, 2021", "2021-03-05")
        );
        assert_eq!(
            date_instance(1999, 12, 31, false),
            expect("31 December 1999", "1999-12-31")
        );
        let task = spec("iso_date");
        assert!(task.score("2021-03-05", "2021-03-05"));
        assert!(!task.score("2021-3-5", "2021-03-05"));
        assert!(!task.score("2021-05-03", "2021-03-05"));
    }

    #[test]
    fn iso_answers_are_recomputed_from_the_month_name() {
        let task = spec("iso_date");
        let mut styles = [0; 2];
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 6, 200) {
                let words: Vec<&str> = e
                    .prompt
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .collect();
                let months: Vec<usize> = MONTHS
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| words.contains(m))
                    .map(|(i, _)| i + 1)
                    .collect();
                assert_eq!(months.len(), 1, "{}", e.prompt);
                let found = ints(&e.prompt);
                assert_eq!(found.len(), 2, "{}", e.prompt);
                // The year is the four-digit one; day-first vs month-first.
                let (day, year) = if found[0] >= 1000 {
                    (found[1], found[0])
                } else {
                    (found[0], found[1])
                };
                styles[usize::from(e.prompt.contains(','))] += 1;
                assert!((1990..=2030).contains(&year));
                assert!(day >= 1 && day <= days_in_month(year, months[0] as u32));
                let iso = format!("{year:04}-{:02}-{day:02}", months[0]);
                assert_eq!(iso, e.answer, "{}", e.prompt);
            }
        }
        assert!(styles[0] > 0 && styles[1] > 0, "{styles:?}");
    }

    #[test]
    fn acronym_answers_are_the_initials_of_the_phrase() {
        let task = spec("acronym");
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 7, 200) {
                let phrase = quoted_or_after_colon(&e.prompt);
                let words: Vec<&str> = phrase.split(' ').collect();
                assert!((2..=4).contains(&words.len()), "{}", e.prompt);
                assert!(words.iter().all(|w| ACRONYM_WORDS.contains(w)), "{phrase}");
                let initials: String = words.iter().map(|w| w[..1].to_uppercase()).collect();
                assert_eq!(initials, e.answer, "{}", e.prompt);
            }
        }
        assert!(!task.score("png", "PNG"));
        assert!(!task.score("P.N.G", "PNG"));
        assert!(!task.score("GNP", "PNG"));
    }

    #[test]
    fn acronym_of_a_known_phrase() {
        assert_eq!(acronym_of("portable network graphics"), "PNG");
        assert_eq!(acronym_of("central processing unit"), "CPU");
        assert_eq!(acronym_of("light emitting diode"), "LED");
        assert_eq!(acronym_of("open source"), "OS");
        let vars = vec![("x", "portable network graphics".to_string())];
        let prompt = super::super::template::render(ACRONYM_TRAIN[0], &vars);
        assert_eq!(quoted_or_after_colon(&prompt), "portable network graphics");
    }
}
