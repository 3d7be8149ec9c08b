//! GGUF weight source: config from the metadata, tensors by llama.cpp name.

use super::{rope_layout::unpermute_interleaved_rows, TensorRole, TokenizerSource, WeightSource};
use crate::{ModelConfig, ModuleKind, Result, RuntimeError};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{QStorage, QTensor};
use candle_core::Device;
use std::borrow::Cow;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct GgufSource {
    path: PathBuf,
    reader: BufReader<File>,
    content: Arc<Content>,
    config: ModelConfig,
    /// llama-architecture converters permute q/k rows; qwen2's do not.
    qk_interleaved: bool,
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| RuntimeError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| RuntimeError::ModelFormat {
            path: path.to_path_buf(),
            reason: format!("not a readable GGUF file: {e}"),
        })?;
        let (config, qk_interleaved) = config_from_metadata(path, &content)?;
        config.validate()?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            content: Arc::new(content),
            config,
            qk_interleaved,
        })
    }

    pub fn content(&self) -> &Content {
        &self.content
    }

    fn gguf_name(role: TensorRole) -> String {
        let module = |m: ModuleKind| match m {
            ModuleKind::Q => "attn_q",
            ModuleKind::K => "attn_k",
            ModuleKind::V => "attn_v",
            ModuleKind::O => "attn_output",
            ModuleKind::Gate => "ffn_gate",
            ModuleKind::Up => "ffn_up",
            ModuleKind::Down => "ffn_down",
        };
        match role {
            TensorRole::Embed => "token_embd.weight".into(),
            TensorRole::FinalNorm => "output_norm.weight".into(),
            TensorRole::LmHead => "output.weight".into(),
            TensorRole::AttnNorm(l) => format!("blk.{l}.attn_norm.weight"),
            TensorRole::MlpNorm(l) => format!("blk.{l}.ffn_norm.weight"),
            TensorRole::Proj(l, m) => format!("blk.{l}.{}.weight", module(m)),
            TensorRole::ProjBias(l, m) => format!("blk.{l}.{}.bias", module(m)),
        }
    }

    fn format_error(&self, reason: String) -> RuntimeError {
        RuntimeError::ModelFormat {
            path: self.path.clone(),
            reason,
        }
    }
}

impl WeightSource for GgufSource {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn tensor(&mut self, role: TensorRole) -> Result<Option<QTensor>> {
        let name = Self::gguf_name(role);
        if !self.content.tensor_infos.contains_key(&name) {
            return Ok(None);
        }
        let t = self
            .content
            .tensor(&mut self.reader, &name, &Device::Cpu)
            .map_err(|e| self.format_error(format!("tensor {name}: {e}")))?;
        let permuted = matches!(
            role,
            TensorRole::Proj(_, ModuleKind::Q | ModuleKind::K)
                | TensorRole::ProjBias(_, ModuleKind::Q | ModuleKind::K)
        );
        if !(permuted && self.qk_interleaved) {
            return Ok(Some(t));
        }
        let rows = t.shape().dims()[0];
        let bytes = t.data()?;
        let hf =
            unpermute_interleaved_rows(&bytes, rows, self.config.head_dim).ok_or_else(|| {
                self.format_error(format!(
                    "tensor {name}: {rows} rows are not whole heads of {}",
                    self.config.head_dim
                ))
            })?;
        let storage = QStorage::from_data(Cow::Owned(hf), &Device::Cpu, t.dtype())?;
        Ok(Some(QTensor::new(storage, t.shape().clone())?))
    }

    fn tokenizer_source(&self) -> TokenizerSource {
        TokenizerSource::Gguf(self.content.clone())
    }
}

fn config_from_metadata(path: &Path, content: &Content) -> Result<(ModelConfig, bool)> {
    let md = &content.metadata;
    let err = |reason: String| RuntimeError::ModelFormat {
        path: path.to_path_buf(),
        reason,
    };
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .ok_or_else(|| err("no general.architecture in metadata".into()))?
        .clone();
    let qk_interleaved = match arch.as_str() {
        "llama" | "mistral" => true,
        "qwen2" => false,
        other => {
            return Err(RuntimeError::UnsupportedModel {
                reason: format!(
                    "GGUF architecture {other:?}: loramux runs llama, mistral and qwen2"
                ),
            })
        }
    };
    let get = |key: &str| -> Result<&Value> {
        md.get(&format!("{arch}.{key}"))
            .ok_or_else(|| err(format!("metadata key {arch}.{key} is missing")))
    };
    let as_usize = |key: &str| -> Result<usize> {
        let v = get(key)?;
        v.to_u64()
            .map(|x| x as usize)
            .or_else(|_| v.to_u32().map(|x| x as usize))
            .map_err(|e| err(format!("{arch}.{key}: {e}")))
    };
    let hidden_size = as_usize("embedding_length")?;
    let num_heads = as_usize("attention.head_count")?;
    let num_kv_heads = as_usize("attention.head_count_kv").unwrap_or(num_heads);
    let head_dim = as_usize("attention.key_length").unwrap_or(hidden_size / num_heads.max(1));
    let vocab_size = match content.tensor_infos.get("token_embd.weight") {
        Some(info) => info.shape.dims()[0],
        None => return Err(err("tensor token_embd.weight is missing".into())),
    };
    let config = ModelConfig {
        hidden_size,
        intermediate_size: as_usize("feed_forward_length")?,
        num_layers: as_usize("block_count")?,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        rope_theta: get("rope.freq_base")
            .and_then(|v| v.to_f32().map_err(|e| err(e.to_string())))
            .unwrap_or(10_000.0),
        rms_norm_eps: get("attention.layer_norm_rms_epsilon")
            .and_then(|v| v.to_f32().map_err(|e| err(e.to_string())))
            .unwrap_or(1e-5) as f64,
        max_position: as_usize("context_length").unwrap_or(4096),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        qkv_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
    };
    if md.contains_key(&format!("{arch}.rope.scaling.type"))
        || content.tensor_infos.contains_key("rope_freqs.weight")
    {
        return Err(RuntimeError::UnsupportedModel {
            reason: "rotary embedding scaling (rope_freqs / rope.scaling) is not implemented yet"
                .into(),
        });
    }
    Ok((config, qk_interleaved))
}
