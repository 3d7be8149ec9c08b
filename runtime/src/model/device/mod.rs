//! The device backend: the llama decoder on candle tensors on any `candle_core::Device`.
//!
//! Weights are resident on the device (`QMatMul`: quantized GGUF formats stay quantized for
//! candle's quantized matmul, `--dtype f32` makes them dense), activations are `[rows, d]`
//! f32 tensors there, norms are `candle_nn::ops::rms_norm`, RoPE is `candle_nn`'s rotate-half
//! kernel, attention runs per sequence over a device KV cache, and the LoRA mixture is
//! `loramux_kernels::lora_mix_tensor` on the bank's device slot stacks (the fused CUDA
//! kernels when eligible). Only the logits of the rows asked for, and the normed hidden
//! state of a layer whose gate reads it, come back to the host.
//!
//! On a CPU the host backend (`model/host.rs`) stays the one to use: it is faster there and
//! it is the numerics reference. This backend runs on `Device::Cpu` too, which is how the
//! tests hold it to the host backend without a GPU.

mod attention;
mod layer;
mod linear;
mod rope;

use super::load;
use super::{LogitPick, LoraStacks, SeqStep, StepContext};
use crate::gate::Gate;
use crate::kv_cache::DeviceKv;
use crate::weights::{WeightDtype, WeightSource};
use crate::{ModelConfig, Result};
use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};
use layer::DeviceLayer;
use linear::{device_matmul, DeviceGroup};
use rope::DeviceRope;

pub(super) struct DeviceModel {
    device: Device,
    /// `[vocab, hidden]` f32.
    embed: Tensor,
    layers: Vec<DeviceLayer>,
    final_norm: Tensor,
    lm_head: QMatMul,
}

/// What every layer of one step needs: the host's step layout and the rope tables here.
pub(super) struct DeviceStep<'s, 'a> {
    host: &'s StepContext<'a>,
    rope: DeviceRope,
}

impl DeviceModel {
    pub(super) fn load(
        source: &mut dyn WeightSource,
        cfg: &ModelConfig,
        dtype: WeightDtype,
        device: &Device,
    ) -> Result<Self> {
        let embed_q = load::embedding(source, cfg)?;
        let embed = embed_q.dequantize(&Device::Cpu)?.to_device(device)?;
        let gain = |v: Vec<f32>| -> Result<Tensor> {
            let n = v.len();
            Ok(Tensor::from_vec(v, n, device)?)
        };
        let group = |l: usize, g| DeviceGroup::load(l, g, dtype, device);
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let groups = load::layer_groups(source, cfg, l)?.map(|g| group(l, g))?;
            let (attn_norm, mlp_norm) = load::layer_norms(source, cfg, l)?;
            let qk_norm = match load::qk_norms(source, cfg, l)? {
                Some((q, k)) => Some((gain(q)?, gain(k)?)),
                None => None,
            };
            layers.push(DeviceLayer {
                index: l,
                attn_norm: gain(attn_norm)?,
                mlp_norm: gain(mlp_norm)?,
                qk_norm,
                qkv: groups.qkv,
                o: groups.o,
                gate_up: groups.gate_up,
                down: groups.down,
            });
        }
        let final_norm = gain(load::final_norm(source, cfg)?)?;
        let head = load::lm_head(source, cfg, embed_q)?;
        Ok(Self {
            device: device.clone(),
            embed,
            layers,
            final_norm,
            lm_head: device_matmul(head, dtype, device)?,
        })
    }

    pub(super) fn device(&self) -> &Device {
        &self.device
    }

    /// Runs every layer over the step's rows, appending to the caches; returns the logits of
    /// the picked rows, `[pick.rows.len(), vocab]` row-major, on the host.
    pub(super) fn forward(
        &self,
        seqs: &mut [SeqStep<'_>],
        step: &StepContext<'_>,
        pick: &LogitPick,
        lora: &dyn LoraStacks,
        gate: &dyn Gate,
    ) -> Result<Vec<f32>> {
        let rows = step.rows();
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let ids = Tensor::from_vec(ids, rows, &self.device)?;
        let mut h = self.embed.index_select(&ids, 0)?;
        let dstep = DeviceStep {
            host: step,
            rope: DeviceRope::upload(&step.cos, &step.sin, rows, &self.device)?,
        };
        {
            let mut caches: Vec<&mut DeviceKv> = seqs
                .iter_mut()
                .map(|s| s.cache.device())
                .collect::<Result<_>>()?;
            for layer in &self.layers {
                h = layer.forward(&h, &dstep, &mut caches, lora, gate)?;
            }
        }
        if pick.rows.is_empty() {
            return Ok(Vec::new());
        }
        let picked: Vec<u32> = pick.rows.iter().map(|&r| r as u32).collect();
        let picked = Tensor::from_vec(picked, pick.rows.len(), &self.device)?;
        let h = h.index_select(&picked, 0)?;
        let eps = step.cfg.rms_norm_eps as f32;
        let normed = candle_nn::ops::rms_norm(&h, &self.final_norm, eps)?;
        let logits = self.lm_head.forward(&normed)?;
        Ok(logits
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }
}
