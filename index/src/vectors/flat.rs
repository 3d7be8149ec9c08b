//! `FlatGraph`: the HNSW graph copied out of hnsw_rs into plain arrays, searched without
//! locks, reference counts or hash sets.
//!
//! Shape contract: `vectors` is `points x dim` f32, row-major, row = point id. Layer `l`
//! of the links is CSR over the first `linked` points: `offsets` has `linked + 1` entries
//! and point `p`'s neighbours are `targets[offsets[p]..offsets[p + 1]]`, every one
//! `< linked`. Points `linked..points` were inserted after the last export ("pending"):
//! they have no links yet and every search scans them exhaustively.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::Mutex;

use super::quant::{self, Codes};
use crate::embed::dot;
use crate::{IndexError, Result};

/// One layer's adjacency lists, CSR.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Layer {
    pub(crate) offsets: Vec<u32>,
    pub(crate) targets: Vec<u32>,
}

impl Layer {
    fn neighbours(&self, p: u32) -> &[u32] {
        let p = p as usize;
        &self.targets[self.offsets[p] as usize..self.offsets[p + 1] as usize]
    }
}

/// The graph of the first `linked()` points: layers bottom up, and the entry point (a
/// point of the top layer).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Links {
    pub(crate) layers: Vec<Layer>,
    pub(crate) entry: u32,
}

impl Links {
    /// Points covered by the links.
    pub(crate) fn linked(&self) -> usize {
        self.layers.first().map_or(0, |l| l.offsets.len() - 1)
    }

    /// Checks everything [`FlatGraph::search`] relies on to index without panicking;
    /// `path` names the source in the error.
    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        self.check().map_err(|reason| IndexError::VectorIndex {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// [`Links::validate`]'s body; the reason is wrapped into the crate error right away.
    fn check(&self) -> std::result::Result<(), String> {
        let Some(bottom) = self.layers.first() else {
            return Ok(());
        };
        let linked = bottom.offsets.len().saturating_sub(1);
        if linked == 0 || linked > u32::MAX as usize {
            return Err(format!("{linked} linked points"));
        }
        if self.entry as usize >= linked {
            return Err(format!("entry point {} of {linked}", self.entry));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if layer.offsets.len() != linked + 1 {
                return Err(format!(
                    "layer {l} has {} offsets for {linked} points",
                    layer.offsets.len()
                ));
            }
            if layer.offsets[0] != 0
                || layer.offsets.windows(2).any(|w| w[0] > w[1])
                || layer.offsets[linked] as usize != layer.targets.len()
            {
                return Err(format!("layer {l} has malformed offsets"));
            }
            if let Some(t) = layer.targets.iter().find(|&&t| t as usize >= linked) {
                return Err(format!("layer {l} links to point {t} of {linked}"));
            }
        }
        Ok(())
    }
}

/// A point and its similarity to the query, ordered by similarity (then id, for a total
/// order).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored {
    sim: f32,
    id: u32,
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim
            .total_cmp(&other.sim)
            .then_with(|| other.id.cmp(&self.id))
    }
}

/// Per-search working memory, reused: a generation-stamped visited set (a point is
/// visited when its stamp equals the current generation, so clearing is one increment)
/// and the two heaps.
#[derive(Default)]
struct Scratch {
    stamps: Vec<u32>,
    generation: u32,
    candidates: BinaryHeap<Scored>,
    results: BinaryHeap<Reverse<Scored>>,
    /// The unvisited neighbours of the point being expanded.
    fresh: Vec<u32>,
    /// The query, quantized like [`Codes`].
    query: Vec<i8>,
}

