//! The runtime against Hugging Face transformers + PEFT on the default model.
//!
//! Fixtures come from `scripts/make_reference_fixtures.py` (run once by hand): prompts, random
//! PEFT adapters of several ranks/targets/dtypes, and for each case the prompt ids, the top-10
//! logits at the last prompt position and a 16-token greedy continuation. Tolerances: in
//! `--dtype f32` identical top-10 ids, logits within 1e-3 absolute, identical greedy tokens;
//! with the weights kept quantized (Q4_1/Q8_0 kernels quantize activations to 8 bits) the
//! same top-1 token at the last prompt position.
//!
//! The tests need the default model (`loramux models fetch`); CI fetches it first.

use loramux_runtime::bank::{AdapterBank, BankConfig};
use loramux_runtime::generate::{generate_batch, GenerationOutput, GenerationRequest};
use loramux_runtime::{
    Adapter, AdapterId, BaseModel, Candidate, FixedGate, SamplingParams, WeightDtype,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Fixtures {
    model_sha256: String,
    cases: Vec<Case>,
    batches: Vec<Batch>,
}

#[derive(Deserialize, Clone)]
struct Case {
    name: String,
    prompt: String,
    chat: bool,
    prompt_ids: Vec<u32>,
    adapters: Vec<AdapterRef>,
    top_logits: Vec<(u32, f32)>,
    greedy_ids: Vec<u32>,
}

#[derive(Deserialize, Clone)]
struct AdapterRef {
    path: String,
    weight: f32,
}

#[derive(Deserialize)]
struct Batch {
    name: String,
    cases: Vec<String>,
}

const LOGIT_TOL: f32 = 1e-3;
/// Reference top-1/top-2 gaps below this are ties for the quantized check: Q8 activation
/// quantization moves logits by up to ~0.2 here, but never reorders a gap of 0.05+ in these
/// fixtures (the one tie, base_chat_0, has a gap of 0.006).
const TIE_MARGIN: f32 = 0.05;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_fixtures() -> Fixtures {
    let text = std::fs::read_to_string(fixtures_dir().join("reference.json"))
        .expect("fixtures present in the repo");
    serde_json::from_str(&text).expect("well-formed fixtures")
}

fn load_base(dtype: WeightDtype) -> BaseModel {
    let path = loramux_runtime::fetch::default_model_path()
        .expect("default model fetched: run `loramux models fetch`");
    let sha = loramux_runtime::fetch::sha256_file(&path).expect("readable model");
    assert_eq!(
        sha,
        load_fixtures().model_sha256,
        "fixtures were made from another model file"
    );
    BaseModel::load(&path, dtype).expect("default model loads")
}

/// Loads every adapter the cases name into one bank and turns each case into a request.
struct Setup {
    bank: AdapterBank,
    _leases: Vec<loramux_runtime::bank::AdapterLease>,
    requests: Vec<GenerationRequest>,
}

fn setup(base: &BaseModel, cases: &[Case]) -> Setup {
    let cfg = base.model.config();
    let mut bank = AdapterBank::new(cfg, BankConfig::default()).expect("bank");
    let mut leases = Vec::new();
    let mut requests = Vec::new();
    for case in cases {
        let ids = if case.chat {
            base.chat_prompt_ids(&case.prompt)
                .expect("chat prompt renders")
        } else {
            base.tokenizer
                .encode(&case.prompt, false)
                .expect("prompt encodes")
        };
        assert_eq!(
            ids, case.prompt_ids,
            "{}: prompt ids differ from the HF tokenizer",
            case.name
        );
        let mut candidates = Vec::new();
        for a in &case.adapters {
            let dir = fixtures_dir().join(&a.path);
            let id = AdapterId::new(&a.path.replace("adapters/", "").replace('_', "-"))
                .expect("valid id");
            let adapter = Adapter::load(id, &dir, cfg).expect("fixture adapter loads");
            let lease = bank.acquire(&adapter).expect("bank has room");
            candidates.push(Candidate {
                slot: lease.slot(),
                prior: a.weight,
            });
            leases.push(lease);
        }
        requests.push(GenerationRequest {
            prompt_ids: ids,
            candidates,
            sampling: SamplingParams::default(),
            max_tokens: 16,
            stop_ids: vec![],
        });
    }
    Setup {
        bank,
        _leases: leases,
        requests,
    }
}

fn check_f32(case: &Case, out: &GenerationOutput) {
    let ours: Vec<u32> = out.top_logits.iter().map(|(id, _)| *id).collect();
    let theirs: Vec<u32> = case.top_logits.iter().map(|(id, _)| *id).collect();
    assert_eq!(ours, theirs, "{}: top-10 ids", case.name);
    for ((id, a), (_, b)) in out.top_logits.iter().zip(&case.top_logits) {
        assert!(
            (a - b).abs() <= LOGIT_TOL,
            "{}: logit of token {id}: ours {a}, transformers {b}",
            case.name
        );
    }
    assert_eq!(
        out.output_ids, case.greedy_ids,
        "{}: greedy continuation",
        case.name
    );
}

#[test]
fn f32_cases_match_transformers_one_by_one() {
    let fx = load_fixtures();
    let base = load_base(WeightDtype::F32);
    for case in &fx.cases {
        let s = setup(&base, std::slice::from_ref(case));
        let out = generate_batch(
            &base.model,
            &s.bank,
            &FixedGate,
            &s.requests,
            &mut |_, _| {},
        )
        .expect("generation");
        check_f32(case, &out[0]);
    }
}

#[test]
fn f32_mixed_batch_matches_each_row_alone() {
    let fx = load_fixtures();
    let base = load_base(WeightDtype::F32);
    assert!(!fx.batches.is_empty());
    for batch in &fx.batches {
        let cases: Vec<Case> = batch
            .cases
            .iter()
            .map(|n| {
                fx.cases
                    .iter()
                    .find(|c| &c.name == n)
                    .expect("batch names a case")
                    .clone()
            })
            .collect();
        let distinct: std::collections::HashSet<Vec<String>> = cases
            .iter()
            .map(|c| c.adapters.iter().map(|a| a.path.clone()).collect())
            .collect();
        assert!(
            distinct.len() >= 3,
            "{}: a mixed batch needs several adapter mixes",
            batch.name
        );
        let s = setup(&base, &cases);
        let out = generate_batch(
            &base.model,
            &s.bank,
            &FixedGate,
            &s.requests,
            &mut |_, _| {},
        )
        .expect("generation");
        assert_eq!(out.len(), cases.len());
        for (case, o) in cases.iter().zip(&out) {
            check_f32(case, o);
        }
    }
}

#[test]
fn quantized_weights_keep_the_top1_token() {
    let fx = load_fixtures();
    let base = load_base(WeightDtype::Native);
    let s = setup(&base, &fx.cases);
    let requests: Vec<GenerationRequest> = s
        .requests
        .iter()
        .map(|r| GenerationRequest {
            max_tokens: 1,
            ..r.clone()
        })
        .collect();
    let out = generate_batch(&base.model, &s.bank, &FixedGate, &requests, &mut |_, _| {})
        .expect("generation");
    let mut strict = 0;
    for (case, o) in fx.cases.iter().zip(&out) {
        let ours = o.top_logits[0].0;
        let (best, best_logit) = case.top_logits[0];
        if best_logit - case.top_logits[1].1 >= TIE_MARGIN {
            strict += 1;
            assert_eq!(ours, best, "{}: top-1 with quantized weights", case.name);
        } else {
            // A near-tie in the f32 reference: 8-bit activations may pick either side of it.
            let tied: Vec<u32> = case
                .top_logits
                .iter()
                .filter(|(_, l)| best_logit - l < TIE_MARGIN)
                .map(|(id, _)| *id)
                .collect();
            assert!(
                tied.contains(&ours),
                "{}: quantized top-1 {ours} is not among the tied {tied:?}",
                case.name
            );
        }
    }
    assert!(
        strict * 4 >= fx.cases.len() * 3,
        "most cases must be decided, not ties"
    );
}
