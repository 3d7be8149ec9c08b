//! CPU implementation of the LoRA mixture: rows grouped by slot, one GEMM pair per group.
//!
//! For a group of m rows sharing slot s with rank r: gather `X_g [m, d_in]`, shrink
//! `T = X_g · A_sᵀ [m, r]`, scale each row by `w_i · s_s`, expand `O = T · B_sᵀ [m, d_out]`,
//! and scatter-add O into the rows of y. The work is proportional to rows · k · r, never to
//! the number of resident slots.

use crate::{KernelError, MixPlan, Result, SlotStack};
use gemm::{gemm, Parallelism};

/// Groups of at least this many rows use both cores inside the GEMM; smaller ones (decode)
/// stay single-threaded because the fork/join costs more than the arithmetic.
const PARALLEL_ROWS: usize = 64;

/// Groups of at most this many rows skip the GEMM library: for a few rows its operand
/// packing costs more than the arithmetic (a decode batch spread over many adapters, as
/// under the learned gate, is many such groups). Measured with `examples/mix_timing.rs`.
const DIRECT_MAX_ROWS: usize = 16;

pub fn lora_mix_cpu(x: &[f32], y: &mut [f32], stack: &SlotStack, plan: &MixPlan) -> Result<()> {
    let (d_in, d_out, r_max) = (stack.d_in(), stack.d_out(), stack.r_max());
    if d_in == 0 || !x.len().is_multiple_of(d_in) {
        return Err(KernelError::InputShape { len: x.len(), d_in });
    }
    let rows = x.len() / d_in;
    if y.len() != rows * d_out {
        return Err(KernelError::OutputShape {
            len: y.len(),
            rows,
            d_out,
            expected: rows * d_out,
        });
    }
    plan.validate(rows, stack.slots())?;
    if plan.is_empty() {
        return Ok(());
    }
    let groups = plan.group_by_slot(stack.slots());
    let mut gathered = Vec::new();
    let mut shrunk = Vec::new();
    let mut expanded = Vec::new();
    for g in 0..groups.len() {
        let slot = groups.slots[g] as usize;
        let rank = stack.rank(slot);
        if rank == 0 {
            continue;
        }
        let group_rows = groups.rows_of(g);
        let weights = groups.weights_of(g);
        let m = group_rows.len();
        if m <= DIRECT_MAX_ROWS {
            direct_group(x, y, stack, slot, group_rows, weights, &mut shrunk);
            continue;
        }
        gathered.clear();
        for &row in group_rows {
            let row = row as usize;
            gathered.extend_from_slice(&x[row * d_in..(row + 1) * d_in]);
        }
        shrunk.clear();
        shrunk.resize(m * rank, 0.0);
        expanded.clear();
        expanded.resize(m * d_out, 0.0);
        let par = if m >= PARALLEL_ROWS {
            Parallelism::Rayon(0)
        } else {
            Parallelism::None
        };
        let a = stack.a(slot);
        let b = stack.b(slot);
        // SAFETY: every pointer/stride pair below addresses inside its slice: `gathered` is
        // [m, d_in] row-major, `a` holds at least [rank, d_in] row-major (read transposed as
        // [d_in, rank] with row stride 1, column stride d_in), `shrunk` is [m, rank].
        unsafe {
            gemm(
                m,
                rank,
                d_in,
                shrunk.as_mut_ptr(),
                1,
                rank as isize,
                false,
                gathered.as_ptr(),
                1,
                d_in as isize,
                a.as_ptr(),
                d_in as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        let scale = stack.scale(slot);
        for (row, &w) in shrunk.chunks_exact_mut(rank).zip(weights) {
            let f = w * scale;
            row.iter_mut().for_each(|v| *v *= f);
        }
        // SAFETY: `shrunk` is [m, rank] row-major; `b` is [d_out, r_max] row-major, read
        // transposed as [rank, d_out] (row stride 1, column stride r_max) using only its
        // first `rank` columns; `expanded` is [m, d_out].
        unsafe {
            gemm(
                m,
                d_out,
                rank,
                expanded.as_mut_ptr(),
                1,
                d_out as isize,
                false,
                shrunk.as_ptr(),
                1,
                rank as isize,
                b.as_ptr(),
                r_max as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        for (&row, out) in group_rows.iter().zip(expanded.chunks_exact(d_out)) {
            let row = row as usize;
            let dst = &mut y[row * d_out..(row + 1) * d_out];
            dst.iter_mut().zip(out).for_each(|(d, o)| *d += o);
        }
    }
    Ok(())
}

/// One slot's rows without the GEMM library. Shrink: per row and rank component a dot
/// product with A's row (contiguous). Expand: sixteen outputs at a time, summing the rank
/// components in a register before one update of the output row; the `[rank, 16]` block of
/// Bᵀ it reads stays in L1 while every row of the group uses it.
fn direct_group(
    x: &[f32],
    y: &mut [f32],
    stack: &SlotStack,
    slot: usize,
    rows: &[u32],
    weights: &[f32],
    shrunk: &mut Vec<f32>,
) {
    const LANES: usize = 16;
    let (d_in, d_out) = (stack.d_in(), stack.d_out());
    let rank = stack.rank(slot);
    let (a, b_t) = (stack.a(slot), stack.b_t(slot));
    let scale = stack.scale(slot);
    shrunk.clear();
    for (&row, &w) in rows.iter().zip(weights) {
        let row = row as usize;
        let x_row = &x[row * d_in..(row + 1) * d_in];
        let f = w * scale;
        shrunk.extend(
            a.chunks_exact(d_in)
                .take(rank)
                .map(|a_j| dot(a_j, x_row) * f),
        );
    }
    let full = d_out / LANES * LANES;
    for o in (0..full).step_by(LANES) {
        for (&row, t) in rows.iter().zip(shrunk.chunks_exact(rank)) {
            let mut acc = [0f32; LANES];
            for (j, &t_j) in t.iter().enumerate() {
                let b = &b_t[j * d_out + o..j * d_out + o + LANES];
                for l in 0..LANES {
                    acc[l] += t_j * b[l];
                }
            }
            let at = row as usize * d_out + o;
            for (y, a) in y[at..at + LANES].iter_mut().zip(acc) {
                *y += a;
            }
        }
    }
    for o in full..d_out {
        for (&row, t) in rows.iter().zip(shrunk.chunks_exact(rank)) {
            let sum: f32 = t
                .iter()
                .enumerate()
                .map(|(j, t_j)| t_j * b_t[j * d_out + o])
                .sum();
            y[row as usize * d_out + o] += sum;
        }
    }
}

/// Sixteen independent partial sums, so the compiler keeps them in one vector register.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
