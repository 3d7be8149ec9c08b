//! The SQLite registry and its embedding index as the server's adapter catalog: ids and
//! folders from the registry, `auto` through the router (retrieval + prior + cache).

use super::catalog::{AdapterCatalog, CatalogEntry, CatalogError, Registration};
use loramux_index::{IndexError, NewAdapter, Registry};
use loramux_router::{Choice, PeftValidator, RoutePlan, Router};
use loramux_runtime::AdapterId;
use std::sync::{Arc, RwLock};

pub struct RegistryCatalog {
    router: Router,
    validator: PeftValidator,
    /// Hand `auto` every retrieved candidate (a learned gate picks per token), not only the
    /// router's top-k.
    all_candidates: bool,
}

impl RegistryCatalog {
    pub fn new(router: Router, validator: PeftValidator) -> Self {
        Self {
            router,
            validator,
            all_candidates: false,
        }
    }

    /// `auto` returns all retrieved candidates: for a server whose learned gate chooses.
    pub fn with_all_candidates(mut self) -> Self {
        self.all_candidates = true;
        self
    }

    pub fn registry(&self) -> &Arc<RwLock<Registry>> {
        self.router.registry()
    }

    fn entry(registry: &Registry, record: &loramux_index::AdapterRecord) -> Option<CatalogEntry> {
        Some(CatalogEntry {
            id: AdapterId::new(record.id.as_str()).ok()?,
            dir: registry.adapter_dir(record),
            description: record.description.clone(),
        })
    }
}

impl AdapterCatalog for RegistryCatalog {
    fn list(&self) -> Vec<CatalogEntry> {
        let Ok(registry) = self.registry().read() else {
            return Vec::new();
        };
        let records = registry.list().unwrap_or_default();
        records
            .iter()
            .filter_map(|r| Self::entry(&registry, r))
            .collect()
    }

    fn get(&self, id: &str) -> Option<CatalogEntry> {
        let key = AdapterId::new(id).ok()?;
        let registry = self.registry().read().ok()?;
        let record = registry.get(&key).ok()?;
        Self::entry(&registry, &record)
    }

    fn resolve(&self, choice: &Choice, prompt: &str) -> Result<RoutePlan, CatalogError> {
        match self.router.resolve(choice, prompt)? {
            RoutePlan::Auto { candidates, top_k } => {
                // The kept candidates share the mixture: renormalize their priors to sum 1.
                let keep = if self.all_candidates {
                    candidates.len()
                } else {
                    top_k.max(1)
                };
                let mut kept: Vec<_> = candidates.into_iter().take(keep).collect();
                let total: f32 = kept.iter().map(|c| c.prior).sum();
                for c in &mut kept {
                    c.prior = if total > 0.0 { c.prior / total } else { 0.0 };
                }
                let top_k = top_k.min(kept.len());
                Ok(RoutePlan::Auto {
                    candidates: kept,
                    top_k,
                })
            }
            plan => Ok(plan),
        }
    }

    fn register(&self, r: Registration) -> Result<CatalogEntry, CatalogError> {
        let id = AdapterId::new(&r.id).map_err(|e| CatalogError::Rejected(e.to_string()))?;
        let mut registry = self
            .registry()
            .write()
            .map_err(|_| CatalogError::Internal("registry lock poisoned".into()))?;
        let record = registry
            .register(
                NewAdapter {
                    id,
                    source: r.path,
                    description: r.description,
                    examples: r.examples,
                    tags: r.tags,
                    replace: r.replace,
                },
                &self.validator,
            )
            .map_err(map_err)?;
        Self::entry(&registry, &record)
            .ok_or_else(|| CatalogError::Internal("registered id is not a valid adapter id".into()))
    }

    fn upload_dir(&self) -> Option<std::path::PathBuf> {
        self.registry()
            .read()
            .ok()
            .map(|r| r.root().join("uploads"))
    }

    fn remove(&self, id: &str) -> Result<(), CatalogError> {
        let key = AdapterId::new(id).map_err(|e| CatalogError::Rejected(e.to_string()))?;
        let mut registry = self
            .registry()
            .write()
            .map_err(|_| CatalogError::Internal("registry lock poisoned".into()))?;
        registry.remove(&key).map_err(map_err)
    }
}

fn map_err(e: IndexError) -> CatalogError {
    match e {
        IndexError::NotFound { id } => CatalogError::NotFound(id),
        IndexError::Duplicate { .. } => CatalogError::Conflict(e.to_string()),
        IndexError::InvalidAdapterId(_)
        | IndexError::OutsideRoots { .. }
        | IndexError::BadSource { .. }
        | IndexError::Invalid { .. }
        | IndexError::BadMetadata { .. } => CatalogError::Rejected(e.to_string()),
        other => CatalogError::Internal(other.to_string()),
    }
}
