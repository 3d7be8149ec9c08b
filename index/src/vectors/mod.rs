//! `VectorIndex`: an HNSW index over several unit vectors per adapter (its description and
//! its example prompts), searched by cosine similarity.
//!
//! Shape contract: every vector has `dim` f32 components and unit length. Point ids are
//! dense (`0..points`); each maps to the adapter that owns it. Removing or replacing an
//! adapter tombstones its points (HNSW cannot delete); searches skip them, and the owner
//! rebuilds once tombstones pass [`VectorIndex::needs_compaction`].
//!
//! hnsw_rs builds the graph ([`graph`]); searches run on a flat copy of it ([`flat`]),
//! exported after inserts and saved beside hnsw_rs's dump, so a reload reads the flat copy
//! only and hnsw_rs's graph is read back when an insert first needs it.

mod flat;
mod flat_file;
mod graph;
mod persist;
mod quant;

pub use graph::{GraphParams, UnitCosine};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{AdapterId, IndexError, Result};
use flat::FlatGraph;
use graph::Graph;

/// Points inserted since the last export of the links, which every search scans
/// exhaustively (~40 ns each at 384 dims), before the links are exported again (a walk over
/// all of hnsw_rs's graph, about a microsecond per point).
const MAX_PENDING: usize = 1024;

/// What an indexed text is, for explaining hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextKind {
    Description,
    Example,
}

impl TextKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Description => "description",
            Self::Example => "example",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "description" => Some(Self::Description),
            "example" => Some(Self::Example),
            _ => None,
        }
    }
}

/// One adapter's entry: the revision its vectors came from, and whether it is live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) key: AdapterId,
    pub(crate) revision: i64,
    pub(crate) live: bool,
}

/// Point id → owning entry and the kind of text it embeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct PointOwner {
    pub(crate) entry: u32,
    pub(crate) kind: TextKind,
}

/// One adapter's vectors for [`VectorIndex::insert_many`]: id, revision, `(kind, vector)`s.
pub type AdapterVectors<'a> = (&'a AdapterId, i64, &'a [(TextKind, Vec<f32>)]);

/// A search result: one indexed text of one adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub key: AdapterId,
    pub kind: TextKind,
    pub similarity: f32,
}

/// The files a graph was saved to (or loaded from): `<basename>.hnsw.graph`, `.hnsw.data`
/// and `.flat` in `dir`, with their sizes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SavedGraph {
    pub(crate) dir: PathBuf,
    pub(crate) basename: String,
    pub(crate) graph_bytes: u64,
    pub(crate) data_bytes: u64,
    pub(crate) flat_bytes: u64,
}

pub struct VectorIndex {
    /// hnsw_rs's graph, which only inserts need: `None` after a load, until the first
    /// insert reads it from `saved`.
    hnsw: Option<Graph>,
    /// What searches walk: the same points, links exported from `hnsw`.
    flat: FlatGraph,
    params: GraphParams,
    /// The files that hold exactly this graph (set by a load or a save, cleared by an
    /// insert): a save into the same folder reuses them, and a lazy load reads them.
    saved: Mutex<Option<SavedGraph>>,
    dim: usize,
    embedder: String,
    entries: Vec<Entry>,
    by_key: HashMap<AdapterId, u32>,
    points: Vec<PointOwner>,
    dead_points: usize,
}

