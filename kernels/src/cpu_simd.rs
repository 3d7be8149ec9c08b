//! The CPU path's small-group kernels (decode rows spread over many adapters), written once
//! over a SIMD width ([`Simd`]) and compiled per tier: AVX-512 (sixteen lanes) and AVX2 + FMA
//! (eight), each behind its own `#[target_feature]` entry points in `cpu_avx512.rs` /
//! `cpu_avx2.rs`.
//!
//! Each row's adapter weights are read once per step, so these loops are bound by reading A
//! and Bᵀ: they load a register of weights per instruction (widening f16 in the register when
//! the slot keeps its half-size copy, see `SlotStack`), shrink four rank components at once
//! so four independent FMA chains hide the latency, and expand with two accumulators; up to
//! four rows of a group share each weight load. Every (row, j) accumulator sees the same FMAs
//! in the same order whatever the tile size, so tiling never changes the sums.
//!
//! The generic bodies are `#[inline(always)]`: they are only ever inlined into a tier's
//! `#[target_feature]` function, where the intrinsics compile to that tier's instructions.

/// One SIMD width's f32 operations.
pub(crate) trait Simd {
    type V: Copy;
    const LANES: usize;
    /// # Safety (every method)
    /// The CPU has the tier's features; pointers address `LANES` readable (writable) floats.
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a · b + c`, fused.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sum(v: Self::V) -> f32;
}

/// A register of weights as f32, from f32 or f16 storage.
pub(crate) trait Weight<S: Simd>: Copy {
    /// # Safety
    /// As [`Simd`]: `p` addresses `S::LANES` readable values.
    unsafe fn load(p: *const Self) -> S::V;
}

/// Rows handled per pass over a slot's A and Bᵀ: each weight load feeds this many rows.
pub(crate) const ROW_TILE: usize = 4;

/// For each of the `R` rows `r` (row index `rows[r]` of `x`, `[·, d_in]`):
/// `t[r·rank + j] = f[r] · (A_j · x_row)` for `j < rank`; `a` is `[rank, d_in]`.
///
/// # Safety
/// The CPU has `S`'s features; `d_in` is a multiple of `S::LANES`; `a` holds `rank · d_in`
/// values, `x` every row in `rows`, `t` `R · rank` values.
#[inline(always)]
pub(crate) unsafe fn shrink_tile<S: Simd, W: Weight<S>, const R: usize>(
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
            let mut acc = [[S::zero(); 4]; R];
            for c in (0..d_in).step_by(S::LANES) {
                let mut w = [S::zero(); 4];
                for (k, w) in w.iter_mut().enumerate().take(width) {
                    *w = W::load(a.add((j + k) * d_in + c));
                }
                for r in 0..R {
                    let xv = S::load(x.add(rows[r] * d_in + c));
                    for k in 0..width {
                        acc[r][k] = S::fma(w[k], xv, acc[r][k]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (k, acc) in acc.iter().enumerate().take(width) {
                    *t.add(r * rank + j + k) = S::sum(*acc) * f[r];
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
/// The CPU has `S`'s features; `d_out` is a multiple of `S::LANES`; `b_t` holds
/// `rank · d_out` values, `t` `R · rank`, `y` every row in `rows` (distinct rows).
#[inline(always)]
pub(crate) unsafe fn expand_tile<S: Simd, W: Weight<S>, const R: usize>(
    b_t: *const W,
    d_out: usize,
    rank: usize,
    t: *const f32,
    y: *mut f32,
    rows: [usize; R],
) {
    // SAFETY: loads stay inside `b_t` ([rank, d_out]) and `t`; each row of `y` is read and
    // written at `[rows[r] · d_out + o, + LANES)`, o + LANES <= d_out.
    unsafe {
        for o in (0..d_out).step_by(S::LANES) {
            let mut even = [S::zero(); R];
            let mut odd = [S::zero(); R];
            let mut j = 0;
            while j + 2 <= rank {
                let b0 = W::load(b_t.add(j * d_out + o));
                let b1 = W::load(b_t.add((j + 1) * d_out + o));
                for r in 0..R {
                    even[r] = S::fma(S::splat(*t.add(r * rank + j)), b0, even[r]);
                    odd[r] = S::fma(S::splat(*t.add(r * rank + j + 1)), b1, odd[r]);
                }
                j += 2;
            }
            if j < rank {
                let b0 = W::load(b_t.add(j * d_out + o));
                for (r, even) in even.iter_mut().enumerate() {
                    *even = S::fma(S::splat(*t.add(r * rank + j)), b0, *even);
                }
            }
            for (r, (even, odd)) in even.iter().zip(&odd).enumerate() {
                let at = y.add(rows[r] * d_out + o);
                S::store(at, S::add(S::load(at), S::add(*even, *odd)));
            }
        }
    }
}

/// Shrink then expand for one tile of `R` rows of a group.
///
/// # Safety
/// As [`shrink_tile`] and [`expand_tile`]; `t` holds `R · rank` values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile<S: Simd, W: Weight<S>, const R: usize>(
    a: *const W,
    b_t: *const W,
    d_in: usize,
    d_out: usize,
    rank: usize,
    x: *const f32,
    y: *mut f32,
    t: *mut f32,
    rows: [usize; R],
    f: [f32; R],
) {
    // SAFETY: the caller's contract.
    unsafe {
        shrink_tile::<S, W, R>(a, d_in, rank, x, rows, f, t);
        expand_tile::<S, W, R>(b_t, d_out, rank, t, y, rows);
    }
}

/// One slot's rows of a small group, `ROW_TILE` rows per pass; `f[i]` is row i's weight
/// times the slot's scale.
///
/// # Safety
/// As [`tile`], for every row of `rows`; `t` is scratch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn group<S: Simd, W: Weight<S>>(
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
    t.resize(ROW_TILE * rank, 0.0);
    let (a, b_t, xp, yp, tp) = (
        a.as_ptr(),
        b_t.as_ptr(),
        x.as_ptr(),
        y.as_mut_ptr(),
        t.as_mut_ptr(),
    );
    for (tile_rows, f) in rows.chunks(ROW_TILE).zip(factors.chunks(ROW_TILE)) {
        let r = |i: usize| tile_rows[i] as usize;
        let f = |i: usize| f[i];
        macro_rules! tile_of {
            ($n:literal) => {
                tile::<S, W, $n>(
                    a,
                    b_t,
                    d_in,
                    d_out,
                    rank,
                    xp,
                    yp,
                    tp,
                    std::array::from_fn(r),
                    std::array::from_fn(f),
                )
            };
        }
        // SAFETY: the caller's contract; group rows are distinct rows of `x` and `y`.
        unsafe {
            match tile_rows.len() {
                4 => tile_of!(4),
                3 => tile_of!(3),
                2 => tile_of!(2),
                _ => tile_of!(1),
            }
        }
    }
}

/// One SIMD tier: a marker type with its [`Simd`] operations, f32 and f16 [`Weight`] loads,
/// `cpu_has()` and `fits(d_in, d_out)`, and `group`, [`group`] compiled with the tier's
/// target features.
macro_rules! simd_tier {
    (
        $(#[$doc:meta])*
        $tier:ident, features: $features:literal, $v:ty, lanes: $lanes:literal,
        zero: $zero:path, splat: $splat:path, load: $load:path, store: $store:path,
        fma: $fma:path, add: $add:path, sum: $sum:path,
        load_f16: |$p:ident| $load_f16:expr,
        cpu_has: $cpu_has:expr
    ) => {
        $(#[$doc])*
        pub(crate) struct $tier;

        impl $crate::cpu_simd::Simd for $tier {
            type V = $v;
            const LANES: usize = $lanes;
            // SAFETY (every method): the trait's contract — the CPU has the tier's features
            // and pointers address `LANES` floats.
            #[inline(always)]
            unsafe fn zero() -> $v {
                unsafe { $zero() }
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> $v {
                unsafe { $splat(x) }
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> $v {
                unsafe { $load(p) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: $v) {
                unsafe { $store(p, v) }
            }
            #[inline(always)]
            unsafe fn fma(a: $v, b: $v, c: $v) -> $v {
                unsafe { $fma(a, b, c) }
            }
            #[inline(always)]
            unsafe fn add(a: $v, b: $v) -> $v {
                unsafe { $add(a, b) }
            }
            #[inline(always)]
            unsafe fn sum(v: $v) -> f32 {
                unsafe { $sum(v) }
            }
        }

        impl $crate::cpu_simd::Weight<$tier> for f32 {
            #[inline(always)]
            unsafe fn load(p: *const Self) -> $v {
                // SAFETY: the caller's contract.
                unsafe { $load(p) }
            }
        }

        impl $crate::cpu_simd::Weight<$tier> for half::f16 {
            #[inline(always)]
            unsafe fn load($p: *const Self) -> $v {
                // SAFETY: the caller's contract: `LANES` f16 values are readable.
                unsafe { $load_f16 }
            }
        }

        /// Whether this CPU has the tier's features.
        pub(crate) fn cpu_has() -> bool {
            $cpu_has
        }

        /// Whether the kernels can run on these widths (whole registers).
        pub(crate) fn fits(d_in: usize, d_out: usize) -> bool {
            d_in.is_multiple_of($lanes) && d_out.is_multiple_of($lanes)
        }

        /// [`cpu_simd::group`](crate::cpu_simd::group) compiled for this tier.
        ///
        /// # Safety
        /// [`cpu_has`] and [`fits`] hold; `a` is `[rank, d_in]`, `b_t` `[rank, d_out]`;
        /// `rows` are distinct rows of `x` and `y`, one factor each.
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn group<W: $crate::cpu_simd::Weight<$tier>>(
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
            unsafe {
                $crate::cpu_simd::group::<$tier, W>(a, b_t, d_in, d_out, rank, x, y, rows, factors, t)
            }
        }
    };
}

pub(crate) use simd_tier;
