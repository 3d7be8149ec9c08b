//! `Encoder`: the BERT encoder forward on the host, for sentence embeddings.
//!
//! Why not candle's BERT: on a 2-core CPU it took 33 ms to embed a 100-token prompt (and
//! 12 ms for a 15-token one), mostly per-op allocation and dispatch around small tensors,
//! while routing must answer in a few milliseconds. This forward packs the batch without
//! padding, fuses Q/K/V into one matmul, and runs the matmuls on AMX tiles in bf16 where
//! the CPU has them ([`MatmulKind`]), else in f32 through `gemm`.
//!
//! Output: mean of the last hidden states over each sequence's tokens, L2-normalized
//! (sentence-transformers' Pooling + Normalize for all-MiniLM-L6-v2).

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx;
mod attention;
mod disjoint;
mod linear;
mod math;

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};

pub use linear::MatmulKind;
use linear::{Activation, Linear};

use super::l2_normalize;
use crate::{IndexError, Result};

struct Layer {
    /// Query, key and value projections stacked: `[3 * hidden, hidden]`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

pub(crate) struct Encoder {
    hidden: usize,
    heads: usize,
    eps: f32,
    max_positions: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token type 0's embedding: sentence embedders feed one segment.
    token_type0: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    kind: MatmulKind,
}

/// The tensors of a safetensors file by name, with or without a `bert.` prefix.
struct Tensors {
    map: HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Tensors {
    fn read(path: &Path) -> Result<Self> {
        let map = candle_core::safetensors::load(path, &Device::Cpu)?;
        let prefix = if map.contains_key("embeddings.word_embeddings.weight") {
            ""
        } else {
            "bert."
        };
        Ok(Self { map, prefix })
    }

    /// The tensor `name` as f32 values, checked against `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> std::result::Result<Vec<f32>, String> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .map
            .get(&full)
            .ok_or_else(|| format!("tensor {full} is missing"))?;
        if t.dims() != shape {
            return Err(format!(
                "tensor {full} has shape {:?}, expected {shape:?}",
                t.dims()
            ));
        }
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format!("tensor {full}: {e}"))
    }

    fn norm(&self, name: &str, width: usize) -> std::result::Result<Norm, String> {
        Ok(Norm {
            gamma: self.get(&format!("{name}.weight"), &[width])?,
            beta: self.get(&format!("{name}.bias"), &[width])?,
        })
    }

    fn linear(
        &self,
        name: &str,
        n: usize,
        k: usize,
        kind: MatmulKind,
    ) -> std::result::Result<Linear, String> {
        let w = self.get(&format!("{name}.weight"), &[n, k])?;
        let b = self.get(&format!("{name}.bias"), &[n])?;
        Ok(Linear::new(w, b, n, k, kind))
    }
}

impl Encoder {
    /// Whether this forward implements `config` (exact GELU, absolute positions).
    pub(crate) fn supports(config: &Config) -> bool {
        matches!(config.hidden_act, HiddenAct::Gelu)
            && matches!(
                config.position_embedding_type,
                PositionEmbeddingType::Absolute
            )
            && config.num_attention_heads > 0
            && config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
    }

    pub(crate) fn load(weights: &Path, config: &Config, kind: MatmulKind) -> Result<Self> {
        let fail = |reason: String| IndexError::EmbedderLoad {
            path: weights.to_path_buf(),
            reason,
        };
        if !Self::supports(config) {
            return Err(fail(
                "the host encoder needs exact GELU and absolute positions".into(),
            ));
        }
        let tensors = Tensors::read(weights)?;
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let load = || -> std::result::Result<Self, String> {
            let emb = "embeddings";
            let mut layers = Vec::with_capacity(config.num_hidden_layers);
            for i in 0..config.num_hidden_layers {
                let p = format!("encoder.layer.{i}");
                let mut qkv_w = Vec::with_capacity(3 * h * h);
                let mut qkv_b = Vec::with_capacity(3 * h);
                for part in ["query", "key", "value"] {
                    qkv_w.extend(
                        tensors.get(&format!("{p}.attention.self.{part}.weight"), &[h, h])?,
                    );
                    qkv_b.extend(tensors.get(&format!("{p}.attention.self.{part}.bias"), &[h])?);
                }
                layers.push(Layer {
                    qkv: Linear::new(qkv_w, qkv_b, 3 * h, h, kind),
                    attention_out: tensors.linear(
                        &format!("{p}.attention.output.dense"),
                        h,
                        h,
                        kind,
                    )?,
                    attention_norm: tensors.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                    intermediate: tensors.linear(
                        &format!("{p}.intermediate.dense"),
                        inter,
                        h,
                        kind,
                    )?,
                    output: tensors.linear(&format!("{p}.output.dense"), h, inter, kind)?,
                    output_norm: tensors.norm(&format!("{p}.output.LayerNorm"), h)?,
                });
            }
            let types = tensors.get(
                &format!("{emb}.token_type_embeddings.weight"),
                &[config.type_vocab_size, h],
            )?;
            Ok(Self {
                hidden: h,
                heads: config.num_attention_heads,
                eps: config.layer_norm_eps as f32,
                max_positions: config.max_position_embeddings,
                word: tensors.get(
                    &format!("{emb}.word_embeddings.weight"),
                    &[config.vocab_size, h],
                )?,
                position: tensors.get(
                    &format!("{emb}.position_embeddings.weight"),
                    &[config.max_position_embeddings, h],
                )?,
                token_type0: types[..h].to_vec(),
                embedding_norm: tensors.norm(&format!("{emb}.LayerNorm"), h)?,
                layers,
                kind,
            })
        };
        load().map_err(fail)
    }

