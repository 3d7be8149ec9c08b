//! The one public error type of the index crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    InvalidAdapterId(#[from] loramux_types::InvalidAdapterId),
    #[error("embedder {path}: {reason}")]
    EmbedderLoad { path: PathBuf, reason: String },
    #[error("embedding failed: {reason}")]
    Embed { reason: String },
    #[error("registry database {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("registry database {path}: schema version {found} is newer than this build understands ({supported})")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("registry {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("adapter {id} is already registered (replace it explicitly to overwrite)")]
    Duplicate { id: String },
    #[error("adapter {id} is not registered")]
    NotFound { id: String },
    #[error("adapter folder {path} is outside the allowed roots ({roots})")]
    OutsideRoots { path: PathBuf, roots: String },
    #[error("adapter folder {path}: {reason}")]
    BadSource { path: PathBuf, reason: String },
    #[error("adapter {id} failed validation: {reason}")]
    Invalid { id: String, reason: String },
    #[error("adapter {id}: {reason}")]
    BadMetadata { id: String, reason: String },
    #[error("file {path}: sha256 {found} does not match the recorded {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("vector index {path}: {reason}")]
    VectorIndex { path: PathBuf, reason: String },
    #[error("query vector has {found} dimensions; the index holds {expected}")]
    Dimension { expected: usize, found: usize },
    #[error("the registry lock was poisoned by a panic in another thread")]
    Poisoned,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, IndexError>;

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn db(path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        Self::Database {
            path: path.into(),
            source,
        }
    }
}
