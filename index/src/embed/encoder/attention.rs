//! Bidirectional multi-head self-attention over ragged sequences.
//!
//! The batch is packed without padding: `qkv` holds every token of every sequence, one row
//! of `[q | k | v]` each, and a sequence only attends to its own rows, so no mask is
//! needed and no work is spent on pad tokens.

use std::ops::Range;

use super::linear::{gemm_on_this_thread, Strided};
use super::math::softmax;
use super::team::{Member, Shared};

/// `member`'s part of `ctx[t, h*d..(h+1)*d] = softmax(q_h kᵀ_h / √d) v_h` for every
/// sequence and head; `qkv` is `[tokens, 3 * hidden]`, `ctx` is `[tokens, hidden]` and
/// complete after the team's next sync. `scores` is the member's own scratch.
pub(crate) fn self_attention(
    member: Member<'_>,
    qkv: &[f32],
    sequences: &[Range<usize>],
    hidden: usize,
    heads: usize,
    ctx: &Shared<'_, f32>,
    scores: &mut Vec<f32>,
) {
    let head_dim = hidden / heads;
    let tokens = qkv.len() / (3 * hidden);
    assert!(sequences.iter().all(|s| s.end <= tokens));
    assert_eq!(ctx.len(), tokens * hidden);
    let jobs = sequences.len() * heads;
    for job in member.share(jobs) {
        let (rows, head) = (sequences[job / heads].clone(), job % heads);
        let col = head * head_dim;
        // SAFETY: rows `rows`, columns col..col+head_dim of ctx belong to this job only.
        let out = unsafe { ctx.block_ptr(rows.start * hidden + col, rows.len(), head_dim, hidden) };
        one_head(qkv, rows, hidden, col, head_dim, out, scores);
    }
}

/// One head of one sequence, written to `out` (`[len, head_dim]`, rows `hidden` apart).
fn one_head(
    qkv: &[f32],
    rows: Range<usize>,
    hidden: usize,
    col: usize,
    head_dim: usize,
    out: *mut f32,
    scores: &mut Vec<f32>,
) {
    let len = rows.len();
    if len == 0 {
        return;
    }
    let stride = 3 * hidden;
    let q = qkv[rows.start * stride + col..].as_ptr();
    let k = qkv[rows.start * stride + hidden + col..].as_ptr();
    let v = qkv[rows.start * stride + 2 * hidden + col..].as_ptr();
    let scale = 1.0 / (head_dim as f32).sqrt();
    scores.resize(len * len, 0.0);
    // SAFETY: the three operands are read in place with row stride `stride`: rows
    // `rows` of `qkv` hold their `len * head_dim` elements (the caller checked that the
    // rows are inside qkv). lhs(i, d) = Q[i][d]; rhs(d, j) = K[j][d]; dst is `scores`,
    // [len, len] row-major, overwritten.
    unsafe {
        gemm_on_this_thread(
            (len, len, head_dim),
            Strided::rows(scores.as_mut_ptr(), len),
            false,
            Strided::rows(q, stride),
            Strided::cols(k, stride),
            scale,
        );
    }
    scores.chunks_exact_mut(len).for_each(softmax);
    // SAFETY: lhs is `scores`; rhs(j, d) = V[j][d] in place (as above); dst is the
    // caller's `out` block of `len` rows of `head_dim`, `hidden` apart.
    unsafe {
        gemm_on_this_thread(
            (len, head_dim, len),
            Strided::rows(out, hidden),
            false,
            Strided::rows(scores.as_ptr(), len),
            Strided::rows(v, stride),
            1.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::encoder::team::Team;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Straight f64 attention of one sequence, the textbook formula.
    fn reference(qkv: &[f32], rows: Range<usize>, hidden: usize, heads: usize) -> Vec<f64> {
        let hd = hidden / heads;
        let at = |t: usize, part: usize, h: usize, d: usize| {
            qkv[t * 3 * hidden + part * hidden + h * hd + d] as f64
        };
        let mut out = vec![0f64; rows.len() * hidden];
        for h in 0..heads {
            for (i, ti) in rows.clone().enumerate() {
                let scores: Vec<f64> = rows
                    .clone()
                    .map(|tj| {
                        (0..hd)
                            .map(|d| at(ti, 0, h, d) * at(tj, 1, h, d))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for d in 0..hd {
                    out[i * hidden + h * hd + d] = rows
                        .clone()
                        .zip(&scores)
                        .map(|(tj, s)| (s - max).exp() / z * at(tj, 2, h, d))
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn ragged_batch_matches_per_sequence_f64() {
        let (hidden, heads) = (48, 4);
        let sequences = [0..5, 5..6, 6..23];
        let tokens = 23;
        let mut rng = StdRng::seed_from_u64(3);
        let qkv: Vec<f32> = (0..tokens * 3 * hidden)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let mut ctx = vec![f32::NAN; tokens * hidden];
        let shared = Shared::new(&mut ctx);
        Team::new(2).unwrap().run(|member| {
            self_attention(
                member,
                &qkv,
                &sequences,
                hidden,
                heads,
                &shared,
                &mut Vec::new(),
            )
        });
        for rows in sequences {
            let want = reference(&qkv, rows.clone(), hidden, heads);
            let got = &ctx[rows.start * hidden..rows.end * hidden];
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
    }
}
