//! Input rows rounded to 8 bits per 32-value block, the form the integer kernels read.

use super::layout::{Bits, BLOCK};

/// `[rows, k]` inputs as `x ≈ d·q` per (row, block), `q` in `[-127, 127]`.
pub struct QuantRows {
    /// 4-bit weights: `q` (the signed operand), `[rows][k]`.
    pub(super) signed: Vec<i8>,
    /// 8-bit weights: `q + 128` (the unsigned operand), `[rows][k]`.
    pub(super) shifted: Vec<u8>,
    /// `d` per `[rows][blocks]`.
    pub(super) scales: Vec<f32>,
    /// `d·Σq` per `[rows][blocks]`: what a weight block's offset `m` multiplies.
    pub(super) scaled_sums: Vec<f32>,
}

impl QuantRows {
    /// Rounds `x` (`[rows, k]`, `k` a multiple of 32) for weights of `bits`.
    pub fn new(x: &[f32], k: usize, bits: Bits) -> Self {
        let rows = x.len() / k;
        let blocks = rows * (k / BLOCK);
        let mut out = Self {
            signed: Vec::new(),
            shifted: Vec::new(),
            scales: Vec::with_capacity(blocks),
            scaled_sums: Vec::with_capacity(blocks),
        };
        let mut q = [0i8; BLOCK];
        for block in x.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (dst, &v) in q.iter_mut().zip(block) {
                // Ties to even: one vector instruction (round-half-away is a libm-style sequence).
                *dst = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
                sum += *dst as i32;
            }
            out.scales.push(d);
            out.scaled_sums.push(d * sum as f32);
            match bits {
                Bits::Four => out.signed.extend_from_slice(&q),
                Bits::Eight => out.shifted.extend(q.iter().map(|&v| (v as u8) ^ 0x80)),
            }
        }
        out
    }
}
