//! The AVX2 + FMA tier of the small-group kernels (`cpu_simd.rs`), for CPUs without
//! AVX-512: eight lanes, f16 weights widened with F16C.

use std::arch::x86_64::*;

use crate::cpu_simd::{self, Simd, Weight};

pub(crate) struct Avx2;

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: the trait's contract (avx2, fma, f16c).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: as above.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: as above; `p` addresses eight floats.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: as above.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as above.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        // SAFETY: as above.
        unsafe {
            // Pairwise: ((0+4)+(2+6)) + ((1+5)+(3+7)).
            let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair)))
        }
    }
}

impl Weight<Avx2> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Weight<Avx2> for half::f16 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m256 {
        // SAFETY: the caller's contract; eight f16 are 128 bits.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
}

/// Whether this CPU has the tier's features.
pub(crate) fn cpu_has() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// Whether the kernels can run on these widths (whole registers).
pub(crate) fn fits(d_in: usize, d_out: usize) -> bool {
    d_in.is_multiple_of(Avx2::LANES) && d_out.is_multiple_of(Avx2::LANES)
}

/// [`cpu_simd::group`] compiled for AVX2 + FMA.
///
/// # Safety
/// [`cpu_has`] and [`fits`] hold; `a` is `[rank, d_in]`, `b_t` `[rank, d_out]`; `rows` are
/// distinct rows of `x` and `y`, one factor each.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn group<W: Weight<Avx2>>(
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
    unsafe { cpu_simd::group::<Avx2, W>(a, b_t, d_in, d_out, rank, x, y, rows, factors, t) }
}
