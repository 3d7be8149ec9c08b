//! Sentence embedders: text in, one L2-normalized `[dim]` vector out per text.
//!
//! The index and the registry only see the [`Embedder`] trait, so another model (or a
//! remote service) can replace the default BERT one. Vectors from different embedders are
//! never mixed: each stored vector carries its embedder's [`Embedder::id`].

mod bert;
mod encoder;

pub use bert::{BertEmbedder, BertEmbedderConfig, EmbedderBackend};
pub use encoder::MatmulKind;

use crate::Result;

pub trait Embedder: Send + Sync {
    /// Identity of the model and its settings (name, dimension, pooling). Vectors stored
    /// under another id are recomputed instead of reused.
    fn id(&self) -> &str;
    /// Length of every returned vector.
    fn dim(&self) -> usize;
    /// One unit-length vector per text, in the order of `texts`.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        let mut v = self.embed(&[text])?;
        v.pop().ok_or_else(|| crate::IndexError::Embed {
            reason: "the embedder returned no vector".into(),
        })
    }
}

/// Scales `v` to unit length; the zero vector stays zero (it then matches nothing).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Dot product of two equal-length slices; equals cosine for unit vectors. The HNSW
/// search spends nearly all its time here.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only
            // requirement of calling a `#[target_feature(enable = "avx2,fma")]` function.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_lanes(a, b)
}

/// The portable body: 16 independent accumulators, so the compiler can vectorize it with
/// whatever vector width it is allowed (a plain iterator `sum` is one sequential chain).
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The same body compiled for AVX2 (the default x86_64 target only has SSE2): twice the
/// vector width.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..389).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..389).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - naive).abs() < 1e-3);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = vec![0.0; 3];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }
}
