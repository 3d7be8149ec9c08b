//! GGUF weight source: config from the metadata, tensors by llama.cpp name.

use super::config_fields::{ConfigFields, FieldValue};
use super::{rope_layout::unpermute_interleaved_rows, TensorRole, TokenizerSource, WeightSource};
use crate::config::{RopeConfig, RopeScaling};
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
    /// llama-architecture converters permute q/k rows; qwen2's and qwen3's do not.
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
        let (config, qk_interleaved) = config_from_metadata(path, &content, &mut reader)?;
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
            TensorRole::QNorm(l) => format!("blk.{l}.attn_q_norm.weight"),
            TensorRole::KNorm(l) => format!("blk.{l}.attn_k_norm.weight"),
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

impl FieldValue for Value {
    fn show(&self) -> String {
        match self {
            Value::String(v) => format!("{v:?}"),
            Value::Array(v) => format!("[{} values]", v.len()),
            other => format!("{other:?}")
                .split(['(', ')'])
                .nth(1)
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// A numeric metadata value (any of GGUF's integer or float types), taken from `f`.
fn take_number(f: &mut ConfigFields<Value>, key: &str) -> Result<Option<f64>> {
    match f.take(key) {
        None => Ok(None),
        Some(v) => v
            .to_u64()
            .map(|x| x as f64)
            .or_else(|_| v.to_u32().map(f64::from))
            .or_else(|_| v.to_i32().map(f64::from))
            .or_else(|_| v.to_f32().map(f64::from))
            .or_else(|_| v.to_f64())
            .map(Some)
            .map_err(|_| f.refuse(key, v.show(), "expected a number")),
    }
}

/// Keys outside the architecture's own that leave the computation unchanged.
fn inert_key(arch: &str, key: &str) -> bool {
    key.starts_with("general.")
        || key.starts_with("tokenizer.")
        || key.starts_with("quantize.")
        || key == format!("{arch}.vocab_size")
        || key == format!("{arch}.rope.scaling.finetuned")
}

fn config_from_metadata(
    path: &Path,
    content: &Content,
    reader: &mut BufReader<File>,
) -> Result<(ModelConfig, bool)> {
    let err = |reason: String| RuntimeError::ModelFormat {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = ConfigFields::new(path, content.metadata.clone());
    let arch = match f.take("general.architecture") {
        Some(Value::String(a)) => a,
        _ => return Err(err("no general.architecture in metadata".into())),
    };
    // llama-architecture converters permute q/k rows; the qwen ones do not.
    let qk_interleaved = match arch.as_str() {
        "llama" | "mistral" => true,
        "qwen2" | "qwen3" => false,
        other => {
            return Err(f.refuse(
                "general.architecture",
                format!("{other:?}"),
                "loramux runs llama, mistral, qwen2 and qwen3",
            ))
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let number = |f: &mut ConfigFields<Value>, k: &str| take_number(f, &key(k));
    let required = |f: &mut ConfigFields<Value>, k: &str| -> Result<usize> {
        number(f, k)?
            .map(|x| x as usize)
            .ok_or_else(|| err(format!("metadata key {} is missing", key(k))))
    };
    let hidden_size = required(&mut f, "embedding_length")?;
    let num_heads = required(&mut f, "attention.head_count")?;
    let num_kv_heads = number(&mut f, "attention.head_count_kv")?.map_or(num_heads, |x| x as usize);
    let head_dim = number(&mut f, "attention.key_length")?
        .map_or(hidden_size / num_heads.max(1), |x| x as usize);
    for k in ["attention.value_length", "rope.dimension_count"] {
        if let Some(d) = number(&mut f, k)?.filter(|&d| d as usize != head_dim) {
            return Err(f.refuse(
                &key(k),
                d,
                format!("differs from head_dim {head_dim} (partial rotary or odd value heads)"),
            ));
        }
    }
    let vocab_size = match content.tensor_infos.get("token_embd.weight") {
        Some(info) => info.shape.dims()[0],
        None => return Err(err("tensor token_embd.weight is missing".into())),
    };
    let theta = number(&mut f, "rope.freq_base")?.unwrap_or(10_000.0) as f32;
    let scaling = rope_scaling(&mut f, &arch, content, reader, path)?;
    let config = ModelConfig {
        hidden_size,
        intermediate_size: required(&mut f, "feed_forward_length")?,
        num_layers: required(&mut f, "block_count")?,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        rope: RopeConfig { theta, scaling },
        rms_norm_eps: number(&mut f, "attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5) as f32
            as f64,
        max_position: number(&mut f, "context_length")?.map_or(4096, |x| x as usize),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        qkv_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        o_bias: content.tensor_infos.contains_key("blk.0.attn_output.bias"),
        mlp_bias: content.tensor_infos.contains_key("blk.0.ffn_up.bias"),
        qk_norm: content
            .tensor_infos
            .contains_key("blk.0.attn_q_norm.weight"),
    };
    f.finish(|k| inert_key(&arch, k))?;
    Ok((config, qk_interleaved))
}

/// `{arch}.rope.scaling.*` and the `rope_freqs.weight` tensor, as llama.cpp applies them.
fn rope_scaling(
    f: &mut ConfigFields<Value>,
    arch: &str,
    content: &Content,
    reader: &mut BufReader<File>,
    path: &Path,
) -> Result<RopeScaling> {
    let type_key = format!("{arch}.rope.scaling.type");
    let factor_key = format!("{arch}.rope.scaling.factor");
    let kind = match f.take(&type_key) {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(v) => return Err(f.refuse(&type_key, v.show(), "expected a string")),
    };
    let factor = take_number(f, &factor_key)?.map(|x| x as f32);
    let freqs = if content.tensor_infos.contains_key("rope_freqs.weight") {
        let t = content
            .tensor(reader, "rope_freqs.weight", &Device::Cpu)
            .map_err(|e| RuntimeError::ModelFormat {
                path: path.to_path_buf(),
                reason: format!("tensor rope_freqs.weight: {e}"),
            })?;
        Some(
            t.dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        )
    } else {
        None
    };
    if kind.as_deref() == Some("yarn") {
        return gguf_yarn(f, arch, factor, freqs.is_some());
    }
    match (kind.as_deref(), factor, freqs) {
        (None | Some("none"), _, None) => Ok(RopeScaling::None),
        // llama.cpp writes Llama 3.1 scaling as per-frequency factors (type none or absent).
        (None | Some("none"), _, Some(factors)) => Ok(RopeScaling::FreqFactors(factors)),
        (Some("linear"), Some(factor), None) => Ok(RopeScaling::Linear { factor }),
        (Some("linear"), None, _) => {
            Err(f.refuse(&factor_key, "missing", "linear scaling needs a factor"))
        }
        (Some(other), _, _) => Err(f.refuse(
            &type_key,
            format!("{other:?}"),
            "loramux implements GGUF rope scaling none, linear, yarn and rope_freqs",
        )),
    }
}

/// llama.cpp's yarn: the correction range from `original_context_length` and the betas
/// (truncated to whole dimensions), and cos/sin scaled by `1 + 0.1 ln(factor)`: transformers'
/// yarn with `truncate` and no explicit attention factor. The keys that would make llama.cpp
/// compute otherwise (`attn_factor`, `yarn_ext_factor`, `yarn_attn_factor`,
/// `yarn_log_multiplier`) are not read, so the rule refuses them.
fn gguf_yarn(
    f: &mut ConfigFields<Value>,
    arch: &str,
    factor: Option<f32>,
    has_freqs: bool,
) -> Result<RopeScaling> {
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    if has_freqs {
        return Err(f.refuse(
            "rope_freqs.weight",
            "present",
            "rope_freqs together with yarn",
        ));
    }
    let Some(factor) = factor.map(f64::from) else {
        return Err(f.refuse(&key("factor"), "missing", "yarn needs a factor"));
    };
    let mut number = |k: &str| take_number(f, &key(k));
    let Some(original) = number("original_context_length")? else {
        return Err(f.refuse(
            &key("original_context_length"),
            "missing",
            "yarn needs the original context",
        ));
    };
    let beta_fast = number("yarn_beta_fast")?.unwrap_or(32.0);
    let beta_slow = number("yarn_beta_slow")?.unwrap_or(1.0);
    Ok(RopeScaling::Yarn {
        factor,
        original_max_position: original as usize,
        beta_fast,
        beta_slow,
        attention_factor: if factor <= 1.0 {
            1.0
        } else {
            0.1 * factor.ln() + 1.0
        },
        truncate: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rope::Rope;
    use candle_core::quantized::GgmlDType;
    use candle_core::Tensor;

    const HEAD_DIM: usize = 16;

    /// A GGUF with llama-style metadata for a 2-head, 32-wide model, the given extra keys and
    /// extra f32 tensors (shapes as given), and an embedding so the vocabulary is known.
    fn write(
        arch: &str,
        extra: &[(&str, Value)],
        tensors: &[(&str, Vec<f32>)],
    ) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("model.gguf");
        let k = |s: &str| format!("{arch}.{s}");
        let mut md: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            (k("embedding_length"), Value::U32(32)),
            (k("attention.head_count"), Value::U32(2)),
            (k("attention.head_count_kv"), Value::U32(2)),
            (k("feed_forward_length"), Value::U32(64)),
            (k("block_count"), Value::U32(1)),
            (k("context_length"), Value::U32(256)),
            (k("rope.freq_base"), Value::F32(500_000.0)),
            (k("rope.dimension_count"), Value::U32(HEAD_DIM as u32)),
        ];
        md.extend(extra.iter().map(|(key, v)| (key.to_string(), v.clone())));
        let embed = Tensor::zeros((8, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut qt = vec![(
            "token_embd.weight".to_string(),
            QTensor::quantize(&embed, GgmlDType::F32).unwrap(),
        )];
        for (name, values) in tensors {
            let t = Tensor::from_vec(values.clone(), values.len(), &Device::Cpu).unwrap();
            qt.push((
                name.to_string(),
                QTensor::quantize(&t, GgmlDType::F32).unwrap(),
            ));
        }
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let qt_refs: Vec<(&str, &QTensor)> = qt.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let mut file = File::create(&path).unwrap();
        candle_core::quantized::gguf_file::write(&mut file, &md_refs, &qt_refs).unwrap();
        (dir, path)
    }

    fn refused_field(path: &Path) -> String {
        match GgufSource::open(path) {
            Err(RuntimeError::UnsupportedConfig { field, .. }) => field,
            Err(other) => panic!("expected a refusal naming a key, got {other}"),
            Ok(_) => panic!("loaded"),
        }
    }

    /// llama.cpp's converter (`convert_hf_to_gguf.py`, LlamaModel) stores Llama 3.1 scaling
    /// as `rope_freqs.weight`: 1 for short wavelengths, `factor` for long ones, the inverse
    /// of the smooth blend between. Computed here as it computes them.
    fn converter_rope_freqs(theta: f64, factor: f64, low: f64, high: f64, old: f64) -> Vec<f32> {
        (0..HEAD_DIM / 2)
            .map(|i| {
                let freq = 1.0 / theta.powf((2 * i) as f64 / HEAD_DIM as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                if wavelen < old / high {
                    1.0
                } else if wavelen > old / low {
                    factor as f32
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                }
            })
            .collect()
    }

    #[test]
    fn rope_freqs_give_the_llama3_frequencies() {
        let freqs = converter_rope_freqs(500_000.0, 8.0, 1.0, 4.0, 64.0);
        assert!(
            freqs.iter().any(|&f| f != 1.0 && f != 8.0),
            "a blended frequency"
        );
        let (_dir, path) = write("llama", &[], &[("rope_freqs.weight", freqs.clone())]);
        let source = GgufSource::open(&path).expect("loads");
        let rope = &source.config().rope;
        assert_eq!(rope.scaling, RopeScaling::FreqFactors(freqs));
        let from_gguf = Rope::new(HEAD_DIM, rope);
        let from_hf = Rope::new(
            HEAD_DIM,
            &RopeConfig {
                theta: 500_000.0,
                scaling: RopeScaling::Llama3 {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position: 64,
                },
            },
        );
        let positions: Vec<usize> = (0..256).step_by(17).collect();
        let (a, _) = from_gguf.tables(&positions);
        let (b, _) = from_hf.tables(&positions);
        let plain = Rope::new(HEAD_DIM, &RopeConfig::plain(500_000.0))
            .tables(&positions)
            .0;
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        let moved = a
            .iter()
            .zip(&plain)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            worst < 1e-4,
            "GGUF and transformers llama3 angles differ by {worst}"
        );
        assert!(moved > 0.1, "the scaling barely moves the angles ({moved})");
    }

    #[test]
    fn scaling_types_are_read_or_refused_by_key() {
        let (_dir, path) = write(
            "llama",
            &[
                ("llama.rope.scaling.type", Value::String("linear".into())),
                ("llama.rope.scaling.factor", Value::F32(4.0)),
            ],
            &[],
        );
        let source = GgufSource::open(&path).expect("loads");
        assert_eq!(
            source.config().rope.scaling,
            RopeScaling::Linear { factor: 4.0 }
        );
        let (_dir, path) = write(
            "qwen2",
            &[("qwen2.rope.scaling.type", Value::String("su".into()))],
            &[],
        );
        assert_eq!(refused_field(&path), "qwen2.rope.scaling.type");
        // yarn is read (its numerics are checked on the converted fixtures), but a key that
        // would make llama.cpp scale otherwise is refused.
        let (_dir, path) = write(
            "qwen2",
            &[
                ("qwen2.rope.scaling.type", Value::String("yarn".into())),
                ("qwen2.rope.scaling.factor", Value::F32(4.0)),
                ("qwen2.rope.scaling.original_context_length", Value::U32(64)),
                ("qwen2.rope.scaling.attn_factor", Value::F32(0.8)),
            ],
            &[],
        );
        assert_eq!(refused_field(&path), "qwen2.rope.scaling.attn_factor");
    }

    /// Mixtral ships as arch `llama` with experts: an unread key refuses it.
    #[test]
    fn an_unread_architecture_key_is_refused() {
        let (_dir, path) = write("llama", &[("llama.expert_count", Value::U32(8))], &[]);
        assert_eq!(refused_field(&path), "llama.expert_count");
        let (_dir, path) = write(
            "llama",
            &[("llama.rope.dimension_count", Value::U32(8))],
            &[],
        );
        assert_eq!(refused_field(&path), "llama.rope.dimension_count");
        let (_dir, path) = write("gemma2", &[], &[]);
        assert_eq!(refused_field(&path), "general.architecture");
    }

    #[test]
    fn qwen3_has_q_k_norm_and_unpermuted_rows() {
        let (_dir, path) = write(
            "qwen3",
            &[("qwen3.attention.key_length", Value::U32(HEAD_DIM as u32))],
            &[("blk.0.attn_q_norm.weight", vec![1.0; HEAD_DIM])],
        );
        let source = GgufSource::open(&path).expect("loads");
        assert!(source.config().qk_norm);
        assert!(!source.qk_interleaved);
    }
}
