//! CPU implementation of the LoRA mixture: rows grouped by slot, one GEMM pair per group.
//!
//! For a group of m rows sharing slot s with rank r: gather `X_g [m, d_in]`, shrink
//! `T = X_g · A_sᵀ [m, r]`, scale each row by `w_i · s_s`, expand `O = T · B_sᵀ [m, d_out]`,
//! and scatter-add O into the rows of y. The work is proportional to rows · k · r, never to
//! the number of resident slots.

use crate::cpu_tier::CpuTier;
use crate::dot::dot;
use crate::mix_plan::SlotGroups;
use crate::slot_stack::SmallGroupCopy;
use crate::{KernelError, MixPlan, Result, SlotStack};
use gemm::{gemm, Parallelism};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Groups of at least this many rows use both cores inside the GEMM; smaller ones (decode)
/// stay single-threaded because the fork/join costs more than the arithmetic.
const PARALLEL_ROWS: usize = 64;

/// Groups of at most this many rows skip the GEMM library: for a few rows its operand
/// packing costs more than the arithmetic (a decode batch spread over many adapters, as
/// under the learned gate, is many such groups). Measured with `examples/mix_timing.rs`.
const DIRECT_MAX_ROWS: usize = 16;

/// Multiply-adds of the small groups from which they are split across threads (about 20 µs
/// of one core: several times the fork/join).
const PARALLEL_DIRECT_MACS: usize = 1 << 17;

pub fn lora_mix_cpu(x: &[f32], y: &mut [f32], stack: &SlotStack, plan: &MixPlan) -> Result<()> {
    lora_mix_cpu_on(CpuTier::best(), x, y, stack, plan)
}

/// [`lora_mix_cpu`] with the small groups on `tier`'s kernels; an error when this CPU
/// cannot run it.
pub fn lora_mix_cpu_on(
    tier: CpuTier,
    x: &[f32],
    y: &mut [f32],
    stack: &SlotStack,
    plan: &MixPlan,
) -> Result<()> {
    tier.check()?;
    let (d_in, d_out) = (stack.d_in(), stack.d_out());
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
    let mut direct = Vec::new();
    for g in 0..groups.len() {
        let slot = groups.slots[g] as usize;
        if stack.rank(slot) == 0 {
            continue;
        }
        if groups.rows_of(g).len() <= DIRECT_MAX_ROWS {
            direct.push(g);
        } else {
            gemm_group(x, y, stack, slot, groups.rows_of(g), groups.weights_of(g));
        }
    }
    mix_direct_groups(tier, x, y, stack, &groups, &direct);
    Ok(())
}

/// The small groups, split by rows across threads when there is enough work: each thread
/// owns a contiguous range of output rows and applies every group's rows in that range, in
/// group order, so the sums are the same whatever the thread count.
fn mix_direct_groups(
    tier: CpuTier,
    x: &[f32],
    y: &mut [f32],
    stack: &SlotStack,
    groups: &SlotGroups,
    direct: &[usize],
) {
    let (d_in, d_out) = (stack.d_in(), stack.d_out());
    let rows = y.len() / d_out;
    let macs: usize = direct
        .iter()
        .map(|&g| groups.rows_of(g).len() * stack.rank(groups.slots[g] as usize) * (d_in + d_out))
        .sum();
    let parts = if macs >= PARALLEL_DIRECT_MACS {
        rayon::current_num_threads().clamp(1, rows.max(1))
    } else {
        1
    };
    let per = rows.div_ceil(parts).max(1);
    let run = |first: usize, y_part: &mut [f32]| {
        let end = first + y_part.len() / d_out;
        let mut scratch = (Vec::new(), Widened::default());
        let (mut sub_rows, mut sub_weights) = (Vec::new(), Vec::new());
        for &g in direct {
            sub_rows.clear();
            sub_weights.clear();
            for (&row, &w) in groups.rows_of(g).iter().zip(groups.weights_of(g)) {
                if (first..end).contains(&(row as usize)) {
                    sub_rows.push(row - first as u32);
                    sub_weights.push(w);
                }
            }
            if !sub_rows.is_empty() {
                let x_part = &x[first * d_in..end * d_in];
                let slot = groups.slots[g] as usize;
                direct_group(
                    tier,
                    x_part,
                    y_part,
                    stack,
                    slot,
                    &sub_rows,
                    &sub_weights,
                    &mut scratch,
                );
            }
        }
    };
    if parts == 1 {
        run(0, y);
    } else {
        y.par_chunks_mut(per * d_out)
            .enumerate()
            .for_each(|(p, y_part)| run(p * per, y_part));
    }
}

