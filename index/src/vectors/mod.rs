//! `VectorIndex`: an HNSW index over several unit vectors per adapter (its description and
//! its example prompts), searched by cosine similarity.
//!
//! Shape contract: every vector has `dim` f32 components and unit length. Point ids are
//! dense (`0..points`); each maps to the adapter that owns it. Removing or replacing an
//! adapter tombstones its points (HNSW cannot delete); searches skip them, and the owner
//! rebuilds once tombstones pass [`VectorIndex::needs_compaction`].

mod graph;
mod persist;

pub use graph::{GraphParams, UnitCosine};

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{AdapterKey, IndexError, Result};
use graph::Graph;

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
    pub(crate) key: AdapterKey,
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
pub type AdapterVectors<'a> = (&'a AdapterKey, i64, &'a [(TextKind, Vec<f32>)]);

/// A search result: one indexed text of one adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub key: AdapterKey,
    pub kind: TextKind,
    pub similarity: f32,
}

pub struct VectorIndex {
    graph: Graph,
    dim: usize,
    embedder: String,
    entries: Vec<Entry>,
    by_key: HashMap<AdapterKey, u32>,
    points: Vec<PointOwner>,
    dead_points: usize,
}

impl VectorIndex {
    pub fn new(dim: usize, embedder: &str, params: GraphParams, capacity: usize) -> Self {
        Self {
            graph: Graph::new(params, capacity),
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
        self.graph.params()
    }

    /// Live adapters.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether `key` is a live adapter of the index.
    pub fn contains(&self, key: &AdapterKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// Points in the graph, tombstones included.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// Live adapters and the revision their vectors came from.
    pub fn revisions(&self) -> impl Iterator<Item = (&AdapterKey, i64)> + '_ {
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
        key: &AdapterKey,
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
            }
        }
        self.graph.insert(&batch);
        Ok(())
    }

    /// Tombstones an adapter's points; returns whether it was present.
    pub fn remove(&mut self, key: &AdapterKey) -> bool {
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
        let found = self.graph.search(query, fetch);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AdapterKey {
        AdapterKey::new(s).unwrap()
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
}
