//! The packed layout: GGML Q4_0 / Q4_1 / Q8_0 blocks regrouped for 16-lane dot products.
//!
//! Output columns (weight rows) are taken sixteen at a time (a *group*) and the input
//! dimension 32 at a time (a *block*, GGML's block). For one (group, block) the quantized
//! values are stored so that byte `4i + t` of a 64-byte chunk belongs to weight row `i` of
//! the group: a `vpdpbusd` against four broadcast input bytes then adds four products into
//! each of the sixteen lanes.
//! - 8-bit (Q8_0): eight chunks; chunk `j`, row `i`, byte `t` is `w[i][4j + t]`.
//! - 4-bit (Q4_0, Q4_1): four chunks; the low nibble of chunk `c`, row `i`, byte `t` is
//!   `q[i][4c + t]` and the high nibble `q[i][16 + 4c + t]` — exactly GGML's own byte order
//!   within a block, so packing is a byte shuffle.
//!
//! A weight is `d·q + m` per (row, block): Q4_1 stores `d` and `m`, Q4_0 is `m = -8d`, and
//! Q8_0 keeps its signed bytes (`m = 0`) with `128·Σw` per (row, block) precomputed, because
//! its kernel feeds the *input* as the unsigned operand (shifted by 128) and subtracts that.

use crate::{Result, RuntimeError};
use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

/// Output columns per group: one 512-bit register of f32 or i32 lanes.
pub const GROUP: usize = 16;
/// Input values per block (GGML's block length for these formats).
pub const BLOCK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    Four,
    Eight,
}

impl Bits {
    /// Packed bytes of one (group, block).
    pub fn group_block_bytes(self) -> usize {
        match self {
            Self::Four => GROUP * BLOCK / 2,
            Self::Eight => GROUP * BLOCK,
        }
    }
}

pub struct PackedWeight {
    n: usize,
    k: usize,
    bits: Bits,
    /// `[groups][blocks][group_block_bytes]`.
    pub(super) quants: Vec<u8>,
    /// `d` per `[groups][blocks][16]`.
    pub(super) scales: Vec<f32>,
    /// 4-bit: `m` per `[groups][blocks][16]`; empty for 8-bit.
    pub(super) mins: Vec<f32>,
    /// 8-bit: `128·Σ_block w` per `[groups][blocks][16]`; empty for 4-bit.
    pub(super) shifted_sums: Vec<i32>,
}

impl PackedWeight {
    /// Packs a `[n, k]` Q4_0, Q4_1 or Q8_0 tensor; `None` for other formats.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let (bits, block_bytes) = match t.dtype() {
            GgmlDType::Q4_0 => (Bits::Four, 18),
            GgmlDType::Q4_1 => (Bits::Four, 20),
            GgmlDType::Q8_0 => (Bits::Eight, 34),
            _ => return Ok(None),
        };
        let (n, k) = match t.shape().dims() {
            &[n, k] if k % BLOCK == 0 => (n, k),
            dims => {
                return Err(RuntimeError::UnsupportedModel {
                    reason: format!("cannot pack a {:?} tensor of shape {dims:?}", t.dtype()),
                })
            }
        };
        let data = t.data()?;
        let nb = k / BLOCK;
        if data.len() != n * nb * block_bytes {
            return Err(RuntimeError::UnsupportedModel {
                reason: format!(
                    "{:?} tensor [{n}, {k}] holds {} bytes, expected {}",
                    t.dtype(),
                    data.len(),
                    n * nb * block_bytes
                ),
            });
        }
        let groups = n.div_ceil(GROUP);
        let gb = bits.group_block_bytes();
        let lanes = groups * nb * GROUP;
        let mut packed = Self {
            n,
            k,
            bits,
            quants: vec![0; groups * nb * gb],
            scales: vec![0.0; lanes],
            mins: if bits == Bits::Four {
                vec![0.0; lanes]
            } else {
                vec![]
            },
            shifted_sums: if bits == Bits::Eight {
                vec![0; lanes]
            } else {
                vec![]
            },
        };
        for row in 0..n {
            let (g, i) = (row / GROUP, row % GROUP);
            for b in 0..nb {
                let block = &data[(row * nb + b) * block_bytes..][..block_bytes];
                let lane = (g * nb + b) * GROUP + i;
                let dst = &mut packed.quants[(g * nb + b) * gb..][..gb];
                let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                packed.scales[lane] = d;
                match t.dtype() {
                    GgmlDType::Q4_0 => {
                        packed.mins[lane] = -8.0 * d;
                        scatter_nibbles(&block[2..18], dst, i);
                    }
                    GgmlDType::Q4_1 => {
                        packed.mins[lane] = f16::from_le_bytes([block[2], block[3]]).to_f32();
                        scatter_nibbles(&block[4..20], dst, i);
                    }
                    _ => {
                        let qs = &block[2..34];
                        for (j, chunk) in qs.chunks_exact(4).enumerate() {
                            dst[j * 64 + i * 4..][..4].copy_from_slice(chunk);
                        }
                        let sum: i32 = qs.iter().map(|&q| q as i8 as i32).sum();
                        packed.shifted_sums[lane] = 128 * sum;
                    }
                }
            }
        }
        Ok(Some(packed))
    }

    /// Output columns (weight rows).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input width.
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn bits(&self) -> Bits {
        self.bits
    }

    pub fn groups(&self) -> usize {
        self.n.div_ceil(GROUP)
    }

    pub fn blocks(&self) -> usize {
        self.k / BLOCK
    }

    /// Columns of group `g` that exist (the last group may be partial).
    pub fn group_width(&self, g: usize) -> usize {
        (self.n - g * GROUP).min(GROUP)
    }
}

/// GGML's 16 nibble bytes of one block into the chunks of weight row `i`.
fn scatter_nibbles(qs: &[u8], dst: &mut [u8], i: usize) {
    for (c, chunk) in qs.chunks_exact(4).enumerate() {
        dst[c * 64 + i * 4..][..4].copy_from_slice(chunk);
    }
}
