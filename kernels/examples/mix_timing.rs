//! Times `lora_mix_cpu` on decode-shaped batches: one adapter for every row against eight
//! adapters with two experts per row (the learned gate's shape), so the cost of many small
//! slot groups shows next to one big one. Times are this thread's CPU time, so a busy
//! machine slows the run but not the figures. `cargo run -p loramux-kernels --example mix_timing`.

use loramux_kernels::{lora_mix_cpu, MixPlan, SlotStack, SlotWeight};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// CPU time of this thread in seconds: the machine may be busy with other work, and time
/// spent descheduled is not the kernel's.
fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec for the call's duration.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.sec as f64 + t.nsec as f64 * 1e-9
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    let (d_in, rank, slots) = (576, 16, 8);
    for d_out in [576, 1536] {
        let mut stack = SlotStack::new(slots, rank, d_in, d_out);
        for s in 0..slots {
            let a = random(&mut rng, rank * d_in);
            let b = random(&mut rng, d_out * rank);
            stack.write_slot(s, &a, &b, rank, 0.5).unwrap();
        }
        for rows in [8usize, 32] {
            let x = random(&mut rng, rows * d_in);
            let mut y = vec![0.0f32; rows * d_out];
            let one = MixPlan::uniform(
                rows,
                &[SlotWeight {
                    slot: 0,
                    weight: 1.0,
                }],
            );
            let mut gated = MixPlan::new();
            for r in 0..rows {
                let first = (r * 3) % slots;
                gated.push_row(&[
                    SlotWeight {
                        slot: first as u32,
                        weight: 0.7,
                    },
                    SlotWeight {
                        slot: ((first + 1 + r % 5) % slots) as u32,
                        weight: 0.3,
                    },
                ]);
            }
            let time = |plan: &MixPlan, y: &mut [f32]| {
                let reps = 2000;
                let t = thread_cpu_seconds();
                for _ in 0..reps {
                    lora_mix_cpu(&x, y, &stack, plan).unwrap();
                }
                (thread_cpu_seconds() - t) / reps as f64 * 1e6
            };
            let t_one = time(&one, &mut y);
            let t_gate = time(&gated, &mut y);
            println!(
                "d_out {d_out:>5} rows {rows:>3}: one adapter {t_one:>7.1} us, top-2 of 8 {t_gate:>7.1} us, ratio {:.2}",
                t_gate / t_one
            );
        }
    }
}
