//! `lora_mix_tensor`: the LoRA mixture on candle tensors, on the device they live on.
//!
//! x `[rows, d_in]` and y `[rows, d_out]` share the [`DeviceSlotStack`]'s dtype and device;
//! the result is a new `[rows, d_out]` tensor `y + Σ_k w·s·B(Ax)`. CUDA tensors go through
//! the fused kernels when [`cuda_eligibility`] allows, everything else through the CPU path
//! (copied to the host in f32 and back).

use crate::eligibility::{cuda_eligibility, DeviceKind, MixRequest};
use crate::{lora_mix_cpu, DeviceSlotStack, KernelError, MixPlan, Result, SlotStack};
use candle_core::{DType, Device, Tensor};

/// Applies the mixture of `plan` to `y`: returns `y + Σ_k w_k · s · B(A x)` per row.
pub fn lora_mix_tensor(
    x: &Tensor,
    y: &Tensor,
    stack: &DeviceSlotStack,
    plan: &MixPlan,
) -> Result<Tensor> {
    let host = stack.host();
    let rows = x.dims().first().copied().unwrap_or(0);
    expect_matrix(x, "x", [rows, host.d_in()])?;
    expect_matrix(y, "y", [rows, host.d_out()])?;
    if x.dtype() != stack.dtype() || y.dtype() != stack.dtype() {
        return Err(KernelError::DtypeMismatch {
            x: x.dtype(),
            y: y.dtype(),
            stack: stack.dtype(),
        });
    }
    for (what, device) in [("x", x.device()), ("y", y.device())] {
        if !device.same_device(stack.device()) {
            return Err(KernelError::DeviceMismatch { what });
        }
    }
    plan.validate(rows, host.slots())?;
    if plan.is_empty() {
        // The base model alone: nothing to add, nothing to copy.
        return Ok(y.clone());
    }
    let request = MixRequest {
        dtype: x.dtype(),
        r_max: host.r_max(),
        k_max: plan.max_experts(),
        d_in: host.d_in(),
        d_out: host.d_out(),
        rows,
        slots: host.slots(),
        device: device_kind(x.device()),
    };
    if cuda_eligibility(&request).is_ok() {
        return lora_mix_fused(x, y, stack, plan);
    }
    lora_mix_via_host(x, y, host, plan)
}

#[cfg(feature = "cuda")]
use crate::cuda::lora_mix_device as lora_mix_fused;

/// Built without CUDA no input is on a CUDA device, so eligibility never sends a call here;
/// should that change, the caller gets an error rather than a wrong answer.
#[cfg(not(feature = "cuda"))]
fn lora_mix_fused(_: &Tensor, _: &Tensor, _: &DeviceSlotStack, _: &MixPlan) -> Result<Tensor> {
    Err(KernelError::Backend {
        context: "lora_mix",
        message: "loramux-kernels was built without the cuda feature".into(),
    })
}

/// The device kind of a candle device, with the compute capability of a GPU.
pub fn device_kind(device: &Device) -> DeviceKind {
    match device {
        Device::Cpu => DeviceKind::Cpu,
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => crate::cuda::device_kind(cuda),
        _ => DeviceKind::Other,
    }
}

fn expect_matrix(t: &Tensor, what: &'static str, expected: [usize; 2]) -> Result<()> {
    if t.dims() == expected {
        Ok(())
    } else {
        Err(KernelError::TensorShape {
            what,
            shape: t.dims().to_vec(),
            expected: expected.to_vec(),
        })
    }
}

/// The CPU path for tensors: f32 on the host, [`lora_mix_cpu`], back to y's dtype and device.
fn lora_mix_via_host(x: &Tensor, y: &Tensor, host: &SlotStack, plan: &MixPlan) -> Result<Tensor> {
    let to_host = |t: &Tensor| -> candle_core::Result<Vec<f32>> {
        t.to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let x_host = to_host(x).map_err(|e| KernelError::backend("copy x to the host", e))?;
    let mut y_host = to_host(y).map_err(|e| KernelError::backend("copy y to the host", e))?;
    lora_mix_cpu(&x_host, &mut y_host, host, plan)?;
    Tensor::from_vec(y_host, y.shape(), &Device::Cpu)
        .and_then(|t| t.to_dtype(y.dtype()))
        .and_then(|t| t.to_device(y.device()))
        .map_err(|e| KernelError::backend("copy y back to its device", e))
}
