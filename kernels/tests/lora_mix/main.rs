//! The LoRA mixture against its float64 reference, on random shapes, ranks, slots and plans:
//! the CPU path here, the CUDA kernels' CPU twins in `twins`, the CUDA kernels themselves
//! (feature `cuda`, on a GPU machine) in `cuda`.

#[cfg(feature = "cuda")]
mod cuda;
mod fixtures;
mod tensor;
mod tiers;
mod twins;

use fixtures::{random_plan, random_stack, random_vec};
use loramux_kernels::{
    lora_mix, reference::lora_mix_f64, KernelError, MixPlan, SlotStack, SlotWeight,
};
use rand::{rngs::StdRng, SeedableRng};

/// |fast − reference| ≤ 1e-4 · max(1, |reference|): f32 accumulation over d_in ≤ 1024 terms
/// of magnitude ≤ 1 stays well inside that.
fn assert_close(fast: &[f32], reference: &[f64], what: &str) {
    assert_eq!(fast.len(), reference.len());
    for (i, (&f, &r)) in fast.iter().zip(reference).enumerate() {
        let tol = 1e-4 * r.abs().max(1.0);
        assert!(
            (f as f64 - r).abs() <= tol,
            "{what}: element {i}: fast {f} vs reference {r}"
        );
    }
}

#[test]
fn matches_float64_twin_on_random_batches() {
    let mut rng = StdRng::seed_from_u64(0x10a4);
    let shapes = [
        (1, 8, 16, 24),
        (7, 16, 64, 32),
        (33, 8, 96, 160),
        (130, 4, 48, 40),
        (64, 64, 256, 128),
    ];
    for (case, &(rows, r_max, d_in, d_out)) in shapes.iter().enumerate() {
        for slots in [1usize, 3, 17] {
            let stack = random_stack(&mut rng, slots, r_max, d_in, d_out);
            let plan = random_plan(&mut rng, rows, slots, 4);
            let x = random_vec(&mut rng, rows * d_in);
            let y0 = random_vec(&mut rng, rows * d_out);
            let expected = lora_mix_f64(&x, &y0, &stack, &plan);
            let mut y = y0.clone();
            lora_mix(&x, &mut y, &stack, &plan).unwrap();
            assert_close(&y, &expected, &format!("case {case} slots {slots}"));
            // The mixture must really have changed y wherever a row has a ranked expert.
            let touched =
                (0..rows).any(|r| plan.row(r).iter().any(|e| stack.rank(e.slot as usize) > 0));
            if touched {
                assert!(y != y0, "case {case}: nothing was added");
            }
        }
    }
}

/// Decode-sized groups are split across threads by output rows; the sums must not depend
/// on how many threads there are (each row's groups are applied in the same order).
#[test]
fn thread_count_does_not_change_the_result() {
    let mut rng = StdRng::seed_from_u64(0x7e4d);
    let (rows, r_max, d_in, d_out, slots) = (32, 16, 576, 1536, 8);
    let stack = random_stack(&mut rng, slots, r_max, d_in, d_out);
    let plan = random_plan(&mut rng, rows, slots, 2);
    let x = random_vec(&mut rng, rows * d_in);
    let y0 = random_vec(&mut rng, rows * d_out);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut y = y0.clone();
        pool.install(|| lora_mix(&x, &mut y, &stack, &plan).unwrap());
        y
    };
    let one = run(1);
    assert_close(&one, &lora_mix_f64(&x, &y0, &stack, &plan), "one thread");
    assert!(one != y0, "nothing was added");
    for threads in [2, 3, 5] {
        assert_eq!(run(threads), one, "{threads} threads");
    }
}

