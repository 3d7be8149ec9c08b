//! Checks on a registration's words (description, examples, tags) before anything is
//! copied or embedded.

use super::config::RegistryConfig;
use super::record::NewAdapter;
use crate::{AdapterId, IndexError, Result};

pub(crate) fn check_metadata(new: &NewAdapter, cfg: &RegistryConfig) -> Result<()> {
    let bad = |reason: String| {
        Err(IndexError::BadMetadata {
            id: new.id.to_string(),
            reason,
        })
    };
    if new.description.trim().is_empty() {
        return bad("the description is empty; say what the adapter is for".into());
    }
    if new.examples.len() > cfg.max_examples {
        return bad(format!(
            "{} examples; at most {} are allowed",
            new.examples.len(),
            cfg.max_examples
        ));
    }
    if let Some(i) = new.examples.iter().position(|e| e.trim().is_empty()) {
        return bad(format!("example {} is empty", i + 1));
    }
    let texts = std::iter::once(&new.description).chain(&new.examples);
    if let Some(t) = texts
        .into_iter()
        .find(|t| t.chars().count() > cfg.max_text_chars)
    {
        return bad(format!(
            "a text has {} characters; at most {} are allowed",
            t.chars().count(),
            cfg.max_text_chars
        ));
    }
    if new.tags.len() > cfg.max_tags {
        return bad(format!(
            "{} tags; at most {} are allowed",
            new.tags.len(),
            cfg.max_tags
        ));
    }
    if let Some(Err(e)) = new
        .tags
        .iter()
        .map(|t| AdapterId::new(t))
        .find(|r| r.is_err())
    {
        return bad(format!("tag: {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new() -> NewAdapter {
        NewAdapter {
            id: AdapterId::new("x").unwrap(),
            source: "/nowhere".into(),
            description: "sql".into(),
            examples: vec!["select all rows".into()],
            tags: vec!["code".into()],
            replace: false,
        }
    }

    #[test]
    fn accepts_a_plain_request_and_names_each_problem() {
        let cfg = RegistryConfig::default();
        assert!(check_metadata(&new(), &cfg).is_ok());
        type Edit = fn(&mut NewAdapter);
        let cases: [(Edit, &str); 5] = [
            (|n| n.description = "  ".into(), "description is empty"),
            (|n| n.examples.push(" ".into()), "example 2 is empty"),
            (|n| n.examples = vec!["q".into(); 201], "201 examples"),
            (|n| n.description = "x".repeat(4001), "4001 characters"),
            (|n| n.tags.push("Bad Tag".into()), "tag"),
        ];
        for (edit, needle) in cases {
            let mut n = new();
            edit(&mut n);
            let err = check_metadata(&n, &cfg).unwrap_err();
            assert!(
                matches!(err, IndexError::BadMetadata { .. }) && err.to_string().contains(needle),
                "{err}"
            );
        }
    }
}