    pub(crate) fn kind(&self) -> MatmulKind {
        self.kind
    }

    /// One pooled, unit-length vector per sequence of token ids.
    pub(crate) fn embed(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let vocab = self.word.len() / self.hidden;
        let mut ranges: Vec<Range<usize>> = Vec::with_capacity(sequences.len());
        let mut start = 0;
        for ids in sequences {
            if ids.is_empty() || ids.len() > self.max_positions {
                return Err(IndexError::Embed {
                    reason: format!(
                        "a sequence of {} tokens (1..={} allowed)",
                        ids.len(),
                        self.max_positions
                    ),
                });
            }
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(IndexError::Embed {
                    reason: format!("token id {bad} is outside the vocabulary of {vocab}"),
                });
            }
            ranges.push(start..start + ids.len());
            start += ids.len();
        }
        let mut hidden = self.embeddings(sequences);
        for layer in &self.layers {
            hidden = self.layer(layer, hidden, &ranges);
        }
        Ok(ranges
            .iter()
            .map(|rows| {
                let mut mean = vec![0f32; self.hidden];
                for row in hidden[rows.start * self.hidden..rows.end * self.hidden]
                    .chunks_exact(self.hidden)
                {
                    mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
                }
                let inv = 1.0 / rows.len() as f32;
                mean.iter_mut().for_each(|m| *m *= inv);
                l2_normalize(&mut mean);
                mean
            })
            .collect())
    }

    /// Word + position + token-type-0 embeddings, layer-normed: `[tokens, hidden]`.
    fn embeddings(&self, sequences: &[Vec<u32>]) -> Vec<f32> {
        let h = self.hidden;
        let mut out = Vec::with_capacity(sequences.iter().map(Vec::len).sum::<usize>() * h);
        for ids in sequences {
            for (pos, &id) in ids.iter().enumerate() {
                let word = &self.word[id as usize * h..][..h];
                let position = &self.position[pos * h..][..h];
                out.extend(
                    word.iter()
                        .zip(position)
                        .zip(&self.token_type0)
                        .map(|((w, p), t)| w + p + t),
                );
            }
        }
        let norm = &self.embedding_norm;
        math::add_layer_norm(&mut out, &[], &norm.gamma, &norm.beta, self.eps);
        out
    }

    fn layer(&self, layer: &Layer, input: Vec<f32>, ranges: &[Range<usize>]) -> Vec<f32> {
        let tokens = input.len() / self.hidden;
        let qkv = layer.qkv.forward(&input, tokens, Activation::None);
        let context = attention::self_attention(&qkv, ranges, self.hidden, self.heads);
        let mut attended = layer
            .attention_out
            .forward(&context, tokens, Activation::None);
        let norm = &layer.attention_norm;
        math::add_layer_norm(&mut attended, &input, &norm.gamma, &norm.beta, self.eps);
        let inner = layer
            .intermediate
            .forward(&attended, tokens, Activation::Gelu);
        debug_assert_eq!(inner.len(), tokens * layer.intermediate.n());
        let mut out = layer.output.forward(&inner, tokens, Activation::None);
        let norm = &layer.output_norm;
        math::add_layer_norm(&mut out, &attended, &norm.gamma, &norm.beta, self.eps);
        out
    }
}
