//! Saving and reloading a [`VectorIndex`]: a `manifest.json` names the current graph dump
//! and holds the point → adapter map.
//!
//! A save writes a new dump under a fresh basename, then replaces the manifest atomically
//! (write, fsync, rename), then deletes older dumps. A crash at any point leaves either the
//! old manifest with its dump, or the new ones; a dump without a manifest is garbage that
//! the next save deletes.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::graph::{Graph, GraphParams};
use super::{Entry, PointOwner, VectorIndex};
use crate::{IndexError, Result};

const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    embedder: String,
    dim: usize,
    params: GraphParams,
    basename: String,
    graph_bytes: u64,
    data_bytes: u64,
    entries: Vec<Entry>,
    points: Vec<PointOwner>,
}

fn graph_file(dir: &Path, base: &str) -> PathBuf {
    dir.join(format!("{base}.hnsw.graph"))
}

fn data_file(dir: &Path, base: &str) -> PathBuf {
    dir.join(format!("{base}.hnsw.data"))
}

fn size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| IndexError::io(path, e))?
        .len())
}

fn fsync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| IndexError::io(path, e))
}

impl VectorIndex {
    /// Writes the index into `dir` (created if needed), replacing what was there.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let _span = tracing::info_span!("index_save", points = self.points.len()).entered();
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // hnsw_rs cannot dump an empty graph: an empty index is a manifest without a dump.
        let basename = if self.points.is_empty() {
            String::new()
        } else {
            format!("g{nanos:x}-{}", std::process::id())
        };
        let (mut graph_bytes, mut data_bytes) = (0, 0);
        if !basename.is_empty() {
            self.graph.dump(dir, &basename)?;
            let (graph, data) = (graph_file(dir, &basename), data_file(dir, &basename));
            fsync(&graph)?;
            fsync(&data)?;
            (graph_bytes, data_bytes) = (size(&graph)?, size(&data)?);
        }
        let manifest = Manifest {
            format: FORMAT,
            embedder: self.embedder.clone(),
            dim: self.dim,
            params: self.graph.params(),
            basename: basename.clone(),
            graph_bytes,
            data_bytes,
            entries: self.entries.clone(),
            points: self.points.clone(),
        };
        let text = serde_json::to_vec(&manifest).map_err(|e| IndexError::VectorIndex {
            path: dir.join(MANIFEST),
            reason: e.to_string(),
        })?;
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let mut f = File::create(&tmp).map_err(|e| IndexError::io(&tmp, e))?;
        f.write_all(&text)
            .and_then(|_| f.sync_all())
            .map_err(|e| IndexError::io(&tmp, e))?;
        std::fs::rename(&tmp, dir.join(MANIFEST))
            .map_err(|e| IndexError::io(dir.join(MANIFEST), e))?;
        fsync(dir)?;
        remove_other_dumps(dir, &basename);
        Ok(())
    }

    /// Reloads an index saved by [`VectorIndex::save`]. `Ok(None)` when there is none;
    /// an error when it is unreadable or was built by another embedder (the caller then
    /// rebuilds from the registry).
    pub fn load(dir: &Path, embedder: &str, dim: usize) -> Result<Option<Self>> {
        let _span = tracing::info_span!("index_load", dir = %dir.display()).entered();
        let path = dir.join(MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IndexError::io(&path, e)),
        };
        let bad = |reason: String| IndexError::VectorIndex {
            path: path.clone(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT || m.embedder != embedder || m.dim != dim {
            return Err(bad(format!(
                "built by format {} / embedder {:?} / dim {}; expected {FORMAT} / {embedder:?} / {dim}",
                m.format, m.embedder, m.dim
            )));
        }
        if m.points.iter().any(|p| p.entry as usize >= m.entries.len()) {
            return Err(bad(
                "a point names an adapter entry that does not exist".into()
            ));
        }
        let graph = if m.basename.is_empty() {
            Graph::new(m.params, 16)
        } else {
            let (graph_path, data_path) =
                (graph_file(dir, &m.basename), data_file(dir, &m.basename));
            if size(&graph_path)? != m.graph_bytes || size(&data_path)? != m.data_bytes {
                return Err(bad(format!(
                    "the files of dump {} do not have their recorded sizes",
                    m.basename
                )));
            }
            Graph::load(dir, &m.basename, m.params)?
        };
        if graph.len() != m.points.len() {
            return Err(bad(format!(
                "the graph holds {} points; the manifest {}",
                graph.len(),
                m.points.len()
            )));
        }
        let mut by_key = HashMap::new();
        for (i, e) in m.entries.iter().enumerate() {
            if e.live && by_key.insert(e.key.clone(), i as u32).is_some() {
                return Err(bad(format!("adapter {} is live twice", e.key)));
            }
        }
        let dead_points = m
            .points
            .iter()
            .filter(|p| !m.entries[p.entry as usize].live)
            .count();
        Ok(Some(Self {
            graph,
            dim,
            embedder: m.embedder,
            entries: m.entries,
            by_key,
            points: m.points,
            dead_points,
        }))
    }
}

/// Deletes dumps other than `keep` (left by earlier saves or by a crash mid-save).
fn remove_other_dumps(dir: &Path, keep: &str) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dump = name.ends_with(".hnsw.graph") || name.ends_with(".hnsw.data");
        if is_dump && (keep.is_empty() || !name.starts_with(&format!("{keep}."))) {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "could not delete an old index dump");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GraphParams, TextKind, VectorIndex};
    use crate::AdapterKey;

    #[test]
    fn save_then_load_gives_the_same_answers_and_keeps_one_dump() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = VectorIndex::new(3, "emb", GraphParams::default(), 8);
        let a = AdapterKey::new("a").unwrap();
        let b = AdapterKey::new("b").unwrap();
        idx.insert(&a, 1, &[(TextKind::Description, vec![1.0, 0.0, 0.0])])
            .unwrap();
        idx.insert(&b, 2, &[(TextKind::Example, vec![0.0, 1.0, 0.0])])
            .unwrap();
        idx.save(dir.path()).unwrap();
        idx.remove(&a);
        idx.save(dir.path()).unwrap();
        let dumps = std::fs::read_dir(dir.path()).unwrap().filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".hnsw.graph")
        });
        assert_eq!(dumps.count(), 1);

        let back = VectorIndex::load(dir.path(), "emb", 3).unwrap().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back.points(), 2);
        let hits = back.search(&[1.0, 0.0, 0.0], 2).unwrap();
        assert!(hits.iter().all(|h| h.key == b));
        assert!(VectorIndex::load(dir.path(), "other-embedder", 3).is_err());
        assert!(VectorIndex::load(&dir.path().join("none"), "emb", 3)
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_empty_index_saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        VectorIndex::new(3, "emb", GraphParams::default(), 0)
            .save(dir.path())
            .unwrap();
        let mut back = VectorIndex::load(dir.path(), "emb", 3).unwrap().unwrap();
        assert!(back.is_empty());
        assert!(back.search(&[1.0, 0.0, 0.0], 3).unwrap().is_empty());
        let a = AdapterKey::new("a").unwrap();
        back.insert(&a, 1, &[(TextKind::Example, vec![0.0, 1.0, 0.0])])
            .unwrap();
        assert_eq!(back.search(&[0.0, 1.0, 0.0], 1).unwrap()[0].key, a);
    }
}
