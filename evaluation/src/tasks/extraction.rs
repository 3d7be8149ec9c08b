//! Extraction cluster: pull email addresses, a JSON field or the numbers out of a short text.

use rand::rngs::StdRng;
use rand::Rng;

use super::template::{distinct_ints, join_ints, pick, pick_distinct, render, Instance, TaskSpec};

pub(super) const CLUSTER: &str = "extraction";

pub(super) const FIRST_NAMES: [&str; 30] = [
    "anna", "ben", "carla", "david", "emma", "frank", "grace", "henry", "iris", "jack", "kate",
    "leo", "maria", "nina", "oscar", "paul", "rosa", "sam", "tina", "victor", "wendy", "alex",
    "bella", "chris", "diana", "eric", "fiona", "george", "hannah", "ivan",
];

pub(super) const DOMAINS: [&str; 10] = [
    "example.com",
    "mail.com",
    "post.net",
    "inbox.org",
    "work.io",
    "school.edu",
    "company.com",
    "letters.net",
    "web.org",
    "office.co",
];

/// Sentences holding one address; `{e1}` never ends a sentence, so no `.` sticks to it.
const ONE_EMAIL: [&str; 6] = [
    "please write to {e1} before friday",
    "you can reach me at {e1} any time",
    "the report was sent by {e1} this morning",
    "questions go to {e1} and not to the office",
    "my new address is {e1} so please update it",
    "the tickets were booked by {e1} last week",
];

/// Sentences holding two addresses, `{e1}` before `{e2}`.
const TWO_EMAILS: [&str; 6] = [
    "send the file to {e1} and copy {e2} as well",
    "contact {e1} or {e2} about the meeting",
    "{e1} replied today but {e2} did not",
    "the invite came from {e1} and went to {e2} too",
    "ask {e1} first and then {e2} if needed",
    "both {e1} and {e2} will join the call",
];

/// A sentence with `count` (1 or 2) distinct addresses, and those addresses in order.
pub(super) fn email_sentence(rng: &mut StdRng, count: usize) -> (String, Vec<String>) {
    let frame = if count == 1 {
        pick(rng, &ONE_EMAIL)
    } else {
        pick(rng, &TWO_EMAILS)
    };
    let mut emails: Vec<String> = Vec::with_capacity(count);
    while emails.len() < count {
        let email = format!("{}@{}", pick(rng, &FIRST_NAMES), pick(rng, &DOMAINS));
        if !emails.contains(&email) {
            emails.push(email);
        }
    }
    let vars: Vec<(&str, String)> = ["e1", "e2"].into_iter().zip(emails.clone()).collect();
    (render(frame, &vars), emails)
}

fn make_emails(rng: &mut StdRng) -> Instance {
    let count = rng.random_range(1..=2);
    let (sentence, emails) = email_sentence(rng, count);
    Instance::x(sentence, emails.join(", "))
}

const EMAILS_TRAIN: &[&str] = &[
    "Extract all email addresses from this text: {x}",
    "List every email address that appears in the following sentence: {x}",
    "Find the email addresses in: {x}",
    "Pull out the e-mail addresses from this message: {x}",
    "Which email addresses are mentioned here? {x}",
    "Return only the email addresses found in this sentence: {x}",
    "Read the text and write down its email addresses: {x}",
    "In the sentence \"{x}\", what are the email addresses?",
    "Get the email addresses out of this line: {x}",
    "Identify each email address in the text below. {x}",
    "Copy out the contact email addresses from: {x}",
    "I need the email addresses from this note: {x}",
];

const EMAILS_TEST: &[&str] = &[
    "Scan this passage and report any e-mail addresses it includes: {x}",
    "What are the mail addresses written in the following? {x}",
    "Give me the email contacts mentioned in \"{x}\".",
    "Harvest the email addresses from this snippet: {x}",
    "Here is some text: \"{x}\". Please list its email addresses.",
    "Show just the electronic mail addresses contained in: {x}",
];

const JSON_FIELDS: [&str; 5] = ["name", "city", "age", "color", "job"];
const CITIES: [&str; 12] = [
    "Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Cairo", "Lima", "Oslo", "Dublin",
    "Boston", "Sydney",
];
const COLORS: [&str; 10] = [
    "red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown",
];
const JOBS: [&str; 12] = [
    "teacher", "nurse", "baker", "pilot", "farmer", "lawyer", "chef", "dentist", "painter",
    "engineer", "driver", "writer",
];

