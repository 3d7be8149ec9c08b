//! `AdapterKey`: the validated adapter name as the index crate knows it,
//! `[a-z0-9][a-z0-9._-]{0,63}`.
//!
//! Why not `loramux_runtime::AdapterId`: DESIGN puts `index` below `runtime` (it depends on
//! nothing of ours), so it cannot name runtime's type. The rule is the same; the router
//! converts between the two (`AdapterId::new(key.as_str())` cannot fail on a valid key).
//! The id is checked here too because it becomes a folder name under the registry.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{IndexError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdapterKey(String);

impl AdapterKey {
    pub const MAX_LEN: usize = 64;

    pub fn new(name: &str) -> Result<Self> {
        let bad = |reason: String| {
            Err(IndexError::InvalidKey {
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

impl fmt::Display for AdapterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so ids line up in tables.
        f.pad(&self.0)
    }
}

impl AsRef<str> for AdapterKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for AdapterKey {
    type Err = IndexError;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for AdapterKey {
    type Error = IndexError;

    fn try_from(s: String) -> Result<Self> {
        Self::new(&s)
    }
}

impl From<AdapterKey> for String {
    fn from(k: AdapterKey) -> Self {
        k.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_same_names_as_the_runtime() {
        for name in ["a", "0", "math-v2", "code_llama.sql", &"x".repeat(64)] {
            assert_eq!(AdapterKey::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        // ".." and "a/b" matter most: the key becomes a folder name.
        for (name, needle) in [
            ("", "empty"),
            ("..", "first character"),
            ("a/b", "'/'"),
            ("Abc", "first character"),
            ("base ", "' '"),
            (&"x".repeat(65), "65 characters"),
        ] {
            let err = AdapterKey::new(name).unwrap_err();
            assert!(err.to_string().contains(needle), "{name:?}: {err}");
        }
    }
}
