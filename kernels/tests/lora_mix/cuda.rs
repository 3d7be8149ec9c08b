//! The CUDA kernels against their CPU twins (feature `cuda`, GPU machines only): relative
//! error ≤ 1e-5 in f32 and ≤ 1e-2 in f16/bf16 on every shape class. Without a usable GPU
//! each test prints why and passes.

use super::fixtures::{
    plan_touches, random_plan, random_stack, random_vec, relative_error, ShapeClass, SHAPE_CLASSES,
};
use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use loramux_kernels::element::convert_from_f32;
use loramux_kernels::eligibility::{cuda_eligibility, MixRequest};
use loramux_kernels::launch_shape::shrink_splits;
use loramux_kernels::reference::lora_mix_f64;
use loramux_kernels::twin::{lora_mix_twin, TwinStack};
use loramux_kernels::{device_kind, lora_mix_tensor, DensePlan, DeviceSlotStack, Element};
use rand::{rngs::StdRng, SeedableRng};

/// The first GPU, or None (with the reason printed) where there is none.
fn gpu(test: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(e) => {
            eprintln!("{test}: skipped, no CUDA device 0 ({e})");
            None
        }
    }
}

fn multiprocessors(device: &Device) -> usize {
    let cuda = device.as_cuda_device().unwrap();
    cuda.cuda_stream()
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .unwrap() as usize
}

fn to_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap()
}

/// Runs one class on the GPU and on the twin (with the GPU's split count) and compares.
fn check_class<T: Element>(device: &Device, class: &ShapeClass, seed: u64, tolerance: f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = class;
    let host = random_stack(&mut rng, c.slots, c.r_max, c.d_in, c.d_out);
    let plan = random_plan(&mut rng, c.rows, c.slots, c.k_max);
    let x = random_vec(&mut rng, c.rows * c.d_in);
    let y0 = random_vec(&mut rng, c.rows * c.d_out);

    let stack = DeviceSlotStack::upload(host.clone(), T::DTYPE, device).unwrap();
    let tensor = |values: &[f32], cols: usize| {
        Tensor::from_vec(values.to_vec(), (c.rows, cols), device)
            .and_then(|t| t.to_dtype(T::DTYPE))
            .unwrap()
    };
    let (xt, yt) = (tensor(&x, c.d_in), tensor(&y0, c.d_out));
    let k = plan.max_experts();
    let request = MixRequest {
        dtype: T::DTYPE,
        r_max: c.r_max,
        k_max: k,
        d_in: c.d_in,
        d_out: c.d_out,
        rows: c.rows,
        slots: c.slots,
        device: device_kind(device),
    };
    // Every class with an expert must really run on the kernels, not on the fallback.
    if k > 0 {
        assert_eq!(cuda_eligibility(&request), Ok(()), "{}", c.name);
    }
    let got = to_f32(&lora_mix_tensor(&xt, &yt, &stack, &plan).unwrap());

    let splits = shrink_splits(c.rows * k, c.r_max, c.d_in, multiprocessors(device));
    let twin_stack = TwinStack::<T>::from_host(&host);
    let mut y_twin: Vec<T> = convert_from_f32(&y0);
    lora_mix_twin(
        &twin_stack,
        &plan,
        splits,
        &convert_from_f32(&x),
        &mut y_twin,
    )
    .unwrap();
    let want: Vec<f64> = y_twin.iter().map(|v| v.to_f32() as f64).collect();
    let err = relative_error(&got, &want);
    assert!(
        err <= tolerance,
        "{:?} {}: CUDA vs twin relative error {err:e} > {tolerance:e}",
        T::DTYPE,
        c.name
    );
    if plan_touches(&plan, &host) {
        let untouched = relative_error(&to_f32(&yt), &want);
        assert!(untouched > 2.0 * tolerance, "{}: {untouched:e}", c.name);
    }
}

#[test]
fn cuda_f32_matches_the_twin_on_every_shape_class() {
    let Some(device) = gpu("cuda_f32") else {
        return;
    };
    for (i, class) in SHAPE_CLASSES.iter().enumerate() {
        check_class::<f32>(&device, class, 400 + i as u64, 1e-5);
    }
}

