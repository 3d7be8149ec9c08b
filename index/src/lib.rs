//! loramux index: what loramux remembers about adapters and how it finds them.
//!
//! - [`embed`]: sentence embedders (text → unit vector), default BERT all-MiniLM-L6-v2.
//! - [`vectors`]: an HNSW index over several vectors per adapter, cosine similarity.
//! - [`registry`]: the adapter registry (SQLite catalog + managed files + the index).
//!
//! This crate depends on nothing else of loramux (DESIGN): adapter validation, which needs
//! the runtime's PEFT loader, is injected through [`AdapterValidator`].

pub mod embed;
mod error;
pub mod registry;
pub mod vectors;

pub use embed::{BertEmbedder, BertEmbedderConfig, Embedder, EmbedderBackend, MatmulKind};
pub use error::{IndexError, Result};
pub use loramux_types::AdapterId;
pub use registry::{
    AcceptAll, AdapterRecord, AdapterValidator, ConfigSummary, FileRecord, IndexState, NewAdapter,
    OpenReport, Registry, RegistryConfig, ValidationError,
};
pub use vectors::{AdapterVectors, GraphParams, Hit, TextKind, VectorIndex};
