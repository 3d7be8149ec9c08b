//! The CUDA implementation (feature `cuda`): fused gather kernels compiled at run time with
//! NVRTC and launched on candle's stream. Shapes as in the crate root; see `lora_mix.cu`.

mod gpu_slots;
mod launch;
mod program;

pub(crate) use gpu_slots::GpuSlots;
pub(crate) use launch::lora_mix_device;

use crate::eligibility::DeviceKind;
use candle_core::cuda_backend::CudaDevice;

/// The kind of a CUDA device, with its compute capability (0.0 when the driver cannot say,
/// which keeps the call off the kernels).
pub(crate) fn device_kind(device: &CudaDevice) -> DeviceKind {
    let (major, minor) = device
        .cuda_stream()
        .context()
        .compute_capability()
        .unwrap_or((0, 0));
    DeviceKind::Cuda {
        compute_capability: (
            u32::try_from(major).unwrap_or(0),
            u32::try_from(minor).unwrap_or(0),
        ),
    }
}
