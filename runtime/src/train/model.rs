//! The llama decoder as a differentiable candle graph, for training LoRA factors.
//!
//! Inference ([`crate::LlamaModel`]) works on raw slices against external KV caches and
//! quantized weights, which carries no gradients; training needs candle's autograd over a
//! padded batch. Both follow the same math (Hugging Face layout, rotate-half RoPE), and a
//! test holds them equal: a trained adapter saved as PEFT and loaded by the inference path
//! gives the logits this graph gives.
//!
//! Shapes: tokens `[batch, len]` (right-padded: causal attention keeps padding from
//! reaching real positions), hidden states `[batch · len, hidden]`.

use super::lora::LoraHook;
use super::ops::{CausalSoftmax, FrozenLinear, FrozenRmsNorm};
use crate::model::rope::Rope;
use crate::weights::{TensorRole, WeightSource};
use crate::{ModelConfig, ModuleKind, Result, RuntimeError};
use candle_core::{Device, Tensor, D};

struct TrainLayer {
    attn_norm: FrozenRmsNorm,
    mlp_norm: FrozenRmsNorm,
    /// q, k, v rows stacked: one GEMM, then split.
    qkv: FrozenLinear,
    qkv_bias: Option<Tensor>,
    o: FrozenLinear,
    /// gate, up rows stacked.
    gate_up: FrozenLinear,
    down: FrozenLinear,
}

/// A frozen base model, f32, ready to be differentiated with respect to LoRA factors.
pub struct TrainModel {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<TrainLayer>,
    final_norm: FrozenRmsNorm,
    lm_head: FrozenLinear,
    rope: Rope,
}

fn dense(source: &mut dyn WeightSource, role: TensorRole, shape: &[usize]) -> Result<Tensor> {
    let t = source
        .tensor(role)?
        .ok_or_else(|| RuntimeError::MissingTensor {
            name: role.hf_name(),
        })?;
    crate::weights::expect_shape(role, &t, shape)?;
    Ok(t.dequantize(&Device::Cpu)?)
}

fn stacked(
    source: &mut dyn WeightSource,
    cfg: &ModelConfig,
    layer: usize,
    modules: &[ModuleKind],
) -> Result<FrozenLinear> {
    let mut parts = Vec::with_capacity(modules.len());
    for &m in modules {
        let (d_in, d_out) = cfg.module_shape(m);
        parts.push(dense(source, TensorRole::Proj(layer, m), &[d_out, d_in])?);
    }
    Ok(FrozenLinear::new(Tensor::cat(&parts, 0)?))
}

