//! AVX-512 kernels for the CPU path's small groups (decode rows spread over many adapters).
//!
//! Each row's adapter weights are read once per step, so these loops are bound by reading A
//! and Bᵀ: they load sixteen weights per instruction (widening f16 in the register when the
//! slot keeps its half-size copy, see `SlotStack`), shrink four rank components at once so
//! four independent FMA chains hide the latency, and expand with two accumulators.

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

/// `t[j] = f · (A_j · x)` for `j < rank`; `a` is `[rank, d_in]`, `x` is `[d_in]`.
///
/// # Safety
/// The CPU has avx512f; `d_in` is a multiple of 16; `a` holds `rank · d_in` values.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn shrink_row<W: Weight>(a: &[W], x: &[f32], rank: usize, f: f32, t: &mut [f32]) {
    let d_in = x.len();
    debug_assert!(a.len() >= rank * d_in && t.len() >= rank);
    let (a, xp) = (a.as_ptr(), x.as_ptr());
    let mut j = 0;
    // SAFETY: every load below reads inside `a` ([rank, d_in]) or `x` ([d_in]): j + 3 < rank,
    // c + 16 <= d_in.
    unsafe {
        while j + 4 <= rank {
            let mut acc = [_mm512_setzero_ps(); 4];
            for c in (0..d_in).step_by(16) {
                let xv = _mm512_loadu_ps(xp.add(c));
                for (k, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(W::load16(a.add((j + k) * d_in + c)), xv, *acc);
                }
            }
            for (k, acc) in acc.iter().enumerate() {
                t[j + k] = _mm512_reduce_add_ps(*acc) * f;
            }
            j += 4;
        }
        while j < rank {
            let mut acc = _mm512_setzero_ps();
            for c in (0..d_in).step_by(16) {
                let xv = _mm512_loadu_ps(xp.add(c));
                acc = _mm512_fmadd_ps(W::load16(a.add(j * d_in + c)), xv, acc);
            }
            t[j] = _mm512_reduce_add_ps(acc) * f;
            j += 1;
        }
    }
}

/// `y += Σ_j t[j] · Bᵀ_j`; `b_t` is `[rank, d_out]`, `y` is `[d_out]`.
///
/// # Safety
/// The CPU has avx512f; `y.len()` is a multiple of 16; `b_t` holds `t.len() · y.len()` values.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn expand_row<W: Weight>(b_t: &[W], t: &[f32], y: &mut [f32]) {
    let d_out = y.len();
    let rank = t.len();
    debug_assert!(b_t.len() >= rank * d_out);
    let (b, yp) = (b_t.as_ptr(), y.as_mut_ptr());
    // SAFETY: loads read inside `b_t` ([rank, d_out]) and `y` ([d_out]): o + 16 <= d_out.
    unsafe {
        for o in (0..d_out).step_by(16) {
            let (mut even, mut odd) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut j = 0;
            while j + 2 <= rank {
                even = _mm512_fmadd_ps(_mm512_set1_ps(t[j]), W::load16(b.add(j * d_out + o)), even);
                odd = _mm512_fmadd_ps(
                    _mm512_set1_ps(t[j + 1]),
                    W::load16(b.add((j + 1) * d_out + o)),
                    odd,
                );
                j += 2;
            }
            if j < rank {
                even = _mm512_fmadd_ps(_mm512_set1_ps(t[j]), W::load16(b.add(j * d_out + o)), even);
            }
            let sum = _mm512_add_ps(even, odd);
            _mm512_storeu_ps(yp.add(o), _mm512_add_ps(_mm512_loadu_ps(yp.add(o)), sum));
        }
    }
}
