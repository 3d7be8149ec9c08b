//! Every architecture and config style loramux loads from safetensors, against transformers 5
//! and PEFT: Llama 3 (theta 500000), Llama 3.1 / 3.2 (`llama3` rotary scaling, tied
//! embeddings), `linear` and `dynamic` scaling, Llama's `attention_bias` / `mlp_bias`, Mistral
//! with an explicit `head_dim`, Qwen2 (q/k/v biases), Qwen2.5 and Qwen3 `yarn`, Qwen3 (q/k
//! norm). Each model is read from the `config.json` transformers 5 saved (`rope_parameters`)
//! and from the same config as transformers 4 saved it (`rope_theta` / `rope_scaling`).
//!
//! Fixtures come from `scripts/make_architecture_fixtures.py` (run once by hand): tiny random
//! models, two random PEFT adapters each and a weighted mixture. Tolerances (f32): identical
//! prompt ids, identical top-10 ids, logits within 1e-3, identical 24-token greedy
//! continuations, one case at a time and all cases of a model in one batch, on the host
//! backend and on the device backend (on the CPU).
//!
//! The models llama.cpp's converter handles are also checked as the GGUF files it wrote.
//!
//! The script checked that each model's feature moves the logits by more than 0.05 when
//! turned off; `turning_the_rotary_feature_off_breaks_the_match` shows it from this side.

use crate::reference::{assert_matches_transformers, lease_fixture, LOGIT_TOL};
use loramux_runtime::bank::{AdapterBank, AdapterLease, BankConfig};
use loramux_runtime::generate::{generate_batch, GenerationOutput, GenerationRequest};
use loramux_runtime::model::ModelBackend;
use loramux_runtime::{BaseModel, FixedGate, SamplingParams, WeightDtype};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Manifest {
    prompt: String,
    prompt_ids: Vec<u32>,
    n_greedy: usize,
    models: Vec<Model>,
}

