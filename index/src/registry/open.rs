//! Opening a registry: sweep leftovers of interrupted registrations, drop rows whose files
//! are gone, and bring the vector index up to date with the catalog (or rebuild it).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::catalog::{Catalog, Change};
use super::{files, Registry, RegistryConfig};
use crate::vectors::{AdapterVectors, GraphParams, TextKind, VectorIndex};
use crate::{AdapterId, Embedder, IndexError, Result};

/// How the index was obtained at open.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexState {
    /// The saved index matched the catalog.
    Loaded,
    /// The saved index was behind the catalog (an interrupted save) and was patched.
    Updated { added: usize, removed: usize },
    /// There was no usable saved index.
    Rebuilt { reason: String },
}

/// What [`Registry::open`] found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenReport {
    /// Staging and orphan folders deleted.
    pub swept: Vec<PathBuf>,
    /// Adapters whose files had disappeared, removed from the catalog.
    pub dropped: Vec<AdapterId>,
    pub index: IndexState,
}

impl Registry {
    /// Opens a registry over any [`Catalog`].
    pub fn open_with(
        root: &Path,
        config: RegistryConfig,
        mut catalog: Box<dyn Catalog>,
        embedder: Arc<dyn Embedder>,
    ) -> Result<Self> {
        let _span = tracing::info_span!("registry_open", root = %root.display()).entered();
        let adapters = root.join(Self::ADAPTERS);
        std::fs::create_dir_all(&adapters).map_err(|e| IndexError::io(&adapters, e))?;

        let mut swept = Vec::new();
        let mut dropped = Vec::new();
        catalog.write(Change::Nothing, &mut |known| {
            let names: Vec<String> = known.iter().map(|(_, f)| f.clone()).collect();
            swept = files::sweep(&adapters, &names)?;
            dropped = known
                .iter()
                .filter(|(_, f)| !adapters.join(f).is_dir())
                .map(|(k, _)| k.clone())
                .collect();
            Ok(())
        })?;
        if !dropped.is_empty() {
            tracing::warn!(adapters = ?dropped, "registered adapters whose files are gone were removed");
            catalog.write(Change::Remove { ids: &dropped }, &mut |_| Ok(()))?;
        }
        for path in &swept {
            tracing::info!(path = %path.display(), "swept an interrupted registration");
        }

        let index_dir = root.join(Self::INDEX);
        let (index, state) = sync_index(
            &index_dir,
            catalog.as_mut(),
            embedder.as_ref(),
            config.graph,
        )?;
        if state != IndexState::Loaded {
            if let Err(e) = index.save(&index_dir) {
                tracing::warn!(error = %e, "could not save the vector index");
            }
        }
        let generation = catalog.generation()?;
        Ok(Self {
            root: root.to_path_buf(),
            config,
            catalog: std::sync::Mutex::new(catalog),
            embedder,
            index,
            generation,
            report: OpenReport {
                swept,
                dropped,
                index: state,
            },
        })
    }
}

/// Loads the saved index and patches it to match the catalog; rebuilds when there is none,
/// it is unreadable, or patching would leave too many tombstones.
fn sync_index(
    dir: &Path,
    catalog: &mut dyn Catalog,
    embedder: &dyn Embedder,
    params: GraphParams,
) -> Result<(VectorIndex, IndexState)> {
    let mut index = match VectorIndex::load(dir, embedder.id(), embedder.dim()) {
        Ok(Some(idx)) => idx,
        Ok(None) => {
            return Ok((
                build_index(catalog, embedder, params)?,
                IndexState::Rebuilt {
                    reason: "no saved index".into(),
                },
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "saved index unusable; rebuilding");
            let state = IndexState::Rebuilt {
                reason: e.to_string(),
            };
            return Ok((build_index(catalog, embedder, params)?, state));
        }
    };
    let wanted: HashMap<AdapterId, i64> = catalog
        .list()?
        .into_iter()
        .map(|r| (r.id, r.revision))
        .collect();
    let stale: Vec<AdapterId> = index
        .revisions()
        .filter(|(k, rev)| wanted.get(*k) != Some(rev))
        .map(|(k, _)| k.clone())
        .collect();
    let present: HashMap<AdapterId, i64> = index.revisions().map(|(k, r)| (k.clone(), r)).collect();
    let missing: HashSet<&AdapterId> = wanted
        .iter()
        .filter(|(k, r)| present.get(*k) != Some(r))
        .map(|(k, _)| k)
        .collect();
    if stale.is_empty() && missing.is_empty() {
        return Ok((index, IndexState::Loaded));
    }
    let removed = stale.len();
    for k in &stale {
        index.remove(k);
    }
    let texts = vectors_for(catalog, embedder)?;
    let adds: Vec<AdapterVectors> = texts
        .iter()
        .filter(|(k, _, _)| missing.contains(k))
        .map(|(k, r, v)| (k, *r, v.as_slice()))
        .collect();
    let added = adds.len();
    index.insert_many(&adds)?;
    if index.needs_compaction() {
        let state = IndexState::Rebuilt {
            reason: "too many removed vectors".into(),
        };
        return Ok((build_index(catalog, embedder, params)?, state));
    }
    Ok((index, IndexState::Updated { added, removed }))
}

/// Every adapter's vectors from the catalog; texts stored without a vector from this
/// embedder (a changed embedder) are embedded now and stored back.
/// An adapter's id, revision and vectors, owned.
type OwnedVectors = (AdapterId, i64, Vec<(TextKind, Vec<f32>)>);

fn vectors_for(catalog: &mut dyn Catalog, embedder: &dyn Embedder) -> Result<Vec<OwnedVectors>> {
    let mut out = Vec::new();
    for stored in catalog.texts(embedder.id())? {
        let complete = stored
            .texts
            .iter()
            .all(|(_, _, v)| v.as_ref().is_some_and(|v| v.len() == embedder.dim()));
        let vectors: Vec<Vec<f32>> = if complete {
            stored
                .texts
                .iter()
                .filter_map(|(_, _, v)| v.clone())
                .collect()
        } else {
            let texts: Vec<&str> = stored.texts.iter().map(|(_, t, _)| t.as_str()).collect();
            let fresh = embedder.embed(&texts)?;
            catalog.put_vectors(&stored.id, embedder.id(), &fresh)?;
            fresh
        };
        let kinds = stored.texts.iter().map(|(k, _, _)| *k);
        out.push((stored.id, stored.revision, kinds.zip(vectors).collect()));
    }
    Ok(out)
}

/// A fresh index of every adapter in the catalog.
pub(crate) fn build_index(
    catalog: &mut dyn Catalog,
    embedder: &dyn Embedder,
    params: GraphParams,
) -> Result<VectorIndex> {
    let _span = tracing::info_span!("index_build").entered();
    let all = vectors_for(catalog, embedder)?;
    let points = all.iter().map(|(_, _, v)| v.len()).sum();
    let mut index = VectorIndex::new(embedder.dim(), embedder.id(), params, points);
    let adds: Vec<AdapterVectors> = all.iter().map(|(k, r, v)| (k, *r, v.as_slice())).collect();
    index.insert_many(&adds)?;
    Ok(index)
}
