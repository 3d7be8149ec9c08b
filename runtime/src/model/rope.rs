//! Rotary position embedding in the Hugging Face (rotate-half) convention: within each
//! head, element i pairs with element i + head_dim/2. GGUF q/k rows were un-permuted at
//! load (`weights::rope_layout`), so one convention serves every source.
//!
//! The frequencies follow transformers' `modeling_rope_utils.py` operation for operation
//! (f32 where it computes on tensors, f64 where it computes on Python floats), so the
//! angles agree to the last bits with the reference.

use crate::config::{RopeConfig, RopeScaling};

pub struct Rope {
    inv_freq: Vec<f32>,
    /// Scales cos and sin (yarn's attention factor; 1 otherwise).
    attention_factor: f32,
    head_dim: usize,
}

impl Rope {
    pub fn new(head_dim: usize, config: &RopeConfig) -> Self {
        let plain = plain_inv_freq(head_dim, config.theta);
        let (inv_freq, attention_factor) = match &config.scaling {
            RopeScaling::None => (plain, 1.0),
            RopeScaling::Linear { factor } => (plain.iter().map(|f| f / factor).collect(), 1.0),
            RopeScaling::FreqFactors(factors) => {
                (plain.iter().zip(factors).map(|(f, d)| f / d).collect(), 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => (
                llama3(
                    &plain,
                    *factor,
                    *low_freq_factor,
                    *high_freq_factor,
                    *original_max_position as f32,
                ),
                1.0,
            ),
            RopeScaling::Yarn {
                factor,
                original_max_position,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => (
                yarn(
                    head_dim,
                    config.theta,
                    *factor,
                    *original_max_position,
                    (*beta_fast, *beta_slow),
                    *truncate,
                ),
                *attention_factor as f32,
            ),
        };
        Self {
            inv_freq,
            attention_factor,
            head_dim,
        }
    }

    /// `(cos, sin)` tables `[positions.len(), head_dim/2]` for the given positions.
    pub fn tables(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos() * self.attention_factor);
                sin.push(angle.sin() * self.attention_factor);
            }
        }
        (cos, sin)
    }

    /// Rotates every head of every row in place. `x` is `[rows, heads * head_dim]`.
    pub fn apply(&self, x: &mut [f32], heads: usize, cos: &[f32], sin: &[f32]) {
        let half = self.head_dim / 2;
        let width = heads * self.head_dim;
        for (row, xr) in x.chunks_exact_mut(width).enumerate() {
            let (c, s) = (
                &cos[row * half..(row + 1) * half],
                &sin[row * half..(row + 1) * half],
            );
            for head in xr.chunks_exact_mut(self.head_dim) {
                let (x1, x2) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (x1[i], x2[i]);
                    x1[i] = a * c[i] - b * s[i];
                    x2[i] = b * c[i] + a * s[i];
                }
            }
        }
    }
}

/// `base^(-2i/d)` in f32, as transformers' default rope.
fn plain_inv_freq(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// `_compute_llama3_parameters`.
fn llama3(plain: &[f32], factor: f32, low: f32, high: f32, old_context: f32) -> Vec<f32> {
    let low_freq_wavelen = old_context / low;
    let high_freq_wavelen = old_context / high;
    plain
        .iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f32::consts::PI / f;
            let scaled = if wavelen > low_freq_wavelen {
                f / factor
            } else {
                f
            };
            let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
            if medium {
                let smooth = (old_context / wavelen - low) / (high - low);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            } else {
                scaled
            }
        })
        .collect()
}

/// `_compute_yarn_parameters` (the frequencies; the attention factor was resolved when the
/// config was read).
fn yarn(
    head_dim: usize,
    theta: f32,
    factor: f64,
    original_max_position: usize,
    (beta_fast, beta_slow): (f64, f64),
    truncate: bool,
) -> Vec<f32> {
    let dim = head_dim as f64;
    let base = theta as f64;
    let correction_dim = |rotations: f64| {
        dim * (original_max_position as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if truncate {
        low = low.floor();
        high = high.ceil();
    }
    let (low, mut high) = (low.max(0.0) as f32, high.min(dim - 1.0) as f32);
    if low == high {
        high += 0.001;
    }
    (0..head_dim / 2)
        .map(|i| {
            let pos_freq = theta.powf((2 * i) as f32 / head_dim as f32);
            let extrapolation = 1.0 / pos_freq;
            let interpolation = 1.0 / (factor as f32 * pos_freq);
            let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_rotation_preserves_norm() {
        let rope = Rope::new(8, &RopeConfig::plain(10_000.0));
        let x0: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        let (c, s) = rope.tables(&[0]);
        let mut x = x0[..8].to_vec();
        rope.apply(&mut x, 1, &c, &s);
        assert_eq!(x, x0[..8].to_vec());
        let (c, s) = rope.tables(&[5, 17]);
        let mut x = x0.clone();
        rope.apply(&mut x, 1, &c, &s);
        for (a, b) in x.chunks(8).zip(x0.chunks(8)) {
            let na: f32 = a.iter().map(|v| v * v).sum();
            let nb: f32 = b.iter().map(|v| v * v).sum();
            assert!((na - nb).abs() < 1e-5);
        }
        assert_ne!(x, x0);
    }

    /// Llama 3.1's published setting (factor 8, low 1, high 4, 8192) over head_dim 128 and
    /// theta 500000: the first frequencies (short wavelengths) are kept, the last divided by
    /// 8, and those between blended.
    #[test]
    fn llama3_keeps_high_and_divides_low_frequencies() {
        let plain = plain_inv_freq(128, 500_000.0);
        let scaled = llama3(&plain, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(scaled[0], plain[0]);
        assert_eq!(scaled[63], plain[63] / 8.0);
        let blended = (0..64)
            .filter(|&i| scaled[i] != plain[i] && scaled[i] != plain[i] / 8.0)
            .count();
        assert!(blended > 0, "no frequency in the smooth band");
    }
}
