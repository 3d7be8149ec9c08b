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

use std::sync::Arc;

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

impl SmallGroupCopy {
    /// The copy of A `[rank, d_in]` and B `[d_out, rank]`: B transposed, and both in f16
    /// when every value survives it. This is the conversion work of a slot write, so it can
    /// be done once, when an adapter is loaded, away from the thread that runs the steps.
    pub fn of(a: &[f32], b: &[f32], rank: usize, d_out: usize) -> Self {
        let mut b_t = vec![0f32; rank * d_out];
        for (o, src) in b.chunks_exact(rank.max(1)).enumerate().take(d_out) {
            for (j, &v) in src.iter().enumerate().take(rank) {
                b_t[j * d_out + o] = v;
            }
        }
        if exact_in_f16(a) && exact_in_f16(&b_t) {
            Self::Half {
                a: a.iter().map(|&v| f16::from_f32(v)).collect(),
                b_t: b_t.iter().map(|&v| f16::from_f32(v)).collect(),
            }
        } else {
            Self::Full { b_t }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Half { a, b_t } => 2 * (a.len() + b_t.len()),
            Self::Full { b_t } => 4 * b_t.len(),
        }
    }

    /// Lengths of its copy of A (0 for `Full`, which reads A from the stack) and of Bᵀ.
    fn lens(&self) -> (usize, usize) {
        match self {
            Self::Half { a, b_t } => (a.len(), b_t.len()),
            Self::Full { b_t } => (0, b_t.len()),
        }
    }
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
    small: Vec<Arc<SmallGroupCopy>>,
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
            small: (0..slots)
                .map(|_| Arc::new(SmallGroupCopy::Full { b_t: Vec::new() }))
                .collect(),
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
        let small = Arc::new(SmallGroupCopy::of(a, b, rank, self.d_out));
        self.write_slot_prepared(slot, a, b, rank, scale, small)
    }

    /// [`SlotStack::write_slot`] with the small-group copy already made
    /// ([`SmallGroupCopy::of`] of the same `a` and `b`): only copies, no conversion.
    pub fn write_slot_prepared(
        &mut self,
        slot: usize,
        a: &[f32],
        b: &[f32],
        rank: usize,
        scale: f32,
        small: Arc<SmallGroupCopy>,
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
        let (small_a, small_b_t) = small.lens();
        if small_a != 0 {
            check("the f16 copy of A", small_a, rank * self.d_in)?;
        }
        check("the copy of Bᵀ", small_b_t, rank * self.d_out)?;
        let (r_max, d_in, d_out) = (self.r_max, self.d_in, self.d_out);
        let a_dst = &mut self.a[slot * r_max * d_in..(slot + 1) * r_max * d_in];
        a_dst[..rank * d_in].copy_from_slice(a);
        a_dst[rank * d_in..].fill(0.0);
        let b_dst = &mut self.b[slot * d_out * r_max..(slot + 1) * d_out * r_max];
        if rank == 0 {
            b_dst.fill(0.0);
        }
        for (row, src) in b_dst
            .chunks_exact_mut(r_max)
            .zip(b.chunks_exact(rank.max(1)))
        {
            row[..rank].copy_from_slice(&src[..rank]);
            row[rank..].fill(0.0);
        }
        self.small[slot] = small;
        self.rank[slot] = rank;
        self.scale[slot] = scale;
        Ok(())
    }

    /// Empties a slot: rank 0, so the kernels skip it.
    pub fn clear_slot(&mut self, slot: usize) {
        if slot < self.slots {
            self.rank[slot] = 0;
            self.scale[slot] = 0.0;
            self.small[slot] = Arc::new(SmallGroupCopy::Full { b_t: Vec::new() });
        }
    }
}

/// Whether every value survives a round trip through f16 unchanged.
fn exact_in_f16(values: &[f32]) -> bool {
    values.iter().all(|&v| f16::from_f32(v).to_f32() == v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn values(rng: &mut StdRng, n: usize, f16_exact: bool) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v: f32 = rng.random_range(-1.0..1.0);
                if f16_exact {
                    f16::from_f32(v).to_f32()
                } else {
                    v
                }
            })
            .collect()
    }

    /// A prepared write leaves the slot exactly as a plain one does, whatever the slot held
    /// before (a larger rank's values in the padding), for f16-exact and other values.
    #[test]
    fn a_prepared_write_equals_a_plain_write() {
        let (slots, r_max, d_in, d_out) = (3, 8, 40, 24);
        let mut rng = StdRng::seed_from_u64(7);
        for f16_exact in [true, false] {
            let mut plain = SlotStack::new(slots, r_max, d_in, d_out);
            let old_a = values(&mut rng, r_max * d_in, false);
            let old_b = values(&mut rng, d_out * r_max, false);
            plain.write_slot(1, &old_a, &old_b, r_max, 2.0).unwrap();
            let mut prepared = plain.clone();
            let rank = 3;
            let a = values(&mut rng, rank * d_in, f16_exact);
            let b = values(&mut rng, d_out * rank, f16_exact);
            plain.write_slot(1, &a, &b, rank, 0.5).unwrap();
            let small = Arc::new(SmallGroupCopy::of(&a, &b, rank, d_out));
            assert_eq!(matches!(*small, SmallGroupCopy::Half { .. }), f16_exact);
            prepared
                .write_slot_prepared(1, &a, &b, rank, 0.5, small)
                .unwrap();
            assert_eq!(plain.a_all(), prepared.a_all());
            assert_eq!(plain.b_all(), prepared.b_all());
            assert_eq!((plain.rank(1), plain.scale(1)), (rank, 0.5));
            assert_eq!((prepared.rank(1), prepared.scale(1)), (rank, 0.5));
            assert_eq!(
                format!("{:?}", plain.small_group_copy(1)),
                format!("{:?}", prepared.small_group_copy(1))
            );
            // The padding of the old rank-8 values is gone.
            assert!(prepared.a(1)[rank * d_in..].iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn a_copy_made_for_other_weights_is_refused() {
        let mut stack = SlotStack::new(2, 8, 16, 12);
        let mut rng = StdRng::seed_from_u64(1);
        let (a, b) = (
            values(&mut rng, 4 * 16, true),
            values(&mut rng, 12 * 4, true),
        );
        let other = Arc::new(SmallGroupCopy::of(&a[..2 * 16], &b[..12 * 2], 2, 12));
        let err = stack
            .write_slot_prepared(0, &a, &b, 4, 1.0, other)
            .unwrap_err();
        assert!(matches!(err, KernelError::SlotShape { .. }), "{err}");
    }
}
