//! Every SIMD tier of the CPU path's small groups against the float64 reference, on the
//! shapes of real models (decode rows over many adapters, f32 and f16-valued slots, widths
//! that fill whole registers and widths that make a tier fall back). Each tier this CPU has
//! runs; the others are reported as skipped by name.

use super::assert_close;
use super::fixtures::{random_plan, random_stack, random_vec};
use loramux_kernels::{lora_mix_cpu_on, reference::lora_mix_f64, CpuTier, KernelError, SlotStack};
use rand::{rngs::StdRng, SeedableRng};

fn f16_valued(stack: &SlotStack, rng: &mut StdRng) -> SlotStack {
    let mut out = SlotStack::new(stack.slots(), stack.r_max(), stack.d_in(), stack.d_out());
    let half = |v: Vec<f32>| -> Vec<f32> {
        v.into_iter()
            .map(|x| half::f16::from_f32(x).to_f32())
            .collect()
    };
    for slot in 0..stack.slots() {
        let rank = stack.rank(slot);
        let a = half(random_vec(rng, rank * stack.d_in()));
        let b = half(random_vec(rng, stack.d_out() * rank));
        out.write_slot(slot, &a, &b, rank, stack.scale(slot))
            .unwrap();
    }
    out
}

#[test]
fn every_tier_this_cpu_has_matches_the_float64_reference() {
    let mut ran = Vec::new();
    for tier in CpuTier::ALL {
        if let Err(why) = tier.check() {
            eprintln!("tier {}: skipped ({why})", tier.name());
            assert!(matches!(why, KernelError::TierUnavailable { .. }));
            continue;
        }
        let mut rng = StdRng::seed_from_u64(0x71e5);
        // SmolLM2's q/o (576 → 576), k/v (576 → 192), MLP up (576 → 1536) and down
        // (1536 → 576); 200 is a multiple of 8 but not of 16; 36 of neither.
        for (d_in, d_out) in [
            (576, 576),
            (576, 192),
            (576, 1536),
            (1536, 576),
            (200, 200),
            (36, 20),
        ] {
            for rows in [1, 3, 4, 9, 16] {
                let stack = random_stack(&mut rng, 12, 16, d_in, d_out);
                let half = f16_valued(&stack, &mut rng);
                for (stack, kind) in [(&stack, "f32"), (&half, "f16")] {
                    let plan = random_plan(&mut rng, rows, stack.slots(), 3);
                    let x = random_vec(&mut rng, rows * d_in);
                    let y0 = random_vec(&mut rng, rows * d_out);
                    let mut y = y0.clone();
                    lora_mix_cpu_on(tier, &x, &mut y, stack, &plan).unwrap();
                    let what = format!("{} {kind} {d_in}x{d_out} rows {rows}", tier.name());
                    assert_close(&y, &lora_mix_f64(&x, &y0, stack, &plan), &what);
                }
            }
        }
        ran.push(tier.name());
    }
    eprintln!("tiers run: {ran:?}");
    assert!(ran.contains(&"portable"));
    assert_eq!(
        CpuTier::best().name(),
        ran[0],
        "the best tier is the fastest one run"
    );
}
