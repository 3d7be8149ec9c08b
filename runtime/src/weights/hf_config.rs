//! `config.json` of a Hugging Face llama-family checkpoint, read as transformers reads it, in
//! both layouts it writes: 4.x (top-level `rope_theta`, `rope_scaling`) and 5.x
//! (`rope_parameters`). Defaults are those of each architecture's config class. Every field
//! goes through [`ConfigFields`]: understood, inert, or refused by name.

use super::config_fields::ConfigFields;
use crate::config::{RopeConfig, RopeScaling};
use crate::{ModelConfig, Result, RuntimeError};
use serde_json::Value;
use std::path::Path;

/// The architectures loramux runs from safetensors; they differ only in the switches of
/// [`ModelConfig`] and in their config classes' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Arch {
    fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Self::Llama),
            "mistral" => Some(Self::Mistral),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    fn default_max_position(self) -> usize {
        match self {
            Self::Llama => 2048,
            Self::Mistral => 4096 * 32,
            Self::Qwen2 | Self::Qwen3 => 32768,
        }
    }
}

/// Base-class and bookkeeping fields that leave the forward pass unchanged: ids of special
/// tokens, storage dtype (loramux computes in f32 whatever the file stores), training-only
/// settings, and the generation defaults older configs carry (each request sets its own).
const INERT: &[&str] = &[
    "_name_or_path",
    "architectures",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "use_cache",
    "initializer_range",
    "attention_dropout",
    "pretraining_tp",
    "is_llama_config",
    "transformers.js_config",
    "tokenizer_class",
    "id2label",
    "label2id",
    "problem_type",
    "finetuning_task",
    "task_specific_params",
    "prefix",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "use_return_dict",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "pruned_heads",
    "chunk_size_feed_forward",
    "is_decoder",
    "is_encoder_decoder",
    "add_cross_attention",
    "tie_encoder_decoder",
    "cross_attention_hidden_size",
    "keys_to_ignore_at_inference",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
];

type Fields = ConfigFields<Value>;

/// Reads `config.json` into a [`ModelConfig`], or refuses it naming the field.
pub(crate) fn read(path: &Path) -> Result<ModelConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io(path, e))?;
    let format_error = |reason: String| RuntimeError::ModelFormat {
        path: path.to_path_buf(),
        reason,
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| format_error(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(format_error("config.json is not a JSON object".into()));
    };
    let mut f = Fields::new(path, map);

    // A config without model_type is read as llama, as transformers' LlamaConfig would.
    let model_type = string(&mut f, "model_type")?.unwrap_or_else(|| "llama".into());
    let arch = Arch::from_model_type(&model_type).ok_or_else(|| {
        f.refuse(
            "model_type",
            format!("{model_type:?}"),
            "loramux runs llama, mistral, qwen2 and qwen3",
        )
    })?;

    let hidden_size = required_usize(&mut f, "hidden_size")?;
    let num_heads = required_usize(&mut f, "num_attention_heads")?;
    let num_layers = required_usize(&mut f, "num_hidden_layers")?;
    let head_dim = match (usize_field(&mut f, "head_dim")?, arch) {
        (Some(d), _) => d,
        (None, Arch::Qwen3) => 128,
        (None, _) => hidden_size / num_heads.max(1),
    };
    let declared_max_position =
        usize_field(&mut f, "max_position_embeddings")?.unwrap_or(arch.default_max_position());

    let activation = string(&mut f, "hidden_act")?.unwrap_or_else(|| "silu".into());
    if activation != "silu" {
        return Err(f.refuse(
            "hidden_act",
            format!("{activation:?}"),
            "loramux runs the SiLU-gated MLP only",
        ));
    }
    if bool_field(&mut f, "rope_interleaved")? == Some(true) {
        return Err(f.refuse(
            "rope_interleaved",
            true,
            "loramux rotates halves of each head (the transformers convention), not pairs",
        ));
    }
    let (qkv_bias, o_bias, mlp_bias) = match arch {
        Arch::Qwen2 => (true, false, false),
        Arch::Mistral => (false, false, false),
        Arch::Qwen3 => {
            let b = bool_field(&mut f, "attention_bias")?.unwrap_or(false);
            (b, b, false)
        }
        Arch::Llama => {
            let b = bool_field(&mut f, "attention_bias")?.unwrap_or(false);
            (b, b, bool_field(&mut f, "mlp_bias")?.unwrap_or(false))
        }
    };
    let window = sliding_window(&mut f, arch, num_layers)?;
    let max_position = match window {
        Some(w) if w < declared_max_position => {
            tracing::info!(
                "{}: sliding window of {w} tokens; the context is limited to it so that \
                 full attention is exact",
                path.display()
            );
            w
        }
        _ => declared_max_position,
    };
    let rope = rope(&mut f, declared_max_position)?;

    let config = ModelConfig {
        hidden_size,
        intermediate_size: required_usize(&mut f, "intermediate_size")?,
        num_layers,
        num_heads,
        num_kv_heads: usize_field(&mut f, "num_key_value_heads")?.unwrap_or(num_heads),
        head_dim,
        vocab_size: required_usize(&mut f, "vocab_size")?,
        rope,
        rms_norm_eps: f64_field(&mut f, "rms_norm_eps")?.unwrap_or(1e-6),
        max_position,
        tie_word_embeddings: bool_field(&mut f, "tie_word_embeddings")?.unwrap_or(false),
        qkv_bias,
        o_bias,
        mlp_bias,
        qk_norm: arch == Arch::Qwen3,
    };
    f.finish(|k| INERT.contains(&k))?;
    Ok(config)
}

