//! `Registry`: the adapters loramux knows — metadata in a [`Catalog`] (SQLite), files in a
//! managed folder, and the [`VectorIndex`] derived from both.
//!
//! Layout of a registry folder: `registry.sqlite3`, `adapters/<id>@<tag>/` (the copied
//! PEFT files), `index/` (the saved vector index). Registration is all or nothing: files
//! are copied into a staging folder and validated there, then one catalog transaction
//! records the adapter while the staging folder is renamed into place; a failure or a kill
//! at any step leaves nothing the next [`Registry::open`] does not sweep away. The index is
//! derived data: on open it is loaded and brought up to date with the catalog, or rebuilt.

mod catalog;
mod checks;
mod config;
pub mod files;
mod open;
mod record;
mod schema;
mod sqlite;
mod validator;

pub use catalog::{Catalog, Change, LockedStep};
pub use config::RegistryConfig;
pub use open::{IndexState, OpenReport};
pub use record::{AdapterRecord, ConfigSummary, FileRecord, NewAdapter, NewRecord, StoredTexts};
pub use sqlite::SqliteCatalog;
pub use validator::{AcceptAll, AdapterValidator, ValidationError};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::vectors::{TextKind, VectorIndex};
use crate::{AdapterId, Embedder, IndexError, Result};

pub struct Registry {
    root: PathBuf,
    config: RegistryConfig,
    // A Mutex so the registry is `Sync` (SQLite connections are not) and a server can
    // share it behind a `RwLock`; writes take `&mut self` and bypass the lock.
    catalog: Mutex<Box<dyn Catalog>>,
    embedder: Arc<dyn Embedder>,
    index: VectorIndex,
    generation: i64,
    report: OpenReport,
}

impl Registry {
    pub const DATABASE: &'static str = "registry.sqlite3";
    pub const ADAPTERS: &'static str = "adapters";
    pub const INDEX: &'static str = "index";