#[derive(Deserialize)]
struct Model {
    name: String,
    feature: String,
    rope_parameters: serde_json::Value,
    /// Why llama.cpp's converter made no `model.gguf`, or `None` when it did.
    gguf_unconverted: Option<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    adapters: Vec<AdapterRef>,
    top_logits: Vec<(u32, f32)>,
    greedy_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct AdapterRef {
    path: String,
    weight: f32,
}

/// The two `config.json` layouts every fixture model is saved in.
const LAYOUTS: [(&str, &str); 2] = [
    ("transformers 5", "config.json"),
    ("transformers 4", "config.v4.json"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/architectures")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(root().join("reference.json")).expect("fixtures present");
    serde_json::from_str(&text).expect("well-formed fixtures")
}

/// A model folder with the given config text beside the fixture's weights and tokenizer.
fn model_dir(model: &str, config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = root().join(model);
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .expect("copy weights");
    std::fs::copy(
        root().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy tokenizer");
    std::fs::write(dir.path().join("config.json"), config).expect("write config");
    dir
}

fn fixture_config(model: &str, file: &str) -> String {
    std::fs::read_to_string(root().join(model).join(file)).expect("fixture config")
}

fn load(dir: &Path, backend: &ModelBackend) -> BaseModel {
    BaseModel::load_on(dir, WeightDtype::F32, backend)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Every case of a model as a request, its adapters leased from one bank.
struct Setup {
    bank: AdapterBank,
    _leases: Vec<AdapterLease>,
    requests: Vec<GenerationRequest>,
}

fn setup(base: &BaseModel, m: &Manifest, model: &Model) -> Setup {
    let cfg = base.model.config();
    let mut bank =
        AdapterBank::on_device(cfg, BankConfig::default(), &base.model.device()).expect("bank");
    let ids = base.tokenizer.encode(&m.prompt, false).expect("encodes");
    assert_eq!(ids, m.prompt_ids, "prompt ids differ from the HF tokenizer");
    let mut leases = Vec::new();
    let mut requests = Vec::new();
    for case in &model.cases {
        let mut candidates = Vec::new();
        for a in &case.adapters {
            let id = a.path.replace(['/', '_'], "-");
            let dir = root().join(&a.path);
            candidates.push(lease_fixture(
                &mut bank,
                cfg,
                &id,
                &dir,
                a.weight,
                &mut leases,
            ));
        }
        requests.push(GenerationRequest {
            prompt_ids: ids.clone(),
            candidates,
            sampling: SamplingParams::default(),
            max_tokens: m.n_greedy,
            stop_ids: vec![],
        });
    }
    Setup {
        bank,
        _leases: leases,
        requests,
    }
}

fn generate(base: &BaseModel, s: &Setup, requests: &[GenerationRequest]) -> Vec<GenerationOutput> {
    generate_batch(&base.model, &s.bank, &FixedGate, requests, &mut |_, _| {}).expect("generation")
}

fn check(what: &str, case: &Case, out: &GenerationOutput) {
    let what = format!("{what}/{}", case.name);
    assert_matches_transformers(&what, &case.top_logits, &case.greedy_ids, out);
}

/// Runs every case of a model alone and all of its cases in one batch.
fn check_model(what: &str, base: &BaseModel, m: &Manifest, model: &Model) {
    let s = setup(base, m, model);
    for (case, request) in model.cases.iter().zip(&s.requests) {
        let out = generate(base, &s, std::slice::from_ref(request));
        check(what, case, &out[0]);
    }
    let batch = generate(base, &s, &s.requests);
    for (case, out) in model.cases.iter().zip(&batch) {
        check(&format!("{what}, in one batch"), case, out);
    }
}

fn check_all(backend: &ModelBackend, layouts: &[(&str, &str)]) {
    let m = manifest();
    assert!(m.models.len() >= 11, "fixtures cover every architecture");
    for model in &m.models {
        for (layout, file) in layouts {
            let dir = model_dir(&model.name, &fixture_config(&model.name, file));
            let base = load(dir.path(), backend);
            check_model(&format!("{} ({layout})", model.name), &base, &m, model);
        }
    }
}

#[test]
fn every_architecture_and_config_layout_matches_transformers_and_peft() {
    check_all(&ModelBackend::Host, &LAYOUTS);
}

#[test]
fn the_device_backend_matches_transformers_on_every_architecture() {
    check_all(
        &ModelBackend::Device(candle_core::Device::Cpu),
        &LAYOUTS[..1],
    );
}

/// The same models converted by llama.cpp's own `convert_hf_to_gguf.py`: q/k rows permuted
/// for interleaved rotary (undone at load), Llama 3.1 scaling as `rope_freqs.weight`, yarn and
/// linear scaling as `rope.scaling.*` metadata, the tokenizer from the GGUF vocabulary.
#[test]
fn models_converted_by_llama_cpp_match_transformers() {
    let m = manifest();
    let mut converted = 0;
    for model in &m.models {
        if model.gguf_unconverted.is_some() {
            continue;
        }
        let path = root().join(&model.name).join("model.gguf");
        let base = load(&path, &ModelBackend::Host);
        check_model(&format!("{} (GGUF)", model.name), &base, &m, model);
        converted += 1;
    }
    assert!(
        converted >= 9,
        "only {converted} models were converted to GGUF"
    );
}

/// A loader that dropped the rotary scaling or read theta as the 10000 default (what the
/// old reader did with transformers 5 configs) fails the comparison by far more than the
/// tolerance.
#[test]
fn turning_the_rotary_feature_off_breaks_the_match() {
    let m = manifest();
    let mut checked = 0;
    for model in &m.models {
        let plain = match model.feature.as_str() {
            "scaling" => serde_json::json!({
                "rope_type": "default",
                "rope_theta": model.rope_parameters["rope_theta"],
            }),
            "theta" => serde_json::json!({"rope_type": "default", "rope_theta": 10000.0}),
            _ => continue,
        };
        let mut config: serde_json::Value =
            serde_json::from_str(&fixture_config(&model.name, "config.json")).expect("json");
        config["rope_parameters"] = plain;
        let dir = model_dir(&model.name, &config.to_string());
        let base = load(dir.path(), &ModelBackend::Host);
        let s = setup(&base, &m, model);
        let out = generate(&base, &s, &s.requests[..1]);
        let same_text = out[0].output_ids == model.cases[0].greedy_ids;
        let worst = out[0]
            .top_logits
            .iter()
            .zip(&model.cases[0].top_logits)
            .map(|((_, a), (_, b))| (a - b).abs())
            .fold(0.0f32, f32::max);
        let same_ids = out[0]
            .top_logits
            .iter()
            .zip(&model.cases[0].top_logits)
            .all(|(a, b)| a.0 == b.0);
        assert!(
            worst > 100.0 * LOGIT_TOL || !same_ids || !same_text,
            "{}: without its {} the base case still matches (max diff {worst})",
            model.name,
            model.feature
        );
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} models have a rotary feature");
}
