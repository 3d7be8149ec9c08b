//! Rotary position embedding in the Hugging Face (rotate-half) convention: within each
//! head, element i pairs with element i + head_dim/2. GGUF q/k rows were un-permuted at
//! load (`weights::rope_layout`), so one convention serves every source.

pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32) -> Self {
        // Same formula and precision as transformers: base^(-2i/d) in f32.
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Self { inv_freq, head_dim }
    }

    /// `(cos, sin)` tables `[positions.len(), head_dim/2]` for the given positions.
    pub fn tables(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_rotation_preserves_norm() {
        let rope = Rope::new(8, 10_000.0);
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
}