/// The sliding window, when any layer uses one. Mistral slides in every layer when
/// `sliding_window` is set (4096 when absent); Qwen2/3 only with `use_sliding_window`, from
/// layer `max_window_layers` on, or as `layer_types` says.
fn sliding_window(f: &mut Fields, arch: Arch, num_layers: usize) -> Result<Option<usize>> {
    let window_field = f.contains("sliding_window");
    let window = usize_field(f, "sliding_window")?;
    let (window, default_layers) = match arch {
        Arch::Llama => return Ok(None),
        Arch::Mistral => {
            let w = if window_field { window } else { Some(4096) };
            (w, vec![w.is_some(); num_layers])
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            let used = bool_field(f, "use_sliding_window")?.unwrap_or(false);
            let from = usize_field(f, "max_window_layers")?.unwrap_or(28);
            let w = if used { window.or(Some(4096)) } else { None };
            let layers = (0..num_layers).map(|i| w.is_some() && i >= from).collect();
            (w, layers)
        }
    };
    let sliding_layers = match f.take("layer_types") {
        None | Some(Value::Null) => default_layers,
        Some(Value::Array(types)) if types.len() == num_layers => {
            let mut slides = Vec::with_capacity(num_layers);
            for t in &types {
                match t.as_str() {
                    Some("full_attention") => slides.push(false),
                    Some("sliding_attention") => slides.push(true),
                    _ => {
                        return Err(f.refuse(
                            "layer_types",
                            Value::Array(types.clone()),
                            format!("layer type {t} is not implemented"),
                        ))
                    }
                }
            }
            slides
        }
        Some(other) => {
            return Err(f.refuse(
                "layer_types",
                &other,
                format!("expected one attention type per layer ({num_layers})"),
            ))
        }
    };
    if !sliding_layers.iter().any(|&s| s) {
        return Ok(None);
    }
    match window {
        Some(w) => Ok(Some(w)),
        None => Err(f.refuse(
            "layer_types",
            "sliding_attention",
            "a sliding layer without a sliding_window",
        )),
    }
}

