//! `AdapterValidator`: the check that a folder holds an adapter the runtime can serve.
//!
//! The index crate knows nothing of models (DESIGN), so the PEFT loader is injected: the
//! router implements this trait with the runtime's loader and the base model's config.

use std::path::Path;

use crate::{AdapterId, ConfigSummary};

/// Why a folder was refused, in words for the user.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct ValidationError {
    pub reason: String,
}

pub trait AdapterValidator {
    /// Checks the (already copied) adapter folder `dir` and summarizes its config.
    fn validate(&self, id: &AdapterId, dir: &Path) -> Result<ConfigSummary, ValidationError>;
}

/// Accepts every folder with a fixed summary: for tests and benchmarks of the registry
/// itself, where no base model is at hand.
#[derive(Debug, Clone)]
pub struct AcceptAll(pub ConfigSummary);

impl AdapterValidator for AcceptAll {
    fn validate(&self, _id: &AdapterId, _dir: &Path) -> Result<ConfigSummary, ValidationError> {
        Ok(self.0.clone())
    }
}
