//! The AVX2 kernel: a group's sixteen output columns as two 8-lane registers, up to four input
//! rows per pass over a weight block. A four-byte dot product is `vpmaddubsw` (pairs of
//! unsigned × signed bytes into 16 bits) then `vpmaddwd` against ones (pairs into 32 bits).
//! Neither step can saturate here: 4-bit weights (0..15) against 8-bit inputs give at most
//! 2·15·127 per pair, and 8-bit weights are multiplied as `|x| · sign(x)·w`, at most
//! 2·127·128. So every block's integer dot is exact, as in the portable and VNNI kernels,
//! and the f32 steps after it are the same operations in the same order: all three kernels
//! agree bit for bit.

use super::activation::QuantRows;
use super::layout::{Bits, PackedWeight, BLOCK, GROUP};
use std::arch::x86_64::*;

/// Rows per pass: two accumulators and two dot registers per row fit the sixteen registers.
const MR_MAX: usize = 4;

/// Output columns of group `g` for rows `[r0, r0 + tile)`.
///
/// # Safety
/// The CPU has avx2 and fma; `out` points to `[rows, n]` f32 values and no other thread
/// writes group `g`'s columns.
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
        let mut r = r0;
        let end = r0 + tile;
        while r < end {
            let n = (end - r).min(MR_MAX);
            match (w.bits(), n) {
                (Bits::Four, 1) => four::<1>(w, g, x, r, out),
                (Bits::Four, 2) => four::<2>(w, g, x, r, out),
                (Bits::Four, 3) => four::<3>(w, g, x, r, out),
                (Bits::Four, _) => four::<4>(w, g, x, r, out),
                (Bits::Eight, 1) => eight::<1>(w, g, x, r, out),
                (Bits::Eight, 2) => eight::<2>(w, g, x, r, out),
                (Bits::Eight, 3) => eight::<3>(w, g, x, r, out),
                (Bits::Eight, _) => eight::<4>(w, g, x, r, out),
            }
            r += n;
        }
    }
}

/// Four input bytes at `offset`, broadcast to every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn broadcast4(bytes: *const u8, offset: usize) -> __m256i {
    // SAFETY: the caller upholds this function's contract (see its doc).
    unsafe { _mm256_set1_epi32((bytes.add(offset) as *const i32).read_unaligned()) }
}

/// Σ of four unsigned × signed byte products per 32-bit lane, added to `acc`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot4(acc: __m256i, unsigned: __m256i, signed: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(unsigned, signed);
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

#[target_feature(enable = "avx2,fma")]
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
        let low = _mm256_set1_epi8(0x0f);
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let quants = w
            .quants
            .as_ptr()
            .add(g * nb * Bits::Four.group_block_bytes());
        let lanes = (g * nb) * GROUP;
        let xs = x.signed.as_ptr() as *const u8;
        for b in 0..nb {
            let p = quants.add(b * Bits::Four.group_block_bytes());
            let mut dot = [[_mm256_setzero_si256(); 2]; MR];
            for c in 0..4 {
                for (h, half) in [0, 32].into_iter().enumerate() {
                    let v = _mm256_loadu_si256(p.add(c * 64 + half) as *const __m256i);
                    let lo = _mm256_and_si256(v, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                    for (r, dot) in dot.iter_mut().enumerate() {
                        let at = (r0 + r) * k + b * BLOCK;
                        dot[h] = dot4(dot[h], lo, broadcast4(xs, at + 4 * c));
                        dot[h] = dot4(dot[h], hi, broadcast4(xs, at + 16 + 4 * c));
                    }
                }
            }
            for (h, half) in [0, 8].into_iter().enumerate() {
                let d = _mm256_loadu_ps(w.scales.as_ptr().add(lanes + b * GROUP + half));
                let m = _mm256_loadu_ps(w.mins.as_ptr().add(lanes + b * GROUP + half));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let row = r0 + r;
                    let dx = _mm256_set1_ps(*x.scales.get_unchecked(row * nb + b));
                    let v = _mm256_cvtepi32_ps(dot[r][h]);
                    acc[h] = _mm256_fmadd_ps(v, _mm256_mul_ps(d, dx), acc[h]);
                    let sx = _mm256_set1_ps(*x.scaled_sums.get_unchecked(row * nb + b));
                    acc[h] = _mm256_fmadd_ps(m, sx, acc[h]);
                }
            }
        }
        store::<MR>(w, g, r0, &acc, out);
    }
}

#[target_feature(enable = "avx2,fma")]
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
        let flip = _mm256_set1_epi8(-128);
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let quants = w
            .quants
            .as_ptr()
            .add(g * nb * Bits::Eight.group_block_bytes());
        let lanes = (g * nb) * GROUP;
        let xs = x.shifted.as_ptr();
        for b in 0..nb {
            let p = quants.add(b * Bits::Eight.group_block_bytes());
            let mut dot = [[_mm256_setzero_si256(); 2]; MR];
            for j in 0..8 {
                for (h, half) in [0, 32].into_iter().enumerate() {
                    let wv = _mm256_loadu_si256(p.add(j * 64 + half) as *const __m256i);
                    for (r, dot) in dot.iter_mut().enumerate() {
                        let at = (r0 + r) * k + b * BLOCK;
                        // The stored input is q + 128; flipping the top bit gives q back.
                        let q = _mm256_xor_si256(broadcast4(xs, at + 4 * j), flip);
                        let magnitude = _mm256_sign_epi8(q, q);
                        let signed_w = _mm256_sign_epi8(wv, q);
                        dot[h] = dot4(dot[h], magnitude, signed_w);
                    }
                }
            }
            for (h, half) in [0, 8].into_iter().enumerate() {
                let d = _mm256_loadu_ps(w.scales.as_ptr().add(lanes + b * GROUP + half));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let dx = _mm256_set1_ps(*x.scales.get_unchecked((r0 + r) * nb + b));
                    let v = _mm256_cvtepi32_ps(dot[r][h]);
                    acc[h] = _mm256_fmadd_ps(v, _mm256_mul_ps(d, dx), acc[h]);
                }
            }
        }
        store::<MR>(w, g, r0, &acc, out);
    }
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store<const MR: usize>(
    w: &PackedWeight,
    g: usize,
    r0: usize,
    acc: &[[__m256; 2]; MR],
    out: *mut f32,
) {
    // SAFETY: the caller upholds this function's contract (see its doc).
    unsafe {
        let width = w.group_width(g);
        for (r, halves) in acc.iter().enumerate() {
            let dst = out.add((r0 + r) * w.n() + g * GROUP);
            if width == GROUP {
                _mm256_storeu_ps(dst, halves[0]);
                _mm256_storeu_ps(dst.add(8), halves[1]);
            } else {
                let mut all = [0f32; GROUP];
                _mm256_storeu_ps(all.as_mut_ptr(), halves[0]);
                _mm256_storeu_ps(all.as_mut_ptr().add(8), halves[1]);
                std::ptr::copy_nonoverlapping(all.as_ptr(), dst, width);
            }
        }
    }
}
