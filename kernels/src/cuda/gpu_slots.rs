//! The device half of a `DeviceSlotStack`: A and B in the model's element type, ranks and
//! scales, each a flat buffer in the layout of `SlotStack`.

use crate::element::{convert_from_f32, Element};
use crate::{KernelError, Result, SlotStack};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr};
use candle_core::cuda_backend::CudaDevice;
use candle_core::DType;
use half::{bf16, f16};

/// A `[slots, r_max, d_in]` and B `[slots, d_out, r_max]` of one element type.
pub(crate) enum SlotBuffers {
    F32 {
        a: CudaSlice<f32>,
        b: CudaSlice<f32>,
    },
    F16 {
        a: CudaSlice<f16>,
        b: CudaSlice<f16>,
    },
    BF16 {
        a: CudaSlice<bf16>,
        b: CudaSlice<bf16>,
    },
}

pub(crate) struct GpuSlots {
    device: CudaDevice,
    buffers: SlotBuffers,
    ranks: CudaSlice<i32>,
    scales: CudaSlice<f32>,
}

impl GpuSlots {
    pub(crate) fn upload(host: &SlotStack, dtype: DType, device: &CudaDevice) -> Result<Self> {
        let (a, b) = (host.a_all(), host.b_all());
        let buffers = match dtype {
            DType::F32 => SlotBuffers::F32 {
                a: upload(device, a)?,
                b: upload(device, b)?,
            },
            DType::F16 => SlotBuffers::F16 {
                a: upload(device, a)?,
                b: upload(device, b)?,
            },
            DType::BF16 => SlotBuffers::BF16 {
                a: upload(device, a)?,
                b: upload(device, b)?,
            },
            other => {
                return Err(KernelError::Backend {
                    context: "slot stack upload",
                    message: format!("no LoRA kernels for dtype {other:?}"),
                })
            }
        };
        let scales: Vec<f32> = (0..host.slots()).map(|s| host.scale(s)).collect();
        Ok(Self {
            device: device.clone(),
            buffers,
            ranks: upload_raw(device, &host.ranks_i32())?,
            scales: upload_raw(device, &scales)?,
        })
    }

    /// Copies slot `slot` of `host` (A, B, rank, scale) to the device.
    pub(crate) fn write_slot(&mut self, host: &SlotStack, slot: usize) -> Result<()> {
        let a_len = host.r_max() * host.d_in();
        let b_len = host.d_out() * host.r_max();
        let (a, b) = (host.a(slot), host.b(slot));
        let dev = &self.device;
        match &mut self.buffers {
            SlotBuffers::F32 { a: da, b: db } => {
                write_range(dev, da, slot * a_len, a)?;
                write_range(dev, db, slot * b_len, b)?;
            }
            SlotBuffers::F16 { a: da, b: db } => {
                write_range(dev, da, slot * a_len, a)?;
                write_range(dev, db, slot * b_len, b)?;
            }
            SlotBuffers::BF16 { a: da, b: db } => {
                write_range(dev, da, slot * a_len, a)?;
                write_range(dev, db, slot * b_len, b)?;
            }
        }
        let rank = i32::try_from(host.rank(slot)).unwrap_or(i32::MAX);
        write_one(dev, &mut self.ranks, slot, rank)?;
        write_one(dev, &mut self.scales, slot, host.scale(slot))
    }

    pub(crate) fn buffers(&self) -> &SlotBuffers {
        &self.buffers
    }

    pub(crate) fn ranks(&self) -> &CudaSlice<i32> {
        &self.ranks
    }

    pub(crate) fn scales(&self) -> &CudaSlice<f32> {
        &self.scales
    }
}

fn upload<T: Element + DeviceRepr>(device: &CudaDevice, values: &[f32]) -> Result<CudaSlice<T>> {
    upload_raw(device, &convert_from_f32::<T>(values))
}

/// An empty buffer still gets one element: the driver refuses zero-byte allocations.
fn upload_raw<T: DeviceRepr + Default + Clone + 'static>(
    device: &CudaDevice,
    values: &[T],
) -> Result<CudaSlice<T>> {
    let result = if values.is_empty() {
        device.clone_htod(&[T::default()])
    } else {
        device.clone_htod(values)
    };
    result.map_err(|e| KernelError::backend("slot stack upload", e))
}

fn write_range<T: Element + DeviceRepr>(
    device: &CudaDevice,
    dst: &mut CudaSlice<T>,
    start: usize,
    values: &[f32],
) -> Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    let src = convert_from_f32::<T>(values);
    let mut view = dst.slice_mut(start..start + src.len());
    device
        .memcpy_htod(&src, &mut view)
        .map_err(|e| KernelError::backend("slot write", e))
}

fn write_one<T: DeviceRepr + Copy + 'static>(
    device: &CudaDevice,
    dst: &mut CudaSlice<T>,
    at: usize,
    value: T,
) -> Result<()> {
    let mut view = dst.slice_mut(at..at + 1);
    device
        .memcpy_htod(&[value], &mut view)
        .map_err(|e| KernelError::backend("slot write", e))
}
