//! Scoring of model outputs against exact answers: whole-output exact match for single
//! tasks, per-line match for the parts of composite prompts. Both compare case-sensitively
//! after [`normalize`].

/// Trims, drops one trailing `.`, and collapses every run of whitespace to one space.
pub fn normalize(s: &str) -> String {
    let trimmed = s.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `output` is `answer`, after normalizing both.
pub fn exact_match(output: &str, answer: &str) -> bool {
    normalize(output) == normalize(answer)
}

/// Whether some non-empty line of `output` is `answer`, after normalizing both. Used for
/// each part of a composite prompt, whose answers never contain newlines.
pub fn line_match(output: &str, answer: &str) -> bool {
    let want = normalize(answer);
    output
        .lines()
        .map(normalize)
        .any(|line| !line.is_empty() && line == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_trims_drops_one_final_period_and_collapses_whitespace() {
        assert_eq!(normalize("  42.  "), "42");
        assert_eq!(normalize("a\t b\n\nc"), "a b c");
        assert_eq!(normalize("end .\n"), "end");
        assert_eq!(normalize("two.."), "two.");
        assert_eq!(normalize("3.5"), "3.5");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" . "), "");
        assert_eq!(normalize("Case Kept"), "Case Kept");
    }

    #[test]
    fn exact_match_accepts_formatting_noise_only() {
        assert!(exact_match(" 1, 2, 3.\n", "1, 2, 3"));
        assert!(exact_match("forty-two", "forty-two."));
        assert!(exact_match("a  b", "a b"));
        // Extra words, wrong order, wrong case, missing separator.
        assert!(!exact_match("The answer is 42", "42"));
        assert!(!exact_match("3, 2, 1", "1, 2, 3"));
        assert!(!exact_match("png", "PNG"));
        assert!(!exact_match("Positive", "positive"));
        assert!(!exact_match("1 2 3", "1, 2, 3"));
        assert!(!exact_match("", "0"));
    }

    #[test]
    fn line_match_needs_a_whole_line() {
        let output = "Sure!\n  1, 5, 9. \n\nforty-two\n";
        assert!(line_match(output, "1, 5, 9"));
        assert!(line_match(output, "forty-two"));
        assert!(!line_match(output, "5"));
        assert!(!line_match(output, "Forty-two"));
        assert!(!line_match(output, "9, 5, 1"));
        assert!(!line_match("answer: 7", "7"));
        // An empty answer never matches the blank lines of an output.
        assert!(!line_match("a\n\nb", ""));
        assert!(!line_match("", "x"));
    }
}
