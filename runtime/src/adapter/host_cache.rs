//! `HostCache`: the middle tier of adapter residency — adapters loaded from their folders
//! into host memory, bounded in bytes, least recently used out first.
//!
//! Keyed by id, folder and the weights file's size and modification time, so files replaced
//! in place are read again. An evicted adapter still in use by a running sequence stays
//! alive through its `Arc` until that sequence ends; the budget bounds what the cache keeps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::{Adapter, AdapterId};
use crate::{ModelConfig, Result, RuntimeError};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    id: AdapterId,
    dir: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

struct Entry {
    adapter: Arc<Adapter>,
    bytes: usize,
    last_used: u64,
}

/// Counters since the cache was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCacheStats {
    pub hits: u64,
    pub loads: u64,
    pub evictions: u64,
    /// Bytes held now.
    pub bytes: usize,
    pub adapters: usize,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    tick: u64,
    stats: HostCacheStats,
}

pub struct HostCache {
    budget_bytes: usize,
    state: Mutex<State>,
}

impl HostCache {
    /// A cache that keeps at most `budget_bytes` of adapter weights (an adapter larger than
    /// the whole budget is still served, and dropped as soon as another one is loaded).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            state: Mutex::new(State::default()),
        }
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    pub fn stats(&self) -> HostCacheStats {
        self.lock().stats
    }

    /// The adapter in `dir`, from memory when its files have not changed since it was read.
    /// Reading happens on the calling thread without holding the cache's lock.
    pub fn get_or_load(
        &self,
        id: &AdapterId,
        dir: &Path,
        model: &ModelConfig,
    ) -> Result<Arc<Adapter>> {
        let key = key(id, dir)?;
        {
            let mut state = self.lock();
            state.tick += 1;
            let tick = state.tick;
            if let Some(e) = state.entries.get_mut(&key) {
                e.last_used = tick;
                let adapter = e.adapter.clone();
                state.stats.hits += 1;
                return Ok(adapter);
            }
        }
        let adapter = Arc::new(Adapter::load(id.clone(), dir, model)?);
        let bytes = adapter.host_bytes();
        let mut state = self.lock();
        state.tick += 1;
        let tick = state.tick;
        state.stats.loads += 1;
        // Older versions of the same adapter are no longer reachable by key.
        let stale: Vec<Key> = state
            .entries
            .keys()
            .filter(|k| k.id == key.id && k.dir == key.dir && **k != key)
            .cloned()
            .collect();
        for k in stale {
            remove(&mut state, &k);
        }
        state.entries.insert(
            key,
            Entry {
                adapter: adapter.clone(),
                bytes,
                last_used: tick,
            },
        );
        state.stats.bytes += bytes;
        state.stats.adapters = state.entries.len();
        while state.stats.bytes > self.budget_bytes && state.entries.len() > 1 {
            let Some(victim) = state
                .entries
                .iter()
                .filter(|(_, e)| e.last_used != tick)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            remove(&mut state, &victim);
            state.stats.evictions += 1;
        }
        Ok(adapter)
    }

    /// Drops every cached version of `id` (after a deletion or a re-registration).
    pub fn forget(&self, id: &AdapterId) {
        let mut state = self.lock();
        let keys: Vec<Key> = state
            .entries
            .keys()
            .filter(|k| &k.id == id)
            .cloned()
            .collect();
        for k in keys {
            remove(&mut state, &k);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the map and the counters consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn remove(state: &mut State, key: &Key) {
    if let Some(e) = state.entries.remove(key) {
        state.stats.bytes -= e.bytes;
    }
    state.stats.adapters = state.entries.len();
}

fn key(id: &AdapterId, dir: &Path) -> Result<Key> {
    let weights = dir.join(Adapter::WEIGHTS_FILE);
    let meta = std::fs::metadata(&weights).map_err(|e| RuntimeError::Adapter {
        path: weights.clone(),
        reason: format!("cannot read the weights file: {e}"),
    })?;
    Ok(Key {
        id: id.clone(),
        dir: dir.to_path_buf(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::testing::{lora_config, lora_pair, tiny_model, write_adapter};
    use crate::ModuleKind;
    use safetensors::Dtype;

    fn folder(root: &Path, name: &str, seed: u64, rank: usize) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let tensors = lora_pair(0, ModuleKind::Q, rank, Dtype::F32, seed);
        write_adapter(
            &dir,
            &lora_config(rank, 8.0, serde_json::json!(["q_proj"])),
            &tensors,
        );
        dir
    }

    fn id(s: &str) -> AdapterId {
        AdapterId::new(s).unwrap()
    }

    #[test]
    fn stays_within_its_byte_budget_evicting_the_least_recently_used() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tiny_model();
        let dirs: Vec<PathBuf> = (0..3)
            .map(|i| folder(tmp.path(), &format!("a{i}"), i, 4))
            .collect();
        let one = Adapter::load(id("a0"), &dirs[0], &model)
            .unwrap()
            .host_bytes();
        assert!(one > 0);
        let cache = HostCache::new(2 * one);
        let a0 = cache.get_or_load(&id("a0"), &dirs[0], &model).unwrap();
        let _a1 = cache.get_or_load(&id("a1"), &dirs[1], &model).unwrap();
        // A hit returns the same allocation and makes a0 the most recently used.
        let again = cache.get_or_load(&id("a0"), &dirs[0], &model).unwrap();
        assert!(Arc::ptr_eq(&a0, &again));
        let _a2 = cache.get_or_load(&id("a2"), &dirs[2], &model).unwrap();
        let stats = cache.stats();
        assert_eq!((stats.loads, stats.hits, stats.evictions), (3, 1, 1));
        assert_eq!((stats.adapters, stats.bytes), (2, 2 * one));
        // a1 was evicted (a0 was used after it): loading it again reads the files.
        let _ = cache.get_or_load(&id("a1"), &dirs[1], &model).unwrap();
        assert_eq!(cache.stats().loads, 4);
        assert!(cache.stats().bytes <= cache.budget_bytes());
    }

    #[test]
    fn files_replaced_in_place_are_read_again_and_forget_frees_them() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tiny_model();
        let dir = folder(tmp.path(), "x", 1, 2);
        let cache = HostCache::new(1 << 30);
        let old = cache.get_or_load(&id("x"), &dir, &model).unwrap();
        folder(tmp.path(), "x", 9, 4); // another rank: another file size
        let new = cache.get_or_load(&id("x"), &dir, &model).unwrap();
        assert_ne!(old.sha256(), new.sha256());
        assert_eq!(cache.stats().adapters, 1, "the stale version is dropped");
        cache.forget(&id("x"));
        assert_eq!((cache.stats().adapters, cache.stats().bytes), (0, 0));
    }

    #[test]
    fn a_missing_folder_is_an_error_that_names_the_file() {
        let cache = HostCache::new(1 << 20);
        let err = cache
            .get_or_load(&id("nope"), Path::new("/no/such/dir"), &tiny_model())
            .unwrap_err();
        assert!(
            err.to_string().contains("adapter_model.safetensors"),
            "{err}"
        );
    }
}
