//! `PeftValidator`: the registry's adapter check, done by loading the adapter with the
//! runtime's PEFT loader against the base model's shape.

use std::collections::BTreeSet;
use std::path::Path;

use loramux_index::{AdapterValidator, ConfigSummary, ValidationError};
use loramux_runtime::{Adapter, ModelConfig};
use loramux_types::AdapterId;

pub struct PeftValidator {
    model: ModelConfig,
    /// The largest rank the server's adapter bank holds: a larger adapter could be
    /// registered but never served.
    max_rank: Option<usize>,
}

impl PeftValidator {
    /// Validates adapters for a base model of shape `model`.
    pub fn new(model: ModelConfig) -> Self {
        Self {
            model,
            max_rank: None,
        }
    }

    /// Also refuses adapters of a rank above `max_rank`.
    pub fn with_max_rank(self, max_rank: usize) -> Self {
        Self {
            max_rank: Some(max_rank),
            ..self
        }
    }
}

impl AdapterValidator for PeftValidator {
    fn validate(&self, id: &AdapterId, dir: &Path) -> Result<ConfigSummary, ValidationError> {
        let err = |e: &dyn std::fmt::Display| ValidationError {
            reason: e.to_string(),
        };
        let id = id.clone();
        // Loading reads and checks every tensor; the weights are dropped right after.
        let adapter = Adapter::load(id, dir, &self.model).map_err(|e| err(&e))?;
        if adapter.num_modules() == 0 {
            return Err(ValidationError {
                reason: "the adapter targets no module of this base model".into(),
            });
        }
        if let Some(max) = self.max_rank.filter(|&m| adapter.max_rank() > m) {
            return Err(ValidationError {
                reason: format!(
                    "rank {} is above the largest rank this server's adapter bank holds ({max}; \
                     serve --bank-rank)",
                    adapter.max_rank()
                ),
            });
        }
        let config = adapter.config();
        let modules: BTreeSet<_> = adapter.modules().map(|((_, m), _)| m).collect();
        let layers: BTreeSet<usize> = adapter.modules().map(|((l, _), _)| l).collect();
        Ok(ConfigSummary {
            rank: config.rank(),
            alpha: config.alpha(),
            use_rslora: config.use_rslora(),
            target_modules: modules
                .into_iter()
                .map(|m| m.hf_name().to_string())
                .collect(),
            layers: layers.len(),
            base_model: config.base_model().map(str::to_string),
        })
    }
}
