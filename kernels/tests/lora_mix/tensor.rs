//! `lora_mix_tensor` on CPU tensors: the same numbers as the slice API, in every dtype, and
//! typed errors for mismatched inputs.

use super::fixtures::{random_plan, random_stack, random_vec, relative_error};
use candle_core::{DType, Device, Tensor};
use loramux_kernels::reference::lora_mix_f64;
use loramux_kernels::{lora_mix_tensor, DeviceSlotStack, KernelError, MixPlan};
use rand::{rngs::StdRng, SeedableRng};

#[test]
fn cpu_tensors_take_the_cpu_path_in_every_dtype() {
    let mut rng = StdRng::seed_from_u64(21);
    let (rows, r_max, slots, d_in, d_out) = (12, 16, 5, 48, 40);
    let host = random_stack(&mut rng, slots, r_max, d_in, d_out);
    let plan = random_plan(&mut rng, rows, slots, 4);
    let x = random_vec(&mut rng, rows * d_in);
    let y0 = random_vec(&mut rng, rows * d_out);
    let want = lora_mix_f64(&x, &y0, &host, &plan);
    // f32 is exact up to summation order; f16/bf16 round x, y, A and B on the way in and
    // the result on the way out.
    for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::F16, 1e-2), (DType::BF16, 2e-2)] {
        let stack = DeviceSlotStack::upload(host.clone(), dtype, &Device::Cpu).unwrap();
        let xt = Tensor::from_vec(x.clone(), (rows, d_in), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .unwrap();
        let yt = Tensor::from_vec(y0.clone(), (rows, d_out), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .unwrap();
        let out = lora_mix_tensor(&xt, &yt, &stack, &plan).unwrap();
        assert_eq!(out.dtype(), dtype);
        let got = out
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .unwrap();
        let err = relative_error(&got, &want);
        assert!(err <= tolerance, "{dtype:?}: relative error {err:e}");
    }
}

#[test]
fn mismatched_tensors_are_typed_errors() {
    let mut rng = StdRng::seed_from_u64(22);
    let host = random_stack(&mut rng, 2, 4, 8, 6);
    let stack = DeviceSlotStack::upload(host, DType::F32, &Device::Cpu).unwrap();
    let plan = MixPlan::uniform(3, &[]);
    let x = Tensor::zeros((3, 8), DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::zeros((3, 6), DType::F32, &Device::Cpu).unwrap();
    // An empty plan returns y itself.
    let same = lora_mix_tensor(&x, &y, &stack, &plan).unwrap();
    assert!(same.is_contiguous() && same.dims() == [3, 6]);
    let wide = Tensor::zeros((3, 9), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        lora_mix_tensor(&wide, &y, &stack, &plan).unwrap_err(),
        KernelError::TensorShape {
            what: "x",
            shape: vec![3, 9],
            expected: vec![3, 8]
        }
    );
    let y_bf16 = y.to_dtype(DType::BF16).unwrap();
    assert!(matches!(
        lora_mix_tensor(&x, &y_bf16, &stack, &plan),
        Err(KernelError::DtypeMismatch { .. })
    ));
    assert!(matches!(
        lora_mix_tensor(&x, &y, &stack, &MixPlan::uniform(2, &[])),
        Err(KernelError::PlanRows { .. })
    ));
}
