//! `RouteCache`: recent route decisions by prompt, so a repeated prompt is not embedded
//! again. Entries carry the registry generation they were computed at; a registration or
//! removal makes them stale.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use crate::plan::RoutePlan;

pub struct RouteCache {
    inner: Option<Mutex<LruCache<String, (i64, RoutePlan)>>>,
}

impl RouteCache {
    /// A cache of `capacity` prompts; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        }
    }

    pub fn get(&self, prompt: &str, generation: i64) -> Option<RoutePlan> {
        let mut cache = self.inner.as_ref()?.lock().ok()?;
        match cache.get(prompt) {
            Some((g, plan)) if *g == generation => Some(plan.clone()),
            _ => None,
        }
    }

    pub fn put(&self, prompt: &str, generation: i64, plan: &RoutePlan) {
        if let Some(Ok(mut cache)) = self.inner.as_ref().map(|m| m.lock()) {
            cache.put(prompt.to_string(), (generation, plan.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_at_the_same_generation_and_evicts_the_oldest() {
        let c = RouteCache::new(2);
        c.put("a", 1, &RoutePlan::Base);
        assert_eq!(c.get("a", 1), Some(RoutePlan::Base));
        assert_eq!(c.get("a", 2), None);
        c.put("b", 1, &RoutePlan::Base);
        c.put("c", 1, &RoutePlan::Base);
        assert_eq!(c.get("a", 1), None);
        assert!(RouteCache::new(0).get("a", 1).is_none());
    }
}