impl VectorIndex {
    pub fn new(dim: usize, embedder: &str, params: GraphParams, capacity: usize) -> Self {
        Self {
            hnsw: Some(Graph::new(params, capacity)),
            flat: FlatGraph::new(dim, capacity),
            params,
            saved: Mutex::new(None),
            dim,
            embedder: embedder.to_string(),
            entries: Vec::new(),
            by_key: HashMap::new(),
            points: Vec::with_capacity(capacity),
            dead_points: 0,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The [`crate::Embedder::id`] the vectors came from.
    pub fn embedder(&self) -> &str {
        &self.embedder
    }

    pub fn params(&self) -> GraphParams {
        self.params
    }

    /// Live adapters.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether `key` is a live adapter of the index.
    pub fn contains(&self, key: &AdapterId) -> bool {
        self.by_key.contains_key(key)
    }

    /// Points in the graph, tombstones included.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// Live adapters and the revision their vectors came from.
    pub fn revisions(&self) -> impl Iterator<Item = (&AdapterId, i64)> + '_ {
        self.by_key.values().map(|&e| {
            let e = &self.entries[e as usize];
            (&e.key, e.revision)
        })
    }

    /// True once tombstones are over a quarter of the points: searches then waste effort
    /// on dead nodes and a rebuild pays off.
    pub fn needs_compaction(&self) -> bool {
        self.dead_points * 4 > self.points.len().max(1)
    }

    /// Adds (or replaces) one adapter's vectors.
    pub fn insert(
        &mut self,
        key: &AdapterId,
        revision: i64,
        vectors: &[(TextKind, Vec<f32>)],
    ) -> Result<()> {
        self.insert_many(&[(key, revision, vectors)])
    }

    /// Adds many adapters at once; the graph insert runs in parallel.
    pub fn insert_many(&mut self, adapters: &[AdapterVectors<'_>]) -> Result<()> {
        for (_, _, vectors) in adapters {
            if let Some((_, v)) = vectors.iter().find(|(_, v)| v.len() != self.dim) {
                return Err(IndexError::Dimension {
                    expected: self.dim,
                    found: v.len(),
                });
            }
        }
        let mut graph = match self.hnsw.take() {
            Some(g) => g,
            None => self.read_hnsw(),
        };
        let mut batch: Vec<(&[f32], usize)> = Vec::new();
        for (key, revision, vectors) in adapters {
            self.remove(key);
            let entry = self.entries.len() as u32;
            self.entries.push(Entry {
                key: (*key).clone(),
                revision: *revision,
                live: true,
            });
            self.by_key.insert((*key).clone(), entry);
            for (kind, v) in vectors.iter() {
                batch.push((v.as_slice(), self.points.len()));
                self.points.push(PointOwner { entry, kind: *kind });
                self.flat.push(v);
            }
        }
        graph.insert(&batch);
        self.hnsw = Some(graph);
        *self.saved.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        if self.flat.pending() >= MAX_PENDING {
            if let Some(g) = &self.hnsw {
                export_links(g, &mut self.flat);
            }
        }
        Ok(())
    }

    /// hnsw_rs's graph from the saved dump; when that is gone or unreadable, rebuilt from
    /// the flat copy's vectors (slow, but the flat copy holds every point).
    fn read_hnsw(&mut self) -> Graph {
        let points = self.flat.points();
        if points == 0 {
            return Graph::new(self.params, 16);
        }
        let saved = self
            .saved
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _span = tracing::info_span!("index_read_hnsw", points).entered();
        let loaded = match saved {
            Some(s) => Graph::load(&s.dir, &s.basename).and_then(|g| {
                if g.len() == points {
                    Ok(g)
                } else {
                    Err(IndexError::VectorIndex {
                        path: s.dir.join(&s.basename),
                        reason: format!("{} points; the index has {points}", g.len()),
                    })
                }
            }),
            None => Err(IndexError::VectorIndex {
                path: PathBuf::from("(no saved hnsw_rs dump)"),
                reason: format!("{points} points were loaded without hnsw_rs's graph"),
            }),
        };
        match loaded {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "hnsw_rs graph unreadable; rebuilding it from the vectors");
                let mut g = Graph::new(self.params, points);
                let rows: Vec<(&[f32], usize)> = self
                    .flat
                    .vectors()
                    .chunks_exact(self.dim)
                    .zip(0..)
                    .collect();
                g.insert(&rows);
                // The new graph's links differ from the flat copy's.
                export_links(&g, &mut self.flat);
                g
            }
        }
    }

