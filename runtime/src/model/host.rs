//! The host backend: activations are `[rows, d]` f32 slices, projections run on candle's CPU
//! matmul kernels, attention and norms are plain loops, the LoRA mixture is
//! `loramux_kernels::lora_mix` on host slices.
//!
//! It stays beside the device backend (`device/`) for two reasons: on a CPU it is the faster
//! path (the packed VNNI / AVX2 integer kernels on the file's own 4/8-bit weights, else candle's
//! Q8_0 dot products and dense f32 copies for many-row GEMMs; no tensor bookkeeping per op),
//! and it is the numerics reference the device backend is tested against (and that is itself
//! tested against transformers + PEFT).

use super::base_weight::BaseWeight;
use super::layer::DecoderLayer;
use super::load::{self, GroupWeights};
use super::norm::rms_norm;
use super::packed::{Kernel, PackedWeight};
use super::projection::{LoraStacks, ProjectionGroup};
use super::{LogitPick, SeqStep, StepContext};
use crate::gate::Gate;
use crate::kv_cache::HostKv;
use crate::weights::{WeightDtype, WeightSource};
use crate::{ModelConfig, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::Device;

pub(super) struct HostModel {
    embed: Vec<f32>,
    layers: Vec<DecoderLayer>,
    final_norm: Vec<f32>,
    lm_head: BaseWeight,
}

impl HostModel {
    pub(super) fn load(
        source: &mut dyn WeightSource,
        cfg: &ModelConfig,
        dtype: WeightDtype,
    ) -> Result<Self> {
        let embed_q = load::embedding(source, cfg)?;
        let embed = embed_q
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        match (dtype, packed_kernel(dtype)) {
            (WeightDtype::Native, Some(k)) => {
                tracing::info!("base weights: packed integer kernels, {} tier", k.name())
            }
            _ => tracing::info!("base weights: candle's kernels ({dtype:?})"),
        }
        // Dense f32 copies for many-row matmuls, when the whole model fits in DENSE_BUDGET.
        let dense = matches!(dtype, WeightDtype::Native | WeightDtype::NativeCandle)
            && cfg.f32_bytes() <= DENSE_BUDGET;
        let group = |l: usize, g: GroupWeights| -> Result<ProjectionGroup> {
            Ok(ProjectionGroup::new(
                l,
                matmul(g.weight, dtype, dense)?,
                g.parts,
                g.d_in,
            ))
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let groups = load::layer_groups(source, cfg, l)?.map(|g| group(l, g))?;
            let (attn_norm, mlp_norm) = load::layer_norms(source, cfg, l)?;
            layers.push(DecoderLayer {
                index: l,
                attn_norm,
                mlp_norm,
                qk_norm: load::qk_norms(source, cfg, l)?,
                qkv: groups.qkv,
                o: groups.o,
                gate_up: groups.gate_up,
                down: groups.down,
            });
        }
        let final_norm = load::final_norm(source, cfg)?;
        let lm_head = matmul(load::lm_head(source, cfg, embed_q)?, dtype, dense)?;
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }

    /// Runs every layer over the step's rows, appending to the caches; returns the logits of
    /// the picked rows, `[pick.rows.len(), vocab]` row-major.
    pub(super) fn forward(
        &self,
        seqs: &mut [SeqStep<'_>],
        step: &StepContext<'_>,
        pick: &LogitPick,
        lora: &dyn LoraStacks,
        gate: &dyn Gate,
    ) -> Result<Vec<f32>> {
        let cfg = step.cfg;
        let h_dim = cfg.hidden_size;
        let mut h = Vec::with_capacity(step.rows() * h_dim);
        for seq in seqs.iter() {
            for &t in seq.tokens {
                h.extend_from_slice(&self.embed[t as usize * h_dim..(t as usize + 1) * h_dim]);
            }
        }
        {
            let mut caches: Vec<&mut HostKv> = seqs
                .iter_mut()
                .map(|s| s.cache.host())
                .collect::<Result<_>>()?;
            for layer in &self.layers {
                layer.forward(&mut h, step, &mut caches, lora, gate)?;
            }
        }
        if pick.rows.is_empty() {
            return Ok(Vec::new());
        }
        // Logits only for the rows asked for: the vocabulary projection is the largest matmul.
        let mut picked_h = Vec::with_capacity(pick.rows.len() * h_dim);
        for &r in &pick.rows {
            picked_h.extend_from_slice(&h[r * h_dim..(r + 1) * h_dim]);
        }
        let normed = rms_norm(&picked_h, &self.final_norm, cfg.rms_norm_eps);
        self.lm_head.forward(&normed, h_dim)
    }
}

fn matmul(t: QTensor, dtype: WeightDtype, dense: bool) -> Result<BaseWeight> {
    if let Some(kernel) = packed_kernel(dtype) {
        if let Some(w) = PackedWeight::from_qtensor(&t)? {
            return Ok(BaseWeight::Packed(w, kernel));
        }
        // Q5_x / Q8_1 have no packed layout of their own: re-rounded to 8 bits, as for candle
        // below. K-quants stay with candle.
        if lacks_simd_kernel(t.dtype()) {
            if let Some(w) = PackedWeight::from_qtensor(&to_q8_0(&t)?)? {
                return Ok(BaseWeight::Packed(w, kernel));
            }
        }
    }
    candle_matmul(t, dtype, dense)
}

/// The packed integer kernel for `--dtype native` (VNNI or AVX2, chosen at run time), unless
/// this CPU has neither.
fn packed_kernel(dtype: WeightDtype) -> Option<Kernel> {
    match dtype {
        WeightDtype::Native => Kernel::best(),
        _ => None,
    }
}

fn candle_matmul(t: QTensor, dtype: WeightDtype, dense: bool) -> Result<BaseWeight> {
    let dense = if dense {
        Some(t.dequantize(&Device::Cpu)?)
    } else {
        None
    };
    let quantized = match dtype {
        WeightDtype::Native | WeightDtype::NativeCandle if lacks_simd_kernel(t.dtype()) => {
            // candle has only scalar dot products for these formats (about 5x slower than its
            // AVX2/AVX-512 Q8_0 path). Re-rounding 4/5-bit values to 8 bits loses little, so
            // convert once at load.
            QMatMul::from_qtensor(to_q8_0(&t)?)?
        }
        WeightDtype::Native | WeightDtype::NativeCandle | WeightDtype::Stored => {
            QMatMul::from_qtensor(t)?
        }
        WeightDtype::F32 => QMatMul::Tensor(t.dequantize(&Device::Cpu)?),
    };
    Ok(BaseWeight::Candle { quantized, dense })
}

/// The same weights re-rounded to Q8_0 (for formats without a fast kernel of their own).
fn to_q8_0(t: &QTensor) -> Result<QTensor> {
    Ok(QTensor::quantize(
        &t.dequantize(&Device::Cpu)?,
        GgmlDType::Q8_0,
    )?)
}

/// Largest model (as f32) that also keeps dense copies of its weights.
const DENSE_BUDGET: usize = 2 << 30;

fn lacks_simd_kernel(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_1
    )
}
