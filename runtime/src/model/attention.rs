//! Causal attention over a ragged batch: each token row attends to its own sequence's
//! cached keys up to and including its own position.
//!
//! `q` is `[rows, num_heads * head_dim]`; each sequence's K/V live in its `KvCache`
//! (`[positions, num_kv_heads, head_dim]`). Grouped-query heads share a KV head. Rows run in
//! parallel: each writes only its own output row.

use loramux_kernels::dot;
use rayon::prelude::*;

/// One row's view of its sequence: which cache, and its absolute position.
pub struct RowAttn<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub position: usize,
}

pub struct AttnShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

pub fn causal_attention(q: &[f32], rows: &[RowAttn<'_>], shape: &AttnShape) -> Vec<f32> {
    let AttnShape {
        num_heads,
        num_kv_heads,
        head_dim,
    } = *shape;
    let width = num_heads * head_dim;
    let kv_width = num_kv_heads * head_dim;
    let group = num_heads / num_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0f32; rows.len() * width];
    let work: usize = rows.iter().map(|r| (r.position + 1) * width).sum();
    let one_row = |(r, o): (usize, &mut [f32])| {
        let row = &rows[r];
        let ctx = row.position + 1;
        let mut scores = vec![0f32; ctx];
        for h in 0..num_heads {
            let qh = &q[r * width + h * head_dim..r * width + (h + 1) * head_dim];
            let kvh = h / group;
            let mut max = f32::NEG_INFINITY;
            for (p, s) in scores.iter_mut().enumerate() {
                let k =
                    &row.keys[p * kv_width + kvh * head_dim..p * kv_width + (kvh + 1) * head_dim];
                *s = dot(qh, k) * scale;
                max = max.max(*s);
            }
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let oh = &mut o[h * head_dim..(h + 1) * head_dim];
            for (p, &s) in scores.iter().enumerate() {
                let w = s / sum;
                let v =
                    &row.values[p * kv_width + kvh * head_dim..p * kv_width + (kvh + 1) * head_dim];
                oh.iter_mut().zip(v).for_each(|(a, b)| *a += w * b);
            }
        }
    };
    // Small steps (short decode contexts) stay on this thread: waking the pool costs more
    // than the arithmetic and competes with candle's own spinning matmul workers.
    if work >= PARALLEL_WORK {
        out.par_chunks_mut(width).enumerate().for_each(one_row);
    } else {
        out.chunks_mut(width).enumerate().for_each(one_row);
    }
    out
}

/// Multiply-adds (per score and per value) from which a step's attention runs in parallel.
const PARALLEL_WORK: usize = 1 << 18;

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 attention for one row: softmax(q·K/√d)·V over positions 0..=pos.
    fn reference(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        pos: usize,
        shape: &AttnShape,
    ) -> Vec<f64> {
        let (hd, kvw) = (shape.head_dim, shape.num_kv_heads * shape.head_dim);
        let group = shape.num_heads / shape.num_kv_heads;
        let mut out = vec![0f64; shape.num_heads * hd];
        for h in 0..shape.num_heads {
            let kvh = h / group;
            let scores: Vec<f64> = (0..=pos)
                .map(|p| {
                    (0..hd)
                        .map(|i| q[h * hd + i] as f64 * keys[p * kvw + kvh * hd + i] as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let z: f64 = e.iter().sum();
            for (p, w) in e.iter().enumerate() {
                for i in 0..hd {
                    out[h * hd + i] += w / z * values[p * kvw + kvh * hd + i] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn ragged_rows_match_f64_reference() {
        let shape = AttnShape {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
        };
        let mut seed = 1u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let kv_width = 16;
        let (k1, v1): (Vec<f32>, Vec<f32>) = (
            (0..5 * kv_width).map(|_| rnd()).collect(),
            (0..5 * kv_width).map(|_| rnd()).collect(),
        );
        let (k2, v2): (Vec<f32>, Vec<f32>) = (
            (0..2 * kv_width).map(|_| rnd()).collect(),
            (0..2 * kv_width).map(|_| rnd()).collect(),
        );
        let q: Vec<f32> = (0..3 * 32).map(|_| rnd()).collect();
        let rows = [
            RowAttn {
                keys: &k1,
                values: &v1,
                position: 3,
            },
            RowAttn {
                keys: &k1,
                values: &v1,
                position: 4,
            },
            RowAttn {
                keys: &k2,
                values: &v2,
                position: 1,
            },
        ];
        let out = causal_attention(&q, &rows, &shape);
        for (r, row) in rows.iter().enumerate() {
            let expected = reference(
                &q[r * 32..(r + 1) * 32],
                row.keys,
                row.values,
                row.position,
                &shape,
            );
            for (a, b) in out[r * 32..(r + 1) * 32].iter().zip(&expected) {
                assert!((*a as f64 - b).abs() < 1e-5, "row {r}: {a} vs {b}");
            }
        }
    }
}
