//! Saving and reloading a [`VectorIndex`]: a `manifest.json` names the current graph files
//! and holds the point → adapter map.
//!
//! The graph files are hnsw_rs's dump (`<basename>.hnsw.graph`, `.hnsw.data`), which
//! inserts need, and the flat copy searches walk (`<basename>.flat`, [`super::flat_file`]).
//! A load reads the manifest and the flat copy only; hnsw_rs's dump is read when an insert
//! first needs it.
//!
//! A save writes new graph files under a fresh basename, then replaces the manifest
//! atomically (write, fsync, rename), then deletes older files. A crash at any point leaves
//! either the old manifest with its files, or the new ones; files without a manifest are
//! garbage that the next save deletes. When the graph has not changed since it was last
//! saved to (or loaded from) the same folder, the new manifest names the same files
//! (removals only change the manifest's tombstones).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::flat::FlatGraph;
use super::graph::{Graph, GraphParams};
use super::{flat_file, Entry, PointOwner, SavedGraph, VectorIndex};
use crate::{IndexError, Result};

const MANIFEST: &str = "manifest.json";
/// 2: the flat copy beside hnsw_rs's dump.
const FORMAT: u32 = 2;
/// 1: hnsw_rs's dump only. Still loads (the flat copy is exported from the dump, and the
/// next save writes format 2).
const FORMAT_HNSW_ONLY: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    embedder: String,
    dim: usize,
    params: GraphParams,
    basename: String,
    graph_bytes: u64,
    data_bytes: u64,
    /// Size of `<basename>.flat` (absent in format 1).
    #[serde(default)]
    flat_bytes: u64,
    entries: Vec<Entry>,
    points: Vec<PointOwner>,
}

const SUFFIXES: [&str; 3] = [".hnsw.graph", ".hnsw.data", ".flat"];

impl SavedGraph {
    fn graph_file(&self) -> PathBuf {
        self.dir.join(format!("{}.hnsw.graph", self.basename))
    }

    fn data_file(&self) -> PathBuf {
        self.dir.join(format!("{}.hnsw.data", self.basename))
    }

    fn flat_file(&self) -> PathBuf {
        self.dir.join(format!("{}.flat", self.basename))
    }

    fn files(&self) -> [(PathBuf, u64); 3] {
        [
            (self.graph_file(), self.graph_bytes),
            (self.data_file(), self.data_bytes),
            (self.flat_file(), self.flat_bytes),
        ]
    }

    /// Whether the files are still there with their recorded sizes.
    fn intact(&self) -> bool {
        self.files()
            .iter()
            .all(|(path, bytes)| size(path).ok() == Some(*bytes))
    }

