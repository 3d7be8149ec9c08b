//! A projection's base weight `[d_out, d_in]`, kept in the form that multiplies it fastest.
//!
//! - Q4_0 / Q4_1 / Q8_0 weights on a CPU with AVX-512 VNNI or AVX2 + FMA: the packed integer kernels
//!   (`super::packed`), for any number of rows. They read the file's own 4- or 8-bit values,
//!   so no dense copy is kept.
//! - Otherwise candle's `QMatMul`. Its quantized CPU matmul re-reads every weight block per
//!   row, so with many rows (prefill, large decode batches) a dense f32 GEMM is several times
//!   faster: for models small enough to afford it, an f32 copy serves calls with at least
//!   `DENSE_MIN_ROWS` rows.

use super::packed::{Kernel, PackedWeight};
use crate::Result;
use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};

/// Row count from which the dense copy is used (measured with `loramux bench`).
pub const DENSE_MIN_ROWS: usize = 8;

pub enum BaseWeight {
    Packed(PackedWeight, Kernel),
    Candle {
        quantized: QMatMul,
        dense: Option<Tensor>,
    },
}

impl BaseWeight {
    /// `x` is `[rows, d_in]` row-major; returns `[rows, d_out]` row-major.
    pub fn forward(&self, x: &[f32], d_in: usize) -> Result<Vec<f32>> {
        match self {
            Self::Packed(w, kernel) => Ok(w.matmul(x, *kernel)),
            Self::Candle { quantized, dense } => {
                let xt = Tensor::from_slice(x, (x.len() / d_in, d_in), &Device::Cpu)?;
                let y = match dense {
                    Some(w) if xt.dim(0)? >= DENSE_MIN_ROWS => xt.matmul(&w.t()?)?,
                    _ => quantized.forward(&xt)?,
                };
                Ok(y.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}
