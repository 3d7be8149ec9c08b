//! Causal attention on the device over a ragged batch: a loop over sequences, each one
//! batched over its heads (one matmul for the scores, one softmax, one matmul for the
//! values) against its own device KV cache.
//!
//! Inputs: q `[num_heads, rows, head_dim]`, k and v `[num_kv_heads, rows, head_dim]` (rows
//! of all sequences, rotated); output `[rows, num_heads * head_dim]`. Grouped-query heads
//! share a KV head without copying it: the `group` query heads of one KV head are folded
//! into its rows (`[num_kv_heads, group · tokens, head_dim]`).

use crate::kv_cache::DeviceKv;
use crate::Result;
use candle_core::Tensor;
use std::ops::Range;

#[derive(Debug, Clone, Copy)]
pub(super) struct AttnDims {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
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
    let AttnDims {
        num_heads,
        num_kv_heads,
        head_dim,
    } = dims;
    let group = num_heads / num_kv_heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut outs = Vec::with_capacity(seq_rows.len());
    for (cache, range) in caches.iter_mut().zip(seq_rows) {
        let t = range.len();
        let (keys, values) = cache.append(
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
        let mut scores = (qs.matmul(&keys.t()?)? * scale)?;
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
    let rows = seq_rows.last().map_or(0, |r| r.end);
    let out = Tensor::cat(&outs, 1)?;
    Ok(out
        .transpose(0, 1)?
        .contiguous()?
        .reshape((rows, num_heads * head_dim))?)
}

/// `[tokens, len]`: 0 where token i (at position `len - tokens + i`) may see key j, else -inf.
fn causal_mask(tokens: usize, len: usize, device: &candle_core::Device) -> Result<Tensor> {
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
