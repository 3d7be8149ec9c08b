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
mod linear;
mod math;
mod team;

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};

pub use linear::MatmulKind;
use linear::{Activation, Linear};
use team::{Member, Shared, Team};

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

impl Norm {
    /// One team phase: for this member's share of the `n` rows of width `h`,
    /// `out = LayerNorm(input + residual)`, where `input` is `out` itself when `None`.
    ///
    /// # Safety
    /// No member writes `input` or `residual`, nor reads `out`, during this phase; every
    /// buffer holds `n · h` values.
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows(
        &self,
        member: &Member,
        n: usize,
        h: usize,
        out: &Shared<'_, f32>,
        input: Option<&Shared<'_, f32>>,
        residual: &Shared<'_, f32>,
        eps: f32,
    ) {
        for t in member.share(n) {
            let span = t * h..(t + 1) * h;
            // SAFETY: the caller's contract; members own disjoint rows of `out`.
            unsafe {
                let row = out.part_mut(span.clone());
                if let Some(input) = input {
                    row.copy_from_slice(input.part(span.clone()));
                }
                let residual = residual.part(span);
                math::norm_row(row, Some(residual), &self.gamma, &self.beta, eps);
            }
        }
    }
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
    team: Team,
    workspace: Mutex<Workspace>,
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
        let team = Team::new(rayon::current_num_threads()).map_err(fail)?;
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
                team,
                workspace: Mutex::new(Workspace::default()),
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
        let mut tokens = Vec::new();
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
            ranges.push(tokens.len()..tokens.len() + ids.len());
            tokens.extend(ids.iter().enumerate().map(|(pos, &id)| (id, pos)));
        }
        let (n, h) = (tokens.len(), self.hidden);
        let scratch = self
            .layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.attention_out, &l.intermediate, &l.output])
            .map(|lin| lin.scratch_len(n))
            .max()
            .unwrap_or(0);
        let inter = self.layers.first().map_or(0, |l| l.intermediate.n());
        let mut workspace = self
            .workspace
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ws = &mut *workspace;
        let buffers = ws.fit(n, h, inter, scratch);
        self.team
            .run(|member| self.forward(member, &tokens, &ranges, &buffers));
        Ok(ranges
            .iter()
            .map(|rows| {
                let mut mean = vec![0f32; h];
                for row in ws.hidden[rows.start * h..rows.end * h].chunks_exact(h) {
                    mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
                }
                let inv = 1.0 / rows.len() as f32;
                mean.iter_mut().for_each(|m| *m *= inv);
                l2_normalize(&mut mean);
                mean
            })
            .collect())
    }

    /// `member`'s part of the forward: the last hidden states end in `b.hidden`.
    /// `tokens` is every token's (id, position in its sequence), sequences one after another.
    fn forward(
        &self,
        member: Member<'_>,
        tokens: &[(u32, usize)],
        ranges: &[Range<usize>],
        b: &Buffers<'_>,
    ) {
        let (n, h, eps) = (tokens.len(), self.hidden, self.eps);
        // Every phase below writes only the member's share, reads only what earlier phases
        // wrote, and ends with a sync; the SAFETY notes name the phase's writes.
        for t in member.share(n) {
            // SAFETY: phase "embeddings" writes this member's rows of hidden.
            let row = unsafe { b.hidden.part_mut(t * h..(t + 1) * h) };
            let (id, pos) = tokens[t];
            let word = &self.word[id as usize * h..][..h];
            let position = &self.position[pos * h..][..h];
            for (((r, w), p), ty) in row
                .iter_mut()
                .zip(word)
                .zip(position)
                .zip(&self.token_type0)
            {
                *r = w + p + ty;
            }
            let norm = &self.embedding_norm;
            math::norm_row(row, None, &norm.gamma, &norm.beta, eps);
        }
        member.sync();
        let mut scores = Vec::new();
        for layer in &self.layers {
            // SAFETY (each `part` below): the buffer read is not written in that phase.
            let hidden = unsafe { b.hidden.part(0..n * h) };
            layer
                .qkv
                .forward(member, hidden, n, Activation::None, &b.scratch, &b.qkv);
            member.sync();
            let qkv = unsafe { b.qkv.part(0..b.qkv.len()) };
            attention::self_attention(member, qkv, ranges, h, self.heads, &b.ctx, &mut scores);
            member.sync();
            let ctx = unsafe { b.ctx.part(0..n * h) };
            layer
                .attention_out
                .forward(member, ctx, n, Activation::None, &b.scratch, &b.attended);
            member.sync();
            // SAFETY: this phase reads hidden and writes attended.
            unsafe {
                layer
                    .attention_norm
                    .rows(&member, n, h, &b.attended, None, &b.hidden, eps)
            };
            member.sync();
            let attended = unsafe { b.attended.part(0..n * h) };
            layer
                .intermediate
                .forward(member, attended, n, Activation::Gelu, &b.scratch, &b.inner);
            member.sync();
            // The FFN output reuses ctx, which nothing reads any more in this layer.
            let inner = unsafe { b.inner.part(0..b.inner.len()) };
            layer
                .output
                .forward(member, inner, n, Activation::None, &b.scratch, &b.ctx);
            member.sync();
            // SAFETY: this phase reads ctx and attended and writes hidden.
            unsafe {
                let (out, input) = (&b.hidden, Some(&b.ctx));
                layer
                    .output_norm
                    .rows(&member, n, h, out, input, &b.attended, eps);
            }
            member.sync();
        }
    }
}

/// The forward's buffers, kept between calls: fresh multi-megabyte vectors cost page
/// faults on every call (about a tenth of a short embedding).
#[derive(Default)]
struct Workspace {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    attended: Vec<f32>,
    inner: Vec<f32>,
    scratch: Vec<u16>,
}

/// Views of a [`Workspace`] sized for one call, shared by the team.
struct Buffers<'a> {
    hidden: Shared<'a, f32>,
    qkv: Shared<'a, f32>,
    ctx: Shared<'a, f32>,
    attended: Shared<'a, f32>,
    inner: Shared<'a, f32>,
    scratch: Shared<'a, u16>,
}

impl Workspace {
    /// Grows the buffers to `tokens` rows (never shrinks) and views exactly that many. Old
    /// contents are not cleared: the forward writes every element before reading it.
    fn fit(&mut self, tokens: usize, hidden: usize, inter: usize, scratch: usize) -> Buffers<'_> {
        fn view<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) -> Shared<'_, T> {
            if buffer.len() < len {
                buffer.resize(len, T::default());
            }
            Shared::new(&mut buffer[..len])
        }
        Buffers {
            hidden: view(&mut self.hidden, tokens * hidden),
            qkv: view(&mut self.qkv, tokens * 3 * hidden),
            ctx: view(&mut self.ctx, tokens * hidden),
            attended: view(&mut self.attended, tokens * hidden),
            inner: view(&mut self.inner, tokens * inter),
            scratch: view(&mut self.scratch, scratch),
        }
    }
}
