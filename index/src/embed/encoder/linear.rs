//! `Linear`: `y = x Wᵀ + b` on the fastest path this CPU has for the layer's shape.

use rayon::prelude::*;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
use super::amx::{self, PackedBf16};
use super::math;

/// How the encoder's matmuls run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulKind {
    /// f32 weights and activations, the `gemm` crate (exact to f32 rounding).
    F32,
    /// bf16 weights and activations on AMX tiles, f32 accumulation (x86_64 Linux with
    /// AMX-BF16 only).
    AmxBf16,
}

impl MatmulKind {
    /// AMX when this CPU and kernel offer it, else f32. `LORAMUX_EMBED_MATMUL=f32` forces
    /// the f32 path (for comparisons).
    pub fn best() -> Self {
        if std::env::var("LORAMUX_EMBED_MATMUL").is_ok_and(|v| v == "f32") {
            return Self::F32;
        }
        if Self::AmxBf16.usable() {
            Self::AmxBf16
        } else {
            Self::F32
        }
    }

    pub fn usable(self) -> bool {
        match self {
            Self::F32 => true,
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Self::AmxBf16 => amx::available(),
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            Self::AmxBf16 => false,
        }
    }
}

/// What is applied to `x Wᵀ + b` before it is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    None,
    /// BERT's exact GELU.
    Gelu,
}

impl Activation {
    pub(crate) fn apply(self, values: &mut [f32]) {
        match self {
            Self::None => {}
            Self::Gelu => math::gelu(values),
        }
    }
}

enum Weight {
    /// `[n, k]` row-major, as stored.
    F32(Vec<f32>),
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    Amx(PackedBf16),
}

pub(crate) struct Linear {
    n: usize,
    k: usize,
    weight: Weight,
    bias: Vec<f32>,
}

/// Below this many multiply-adds a matmul runs on the calling thread (a rayon split costs
/// more than it saves).
const PARALLEL_MACS: usize = 1 << 18;

impl Linear {
    /// `weight` is `[n, k]` (PyTorch's layout), `bias` is `[n]`. A layer whose shape has no
    /// whole AMX tiles stays in f32 whatever `kind` asks.
    pub(crate) fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        n: usize,
        k: usize,
        kind: MatmulKind,
    ) -> Self {
        assert_eq!(weight.len(), n * k);
        assert_eq!(bias.len(), n);
        let weight = match kind {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            MatmulKind::AmxBf16 if kind.usable() => match PackedBf16::pack(&weight, n, k) {
                Some(packed) => Weight::Amx(packed),
                None => Weight::F32(weight),
            },
            _ => Weight::F32(weight),
        };
        Self { n, k, weight, bias }
    }

    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// `x` is `[m, k]`; returns `activation(x Wᵀ + b)`, `[m, n]`.
    pub(crate) fn forward(&self, x: &[f32], m: usize, activation: Activation) -> Vec<f32> {
        debug_assert_eq!(x.len(), m * self.k);
        let mut y = vec![0f32; m * self.n];
        match &self.weight {
            Weight::F32(w) => {
                self.forward_f32(w, x, m, &mut y);
                if m * self.n >= PARALLEL_MACS / 16 {
                    y.par_chunks_mut(self.n)
                        .for_each(|row| activation.apply(row));
                } else {
                    activation.apply(&mut y);
                }
            }
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Weight::Amx(packed) => {
                debug_assert_eq!(packed.n(), self.n);
                packed.matmul(x, m, &self.bias, activation, &mut y)
            }
        }
        y
    }

    fn forward_f32(&self, w: &[f32], x: &[f32], m: usize, y: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(&self.bias);
        }
        let parallelism = if m * n * k >= PARALLEL_MACS {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: dst is [m, n] row-major (column stride 1, row stride n); lhs is x [m, k]
        // row-major; rhs(kk, j) = w[j * k + kk] (Wᵀ read in place). All three slices hold
        // exactly those elements (asserted at construction and above), and dst does not
        // alias the inputs.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                y.as_mut_ptr(),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn f32_path_matches_f64_with_bias() {
        let mut rng = StdRng::seed_from_u64(5);
        for &(m, n, k) in &[(1, 7, 5), (19, 48, 40), (100, 384, 384)] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let lin = Linear::new(w.clone(), b.clone(), n, k, MatmulKind::F32);
            let y = lin.forward(&x, m, Activation::None);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = b[j] as f64
                        + (0..k)
                            .map(|l| x[i * k + l] as f64 * w[j * k + l] as f64)
                            .sum::<f64>();
                    assert!((y[i * n + j] as f64 - want).abs() < 1e-4, "({i},{j})");
                }
            }
        }
    }

    #[test]
    fn amx_request_on_an_odd_shape_stays_f32_and_exact() {
        let (m, n, k) = (3, 20, 12);
        let mut rng = StdRng::seed_from_u64(6);
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b = vec![0.25; n];
        let f32_out = Linear::new(w.clone(), b.clone(), n, k, MatmulKind::F32).forward(
            &x,
            m,
            Activation::None,
        );
        let amx_out = Linear::new(w, b, n, k, MatmulKind::AmxBf16).forward(&x, m, Activation::None);
        assert_eq!(f32_out, amx_out);
    }

    #[test]
    fn gelu_epilogue_equals_gelu_after_the_matmul() {
        let (m, n, k) = (37, 64, 96);
        let mut rng = StdRng::seed_from_u64(8);
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        for kind in [MatmulKind::F32, MatmulKind::AmxBf16] {
            let lin = Linear::new(w.clone(), b.clone(), n, k, kind);
            let mut want = lin.forward(&x, m, Activation::None);
            math::gelu(&mut want);
            let got = lin.forward(&x, m, Activation::Gelu);
            assert_eq!(got, want, "{kind:?}");
            assert!(got.iter().any(|v| *v < 0.0) && got.iter().any(|v| *v > 0.5));
        }
    }
}