    /// Copies the files into `dir` under `basename`, fsynced.
    fn copy_to(&self, dir: &Path, basename: &str) -> Result<Self> {
        let to = Self {
            dir: dir.to_path_buf(),
            basename: basename.to_string(),
            ..self.clone()
        };
        for ((from, _), (dest, _)) in self.files().iter().zip(to.files().iter()) {
            std::fs::copy(from, dest).map_err(|e| IndexError::io(from, e))?;
            fsync(dest)?;
        }
        Ok(to)
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
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
        let saved = self.save_graph(dir)?;
        let manifest = Manifest {
            format: FORMAT,
            embedder: self.embedder.clone(),
            dim: self.dim,
            params: self.params,
            basename: saved.basename.clone(),
            graph_bytes: saved.graph_bytes,
            data_bytes: saved.data_bytes,
            flat_bytes: saved.flat_bytes,
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
        remove_other_dumps(dir, &saved.basename);
        if !saved.basename.is_empty() {
            *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        }
        Ok(())
    }

    /// The graph files for a save into `dir`: the files already saved there when the graph
    /// has not changed since, copies of the ones saved elsewhere, or fresh ones.
    fn save_graph(&self, dir: &Path) -> Result<SavedGraph> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // hnsw_rs cannot dump an empty graph: an empty index is a manifest without files.
        if self.points.is_empty() {
            return Ok(SavedGraph {
                dir: dir.to_path_buf(),
                basename: String::new(),
                graph_bytes: 0,
                data_bytes: 0,
                flat_bytes: 0,
            });
        }
        let basename = format!("g{nanos:x}-{}", std::process::id());
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(s) = saved {
            if same_dir(&s.dir, dir) && s.intact() {
                return Ok(s);
            }
            if self.hnsw.is_none() || s.intact() {
                return s.copy_to(dir, &basename);
            }
        }
        let Some(graph) = &self.hnsw else {
            return Err(IndexError::VectorIndex {
                path: dir.to_path_buf(),
                reason: "the files this index was loaded from are gone; nothing to save from"
                    .into(),
            });
        };
        graph.dump(dir, &basename)?;
        let mut saved = SavedGraph {
            dir: dir.to_path_buf(),
            basename,
            graph_bytes: 0,
            data_bytes: 0,
            flat_bytes: 0,
        };
        fsync(&saved.graph_file())?;
        fsync(&saved.data_file())?;
        saved.graph_bytes = size(&saved.graph_file())?;
        saved.data_bytes = size(&saved.data_file())?;
        saved.flat_bytes = flat_file::write(&saved.flat_file(), &self.flat)?;
        Ok(saved)
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
        let known_format = m.format == FORMAT || m.format == FORMAT_HNSW_ONLY;
        if !known_format || m.embedder != embedder || m.dim != dim {
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
        let saved = SavedGraph {
            dir: dir.to_path_buf(),
            basename: m.basename.clone(),
            graph_bytes: m.graph_bytes,
            data_bytes: m.data_bytes,
            flat_bytes: m.flat_bytes,
        };
        let (hnsw, flat, saved) = if m.basename.is_empty() {
            let graph = Graph::new(m.params, 16);
            (Some(graph), FlatGraph::new(dim, 0), None)
        } else {
            let hnsw_sizes_ok = size(&saved.graph_file())? == m.graph_bytes
                && size(&saved.data_file())? == m.data_bytes;
            if !hnsw_sizes_ok {
                return Err(bad(format!(
                    "the files of dump {} do not have their recorded sizes",
                    m.basename
                )));
            }
            if m.format == FORMAT {
                let flat = flat_file::read(&saved.flat_file(), dim, m.points.len())?;
                (None, flat, Some(saved))
            } else {
                let graph = Graph::load(dir, &m.basename)?;
                if graph.len() != m.points.len() {
                    return Err(bad(format!(
                        "the graph holds {} points; the manifest {}",
                        graph.len(),
                        m.points.len()
                    )));
                }
                let (links, vectors) = graph.export(Some(dim))?;
                (
                    Some(graph),
                    FlatGraph::from_parts(dim, vectors, links),
                    None,
                )
            }
        };
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
            hnsw,
            flat,
            params: m.params,
            saved: Mutex::new(saved),
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
        let is_dump = SUFFIXES.iter().any(|s| name.ends_with(s));
        if is_dump && (keep.is_empty() || !name.starts_with(&format!("{keep}."))) {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "could not delete an old index dump");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{AdapterVectors, GraphParams, Hit, TextKind, VectorIndex};
    use super::{FORMAT, MANIFEST};
    use crate::AdapterId;

    #[test]
    fn save_then_load_gives_the_same_answers_and_keeps_one_dump() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = VectorIndex::new(3, "emb", GraphParams::default(), 8);
        let a = AdapterId::new("a").unwrap();
        let b = AdapterId::new("b").unwrap();
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
        assert_eq!(files_ending(dir.path(), ".flat").len(), 1);

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

    fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        found.sort();
        found
    }

    /// An index of `adapters` adapters with `per` random vectors each (dim 24).
    fn random_index(adapters: usize, per: usize, seed: u64) -> (VectorIndex, Vec<Vec<f32>>) {
        let vs = super::super::tests::random_units(adapters * per, 24, seed);
        let mut idx = VectorIndex::new(24, "emb", GraphParams::default(), vs.len());
        let keys: Vec<AdapterId> = (0..adapters)
            .map(|i| AdapterId::new(&format!("a{i}")).unwrap())
            .collect();
        let texts: Vec<Vec<(TextKind, Vec<f32>)>> = vs
            .chunks(per)
            .map(|c| c.iter().map(|v| (TextKind::Example, v.clone())).collect())
            .collect();
        let batch: Vec<AdapterVectors> = keys
            .iter()
            .zip(&texts)
            .map(|(k, t)| (k, 1, t.as_slice()))
            .collect();
        idx.insert_many(&batch).unwrap();
        (idx, vs)
    }

    fn answers(idx: &VectorIndex, queries: &[Vec<f32>]) -> Vec<Vec<Hit>> {
        queries.iter().map(|q| idx.search(q, 10).unwrap()).collect()
    }

    #[test]
    fn round_trip_gives_identical_results_and_inserts_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, _) = random_index(300, 10, 11);
        idx.remove(&AdapterId::new("a7").unwrap());
        let queries = super::super::tests::random_units(100, 24, 12);
        let before = answers(&idx, &queries);
        idx.save(dir.path()).unwrap();
        let mut back = VectorIndex::load(dir.path(), "emb", 24).unwrap().unwrap();
        assert!(back.hnsw.is_none(), "hnsw_rs's graph is read lazily");
        assert_eq!(answers(&back, &queries), before);
        assert_eq!((back.len(), back.points()), (299, 3000));

