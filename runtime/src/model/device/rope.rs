//! Rotary embedding on the device, in the Hugging Face (rotate-half) convention the loader
//! already put every q/k row into (`weights::rope_layout` un-permutes GGUF rows once), with
//! the host backend's own `(cos, sin)` tables, so both backends rotate by the same angles.
//!
//! `x` is `[rows, heads * head_dim]`, each row at its own position; the result is
//! `[heads, rows, head_dim]`, the layout attention slices per sequence.

use crate::Result;
use candle_core::{Device, Tensor};

/// The step's tables on the device: `cos`, `sin` `[rows, head_dim / 2]`.
pub(super) struct DeviceRope {
    cos: Tensor,
    sin: Tensor,
}

impl DeviceRope {
    /// Uploads the host tables of a step (`[rows, head_dim / 2]` row-major each).
    pub(super) fn upload(cos: &[f32], sin: &[f32], rows: usize, device: &Device) -> Result<Self> {
        let half = cos.len() / rows.max(1);
        Ok(Self {
            cos: Tensor::from_slice(cos, (rows, half), device)?,
            sin: Tensor::from_slice(sin, (rows, half), device)?,
        })
    }

    /// Rotates every head of every row: `[rows, heads * head_dim]` → `[heads, rows, head_dim]`.
    pub(super) fn apply(&self, x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let x = x
            .reshape((1, rows, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        Ok(candle_nn::rotary_emb::rope(&x, &self.cos, &self.sin)?.squeeze(0)?)
    }
}

/// `[rows, heads * head_dim]` → `[heads, rows, head_dim]` without rotation (values).
pub(super) fn heads_first(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let rows = x.dim(0)?;
    Ok(x.reshape((rows, heads, head_dim))?
        .transpose(0, 1)?
        .contiguous()?)
}
