//! Test helpers shared by the adapter and bank tests: a tiny llama config, deterministic
//! values, and a writer for PEFT adapter folders (`adapter_config.json` +
//! `adapter_model.safetensors`) built with the safetensors crate itself.
//!
//! Tiny model shapes `(d_in, d_out)`: q/o `(16, 16)`, k/v `(16, 8)`, gate/up `(16, 24)`,
//! down `(24, 16)`; 3 layers.

use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};

use crate::{ModelConfig, ModuleKind};

pub(crate) fn tiny_model() -> ModelConfig {
    ModelConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 3,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 4,
        vocab_size: 32,
        rope: crate::config::RopeConfig::plain(10_000.0),
        rms_norm_eps: 1e-5,
        max_position: 64,
        tie_word_embeddings: true,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
    }
}

/// Deterministic values in [-1, 1) (an LCG, so tests need no RNG state).
pub(crate) fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The name PEFT's `save_pretrained` gives a LoRA weight of a llama model.
pub(crate) fn peft_name(layer: usize, module: ModuleKind, side: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{side}.weight",
        module.hf_parent(),
        module.hf_name()
    )
}

/// One tensor to write: name, dtype, shape and its little-endian bytes.
#[derive(Debug, Clone)]
pub(crate) struct TestTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl TestTensor {
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            bytes: encode(dtype, values),
        }
    }
}

/// Encodes f32 values as F32, F16, BF16 or F64 little-endian bytes.
pub(crate) fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F64 => values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect(),
        other => panic!("test helper cannot encode {other:?}"),
    }
}

/// What a value becomes after a round trip through `dtype`.
pub(crate) fn quantize(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// A (lora_A `[rank, d_in]`, lora_B `[d_out, rank]`) pair with deterministic values.
pub(crate) fn lora_pair(
    layer: usize,
    module: ModuleKind,
    rank: usize,
    dtype: Dtype,
    seed: u64,
) -> [TestTensor; 2] {
    let (d_in, d_out) = tiny_model().module_shape(module);
    [
        TestTensor::new(
            peft_name(layer, module, 'A'),
            dtype,
            &[rank, d_in],
            &values(seed, rank * d_in),
        ),
        TestTensor::new(
            peft_name(layer, module, 'B'),
            dtype,
            &[d_out, rank],
            &values(seed + 1, d_out * rank),
        ),
    ]
}

/// A typical PEFT `adapter_config.json`.
pub(crate) fn lora_config(r: usize, alpha: f64, targets: Value) -> Value {
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.05,
        "target_modules": targets,
        "bias": "none",
        "modules_to_save": null,
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": true
    })
}

pub(crate) fn safetensors_bytes(tensors: &[TestTensor]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap();
            (t.name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Writes a PEFT folder into `dir`.
pub(crate) fn write_adapter(dir: &Path, config: &Value, tensors: &[TestTensor]) {
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("adapter_model.safetensors"),
        safetensors_bytes(tensors),
    )
    .unwrap();
}

/// An adapter built in memory on the tiny model: `modules` at `rank`, scale `alpha / rank`,
/// values from `seed`.
pub(crate) fn mem_adapter(
    name: &str,
    modules: &[(usize, ModuleKind)],
    rank: usize,
    alpha: f64,
    seed: u64,
) -> crate::Adapter {
    let model = tiny_model();
    let kinds: Vec<ModuleKind> = modules.iter().map(|&(_, m)| m).collect();
    let config = crate::adapter::AdapterConfig::for_modules(rank, alpha, &kinds);
    let weights = modules.iter().enumerate().map(|(i, &(l, m))| {
        let (d_in, d_out) = model.module_shape(m);
        let s = seed * 1000 + 2 * i as u64;
        let w = crate::adapter::LoraWeights {
            a: values(s, rank * d_in),
            b: values(s + 1, d_out * rank),
            rank,
            scale: (alpha / rank as f64) as f32,
        };
        ((l, m), w)
    });
    let id = crate::AdapterId::new(name).unwrap();
    crate::Adapter::from_parts(id, config, weights, &model).unwrap()
}
