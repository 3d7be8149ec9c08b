//! A base linear layer wrapped with the LoRA mixture: `y = W x (+ b) + Σ_k w·s·B(Ax)`.
//!
//! The decorator is chosen by (layer, module) at load time; which adapters apply to which
//! rows arrives per step in the `MixPlan`. `x` is `[rows, d_in]`, the result `[rows, d_out]`.

use super::base_weight::BaseWeight;
use crate::{ModuleKind, Result};
use candle_core::{Device, Tensor};
use loramux_kernels::{lora_mix, MixPlan, SlotStack};

/// Where the model finds the resident adapters of a (layer, module). Implemented by the
/// `AdapterBank`; [`NoAdapters`] serves the base model alone.
pub trait LoraStacks: Sync {
    fn stack(&self, layer: usize, module: ModuleKind) -> Option<&SlotStack>;
}

/// The base model without adapters.
pub struct NoAdapters;

impl LoraStacks for NoAdapters {
    fn stack(&self, _layer: usize, _module: ModuleKind) -> Option<&SlotStack> {
        None
    }
}

pub struct Projection {
    layer: usize,
    module: ModuleKind,
    weight: BaseWeight,
    bias: Option<Vec<f32>>,
    d_in: usize,
    d_out: usize,
}

impl Projection {
    pub fn new(
        layer: usize,
        module: ModuleKind,
        weight: BaseWeight,
        bias: Option<Vec<f32>>,
        d_in: usize,
        d_out: usize,
    ) -> Self {
        Self {
            layer,
            module,
            weight,
            bias,
            d_in,
            d_out,
        }
    }

    /// The base product only, as a tensor: used where several projections share an input.
    fn base(&self, x: &Tensor) -> Result<Vec<f32>> {
        let y = self.weight.forward(x)?;
        let mut y = y.flatten_all()?.to_vec1::<f32>()?;
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(self.d_out) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        }
        Ok(y)
    }

    pub fn forward(
        &self,
        x: &Tensor,
        x_rows: &[f32],
        plan: &MixPlan,
        lora: &dyn LoraStacks,
    ) -> Result<Vec<f32>> {
        let mut y = self.base(x)?;
        if !plan.is_empty() {
            if let Some(stack) = lora.stack(self.layer, self.module) {
                lora_mix(x_rows, &mut y, stack, plan)?;
            }
        }
        Ok(y)
    }

    pub fn d_in(&self) -> usize {
        self.d_in
    }
}

/// Wraps `[rows, d]` activations as a tensor for candle's matmul kernels.
pub fn as_tensor(x: &[f32], d: usize) -> Result<Tensor> {
    Ok(Tensor::from_slice(x, (x.len() / d, d), &Device::Cpu)?)
}
