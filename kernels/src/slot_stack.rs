//! `SlotStack`: every resident adapter of one (layer, module), stacked by slot.
//!
//! A is `[slots, r_max, d_in]`, B is `[slots, d_out, r_max]` (row-major f32). A slot whose
//! adapter has rank r < r_max keeps zeros in the padding; a slot whose adapter does not
//! target this module has rank 0 and costs nothing in the kernels.
//!
//! Each slot also keeps the copy that the CPU path's small groups read ([`SmallGroupCopy`]).
//! A decode batch spread over many adapters reads every row's adapter weights once per
//! step, so there the LoRA mixture is bound by memory, not arithmetic: when a slot's values
//! are exactly representable in f16 (adapters saved in f16, as PEFT usually saves them) that
//! copy is f16, half the bytes, and the sums are unchanged.

use crate::{KernelError, Result};
use half::f16;

/// A slot's weights laid out for the small-group path (see `cpu.rs`).
#[derive(Debug, Clone)]
pub enum SmallGroupCopy {
    /// Every value of A and B is an f16 value: A `[rank, d_in]` and Bᵀ `[rank, d_out]` in f16.
    Half { a: Vec<f16>, b_t: Vec<f16> },
    /// Bᵀ `[rank, d_out]` in f32 (A is read from the stack itself).
    Full { b_t: Vec<f32> },
}

#[derive(Debug, Clone)]
pub struct SlotStack {
    slots: usize,
    r_max: usize,
    d_in: usize,
    d_out: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    /// Per slot, what the CPU path's small groups read: they expand with contiguous row
    /// updates from Bᵀ. Costs as much memory as B again (in f32), or A and B at half size.
    small: Vec<SmallGroupCopy>,
    scale: Vec<f32>,
    rank: Vec<usize>,
}

impl SlotStack {
    pub fn new(slots: usize, r_max: usize, d_in: usize, d_out: usize) -> Self {
        Self {
            slots,
            r_max,
            d_in,
            d_out,
            a: vec![0.0; slots * r_max * d_in],
            b: vec![0.0; slots * d_out * r_max],
            small: vec![SmallGroupCopy::Full { b_t: Vec::new() }; slots],
            scale: vec![0.0; slots],
            rank: vec![0; slots],
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }
    pub fn r_max(&self) -> usize {
        self.r_max
    }
    pub fn d_in(&self) -> usize {
        self.d_in
    }
    pub fn d_out(&self) -> usize {
        self.d_out
    }
    pub fn rank(&self, slot: usize) -> usize {
        self.rank[slot]
    }
    pub fn scale(&self, slot: usize) -> f32 {
        self.scale[slot]
    }

    /// A of one slot: `[r_max, d_in]`.
    pub fn a(&self, slot: usize) -> &[f32] {
        let n = self.r_max * self.d_in;
        &self.a[slot * n..(slot + 1) * n]
    }

    /// B of one slot: `[d_out, r_max]`.
    pub fn b(&self, slot: usize) -> &[f32] {
        let n = self.d_out * self.r_max;
        &self.b[slot * n..(slot + 1) * n]
    }

    /// The small-group copy of one slot (rows beyond the slot's rank are not stored).
    pub fn small_group_copy(&self, slot: usize) -> &SmallGroupCopy {
        &self.small[slot]
    }

    /// All of A: `[slots, r_max, d_in]`.
    pub fn a_all(&self) -> &[f32] {
        &self.a
    }

    /// All of B: `[slots, d_out, r_max]`.
    pub fn b_all(&self) -> &[f32] {
        &self.b
    }

    /// The rank of every slot as the kernels take it (i32; ranks never come near i32::MAX).
    pub fn ranks_i32(&self) -> Vec<i32> {
        self.rank
            .iter()
            .map(|&r| i32::try_from(r).unwrap_or(i32::MAX))
            .collect()
    }

    /// The largest rank of any slot (0 for an empty stack).
    pub fn max_rank(&self) -> usize {
        self.rank.iter().copied().max().unwrap_or(0)
    }

    /// Writes an adapter into `slot`: `a` is `[rank, d_in]`, `b` is `[d_out, rank]`, row-major.
    /// The previous contents of the slot, padding included, are overwritten.
    pub fn write_slot(
        &mut self,
        slot: usize,
        a: &[f32],
        b: &[f32],
        rank: usize,
        scale: f32,
    ) -> Result<()> {
        if slot >= self.slots {
            return Err(KernelError::SlotOutOfRange {
                row: 0,
                slot: slot as u32,
                slots: self.slots,
            });
        }
        if rank > self.r_max {
            return Err(KernelError::RankTooLarge {
                slot,
                rank,
                r_max: self.r_max,
            });
        }
        let check = |what, len: usize, expected: usize| {
            if len == expected {
                Ok(())
            } else {
                Err(KernelError::SlotShape {
                    slot,
                    what,
                    len,
                    expected,
                })
            }
        };
        check("A", a.len(), rank * self.d_in)?;
        check("B", b.len(), self.d_out * rank)?;
        let (r_max, d_in, d_out) = (self.r_max, self.d_in, self.d_out);
        let a_dst = &mut self.a[slot * r_max * d_in..(slot + 1) * r_max * d_in];
        a_dst.fill(0.0);
        a_dst[..rank * d_in].copy_from_slice(a);
        let b_dst = &mut self.b[slot * d_out * r_max..(slot + 1) * d_out * r_max];
        b_dst.fill(0.0);
        for (row, src) in b_dst
            .chunks_exact_mut(r_max)
            .zip(b.chunks_exact(rank.max(1)))
        {
            row[..rank].copy_from_slice(&src[..rank]);
        }
        let mut b_t = vec![0f32; rank * d_out];
        for (o, src) in b.chunks_exact(rank.max(1)).enumerate().take(d_out) {
            for (j, &v) in src.iter().enumerate().take(rank) {
                b_t[j * d_out + o] = v;
            }
        }
        self.small[slot] = if exact_in_f16(a) && exact_in_f16(&b_t) {
            SmallGroupCopy::Half {
                a: a.iter().map(|&v| f16::from_f32(v)).collect(),
                b_t: b_t.iter().map(|&v| f16::from_f32(v)).collect(),
            }
        } else {
            SmallGroupCopy::Full { b_t }
        };
        self.rank[slot] = rank;
        self.scale[slot] = scale;
        Ok(())
    }

    /// Empties a slot: rank 0, so the kernels skip it.
    pub fn clear_slot(&mut self, slot: usize) {
        if slot < self.slots {
            self.rank[slot] = 0;
            self.scale[slot] = 0.0;
            self.small[slot] = SmallGroupCopy::Full { b_t: Vec::new() };
        }
    }
}

/// Whether every value survives a round trip through f16 unchanged.
fn exact_in_f16(values: &[f32]) -> bool {
    values.iter().all(|&v| f16::from_f32(v).to_f32() == v)
}
