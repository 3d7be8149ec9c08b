//! Weight loading: one abstraction over GGUF files and Hugging Face safetensors folders.
//!
//! Every source hands out tensors by [`TensorRole`] in the Hugging Face layout (row-major
//! `[d_out, d_in]` matrices, q/k rows in rotate-half order), so the model never sees a file
//! format. Matrices come back as `QTensor`s: quantized GGUF tensors stay quantized, dense
//! tensors come back as F32 `QTensor`s.

mod config_fields;
mod gguf;
mod hf_config;
mod memory;
mod rope_layout;
mod safetensors_dir;

pub use gguf::GgufSource;
pub use memory::MemorySource;
pub use rope_layout::unpermute_interleaved_rows;
pub use safetensors_dir::SafetensorsSource;

use crate::{ModelConfig, ModuleKind, Result, RuntimeError};
use candle_core::quantized::QTensor;
use std::path::Path;

/// What a tensor is for, independent of how a file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    Embed,
    FinalNorm,
    LmHead,
    AttnNorm(usize),
    MlpNorm(usize),
    Proj(usize, ModuleKind),
    ProjBias(usize, ModuleKind),
    /// Qwen3's per-head RMSNorm gains of q and k, `[head_dim]`.
    QNorm(usize),
    KNorm(usize),
}

impl TensorRole {
    /// The Hugging Face name, used in errors and by the safetensors source.
    pub fn hf_name(self) -> String {
        match self {
            Self::Embed => "model.embed_tokens.weight".into(),
            Self::FinalNorm => "model.norm.weight".into(),
            Self::LmHead => "lm_head.weight".into(),
            Self::AttnNorm(l) => format!("model.layers.{l}.input_layernorm.weight"),
            Self::MlpNorm(l) => format!("model.layers.{l}.post_attention_layernorm.weight"),
            Self::Proj(l, m) => {
                format!("model.layers.{l}.{}.{}.weight", m.hf_parent(), m.hf_name())
            }
            Self::ProjBias(l, m) => {
                format!("model.layers.{l}.{}.{}.bias", m.hf_parent(), m.hf_name())
            }
            Self::QNorm(l) => format!("model.layers.{l}.self_attn.q_norm.weight"),
            Self::KNorm(l) => format!("model.layers.{l}.self_attn.k_norm.weight"),
        }
    }
}

/// How projection weights are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightDtype {
    /// Quantized: GGUF tensors stay quantized for candle's QMatMul kernels; formats candle
    /// has no SIMD kernel for (Q4_1, Q5_0, Q5_1) are re-quantized to Q8_0 once at load.
    #[default]
    Native,
    /// As `Native`, but every quantized matmul through candle's kernels instead of the
    /// packed integer ones: the baseline `loramux bench` compares them with.
    NativeCandle,
    /// Exactly as stored, every format kept as is (slower for Q4_1/Q5_x; for comparisons).
    Stored,
    /// Everything dequantized to f32: the precise mode the reference tests run in.
    F32,
}

/// Where the tokenizer and chat template of a model come from.
#[derive(Debug, Clone)]
pub enum TokenizerSource {
    Gguf(std::sync::Arc<candle_core::quantized::gguf_file::Content>),
    File {
        tokenizer_json: std::path::PathBuf,
        chat_template: Option<String>,
    },
    /// Weights without a vocabulary (models built in memory for tests).
    Absent,
}

/// A model file or folder that can hand out its config and tensors.
pub trait WeightSource {
    fn config(&self) -> &ModelConfig;
    /// The tensor for `role` in Hugging Face layout, or `None` when the model has none
    /// (an untied-free model's `LmHead`, a bias-free model's `ProjBias`).
    fn tensor(&mut self, role: TensorRole) -> Result<Option<QTensor>>;
    fn tokenizer_source(&self) -> TokenizerSource;
}

/// Opens a GGUF file or a Hugging Face safetensors folder.
pub fn open(path: &Path) -> Result<Box<dyn WeightSource>> {
    if path.is_dir() {
        Ok(Box::new(SafetensorsSource::open(path)?))
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        Ok(Box::new(GgufSource::open(path)?))
    } else if path.exists() {
        Err(RuntimeError::ModelFormat {
            path: path.to_path_buf(),
            reason: "expected a .gguf file or a folder with config.json and *.safetensors".into(),
        })
    } else {
        Err(RuntimeError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such model file or folder"),
        ))
    }
}

/// Checks a tensor's shape against what the config implies.
pub(crate) fn expect_shape(role: TensorRole, t: &QTensor, expected: &[usize]) -> Result<()> {
    if t.shape().dims() == expected {
        Ok(())
    } else {
        Err(RuntimeError::TensorShape {
            name: role.hf_name(),
            expected: expected.to_vec(),
            found: t.shape().dims().to_vec(),
        })
    }
}
