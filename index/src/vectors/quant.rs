//! `Codes`: an 8-bit copy of the flat graph's vectors that the graph walk scores with, a
//! quarter of the memory traffic of f32 rows (the walk reads ~1,000 random rows per search,
//! so it is bound by memory, not arithmetic). Final results are re-scored exactly in f32.
//!
//! Shape contract: `codes` is `points x dim` i8, row = point id; row `p` approximates
//! vector `p` as `codes[p] * scales[p]` (symmetric, per-row scale = max |component| / 127).

/// Quantized rows and their scales.
#[derive(Debug, Default)]
pub(crate) struct Codes {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// One vector quantized the same way as the rows, to score against them.
pub(crate) fn encode(v: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    out.clear();
    out.extend(
        v.iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8),
    );
    scale
}

impl Codes {
    pub(crate) fn new(dim: usize, vectors: &[f32]) -> Self {
        let mut codes = Self {
            dim,
            codes: Vec::with_capacity(vectors.len()),
            scales: Vec::with_capacity(vectors.len().checked_div(dim).unwrap_or(0)),
        };
        if dim > 0 {
            vectors.chunks_exact(dim).for_each(|v| codes.push(v));
        }
        codes
    }

    pub(crate) fn push(&mut self, v: &[f32]) {
        let mut row = Vec::with_capacity(self.dim);
        let scale = encode(v, &mut row);
        self.codes.extend_from_slice(&row);
        self.scales.push(scale);
    }

    pub(crate) fn row(&self, p: u32) -> &[i8] {
        let start = p as usize * self.dim;
        &self.codes[start..start + self.dim]
    }

    /// Approximate similarity of an encoded query (`codes`, `scale`) to row `p`.
    #[inline]
    pub(crate) fn sim(&self, query: &[i8], scale: f32, p: u32) -> f32 {
        idot(query, self.row(p)) as f32 * scale * self.scales[p as usize]
    }
}

/// i8 dot product in i32 (no overflow below ~130,000 dims); the compiler vectorizes it
/// (widening multiply-adds).
#[inline]
fn idot(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximates_the_dot_product_of_unit_vectors() {
        let vs = crate::vectors::tests::random_units(50, 384, 5);
        let codes = Codes::new(384, &vs.concat());
        let mut q = Vec::new();
        let scale = encode(&vs[7], &mut q);
        for (p, v) in vs.iter().enumerate() {
            let exact = crate::embed::dot(&vs[7], v);
            let approx = codes.sim(&q, scale, p as u32);
            assert!((exact - approx).abs() < 2e-3, "{p}: {exact} vs {approx}");
        }
        let mut z = Vec::new();
        assert_eq!(encode(&[0.0; 4], &mut z), 1.0);
        assert_eq!(z, [0; 4]);
    }
}
