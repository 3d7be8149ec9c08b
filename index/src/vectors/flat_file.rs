//! The `.flat` file: a [`FlatGraph`] as a header and raw little-endian arrays, so a reload
//! is a few large reads instead of hnsw_rs's point-by-point parse.
//!
//! Layout (all integers little-endian):
//!
//! | bytes            | content                                                     |
//! |------------------|-------------------------------------------------------------|
//! | 8                | magic `LMXFLAT1`                                            |
//! | 4 x 5            | dim, points, linked points, layers, entry point (u32)       |
//! | 4                | zero                                                        |
//! | 8                | checksum of everything else (header and arrays)             |
//! | 8 x layers       | edges per layer (u64)                                       |
//! | per layer        | offsets (`linked + 1` u32), targets (`edges` u32)           |
//! | 4 x points x dim | vectors (f32)                                               |
//!
//! A file whose size, checksum or links do not add up is an error, never a panic: the
//! expected size is computed (with checked arithmetic) and compared with the file's before
//! anything is allocated, and the links are validated after the checksum.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use super::flat::{FlatGraph, Layer, Links};
use crate::{IndexError, Result};

const MAGIC: &[u8; 8] = b"LMXFLAT1";
const FIXED: usize = 8 + 4 * 6 + 8;
/// hnsw_rs's layer cap.
const MAX_LAYERS: usize = 16;

/// Writes `graph` to `path` and fsyncs it; returns the file's size.
pub(crate) fn write(path: &Path, graph: &FlatGraph) -> Result<u64> {
    let io = |e| IndexError::io(path, e);
    let links = graph.links();
    let header = Header {
        dim: graph.dim() as u32,
        points: graph.points() as u32,
        linked: links.linked() as u32,
        entry: links.entry,
        edges: links
            .layers
            .iter()
            .map(|l| l.targets.len() as u64)
            .collect(),
    };
    let mut sum = Checksum::default();
    let head = header.bytes();
    sum.add(&head[..FIXED - 8]);
    sum.add(&head[FIXED..]);
    for layer in &links.layers {
        sum.add(&le_bytes(&layer.offsets));
        sum.add(&le_bytes(&layer.targets));
    }
    let vectors = le_bytes(graph.vectors());
    sum.add(&vectors);
    let mut head = head;
    head[FIXED - 8..FIXED].copy_from_slice(&sum.finish().to_le_bytes());

    let file = File::create(path).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&head).map_err(io)?;
    for layer in &links.layers {
        w.write_all(&le_bytes(&layer.offsets)).map_err(io)?;
        w.write_all(&le_bytes(&layer.targets)).map_err(io)?;
    }
    w.write_all(&vectors).map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(file.metadata().map_err(io)?.len())
}

/// Reads a file written by [`write`], expecting `points` vectors of `dim` components.
pub(crate) fn read(path: &Path, dim: usize, points: usize) -> Result<FlatGraph> {
    let bad = |reason: String| IndexError::VectorIndex {
        path: path.to_path_buf(),
        reason,
    };
    let io = |e| IndexError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut fixed = [0u8; FIXED];
    file.read_exact(&mut fixed)
        .map_err(|e| bad(format!("truncated header: {e}")))?;
    if &fixed[..8] != MAGIC {
        return Err(bad("not a flat graph file (bad magic)".into()));
    }
    let word =
        |i: usize| u32::from_le_bytes(fixed[8 + 4 * i..12 + 4 * i].try_into().unwrap_or_default());
    let (file_dim, file_points, linked, layers, entry) =
        (word(0), word(1), word(2), word(3) as usize, word(4));
    let stored_sum = u64::from_le_bytes(fixed[FIXED - 8..].try_into().unwrap_or_default());
    if file_dim as usize != dim || file_points as usize != points {
        return Err(bad(format!(
            "holds {file_points} vectors of {file_dim} dims; expected {points} of {dim}"
        )));
    }
    if layers > MAX_LAYERS || linked > file_points || (linked == 0) != (layers == 0) {
        return Err(bad(format!(
            "{layers} layers over {linked} of {file_points} points"
        )));
    }
    let mut edge_bytes = vec![0u8; 8 * layers];
    file.read_exact(&mut edge_bytes)
        .map_err(|e| bad(format!("truncated header: {e}")))?;
    let edges: Vec<u64> = edge_bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let expected = expected_size(dim as u64, points as u64, linked as u64, &edges)
        .ok_or_else(|| bad("sizes in the header overflow".into()))?;
    if expected != size {
        return Err(bad(format!(
            "{size} bytes; the header describes {expected} (truncated or garbage)"
        )));
    }

    let mut sum = Checksum::default();
    sum.add(&fixed[..FIXED - 8]);
    sum.add(&edge_bytes);
    let mut read_u32s = |n: usize, sum: &mut Checksum| -> Result<Vec<u32>> {
        let mut v = vec![0u32; n];
        // SAFETY: the byte view covers exactly the initialized memory of `v`, and every
        // bit pattern is a valid u32, so reading bytes into it cannot create invalid values.
        let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), n * 4) };
        file.read_exact(bytes).map_err(io)?;
        sum.add(bytes);
        v.iter_mut().for_each(|x| *x = u32::from_le(*x));
        Ok(v)
    };
    let mut layer_list = Vec::with_capacity(layers);
    for &e in &edges {
        let offsets = read_u32s(linked as usize + 1, &mut sum)?;
        let targets = read_u32s(e as usize, &mut sum)?;
        layer_list.push(Layer { offsets, targets });
    }
    let bits = read_u32s(points * dim, &mut sum)?;
    if sum.finish() != stored_sum {
        return Err(bad("checksum mismatch (corrupted file)".into()));
    }
    let links = Links {
        layers: layer_list,
        entry,
    };
    links.validate(path)?;
    // From u32 bits to f32: the same size and alignment, and every bit pattern is a valid
    // f32; the compiler turns this into a no-op reuse of the allocation.
    let vectors: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
    Ok(FlatGraph::from_parts(dim, vectors, links))
}