/// The rotary settings, from `rope_scaling` (4.x, and transformers prefers it when both are
/// present) or `rope_parameters` (5.x), with top-level `rope_theta`,
/// `partial_rotary_factor` and `original_max_position_embeddings` as fallbacks.
fn rope(f: &mut Fields, max_position: usize) -> Result<RopeConfig> {
    let top_theta = f64_field(f, "rope_theta")?;
    let top_partial = f64_field(f, "partial_rotary_factor")?;
    let top_original = usize_field(f, "original_max_position_embeddings")?;
    let scaling = f.take("rope_scaling").filter(|v| !v.is_null());
    let parameters = f.take("rope_parameters").filter(|v| !v.is_null());
    let (name, params) = match (scaling, parameters) {
        (Some(s), _) => ("rope_scaling", s),
        (None, Some(p)) => ("rope_parameters", p),
        (None, None) => ("rope_parameters", Value::Object(Default::default())),
    };
    let Value::Object(map) = params else {
        return Err(f.refuse(name, &params, "expected an object"));
    };
    if let Some((k, v)) = map.iter().find(|(_, v)| v.is_object()) {
        return Err(f.refuse(
            &format!("{name}.{k}"),
            v,
            "rotary parameters per layer type are not implemented",
        ));
    }
    let mut p = Fields::new(
        f.file(),
        map.into_iter().map(|(k, v)| (format!("{name}.{k}"), v)),
    );
    let key = |k: &str| format!("{name}.{k}");
    // Older 4.x configs spell the key `type`.
    let (type_field, rope_type) = match string(&mut p, &key("rope_type"))? {
        Some(t) => (key("rope_type"), t),
        None => (
            key("type"),
            string(&mut p, &key("type"))?.unwrap_or_else(|| "default".into()),
        ),
    };
    let theta = f64_field(&mut p, &key("rope_theta"))?
        .or(top_theta)
        .unwrap_or(10_000.0);
    let partial = match f64_field(&mut p, &key("partial_rotary_factor"))? {
        Some(v) => Some((key("partial_rotary_factor"), v)),
        None => top_partial.map(|v| ("partial_rotary_factor".to_string(), v)),
    };
    if let Some((field, partial)) = partial.filter(|(_, v)| *v != 1.0) {
        return Err(p.refuse(
            &field,
            partial,
            "partial rotary embedding is not implemented",
        ));
    }
    let original = |p: &mut Fields| -> Result<usize> {
        let own = usize_field(p, &key("original_max_position_embeddings"))?;
        Ok(top_original.or(own).unwrap_or(max_position))
    };
    let scaling = match rope_type.as_str() {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: required_f64(&mut p, &key("factor"))? as f32,
        },
        // Plain frequencies below max_position_embeddings, the only positions loramux runs.
        "dynamic" => {
            required_f64(&mut p, &key("factor"))?;
            RopeScaling::None
        }
        "llama3" => RopeScaling::Llama3 {
            factor: required_f64(&mut p, &key("factor"))? as f32,
            low_freq_factor: required_f64(&mut p, &key("low_freq_factor"))? as f32,
            high_freq_factor: required_f64(&mut p, &key("high_freq_factor"))? as f32,
            original_max_position: original(&mut p)?,
        },
        "yarn" => {
            let original = original(&mut p)?;
            yarn(&mut p, &key, original, max_position)?
        }
        other => {
            return Err(p.refuse(
                &type_field,
                format!("{other:?}"),
                "loramux implements the rope types default, linear, dynamic, llama3 and yarn",
            ))
        }
    };
    p.finish(|_| false)?;
    Ok(RopeConfig {
        theta: theta as f32,
        scaling,
    })
}

/// `yarn`: the attention factor resolved here as transformers resolves it.
fn yarn(
    p: &mut Fields,
    key: &dyn Fn(&str) -> String,
    original_max_position: usize,
    max_position: usize,
) -> Result<RopeScaling> {
    let factor =
        f64_field(p, &key("factor"))?.unwrap_or(max_position as f64 / original_max_position as f64);
    let mscale = f64_field(p, &key("mscale"))?.filter(|&m| m != 0.0);
    let mscale_all_dim = f64_field(p, &key("mscale_all_dim"))?.filter(|&m| m != 0.0);
    let get_mscale = |scale: f64, m: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    let attention_factor = match (
        f64_field(p, &key("attention_factor"))?,
        mscale,
        mscale_all_dim,
    ) {
        (Some(a), _, _) => a,
        (None, Some(m), Some(all)) => get_mscale(factor, m) / get_mscale(factor, all),
        (None, _, _) => get_mscale(factor, 1.0),
    };
    // `or` as in transformers: a 0 falls back to the default too.
    let beta_fast = f64_field(p, &key("beta_fast"))?
        .filter(|&b| b != 0.0)
        .unwrap_or(32.0);
    let beta_slow = f64_field(p, &key("beta_slow"))?
        .filter(|&b| b != 0.0)
        .unwrap_or(1.0);
    Ok(RopeScaling::Yarn {
        factor,
        original_max_position,
        beta_fast,
        beta_slow,
        attention_factor,
        truncate: bool_field(p, &key("truncate"))?.unwrap_or(true),
    })
}

fn usize_field(f: &mut Fields, k: &str) -> Result<Option<usize>> {
    match f.take(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n as usize)),
            None => Err(f.refuse(k, &v, "expected a non-negative integer")),
        },
    }
}

fn required_usize(f: &mut Fields, k: &str) -> Result<usize> {
    usize_field(f, k)?.ok_or_else(|| f.refuse(k, "missing", "the field is required"))
}

fn f64_field(f: &mut Fields, k: &str) -> Result<Option<f64>> {
    match f.take(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(f.refuse(k, &v, "expected a number")),
        },
    }
}

fn required_f64(f: &mut Fields, k: &str) -> Result<f64> {
    f64_field(f, k)?.ok_or_else(|| f.refuse(k, "missing", "the field is required"))
}

fn bool_field(f: &mut Fields, k: &str) -> Result<Option<bool>> {
    match f.take(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(v) => Err(f.refuse(k, &v, "expected true or false")),
    }
}

fn string(f: &mut Fields, k: &str) -> Result<Option<String>> {
    match f.take(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(f.refuse(k, &v, "expected a string")),
    }
}
