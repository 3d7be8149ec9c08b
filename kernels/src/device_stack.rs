//! `DeviceSlotStack`: a [`SlotStack`] resident on a compute device, in the element type of
//! the model (f32, f16 or bf16), next to its f32 host copy.
//!
//! Layout as [`SlotStack`]: A `[slots, r_max, d_in]`, B `[slots, d_out, r_max]`, a rank and a
//! scale per slot. On a CPU device only the host copy exists. The host copy stays the
//! source of truth: calls the CUDA kernels cannot take (see `eligibility`) run on it.

use std::sync::Arc;

use crate::{KernelError, Result, SlotStack, SmallGroupCopy};
use candle_core::{DType, Device};

pub struct DeviceSlotStack {
    host: SlotStack,
    dtype: DType,
    device: Device,
    #[cfg(feature = "cuda")]
    gpu: Option<crate::cuda::GpuSlots>,
}

impl DeviceSlotStack {
    /// Puts `host` on `device`, every value rounded to `dtype` (to nearest even).
    pub fn upload(host: SlotStack, dtype: DType, device: &Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self {
                host,
                dtype,
                device: device.clone(),
                #[cfg(feature = "cuda")]
                gpu: None,
            }),
            #[cfg(feature = "cuda")]
            Device::Cuda(cuda) => {
                let gpu = crate::cuda::GpuSlots::upload(&host, dtype, cuda)?;
                Ok(Self {
                    host,
                    dtype,
                    device: device.clone(),
                    gpu: Some(gpu),
                })
            }
            _ => Err(KernelError::Backend {
                context: "slot stack upload",
                message: format!("no LoRA kernels for device {device:?}"),
            }),
        }
    }

    /// Writes an adapter into `slot` (see [`SlotStack::write_slot`]) on the host and the device.
    pub fn write_slot(
        &mut self,
        slot: usize,
        a: &[f32],
        b: &[f32],
        rank: usize,
        scale: f32,
    ) -> Result<()> {
        let small = Arc::new(SmallGroupCopy::of(a, b, rank, self.host.d_out()));
        self.write_slot_prepared(slot, a, b, rank, scale, small)
    }

    /// [`SlotStack::write_slot_prepared`] on the host, then the device copy.
    pub fn write_slot_prepared(
        &mut self,
        slot: usize,
        a: &[f32],
        b: &[f32],
        rank: usize,
        scale: f32,
        small: Arc<SmallGroupCopy>,
    ) -> Result<()> {
        self.host
            .write_slot_prepared(slot, a, b, rank, scale, small)?;
        self.sync_slot(slot)
    }

    /// Empties a slot (rank 0) on the host and the device.
    pub fn clear_slot(&mut self, slot: usize) -> Result<()> {
        self.host.clear_slot(slot);
        self.sync_slot(slot)
    }

    pub fn host(&self) -> &SlotStack {
        &self.host
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn gpu(&self) -> Option<&crate::cuda::GpuSlots> {
        self.gpu.as_ref()
    }

    #[cfg(feature = "cuda")]
    fn sync_slot(&mut self, slot: usize) -> Result<()> {
        match &mut self.gpu {
            Some(gpu) if slot < self.host.slots() => gpu.write_slot(&self.host, slot),
            _ => Ok(()),
        }
    }

    #[cfg(not(feature = "cuda"))]
    fn sync_slot(&mut self, _slot: usize) -> Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for DeviceSlotStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSlotStack")
            .field("slots", &self.host.slots())
            .field("r_max", &self.host.r_max())
            .field("d_in", &self.host.d_in())
            .field("d_out", &self.host.d_out())
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish()
    }
}
