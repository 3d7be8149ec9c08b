//! AVX-512 kernels for the CPU path's small groups (decode rows spread over many adapters).
//!
//! Each row's adapter weights are read once per step, so these loops are bound by reading A
//! and Bᵀ: they load sixteen weights per instruction (widening f16 in the register when the
//! slot keeps its half-size copy, see `SlotStack`), shrink four rank components at once so
//! four independent FMA chains hide the latency, and expand with two accumulators; up to four
//! rows of a group share each weight load (the sums are the same whatever the tile size).

use std::arch::x86_64::*;

/// Sixteen weights as f32, from f32 or f16 storage.
pub(crate) trait Weight: Copy {
    /// # Safety
    /// `p` points to sixteen readable values; the CPU has avx512f.
    unsafe fn load16(p: *const Self) -> __m512;
}

impl Weight for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl Weight for half::f16 {
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        // SAFETY: the caller's contract; f16 is 16 bits, so sixteen of them are 256 bits.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

/// Whether the kernels can run: the CPU has AVX-512F and the widths are whole registers.
pub(crate) fn usable(d_in: usize, d_out: usize) -> bool {
    d_in.is_multiple_of(16)
        && d_out.is_multiple_of(16)
        && std::arch::is_x86_feature_detected!("avx512f")
}

/// Rows handled per pass over a slot's A and Bᵀ: each weight load feeds this many rows.
pub(crate) const ROW_TILE: usize = 4;

/// For each of the `R` rows `r` (row index `rows[r]` of `x`, `[·, d_in]`):
/// `t[r·rank + j] = f[r] · (A_j · x_row)` for `j < rank`; `a` is `[rank, d_in]`.
///
/// Every (row, j) accumulator sees the same FMAs in the same order as with `R = 1`, so the
/// tile size does not change the sums.
///
/// # Safety
/// The CPU has avx512f; `d_in` is a multiple of 16; `a` holds `rank · d_in` values, `x` every
/// row in `rows`, `t` `R · rank` values.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn shrink_tile<W: Weight, const R: usize>(
    a: *const W,
    d_in: usize,
    rank: usize,
    x: *const f32,
    rows: [usize; R],
    f: [f32; R],
    t: *mut f32,
) {
    // SAFETY: loads stay inside `a` ([rank, d_in]) and the rows of `x`; stores inside `t`.
    unsafe {
        let mut j = 0;
        while j < rank {
            let width = (rank - j).min(4);
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for c in (0..d_in).step_by(16) {
                let mut w = [_mm512_setzero_ps(); 4];
                for (k, w) in w.iter_mut().enumerate().take(width) {
                    *w = W::load16(a.add((j + k) * d_in + c));
                }
                for r in 0..R {
                    let xv = _mm512_loadu_ps(x.add(rows[r] * d_in + c));
                    for k in 0..width {
                        acc[r][k] = _mm512_fmadd_ps(w[k], xv, acc[r][k]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (k, acc) in acc.iter().enumerate().take(width) {
                    *t.add(r * rank + j + k) = _mm512_reduce_add_ps(*acc) * f[r];
                }
            }
            j += width;
        }
    }
}

/// For each of the `R` rows: `y[rows[r]] += Σ_j t[r·rank + j] · Bᵀ_j`; `b_t` is
/// `[rank, d_out]`. Per row, the same FMAs in the same order as with `R = 1`.
///
/// # Safety
/// The CPU has avx512f; `d_out` is a multiple of 16; `b_t` holds `rank · d_out` values, `t`
/// `R · rank`, `y` every row in `rows` (distinct rows).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn expand_tile<W: Weight, const R: usize>(
    b_t: *const W,
    d_out: usize,
    rank: usize,
    t: *const f32,
    y: *mut f32,
    rows: [usize; R],
) {
    // SAFETY: loads stay inside `b_t` ([rank, d_out]) and `t`; each row of `y` is read and
    // written at `[rows[r] · d_out + o, +16)`, o + 16 <= d_out.
    unsafe {
        for o in (0..d_out).step_by(16) {
            let mut even = [_mm512_setzero_ps(); R];
            let mut odd = [_mm512_setzero_ps(); R];
            let mut j = 0;
            while j + 2 <= rank {
                let b0 = W::load16(b_t.add(j * d_out + o));
                let b1 = W::load16(b_t.add((j + 1) * d_out + o));
                for r in 0..R {
                    even[r] = _mm512_fmadd_ps(_mm512_set1_ps(*t.add(r * rank + j)), b0, even[r]);
                    odd[r] = _mm512_fmadd_ps(_mm512_set1_ps(*t.add(r * rank + j + 1)), b1, odd[r]);
                }
                j += 2;
            }
            if j < rank {
                let b0 = W::load16(b_t.add(j * d_out + o));
                for (r, even) in even.iter_mut().enumerate() {
                    *even = _mm512_fmadd_ps(_mm512_set1_ps(*t.add(r * rank + j)), b0, *even);
                }
            }
            for (r, (even, odd)) in even.iter().zip(&odd).enumerate() {
                let at = y.add(rows[r] * d_out + o);
                let sum = _mm512_add_ps(*even, *odd);
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), sum));
            }
        }
    }
}
