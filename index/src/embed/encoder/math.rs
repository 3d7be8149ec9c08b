//! The encoder's element-wise and row-wise math: exp, GELU (erf), softmax, layer norm.
//!
//! Every function is branch-free over its slice so the compiler vectorizes it: a 100-token
//! prompt runs about a million GELUs, and a libm `erf` per element would cost more than
//! all the matmuls of the AMX path together.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody-Waite) so `x - n ln2` stays exact for the reduced argument.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to an integer
/// (ties to even) with plain arithmetic, which vectorizes where `round()` may not.
const ROUNDER: f32 = 12_582_912.0;

/// e^x with a relative error of about 2e-7 on [-87, 88]; inputs outside are clamped (the
/// results there are below f32's normal range or overflow anyway).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // `shifted`'s low mantissa bits now hold n = round(x / ln 2) as an integer: read it
    // from the bits, because an `as i32` cast saturates and checks NaN, which keeps the
    // loop scalar.
    let shifted = x.mul_add(LOG2E, ROUNDER);
    let n = shifted - ROUNDER;
    let n_int = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    // Cephes expf's polynomial for e^r on |r| <= ln2 / 2.
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let e_r = (p * r).mul_add(r, r) + 1.0;
    // n is in [-126, 127] after the clamp, so 2^n is a normal f32 built from its exponent.
    let two_n = f32::from_bits(((n_int + 127) as u32) << 23);
    e_r * two_n
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = 1.061_405_4_f32;
    let poly = poly.mul_add(t, -1.453_152);
    let poly = poly.mul_add(t, 1.421_413_8);
    let poly = poly.mul_add(t, -0.284_496_74);
    let poly = poly.mul_add(t, 0.254_829_6) * t;
    let magnitude = 1.0 - poly * exp(-a * a);
    magnitude.copysign(x)
}

/// BERT's exact GELU, `x Φ(x) = x/2 (1 + erf(x/√2))`, in place.
pub(crate) fn gelu(xs: &mut [f32]) {
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Sum with 16 independent accumulators: a plain `sum()` is one sequential chain of adds,
/// which the compiler may not reorder into vector lanes.
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, x)| *l += x);
    }
    lanes.iter().sum::<f32>() + tail
}

/// Softmax of one row in place.
pub(crate) fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|x| *x = exp(*x - max));
    let inv = 1.0 / sum(row);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `row = LayerNorm(row + residual)` (no residual when `None`).
pub(crate) fn norm_row(
    row: &mut [f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let width = row.len() as f32;
    if let Some(residual) = residual {
        row.iter_mut().zip(residual).for_each(|(x, r)| *x += r);
    }
    let mean = sum(row) / width;
    row.iter_mut().for_each(|x| *x -= mean);
    let mut lanes = [0f32; 16];
    for chunk in row.chunks_exact(16) {
        lanes
            .iter_mut()
            .zip(chunk)
            .for_each(|(l, x)| *l = x.mul_add(*x, *l));
    }
    let tail: f32 = row.chunks_exact(16).remainder().iter().map(|x| x * x).sum();
    let var = (lanes.iter().sum::<f32>() + tail) / width;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *x = (*x * inv).mul_add(*g, *b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values spread over the range the encoder feeds these functions.
    fn spread(n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.618_034).fract() * 2.0 - 1.0) * scale)
            .collect()
    }

    #[test]
    fn exp_is_within_3e_7_relative_of_f64() {
        for x in spread(20_000, 80.0) {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                (got - want).abs() <= 3e-7 * want,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e4) >= 0.0 && exp(-1e4) < 1e-37);
    }

    #[test]
    fn gelu_matches_the_f64_erf_form() {
        // f64 reference from the series of erf (converges fast on this range).
        fn erf64(x: f64) -> f64 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        let xs = spread(5_000, 5.0);
        let mut got = xs.clone();
        gelu(&mut got);
        for (x, g) in xs.iter().zip(&got) {
            let x = *x as f64;
            let want = 0.5 * x * (1.0 + erf64(x / 2f64.sqrt()));
            assert!(
                (*g as f64 - want).abs() < 1e-6,
                "gelu({x}) = {g}, want {want}"
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut row = spread(37, 30.0);
        let before = row.clone();
        softmax(&mut row);
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        let max_in = before.iter().cloned().fold(f32::MIN, f32::max);
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
        };
        assert_eq!(before[argmax(&row)], max_in);
        let ref_sum: f64 = before.iter().map(|x| ((x - max_in) as f64).exp()).sum();
        for (x, p) in before.iter().zip(&row) {
            let want = ((x - max_in) as f64).exp() / ref_sum;
            assert!((*p as f64 - want).abs() < 1e-6);
        }
    }

    #[test]
    fn layer_norm_with_residual_matches_f64() {
        let width = 24;
        let mut rows = spread(3 * width, 4.0);
        let residual = spread(3 * width + 5, 2.0)[5..].to_vec();
        let gamma = spread(width + 11, 1.5)[11..].to_vec();
        let beta = spread(width + 3, 0.5)[3..].to_vec();
        let input: Vec<f64> = rows
            .iter()
            .zip(&residual)
            .map(|(a, b)| *a as f64 + *b as f64)
            .collect();
        for (row, res) in rows
            .chunks_exact_mut(width)
            .zip(residual.chunks_exact(width))
        {
            norm_row(row, Some(res), &gamma, &beta, 1e-12);
        }
        for (row_in, row_out) in input.chunks(width).zip(rows.chunks(width)) {
            let mean = row_in.iter().sum::<f64>() / width as f64;
            let var = row_in.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / width as f64;
            for (j, (x, y)) in row_in.iter().zip(row_out).enumerate() {
                let want = (x - mean) / (var + 1e-12).sqrt() * gamma[j] as f64 + beta[j] as f64;
                assert!((*y as f64 - want).abs() < 1e-5, "{y} vs {want}");
            }
        }
    }
}
