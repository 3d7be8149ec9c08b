//! Words cluster: reverse the order of a few words, classify the sentiment of a review.

use rand::rngs::StdRng;
use rand::Rng;

use super::template::{pick, pick_distinct, render, Instance, TaskSpec};

pub(super) const CLUSTER: &str = "words";

pub(super) const COMMON_WORDS: [&str; 70] = [
    "apple", "river", "house", "green", "table", "music", "happy", "cloud", "bread", "stone",
    "water", "light", "chair", "dream", "horse", "paper", "smile", "garden", "window", "summer",
    "winter", "orange", "pencil", "forest", "silver", "yellow", "tiger", "ocean", "candle",
    "rabbit", "coffee", "mountain", "market", "guitar", "planet", "flower", "doctor", "school",
    "basket", "bottle", "rocket", "castle", "island", "kitten", "ladder", "mirror", "button",
    "jacket", "pocket", "violin", "carpet", "butter", "dragon", "farmer", "meadow", "puzzle",
    "shadow", "spider", "thunder", "wallet", "hammer", "lemon", "pillow", "sunset", "tunnel",
    "village", "wagon", "zebra", "anchor", "blanket",
];

fn make_reverse(rng: &mut StdRng) -> Instance {
    let count = rng.random_range(3..=5);
    let words = pick_distinct(rng, &COMMON_WORDS, count);
    let reversed: Vec<&str> = words.iter().rev().copied().collect();
    Instance::x(words.join(" "), reversed.join(" "))
}

// Each template quotes the words or ends with ": {x}" (tests read the words back).
const REVERSE_TRAIN: &[&str] = &[
    "Reverse the order of these words: {x}",
    "Write these words in reverse order: {x}",
    "List the following words backwards, last word first: {x}",
    "Flip the word order of \"{x}\".",
    "Put these words in the opposite order: {x}",
    "Reverse the word sequence: {x}",
    "Rewrite \"{x}\" with the words in reverse order.",
    "Say these words from last to first: {x}",
    "Invert the order of the words in: {x}",
    "Read these words backwards, word by word: {x}",
    "Output the words of \"{x}\" in reverse.",
    "Reverse this list of words: {x}",
];

const REVERSE_TEST: &[&str] = &[
    "Starting from the final word and moving to the first, repeat: {x}",
    "Mirror the arrangement of the words in \"{x}\".",
    "Swap the word order end to end: {x}",
    "Give \"{x}\" back with its words running the other way.",
    "Undo the ordering so the last term comes first: {x}",
    "Backwards word order please: {x}",
];

pub(super) const POSITIVE: [&str; 12] = [
    "wonderful",
    "friendly",
    "delicious",
    "excellent",
    "amazing",
    "great",
    "lovely",
    "fantastic",
    "helpful",
    "perfect",
    "pleasant",
    "superb",
];

pub(super) const NEGATIVE: [&str; 12] = [
    "terrible",
    "rude",
    "awful",
    "horrible",
    "bland",
    "disappointing",
    "dirty",
    "slow",
    "boring",
    "poor",
    "broken",
    "unpleasant",
];

/// (noun, verb that agrees with it).
const SUBJECTS: [(&str, &str); 12] = [
    ("food", "was"),
    ("service", "was"),
    ("staff", "were"),
    ("room", "was"),
    ("movie", "was"),
    ("waiters", "were"),
    ("hotel", "was"),
    ("music", "was"),
    ("view", "was"),
    ("seats", "were"),
    ("book", "was"),
    ("coffee", "was"),
];

const REVIEWS: [&str; 5] = [
    "the {n1} {v1} {a1}",
    "the {n1} {v1} {a1} and the {n2} {v2} {a2}",
    "we thought the {n1} {v1} really {a1}",
    "honestly the {n1} {v1} {a1}, and the {n2} {v2} {a2} too",
    "overall the {n1} {v1} {a1}",
];

fn make_sentiment(rng: &mut StdRng) -> Instance {
    let positive = rng.random_bool(0.5);
    let lexicon: &[&str] = if positive { &POSITIVE } else { &NEGATIVE };
    let frame = pick(rng, &REVIEWS);
    let subjects = pick_distinct(rng, &SUBJECTS, 2);
    let adjectives = pick_distinct(rng, lexicon, 2);
    let vars = vec![
        ("n1", subjects[0].0.to_string()),
        ("v1", subjects[0].1.to_string()),
        ("a1", adjectives[0].to_string()),
        ("n2", subjects[1].0.to_string()),
        ("v2", subjects[1].1.to_string()),
        ("a2", adjectives[1].to_string()),
    ];
    let label = if positive { "positive" } else { "negative" };
    Instance::x(render(frame, &vars), label.to_string())
}

