//! The AVX2 + FMA tier of the small-group kernels (`cpu_simd.rs`), for CPUs without
//! AVX-512: eight lanes, f16 weights widened with F16C.

use std::arch::x86_64::*;

crate::cpu_simd::simd_tier! {
    /// Eight-lane kernels (AVX2 + FMA + F16C).
    Avx2, features: "avx2,fma,f16c", __m256, lanes: 8,
    zero: _mm256_setzero_ps, splat: _mm256_set1_ps, load: _mm256_loadu_ps,
    store: _mm256_storeu_ps, fma: _mm256_fmadd_ps, add: _mm256_add_ps,
    sum: sum8,
    load_f16: |p| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
    cpu_has: std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// The sum of a register's eight lanes, pairwise: ((0+4)+(2+6)) + ((1+5)+(3+7)).
///
/// # Safety
/// The CPU has avx2.
#[inline(always)]
unsafe fn sum8(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics; the caller's contract.
    unsafe {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair)))
    }
}
