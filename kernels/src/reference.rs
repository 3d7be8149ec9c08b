//! Float64 reference twin of the LoRA mixture: a plain loop per row and per expert, no
//! grouping, no GEMM. It shares nothing with the fast path but the input types, so a
//! randomized comparison against it checks the grouping, the strides and the scatter.

use crate::{MixPlan, SlotStack};

/// Returns `y + Σ_k w_k · s_k · B_k (A_k x)` for every row, computed in f64.
pub fn lora_mix_f64(x: &[f32], y: &[f32], stack: &SlotStack, plan: &MixPlan) -> Vec<f64> {
    let (d_in, d_out, r_max) = (stack.d_in(), stack.d_out(), stack.r_max());
    let rows = x.len() / d_in;
    let mut out: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    for row in 0..rows {
        let xr = &x[row * d_in..(row + 1) * d_in];
        for e in plan.row(row) {
            let slot = e.slot as usize;
            let rank = stack.rank(slot);
            let (a, b) = (stack.a(slot), stack.b(slot));
            let factor = e.weight as f64 * stack.scale(slot) as f64;
            let mut t = vec![0f64; rank];
            for (r, tr) in t.iter_mut().enumerate() {
                let ar = &a[r * d_in..(r + 1) * d_in];
                *tr = ar.iter().zip(xr).map(|(&p, &q)| p as f64 * q as f64).sum();
            }
            for j in 0..d_out {
                let bj = &b[j * r_max..j * r_max + rank];
                let dot: f64 = bj.iter().zip(&t).map(|(&p, &q)| p as f64 * q).sum();
                out[row * d_out + j] += factor * dot;
            }
        }
    }
    out
}
