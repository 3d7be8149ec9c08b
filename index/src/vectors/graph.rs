//! `Graph`: the hnsw_rs HNSW graph over unit vectors, with its file dump and reload.
//!
//! Everything hnsw_rs-specific lives here, including its habits that do not fit a load
//! path: it panics (asserts) on malformed files, so reload runs under `catch_unwind` and a
//! panic becomes an error (the caller then rebuilds from the registry).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo};

use super::flat::{Layer, Links};
use crate::embed::dot;
use crate::{IndexError, Result};

/// Cosine distance `1 - a·b` for unit vectors, with a dot product that vectorizes (the
/// crate's scalar `DistDot` does not without nightly or extra features).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// HNSW construction and search settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphParams {
    /// Neighbours kept per node and layer (HNSW's M).
    pub max_connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for GraphParams {
    /// Measured on this project's benchmark (`loramux bench-route`, 200k synthetic points,
    /// k = 40): searches walk the flat copy (`flat.rs`) with 8-bit codes, ~0.25 µs per
    /// visited point, so the beam can be wide. `ef_search` 64 gave recall@1 0.964 at p50
    /// 0.28 ms; 96 gives 0.989 at p50 0.40 ms; 128 gives 0.996 at 0.50 ms (2 busy cores).
    fn default() -> Self {
        Self {
            max_connections: 16,
            ef_construction: 48,
            ef_search: 96,
        }
    }
}

/// Maximum HNSW layer count (hnsw_rs caps it at 16).
const MAX_LAYERS: usize = 16;

pub(crate) struct Graph {
    hnsw: Hnsw<'static, f32, UnitCosine>,
}

impl Graph {
    pub(crate) fn new(params: GraphParams, capacity: usize) -> Self {
        let max_connections = params.max_connections.clamp(2, 255);
        let hnsw = Hnsw::new(
            max_connections,
            capacity.max(16),
            MAX_LAYERS,
            params.ef_construction.max(8),
            UnitCosine,
        );
        Self { hnsw }
    }

    /// Inserts points `(vector, data id)`; uses every core for large batches.
    pub(crate) fn insert(&mut self, points: &[(&[f32], usize)]) {
        // hnsw_rs refuses inserts while "searching mode" is on; it only tunes its own locking.
        self.hnsw.set_searching_mode(false);
        if points.len() >= 64 {
            self.hnsw.parallel_insert_slice(&points.to_vec());
        } else {
            for &(v, id) in points {
                self.hnsw.insert_slice((v, id));
            }
        }
        self.hnsw.set_searching_mode(true);
    }

    /// Copies the graph out for [`super::flat::FlatGraph`]: every layer's links as CSR
    /// over data ids, and (when `dim` is given) every vector, row = data id. Data ids must
    /// be `0..len()`, as [`super::VectorIndex`] assigns them.
    pub(crate) fn export(&self, dim: Option<usize>) -> Result<(Links, Vec<f32>)> {
        let fail = |reason: String| IndexError::VectorIndex {
            path: PathBuf::from("(in-memory HNSW graph)"),
            reason,
        };
        let n = self.len();
        if n == 0 {
            return Ok((Links::default(), Vec::new()));
        }
        let indexation = self.hnsw.get_point_indexation();
        let levels = indexation.get_max_level_observed() as usize + 1;
        // Per layer, each point's (start, len) in that layer's buffer, filled in the
        // iteration order of hnsw_rs; reordered by data id below.
        let mut spans = vec![vec![(0u32, 0u32); n]; levels];
        let mut bufs: Vec<Vec<u32>> = vec![Vec::new(); levels];
        let mut seen = vec![false; n];
        let mut vectors = vec![0f32; dim.map_or(0, |d| d * n)];
        let mut entry = None;
        for point in indexation {
            let id = point.get_origin_id();
            if id >= n || std::mem::replace(&mut seen[id], true) {
                return Err(fail(format!("data id {id} is out of range or repeated")));
            }
            let level = point.get_point_id().0 as usize;
            if level + 1 == levels && entry.is_none() {
                entry = Some(id as u32);
            }
            for (l, list) in point.get_neighborhood_id().iter().enumerate().take(levels) {
                let start = bufs[l].len() as u32;
                bufs[l].extend(list.iter().map(|nb| nb.d_id as u32));
                spans[l][id] = (start, list.len() as u32);
            }
            if let Some(d) = dim {
                let v = point.get_v();
                if v.len() != d {
                    return Err(fail(format!("point {id} has {} dims, not {d}", v.len())));
                }
                vectors[id * d..(id + 1) * d].copy_from_slice(v);
            }
        }
        if seen.iter().any(|s| !s) {
            return Err(fail("the graph misses data ids".into()));
        }
        let layers = spans
            .iter()
            .zip(&bufs)
            .map(|(spans, buf)| {
                let mut offsets = Vec::with_capacity(n + 1);
                let mut targets = Vec::with_capacity(buf.len());
                offsets.push(0);
                for &(start, len) in spans {
                    targets.extend_from_slice(&buf[start as usize..(start + len) as usize]);
                    offsets.push(targets.len() as u32);
                }
                Layer { offsets, targets }
            })
            .collect();
        let links = Links {
            layers,
            entry: entry.ok_or_else(|| fail("no point on the top layer".into()))?,
        };
        links.validate(Path::new("(in-memory HNSW graph)"))?;
        Ok((links, vectors))
    }

