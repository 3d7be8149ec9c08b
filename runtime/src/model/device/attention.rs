//! Causal attention on the device over a ragged batch, against each sequence's own device
//! KV cache.
//!
//! Sequences that feed one token this step (decode) are batched: each appends its k, v,
//! then all of them attend in one matmul / softmax / matmul over their caches padded to the
//! longest (padding masked out). Sequences that feed several tokens (prefill chunks) run one
//! at a time, each batched over its heads with a causal mask. A lone decode sequence takes
//! the per-sequence path.
//!
//! Inputs: q `[num_heads, rows, head_dim]`, k and v `[num_kv_heads, rows, head_dim]` (rows
//! of all sequences, rotated); output `[rows, num_heads * head_dim]` in row order.
//! Grouped-query heads share a KV head without copying it: the `group` query heads of one
//! KV head are folded into its rows.

use crate::kv_cache::DeviceKv;
use crate::Result;
use candle_core::{Device, Tensor};
use std::ops::Range;

#[derive(Debug, Clone, Copy)]
pub(super) struct AttnDims {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnDims {
    fn group(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }
}

/// One layer's attention for every sequence; appends each sequence's k, v to its cache.
pub(super) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seq_rows: &[Range<usize>],
    caches: &mut [&mut DeviceKv],
    layer: usize,
    dims: AttnDims,
) -> Result<Tensor> {
    let rows = seq_rows.last().map_or(0, |r| r.end);
    let (decode, chunks): (Vec<usize>, Vec<usize>) =
        (0..seq_rows.len()).partition(|&s| seq_rows[s].len() == 1);
    if decode.len() < 2 {
        let all: Vec<usize> = (0..seq_rows.len()).collect();
        let out = per_sequence(q, k, v, &all, seq_rows, caches, layer, dims)?;
        return Ok(out
            .transpose(0, 1)?
            .contiguous()?
            .reshape((rows, width(dims)))?);
    }
    let mut parts = vec![decode_batch(
        q, k, v, &decode, seq_rows, caches, layer, dims,
    )?];
    let mut order: Vec<usize> = decode.iter().map(|&s| seq_rows[s].start).collect();
    if !chunks.is_empty() {
        let out = per_sequence(q, k, v, &chunks, seq_rows, caches, layer, dims)?;
        let n = out.dim(1)?;
        parts.push(
            out.transpose(0, 1)?
                .contiguous()?
                .reshape((n, width(dims)))?,
        );
        order.extend(chunks.iter().flat_map(|&s| seq_rows[s].clone()));
    }
    let stacked = Tensor::cat(&parts, 0)?;
    if order.iter().enumerate().all(|(i, &r)| i == r) {
        return Ok(stacked);
    }
    // Row r of the step sits at position `at[r]` of `stacked`.
    let mut at = vec![0u32; rows];
    for (i, &r) in order.iter().enumerate() {
        at[r] = i as u32;
    }
    let at = Tensor::from_vec(at, rows, q.device())?;
    Ok(stacked.index_select(&at, 0)?)
}

fn width(dims: AttnDims) -> usize {
    dims.num_heads * dims.head_dim
}

/// The sequences `seqs` one at a time; returns `[num_heads, Σ tokens, head_dim]` in the
/// order of `seqs`.
#[allow(clippy::too_many_arguments)]
fn per_sequence(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seqs: &[usize],
    seq_rows: &[Range<usize>],
    caches: &mut [&mut DeviceKv],
    layer: usize,
    dims: AttnDims,
) -> Result<Tensor> {
    let AttnDims {
        num_heads,
        num_kv_heads,
        head_dim,
    } = dims;
    let group = dims.group();
    let mut outs = Vec::with_capacity(seqs.len());
    for &s in seqs {
        let range = &seq_rows[s];
        let t = range.len();
        let (keys, values) = caches[s].append(
            layer,
            &k.narrow(1, range.start, t)?,
            &v.narrow(1, range.start, t)?,
        )?;
        let len = keys.dim(1)?;
        let qs = q.narrow(1, range.start, t)?.contiguous()?.reshape((
            num_kv_heads,
            group * t,
            head_dim,
        ))?;
        let mut scores = (qs.matmul(&keys.t()?)? * dims.scale())?;
        if t > 1 {
            let mask = causal_mask(t, len, q.device())?;
            scores = scores
                .reshape((num_kv_heads, group, t, len))?
                .broadcast_add(&mask)?
                .reshape((num_kv_heads, group * t, len))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        outs.push(probs.matmul(&values)?.reshape((num_heads, t, head_dim))?);
    }
    Ok(Tensor::cat(&outs, 1)?)
}

/// The one-token sequences `seqs` together; returns `[seqs.len(), num_heads * head_dim]` in
/// the order of `seqs`.
#[allow(clippy::too_many_arguments)]
fn decode_batch(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seqs: &[usize],
    seq_rows: &[Range<usize>],
    caches: &mut [&mut DeviceKv],
    layer: usize,
    dims: AttnDims,
) -> Result<Tensor> {
    let AttnDims {
        num_heads,
        num_kv_heads,
        head_dim,
    } = dims;
    let b = seqs.len();
    let mut lens = Vec::with_capacity(b);
    for &s in seqs {
        let r = seq_rows[s].start;
        lens.push(caches[s].push(layer, &k.narrow(1, r, 1)?, &v.narrow(1, r, 1)?)?);
    }
    let longest = lens.iter().copied().max().unwrap_or(0);
    let mut keys = Vec::with_capacity(b);
    let mut values = Vec::with_capacity(b);
    for &s in seqs {
        let (kp, vp) = caches[s].padded(layer, longest)?;
        keys.push(kp);
        values.push(vp);
    }
    // [b, num_kv_heads, longest, head_dim]
    let keys = Tensor::stack(&keys, 0)?;
    let values = Tensor::stack(&values, 0)?;
    let rows: Vec<u32> = seqs.iter().map(|&s| seq_rows[s].start as u32).collect();
    let rows = Tensor::from_vec(rows, b, q.device())?;
    let qd = q
        .index_select(&rows, 1)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((b, num_kv_heads, dims.group(), head_dim))?;
    let mut scores = (qd.matmul(&keys.t()?)? * dims.scale())?;
    if lens.iter().any(|&l| l != longest) {
        let mask = padding_mask(&lens, longest, q.device())?;
        scores = scores.broadcast_add(&mask)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs.matmul(&values)?.reshape((b, num_heads * head_dim))?)
}

/// `[tokens, len]`: 0 where token i (at position `len - tokens + i`) may see key j, else -inf.
fn causal_mask(tokens: usize, len: usize, device: &Device) -> Result<Tensor> {
    let first = len - tokens;
    let mask: Vec<f32> = (0..tokens)
        .flat_map(|i| {
            (0..len).map(move |j| {
                if j > first + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (tokens, len), device)?)
}

/// `[b, 1, 1, longest]`: 0 for the cached positions of sequence i (`lens[i]`), -inf for
/// the padding after them.
fn padding_mask(lens: &[usize], longest: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = lens
        .iter()
        .flat_map(|&len| (0..longest).map(move |j| if j < len { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(mask, (lens.len(), 1, 1, longest), device)?)
}
