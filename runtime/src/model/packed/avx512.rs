//! The AVX-512 VNNI kernel: sixteen output columns per register, up to eight input rows
//! per pass over a weight block, one `vpdpbusd` per four input values.

use super::activation::QuantRows;
use super::layout::{Bits, PackedWeight, BLOCK, GROUP};
use super::ROW_TILE;
use std::arch::x86_64::*;

/// Output columns of group `g` for rows `[r0, r0 + tile)`, `tile <= ROW_TILE`.
///
/// # Safety
/// The CPU has avx512f, avx512bw and avx512vnni; `out` points to `[rows, n]` f32 values and
/// no other thread writes group `g`'s columns.
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
        debug_assert!((1..=ROW_TILE).contains(&tile));
        // A const row count keeps the accumulators in registers.
        match (w.bits(), tile) {
            (Bits::Four, 1) => four::<1>(w, g, x, r0, out),
            (Bits::Four, 2) => four::<2>(w, g, x, r0, out),
            (Bits::Four, 3) => four::<3>(w, g, x, r0, out),
            (Bits::Four, 4) => four::<4>(w, g, x, r0, out),
            (Bits::Four, 5) => four::<5>(w, g, x, r0, out),
            (Bits::Four, 6) => four::<6>(w, g, x, r0, out),
            (Bits::Four, 7) => four::<7>(w, g, x, r0, out),
            (Bits::Four, _) => four::<8>(w, g, x, r0, out),
            (Bits::Eight, 1) => eight::<1>(w, g, x, r0, out),
            (Bits::Eight, 2) => eight::<2>(w, g, x, r0, out),
            (Bits::Eight, 3) => eight::<3>(w, g, x, r0, out),
            (Bits::Eight, 4) => eight::<4>(w, g, x, r0, out),
            (Bits::Eight, 5) => eight::<5>(w, g, x, r0, out),
            (Bits::Eight, 6) => eight::<6>(w, g, x, r0, out),
            (Bits::Eight, 7) => eight::<7>(w, g, x, r0, out),
            (Bits::Eight, _) => eight::<8>(w, g, x, r0, out),
        }
    }
}

/// Four input bytes at `offset`, broadcast to every lane.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn broadcast4(bytes: *const u8, offset: usize) -> __m512i {
    // SAFETY: the caller upholds this function's contract (see its doc).
    unsafe { _mm512_set1_epi32((bytes.add(offset) as *const i32).read_unaligned()) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn four<const MR: usize>(
    w: &PackedWeight,
    g: usize,
    x: &QuantRows,
    r0: usize,
    out: *mut f32,
) {
    // SAFETY: the caller upholds this function's contract (see its doc).
    unsafe {
        let nb = w.blocks();
        let k = w.k();
        let low = _mm512_set1_epi8(0x0f);
        let mut acc = [_mm512_setzero_ps(); MR];
        let quants = w
            .quants
            .as_ptr()
            .add(g * nb * Bits::Four.group_block_bytes());
        let lanes = (g * nb) * GROUP;
        let xs = x.signed.as_ptr() as *const u8;
        for b in 0..nb {
            let p = quants.add(b * Bits::Four.group_block_bytes()) as *const __m512i;
            let mut chunks = [_mm512_setzero_si512(); 8];
            for c in 0..4 {
                let v = _mm512_loadu_si512(p.add(c));
                chunks[c] = _mm512_and_si512(v, low);
                chunks[c + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
            }
            let d = _mm512_loadu_ps(w.scales.as_ptr().add(lanes + b * GROUP));
            let m = _mm512_loadu_ps(w.mins.as_ptr().add(lanes + b * GROUP));
            for (r, acc) in acc.iter_mut().enumerate() {
                let row = r0 + r;
                let at = row * k + b * BLOCK;
                let mut dot = _mm512_setzero_si512();
                for (j, chunk) in chunks.iter().enumerate() {
                    dot = _mm512_dpbusd_epi32(dot, *chunk, broadcast4(xs, at + 4 * j));
                }
                let dx = _mm512_set1_ps(*x.scales.get_unchecked(row * nb + b));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, dx), *acc);
                let sx = _mm512_set1_ps(*x.scaled_sums.get_unchecked(row * nb + b));
                *acc = _mm512_fmadd_ps(m, sx, *acc);
            }
        }
        store::<MR>(w, g, r0, &acc, out);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn eight<const MR: usize>(
    w: &PackedWeight,
    g: usize,
    x: &QuantRows,
    r0: usize,
    out: *mut f32,
) {
    // SAFETY: the caller upholds this function's contract (see its doc).
    unsafe {
        let nb = w.blocks();
        let k = w.k();
        let mut acc = [_mm512_setzero_ps(); MR];
        let quants = w
            .quants
            .as_ptr()
            .add(g * nb * Bits::Eight.group_block_bytes());
        let lanes = (g * nb) * GROUP;
        let xs = x.shifted.as_ptr();
        for b in 0..nb {
            let p = quants.add(b * Bits::Eight.group_block_bytes()) as *const __m512i;
            let mut chunks = [_mm512_setzero_si512(); 8];
            for (j, chunk) in chunks.iter_mut().enumerate() {
                *chunk = _mm512_loadu_si512(p.add(j));
            }
            let d = _mm512_loadu_ps(w.scales.as_ptr().add(lanes + b * GROUP));
            let shift =
                _mm512_loadu_si512(w.shifted_sums.as_ptr().add(lanes + b * GROUP) as *const _);
            for (r, acc) in acc.iter_mut().enumerate() {
                let row = r0 + r;
                let at = row * k + b * BLOCK;
                let mut dot = _mm512_setzero_si512();
                for (j, chunk) in chunks.iter().enumerate() {
                    // The input is the unsigned operand here (weights are signed bytes).
                    dot = _mm512_dpbusd_epi32(dot, broadcast4(xs, at + 4 * j), *chunk);
                }
                dot = _mm512_sub_epi32(dot, shift);
                let dx = _mm512_set1_ps(*x.scales.get_unchecked(row * nb + b));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, dx), *acc);
            }
        }
        store::<MR>(w, g, r0, &acc, out);
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store<const MR: usize>(
    w: &PackedWeight,
    g: usize,
    r0: usize,
    acc: &[__m512; MR],
    out: *mut f32,
) {
    // SAFETY: the caller upholds this function's contract (see its doc).
    unsafe {
        let width = w.group_width(g);
        let mask: __mmask16 = if width == GROUP {
            !0
        } else {
            (1u16 << width) - 1
        };
        for (r, v) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(out.add((r0 + r) * w.n() + g * GROUP), mask, *v);
        }
    }
}
