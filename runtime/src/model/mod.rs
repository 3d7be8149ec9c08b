//! The llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM) over a ragged batch.
//!
//! One forward takes any number of sequences, each with its own new tokens, KV cache and
//! candidate adapters. Their rows are flattened into one `[rows, hidden]` matrix so every
//! projection runs once for the whole batch; attention runs per row against the row's own
//! cache. Logits are computed only for the rows asked for.

mod attention;
mod base_weight;
mod layer;
mod norm;
pub(crate) mod packed;
mod projection;
pub(crate) mod rope;

pub use projection::{LoraStacks, NoAdapters};

use crate::gate::{Candidate, Gate};
use crate::weights::{expect_shape, TensorRole, WeightDtype, WeightSource};
use crate::{KvCache, ModelConfig, ModuleKind, Result, RuntimeError};
use base_weight::BaseWeight;
use candle_core::quantized::QStorage;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::Device;
use layer::DecoderLayer;
use norm::rms_norm;
use packed::{Kernel, PackedWeight};
use projection::{Part, ProjectionGroup};
use rope::Rope;
use std::borrow::Cow;
use std::ops::Range;

/// Which rows of a sequence need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    None,
    Last,
    All,
}

/// One sequence's part of a forward step.
pub struct SeqStep<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub candidates: &'a [Candidate],
    pub logits: LogitRows,
}

/// Per-step facts every layer needs, built once per forward.
pub(crate) struct StepContext<'a> {
    cfg: &'a ModelConfig,
    rope: &'a Rope,
    row_seq: Vec<usize>,
    positions: Vec<usize>,
    seq_rows: Vec<Range<usize>>,
    row_candidates: Vec<&'a [Candidate]>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl StepContext<'_> {
    fn rows(&self) -> usize {
        self.row_seq.len()
    }
}

pub struct LlamaModel {
    cfg: ModelConfig,
    embed: Vec<f32>,
    layers: Vec<DecoderLayer>,
    final_norm: Vec<f32>,
    lm_head: BaseWeight,
    rope: Rope,
}

