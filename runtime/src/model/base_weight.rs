//! A projection's base weight `[d_out, d_in]`, kept in the form that suits the batch.
//!
//! Quantized kernels win when few rows are multiplied (decode is bound by reading weights),
//! but candle's quantized CPU matmul re-reads every weight block per row, so with many rows
//! (prefill, large decode batches) a dense f32 GEMM is several times faster. For models small
//! enough to afford it, an f32 copy serves calls with at least `DENSE_MIN_ROWS` rows.

use crate::Result;
use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

/// Row count from which the dense copy is used (measured with `loramux bench`).
pub const DENSE_MIN_ROWS: usize = 8;

pub struct BaseWeight {
    quantized: QMatMul,
    dense: Option<Tensor>,
}

impl BaseWeight {
    pub fn new(quantized: QMatMul, dense: Option<Tensor>) -> Self {
        Self { quantized, dense }
    }

    /// `x` is `[rows, d_in]`; returns `[rows, d_out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.dense {
            Some(w) if x.dim(0)? >= dense_min_rows() => Ok(x.matmul(&w.t()?)?),
            _ => Ok(self.quantized.forward(x)?),
        }
    }
}

fn dense_min_rows() -> usize {
    static ROWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ROWS.get_or_init(|| {
        std::env::var("LORAMUX_DENSE_MIN_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DENSE_MIN_ROWS)
    })
}
