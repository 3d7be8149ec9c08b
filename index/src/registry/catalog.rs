//! `Catalog`: where the registry keeps adapter metadata and text vectors.
//!
//! SQLite ([`super::SqliteCatalog`]) is the one implementation; the trait is the seam for a
//! server database when several replicas share one registry (DESIGN, "Where this can
//! grow"). Files stay with the registry; the catalog only names their folder.

use crate::registry::record::{AdapterRecord, NewRecord, StoredTexts};
use crate::{AdapterId, Result};

/// One atomic change.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Insert an adapter; with `replace`, overwrite one of the same id (else refuse it
    /// with [`crate::IndexError::Duplicate`]).
    Put {
        record: &'a NewRecord,
        replace: bool,
    },
    /// Delete adapters (missing ones are ignored).
    Remove { ids: &'a [AdapterId] },
    /// Change nothing; only run the step under the lock.
    Nothing,
}

/// Runs while the catalog holds its write lock, before the change is committed. It sees
/// every registered adapter's folder; if it fails, nothing is committed.
pub type LockedStep<'s> = &'s mut dyn FnMut(&[(AdapterId, String)]) -> Result<()>;

pub trait Catalog: Send {
    fn list(&self) -> Result<Vec<AdapterRecord>>;
    fn get(&self, id: &AdapterId) -> Result<Option<AdapterRecord>>;
    /// The current generation: bumped by every committed change.
    fn generation(&self) -> Result<i64>;
    /// Every adapter's texts, with the vectors stored for `embedder`.
    fn texts(&self, embedder: &str) -> Result<Vec<StoredTexts>>;
    /// Stores vectors for an adapter's texts (in text order) computed by `embedder`.
    fn put_vectors(&mut self, id: &AdapterId, embedder: &str, vectors: &[Vec<f32>]) -> Result<()>;
    /// Takes the write lock, checks `change` can apply, runs `step`, applies `change` and
    /// commits, all or nothing. Returns the new generation (the old one for `Nothing`).
    fn write(&mut self, change: Change<'_>, step: LockedStep<'_>) -> Result<i64>;
}
