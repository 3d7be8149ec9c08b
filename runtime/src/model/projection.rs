//! Base linear layers wrapped with the LoRA mixture: `y_m = W_m x (+ b_m) + Σ_k w·s·B(Ax)`.
//!
//! Projections that read the same input (q/k/v, gate/up) are fused into one
//! [`ProjectionGroup`]: their weight rows are stacked so the base product is one matmul (one
//! thread-pool dispatch instead of three), then the output is split per module and each
//! module gets its own LoRA mixture. `x_rows` is `[rows, d_in]`; each part is `[rows, d_out_m]`.
//!
//! The mixtures run beside the base product (`rayon::join`), each into a zeroed buffer that
//! is then added to its part: at batch 8 over 8 adapters this took mixed/base decode time
//! from 1.40 to 1.18 and one adapter/base from 1.19 to 1.00 (`loramux bench`). The sums are
//! the same as adding into the output directly for rows with one adapter; rows with several
//! add their adapters' terms together first.

use super::base_weight::BaseWeight;
use crate::{ModuleKind, Result};
use loramux_kernels::{lora_mix, DeviceSlotStack, MixPlan, SlotStack};

/// Where the model finds the resident adapters of a (layer, module). Implemented by the
/// `AdapterBank`; [`NoAdapters`] serves the base model alone.
pub trait LoraStacks: Sync {
    /// The host copy, which the host backend reads.
    fn stack(&self, layer: usize, module: ModuleKind) -> Option<&SlotStack>;

    /// The stack on its compute device, which the device backend reads. `None` for a source
    /// that keeps its adapters on the host only; the device backend then refuses to apply
    /// them rather than silently skip them.
    fn device_stack(&self, _layer: usize, _module: ModuleKind) -> Option<&DeviceSlotStack> {
        None
    }
}

/// The base model without adapters.
pub struct NoAdapters;

impl LoraStacks for NoAdapters {
    fn stack(&self, _layer: usize, _module: ModuleKind) -> Option<&SlotStack> {
        None
    }
}

/// One module's slice of a group's output.
pub struct Part {
    pub module: ModuleKind,
    pub d_out: usize,
    pub bias: Option<Vec<f32>>,
}

pub struct ProjectionGroup {
    layer: usize,
    weight: BaseWeight,
    parts: Vec<Part>,
    d_in: usize,
}

impl ProjectionGroup {
    /// `weight` holds the parts' rows stacked in order: `[Σ d_out, d_in]`.
    pub fn new(layer: usize, weight: BaseWeight, parts: Vec<Part>, d_in: usize) -> Self {
        Self {
            layer,
            weight,
            parts,
            d_in,
        }
    }

    /// Returns one `[rows, d_out]` output per part, in the parts' order.
    pub fn forward(
        &self,
        x_rows: &[f32],
        plan: &MixPlan,
        lora: &dyn LoraStacks,
    ) -> Result<Vec<Vec<f32>>> {
        let stacks: Vec<Option<&SlotStack>> = self
            .parts
            .iter()
            .map(|p| {
                if plan.is_empty() {
                    None
                } else {
                    lora.stack(self.layer, p.module)
                }
            })
            .collect();
        let base = || self.weight.forward(x_rows, self.d_in);
        let (y, deltas) = if stacks.iter().any(Option::is_some) {
            // The mixture reads only x, so it runs beside the base product instead of after
            // it: the base kernel is bound by arithmetic, the mixture of a decode batch
            // spread over many adapters by reading their weights, and the two overlap.
            let (y, deltas) = rayon::join(base, || self.lora_deltas(x_rows, plan, &stacks));
            (y?, deltas?)
        } else {
            (base()?, Vec::new())
        };
        let total: usize = self.parts.iter().map(|p| p.d_out).sum();
        let rows = y.len() / total.max(1);
        let mut outs: Vec<Vec<f32>> = self
            .parts
            .iter()
            .map(|p| Vec::with_capacity(rows * p.d_out))
            .collect();
        for row in y.chunks_exact(total) {
            let mut at = 0;
            for (part, out) in self.parts.iter().zip(outs.iter_mut()) {
                out.extend_from_slice(&row[at..at + part.d_out]);
                at += part.d_out;
            }
        }
        for (i, (part, out)) in self.parts.iter().zip(outs.iter_mut()).enumerate() {
            if let Some(bias) = &part.bias {
                for r in out.chunks_exact_mut(part.d_out) {
                    r.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
            }
            if let Some(delta) = deltas.get(i).and_then(Option::as_ref) {
                out.iter_mut().zip(delta).for_each(|(v, d)| *v += d);
            }
        }
        Ok(outs)
    }

    /// Each part's mixture alone, `[rows, d_out]`, for the parts with adapters.
    fn lora_deltas(
        &self,
        x_rows: &[f32],
        plan: &MixPlan,
        stacks: &[Option<&SlotStack>],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let rows = x_rows.len() / self.d_in.max(1);
        self.parts
            .iter()
            .zip(stacks)
            .map(|(part, stack)| {
                stack
                    .map(|stack| {
                        let mut delta = vec![0f32; rows * part.d_out];
                        lora_mix(x_rows, &mut delta, stack, plan).map(|()| delta)
                    })
                    .transpose()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Into::into)
    }
}
