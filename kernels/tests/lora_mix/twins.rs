//! The CPU twins of the CUDA kernels against the float64 reference, per element type:
//! f32 within 1e-5, f16 and bf16 within 1e-2 of the reference computed on the same rounded
//! inputs (relative to the largest output, see `relative_error`).

use super::fixtures::{
    plan_touches, random_plan, random_stack, random_vec, relative_error, round_stack, ShapeClass,
    SHAPE_CLASSES,
};
use half::{bf16, f16};
use loramux_kernels::element::{convert_from_f32, round_through};
use loramux_kernels::reference::lora_mix_f64;
use loramux_kernels::twin::{lora_expand_twin, lora_mix_twin, lora_shrink_twin, TwinStack};
use loramux_kernels::{DensePlan, Element, KernelError, MixPlan, SlotStack, SlotWeight};
use rand::{rngs::StdRng, SeedableRng};

fn check_class<T: Element>(class: &ShapeClass, seed: u64, tolerance: f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = class;
    let stack = random_stack(&mut rng, c.slots, c.r_max, c.d_in, c.d_out);
    let plan = random_plan(&mut rng, c.rows, c.slots, c.k_max);
    let x = random_vec(&mut rng, c.rows * c.d_in);
    let y0 = random_vec(&mut rng, c.rows * c.d_out);
    // The reference sees exactly the values the twin sees: inputs rounded through T.
    let (x_r, y0_r, stack_r) = (
        round_through::<T>(&x),
        round_through::<T>(&y0),
        round_stack::<T>(&stack),
    );
    let want = lora_mix_f64(&x_r, &y0_r, &stack_r, &plan);
    let twin_stack = TwinStack::<T>::from_host(&stack);
    for splits in [1, 3] {
        let mut y: Vec<T> = convert_from_f32(&y0);
        lora_mix_twin(&twin_stack, &plan, splits, &convert_from_f32(&x), &mut y).unwrap();
        let got: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
        let err = relative_error(&got, &want);
        assert!(
            err <= tolerance,
            "{:?} {} (splits {splits}): relative error {err:e} > {tolerance:e}",
            T::DTYPE,
            c.name
        );
    }
    // The tolerance means something: leaving the mixture out fails it.
    if plan_touches(&plan, &stack) {
        let untouched = relative_error(&y0_r, &want);
        assert!(untouched > 2.0 * tolerance, "{}: {untouched:e}", c.name);
    }
}

#[test]
fn f32_twins_match_the_reference_on_every_shape_class() {
    for (i, class) in SHAPE_CLASSES.iter().enumerate() {
        check_class::<f32>(class, 100 + i as u64, 1e-5);
    }
}

#[test]
fn f16_twins_match_the_reference_on_rounded_inputs() {
    for (i, class) in SHAPE_CLASSES.iter().enumerate() {
        check_class::<f16>(class, 200 + i as u64, 1e-2);
    }
}

#[test]
fn bf16_twins_match_the_reference_on_rounded_inputs() {
    for (i, class) in SHAPE_CLASSES.iter().enumerate() {
        check_class::<bf16>(class, 300 + i as u64, 1e-2);
    }
}

#[test]
fn shrink_writes_per_split_partial_sums_that_add_up_to_a_times_x() {
    let mut rng = StdRng::seed_from_u64(11);
    let (d_in, d_out) = (70, 5);
    let mut host = SlotStack::new(2, 3, d_in, d_out);
    let a = random_vec(&mut rng, 2 * d_in);
    host.write_slot(1, &a, &random_vec(&mut rng, d_out * 2), 2, 1.0)
        .unwrap();
    let stack = TwinStack::<f32>::from_host(&host);
    let plan = DensePlan::new(&MixPlan::uniform(
        1,
        &[SlotWeight {
            slot: 1,
            weight: 1.0,
        }],
    ));
    let x = random_vec(&mut rng, d_in);
    let splits = 3;
    let mut t = vec![f32::NAN; splits * 3];
    lora_shrink_twin(&stack, &plan, splits, &x, &mut t).unwrap();
    for r in 0..2 {
        let summed: f32 = (0..splits).map(|s| t[s * 3 + r]).sum();
        let direct: f32 = a[r * d_in..(r + 1) * d_in]
            .iter()
            .zip(&x)
            .map(|(p, q)| p * q)
            .sum();
        assert!((summed - direct).abs() <= 1e-5 * direct.abs().max(1.0));
    }
    // Rank 2 of r_max 3: the padding rank is never written.
    assert!((0..splits).all(|s| t[s * 3 + 2].is_nan()));
}

#[test]
fn twins_refuse_wrong_lengths_instead_of_panicking() {
    let host = SlotStack::new(2, 4, 8, 6);
    let stack = TwinStack::<bf16>::from_host(&host);
    let plan = DensePlan::new(&MixPlan::uniform(
        2,
        &[SlotWeight {
            slot: 1,
            weight: 1.0,
        }],
    ));
    let mut t = vec![0f32; 2 * 4];
    assert_eq!(
        lora_shrink_twin(&stack, &plan, 1, &[bf16::ZERO; 15], &mut t),
        Err(KernelError::BufferLength {
            what: "x",
            len: 15,
            expected: 16
        })
    );
    let mut y = vec![bf16::ZERO; 11];
    assert!(matches!(
        lora_expand_twin(&stack, &plan, 1, &t, &mut y),
        Err(KernelError::BufferLength { what: "y", .. })
    ));
    let bad = MixPlan::uniform(
        2,
        &[SlotWeight {
            slot: 7,
            weight: 1.0,
        }],
    );
    let mut y = vec![bf16::ZERO; 12];
    assert!(matches!(
        lora_mix_twin(&stack, &bad, 1, &[bf16::ZERO; 16], &mut y),
        Err(KernelError::SlotOutOfRange { slot: 7, .. })
    ));
}
