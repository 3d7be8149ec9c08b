//! The llama-family decoder (Llama 2/3/3.1/3.2, Mistral, Qwen2/2.5, Qwen3, SmolLM) over a
//! ragged batch; the architectures differ only in `ModelConfig`'s named switches.
//!
//! One forward takes any number of sequences, each with its own new tokens, KV cache and
//! candidate adapters. Their rows are flattened into one `[rows, hidden]` matrix so every
//! projection runs once for the whole batch; attention runs per sequence against the
//! sequence's own cache. Logits are computed only for the rows asked for.
//!
//! Two backends run the same model from the same loader ([`ModelBackend`]): the host
//! backend (`host.rs`, f32 slices, the fast CPU path and the numerics reference) and the
//! device backend (`device/`, candle tensors on any `candle_core::Device`, for CUDA).

mod attention;
mod base_weight;
mod device;
mod host;
mod layer;
mod load;
mod norm;
pub(crate) mod packed;
mod projection;
pub(crate) mod rope;

pub use projection::{LoraStacks, NoAdapters};

use crate::gate::{Candidate, Gate};
use crate::weights::{WeightDtype, WeightSource};
use crate::{KvCache, ModelConfig, Result, RuntimeError};
use candle_core::Device;
use device::DeviceModel;
use host::HostModel;
use rope::Rope;
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

/// Where the base model computes.
#[derive(Debug, Clone)]
pub enum ModelBackend {
    /// Host f32 slices and candle's CPU kernels: the fastest path on a CPU, and the
    /// numerics reference.
    Host,
    /// candle tensors on this device, weights resident there (CUDA; `Device::Cpu` runs the
    /// same code on the CPU, which is how it is tested against the host backend).
    Device(Device),
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

/// The rows of a step that need logits (in step row order) and how many per sequence.
pub(crate) struct LogitPick {
    rows: Vec<usize>,
    counts: Vec<usize>,
}

impl LogitPick {
    fn new(seqs: &[SeqStep<'_>], seq_rows: &[Range<usize>]) -> Self {
        let mut rows = Vec::new();
        let mut counts = Vec::with_capacity(seqs.len());
        for (seq, range) in seqs.iter().zip(seq_rows) {
            let before = rows.len();
            match seq.logits {
                LogitRows::None => {}
                LogitRows::Last => rows.push(range.end - 1),
                LogitRows::All => rows.extend(range.clone()),
            }
            counts.push(rows.len() - before);
        }
        Self { rows, counts }
    }

    /// Splits `[rows, vocab]` logits into one block per sequence.
    fn split(&self, logits: &[f32], vocab: usize) -> Result<Vec<Vec<f32>>> {
        if logits.len() != self.rows.len() * vocab {
            return Err(RuntimeError::UnsupportedModel {
                reason: format!(
                    "{} logits for {} rows of a {vocab}-token vocabulary",
                    logits.len(),
                    self.rows.len()
                ),
            });
        }
        let mut at = 0;
        Ok(self
            .counts
            .iter()
            .map(|&n| {
                let block = logits[at * vocab..(at + n) * vocab].to_vec();
                at += n;
                block
            })
            .collect())
    }
}

enum Backend {
    Host(HostModel),
    Device(DeviceModel),
}

pub struct LlamaModel {
    cfg: ModelConfig,
    rope: Rope,
    backend: Backend,
}

impl LlamaModel {
    /// Loads the model on the host backend.
    pub fn load(source: &mut dyn WeightSource, dtype: WeightDtype) -> Result<Self> {
        Self::load_on(source, dtype, &ModelBackend::Host)
    }

    /// Loads the model on `backend`. On a device, weights keep their stored format
    /// (quantized GGUF tensors stay quantized for candle's quantized matmul) unless `dtype`
    /// is `F32`.
    pub fn load_on(
        source: &mut dyn WeightSource,
        dtype: WeightDtype,
        backend: &ModelBackend,
    ) -> Result<Self> {
        let cfg = source.config().clone();
        cfg.validate()?;
        let backend = match backend {
            ModelBackend::Host => Backend::Host(HostModel::load(source, &cfg, dtype)?),
            ModelBackend::Device(device) => {
                Backend::Device(DeviceModel::load(source, &cfg, dtype, device)?)
            }
        };
        let rope = Rope::new(cfg.head_dim, &cfg.rope);
        Ok(Self { cfg, rope, backend })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device adapter stacks must live on for this model: the model's device, or the
    /// CPU for the host backend.
    pub fn device(&self) -> Device {
        match &self.backend {
            Backend::Host(_) => Device::Cpu,
            Backend::Device(d) => d.device().clone(),
        }
    }

    /// Runs one step for every sequence; returns, per sequence, the logits of the rows it
    /// asked for, concatenated (`[n_rows, vocab]` row-major; empty for `LogitRows::None`).
    pub fn forward(
        &self,
        seqs: &mut [SeqStep<'_>],
        lora: &dyn LoraStacks,
        gate: &dyn Gate,
    ) -> Result<Vec<Vec<f32>>> {
        let step = self.step_context(seqs)?;
        let pick = LogitPick::new(seqs, &step.seq_rows);
        let logits = match &self.backend {
            // The host backend's matmuls and LoRA mixture split their work over rayon's pool
            // a few hundred times per step. Running the whole step on a pool thread makes each
            // split a work-stealing push instead of a pool wake-up plus a blocking wait here.
            Backend::Host(m) => rayon::scope(|_| m.forward(seqs, &step, &pick, lora, gate))?,
            Backend::Device(m) => m.forward(seqs, &step, &pick, lora, gate)?,
        };
        for seq in seqs.iter_mut() {
            seq.cache.commit(seq.tokens.len());
        }
        pick.split(&logits, self.cfg.vocab_size)
    }

    /// Checks every sequence's step and lays out its rows.
    fn step_context<'a>(&'a self, seqs: &[SeqStep<'a>]) -> Result<StepContext<'a>> {
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
        Ok(StepContext {
            cfg,
            rope: &self.rope,
            row_seq,
            positions,
            seq_rows,
            row_candidates,
            cos,
            sin,
        })
    }
}