impl TrainModel {
    pub fn load(source: &mut dyn WeightSource) -> Result<Self> {
        let cfg = source.config().clone();
        if cfg.qk_norm || cfg.o_bias || cfg.mlp_bias {
            return Err(RuntimeError::UnsupportedModel {
                reason: "training adapters on models with q/k norm (Qwen3) or o/MLP biases \
                         is not implemented; they run for inference"
                    .into(),
            });
        }
        let h = cfg.hidden_size;
        let embed = dense(source, TensorRole::Embed, &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let qkv_modules = [ModuleKind::Q, ModuleKind::K, ModuleKind::V];
            let qkv_bias = if cfg.qkv_bias {
                let mut parts = Vec::new();
                for m in qkv_modules {
                    let d_out = cfg.module_shape(m).1;
                    parts.push(dense(source, TensorRole::ProjBias(l, m), &[d_out])?);
                }
                Some(Tensor::cat(&parts, 0)?)
            } else {
                None
            };
            layers.push(TrainLayer {
                attn_norm: FrozenRmsNorm::new(
                    dense(source, TensorRole::AttnNorm(l), &[h])?,
                    cfg.rms_norm_eps,
                ),
                mlp_norm: FrozenRmsNorm::new(
                    dense(source, TensorRole::MlpNorm(l), &[h])?,
                    cfg.rms_norm_eps,
                ),
                qkv: stacked(source, &cfg, l, &qkv_modules)?,
                qkv_bias,
                o: stacked(source, &cfg, l, &[ModuleKind::O])?,
                gate_up: stacked(source, &cfg, l, &[ModuleKind::Gate, ModuleKind::Up])?,
                down: stacked(source, &cfg, l, &[ModuleKind::Down])?,
            });
        }
        let final_norm = FrozenRmsNorm::new(
            dense(source, TensorRole::FinalNorm, &[h])?,
            cfg.rms_norm_eps,
        );
        let lm_head = match source.tensor(TensorRole::LmHead)? {
            Some(_) => dense(source, TensorRole::LmHead, &[cfg.vocab_size, h])?,
            None => embed.clone(),
        };
        let rope = Rope::new(cfg.head_dim, &cfg.rope);
        Ok(Self {
            cfg,
            embed,
            layers,
            final_norm,
            lm_head: FrozenLinear::new(lm_head),
            rope,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Final hidden states (before the last norm) `[batch · len, hidden]` for right-padded
    /// `tokens` `[batch, len]`, with the LoRA updates of `lora` applied.
    pub fn hidden(&self, tokens: &Tensor, lora: &dyn LoraHook) -> Result<Tensor> {
        let (batch, len) = tokens.dims2()?;
        let cfg = &self.cfg;
        let positions: Vec<usize> = (0..len).collect();
        let (cos, sin) = self.rope.tables(&positions);
        let half = cfg.head_dim / 2;
        let cos = Tensor::from_vec(cos, (len, half), &Device::Cpu)?;
        let sin = Tensor::from_vec(sin, (len, half), &Device::Cpu)?;
        let cos = Tensor::cat(&[&cos, &cos], 1)?.reshape((1, 1, len, cfg.head_dim))?;
        let sin = Tensor::cat(&[&sin, &sin], 1)?.reshape((1, 1, len, cfg.head_dim))?;
        let rope = |x: Tensor| -> Result<Tensor> {
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
        };
        let heads = |x: &Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((batch, len, n, cfg.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let softmax = CausalSoftmax::new(1.0 / (cfg.head_dim as f32).sqrt());
        let group = cfg.num_heads / cfg.num_kv_heads;
        let (dq, dkv) = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );

        let mut x = self.embed.index_select(&tokens.flatten_all()?, 0)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let xn = layer.attn_norm.forward(&x)?;
            let gate_in = xn.clone();
            let mut qkv = layer.qkv.forward(&xn)?;
            if let Some(b) = &layer.qkv_bias {
                qkv = qkv.broadcast_add(b)?;
            }
            let q = lora.apply(l, ModuleKind::Q, &xn, qkv.narrow(1, 0, dq)?, &gate_in)?;
            let k = lora.apply(l, ModuleKind::K, &xn, qkv.narrow(1, dq, dkv)?, &gate_in)?;
            let v = lora.apply(
                l,
                ModuleKind::V,
                &xn,
                qkv.narrow(1, dq + dkv, dkv)?,
                &gate_in,
            )?;
            let q = rope(heads(&q, cfg.num_heads)?)?;
            let k = repeat_kv(rope(heads(&k, cfg.num_kv_heads)?)?, group)?;
            let v = repeat_kv(heads(&v, cfg.num_kv_heads)?, group)?;
            let probs = softmax.forward(&q.matmul(&k.t()?)?.contiguous()?)?;
            let attn = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch * len, dq))?;
            let o = lora.apply(l, ModuleKind::O, &attn, layer.o.forward(&attn)?, &gate_in)?;
            x = (x + o)?;

            let xn = layer.mlp_norm.forward(&x)?;
            let gu = layer.gate_up.forward(&xn)?;
            let di = cfg.intermediate_size;
            let g = lora.apply(l, ModuleKind::Gate, &xn, gu.narrow(1, 0, di)?, &gate_in)?;
            let u = lora.apply(l, ModuleKind::Up, &xn, gu.narrow(1, di, di)?, &gate_in)?;
            let act = (g.silu()? * u)?;
            let d = lora.apply(
                l,
                ModuleKind::Down,
                &act,
                layer.down.forward(&act)?,
                &gate_in,
            )?;
            x = (x + d)?;
        }
        Ok(x)
    }

    /// Every frozen tensor the graph reads (for tests that check none gets a gradient).
    pub fn frozen_tensors(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.embed, self.lm_head.weight()];
        for l in &self.layers {
            out.extend([
                l.qkv.weight(),
                l.o.weight(),
                l.gate_up.weight(),
                l.down.weight(),
            ]);
        }
        out
    }

    /// Logits `[rows, vocab]` of selected hidden rows.
    pub fn logits(&self, hidden_rows: &Tensor) -> Result<Tensor> {
        Ok(self
            .lm_head
            .forward(&self.final_norm.forward(hidden_rows)?)?)
    }
}

/// `[b, kv_heads, len, d]` → `[b, kv_heads · group, len, d]`, each kv head repeated for the
/// query heads that share it.
fn repeat_kv(x: Tensor, group: usize) -> Result<Tensor> {
    if group == 1 {
        return Ok(x);
    }
    let (b, kv, len, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, group, len, d))?
        .contiguous()?
        .reshape((b, kv * group, len, d))?)
}
