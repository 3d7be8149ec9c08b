//! `AdapterId`: the validated name of an adapter, `[a-z0-9][a-z0-9._-]{0,63}`.
//!
//! The id travels in URLs, file names (a registry folder is named by it: ".." and "a/b" must
//! never pass) and metrics labels, so it is checked once, here, and every crate takes an
//! `AdapterId` without checking again. It serializes as the plain string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name is not a valid adapter id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid adapter id {id:?}: {reason}")]
pub struct InvalidAdapterId {
    pub id: String,
    pub reason: String,
}

type Result<T> = std::result::Result<T, InvalidAdapterId>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdapterId(String);

impl AdapterId {
    /// Longest accepted name, in bytes (every accepted character is one byte).
    pub const MAX_LEN: usize = 64;

    pub fn new(name: &str) -> Result<Self> {
        let bad = |reason: String| {
            Err(InvalidAdapterId {
                id: name.to_string(),
                reason,
            })
        };
        let Some(first) = name.chars().next() else {
            return bad("the name is empty".into());
        };
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return bad(format!(
                "it starts with {first:?}; the first character must be a-z or 0-9"
            ));
        }
        if let Some((at, c)) = name.chars().enumerate().find(|&(_, c)| !is_allowed(c)) {
            return bad(format!(
                "character {c:?} at position {at} is not allowed (use a-z, 0-9, '.', '_', '-')"
            ));
        }
        if name.len() > Self::MAX_LEN {
            return bad(format!(
                "it is {} characters long; at most {} are allowed",
                name.len(),
                Self::MAX_LEN
            ));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

impl fmt::Display for AdapterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so ids line up in tables.
        f.pad(&self.0)
    }
}

impl AsRef<str> for AdapterId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for AdapterId {
    type Err = InvalidAdapterId;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for AdapterId {
    type Error = InvalidAdapterId;

    fn try_from(s: String) -> Result<Self> {
        Self::new(&s)
    }
}

impl From<AdapterId> for String {
    fn from(id: AdapterId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for name in ["a", "0", "math-v2", "code_llama.sql", &"x".repeat(64)] {
            let id = AdapterId::new(name).unwrap();
            assert_eq!(id.as_str(), name);
            assert_eq!(id.to_string(), name);
        }
    }

    #[test]
    fn rejects_invalid_names_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("-abc", "first character"),
            (".abc", "first character"),
            ("Abc", "first character"),
            ("ab c", "' '"),
            ("abC", "'C'"),
            ("a/b", "'/'"),
            ("é", "first character"),
            (&"x".repeat(65), "65 characters"),
        ];
        for (name, needle) in cases {
            let err = AdapterId::new(name).unwrap_err();
            assert_eq!(err.id, name);
            assert!(err.to_string().contains(needle), "{name:?}: {err}");
        }
    }

    #[test]
    fn serde_is_a_plain_string_and_validates() {
        let id = AdapterId::new("sql-expert").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"sql-expert\"");
        let back: AdapterId = serde_json::from_str("\"sql-expert\"").unwrap();
        assert_eq!(back, id);
        let err = serde_json::from_str::<AdapterId>("\"bad name\"").unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
    }

    #[test]
    fn orders_and_hashes_like_the_name() {
        let mut ids: Vec<AdapterId> = ["b", "a", "c"].iter().map(|s| s.parse().unwrap()).collect();
        ids.sort();
        let names: Vec<&str> = ids.iter().map(AdapterId::as_str).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let set: std::collections::HashSet<AdapterId> = ids.into_iter().collect();
        assert!(set.contains(&AdapterId::new("b").unwrap()));
    }
}
