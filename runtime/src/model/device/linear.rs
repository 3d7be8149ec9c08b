//! A group of projections with a shared input on the device: `y_m = W_m x (+ b_m) +
//! Σ_k w·s·B(Ax)`, the base product one matmul over the stacked rows (`QMatMul`, quantized
//! or dense, on the device), the LoRA mixture per module through
//! `loramux_kernels::lora_mix_tensor` on the bank's device slot stacks.
//!
//! `x` is `[rows, d_in]` f32 on the device; each part's output is `[rows, d_out_m]`.

use crate::model::load::GroupWeights;
use crate::model::LoraStacks;
use crate::weights::WeightDtype;
use crate::{ModuleKind, Result, RuntimeError};
use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use loramux_kernels::{lora_mix_tensor, MixPlan};
use std::borrow::Cow;

struct DevicePart {
    module: ModuleKind,
    d_out: usize,
    /// `[d_out]` on the device.
    bias: Option<Tensor>,
}

pub(super) struct DeviceGroup {
    layer: usize,
    weight: QMatMul,
    parts: Vec<DevicePart>,
}

impl DeviceGroup {
    pub(super) fn load(
        layer: usize,
        group: GroupWeights,
        dtype: WeightDtype,
        device: &Device,
    ) -> Result<Self> {
        let parts = group
            .parts
            .into_iter()
            .map(|p| {
                let bias = match p.bias {
                    Some(b) => Some(Tensor::from_vec(b, p.d_out, device)?),
                    None => None,
                };
                Ok(DevicePart {
                    module: p.module,
                    d_out: p.d_out,
                    bias,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layer,
            weight: device_matmul(group.weight, dtype, device)?,
            parts,
        })
    }

    /// Returns one `[rows, d_out]` output per part, in the parts' order.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        plan: &MixPlan,
        lora: &dyn LoraStacks,
    ) -> Result<Vec<Tensor>> {
        let y = self.weight.forward(x)?;
        let mut outs = Vec::with_capacity(self.parts.len());
        let mut at = 0;
        for part in &self.parts {
            let mut out = if self.parts.len() == 1 {
                y.clone()
            } else {
                y.narrow(1, at, part.d_out)?.contiguous()?
            };
            at += part.d_out;
            if let Some(bias) = &part.bias {
                out = out.broadcast_add(bias)?;
            }
            if !plan.is_empty() {
                out = self.mix(x, out, part.module, plan, lora)?;
            }
            outs.push(out);
        }
        Ok(outs)
    }

    fn mix(
        &self,
        x: &Tensor,
        y: Tensor,
        module: ModuleKind,
        plan: &MixPlan,
        lora: &dyn LoraStacks,
    ) -> Result<Tensor> {
        match lora.device_stack(self.layer, module) {
            Some(stack) => Ok(lora_mix_tensor(x, &y, stack, plan)?),
            // No adapter has targeted this module yet: nothing to add.
            None if lora.stack(self.layer, module).is_none() => Ok(y),
            None => Err(RuntimeError::InvalidRequest {
                reason: format!(
                    "layer {} {}: the adapters are on the host only, the model is on a device",
                    self.layer,
                    module.hf_name()
                ),
            }),
        }
    }
}

/// A `[d_out, d_in]` weight as a matmul on `device`: dense f32 for `WeightDtype::F32` (and
/// for dense files), else in its stored GGML format for candle's quantized kernels (the CUDA
/// backend has them for every format, so nothing is re-quantized as on the host).
pub(super) fn device_matmul(t: QTensor, dtype: WeightDtype, device: &Device) -> Result<QMatMul> {
    if dtype == WeightDtype::F32 {
        return Ok(QMatMul::Tensor(
            t.dequantize(&Device::Cpu)?.to_device(device)?,
        ));
    }
    if device.is_cpu() {
        return Ok(QMatMul::from_qtensor(t)?);
    }
    let data = t.data()?;
    let storage = QStorage::from_data(Cow::Borrowed(&data), device, t.dtype())?;
    Ok(QMatMul::from_qtensor(QTensor::new(
        storage,
        t.shape().clone(),
    )?)?)
}
