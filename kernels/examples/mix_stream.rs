//! Streams the LoRA mixture over as many adapter bytes as a decode step of the default model
//! reads (30 layers of 576 → 1536 stacks, 8 slots of rank 16 in f16), one distinct adapter per
//! row, and reports the wall time per call and the rate at which adapter bytes go through.
//! Unlike `mix_timing`, the weights do not stay in the core's caches between calls.
//! `cargo run -p loramux-kernels --example mix_stream`.

use half::f16;
use loramux_kernels::{lora_mix_cpu, MixPlan, SlotStack, SlotWeight};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Random values that are exact in f16, as PEFT's f16 adapters are (the kernel then reads
/// its half-size copy).
fn random_f16_exact(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| f16::from_f32(rng.random_range(-1.0..1.0)).to_f32())
        .collect()
}

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    let (layers, slots, rank) = (30, 8, 16);
    for (d_in, d_out) in [(576, 1536), (1536, 576), (576, 576)] {
        let stacks: Vec<SlotStack> = (0..layers)
            .map(|_| {
                let mut stack = SlotStack::new(slots, rank, d_in, d_out);
                for s in 0..slots {
                    let a = random_f16_exact(&mut rng, rank * d_in);
                    let b = random_f16_exact(&mut rng, d_out * rank);
                    stack.write_slot(s, &a, &b, rank, 0.5).unwrap();
                }
                stack
            })
            .collect();
        for rows in [8usize, 32] {
            let x: Vec<f32> = (0..rows * d_in)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let mut y = vec![0.0f32; rows * d_out];
            let mut plan = MixPlan::new();
            for r in 0..rows {
                plan.push_row(&[SlotWeight {
                    slot: (r % slots) as u32,
                    weight: 1.0,
                }]);
            }
            let reps = 200;
            let t = Instant::now();
            for _ in 0..reps {
                for stack in &stacks {
                    lora_mix_cpu(&x, &mut y, stack, &plan).unwrap();
                }
            }
            let per_call = t.elapsed().as_secs_f64() / (reps * layers) as f64;
            let bytes = (rows.min(slots) * rank * (d_in + d_out) * 2) as f64;
            println!(
                "{d_in:>5} -> {d_out:>5}, {rows:>2} rows over {} adapters: {:>6.1} us per call, {:>5.1} GB/s of adapter weights",
                rows.min(slots),
                per_call * 1e6,
                bytes / per_call / 1e9
            );
        }
    }
}
