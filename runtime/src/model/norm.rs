//! RMSNorm over rows: `y = x / sqrt(mean(x²) + eps) · w`, accumulated in f32 as transformers does.

pub fn rms_norm(x: &[f32], weight: &[f32], eps: f64) -> Vec<f32> {
    let d = weight.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps as f32).sqrt();
        out.extend(row.iter().zip(weight).map(|(v, w)| w * (v * inv)));
    }
    out
}

/// `silu(gate) · up`, element-wise, in place into `gate`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    gate.iter_mut()
        .zip(up)
        .for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u);
}
