//! The AVX-512 tier of the small-group kernels (`cpu_simd.rs`): sixteen lanes, f16 weights
//! widened with `vcvtph2ps`.

use std::arch::x86_64::*;

use crate::cpu_simd::{self, Simd, Weight};

pub(crate) struct Avx512;

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the trait's contract (avx512f).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: as above.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: as above; `p` addresses sixteen floats.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: as above.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as above.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sum(v: __m512) -> f32 {
        // SAFETY: as above.
        unsafe { _mm512_reduce_add_ps(v) }
    }
}

impl Weight<Avx512> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl Weight<Avx512> for half::f16 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        // SAFETY: the caller's contract; sixteen f16 are 256 bits.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

/// Whether this CPU has the tier's features.
pub(crate) fn cpu_has() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Whether the kernels can run on these widths (whole registers).
pub(crate) fn fits(d_in: usize, d_out: usize) -> bool {
    d_in.is_multiple_of(Avx512::LANES) && d_out.is_multiple_of(Avx512::LANES)
}

/// [`cpu_simd::group`] compiled for AVX-512.
///
/// # Safety
/// [`cpu_has`] and [`fits`] hold; `a` is `[rank, d_in]`, `b_t` `[rank, d_out]`; `rows` are
/// distinct rows of `x` and `y`, one factor each.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn group<W: Weight<Avx512>>(
    a: &[W],
    b_t: &[W],
    d_in: usize,
    d_out: usize,
    rank: usize,
    x: &[f32],
    y: &mut [f32],
    rows: &[u32],
    factors: &[f32],
    t: &mut Vec<f32>,
) {
    // SAFETY: the caller's contract.
    unsafe { cpu_simd::group::<Avx512, W>(a, b_t, d_in, d_out, rank, x, y, rows, factors, t) }
}