/// One slot's rows through a GEMM pair: gather, shrink, scale, expand, scatter-add.
fn gemm_group(
    x: &[f32],
    y: &mut [f32],
    stack: &SlotStack,
    slot: usize,
    group_rows: &[u32],
    weights: &[f32],
) {
    let (d_in, d_out, r_max) = (stack.d_in(), stack.d_out(), stack.r_max());
    let rank = stack.rank(slot);
    let m = group_rows.len();
    let mut gathered = Vec::with_capacity(m * d_in);
    for &row in group_rows {
        let row = row as usize;
        gathered.extend_from_slice(&x[row * d_in..(row + 1) * d_in]);
    }
    let mut shrunk = vec![0f32; m * rank];
    let mut expanded = vec![0f32; m * d_out];
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

/// Scratch for the small-group path: an f16 slot's A and Bᵀ widened to f32, reused across
/// groups (the widened copy stays in L1/L2 while the group's rows use it).
#[derive(Default)]
struct Widened {
    a: Vec<f32>,
    b_t: Vec<f32>,
    /// Each row's weight times the slot's scale (the SIMD tiers' input).
    factors: Vec<f32>,
}

/// One slot's rows without the GEMM library. Shrink: per row and rank component a dot
/// product with A's row (contiguous). Expand: sixteen outputs at a time, summing the rank
/// components in a register before one update of the output row; the `[rank, 16]` block of
/// Bᵀ it reads stays in L1 while every row of the group uses it.
#[allow(clippy::too_many_arguments)]
fn direct_group(
    tier: CpuTier,
    x: &[f32],
    y: &mut [f32],
    stack: &SlotStack,
    slot: usize,
    rows: &[u32],
    weights: &[f32],
    scratch: &mut (Vec<f32>, Widened),
) {
    const LANES: usize = 16;
    let (d_in, d_out) = (stack.d_in(), stack.d_out());
    let rank = stack.rank(slot);
    let (shrunk, widened) = scratch;
    #[cfg(target_arch = "x86_64")]
    if simd_group(
        tier,
        x,
        y,
        stack,
        slot,
        rows,
        weights,
        shrunk,
        &mut widened.factors,
    ) {
        return;
    }
    let (a, b_t): (&[f32], &[f32]) = match stack.small_group_copy(slot) {
        SmallGroupCopy::Full { b_t } => (&stack.a(slot)[..rank * d_in], b_t),
        SmallGroupCopy::Half { a, b_t } => {
            // Exact: these values were checked to be f16 values when the slot was written.
            widened.a.resize(a.len(), 0.0);
            a.convert_to_f32_slice(&mut widened.a);
            widened.b_t.resize(b_t.len(), 0.0);
            b_t.convert_to_f32_slice(&mut widened.b_t);
            (&widened.a, &widened.b_t)
        }
    };
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

/// [`direct_group`] on `tier`'s SIMD kernels, reading A and Bᵀ in their stored precision;
/// `false` (nothing done) for the portable tier or widths that are not whole registers.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn simd_group(
    tier: CpuTier,
    x: &[f32],
    y: &mut [f32],
    stack: &SlotStack,
    slot: usize,
    rows: &[u32],
    weights: &[f32],
    t: &mut Vec<f32>,
    factors: &mut Vec<f32>,
) -> bool {
    use crate::{cpu_avx2, cpu_avx512};
    let (d_in, d_out) = (stack.d_in(), stack.d_out());
    let rank = stack.rank(slot);
    let scale = stack.scale(slot);
    factors.clear();
    factors.extend(weights.iter().map(|w| w * scale));
    let copy = stack.small_group_copy(slot);
    let full_a = &stack.a(slot)[..rank * d_in];
    // SAFETY: the tier was checked against this CPU when it was chosen (`CpuTier::check`),
    // the widths fit its registers, the slices have the kernels' sizes and a group's rows
    // are distinct.
    unsafe {
        match (tier, copy) {
            (CpuTier::Avx512, _) if !cpu_avx512::fits(d_in, d_out) => return false,
            (CpuTier::Avx2, _) if !cpu_avx2::fits(d_in, d_out) => return false,
            (CpuTier::Avx512, SmallGroupCopy::Full { b_t }) => {
                cpu_avx512::group(full_a, b_t, d_in, d_out, rank, x, y, rows, factors, t)
            }
            (CpuTier::Avx512, SmallGroupCopy::Half { a, b_t }) => {
                cpu_avx512::group(a, b_t, d_in, d_out, rank, x, y, rows, factors, t)
            }
            (CpuTier::Avx2, SmallGroupCopy::Full { b_t }) => {
                cpu_avx2::group(full_a, b_t, d_in, d_out, rank, x, y, rows, factors, t)
            }
            (CpuTier::Avx2, SmallGroupCopy::Half { a, b_t }) => {
                cpu_avx2::group(a, b_t, d_in, d_out, rank, x, y, rows, factors, t)
            }
            (CpuTier::Portable, _) => return false,
        }
    }
    true
}
