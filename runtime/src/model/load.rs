//! Loading steps both backends share: tensors by role from the one [`WeightSource`]
//! abstraction (which already hands out the Hugging Face layout, GGUF q/k rows un-permuted),
//! checked against the config, and projections that read one input stacked into one matrix.
//!
//! Everything here is on the host; each backend then puts the weights where it computes.

use super::projection::Part;
use crate::weights::{expect_shape, TensorRole, WeightSource};
use crate::{ModelConfig, ModuleKind, Result, RuntimeError};
use candle_core::quantized::{QStorage, QTensor};
use candle_core::Device;
use std::borrow::Cow;

/// One group of projections with a shared input: the parts' rows stacked in order
/// (`[Σ d_out, d_in]`, still in the file's format) and each part's module, width and bias.
pub(crate) struct GroupWeights {
    pub weight: QTensor,
    pub parts: Vec<Part>,
    pub d_in: usize,
}

/// Loads projections that share an input, stacked into one group when they are stored in
/// the same format (rows of every GGML format are independent, so stacking is a byte
/// concatenation), else one group each.
pub(crate) fn group_weights(
    source: &mut dyn WeightSource,
    cfg: &ModelConfig,
    layer: usize,
    modules: &[ModuleKind],
) -> Result<Vec<GroupWeights>> {
    let mut loaded = Vec::with_capacity(modules.len());
    for &m in modules {
        let (d_in, d_out) = cfg.module_shape(m);
        let role = TensorRole::Proj(layer, m);
        let w = required(source, role)?;
        expect_shape(role, &w, &[d_out, d_in])?;
        let bias = projection_bias(source, cfg, TensorRole::ProjBias(layer, m), m, d_out)?;
        loaded.push((
            w,
            Part {
                module: m,
                d_out,
                bias,
            },
        ));
    }
    let d_in = modules
        .first()
        .map(|&m| cfg.module_shape(m).0)
        .unwrap_or_default();
    let same_format = loaded.windows(2).all(|w| w[0].0.dtype() == w[1].0.dtype());
    if loaded.len() > 1 && same_format {
        let mut bytes = Vec::new();
        let mut rows = 0;
        for (w, part) in &loaded {
            bytes.extend_from_slice(&w.data()?);
            rows += part.d_out;
        }
        let dtype_q = loaded[0].0.dtype();
        let weight = QTensor::new(
            QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, dtype_q)?,
            (rows, d_in),
        )?;
        let parts = loaded.into_iter().map(|(_, p)| p).collect();
        return Ok(vec![GroupWeights {
            weight,
            parts,
            d_in,
        }]);
    }
    Ok(loaded
        .into_iter()
        .map(|(weight, part)| GroupWeights {
            weight,
            parts: vec![part],
            d_in,
        })
        .collect())
}

/// A projection's bias exactly when the config says it has one: a missing bias, or one the
/// config does not declare (which transformers would not use), refuses the model.
fn projection_bias(
    source: &mut dyn WeightSource,
    cfg: &ModelConfig,
    role: TensorRole,
    module: ModuleKind,
    d_out: usize,
) -> Result<Option<Vec<f32>>> {
    match (source.tensor(role)?, cfg.has_bias(module)) {
        (Some(b), true) => Ok(Some(vector(&b, role, d_out)?)),
        (None, false) => Ok(None),
        (None, true) => Err(RuntimeError::MissingTensor {
            name: role.hf_name(),
        }),
        (Some(_), false) => Err(RuntimeError::UnsupportedModel {
            reason: format!(
                "tensor {} is in the file but the config declares no bias on {}",
                role.hf_name(),
                module.hf_name()
            ),
        }),
    }
}

/// Qwen3's q and k norm gains of a layer, `[head_dim]` each, when the config has them.
pub(crate) fn qk_norms(
    source: &mut dyn WeightSource,
    cfg: &ModelConfig,
    layer: usize,
) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    if !cfg.qk_norm {
        return Ok(None);
    }
    let (q, k) = (TensorRole::QNorm(layer), TensorRole::KNorm(layer));
    Ok(Some((
        vector(&required(source, q)?, q, cfg.head_dim)?,
        vector(&required(source, k)?, k, cfg.head_dim)?,
    )))
}