// No template may hold a lexicon word: tests recompute the label from those words.
const SENTIMENT_TRAIN: &[&str] = &[
    "Is this review positive or negative? {x}",
    "Classify the sentiment of this review as positive or negative: {x}",
    "What is the sentiment of the following text? {x}",
    "Decide whether this review is positive or negative: {x}",
    "Review: {x}. Is the sentiment positive or negative?",
    "Label the sentiment of: {x}",
    "Does this customer review sound positive or negative? {x}",
    "Determine the sentiment (positive or negative) of this sentence: {x}",
    "Tell me if this review is positive or negative: {x}",
    "Sentiment analysis: {x}",
    "Is the opinion in \"{x}\" positive or negative?",
    "Classify this feedback as positive or negative: {x}",
];

const SENTIMENT_TEST: &[&str] = &[
    "Was the writer happy or unhappy? Answer positive or negative. {x}",
    "Judge the tone of this comment, positive versus negative: {x}",
    "Read \"{x}\" and say whether the reviewer liked it (positive) or not (negative).",
    "Polarity of this opinion? {x}",
    "Would you call this remark favorable or unfavorable? Reply positive or negative: {x}",
    "Figure out if the following testimonial is positive or negative: {x}",
];

pub(super) fn specs() -> Vec<TaskSpec> {
    vec![
        TaskSpec {
            name: "reverse_words",
            cluster: CLUSTER,
            description: "Reverses the order of a short list of words, last word first.",
            related: None,
            train: REVERSE_TRAIN,
            test: REVERSE_TEST,
            make: make_reverse,
        },
        TaskSpec {
            name: "sentiment",
            cluster: CLUSTER,
            description: "Classifies the sentiment of a short review as positive or negative.",
            related: None,
            train: SENTIMENT_TRAIN,
            test: SENTIMENT_TEST,
            make: make_sentiment,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testing::quoted_or_after_colon;
    use super::super::{Split, Task};
    use super::*;

    fn spec(name: &str) -> TaskSpec {
        specs()
            .into_iter()
            .find(|s| s.name == name)
            .expect("a task of this file")
    }

    #[test]
    fn reverse_answers_are_the_prompt_words_reversed() {
        let task = spec("reverse_words");
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 8, 200) {
                let words: Vec<&str> = quoted_or_after_colon(&e.prompt).split(' ').collect();
                assert!((3..=5).contains(&words.len()), "{}", e.prompt);
                assert!(
                    words.iter().all(|w| COMMON_WORDS.contains(w)),
                    "{}",
                    e.prompt
                );
                let reversed: Vec<&str> = words.iter().rev().copied().collect();
                assert_eq!(reversed.join(" "), e.answer, "{}", e.prompt);
            }
        }
        assert!(!task.score("apple river house", "house river apple"));
        assert!(!task.score("House river apple", "house river apple"));
        assert!(!task.score("esuoh revir elppa", "house river apple"));
    }

    #[test]
    fn sentiment_labels_follow_the_lexicon_words_of_the_prompt() {
        let task = spec("sentiment");
        let mut labels = [0; 2];
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 9, 200) {
                let words: Vec<&str> = e.prompt.split(|c: char| !c.is_ascii_alphabetic()).collect();
                let pos = words.iter().filter(|w| POSITIVE.contains(w)).count();
                let neg = words.iter().filter(|w| NEGATIVE.contains(w)).count();
                assert!(pos + neg >= 1, "{}", e.prompt);
                assert!(pos == 0 || neg == 0, "mixed: {}", e.prompt);
                let label = if pos > 0 { "positive" } else { "negative" };
                labels[usize::from(pos > 0)] += 1;
                assert_eq!(label, e.answer, "{}", e.prompt);
            }
        }
        assert!(labels[0] > 50 && labels[1] > 50, "{labels:?}");
        assert!(!task.score("Positive", "positive"));
        assert!(!task.score("negative", "positive"));
        assert!(!task.score("The review is positive", "positive"));
    }

    #[test]
    fn reviews_use_no_unfilled_placeholder() {
        let task = spec("sentiment");
        for e in task.generate(Split::Train, 10, 100) {
            assert!(!e.prompt.contains('{'), "{}", e.prompt);
        }
    }
}