/// A value of `field`: as written in the object (strings quoted, `age` a number) and as the
/// answer (unquoted).
fn json_value(rng: &mut StdRng, field: &str) -> (String, String) {
    let text = match field {
        "age" => {
            let age = rng.random_range(18..=80u32).to_string();
            return (age.clone(), age);
        }
        "name" => capitalize(pick(rng, &FIRST_NAMES)),
        "city" => pick(rng, &CITIES).to_string(),
        "color" => pick(rng, &COLORS).to_string(),
        _ => pick(rng, &JOBS).to_string(),
    };
    (format!("\"{text}\""), text)
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn make_json(rng: &mut StdRng) -> Instance {
    let fields = pick_distinct(rng, &JSON_FIELDS, 3);
    let asked = rng.random_range(0..fields.len());
    let mut entries = Vec::with_capacity(fields.len());
    let mut answer = String::new();
    for (i, field) in fields.iter().enumerate() {
        let (written, value) = json_value(rng, field);
        if i == asked {
            answer = value;
        }
        entries.push(format!("\"{field}\": {written}"));
    }
    Instance {
        vars: vec![
            ("obj", format!("{{{}}}", entries.join(", "))),
            ("field", fields[asked].to_string()),
        ],
        answer,
    }
}

// No template may contain a field name as a word: the asked field must be the only one.
const JSON_TRAIN: &[&str] = &[
    "What is the value of \"{field}\" in this JSON? {obj}",
    "From the JSON object {obj}, return the {field} field.",
    "Read this JSON and give the {field}: {obj}",
    "Extract the {field} value from: {obj}",
    "Here is a record: {obj} What is its {field}?",
    "Look up the key \"{field}\" in {obj}",
    "Return the value stored under {field} in this object: {obj}",
    "Given {obj}, what is the {field}?",
    "In the following JSON, find the {field}: {obj}",
    "Parse this object and output the {field} value only: {obj}",
    "Which {field} is listed in this JSON record? {obj}",
    "Get the field {field} from the JSON {obj}",
];

const JSON_TEST: &[&str] = &[
    "Tell me the {field} from this data: {obj}",
    "This JSON describes a person: {obj} Report the {field} entry.",
    "Access the {field} property of the object {obj}",
    "Using the record {obj}, answer with the value of {field}.",
    "Output the {field} that appears in {obj}",
    "What does the {field} key hold in {obj}?",
];

const TWO_NUMBERS: [&str; 6] = [
    "we sold {n1} apples and {n2} pears today",
    "the bus left from gate {n1} with {n2} people on board",
    "room {n1} has {n2} chairs",
    "she ran {n1} meters and then walked {n2} more",
    "the box holds {n1} pens and {n2} pencils",
    "page {n1} of the book mentions {n2} birds",
];

const THREE_NUMBERS: [&str; 6] = [
    "there were {n1} cats, {n2} dogs and {n3} birds",
    "he read {n1} pages on monday, {n2} on tuesday and {n3} on friday",
    "order {n1} plates, {n2} cups and {n3} spoons",
    "the scores were {n1}, {n2} and {n3} points",
    "we need {n1} red, {n2} blue and {n3} green cards",
    "the trip took {n1} hours by car, {n2} by train and {n3} on foot",
];

fn make_numbers(rng: &mut StdRng) -> Instance {
    let count = rng.random_range(2..=3);
    let frame = if count == 2 {
        pick(rng, &TWO_NUMBERS)
    } else {
        pick(rng, &THREE_NUMBERS)
    };
    let ints = distinct_ints(rng, count, 1, 999);
    let vars: Vec<(&str, String)> = ["n1", "n2", "n3"]
        .into_iter()
        .zip(ints.iter().map(u32::to_string))
        .collect();
    Instance::x(render(frame, &vars), join_ints(&ints))
}

const NUMBERS_TRAIN: &[&str] = &[
    "Extract all the numbers from this sentence: {x}",
    "List the numbers that appear in the following text: {x}",
    "Find every number mentioned here: {x}",
    "Pull the numeric values out of this sentence: {x}",
    "Which numbers occur in this text? {x}",
    "Write down the numbers in this sentence, in order: {x}",
    "Return only the numbers from: {x}",
    "Identify the integers in this line: {x}",
    "Read the sentence and list its numbers: {x}",
    "Get all the figures from this text: {x}",
    "What numbers are contained in \"{x}\"?",
    "Copy out each number you see in: {x}",
];

const NUMBERS_TEST: &[&str] = &[
    "Collect the numerical quantities mentioned in this statement: {x}",
    "Here is a sentence: \"{x}\". Give me the numbers in it.",
    "Scan the following and report the integers it mentions: {x}",
    "Isolate the numeric tokens in: {x}",
    "Which integer values show up in the text \"{x}\"?",
    "Output the numbers found in this phrase, keeping their order: {x}",
];

pub(super) fn specs() -> Vec<TaskSpec> {
    vec![
        TaskSpec {
            name: "extract_emails",
            cluster: CLUSTER,
            description: "Extracts the email addresses from a piece of text and lists them \
                          in order, comma-separated.",
            related: None,
            train: EMAILS_TRAIN,
            test: EMAILS_TEST,
            make: make_emails,
        },
        TaskSpec {
            name: "json_field",
            cluster: CLUSTER,
            description: "Reads a JSON object and returns the value of the requested field.",
            related: None,
            train: JSON_TRAIN,
            test: JSON_TEST,
            make: make_json,
        },
        TaskSpec {
            name: "extract_numbers",
            cluster: CLUSTER,
            description: "Extracts the numbers mentioned in a sentence and lists them in \
                          order, comma-separated.",
            related: None,
            train: NUMBERS_TRAIN,
            test: NUMBERS_TEST,
            make: make_numbers,
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

    /// The tokens of `prompt` that contain `@`, stripped of surrounding punctuation.
    fn emails_in(prompt: &str) -> Vec<String> {
        prompt
            .split_whitespace()
            .filter(|w| w.contains('@'))
            .map(|w| {
                w.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn email_answers_are_the_addresses_of_the_prompt() {
        let task = spec("extract_emails");
        let mut counts = [0; 3];
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 1, 200) {
                let found = emails_in(&e.prompt);
                counts[found.len()] += 1;
                assert_eq!(found.join(", "), e.answer, "{}", e.prompt);
                for email in &found {
                    let (user, domain) = email.split_once('@').unwrap();
                    assert!(FIRST_NAMES.contains(&user) && DOMAINS.contains(&domain));
                }
            }
        }
        assert_eq!(counts[0], 0);
        assert!(counts[1] > 0 && counts[2] > 0, "{counts:?}");
        assert!(!task.score("anna@mail.com", "anna@mail.com, ben@post.net"));
        assert!(!task.score("ben@post.net, anna@mail.com", "anna@mail.com, ben@post.net"));
    }

    #[test]
    fn json_answers_come_from_parsing_the_object() {
        let task = spec("json_field");
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 2, 200) {
                let open = e.prompt.find('{').unwrap();
                let close = e.prompt.rfind('}').unwrap();
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&e.prompt[open..=close]).unwrap();
                assert_eq!(object.len(), 3, "{}", e.prompt);
                let outside = format!("{} {}", &e.prompt[..open], &e.prompt[close + 1..]);
                let asked: Vec<&str> = JSON_FIELDS
                    .into_iter()
                    .filter(|f| {
                        outside
                            .split(|c: char| !c.is_ascii_alphabetic())
                            .any(|w| w == *f)
                    })
                    .collect();
                assert_eq!(asked.len(), 1, "{}", e.prompt);
                let expected = match &object[asked[0]] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(expected, e.answer, "{}", e.prompt);
            }
        }
        assert!(!task.score("\"Paris\"", "Paris"));
        assert!(!task.score("paris", "Paris"));
    }

    #[test]
    fn number_answers_are_the_integers_of_the_prompt() {
        let task = spec("extract_numbers");
        for split in [Split::Train, Split::Test] {
            for e in task.generate(split, 3, 200) {
                let found = ints(&e.prompt);
                assert!((2..=3).contains(&found.len()), "{}", e.prompt);
                assert!(found.iter().all(|n| (1..=999).contains(n)));
                assert_eq!(join_ints(&found), e.answer, "{}", e.prompt);
            }
        }
        assert!(!task.score("12 and 7", "12, 7"));
        assert!(!task.score("7, 12", "12, 7"));
    }

    #[test]
    fn capitalize_uppercases_the_first_letter() {
        assert_eq!(capitalize("anna"), "Anna");
        assert_eq!(capitalize(""), "");
    }
}
