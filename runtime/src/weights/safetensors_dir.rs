//! Hugging Face safetensors folder: `config.json`, one or more `*.safetensors`, and
//! `tokenizer.json` (+ `tokenizer_config.json` for the chat template). f32/f16/bf16.

use super::{TensorRole, TokenizerSource, WeightSource};
use crate::{ModelConfig, Result, RuntimeError};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Mirrors the fields of a llama-family `config.json` that loramux reads.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rope_theta: Option<f32>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    rope_scaling: Option<serde_json::Value>,
}

pub struct SafetensorsSource {
    dir: PathBuf,
    config: ModelConfig,
    /// Tensor name → file that holds it.
    index: HashMap<String, PathBuf>,
    files: HashMap<PathBuf, candle_core::safetensors::MmapedSafetensors>,
}

impl SafetensorsSource {
    pub fn open(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|e| RuntimeError::io(&cfg_path, e))?;
        let hf: HfConfig = serde_json::from_str(&text).map_err(|e| RuntimeError::ModelFormat {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })?;
        match hf.model_type.as_deref() {
            None | Some("llama" | "mistral" | "qwen2") => {}
            Some(other) => {
                return Err(RuntimeError::UnsupportedModel {
                    reason: format!("model_type {other:?}: loramux runs llama, mistral and qwen2"),
                })
            }
        }
        if hf.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(RuntimeError::UnsupportedModel {
                reason: "rope_scaling is not implemented yet".into(),
            });
        }
        let num_kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        let config = ModelConfig {
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads,
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            vocab_size: hf.vocab_size,
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            max_position: hf.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            qkv_bias: hf.model_type.as_deref() == Some("qwen2"),
        };
        config.validate()?;
        let mut files = HashMap::new();
        let mut index = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| RuntimeError::io(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| RuntimeError::io(dir, e))?.path();
            if path.extension().is_none_or(|e| e != "safetensors") {
                continue;
            }
            // SAFETY: the file is mapped read-only; loramux never writes model files, and a
            // concurrent writer would be a misuse the OS cannot prevent for any reader.
            let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&path) }.map_err(
                |e| RuntimeError::ModelFormat {
                    path: path.clone(),
                    reason: e.to_string(),
                },
            )?;
            for (name, _) in st.tensors() {
                index.insert(name, path.clone());
            }
            files.insert(path, st);
        }
        if files.is_empty() {
            return Err(RuntimeError::ModelFormat {
                path: dir.to_path_buf(),
                reason: "no *.safetensors file in the folder".into(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            index,
            files,
        })
    }
}

impl WeightSource for SafetensorsSource {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn tensor(&mut self, role: TensorRole) -> Result<Option<QTensor>> {
        let name = role.hf_name();
        let Some(file) = self.index.get(&name) else {
            return Ok(None);
        };
        let st = &self.files[file];
        let t: Tensor = st
            .load(&name, &Device::Cpu)
            .map_err(|e| RuntimeError::ModelFormat {
                path: file.clone(),
                reason: format!("tensor {name}: {e}"),
            })?;
        let t = t.to_dtype(DType::F32)?;
        Ok(Some(QTensor::quantize(&t, GgmlDType::F32)?))
    }

    fn tokenizer_source(&self) -> TokenizerSource {
        let chat_template = std::fs::read_to_string(self.dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v.get("chat_template")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            });
        TokenizerSource::File {
            tokenizer_json: self.dir.join("tokenizer.json"),
            chat_template,
        }
    }
}