fn expected_size(dim: u64, points: u64, linked: u64, edges: &[u64]) -> Option<u64> {
    let mut total = (FIXED as u64).checked_add(8 * edges.len() as u64)?;
    for &e in edges {
        total = total.checked_add(linked.checked_add(1)?.checked_add(e)?.checked_mul(4)?)?;
    }
    total.checked_add(points.checked_mul(dim)?.checked_mul(4)?)
}

struct Header {
    dim: u32,
    points: u32,
    linked: u32,
    entry: u32,
    edges: Vec<u64>,
}

impl Header {
    /// The header's bytes with a zero checksum.
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED + 8 * self.edges.len());
        b.extend_from_slice(MAGIC);
        let layers = self.edges.len() as u32;
        for w in [self.dim, self.points, self.linked, layers, self.entry, 0] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&0u64.to_le_bytes());
        for e in &self.edges {
            b.extend_from_slice(&e.to_le_bytes());
        }
        b
    }
}

/// The 4-byte values the file stores, little-endian.
trait Word: Copy {
    fn le(self) -> [u8; 4];
}

impl Word for u32 {
    fn le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
}

impl Word for f32 {
    fn le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
}

/// `v` as little-endian bytes: borrowed on little-endian machines.
fn le_bytes<T: Word>(v: &[T]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: u32 and f32 slices are readable as bytes (no padding), 4 bytes per element.
        std::borrow::Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
        })
    } else {
        std::borrow::Cow::Owned(v.iter().flat_map(|x| x.le()).collect())
    }
}

/// A fast non-cryptographic checksum over a sequence of byte slices: eight independent
/// multiply-rotate lanes over 64-bit words (they vectorize), each slice's tail and length
/// folded in. Each step is a bijection of the lane state for a fixed word, so any change
/// confined to one word changes the result; it guards against truncation and corruption,
/// not against an adversary.
struct Checksum {
    lanes: [u64; 8],
    total: u64,
}

const PRIME: u64 = 0x9E37_79B9_7F4A_7C15;

impl Default for Checksum {
    fn default() -> Self {
        let mut lanes = [0u64; 8];
        for (i, l) in lanes.iter_mut().enumerate() {
            *l = PRIME.wrapping_mul(i as u64 + 1);
        }
        Self { lanes, total: 0 }
    }
}

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        let chunks = bytes.chunks_exact(64);
        let tail = chunks.remainder();
        for chunk in chunks {
            for (i, lane) in self.lanes.iter_mut().enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(&chunk[8 * i..8 * i + 8]);
                *lane = (*lane ^ u64::from_le_bytes(w))
                    .wrapping_mul(PRIME)
                    .rotate_left(29);
            }
        }
        for (i, word) in tail.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..word.len()].copy_from_slice(word);
            let lane = &mut self.lanes[i];
            *lane = (*lane ^ u64::from_le_bytes(w))
                .wrapping_mul(PRIME)
                .rotate_left(29);
        }
        self.total = (self.total ^ bytes.len() as u64)
            .wrapping_mul(PRIME)
            .rotate_left(31);
    }

    fn finish(&self) -> u64 {
        self.lanes.iter().fold(self.total, |h, &l| {
            (h ^ l).wrapping_mul(PRIME).rotate_left(31)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FlatGraph {
        let layer = |offsets: Vec<u32>, targets: Vec<u32>| Layer { offsets, targets };
        let links = Links {
            layers: vec![
                layer(vec![0, 1, 3, 4], vec![1, 0, 2, 1]),
                layer(vec![0, 0, 1, 2], vec![2, 1]),
            ],
            entry: 2,
        };
        let mut g = FlatGraph::from_parts(3, (0..9).map(|i| i as f32 / 10.0).collect(), links);
        g.push(&[0.5, 0.5, 0.5]);
        g
    }

    #[test]
    fn round_trip_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.flat");
        let g = sample();
        let size = write(&path, &g).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        let back = read(&path, 3, 4).unwrap();
        assert_eq!(back.vectors(), g.vectors());
        assert_eq!(back.links(), g.links());
        assert_eq!(back.pending(), 1);
    }

    #[test]
    fn truncated_corrupted_or_mismatched_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.flat");
        write(&path, &sample()).unwrap();
        let good = std::fs::read(&path).unwrap();
        assert!(read(&path, 4, 4).is_err(), "wrong dim");
        assert!(read(&path, 3, 5).is_err(), "wrong point count");
        for cut in [0, 5, FIXED, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(read(&path, 3, 4).is_err(), "truncated at {cut}");
        }
        // Every single flipped byte is caught (by the magic, a size, the checksum or the
        // validation).
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x5a;
            std::fs::write(&path, &bytes).unwrap();
            assert!(read(&path, 3, 4).is_err(), "byte {i} flipped");
        }
        std::fs::write(&path, b"LMXFLAT1 and then garbage").unwrap();
        assert!(read(&path, 3, 4).is_err());
    }
}
