//! The rule that nothing changing the math is ignored, one test per refusal: each config
//! field loramux does not implement is refused with an error naming the file, the field and
//! the value; the sliding window it does implement (by limiting the context) is enforced.

use loramux_runtime::generate::{generate_batch, GenerationRequest};
use loramux_runtime::{BaseModel, FixedGate, RuntimeError, SamplingParams, WeightDtype};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/architectures")
}

fn config(model: &str) -> Value {
    let text = std::fs::read_to_string(root().join(model).join("config.json")).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

/// Loads the fixture model's weights under `config`.
fn load(model: &str, config: &Value) -> (tempfile::TempDir, loramux_runtime::Result<BaseModel>) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (from, to) in [
        (
            root().join(model).join("model.safetensors"),
            "model.safetensors",
        ),
        (root().join("tokenizer.json"), "tokenizer.json"),
    ] {
        std::fs::copy(from, dir.path().join(to)).expect("copy");
    }
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write");
    let loaded = BaseModel::load(dir.path(), WeightDtype::F32);
    (dir, loaded)
}

/// Asserts the load fails naming `field` (and the config file).
fn refused(model: &str, edit: impl FnOnce(&mut Value), field: &str) -> String {
    let mut c = config(model);
    edit(&mut c);
    let (_dir, loaded) = load(model, &c);
    let Err(err) = loaded else {
        panic!("{model}: a config with {field} edited loaded");
    };
    let text = err.to_string();
    match &err {
        RuntimeError::UnsupportedConfig {
            field: named, file, ..
        } => {
            assert_eq!(named, field, "{text}");
            assert!(file.ends_with("config.json"), "{text}");
        }
        other => panic!("{model}/{field}: expected a refusal naming the field, got {other}"),
    }
    text
}

#[test]
fn an_unknown_architecture_is_refused() {
    let text = refused(
        "llama_linear",
        |c| c["model_type"] = json!("gemma2"),
        "model_type",
    );
    assert!(text.contains("gemma2"), "{text}");
}

#[test]
fn an_unimplemented_activation_is_refused() {
    let text = refused(
        "qwen3",
        |c| c["hidden_act"] = json!("gelu_pytorch_tanh"),
        "hidden_act",
    );
    assert!(text.contains("gelu_pytorch_tanh"), "{text}");
}

#[test]
fn an_unknown_rope_type_is_refused_in_either_layout() {
    refused(
        "llama_linear",
        |c| c["rope_parameters"]["rope_type"] = json!("longrope"),
        "rope_parameters.rope_type",
    );
    refused(
        "llama_linear",
        |c| {
            let params = c
                .as_object_mut()
                .unwrap()
                .remove("rope_parameters")
                .unwrap();
            c["rope_theta"] = params["rope_theta"].clone();
            c["rope_scaling"] = json!({"type": "su", "factor": 2.0});
        },
        "rope_scaling.type",
    );
}

#[test]
fn a_partial_rotary_factor_is_refused() {
    let text = refused(
        "llama3_theta500k",
        |c| c["partial_rotary_factor"] = json!(0.5),
        "partial_rotary_factor",
    );
    assert!(text.contains("0.5"), "{text}");
    refused(
        "llama3_theta500k",
        |c| c["rope_parameters"]["partial_rotary_factor"] = json!(0.25),
        "rope_parameters.partial_rotary_factor",
    );
}

#[test]
fn an_unknown_field_is_refused_not_skipped() {
    let text = refused(
        "qwen2",
        |c| c["quantization_config"] = json!({"quant_method": "awq", "bits": 4}),
        "quantization_config",
    );
    assert!(text.contains("awq"), "{text}");
    refused(
        "qwen25_yarn",
        |c| c["rope_parameters"]["mrope_section"] = json!([16, 24, 24]),
        "rope_parameters.mrope_section",
    );
}

#[test]
fn rotary_parameters_per_layer_type_are_refused() {
    refused(
        "qwen3",
        |c| {
            c["rope_parameters"] = json!({
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            })
        },
        "rope_parameters.full_attention",
    );
}

#[test]
fn an_unknown_layer_type_is_refused() {
    refused(
        "qwen3",
        |c| c["layer_types"] = json!(["full_attention", "chunked_attention"]),
        "layer_types",
    );
}

#[test]
fn interleaved_rotary_is_refused() {
    refused(
        "llama_linear",
        |c| c["rope_interleaved"] = json!(true),
        "rope_interleaved",
    );
}

#[test]
fn a_field_of_the_wrong_type_is_refused() {
    refused("qwen2", |c| c["hidden_size"] = json!("64"), "hidden_size");
}

/// Biases come exactly from the config: a declared bias the file lacks, or a bias tensor the
/// config does not declare (transformers would not use it), refuses the model.
#[test]
fn biases_follow_the_config_both_ways() {
    let mut c = config("llama_attention_mlp_bias");
    c["mlp_bias"] = json!(false);
    let (_dir, loaded) = load("llama_attention_mlp_bias", &c);
    let err = loaded
        .err()
        .expect("an undeclared bias refuses the model")
        .to_string();
    assert!(
        err.contains("mlp.gate_proj.bias") && err.contains("no bias"),
        "{err}"
    );

    let mut c = config("llama3_theta500k");
    c["attention_bias"] = json!(true);
    let (_dir, loaded) = load("llama3_theta500k", &c);
    let err = loaded
        .err()
        .expect("a missing bias refuses the model")
        .to_string();
    assert!(err.contains("self_attn.q_proj.bias"), "{err}");
}

/// A sliding window shorter than the model's context is not ignored: the context becomes the
/// window (where full attention is exact), and a longer request is refused.
#[test]
fn a_sliding_window_limits_the_context() {
    let mut c = config("mistral_head_dim");
    c["sliding_window"] = json!(100);
    let (_dir, loaded) = load("mistral_head_dim", &c);
    let base = loaded.expect("a sliding window loads");
    assert_eq!(base.model.config().max_position, 100);
    let bank = loramux_runtime::AdapterBank::new(
        base.model.config(),
        loramux_runtime::BankConfig::default(),
    )
    .expect("bank");
    let request = GenerationRequest {
        prompt_ids: vec![5; 120],
        candidates: vec![],
        sampling: SamplingParams::default(),
        max_tokens: 1,
        stop_ids: vec![],
    };
    let err = match generate_batch(&base.model, &bank, &FixedGate, &[request], &mut |_, _| {}) {
        Ok(_) => panic!("a prompt past the window was run"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("context is 100"), "{err}");

    // Qwen's window applies only with use_sliding_window.
    let mut c = config("qwen2");
    c["sliding_window"] = json!(100);
    let (_dir, loaded) = load("qwen2", &c);
    assert_eq!(loaded.expect("loads").model.config().max_position, 256);
    c["use_sliding_window"] = json!(true);
    c["max_window_layers"] = json!(1);
    c.as_object_mut().unwrap().remove("layer_types");
    let (_dir, loaded) = load("qwen2", &c);
    assert_eq!(loaded.expect("loads").model.config().max_position, 100);
}
