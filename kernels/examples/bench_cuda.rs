//! Benchmark of the fused LoRA kernels on one GPU (feature `cuda`):
//!
//!     bench_cuda [--dtype bf16|f16|f32] [--iters N]
//!
//! For hidden 4096, rank 8/16/64, batches of 1..256 tokens over 1..256 distinct adapters (one
//! expert per token, token i on adapter i mod n), it prints one table: time per call of
//! `lora_mix_tensor` (plan upload and both launches included), the bytes that call must move
//! (A and B of the distinct adapters it gathers, x, y read and written) per second, that
//! rate against a measured device-to-device copy, and the time of a reference that loops
//! over the adapters with cuBLAS GEMMs (candle matmuls per adapter group).

use candle_core::{DType, Device, Tensor};
use loramux_kernels::{lora_mix_tensor, DeviceSlotStack, MixPlan, SlotStack, SlotWeight};
use std::error::Error;
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const HIDDEN: usize = 4096;
const SLOTS: usize = 256;
const RANKS: [usize; 3] = [8, 16, 64];
const BATCHES: [usize; 5] = [1, 4, 16, 64, 256];
const ADAPTERS: [usize; 5] = [1, 4, 16, 64, 256];

struct Case {
    rank: usize,
    adapters: usize,
    batch: usize,
}

fn main() -> Result<()> {
    let (dtype, iters) = parse_args()?;
    let device = Device::new_cuda(0)?;
    let copy_gbs = copy_bandwidth(&device)?;
    println!(
        "loramux fused LoRA kernels, {dtype:?}, hidden {HIDDEN}, {SLOTS} resident slots, \
         {iters} timed calls per cell; device-to-device copy: {copy_gbs:.0} GB/s (read + write)"
    );
    println!(
        "{:>4} {:>8} {:>5} | {:>10} {:>8} {:>6} | {:>12} {:>8} | {:>8}",
        "rank",
        "adapters",
        "batch",
        "fused µs",
        "GB/s",
        "% copy",
        "cuBLAS µs",
        "speedup",
        "rel err"
    );
    for rank in RANKS {
        let host = random_stack(rank)?;
        let stack = DeviceSlotStack::upload(host.clone(), dtype, &device)?;
        let reference = ReferenceStack::new(&host, dtype, &device)?;
        for batch in BATCHES {
            for adapters in ADAPTERS.into_iter().filter(|&n| n <= batch) {
                let case = Case {
                    rank,
                    adapters,
                    batch,
                };
                run_case(&case, &stack, &reference, &device, iters, copy_gbs)?;
            }
        }
    }
    Ok(())
}

fn parse_args() -> Result<(DType, usize)> {
    let (mut dtype, mut iters) = (DType::BF16, 20);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--dtype" => {
                dtype = match value.as_str() {
                    "bf16" => DType::BF16,
                    "f16" => DType::F16,
                    "f32" => DType::F32,
                    other => return Err(format!("unknown dtype {other}").into()),
                }
            }
            "--iters" => iters = value.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok((dtype, iters.max(1)))
}

fn run_case(
    case: &Case,
    stack: &DeviceSlotStack,
    reference: &ReferenceStack,
    device: &Device,
    iters: usize,
    copy_gbs: f64,
) -> Result<()> {
    let dtype = stack.dtype();
    let mut seed = 0x5eed ^ (case.batch * 1000 + case.adapters) as u64;
    let weights: Vec<f32> = (0..case.batch)
        .map(|_| 0.5 + uniform(&mut seed).abs())
        .collect();
    let mut plan = MixPlan::with_capacity(case.batch, 1);
    for (row, &weight) in weights.iter().enumerate() {
        let slot = (row % case.adapters) as u32;
        plan.push_row(&[SlotWeight { slot, weight }]);
    }
    let x = random_tensor(&mut seed, case.batch, dtype, device)?;
    let y = random_tensor(&mut seed, case.batch, dtype, device)?;

    let fused = time_per_call(device, iters, || Ok(lora_mix_tensor(&x, &y, stack, &plan)?))?;
    let groups = reference.groups(case, &weights, device)?;
    let looped = time_per_call(device, iters, || reference.apply(&x, &y, &groups))?;

    let elem = dtype.size_in_bytes() as f64;
    let adapter_bytes = (case.adapters * 2 * case.rank * HIDDEN) as f64 * elem;
    let activation_bytes = (3 * case.batch * HIDDEN) as f64 * elem;
    let gbs = (adapter_bytes + activation_bytes) / fused / 1e9;
    let got = lora_mix_tensor(&x, &y, stack, &plan)?;
    let want = reference.apply(&x, &y, &groups)?;
    println!(
        "{:>4} {:>8} {:>5} | {:>10.1} {:>8.0} {:>5.0}% | {:>12.1} {:>7.1}x | {:>8.1e}",
        case.rank,
        case.adapters,
        case.batch,
        fused * 1e6,
        gbs,
        100.0 * gbs / copy_gbs,
        looped * 1e6,
        looped / fused,
        relative_difference(&got, &want)?,
    );
    Ok(())
}

