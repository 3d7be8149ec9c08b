//! CPU twins of the CUDA kernels (`cuda/lora_mix.cu`): the same algorithm, loop for loop.
//!
//! SHRINK: for every plan entry (row, k) with slot s, and every split of d_in,
//! `t[split, row, k, r] = Σ_{i in split} A_s[r, i] · x[row, i]` for r < rank(s), in f32.
//! EXPAND: for every row, `u[k, r] = (Σ_split t[split, row, k, r]) · (w_k · scale_s)`, then
//! `y[row, j] = round(y[row, j] + Σ_k Σ_{r<rank} B_s[j, r] · u[k, r])`.
//! Storage is `T` (f32, f16 or bf16), arithmetic is f32. The kernels check the twins, the
//! float64 reference checks the twins.

use crate::launch_shape::split_range;
use crate::{DensePlan, Element, KernelError, MixPlan, Result, SlotStack};

/// A slot stack in the layout and element type the kernels read: A `[slots, r_max, d_in]`,
/// B `[slots, d_out, r_max]`, rank (i32) and scale (f32) per slot.
#[derive(Debug, Clone)]
pub struct TwinStack<T> {
    pub slots: usize,
    pub r_max: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub a: Vec<T>,
    pub b: Vec<T>,
    pub ranks: Vec<i32>,
    pub scales: Vec<f32>,
}

impl<T: Element> TwinStack<T> {
    /// Rounds a host stack into `T`, exactly as the device stack is filled.
    pub fn from_host(host: &SlotStack) -> Self {
        Self {
            slots: host.slots(),
            r_max: host.r_max(),
            d_in: host.d_in(),
            d_out: host.d_out(),
            a: crate::element::convert_from_f32(host.a_all()),
            b: crate::element::convert_from_f32(host.b_all()),
            ranks: host.ranks_i32(),
            scales: (0..host.slots()).map(|s| host.scale(s)).collect(),
        }
    }

    /// Rank of a slot as the kernels use it: never above r_max, 0 for a bad slot.
    fn rank(&self, slot: usize) -> usize {
        let rank = self.ranks.get(slot).copied().unwrap_or(0);
        usize::try_from(rank).unwrap_or(0).min(self.r_max)
    }

    fn check(&self, plan: &DensePlan) -> Result<()> {
        check_len("A", self.a.len(), self.slots * self.r_max * self.d_in)?;
        check_len("B", self.b.len(), self.slots * self.d_out * self.r_max)?;
        check_len("ranks", self.ranks.len(), self.slots)?;
        check_len("scales", self.scales.len(), self.slots)?;
        for (i, &slot) in plan.slots().iter().enumerate() {
            if slot >= 0 && slot as usize >= self.slots {
                return Err(KernelError::SlotOutOfRange {
                    row: i / plan.k().max(1),
                    slot: slot as u32,
                    slots: self.slots,
                });
            }
        }
        Ok(())
    }
}

/// Length of t: `[splits, rows, k, r_max]` f32.
pub fn t_len(plan: &DensePlan, r_max: usize, splits: usize) -> usize {
    splits * plan.rows() * plan.k() * r_max
}

/// Twin of `lora_shrink_{dtype}`: writes `t[split, row, k, r]` for every ranked entry.
pub fn lora_shrink_twin<T: Element>(
    stack: &TwinStack<T>,
    plan: &DensePlan,
    splits: usize,
    x: &[T],
    t: &mut [f32],
) -> Result<()> {
    stack.check(plan)?;
    let (rows, k_max, r_max, d_in) = (plan.rows(), plan.k(), stack.r_max, stack.d_in);
    check_len("x", x.len(), rows * d_in)?;
    check_len("t", t.len(), t_len(plan, r_max, splits))?;
    for split in 0..splits {
        let (lo, hi) = split_range(split, splits, d_in);
        for row in 0..rows {
            let xr = &x[row * d_in + lo..row * d_in + hi];
            for k in 0..k_max {
                let Some(slot) = plan.slot(row, k) else {
                    continue;
                };
                let entry = row * k_max + k;
                for r in 0..stack.rank(slot) {
                    let a_row = (slot * r_max + r) * d_in;
                    let ar = &stack.a[a_row + lo..a_row + hi];
                    let acc: f32 = ar
                        .iter()
                        .zip(xr)
                        .map(|(&a, &x)| a.to_f32() * x.to_f32())
                        .sum();
                    t[(split * rows * k_max + entry) * r_max + r] = acc;
                }
            }
        }
    }
    Ok(())
}

/// Twin of `lora_expand_{dtype}`: `y[row] += Σ_k w_k · scale · B_slot t[row, k]`, rounded
/// once into `T` per output.
pub fn lora_expand_twin<T: Element>(
    stack: &TwinStack<T>,
    plan: &DensePlan,
    splits: usize,
    t: &[f32],
    y: &mut [T],
) -> Result<()> {
    stack.check(plan)?;
    let (rows, k_max, r_max, d_out) = (plan.rows(), plan.k(), stack.r_max, stack.d_out);
    check_len("y", y.len(), rows * d_out)?;
    check_len("t", t.len(), t_len(plan, r_max, splits))?;
    let mut u = vec![0f32; k_max * r_max];
    for row in 0..rows {
        let entries: Vec<(usize, usize)> = (0..k_max)
            .filter_map(|k| plan.slot(row, k).map(|s| (k, s)))
            .collect();
        u.fill(0.0);
        for &(k, slot) in &entries {
            let factor = plan.weight(row, k) * stack.scales[slot];
            for r in 0..stack.rank(slot) {
                let mut v = 0f32;
                for split in 0..splits {
                    v += t[((split * rows + row) * k_max + k) * r_max + r];
                }
                u[k * r_max + r] = v * factor;
            }
        }
        for j in 0..d_out {
            let mut acc = 0f32;
            for &(k, slot) in &entries {
                let b_row = (slot * d_out + j) * r_max;
                for r in 0..stack.rank(slot) {
                    acc += stack.b[b_row + r].to_f32() * u[k * r_max + r];
                }
            }
            let out = &mut y[row * d_out + j];
            *out = T::from_f32(out.to_f32() + acc);
        }
    }
    Ok(())
}

/// The whole mixture through the twins: validate, pad the plan, shrink, expand.
pub fn lora_mix_twin<T: Element>(
    stack: &TwinStack<T>,
    plan: &MixPlan,
    splits: usize,
    x: &[T],
    y: &mut [T],
) -> Result<()> {
    if stack.d_in == 0 || !x.len().is_multiple_of(stack.d_in) {
        return Err(KernelError::InputShape {
            len: x.len(),
            d_in: stack.d_in,
        });
    }
    plan.validate(x.len() / stack.d_in, stack.slots)?;
    let dense = DensePlan::new(plan);
    let splits = splits.max(1);
    let mut t = vec![0f32; t_len(&dense, stack.r_max, splits)];
    lora_shrink_twin(stack, &dense, splits, x, &mut t)?;
    lora_expand_twin(stack, &dense, splits, &t, y)
}

fn check_len(what: &'static str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(KernelError::BufferLength {
            what,
            len,
            expected,
        })
    }
}
