//! The AVX-512 tier of the small-group kernels (`cpu_simd.rs`): sixteen lanes, f16 weights
//! widened with `vcvtph2ps`.

use std::arch::x86_64::*;

crate::cpu_simd::simd_tier! {
    /// Sixteen-lane kernels (AVX-512F).
    Avx512, features: "avx512f", __m512, lanes: 16,
    zero: _mm512_setzero_ps, splat: _mm512_set1_ps, load: _mm512_loadu_ps,
    store: _mm512_storeu_ps, fma: _mm512_fmadd_ps, add: _mm512_add_ps,
    sum: _mm512_reduce_add_ps,
    load_f16: |p| _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
    cpu_has: std::arch::is_x86_feature_detected!("avx512f")
}
