//! What the registry stores about an adapter, and what a registration asks for.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::vectors::TextKind;
use crate::AdapterId;

/// The PEFT configuration in a few fields, as the validator read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub rank: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    /// Targeted projections (`q_proj`, `v_proj`, ...).
    pub target_modules: Vec<String>,
    /// Layers that carry weights.
    pub layers: usize,
    pub base_model: Option<String>,
}

/// One managed file of an adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A registered adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRecord {
    pub id: AdapterId,
    /// Its folder under the registry's `adapters/`.
    pub folder: String,
    pub description: String,
    pub examples: Vec<String>,
    pub tags: Vec<String>,
    pub config: ConfigSummary,
    pub files: Vec<FileRecord>,
    /// The registry generation of its last change; the index records it to spot staleness.
    pub revision: i64,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A registration request: a PEFT folder and what the adapter is for.
#[derive(Debug, Clone)]
pub struct NewAdapter {
    pub id: AdapterId,
    /// The PEFT folder to copy from; it must lie under one of the allowed roots.
    pub source: PathBuf,
    pub description: String,
    pub examples: Vec<String>,
    pub tags: Vec<String>,
    /// Overwrite an adapter registered under the same id instead of refusing.
    pub replace: bool,
}

/// What the catalog writes for one registration: the record without its times and
/// revision (the catalog assigns them) plus the vectors of its texts, in text order
/// (description first, then the examples).
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub id: AdapterId,
    pub folder: String,
    pub description: String,
    pub examples: Vec<String>,
    pub tags: Vec<String>,
    pub config: ConfigSummary,
    pub files: Vec<FileRecord>,
    pub embedder: String,
    pub vectors: Vec<Vec<f32>>,
}

impl NewRecord {
    /// `(kind, text)` in the order of `vectors`.
    pub fn texts(&self) -> impl Iterator<Item = (TextKind, &str)> + '_ {
        std::iter::once((TextKind::Description, self.description.as_str())).chain(
            self.examples
                .iter()
                .map(|e| (TextKind::Example, e.as_str())),
        )
    }
}

/// One adapter's indexed texts as stored, with each vector when it was computed by the
/// embedder asked for.
#[derive(Debug, Clone)]
pub struct StoredTexts {
    pub id: AdapterId,
    pub revision: i64,
    pub texts: Vec<(TextKind, String, Option<Vec<f32>>)>,
}
