//! Test helpers shared by the task files: reading inputs back out of rendered prompts, so
//! answers are checked by recomputation rather than by the generator that made them.

use super::Example;

/// The non-negative integers of `s`, in order (a `-` is a separator, not a sign).
pub fn ints(s: &str) -> Vec<u32> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().expect("a small integer"))
        .collect()
}

/// The input of a prompt whose template quotes it (`"..."`) or ends with `: {x}`.
pub fn quoted_or_after_colon(prompt: &str) -> &str {
    let quoted = prompt
        .split_once('"')
        .and_then(|(_, rest)| rest.split_once('"'));
    match quoted {
        Some((inside, _)) => inside,
        None => {
            let (_, after) = prompt.rsplit_once(": ").expect("a quote or a colon");
            after
        }
    }
}

/// Whether `prompt` could have been rendered from `template`: its literal pieces appear in
/// order, the first at the start and the last at the end.
pub fn matches_template(template: &str, prompt: &str) -> bool {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c);
        let Some(close) = close else { break };
        pieces.push(&rest[..open]);
        rest = &rest[close + 1..];
    }
    pieces.push(rest);
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if pieces.len() == 1 {
        return prompt == template;
    }
    if !prompt.starts_with(first) || !prompt.ends_with(last) {
        return false;
    }
    if prompt.len() < first.len() + last.len() {
        return false;
    }
    let mut middle = &prompt[first.len()..prompt.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match middle.find(piece) {
            Some(at) => middle = &middle[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// How many of `templates` some example's prompt matches.
pub fn templates_used(templates: &[&str], examples: &[Example]) -> usize {
    templates
        .iter()
        .filter(|t| examples.iter().any(|e| matches_template(t, &e.prompt)))
        .count()
}

#[test]
fn helpers_read_prompts_back() {
    assert_eq!(ints("a 12, b7 and 300-4"), vec![12, 7, 300, 4]);
    assert!(ints("none").is_empty());
    assert_eq!(quoted_or_after_colon(r#"Flip "a b c" now."#), "a b c");
    assert_eq!(quoted_or_after_colon("Note: do this: a b c"), "a b c");
    assert!(matches_template("Add {a} and {b}.", "Add 1 and 2."));
    assert!(!matches_template("Add {a} and {b}.", "Add 1 plus 2."));
    assert!(!matches_template("Sort: {x}", "Please sort: 1, 2"));
    assert!(matches_template("{x} done", "1 done"));
}
