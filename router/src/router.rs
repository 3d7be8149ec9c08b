//! `Router`: a request's choice and prompt → [`RoutePlan`], over a shared [`Registry`].
//!
//! Explicit choices (`base`, a named adapter, a weighted list) bypass retrieval but are
//! checked against the registry; `auto` retrieves, through a small cache of recent prompts.

use std::sync::{Arc, RwLock};

use loramux_index::Registry;

use crate::cache::RouteCache;
use crate::plan::{Choice, RoutePlan};
use crate::retrieve::{retrieve, RetrievalConfig};
use crate::{Result, RouterError};

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub retrieval: RetrievalConfig,
    /// Prompts whose decisions are remembered (0: no cache).
    pub cache_size: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            retrieval: RetrievalConfig::default(),
            cache_size: 1024,
        }
    }
}

pub struct Router {
    registry: Arc<RwLock<Registry>>,
    config: RouterConfig,
    cache: RouteCache,
}

impl Router {
    pub fn new(registry: Arc<RwLock<Registry>>, config: RouterConfig) -> Result<Self> {
        config.retrieval.validate()?;
        let cache = RouteCache::new(config.cache_size);
        Ok(Self {
            registry,
            config,
            cache,
        })
    }

    pub fn registry(&self) -> &Arc<RwLock<Registry>> {
        &self.registry
    }

    /// Retrieval for a prompt (the `auto` choice).
    pub fn route(&self, prompt: &str) -> Result<RoutePlan> {
        self.resolve(&Choice::Auto, prompt)
    }

    /// The plan for a request's choice; `prompt` is used by `auto` only.
    pub fn resolve(&self, choice: &Choice, prompt: &str) -> Result<RoutePlan> {
        let _span = tracing::info_span!("route").entered();
        let registry = self.registry.read().map_err(|_| RouterError::Poisoned)?;
        if let Some(plan) = RoutePlan::explicit(choice, |id| is_registered(&registry, id)) {
            return plan;
        }
        let generation = registry.generation();
        if let Some(plan) = self.cache.get(prompt, generation) {
            tracing::debug!("route cache hit");
            return Ok(plan);
        }
        let plan = retrieve(
            registry.embedder().as_ref(),
            registry.index(),
            prompt,
            &self.config.retrieval,
        )?;
        self.cache.put(prompt, generation, &plan);
        Ok(plan)
    }
}

/// The index holds exactly the registered adapters, in memory: no database round trip.
fn is_registered(registry: &Registry, id: &loramux_runtime::AdapterId) -> bool {
    registry.index().contains(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_router_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::Router>();
    }
}