    /// Tombstones an adapter's points; returns whether it was present.
    pub fn remove(&mut self, key: &AdapterId) -> bool {
        let Some(entry) = self.by_key.remove(key) else {
            return false;
        };
        self.entries[entry as usize].live = false;
        self.dead_points += self.points.iter().filter(|p| p.entry == entry).count();
        true
    }

    /// The `k` nearest live texts to `query` (a unit vector), best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        if query.len() != self.dim {
            return Err(IndexError::Dimension {
                expected: self.dim,
                found: query.len(),
            });
        }
        if self.by_key.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        // Tombstones are at most a quarter of the points (compaction), so over-fetching
        // by the dead fraction keeps `k` live results in expectation.
        let fetch = if self.dead_points == 0 {
            k
        } else {
            let live = (self.points.len() - self.dead_points).max(1);
            (k * self.points.len()).div_ceil(live) + 4
        };
        let ef = self.params.ef_search.max(fetch);
        let found = self.flat.search(query, fetch, ef);
        Ok(found
            .into_iter()
            .filter_map(|(id, similarity)| {
                let p = self.points.get(id)?;
                let e = &self.entries[p.entry as usize];
                e.live.then(|| Hit {
                    key: e.key.clone(),
                    kind: p.kind,
                    similarity,
                })
            })
            .take(k)
            .collect())
    }
}