/// Adapters whose values are all f16 values (saved in f16) take the half-size copy in the
/// small-group path; the sums must match the f64 reference like the f32 copy's do.
#[test]
fn f16_valued_adapters_take_the_half_copy_and_match_the_reference() {
    use loramux_kernels::SmallGroupCopy;
    let mut rng = StdRng::seed_from_u64(0xf16);
    for (rows, d_in, d_out) in [(8, 576, 1536), (5, 40, 24)] {
        let (slots, r_max) = (6, 16);
        let mut stack = SlotStack::new(slots, r_max, d_in, d_out);
        let half = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| half::f16::from_f32(x).to_f32())
                .collect()
        };
        for slot in 0..slots {
            let rank = [16, 8, 3][slot % 3];
            let a = half(random_vec(&mut rng, rank * d_in));
            let b = half(random_vec(&mut rng, d_out * rank));
            stack.write_slot(slot, &a, &b, rank, 0.5).unwrap();
            assert!(matches!(
                stack.small_group_copy(slot),
                SmallGroupCopy::Half { .. }
            ));
        }
        // One value that f16 cannot hold keeps a slot on the f32 copy.
        let mut a = half(random_vec(&mut rng, 4 * d_in));
        a[0] = 1.0 + 1e-6;
        stack
            .write_slot(0, &a, &half(random_vec(&mut rng, d_out * 4)), 4, 2.0)
            .unwrap();
        assert!(matches!(
            stack.small_group_copy(0),
            SmallGroupCopy::Full { .. }
        ));
        let plan = random_plan(&mut rng, rows, slots, 2);
        let x = random_vec(&mut rng, rows * d_in);
        let y0 = random_vec(&mut rng, rows * d_out);
        let mut y = y0.clone();
        lora_mix(&x, &mut y, &stack, &plan).unwrap();
        assert_close(&y, &lora_mix_f64(&x, &y0, &stack, &plan), "f16 slots");
        assert!(y != y0, "nothing was added");
    }
}

#[test]
fn a_weighted_pair_equals_the_sum_of_single_experts() {
    let mut rng = StdRng::seed_from_u64(7);
    let (rows, d_in, d_out) = (5, 32, 20);
    let mut stack = SlotStack::new(2, 4, d_in, d_out);
    for slot in 0..2 {
        let (a, b) = (
            random_vec(&mut rng, 4 * d_in),
            random_vec(&mut rng, d_out * 4),
        );
        stack.write_slot(slot, &a, &b, 4, 0.5).unwrap();
    }
    let x = random_vec(&mut rng, rows * d_in);
    let pair = MixPlan::uniform(
        rows,
        &[
            SlotWeight {
                slot: 0,
                weight: 0.3,
            },
            SlotWeight {
                slot: 1,
                weight: 0.7,
            },
        ],
    );
    let mut y_pair = vec![0.0; rows * d_out];
    lora_mix(&x, &mut y_pair, &stack, &pair).unwrap();
    let mut y_single = vec![0.0; rows * d_out];
    lora_mix(
        &x,
        &mut y_single,
        &stack,
        &MixPlan::uniform(
            rows,
            &[SlotWeight {
                slot: 0,
                weight: 0.3,
            }],
        ),
    )
    .unwrap();
    lora_mix(
        &x,
        &mut y_single,
        &stack,
        &MixPlan::uniform(
            rows,
            &[SlotWeight {
                slot: 1,
                weight: 0.7,
            }],
        ),
    )
    .unwrap();
    for (p, s) in y_pair.iter().zip(&y_single) {
        assert!((p - s).abs() <= 1e-5 * s.abs().max(1.0), "{p} vs {s}");
    }
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    let stack = SlotStack::new(2, 4, 8, 6);
    let plan = MixPlan::uniform(
        2,
        &[SlotWeight {
            slot: 1,
            weight: 1.0,
        }],
    );
    let mut y = vec![0.0; 12];
    assert_eq!(
        lora_mix(&[0.5; 15], &mut y, &stack, &plan),
        Err(KernelError::InputShape { len: 15, d_in: 8 })
    );
    let mut short = vec![0.0; 11];
    assert!(matches!(
        lora_mix(&[0.5; 16], &mut short, &stack, &plan),
        Err(KernelError::OutputShape { .. })
    ));
    let bad_slot = MixPlan::uniform(
        2,
        &[SlotWeight {
            slot: 9,
            weight: 1.0,
        }],
    );
    assert!(matches!(
        lora_mix(&[0.5; 16], &mut y, &stack, &bad_slot),
        Err(KernelError::SlotOutOfRange { slot: 9, .. })
    ));
    let mut s = SlotStack::new(1, 4, 8, 6);
    assert!(matches!(
        s.write_slot(0, &[0.0; 40], &[0.0; 30], 5, 1.0),
        Err(KernelError::RankTooLarge { .. })
    ));
    assert!(matches!(
        s.write_slot(0, &[0.0; 8], &[0.0; 6], 2, 1.0),
        Err(KernelError::SlotShape { what: "A", .. })
    ));
}