pub(crate) fn required(source: &mut dyn WeightSource, role: TensorRole) -> Result<QTensor> {
    source
        .tensor(role)?
        .ok_or_else(|| RuntimeError::MissingTensor {
            name: role.hf_name(),
        })
}

pub(crate) fn vector(t: &QTensor, role: TensorRole, len: usize) -> Result<Vec<f32>> {
    expect_shape(role, t, &[len])?;
    Ok(t.dequantize(&Device::Cpu)?.to_vec1::<f32>()?)
}

/// The embedding `[vocab, hidden]` as stored, checked.
pub(crate) fn embedding(source: &mut dyn WeightSource, cfg: &ModelConfig) -> Result<QTensor> {
    let embed = required(source, TensorRole::Embed)?;
    expect_shape(
        TensorRole::Embed,
        &embed,
        &[cfg.vocab_size, cfg.hidden_size],
    )?;
    Ok(embed)
}

/// The output projection: `lm_head` when the model has one, else the tied embedding.
pub(crate) fn lm_head(
    source: &mut dyn WeightSource,
    cfg: &ModelConfig,
    embed: QTensor,
) -> Result<QTensor> {
    match source.tensor(TensorRole::LmHead)? {
        Some(w) => {
            expect_shape(TensorRole::LmHead, &w, &[cfg.vocab_size, cfg.hidden_size])?;
            Ok(w)
        }
        None => Ok(embed),
    }
}

/// The two norm gains of a layer: `(attention, mlp)`, each `[hidden]`.
pub(crate) fn layer_norms(
    source: &mut dyn WeightSource,
    cfg: &ModelConfig,
    layer: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let h = cfg.hidden_size;
    let attn = TensorRole::AttnNorm(layer);
    let mlp = TensorRole::MlpNorm(layer);
    Ok((
        vector(&required(source, attn)?, attn, h)?,
        vector(&required(source, mlp)?, mlp, h)?,
    ))
}

pub(crate) fn final_norm(source: &mut dyn WeightSource, cfg: &ModelConfig) -> Result<Vec<f32>> {
    let role = TensorRole::FinalNorm;
    vector(&required(source, role)?, role, cfg.hidden_size)
}

/// The projection groups of one layer: q/k/v, o, gate/up, down — as loaded, or as a
/// backend's projections after [`LayerGroups::map`].
pub(crate) struct LayerGroups<G = GroupWeights> {
    pub qkv: Vec<G>,
    pub o: G,
    pub gate_up: Vec<G>,
    pub down: G,
}

impl LayerGroups {
    /// Turns every group into a backend's projection, in load order.
    pub(crate) fn map<T>(
        self,
        mut f: impl FnMut(GroupWeights) -> Result<T>,
    ) -> Result<LayerGroups<T>> {
        Ok(LayerGroups {
            qkv: self.qkv.into_iter().map(&mut f).collect::<Result<_>>()?,
            o: f(self.o)?,
            gate_up: self
                .gate_up
                .into_iter()
                .map(&mut f)
                .collect::<Result<_>>()?,
            down: f(self.down)?,
        })
    }
}

pub(crate) fn layer_groups(
    source: &mut dyn WeightSource,
    cfg: &ModelConfig,
    layer: usize,
) -> Result<LayerGroups> {
    let mut group = |modules: &[ModuleKind]| group_weights(source, cfg, layer, modules);
    let qkv = group(&[ModuleKind::Q, ModuleKind::K, ModuleKind::V])?;
    let o = single(group(&[ModuleKind::O])?)?;
    let gate_up = group(&[ModuleKind::Gate, ModuleKind::Up])?;
    let down = single(group(&[ModuleKind::Down])?)?;
    Ok(LayerGroups {
        qkv,
        o,
        gate_up,
        down,
    })
}

fn single(mut groups: Vec<GroupWeights>) -> Result<GroupWeights> {
    match (groups.pop(), groups.is_empty()) {
        (Some(g), true) => Ok(g),
        _ => Err(RuntimeError::UnsupportedModel {
            reason: "expected exactly one projection group".into(),
        }),
    }
}