impl LlamaModel {
    pub fn load(source: &mut dyn WeightSource, dtype: WeightDtype) -> Result<Self> {
        let cfg = source.config().clone();
        let h = cfg.hidden_size;
        let embed_q = required(source, TensorRole::Embed)?;
        expect_shape(TensorRole::Embed, &embed_q, &[cfg.vocab_size, h])?;
        let embed = embed_q
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // Dense f32 copies for many-row matmuls, when the whole model fits in DENSE_BUDGET.
        let dense = dtype == WeightDtype::Native && cfg.f32_bytes() <= DENSE_BUDGET;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let mut group = |modules: &[ModuleKind]| groups(source, &cfg, l, modules, dtype, dense);
            let qkv = group(&[ModuleKind::Q, ModuleKind::K, ModuleKind::V])?;
            let o = single(group(&[ModuleKind::O])?)?;
            let gate_up = group(&[ModuleKind::Gate, ModuleKind::Up])?;
            let down = single(group(&[ModuleKind::Down])?)?;
            layers.push(DecoderLayer {
                index: l,
                attn_norm: vector(
                    &required(source, TensorRole::AttnNorm(l))?,
                    TensorRole::AttnNorm(l),
                    h,
                )?,
                mlp_norm: vector(
                    &required(source, TensorRole::MlpNorm(l))?,
                    TensorRole::MlpNorm(l),
                    h,
                )?,
                qkv,
                o,
                gate_up,
                down,
            });
        }
        let final_norm = vector(
            &required(source, TensorRole::FinalNorm)?,
            TensorRole::FinalNorm,
            h,
        )?;
        let lm_head = match source.tensor(TensorRole::LmHead)? {
            Some(w) => {
                expect_shape(TensorRole::LmHead, &w, &[cfg.vocab_size, h])?;
                matmul(w, dtype, dense)?
            }
            None => matmul(embed_q, dtype, dense)?,
        };
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
        Ok(Self {
            cfg,
            embed,
            layers,
            final_norm,
            lm_head,
            rope,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Runs one step for every sequence; returns, per sequence, the logits of the rows it
    /// asked for, concatenated (`[n_rows, vocab]` row-major; empty for `LogitRows::None`).
    pub fn forward(
        &self,
        seqs: &mut [SeqStep<'_>],
        lora: &dyn LoraStacks,
        gate: &dyn Gate,
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let mut row_seq = Vec::new();
        let mut positions = Vec::new();
        let mut seq_rows = Vec::with_capacity(seqs.len());
        let mut row_candidates = Vec::new();
        for (s, seq) in seqs.iter().enumerate() {
            if seq.tokens.is_empty() {
                return Err(RuntimeError::InvalidRequest {
                    reason: format!("sequence {s} has no tokens in this step"),
                });
            }
            let start = seq.cache.len();
            if start + seq.tokens.len() > cfg.max_position {
                return Err(RuntimeError::InvalidRequest {
                    reason: format!(
                        "sequence {s} would reach position {} but the model's context is {}",
                        start + seq.tokens.len(),
                        cfg.max_position
                    ),
                });
            }
            if let Some(&bad) = seq.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(RuntimeError::InvalidRequest {
                    reason: format!(
                        "token id {bad} is outside the vocabulary of {}",
                        cfg.vocab_size
                    ),
                });
            }
            let first = row_seq.len();
            for i in 0..seq.tokens.len() {
                row_seq.push(s);
                positions.push(start + i);
                row_candidates.push(seq.candidates);
            }
            seq_rows.push(first..row_seq.len());
        }
        let (cos, sin) = self.rope.tables(&positions);
        let step = StepContext {
            cfg,
            rope: &self.rope,
            row_seq,
            positions,
            seq_rows,
            row_candidates,
            cos,
            sin,
        };
        let h_dim = cfg.hidden_size;
        let mut h = Vec::with_capacity(step.rows() * h_dim);
        for seq in seqs.iter() {
            for &t in seq.tokens {
                h.extend_from_slice(&self.embed[t as usize * h_dim..(t as usize + 1) * h_dim]);
            }
        }
        {
            let mut caches: Vec<&mut KvCache> = seqs.iter_mut().map(|s| &mut *s.cache).collect();
            for layer in &self.layers {
                layer.forward(&mut h, &step, &mut caches, lora, gate)?;
            }
        }
        for seq in seqs.iter_mut() {
            seq.cache.commit(seq.tokens.len());
        }
        // Logits only for the rows asked for: the vocabulary projection is the largest matmul.
        let mut wanted = Vec::new();
        let mut counts = Vec::with_capacity(seqs.len());
        for (seq, rows) in seqs.iter().zip(&step.seq_rows) {
            let picked: Vec<usize> = match seq.logits {
                LogitRows::None => vec![],
                LogitRows::Last => vec![rows.end - 1],
                LogitRows::All => rows.clone().collect(),
            };
            counts.push(picked.len());
            wanted.extend(picked);
        }
        let mut out = Vec::with_capacity(seqs.len());
        if wanted.is_empty() {
            out.resize(seqs.len(), Vec::new());
            return Ok(out);
        }
        let mut picked_h = Vec::with_capacity(wanted.len() * h_dim);
        for &r in &wanted {
            picked_h.extend_from_slice(&h[r * h_dim..(r + 1) * h_dim]);
        }
        let normed = rms_norm(&picked_h, &self.final_norm, cfg.rms_norm_eps);
        let logits = self.lm_head.forward(&normed, h_dim)?;
        let v = cfg.vocab_size;
        let mut at = 0;
        for n in counts {
            out.push(logits[at * v..(at + n) * v].to_vec());
            at += n;
        }
        Ok(out)
    }
}

/// Loads projections that share an input, stacked into one group when they are stored in
/// the same format (rows of every GGML format are independent, so stacking is a byte
/// concatenation), else one group each.
fn groups(
    source: &mut dyn WeightSource,
    cfg: &ModelConfig,
    layer: usize,
    modules: &[ModuleKind],
    dtype: WeightDtype,
    dense: bool,
) -> Result<Vec<ProjectionGroup>> {
    let mut loaded = Vec::with_capacity(modules.len());
    for &m in modules {
        let (d_in, d_out) = cfg.module_shape(m);
        let role = TensorRole::Proj(layer, m);
        let w = required(source, role)?;
        expect_shape(role, &w, &[d_out, d_in])?;
        let bias = match source.tensor(TensorRole::ProjBias(layer, m))? {
            Some(b) => Some(vector(&b, TensorRole::ProjBias(layer, m), d_out)?),
            None => None,
        };
        loaded.push((
            w,
            Part {
                module: m,
                d_out,
                bias,
            },
        ));
    }
    let d_in = cfg.module_shape(modules[0]).0;
    let same_format = loaded.windows(2).all(|w| w[0].0.dtype() == w[1].0.dtype());
    if loaded.len() > 1 && same_format {
        let mut bytes = Vec::new();
        let mut rows = 0;
        for (w, part) in &loaded {
            bytes.extend_from_slice(&w.data()?);
            rows += part.d_out;
        }
        let dtype_q = loaded[0].0.dtype();
        let stacked = QTensor::new(
            QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, dtype_q)?,
            (rows, d_in),
        )?;
        let parts = loaded.into_iter().map(|(_, p)| p).collect();
        return Ok(vec![ProjectionGroup::new(
            layer,
            matmul(stacked, dtype, dense)?,
            parts,
            d_in,
        )]);
    }
    loaded
        .into_iter()
        .map(|(w, part)| {
            Ok(ProjectionGroup::new(
                layer,
                matmul(w, dtype, dense)?,
                vec![part],
                d_in,
            ))
        })
        .collect()
}

fn single(mut groups: Vec<ProjectionGroup>) -> Result<ProjectionGroup> {
    match (groups.pop(), groups.is_empty()) {
        (Some(g), true) => Ok(g),
        _ => Err(RuntimeError::UnsupportedModel {
            reason: "expected exactly one projection group".into(),
        }),
    }
}

fn required(source: &mut dyn WeightSource, role: TensorRole) -> Result<QTensor> {
    source
        .tensor(role)?
        .ok_or_else(|| RuntimeError::MissingTensor {
            name: role.hf_name(),
        })
}

fn vector(t: &QTensor, role: TensorRole, len: usize) -> Result<Vec<f32>> {
    expect_shape(role, t, &[len])?;
    Ok(t.dequantize(&Device::Cpu)?.to_vec1::<f32>()?)
}

fn matmul(t: QTensor, dtype: WeightDtype, dense: bool) -> Result<BaseWeight> {
    if let (WeightDtype::Native, Some(kernel)) = (dtype, packed_kernel()) {
        if let Some(w) = PackedWeight::from_qtensor(&t)? {
            return Ok(BaseWeight::Packed(w, kernel));
        }
        // Q5_x / Q8_1 have no packed layout of their own: re-rounded to 8 bits, as for candle
        // below. K-quants stay with candle.
        if lacks_simd_kernel(t.dtype()) {
            let q8 = QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?;
            if let Some(w) = PackedWeight::from_qtensor(&q8)? {
                return Ok(BaseWeight::Packed(w, kernel));
            }
        }
    }
    candle_matmul(t, dtype, dense)
}

/// The packed integer kernel for `--dtype native`, unless this CPU lacks it or
/// `LORAMUX_BASE_MATMUL=candle` asks for candle's kernels (to compare the two).
fn packed_kernel() -> Option<Kernel> {
    if std::env::var("LORAMUX_BASE_MATMUL").is_ok_and(|v| v == "candle") {
        return None;
    }
    Kernel::vnni()
}

fn candle_matmul(t: QTensor, dtype: WeightDtype, dense: bool) -> Result<BaseWeight> {
    let dense = if dense {
        Some(t.dequantize(&Device::Cpu)?)
    } else {
        None
    };
    let quantized = match dtype {
        WeightDtype::Native if lacks_simd_kernel(t.dtype()) => {
            // candle has only scalar dot products for these formats (about 5x slower than its
            // AVX2/AVX-512 Q8_0 path). Re-rounding 4/5-bit values to 8 bits loses little, so
            // convert once at load.
            let dense = t.dequantize(&Device::Cpu)?;
            QMatMul::from_qtensor(QTensor::quantize(&dense, GgmlDType::Q8_0)?)?
        }
        WeightDtype::Native | WeightDtype::Stored => QMatMul::from_qtensor(t)?,
        WeightDtype::F32 => QMatMul::Tensor(t.dequantize(&Device::Cpu)?),
    };
    Ok(BaseWeight::Candle { quantized, dense })
}

/// Largest model (as f32) that also keeps dense copies of its weights.
const DENSE_BUDGET: usize = 2 << 30;

fn lacks_simd_kernel(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_1
    )
}
