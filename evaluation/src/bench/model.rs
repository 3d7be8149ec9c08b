//! `BenchModel`: what the benchmark decodes with — a GGUF file (the default model, or any
//! llama-family GGUF), or random weights with the default model's shapes, for machines that
//! cannot fetch the model (a GPU machine without network access). Random weights time the
//! same arithmetic; their tokens are meaningless, and candle's baseline needs a file.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use loramux_runtime::weights::MemorySource;
use loramux_runtime::{BaseModel, LlamaModel, ModelBackend, ModelConfig, Tokenizer, WeightDtype};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchModel {
    /// A llama-family GGUF file; weights stay quantized.
    Gguf(PathBuf),
    /// Random f32 weights with the shapes of SmolLM2-135M (the default model), seeded.
    Random,
}

impl fmt::Display for BenchModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gguf(path) => write!(f, "{}", path.display()),
            Self::Random => f.write_str("random weights, SmolLM2-135M shapes (f32)"),
        }
    }
}

/// The decoder and, for a file, its tokenizer (random weights have none).
pub struct LoadedModel {
    pub model: LlamaModel,
    pub tokenizer: Option<Tokenizer>,
}

impl BenchModel {
    pub fn load(
        &self,
        backend: &ModelBackend,
        dtype: WeightDtype,
        seed: u64,
    ) -> Result<LoadedModel> {
        match self {
            Self::Gguf(path) => {
                let base = BaseModel::load_on(path, dtype, backend)
                    .with_context(|| format!("loading {}", path.display()))?;
                Ok(LoadedModel {
                    model: base.model,
                    tokenizer: Some(base.tokenizer),
                })
            }
            Self::Random => {
                let mut source = MemorySource::random(&smollm2_135m(), seed)?;
                Ok(LoadedModel {
                    model: LlamaModel::load_on(&mut source, WeightDtype::F32, backend)?,
                    tokenizer: None,
                })
            }
        }
    }
}

/// The shapes of SmolLM2-135M-Instruct, as its GGUF states them (a test checks it against
/// the file where the default model is fetched).
pub fn smollm2_135m() -> ModelConfig {
    ModelConfig {
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 30,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        vocab_size: 49_152,
        rope: loramux_runtime::config::RopeConfig::plain(100_000.0),
        rms_norm_eps: 1e-5,
        max_position: 8192,
        tie_word_embeddings: true,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_model_has_the_default_models_shapes() {
        let Ok(path) = loramux_runtime::fetch::default_model_path() else {
            eprintln!("skipped: the default model is not fetched");
            return;
        };
        let source = loramux_runtime::weights::open(&path).expect("opens");
        let file = source.config();
        let mut expected = smollm2_135m();
        // Only the shapes matter for timing; compare everything but the float constants.
        expected.rope = file.rope.clone();
        expected.rms_norm_eps = file.rms_norm_eps;
        assert_eq!(file, &expected);
    }
}