    /// The `k` nearest points as `(data id, cosine similarity)`, best first: hnsw_rs's
    /// own search, kept to check [`super::flat::FlatGraph`] against.
    ///
    /// No filter is ever passed to hnsw_rs: with one, its layer search skips the early
    /// exit and walks most of the graph (measured: ~3,400 distance evaluations per query
    /// on 20k points instead of a few hundred). Callers over-fetch and drop dead points.
    #[cfg(test)]
    pub(crate) fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<(usize, f32)> {
        let found = self.hnsw.search_filter(query, k, ef.max(k), None);
        found
            .into_iter()
            .map(|n| (n.d_id, 1.0 - n.distance))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    /// Writes `<dir>/<basename>.hnsw.graph` and `.hnsw.data`.
    pub(crate) fn dump(&self, dir: &Path, basename: &str) -> Result<()> {
        let fail = |reason: String| IndexError::VectorIndex {
            path: dir.join(basename),
            reason,
        };
        let written = catch_unwind(AssertUnwindSafe(|| self.hnsw.file_dump(dir, basename)))
            .map_err(|_| fail("hnsw_rs panicked while writing".into()))?
            .map_err(|e| fail(e.to_string()))?;
        if written != basename {
            return Err(fail(format!("hnsw_rs wrote {written} instead")));
        }
        Ok(())
    }

    /// Reloads a dump written by [`Graph::dump`].
    pub(crate) fn load(dir: &Path, basename: &str) -> Result<Self> {
        let fail = |reason: String| IndexError::VectorIndex {
            path: dir.join(basename),
            reason,
        };
        let loaded = catch_unwind(AssertUnwindSafe(|| {
            // The default options read every point into memory (no mmap).
            let mut io = HnswIo::new(dir, basename);
            io.load_hnsw::<f32, UnitCosine>().map(|h| {
                    // SAFETY: hnsw_rs ties the graph's lifetime to the `HnswIo` because with
                    // mmap enabled points may borrow the mapping it owns. Mmap is off here (the
                    // default `ReloadOptions`), so every point owns its vector (`PointData::V`)
                    // and nothing borrows `io`; only the lifetime parameter changes.
                    unsafe {
                        std::mem::transmute::<
                            Hnsw<'_, f32, UnitCosine>,
                            Hnsw<'static, f32, UnitCosine>,
                        >(h)
                    }
                })
        }))
        .map_err(|_| fail("hnsw_rs panicked while reading (malformed dump)".into()))?
        .map_err(|e| fail(e.to_string()))?;
        let mut hnsw = loaded;
        hnsw.set_searching_mode(true);
        Ok(Self { hnsw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u32, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|i| ((seed as f32 + 1.0) * (i as f32 + 0.5)).sin())
            .collect();
        crate::embed::l2_normalize(&mut v);
        v
    }

    #[test]
    fn finds_itself_and_survives_a_dump() {
        let vs: Vec<Vec<f32>> = (0..200).map(|s| unit(s, 24)).collect();
        let mut g = Graph::new(GraphParams::default(), vs.len());
        let pts: Vec<(&[f32], usize)> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_slice(), i))
            .collect();
        g.insert(&pts);
        let hit = g.search(&vs[17], 1, 64);
        assert_eq!(hit[0].0, 17);
        assert!((hit[0].1 - 1.0).abs() < 1e-5);

        let dir = tempfile::tempdir().unwrap();
        g.dump(dir.path(), "g").unwrap();
        let back = Graph::load(dir.path(), "g").unwrap();
        assert_eq!(back.len(), 200);
        assert_eq!(back.search(&vs[42], 1, 64)[0].0, 42);
    }

    #[test]
    fn a_garbage_dump_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("g.hnsw.graph"), b"not a graph").unwrap();
        std::fs::write(dir.path().join("g.hnsw.data"), b"nor data").unwrap();
        assert!(Graph::load(dir.path(), "g").is_err());
    }
}
