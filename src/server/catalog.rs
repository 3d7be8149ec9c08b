//! Where the server finds adapters by id, and how `"model": "auto"` picks them.
//!
//! The server depends on this trait, not on a storage: a folder of PEFT adapters serves
//! tests and simple setups; the SQLite registry with its embedding index implements it for
//! `loramux serve`.

use loramux_runtime::{Adapter, AdapterId, ModelConfig};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub id: AdapterId,
    pub dir: PathBuf,
    pub description: String,
}

/// One retrieved candidate: similarity to the prompt and its prior mixing weight.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedCandidate {
    pub id: AdapterId,
    pub similarity: f32,
    pub prior: f32,
}

/// A registration asked for over HTTP: a PEFT folder under an allowed root.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Registration {
    pub id: String,
    pub path: PathBuf,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub replace: bool,
}

/// Why a catalog refused a change: the client's fault, an unknown id, or ours.
#[derive(Debug)]
pub enum CatalogError {
    Rejected(String),
    NotFound(String),
    ReadOnly,
    Internal(String),
}

pub trait AdapterCatalog: Send + Sync {
    fn list(&self) -> Vec<CatalogEntry>;
    fn get(&self, id: &str) -> Option<CatalogEntry>;
    /// Candidates for a prompt, best first; empty means "use the base model".
    fn route(&self, prompt: &str) -> Vec<RoutedCandidate>;
    /// Registers an adapter; catalogs without storage refuse with `ReadOnly`.
    fn register(&self, _request: Registration) -> Result<CatalogEntry, CatalogError> {
        Err(CatalogError::ReadOnly)
    }
    fn remove(&self, _id: &str) -> Result<(), CatalogError> {
        Err(CatalogError::ReadOnly)
    }
    /// Where uploaded files may be staged before `register` (inside an allowed root).
    fn upload_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// Every sub-folder of one folder is an adapter named after the folder. No retrieval:
/// `auto` falls back to the base model.
pub struct DirCatalog {
    root: PathBuf,
}

impl DirCatalog {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl AdapterCatalog for DirCatalog {
    fn list(&self) -> Vec<CatalogEntry> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<CatalogEntry> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("adapter_config.json").is_file())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().replace('_', "-");
                AdapterId::new(&name).ok().map(|id| CatalogEntry {
                    id,
                    dir: e.path(),
                    description: String::new(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn get(&self, id: &str) -> Option<CatalogEntry> {
        self.list().into_iter().find(|e| e.id.as_str() == id)
    }

    fn route(&self, _prompt: &str) -> Vec<RoutedCandidate> {
        Vec::new()
    }
}

/// Loaded adapters, shared by all requests so files are read once.
#[derive(Default)]
pub struct LoadedAdapters {
    map: dashmap::DashMap<AdapterId, Arc<Adapter>>,
}

impl LoadedAdapters {
    pub fn get_or_load(
        &self,
        entry: &CatalogEntry,
        cfg: &ModelConfig,
    ) -> loramux_runtime::Result<Arc<Adapter>> {
        if let Some(a) = self.map.get(&entry.id) {
            return Ok(a.clone());
        }
        let adapter = Arc::new(Adapter::load(bank_id(entry)?, &entry.dir, cfg)?);
        self.map.insert(entry.id.clone(), adapter.clone());
        Ok(adapter)
    }

    pub fn forget(&self, id: &AdapterId) {
        self.map.remove(id);
    }
}

/// The id an adapter has inside the `AdapterBank`: the catalog id plus a hash of its folder.
/// The bank keys residency by id, so an adapter replaced under the same catalog id (a new
/// registry folder) must not hit the old, still-resident weights.
fn bank_id(entry: &CatalogEntry) -> loramux_runtime::Result<AdapterId> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    entry.dir.hash(&mut h);
    let id = entry.id.as_str();
    let prefix = &id[..id.len().min(AdapterId::MAX_LEN - 9)];
    AdapterId::new(&format!("{prefix}.{:08x}", h.finish() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_adapter_gets_a_new_bank_id() {
        let entry = |dir: &str| CatalogEntry {
            id: AdapterId::new(&"a".repeat(AdapterId::MAX_LEN)).unwrap(),
            dir: PathBuf::from(dir),
            description: String::new(),
        };
        let first = bank_id(&entry("/r/adapters/x@1")).unwrap();
        let again = bank_id(&entry("/r/adapters/x@1")).unwrap();
        let replaced = bank_id(&entry("/r/adapters/x@2")).unwrap();
        assert_eq!(first, again);
        assert_ne!(first, replaced);
        assert!(first.as_str().len() <= AdapterId::MAX_LEN);
    }
}