#[test]
fn cuda_f16_matches_the_twin_on_every_shape_class() {
    let Some(device) = gpu("cuda_f16") else {
        return;
    };
    for (i, class) in SHAPE_CLASSES.iter().enumerate() {
        check_class::<f16>(&device, class, 500 + i as u64, 1e-2);
    }
}

#[test]
fn cuda_bf16_matches_the_twin_on_every_shape_class() {
    let Some(device) = gpu("cuda_bf16") else {
        return;
    };
    for (i, class) in SHAPE_CLASSES.iter().enumerate() {
        check_class::<bf16>(&device, class, 600 + i as u64, 1e-2);
    }
}

#[test]
fn ineligible_calls_on_a_gpu_fall_back_to_the_cpu_path() {
    let Some(device) = gpu("cuda_fallback") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(700);
    // r_max 80 > 64 and rows with 5 experts > 4: both are refused by the kernels.
    let (rows, r_max, slots, d_in, d_out) = (6, 80, 7, 64, 48);
    let host = random_stack(&mut rng, slots, r_max, d_in, d_out);
    let plan = random_plan(&mut rng, rows, slots, 5);
    let x = random_vec(&mut rng, rows * d_in);
    let y0 = random_vec(&mut rng, rows * d_out);
    let want = lora_mix_f64(&x, &y0, &host, &plan);
    let stack = DeviceSlotStack::upload(host, DType::F32, &device).unwrap();
    let xt = Tensor::from_vec(x, (rows, d_in), &device).unwrap();
    let yt = Tensor::from_vec(y0, (rows, d_out), &device).unwrap();
    let out = lora_mix_tensor(&xt, &yt, &stack, &plan).unwrap();
    assert!(out.device().same_device(&device));
    let err = relative_error(&to_f32(&out), &want);
    assert!(err <= 1e-5, "fallback relative error {err:e}");
}

#[test]
fn a_slot_rewritten_on_the_device_is_used_by_the_next_call() {
    let Some(device) = gpu("cuda_write_slot") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(800);
    let (rows, r_max, slots, d_in, d_out) = (4, 16, 3, 96, 64);
    let host = random_stack(&mut rng, slots, r_max, d_in, d_out);
    let plan = random_plan(&mut rng, rows, slots, 3);
    let mut stack = DeviceSlotStack::upload(host, DType::BF16, &device).unwrap();
    let (a, b) = (
        random_vec(&mut rng, 8 * d_in),
        random_vec(&mut rng, d_out * 8),
    );
    stack.write_slot(1, &a, &b, 8, 0.75).unwrap();
    stack.clear_slot(2).unwrap();
    let x = random_vec(&mut rng, rows * d_in);
    let y0 = random_vec(&mut rng, rows * d_out);
    let xt = Tensor::from_vec(x.clone(), (rows, d_in), &device)
        .and_then(|t| t.to_dtype(DType::BF16))
        .unwrap();
    let yt = Tensor::from_vec(y0.clone(), (rows, d_out), &device)
        .and_then(|t| t.to_dtype(DType::BF16))
        .unwrap();
    let got = to_f32(&lora_mix_tensor(&xt, &yt, &stack, &plan).unwrap());
    let twin_stack = TwinStack::<bf16>::from_host(stack.host());
    let mut y_twin: Vec<bf16> = convert_from_f32(&y0);
    let k = DensePlan::new(&plan).k();
    let splits = shrink_splits(rows * k, r_max, d_in, multiprocessors(&device));
    lora_mix_twin(
        &twin_stack,
        &plan,
        splits,
        &convert_from_f32(&x),
        &mut y_twin,
    )
    .unwrap();
    let want: Vec<f64> = y_twin.iter().map(|v| v.to_f32() as f64).collect();
    let err = relative_error(&got, &want);
    assert!(err <= 1e-2, "after write_slot: relative error {err:e}");
}
