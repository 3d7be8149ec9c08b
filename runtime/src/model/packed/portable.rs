//! The plain-Rust kernel: the same operations as the VNNI kernel, in the same order.

use super::activation::QuantRows;
use super::layout::{Bits, PackedWeight, BLOCK, GROUP};

/// Output columns of group `g` for rows `[r0, r0 + tile)`.
///
/// # Safety
/// `out` points to `[rows, n]` f32 values and no other thread writes group `g`'s columns.
pub(super) unsafe fn tile(
    w: &PackedWeight,
    g: usize,
    x: &QuantRows,
    r0: usize,
    tile: usize,
    out: *mut f32,
) {
    // SAFETY: the caller upholds this function's contract (see its doc).
    unsafe {
        let nb = w.blocks();
        let k = w.k();
        let gb = w.bits().group_block_bytes();
        for r in r0..r0 + tile {
            let mut acc = [0f32; GROUP];
            for b in 0..nb {
                let lane0 = (g * nb + b) * GROUP;
                let packed = &w.quants[(g * nb + b) * gb..][..gb];
                let dx = x.scales[r * nb + b];
                let at = r * k + b * BLOCK;
                for (i, acc) in acc.iter_mut().enumerate() {
                    let dot = match w.bits() {
                        Bits::Four => {
                            let xs = &x.signed[at..at + BLOCK];
                            let mut dot = 0i32;
                            for c in 0..4 {
                                for t in 0..4 {
                                    let byte = packed[c * 64 + i * 4 + t];
                                    dot += (byte & 0x0f) as i32 * xs[4 * c + t] as i32;
                                    dot += (byte >> 4) as i32 * xs[16 + 4 * c + t] as i32;
                                }
                            }
                            dot
                        }
                        Bits::Eight => {
                            let xs = &x.shifted[at..at + BLOCK];
                            let mut dot = 0i32;
                            for j in 0..8 {
                                for t in 0..4 {
                                    let weight = packed[j * 64 + i * 4 + t] as i8;
                                    dot += xs[4 * j + t] as i32 * weight as i32;
                                }
                            }
                            dot - w.shifted_sums[lane0 + i]
                        }
                    };
                    *acc = (dot as f32).mul_add(w.scales[lane0 + i] * dx, *acc);
                    if w.bits() == Bits::Four {
                        *acc = w.mins[lane0 + i].mul_add(x.scaled_sums[r * nb + b], *acc);
                    }
                }
            }
            let dst = out.add(r * w.n() + g * GROUP);
            for (i, v) in acc.iter().take(w.group_width(g)).enumerate() {
                *dst.add(i) = *v;
            }
        }
    }
}
