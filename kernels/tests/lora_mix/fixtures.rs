//! Inputs and measures shared by the tests: random values, stacks with mixed ranks (some
//! slots rank 0), plans with 0..=k_max experts per row and weights of both signs, the shape
//! classes every backend is checked on, and the relative error.

use loramux_kernels::{element::round_through, Element, MixPlan, SlotStack, SlotWeight};
use rand::{rngs::StdRng, Rng};

/// One class of shapes the kernels must handle.
#[derive(Debug, Clone, Copy)]
pub struct ShapeClass {
    pub name: &'static str,
    pub rows: usize,
    pub r_max: usize,
    pub k_max: usize,
    pub slots: usize,
    pub d_in: usize,
    pub d_out: usize,
}

const fn class(
    name: &'static str,
    rows: usize,
    r_max: usize,
    k_max: usize,
    slots: usize,
    (d_in, d_out): (usize, usize),
) -> ShapeClass {
    ShapeClass {
        name,
        rows,
        r_max,
        k_max,
        slots,
        d_in,
        d_out,
    }
}

/// Ranks 1..=64 (mixed below r_max), k 0..=4, 1 to 64 slots, 1 to 300 rows, sizes that are
/// and are not multiples of the warp and block widths.
pub const SHAPE_CLASSES: &[ShapeClass] = &[
    class("decode, one rank-8 adapter", 1, 8, 1, 1, (64, 48)),
    class("decode, rank 1", 3, 1, 3, 4, (40, 33)),
    class("no expert at all (k = 0)", 9, 16, 0, 3, (64, 32)),
    class("small batch, top-4 of 3 slots", 7, 16, 4, 3, (200, 96)),
    class("mixed ranks up to 64, 17 slots", 33, 64, 2, 17, (96, 160)),
    class("64 slots, top-4", 64, 32, 4, 64, (256, 128)),
    class("odd widths, rank 64", 17, 64, 4, 5, (1100, 300)),
    class("prefill, 300 rows", 300, 64, 2, 9, (130, 70)),
];

/// ‖got − want‖∞ / ‖want‖∞: an error relative to the size of the output, so that elements
/// near zero (sums that cancel) do not dominate.
pub fn relative_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (&g, &w)| m.max((g as f64 - w).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

/// The stack with every A and B value rounded through `T`: what a `T` kernel computes with.
pub fn round_stack<T: Element>(stack: &SlotStack) -> SlotStack {
    let (r_max, d_in, d_out) = (stack.r_max(), stack.d_in(), stack.d_out());
    let mut rounded = SlotStack::new(stack.slots(), r_max, d_in, d_out);
    for slot in 0..stack.slots() {
        let rank = stack.rank(slot);
        let a = round_through::<T>(&stack.a(slot)[..rank * d_in]);
        let b: Vec<f32> = stack
            .b(slot)
            .chunks_exact(r_max.max(1))
            .flat_map(|row| round_through::<T>(&row[..rank]))
            .collect();
        rounded
            .write_slot(slot, &a, &b, rank, stack.scale(slot))
            .unwrap();
    }
    rounded
}

/// True when some row of the plan has an expert with a nonzero rank: y must change.
pub fn plan_touches(plan: &MixPlan, stack: &SlotStack) -> bool {
    (0..plan.rows()).any(|r| plan.row(r).iter().any(|e| stack.rank(e.slot as usize) > 0))
}

pub fn random_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn random_stack(
    rng: &mut StdRng,
    slots: usize,
    r_max: usize,
    d_in: usize,
    d_out: usize,
) -> SlotStack {
    let mut stack = SlotStack::new(slots, r_max, d_in, d_out);
    for slot in 0..slots {
        // Some slots do not target this module (rank 0); ranks are mixed below r_max.
        let rank = if rng.random_bool(0.15) {
            0
        } else {
            rng.random_range(1..=r_max)
        };
        let a = random_vec(rng, rank * d_in);
        let b = random_vec(rng, d_out * rank);
        let scale = rng.random_range(0.1f32..4.0);
        stack.write_slot(slot, &a, &b, rank, scale).unwrap();
    }
    stack
}

pub fn random_plan(rng: &mut StdRng, rows: usize, slots: usize, k_max: usize) -> MixPlan {
    let mut plan = MixPlan::new();
    for _ in 0..rows {
        let k = rng.random_range(0..=k_max);
        let experts: Vec<SlotWeight> = (0..k)
            .map(|_| SlotWeight {
                slot: rng.random_range(0..slots as u32),
                weight: rng.random_range(-1.0f32..1.5),
            })
            .collect();
        plan.push_row(&experts);
    }
    plan
}
