//! One llama decoder layer on the device: pre-norm attention and pre-norm SwiGLU MLP, each
//! residual; `h` is `[rows, hidden]` f32 on the device.

use super::attention::{attention, AttnDims};
use super::linear::DeviceGroup;
use super::rope::heads_first;
use super::DeviceStep;
use crate::gate::{Gate, GateInput};
use crate::kv_cache::DeviceKv;
use crate::model::LoraStacks;
use crate::{Result, RuntimeError};
use candle_core::Tensor;
use loramux_kernels::MixPlan;

pub(super) struct DeviceLayer {
    pub(super) index: usize,
    /// `[hidden]` gains on the device.
    pub(super) attn_norm: Tensor,
    pub(super) mlp_norm: Tensor,
    /// Per-head q and k norm gains `[head_dim]` (Qwen3).
    pub(super) qk_norm: Option<(Tensor, Tensor)>,
    /// q, k, v (one group when their formats allow stacking).
    pub(super) qkv: Vec<DeviceGroup>,
    pub(super) o: DeviceGroup,
    /// gate, up.
    pub(super) gate_up: Vec<DeviceGroup>,
    pub(super) down: DeviceGroup,
}

impl DeviceLayer {
    pub(super) fn forward(
        &self,
        h: &Tensor,
        step: &DeviceStep<'_, '_>,
        caches: &mut [&mut DeviceKv],
        lora: &dyn LoraStacks,
        gate: &dyn Gate,
    ) -> Result<Tensor> {
        let cfg = step.host.cfg;
        let eps = cfg.rms_norm_eps as f32;
        let x = candle_nn::ops::rms_norm(h, &self.attn_norm, eps)?;
        let plan = self.plan(&x, step, gate)?;
        let [q, k, v] = outputs::<3>(run(&self.qkv, &x, &plan, lora)?, "q/k/v")?;
        let dims = AttnDims {
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        };
        let (q, k) = match &self.qk_norm {
            Some((q_norm, k_norm)) => (
                head_norm(&q, q_norm, dims.head_dim, eps)?,
                head_norm(&k, k_norm, dims.head_dim, eps)?,
            ),
            None => (q, k),
        };
        let q = step.rope.apply(&q, dims.num_heads, dims.head_dim)?;
        let k = step.rope.apply(&k, dims.num_kv_heads, dims.head_dim)?;
        let v = heads_first(&v, dims.num_kv_heads, dims.head_dim)?;
        let attn = attention(&q, &k, &v, &step.host.seq_rows, caches, self.index, dims)?;
        let [o] = outputs::<1>(self.o.forward(&attn, &plan, lora)?, "o")?;
        let h = (h + o)?;

        let x = candle_nn::ops::rms_norm(&h, &self.mlp_norm, eps)?;
        let [g, u] = outputs::<2>(run(&self.gate_up, &x, &plan, lora)?, "gate/up")?;
        let a = (candle_nn::ops::silu(&g)? * u)?;
        let [d] = outputs::<1>(self.down.forward(&a, &plan, lora)?, "down")?;
        Ok((h + d)?)
    }

    /// The layer's mixture plan. The gate takes host rows: the normed hidden state is copied
    /// to the host only when the gate reads it (a step with gated rows), once per layer.
    fn plan(&self, x: &Tensor, step: &DeviceStep<'_, '_>, gate: &dyn Gate) -> Result<MixPlan> {
        let hidden: Vec<f32> = if gate.reads_hidden() {
            x.flatten_all()?.to_vec1::<f32>()?
        } else {
            Vec::new()
        };
        Ok(gate.plan(&GateInput {
            layer: self.index,
            hidden: &hidden,
            hidden_size: step.host.cfg.hidden_size,
            row_candidates: &step.host.row_candidates,
        }))
    }
}

/// RMSNorm over each head of `[rows, heads * head_dim]`.
fn head_norm(x: &Tensor, gain: &Tensor, head_dim: usize, eps: f32) -> Result<Tensor> {
    let (rows, width) = x.dims2()?;
    let heads = x.reshape((rows * width / head_dim, head_dim))?;
    Ok(candle_nn::ops::rms_norm(&heads, gain, eps)?.reshape((rows, width))?)
}

/// Runs groups over one input and returns the parts of all groups in order.
fn run(
    groups: &[DeviceGroup],
    x: &Tensor,
    plan: &MixPlan,
    lora: &dyn LoraStacks,
) -> Result<Vec<Tensor>> {
    let mut outs = Vec::new();
    for g in groups {
        outs.extend(g.forward(x, plan, lora)?);
    }
    Ok(outs)
}

fn outputs<const N: usize>(parts: Vec<Tensor>, what: &str) -> Result<[Tensor; N]> {
    let found = parts.len();
    parts
        .try_into()
        .map_err(|_| RuntimeError::UnsupportedModel {
            reason: format!("{what} groups yielded {found} outputs, expected {N}"),
        })
}
