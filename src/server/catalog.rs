//! Where the server finds adapters by id, and how `"model": "auto"` picks them.
//!
//! The server depends on this trait, not on a storage: a folder of PEFT adapters serves
//! tests and simple setups; the SQLite registry with its embedding index implements it for
//! `loramux serve`.

use loramux_router::{Choice, RoutePlan, RouterError};
use loramux_runtime::AdapterId;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub id: AdapterId,
    pub dir: PathBuf,
    pub description: String,
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
    /// The id is taken (registration without `replace`).
    Conflict(String),
    NotFound(String),
    ReadOnly,
    Internal(String),
}

impl CatalogError {
    /// Replaces `path` with `name` in what the client is told; internal details, which
    /// only the log sees, keep it.
    pub fn redact(self, path: &str, name: &str) -> Self {
        match self {
            Self::Rejected(why) => Self::Rejected(why.replace(path, name)),
            Self::Conflict(why) => Self::Conflict(why.replace(path, name)),
            other => other,
        }
    }
}

pub trait AdapterCatalog: Send + Sync {
    fn list(&self) -> Vec<CatalogEntry>;
    fn get(&self, id: &str) -> Option<CatalogEntry>;
    /// The plan for a request's choice: explicit choices checked against this catalog,
    /// `auto` through retrieval (`prompt` is what it retrieves for).
    fn resolve(&self, choice: &Choice, prompt: &str) -> Result<RoutePlan, CatalogError>;
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
/// `auto` is the base model.
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

    fn resolve(&self, choice: &Choice, _prompt: &str) -> Result<RoutePlan, CatalogError> {
        RoutePlan::explicit(choice, |id| self.get(id.as_str()).is_some())
            .unwrap_or(Ok(RoutePlan::Base))
            .map_err(CatalogError::from)
    }
}

impl From<RouterError> for CatalogError {
    fn from(e: RouterError) -> Self {
        match e {
            RouterError::UnknownAdapter { id } => Self::NotFound(id),
            RouterError::InvalidChoice { reason } => Self::Rejected(reason),
            other => Self::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loramux_runtime::AdapterId;

    fn id(s: &str) -> AdapterId {
        AdapterId::new(s).unwrap()
    }

    #[test]
    fn a_folder_catalog_resolves_explicit_choices_by_the_routers_rules() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("runtime/tests/fixtures/adapters");
        let catalog = DirCatalog::new(fixtures);
        assert_eq!(
            catalog.resolve(&Choice::Auto, "anything").unwrap(),
            RoutePlan::Base
        );
        let mix = Choice::Weighted(vec![(id("r8-qv"), 3.0), (id("r2-all7"), 1.0)]);
        assert_eq!(
            catalog.resolve(&mix, "").unwrap(),
            RoutePlan::Fixed {
                adapters: vec![(id("r8-qv"), 0.75), (id("r2-all7"), 0.25)]
            }
        );
        assert!(matches!(
            catalog.resolve(&Choice::Named(id("ghost")), ""),
            Err(CatalogError::NotFound(ref g)) if g == "ghost"
        ));
        let twice = Choice::Weighted(vec![(id("r8-qv"), 1.0), (id("r8-qv"), 1.0)]);
        assert!(matches!(
            catalog.resolve(&twice, ""),
            Err(CatalogError::Rejected(_))
        ));
    }
}