        // An insert reads hnsw_rs's graph, and the new point is found, before and after
        // another round trip.
        let new = AdapterId::new("new").unwrap();
        let v = super::super::tests::random_units(1, 24, 13).remove(0);
        back.insert(&new, 2, &[(TextKind::Description, v.clone())])
            .unwrap();
        assert!(back.hnsw.is_some());
        assert_eq!(back.search(&v, 1).unwrap()[0].key, new);
        back.save(dir.path()).unwrap();
        let again = VectorIndex::load(dir.path(), "emb", 24).unwrap().unwrap();
        assert_eq!(again.search(&v, 1).unwrap()[0].key, new);
        assert_eq!(again.points(), 3001);
        assert_eq!(files_ending(dir.path(), ".flat").len(), 1);
    }

    #[test]
    fn an_unchanged_graph_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = random_index(50, 4, 21);
        idx.save(dir.path()).unwrap();
        let first = files_ending(dir.path(), ".flat");
        let mut back = VectorIndex::load(dir.path(), "emb", 24).unwrap().unwrap();
        back.remove(&AdapterId::new("a3").unwrap());
        back.save(dir.path()).unwrap();
        assert_eq!(files_ending(dir.path(), ".flat"), first);
        let again = VectorIndex::load(dir.path(), "emb", 24).unwrap().unwrap();
        assert_eq!(again.len(), 49);

        // Saved elsewhere, the files are copied (the loaded index has no hnsw_rs graph to
        // dump), and the copy loads and takes inserts.
        let other = tempfile::tempdir().unwrap();
        again.save(other.path()).unwrap();
        let mut moved = VectorIndex::load(other.path(), "emb", 24).unwrap().unwrap();
        assert_eq!(moved.len(), 49);
        let v = super::super::tests::random_units(1, 24, 22).remove(0);
        let new = AdapterId::new("new").unwrap();
        moved
            .insert(&new, 1, &[(TextKind::Example, v.clone())])
            .unwrap();
        assert_eq!(moved.search(&v, 1).unwrap()[0].key, new);
    }

    #[test]
    fn a_truncated_or_corrupted_flat_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = random_index(40, 5, 31);
        idx.save(dir.path()).unwrap();
        let flat = files_ending(dir.path(), ".flat").remove(0);
        let good = std::fs::read(&flat).unwrap();
        std::fs::write(&flat, &good[..good.len() - 7]).unwrap();
        assert!(VectorIndex::load(dir.path(), "emb", 24).is_err());
        let mut bad = good.clone();
        let i = bad.len() - 100;
        bad[i] ^= 1;
        std::fs::write(&flat, &bad).unwrap();
        let err = VectorIndex::load(dir.path(), "emb", 24).err().unwrap();
        assert!(err.to_string().contains("checksum"), "{err}");
        std::fs::remove_file(&flat).unwrap();
        assert!(VectorIndex::load(dir.path(), "emb", 24).is_err());
    }

    #[test]
    fn a_broken_hnsw_dump_is_rebuilt_from_the_flat_copy_at_the_first_insert() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, vs) = random_index(40, 5, 41);
        idx.save(dir.path()).unwrap();
        let graph = files_ending(dir.path(), ".hnsw.graph").remove(0);
        let len = std::fs::metadata(&graph).unwrap().len() as usize;
        std::fs::write(&graph, vec![7u8; len]).unwrap();
        let mut back = VectorIndex::load(dir.path(), "emb", 24).unwrap().unwrap();
        let new = AdapterId::new("new").unwrap();
        let v = super::super::tests::random_units(1, 24, 42).remove(0);
        back.insert(&new, 1, &[(TextKind::Example, v.clone())])
            .unwrap();
        assert_eq!(back.search(&v, 1).unwrap()[0].key, new);
        assert_eq!(back.search(&vs[33], 1).unwrap()[0].key.as_str(), "a6");
        // The 200 saved points were all pending (under MAX_PENDING); the rebuilt graph's
        // links were exported, so only the new point is.
        assert_eq!(back.flat.pending(), 1);
    }

    #[test]
    fn a_format_1_index_loads_and_is_saved_as_format_2() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = random_index(300, 5, 51);
        let queries = super::super::tests::random_units(30, 24, 52);
        let before = answers(&idx, &queries);
        idx.save(dir.path()).unwrap();
        // What format 1 wrote: no flat file, no flat_bytes.
        std::fs::remove_file(files_ending(dir.path(), ".flat").remove(0)).unwrap();
        let path = dir.path().join(MANIFEST);
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        m["format"] = 1.into();
        m.as_object_mut().unwrap().remove("flat_bytes");
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();

        let old = VectorIndex::load(dir.path(), "emb", 24).unwrap().unwrap();
        let top = |a: &[Vec<Hit>]| -> Vec<f32> { a.iter().map(|h| h[0].similarity).collect() };
        assert_eq!(top(&answers(&old, &queries)), top(&before));
        old.save(dir.path()).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(m["format"], FORMAT);
        let new = VectorIndex::load(dir.path(), "emb", 24).unwrap().unwrap();
        assert_eq!(answers(&new, &queries), answers(&old, &queries));
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
        let a = AdapterId::new("a").unwrap();
        back.insert(&a, 1, &[(TextKind::Example, vec![0.0, 1.0, 0.0])])
            .unwrap();
        assert_eq!(back.search(&[0.0, 1.0, 0.0], 1).unwrap()[0].key, a);
    }
}
