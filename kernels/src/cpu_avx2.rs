//! AVX2 + FMA kernels for the CPU path's small groups: the AVX-512 ones (`cpu_avx512.rs`) at
//! half the width, for CPUs without AVX-512. Eight weights per load (f16 widened with F16C),
//! four rank components shrunk at once, two expand accumulators, up to four rows of a group
//! sharing each weight load; per row the same FMAs in the same order whatever the tile size.

use std::arch::x86_64::*;

/// Eight weights as f32, from f32 or f16 storage.
pub(crate) trait Weight: Copy {
    /// # Safety
    /// `p` points to eight readable values; the CPU has avx2, fma and f16c.
    unsafe fn load8(p: *const Self) -> __m256;
}

impl Weight for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Weight for half::f16 {
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: the caller's contract; eight f16 are 128 bits.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
}

/// Whether the kernels can run: the CPU has AVX2, FMA and F16C and the widths are whole
/// registers.
pub(crate) fn usable(d_in: usize, d_out: usize) -> bool {
    d_in.is_multiple_of(8) && d_out.is_multiple_of(8) && cpu_has()
}

pub(crate) fn cpu_has() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// The sum of a register's eight lanes, pairwise: ((0+4)+(2+6)) + ((1+5)+(3+7)).
#[inline(always)]
unsafe fn reduce(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics; the caller runs with avx2.
    unsafe {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair)))
    }
}

/// For each of the `R` rows `r` (row index `rows[r]` of `x`, `[·, d_in]`):
/// `t[r·rank + j] = f[r] · (A_j · x_row)` for `j < rank`; `a` is `[rank, d_in]`.
///
/// # Safety
/// The CPU has avx2, fma and f16c; `d_in` is a multiple of 8; `a` holds `rank · d_in`
/// values, `x` every row in `rows`, `t` `R · rank` values.
#[target_feature(enable = "avx2,fma,f16c")]
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
            let mut acc = [[_mm256_setzero_ps(); 4]; R];
            for c in (0..d_in).step_by(8) {
                let mut w = [_mm256_setzero_ps(); 4];
                for (k, w) in w.iter_mut().enumerate().take(width) {
                    *w = W::load8(a.add((j + k) * d_in + c));
                }
                for r in 0..R {
                    let xv = _mm256_loadu_ps(x.add(rows[r] * d_in + c));
                    for k in 0..width {
                        acc[r][k] = _mm256_fmadd_ps(w[k], xv, acc[r][k]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (k, acc) in acc.iter().enumerate().take(width) {
                    *t.add(r * rank + j + k) = reduce(*acc) * f[r];
                }
            }
            j += width;
        }
    }
}

/// For each of the `R` rows: `y[rows[r]] += Σ_j t[r·rank + j] · Bᵀ_j`; `b_t` is
/// `[rank, d_out]`.
///
/// # Safety
/// The CPU has avx2, fma and f16c; `d_out` is a multiple of 8; `b_t` holds `rank · d_out`
/// values, `t` `R · rank`, `y` every row in `rows` (distinct rows).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn expand_tile<W: Weight, const R: usize>(
    b_t: *const W,
    d_out: usize,
    rank: usize,
    t: *const f32,
    y: *mut f32,
    rows: [usize; R],
) {
    // SAFETY: loads stay inside `b_t` ([rank, d_out]) and `t`; each row of `y` is read and
    // written at `[rows[r] · d_out + o, +8)`, o + 8 <= d_out.
    unsafe {
        for o in (0..d_out).step_by(8) {
            let mut even = [_mm256_setzero_ps(); R];
            let mut odd = [_mm256_setzero_ps(); R];
            let mut j = 0;
            while j + 2 <= rank {
                let b0 = W::load8(b_t.add(j * d_out + o));
                let b1 = W::load8(b_t.add((j + 1) * d_out + o));
                for r in 0..R {
                    even[r] = _mm256_fmadd_ps(_mm256_set1_ps(*t.add(r * rank + j)), b0, even[r]);
                    odd[r] = _mm256_fmadd_ps(_mm256_set1_ps(*t.add(r * rank + j + 1)), b1, odd[r]);
                }
                j += 2;
            }
            if j < rank {
                let b0 = W::load8(b_t.add(j * d_out + o));
                for (r, even) in even.iter_mut().enumerate() {
                    *even = _mm256_fmadd_ps(_mm256_set1_ps(*t.add(r * rank + j)), b0, *even);
                }
            }
            for (r, (even, odd)) in even.iter().zip(&odd).enumerate() {
                let at = y.add(rows[r] * d_out + o);
                let sum = _mm256_add_ps(*even, *odd);
                _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), sum));
            }
        }
    }
}