/// Seconds per call after three warm-up calls, the device drained before and after.
fn time_per_call(
    device: &Device,
    iters: usize,
    mut call: impl FnMut() -> Result<Tensor>,
) -> Result<f64> {
    for _ in 0..3 {
        call()?;
    }
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..iters {
        call()?;
    }
    device.synchronize()?;
    Ok(start.elapsed().as_secs_f64() / iters as f64)
}

/// GB/s of a 1 GiB device-to-device copy, counting the bytes read and the bytes written.
fn copy_bandwidth(device: &Device) -> Result<f64> {
    let cuda = device.as_cuda_device()?;
    let len = 1 << 28; // f32 elements: 1 GiB
    let src = cuda.alloc_zeros::<f32>(len)?;
    let mut dst = cuda.alloc_zeros::<f32>(len)?;
    cuda.memcpy_dtod(&src, &mut dst)?;
    device.synchronize()?;
    let copies = 10;
    let start = Instant::now();
    for _ in 0..copies {
        cuda.memcpy_dtod(&src, &mut dst)?;
    }
    device.synchronize()?;
    let seconds = start.elapsed().as_secs_f64() / copies as f64;
    Ok(2.0 * (len * 4) as f64 / seconds / 1e9)
}

/// The reference: A and B as candle tensors, one pair of cuBLAS GEMMs per adapter group.
struct ReferenceStack {
    a: Tensor,
    b: Tensor,
    scales: Vec<f32>,
}

/// One adapter's rows: their indices and weights · scale, on the device.
struct Group {
    slot: usize,
    rows: Tensor,
    factors: Tensor,
}

impl ReferenceStack {
    fn new(host: &SlotStack, dtype: DType, device: &Device) -> Result<Self> {
        let (r, d) = (host.r_max(), HIDDEN);
        let a = Tensor::from_slice(host.a_all(), (SLOTS, r, d), device)?.to_dtype(dtype)?;
        let b = Tensor::from_slice(host.b_all(), (SLOTS, d, r), device)?.to_dtype(dtype)?;
        let scales = (0..SLOTS).map(|s| host.scale(s)).collect();
        Ok(Self { a, b, scales })
    }

    fn groups(&self, case: &Case, weights: &[f32], device: &Device) -> Result<Vec<Group>> {
        let dtype = self.a.dtype();
        (0..case.adapters)
            .map(|slot| {
                let rows: Vec<u32> = (slot..case.batch)
                    .step_by(case.adapters)
                    .map(|r| r as u32)
                    .collect();
                let factors: Vec<f32> = rows
                    .iter()
                    .map(|&r| weights[r as usize] * self.scales[slot])
                    .collect();
                let m = rows.len();
                Ok(Group {
                    slot,
                    rows: Tensor::from_vec(rows, m, device)?,
                    factors: Tensor::from_vec(factors, (m, 1), device)?.to_dtype(dtype)?,
                })
            })
            .collect()
    }

    fn apply(&self, x: &Tensor, y: &Tensor, groups: &[Group]) -> Result<Tensor> {
        let mut y = y.clone();
        for g in groups {
            let xg = x.index_select(&g.rows, 0)?;
            let t = xg.matmul(&self.a.get(g.slot)?.t()?)?;
            let t = t.broadcast_mul(&g.factors)?;
            let out = t.matmul(&self.b.get(g.slot)?.t()?)?;
            y = y.index_add(&g.rows, &out, 0)?;
        }
        Ok(y)
    }
}

fn relative_difference(got: &Tensor, want: &Tensor) -> Result<f64> {
    let got = got.to_dtype(DType::F32)?;
    let want = want.to_dtype(DType::F32)?;
    let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok((diff / scale.max(f32::MIN_POSITIVE)) as f64)
}

/// xorshift64: the benchmark needs varied values, not a statistical generator.
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

fn random_tensor(seed: &mut u64, rows: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..rows * HIDDEN).map(|_| uniform(seed)).collect();
    Ok(Tensor::from_vec(values, (rows, HIDDEN), device)?.to_dtype(dtype)?)
}

/// Every slot holds a rank-`rank` adapter with LoRA-sized values (A ~ 1/√d, B small).
fn random_stack(rank: usize) -> Result<SlotStack> {
    let mut stack = SlotStack::new(SLOTS, rank, HIDDEN, HIDDEN);
    let mut seed = 0x10a4 + rank as u64;
    let a_scale = 1.0 / (HIDDEN as f32).sqrt();
    for slot in 0..SLOTS {
        let a: Vec<f32> = (0..rank * HIDDEN)
            .map(|_| uniform(&mut seed) * a_scale)
            .collect();
        let b: Vec<f32> = (0..HIDDEN * rank)
            .map(|_| uniform(&mut seed) * 0.05)
            .collect();
        stack.write_slot(slot, &a, &b, rank, 2.0)?;
    }
    Ok(stack)
}