    /// Opens (or creates) the SQLite registry in `root`.
    pub fn open(root: &Path, config: RegistryConfig, embedder: Arc<dyn Embedder>) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| IndexError::io(root, e))?;
        let catalog = SqliteCatalog::open(&root.join(Self::DATABASE))?;
        Self::open_with(root, config, Box::new(catalog), embedder)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn adapters_dir(&self) -> PathBuf {
        self.root.join(Self::ADAPTERS)
    }

    pub fn index_dir(&self) -> PathBuf {
        self.root.join(Self::INDEX)
    }

    /// The folder holding a registered adapter's files.
    pub fn adapter_dir(&self, record: &AdapterRecord) -> PathBuf {
        self.adapters_dir().join(&record.folder)
    }

    /// What [`Registry::open`] found and repaired.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    pub fn index(&self) -> &VectorIndex {
        &self.index
    }

    /// Bumped by every registration and removal (route caches key on it).
    pub fn generation(&self) -> i64 {
        self.generation
    }

    pub fn list(&self) -> Result<Vec<AdapterRecord>> {
        self.catalog()?.list()
    }

    pub fn get(&self, id: &AdapterId) -> Result<AdapterRecord> {
        self.catalog()?
            .get(id)?
            .ok_or_else(|| IndexError::NotFound { id: id.to_string() })
    }

    fn catalog(&self) -> Result<MutexGuard<'_, Box<dyn Catalog>>> {
        self.catalog.lock().map_err(|_| IndexError::Poisoned)
    }

    fn catalog_mut(&mut self) -> Result<&mut Box<dyn Catalog>> {
        self.catalog.get_mut().map_err(|_| IndexError::Poisoned)
    }

    /// Allows registering adapters from `root` (for example the project's zoo) from now on.
    pub fn allow_root(&mut self, root: &Path) {
        if !self.config.allowed_roots.iter().any(|r| r == root) {
            self.config.allowed_roots.push(root.to_path_buf());
        }
    }

    /// The allowed roots with the registry's own folder.
    fn roots(&self) -> Vec<PathBuf> {
        let mut roots = self.config.allowed_roots.clone();
        roots.push(self.root.clone());
        roots
    }

    /// Registers an adapter: copies its PEFT files, validates the copy with `validator`,
    /// embeds its description and examples, and records it; all or nothing.
    pub fn register(
        &mut self,
        new: NewAdapter,
        validator: &dyn AdapterValidator,
    ) -> Result<AdapterRecord> {
        let _span = tracing::info_span!("register", id = %new.id).entered();
        let replace = new.replace;
        let (record, staged) = self.prepare(new, validator)?;
        self.commit(record, staged, replace)
    }

    /// Everything that can fail before the commit, with nothing recorded yet: the staged
    /// copy is deleted when dropped.
    fn prepare(
        &self,
        new: NewAdapter,
        validator: &dyn AdapterValidator,
    ) -> Result<(NewRecord, files::Staged)> {
        checks::check_metadata(&new, &self.config)?;
        if !new.replace && self.catalog()?.get(&new.id)?.is_some() {
            return Err(IndexError::Duplicate {
                id: new.id.to_string(),
            });
        }
        let roots = self.roots();
        let source = files::check_roots(&new.source, &roots)?;
        let staged = files::stage(&self.adapters_dir(), &source, &roots)?;
        let config =
            validator
                .validate(&new.id, staged.path())
                .map_err(|e| IndexError::Invalid {
                    id: new.id.to_string(),
                    reason: e.reason,
                })?;
        let texts: Vec<&str> = std::iter::once(new.description.as_str())
            .chain(new.examples.iter().map(String::as_str))
            .collect();
        let vectors = self.embedder.embed(&texts)?;
        if let Some(v) = vectors.iter().find(|v| v.len() != self.index.dim()) {
            return Err(IndexError::Dimension {
                expected: self.index.dim(),
                found: v.len(),
            });
        }
        let record = NewRecord {
            folder: format!("{}@{}", new.id, staged.tag()),
            id: new.id,
            description: new.description,
            examples: new.examples,
            tags: new.tags,
            config,
            files: staged.files.clone(),
            embedder: self.embedder.id().to_string(),
            vectors,
        };
        Ok((record, staged))
    }

    /// One catalog transaction records the adapter while the staged folder is renamed into
    /// place; then the replaced version's folder goes and the index learns the vectors.
    fn commit(
        &mut self,
        record: NewRecord,
        staged: files::Staged,
        replace: bool,
    ) -> Result<AdapterRecord> {
        let adapters = self.adapters_dir();
        let target = adapters.join(&record.folder);
        let mut staged = Some(staged);
        let mut old_folder = None;
        let committed = self.catalog_mut()?.write(
            Change::Put {
                record: &record,
                replace,
            },
            &mut |known| {
                old_folder = known
                    .iter()
                    .find(|(k, _)| *k == record.id)
                    .map(|(_, f)| f.clone());
                match staged.take() {
                    Some(s) => s.place(&target),
                    None => Ok(()),
                }
            },
        );
        let generation = match committed {
            Ok(g) => g,
            Err(e) => {
                // The rename may have happened; without a row the folder must go.
                let _ = std::fs::remove_dir_all(&target);
                return Err(e);
            }
        };
        self.generation = generation;
        if let Some(old) = old_folder.filter(|f| *f != record.folder) {
            remove_folder(&adapters.join(old));
        }
        let vectors: Vec<(TextKind, Vec<f32>)> = record
            .texts()
            .map(|(k, _)| k)
            .zip(record.vectors.iter().cloned())
            .collect();
        self.index.insert(&record.id, generation, &vectors)?;
        self.save_index();
        self.get(&record.id)
    }

    /// Deletes an adapter: its row, its files, its vectors.
    pub fn remove(&mut self, id: &AdapterId) -> Result<()> {
        let _span = tracing::info_span!("unregister", id = %id).entered();
        let mut folder = None;
        let generation = self.catalog_mut()?.write(
            Change::Remove {
                ids: std::slice::from_ref(id),
            },
            &mut |known| {
                folder = known.iter().find(|(k, _)| k == id).map(|(_, f)| f.clone());
                match folder {
                    Some(_) => Ok(()),
                    None => Err(IndexError::NotFound { id: id.to_string() }),
                }
            },
        )?;
        self.generation = generation;
        if let Some(f) = folder {
            remove_folder(&self.adapters_dir().join(f));
        }
        self.index.remove(id);
        self.save_index();
        Ok(())
    }

    /// Recomputes the sha256 of an adapter's files and compares with the recorded ones.
    pub fn verify(&self, id: &AdapterId) -> Result<()> {
        let record = self.get(id)?;
        let dir = self.adapter_dir(&record);
        for f in &record.files {
            let path = dir.join(&f.name);
            let found = files::sha256_file(&path)?;
            if found != f.sha256 {
                return Err(IndexError::Checksum {
                    path,
                    expected: f.sha256.clone(),
                    found,
                });
            }
        }
        Ok(())
    }

    /// Saves the index; a failure only costs an update at the next open (the catalog is
    /// the source of truth), so it is logged rather than returned.
    fn save_index(&mut self) {
        if self.index.needs_compaction() {
            let (embedder, params) = (self.embedder.clone(), self.config.graph);
            let rebuilt = self
                .catalog_mut()
                .and_then(|c| open::build_index(c.as_mut(), embedder.as_ref(), params));
            match rebuilt {
                Ok(idx) => self.index = idx,
                Err(e) => tracing::warn!(error = %e, "index compaction failed; keeping tombstones"),
            }
        }
        if let Err(e) = self.index.save(&self.index_dir()) {
            tracing::warn!(error = %e, "could not save the vector index; the next open rebuilds it");
        }
    }
}

fn remove_folder(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        // Left behind, it is swept at the next open (no row names it).
        tracing::warn!(folder = %path.display(), error = %e, "could not delete an adapter folder");
    }
}
