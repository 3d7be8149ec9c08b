//! `BertEmbedder`: a sentence-transformers BERT model (default all-MiniLM-L6-v2) on candle.
//!
//! Shapes: a batch of `b` texts is tokenized and right-padded to the longest, `[b, L]` ids
//! and mask; BERT gives `[b, L, hidden]`; mean pooling over the unmasked positions gives
//! `[b, hidden]`; each row is L2-normalized. This is what sentence-transformers computes for
//! this model (Pooling: mean tokens, then Normalize).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use super::encoder::{Encoder, MatmulKind};
use super::{l2_normalize, Embedder};
use crate::{IndexError, Result};

/// Settings of a [`BertEmbedder`].
#[derive(Debug, Clone)]
pub struct BertEmbedderConfig {
    /// Texts per forward pass; longer inputs are split into batches of this size.
    pub batch_size: usize,
    /// Tokens kept per text (sentence-transformers uses 256 for all-MiniLM-L6-v2).
    pub max_tokens: usize,
    pub device: Device,
    pub backend: EmbedderBackend,
}

/// Which implementation runs the BERT forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbedderBackend {
    /// The host encoder with the best matmul this CPU has when the device is the CPU and
    /// the model is one it implements; candle otherwise. `LORAMUX_EMBEDDER=candle` forces
    /// candle.
    #[default]
    Auto,
    /// candle-transformers' BERT on `device`.
    Candle,
    /// The host encoder with this matmul (falls back to f32 where the kind is unusable).
    Host(MatmulKind),
}

impl Default for BertEmbedderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_tokens: 256,
            device: Device::Cpu,
            backend: EmbedderBackend::Auto,
        }
    }
}

enum Backend {
    Host(Encoder),
    Candle(BertModel),
}

pub struct BertEmbedder {
    backend: Backend,
    tokenizer: Tokenizer,
    config: BertEmbedderConfig,
    dim: usize,
    id: String,
}

impl BertEmbedder {
    pub const WEIGHTS: &'static str = "model.safetensors";
    pub const TOKENIZER: &'static str = "tokenizer.json";
    pub const CONFIG: &'static str = "config.json";

    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `dir`.
    pub fn load(dir: &Path, config: BertEmbedderConfig) -> Result<Self> {
        let _span = tracing::info_span!("embedder_load", dir = %dir.display()).entered();
        let fail = |path: &Path, reason: String| IndexError::EmbedderLoad {
            path: path.to_path_buf(),
            reason,
        };
        if config.batch_size == 0 || config.max_tokens < 2 {
            return Err(fail(
                dir,
                format!(
                    "batch_size {} and max_tokens {} must be positive",
                    config.batch_size, config.max_tokens
                ),
            ));
        }
        let cfg_path = dir.join(Self::CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| IndexError::io(&cfg_path, e))?;
        let bert: Config =
            serde_json::from_str(&text).map_err(|e| fail(&cfg_path, e.to_string()))?;
        let max_tokens = config.max_tokens.min(bert.max_position_embeddings);

        let tok_path = dir.join(Self::TOKENIZER);
        let mut tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| fail(&tok_path, e.to_string()))?;
        // Padding is done here per batch, with the mask, so the file's own padding is off.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| fail(&tok_path, e.to_string()))?;

        let weights = dir.join(Self::WEIGHTS);
        if !weights.is_file() {
            return Err(fail(&weights, "the file is missing".into()));
        }
        let host_kind = match config.backend {
            EmbedderBackend::Host(kind) => Some(kind),
            EmbedderBackend::Candle => None,
            EmbedderBackend::Auto => {
                let forced_candle = std::env::var("LORAMUX_EMBEDDER").is_ok_and(|v| v == "candle");
                (config.device.is_cpu() && Encoder::supports(&bert) && !forced_candle)
                    .then(MatmulKind::best)
            }
        };
        let backend = match host_kind {
            Some(kind) => {
                let kind = if kind.usable() { kind } else { MatmulKind::F32 };
                Backend::Host(Encoder::load(&weights, &bert, kind)?)
            }
            None => {
                // SAFETY: the file is mmapped read-only; the registry never writes model
                // files, and candle copies every tensor out of the mapping while building
                // the model.
                let vb = unsafe {
                    VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &config.device)
                }
                .map_err(|e| fail(&weights, e.to_string()))?;
                Backend::Candle(
                    BertModel::load(vb, &bert).map_err(|e| fail(&weights, e.to_string()))?,
                )
            }
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The id names the model, not the backend: the host encoder's bf16 matmuls move
        // vectors by about 1e-4 in cosine, far below what would make stored vectors stale.
        let id = format!("bert:{name}:d{}:mean:l2:t{max_tokens}", bert.hidden_size);
        Ok(Self {
            backend,
            tokenizer,
            dim: bert.hidden_size,
            id,
            config: BertEmbedderConfig {
                max_tokens,
                ..config
            },
        })
    }

    /// Number of tokens the model sees for `text` (after truncation), for benchmarks.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| IndexError::Embed {
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().len())
    }

    /// Which forward runs: `"candle"`, `"host-f32"` or `"host-amx-bf16"` (for reports).
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Candle(_) => "candle",
            Backend::Host(enc) => match enc.kind() {
                MatmulKind::F32 => "host-f32",
                MatmulKind::AmxBf16 => "host-amx-bf16",
            },
        }
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        // One text is encoded on this thread: `encode_batch` hands even a single text to
        // rayon's global pool, and waking a pool thread can cost more than the encoding.
        let encodings = match texts {
            [text] => self.tokenizer.encode(*text, true).map(|e| vec![e]),
            _ => self.tokenizer.encode_batch(texts.to_vec(), true),
        }
        .map_err(|e| IndexError::Embed {
            reason: e.to_string(),
        })?;
        let model = match &self.backend {
            Backend::Host(encoder) => {
                let ids: Vec<Vec<u32>> = encodings.iter().map(|e| e.get_ids().to_vec()).collect();
                return encoder.embed(&ids);
            }
            Backend::Candle(model) => model,
        };
        let b = encodings.len();
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = vec![0u32; b * len];
        let mut mask = vec![0u32; b * len];
        for (row, enc) in encodings.iter().enumerate() {
            for (col, (&id, &m)) in enc
                .get_ids()
                .iter()
                .zip(enc.get_attention_mask())
                .enumerate()
            {
                ids[row * len + col] = id;
                mask[row * len + col] = m;
            }
        }
        let device = &self.config.device;
        let ids = Tensor::from_vec(ids, (b, len), device)?;
        let mask = Tensor::from_vec(mask, (b, len), device)?;
        let types = ids.zeros_like()?;
        let hidden = model.forward(&ids, &types, Some(&mask))?; // [b, L, dim]
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [b, L, 1]
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?; // [b, dim]
        let counts = maskf.sum(1)?.clamp(1e-9, f64::MAX)?; // [b, 1]
        let mean = summed.broadcast_div(&counts)?;
        let mut rows: Vec<Vec<f32>> = mean.to_vec2()?;
        rows.iter_mut().for_each(|r| l2_normalize(r));
        Ok(rows)
    }
}

impl Embedder for BertEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let _span = tracing::debug_span!("embed", texts = texts.len()).entered();
        // Batches of similar lengths waste less compute on padding; results go back in order.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(self.config.batch_size) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            for (&i, v) in chunk.iter().zip(self.embed_batch(&batch)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}
