//! `ResidencyKey`: what the bank keys residency by — the adapter's id and the content hash
//! of its weights file. An adapter replaced under the same id (new files) is a different
//! key, so it never hits the old weights still resident, while the id stays the one the
//! catalog, the gate and the response use.

use std::fmt;

use crate::{Adapter, AdapterId};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResidencyKey {
    pub id: AdapterId,
    /// sha256 of `adapter_model.safetensors`; `None` for adapters built in memory.
    pub content: Option<String>,
}

impl ResidencyKey {
    pub fn of(adapter: &Adapter) -> Self {
        Self {
            id: adapter.id().clone(),
            content: adapter.sha256().map(str::to_string),
        }
    }
}

/// An id alone: the key of an adapter built in memory.
impl From<AdapterId> for ResidencyKey {
    fn from(id: AdapterId) -> Self {
        Self { id, content: None }
    }
}

impl fmt::Display for ResidencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.content {
            Some(hash) => write!(f, "{}@{}", self.id, &hash[..hash.len().min(12)]),
            None => write!(f, "{}", self.id),
        }
    }
}