impl Scratch {
    fn reset(&mut self, points: usize) {
        if self.stamps.len() < points {
            self.stamps.resize(points, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.fill(0);
            self.generation = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }

    /// Marks `p` visited; returns whether it was not yet.
    fn visit(&mut self, p: u32) -> bool {
        let stamp = &mut self.stamps[p as usize];
        let fresh = *stamp != self.generation;
        *stamp = self.generation;
        fresh
    }
}

pub(crate) struct FlatGraph {
    dim: usize,
    vectors: Vec<f32>,
    /// `vectors` in 8 bits, for the graph walk.
    codes: Codes,
    links: Links,
    /// Scratch spaces of finished searches; a search takes one (or makes one) and puts it
    /// back, so concurrent searches never share one and the lock is held for a pop/push.
    pool: Mutex<Vec<Scratch>>,
}

impl FlatGraph {
    /// An empty graph with room for `capacity` points.
    pub(crate) fn new(dim: usize, capacity: usize) -> Self {
        Self::from_parts(dim, Vec::with_capacity(dim * capacity), Links::default())
    }

    /// The caller guarantees the shape contract (`vectors.len()` a multiple of `dim`,
    /// `links` valid and covering at most the points).
    pub(crate) fn from_parts(dim: usize, vectors: Vec<f32>, links: Links) -> Self {
        debug_assert!(vectors.len().is_multiple_of(dim.max(1)));
        debug_assert!(links.linked() <= vectors.len() / dim.max(1));
        Self {
            dim,
            codes: Codes::new(dim, &vectors),
            vectors,
            links,
            pool: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    pub(crate) fn points(&self) -> usize {
        self.vectors.len().checked_div(self.dim).unwrap_or(0)
    }

    pub(crate) fn pending(&self) -> usize {
        self.points() - self.links.linked()
    }

    pub(crate) fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    pub(crate) fn links(&self) -> &Links {
        &self.links
    }

    fn row(&self, p: u32) -> &[f32] {
        let start = p as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    /// Appends points (unlinked until the next [`FlatGraph::set_links`]).
    pub(crate) fn push(&mut self, vector: &[f32]) {
        debug_assert_eq!(vector.len(), self.dim);
        self.vectors.extend_from_slice(vector);
        self.codes.push(vector);
    }

    /// Replaces the links by a fresh export covering at most every point.
    pub(crate) fn set_links(&mut self, links: Links) {
        debug_assert!(links.linked() <= self.points());
        self.links = links;
    }

    /// The `k` points most similar to `query` as `(point id, similarity)`, best first:
    /// a greedy descent through the upper layers, a beam of width `ef` on the bottom
    /// layer, and an exhaustive scan of the pending points.
    pub(crate) fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<(usize, f32)> {
        if k == 0 || self.points() == 0 {
            return Vec::new();
        }
        let mut found: Vec<Scored> = Vec::with_capacity(ef.max(k) + self.pending());
        if self.links.linked() > 0 {
            let mut scratch = self
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_default();
            self.search_links(query, ef.max(k), &mut scratch);
            // The walk scored with 8-bit codes: re-score its `ef` best exactly.
            scratch
                .results
                .iter()
                .for_each(|Reverse(s)| prefetch(self.row(s.id)));
            found.extend(scratch.results.drain().map(|Reverse(s)| Scored {
                sim: dot(query, self.row(s.id)),
                id: s.id,
            }));
            self.pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(scratch);
        }
        for p in self.links.linked()..self.points() {
            let id = p as u32;
            found.push(Scored {
                sim: dot(query, self.row(id)),
                id,
            });
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.truncate(k);
        found.into_iter().map(|s| (s.id as usize, s.sim)).collect()
    }

    /// Leaves the `ef` best linked points in `scratch.results`.
    fn search_links(&self, query: &[f32], ef: usize, scratch: &mut Scratch) {
        let links = &self.links;
        let mut q = std::mem::take(&mut scratch.query);
        let scale = quant::encode(query, &mut q);
        let score = |p: u32| self.codes.sim(&q, scale, p);
        let mut best = Scored {
            sim: score(links.entry),
            id: links.entry,
        };
        for layer in links.layers.iter().skip(1).rev() {
            loop {
                let before = best.id;
                for &n in layer.neighbours(best.id) {
                    let sim = score(n);
                    if sim > best.sim {
                        best = Scored { sim, id: n };
                    }
                }
                if best.id == before {
                    break;
                }
            }
        }
        scratch.reset(links.linked());
        scratch.visit(best.id);
        scratch.candidates.push(best);
        scratch.results.push(Reverse(best));
        let bottom = &links.layers[0];
        while let Some(c) = scratch.candidates.pop() {
            let worst = scratch.results.peek().map_or(f32::MIN, |r| r.0.sim);
            if c.sim < worst && scratch.results.len() >= ef {
                break;
            }
            // Two passes: the first finds the unvisited neighbours and starts loading their
            // vectors (random rows, mostly out of cache) so the loads overlap; the second
            // scores them.
            let mut fresh = std::mem::take(&mut scratch.fresh);
            fresh.clear();
            for &n in bottom.neighbours(c.id) {
                if scratch.visit(n) {
                    fresh.push(n);
                    prefetch(self.codes.row(n));
                }
            }
            for &n in &fresh {
                let sim = score(n);
                let worst = scratch.results.peek().map_or(f32::MIN, |r| r.0.sim);
                if scratch.results.len() < ef || sim > worst {
                    let s = Scored { sim, id: n };
                    scratch.candidates.push(s);
                    scratch.results.push(Reverse(s));
                    if scratch.results.len() > ef {
                        scratch.results.pop();
                    }
                }
            }
            scratch.fresh = fresh;
        }
        scratch.query = q;
    }
}

/// Asks the CPU to start loading `row` into cache (a hint; no effect elsewhere).
#[inline(always)]
fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for line in row.chunks(64 / std::mem::size_of::<T>().max(1)) {
            // SAFETY: SSE is part of the x86_64 baseline, and a prefetch of any address is
            // only a hint (it never faults); these addresses are in `row` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Links {
        // A path 0 - 1 - ... - n-1 on the bottom layer; 0 alone on top.
        let mut offsets = vec![0u32];
        let mut targets = Vec::new();
        for p in 0..n as u32 {
            if p > 0 {
                targets.push(p - 1);
            }
            if (p as usize) + 1 < n {
                targets.push(p + 1);
            }
            offsets.push(targets.len() as u32);
        }
        let top = Layer {
            offsets: vec![0; n + 1],
            targets: Vec::new(),
        };
        Links {
            layers: vec![Layer { offsets, targets }, top],
            entry: 0,
        }
    }

    #[test]
    fn validation_catches_what_would_panic() {
        let good = line(5);
        let here = Path::new("test");
        assert!(good.validate(here).is_ok());
        let mut bad = good.clone();
        bad.layers[0].targets[3] = 9;
        assert!(bad.validate(here).is_err());
        let mut bad = good.clone();
        bad.entry = 5;
        assert!(bad.validate(here).is_err());
        let mut bad = good.clone();
        bad.layers[0].offsets[2] = 100;
        assert!(bad.validate(here).is_err());
        let mut bad = good;
        bad.layers[1].offsets.pop();
        assert!(bad.validate(here).is_err());
    }

    #[test]
    fn walks_the_graph_and_scans_pending_points() {
        // Points on a circle; the path links them in angle order.
        let dim = 2;
        let unit = |a: f32| [a.cos(), a.sin()];
        let mut g = FlatGraph::new(dim, 0);
        for i in 0..50 {
            g.push(&unit(i as f32 * 0.05));
        }
        g.set_links(line(50));
        g.push(&unit(1.32)); // pending, id 50
        let hits = g.search(&unit(2.01), 3, 8);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [40, 41, 39]);
        let hits = g.search(&unit(1.32), 2, 8);
        assert_eq!(hits[0].0, 50);
        assert!((hits[0].1 - 1.0).abs() < 1e-6);
        assert_eq!(hits[1].0, 26);
    }
}