/// Copies hnsw_rs's links into the flat graph, so no point is left pending. A failure
/// (a graph that breaks hnsw_rs's own invariants) keeps the old links: the points stay
/// pending, and searches stay exact for them.
fn export_links(graph: &Graph, flat: &mut FlatGraph) {
    let _span = tracing::debug_span!("index_export_links", points = flat.points()).entered();
    match graph.export(None) {
        Ok((links, _)) if links.linked() == flat.points() => flat.set_links(links),
        Ok((links, _)) => tracing::warn!(
            linked = links.linked(),
            points = flat.points(),
            "hnsw_rs graph and index disagree on the point count; links not exported"
        ),
        Err(e) => tracing::warn!(error = %e, "could not export the hnsw_rs links"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AdapterId {
        AdapterId::new(s).unwrap()
    }

    fn axis(i: usize, dim: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[i] = 1.0;
        v
    }

    #[test]
    fn search_returns_the_owner_and_skips_removed_adapters() {
        let mut idx = VectorIndex::new(8, "test", GraphParams::default(), 16);
        idx.insert(
            &key("a"),
            1,
            &[
                (TextKind::Description, axis(0, 8)),
                (TextKind::Example, axis(1, 8)),
            ],
        )
        .unwrap();
        idx.insert(&key("b"), 2, &[(TextKind::Description, axis(2, 8))])
            .unwrap();
        let hits = idx.search(&axis(1, 8), 1).unwrap();
        assert_eq!(
            (hits[0].key.as_str(), hits[0].kind),
            ("a", TextKind::Example)
        );
        assert!(idx.remove(&key("a")));
        let hits = idx.search(&axis(1, 8), 3).unwrap();
        assert!(hits.iter().all(|h| h.key.as_str() == "b"), "{hits:?}");
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.points(), 3);
        assert!(idx.needs_compaction());
    }

    #[test]
    fn replacing_an_adapter_keeps_only_its_new_vectors() {
        let mut idx = VectorIndex::new(4, "test", GraphParams::default(), 8);
        idx.insert(&key("a"), 1, &[(TextKind::Description, axis(0, 4))])
            .unwrap();
        idx.insert(&key("a"), 5, &[(TextKind::Description, axis(3, 4))])
            .unwrap();
        let hits = idx.search(&axis(0, 4), 4).unwrap();
        assert_eq!(hits.len(), 1);
        assert!((hits[0].similarity - 0.0).abs() < 1e-6);
        assert_eq!(idx.revisions().collect::<Vec<_>>(), [(&key("a"), 5)]);
    }

    #[test]
    fn wrong_dimensions_are_refused() {
        let mut idx = VectorIndex::new(4, "test", GraphParams::default(), 8);
        assert!(matches!(
            idx.insert(&key("a"), 1, &[(TextKind::Example, vec![1.0; 3])]),
            Err(IndexError::Dimension {
                expected: 4,
                found: 3
            })
        ));
        assert!(idx.search(&[1.0; 5], 1).is_err());
    }

    /// Seeded random unit vectors (uniform in the cube, normalized).
    pub(crate) fn random_units(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
                crate::embed::l2_normalize(&mut v);
                v
            })
            .collect()
    }

    /// The exact top `k` point ids by an f64 scan.
    fn exact_top(vs: &[Vec<f32>], q: &[f32], k: usize) -> Vec<usize> {
        let mut all: Vec<(f64, usize)> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum(), i))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all.into_iter().take(k).map(|(_, i)| i).collect()
    }

    fn overlap(a: &[usize], b: &[usize]) -> usize {
        a.iter().filter(|x| b.contains(x)).count()
    }

    #[test]
    fn flat_search_matches_an_exact_scan_and_hnsw_rs() {
        let (n, dim, k) = (4000, 32, 10);
        let vs = random_units(n, dim, 1);
        let queries = random_units(200, dim, 2);
        let params = GraphParams::default();
        let mut g = Graph::new(params, n);
        let rows: Vec<(&[f32], usize)> = vs.iter().map(Vec::as_slice).zip(0..).collect();
        g.insert(&rows);
        let (links, vectors) = g.export(Some(dim)).unwrap();
        let flat = FlatGraph::from_parts(dim, vectors, links);
        assert_eq!((flat.points(), flat.pending()), (n, 0));

        let (mut flat_hits, mut hnsw_hits, mut agree) = (0, 0, 0);
        for q in &queries {
            let exact = exact_top(&vs, q, k);
            let ours: Vec<usize> = flat
                .search(q, k, params.ef_search)
                .iter()
                .map(|h| h.0)
                .collect();
            let theirs: Vec<usize> = g
                .search(q, k, params.ef_search)
                .iter()
                .map(|h| h.0)
                .collect();
            assert_eq!(ours.len(), k);
            flat_hits += overlap(&ours, &exact);
            hnsw_hits += overlap(&theirs, &exact);
            agree += overlap(&ours, &theirs);
        }
        let total = (k * queries.len()) as f64;
        let (flat_recall, hnsw_recall) = (flat_hits as f64 / total, hnsw_hits as f64 / total);
        assert!(flat_recall >= 0.95, "flat recall@{k} {flat_recall}");
        assert!(
            flat_recall >= hnsw_recall - 0.01,
            "flat {flat_recall} vs hnsw_rs {hnsw_recall}"
        );
        assert!(
            agree as f64 / total >= 0.95,
            "agreement {}",
            agree as f64 / total
        );
        // Similarities are exact dot products, best first.
        let q = &queries[0];
        let hits = flat.search(q, k, params.ef_search);
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
        let dot: f32 = vs[hits[0].0].iter().zip(q).map(|(a, b)| a * b).sum();
        assert!((hits[0].1 - dot).abs() < 1e-5);
    }

    #[test]
    fn small_inserts_stay_pending_then_get_linked() {
        let dim = 16;
        let vs = random_units(MAX_PENDING + 50, dim, 3);
        let mut idx = VectorIndex::new(dim, "test", GraphParams::default(), vs.len());
        for (i, v) in vs.iter().enumerate() {
            idx.insert(&key(&format!("a{i}")), 1, &[(TextKind::Example, v.clone())])
                .unwrap();
            let expected_pending = if i + 1 >= MAX_PENDING {
                (i + 1 - MAX_PENDING) % MAX_PENDING
            } else {
                i + 1
            };
            assert_eq!(idx.flat.pending(), expected_pending, "after {}", i + 1);
        }
        // Linked and pending points are both found.
        for i in [0, 17, MAX_PENDING - 1, MAX_PENDING + 3, vs.len() - 1] {
            let hits = idx.search(&vs[i], 1).unwrap();
            assert_eq!(hits[0].key, key(&format!("a{i}")), "point {i}");
        }
    }
}
