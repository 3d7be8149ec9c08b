//! End-to-end tests of the `loramux` binary: `generate --json` single and batched against the
//! transformers + PEFT fixtures, and clear errors for bad input. Needs the default model
//! (`loramux models fetch`; CI fetches it first).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures")
}

fn reference() -> Value {
    let text =
        std::fs::read_to_string(fixtures().join("reference.json")).expect("fixtures in the repo");
    serde_json::from_str(&text).expect("valid json")
}

fn case<'a>(reference: &'a Value, name: &str) -> &'a Value {
    reference["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("fixture case {name}"))
}

/// `generate` as the fixtures were made: f32 weights, raw prompt, 16 greedy tokens past EOS.
const REFERENCE_ARGS: [&str; 9] = [
    "generate",
    "--dtype",
    "f32",
    "--raw",
    "--greedy",
    "--ignore-eos",
    "--max-tokens",
    "16",
    "--json",
];

fn loramux(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loramux"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id"))
        .collect()
}

fn adapter_flags(case: &Value) -> Vec<String> {
    case["adapters"]
        .as_array()
        .expect("adapters")
        .iter()
        .flat_map(|a| {
            let path = fixtures().join(a["path"].as_str().expect("path"));
            [
                "--adapter".to_string(),
                format!("{}={}", path.display(), a["weight"]),
            ]
        })
        .collect()
}

/// Same tolerances as the runtime's reference tests: identical ids, logits within 1e-3.
fn assert_matches(out: &Value, case: &Value) {
    let name = &case["name"];
    assert_eq!(
        ids(&out["prompt_ids"]),
        ids(&case["prompt_ids"]),
        "{name}: prompt ids"
    );
    assert_eq!(
        ids(&out["output_ids"]),
        ids(&case["greedy_ids"]),
        "{name}: greedy ids"
    );
    let ours = out["top_logits"].as_array().expect("top_logits");
    let theirs = case["top_logits"].as_array().expect("top_logits");
    assert_eq!(ours.len(), 10);
    for (a, b) in ours.iter().zip(theirs) {
        assert_eq!(a[0], b[0], "{name}: top-10 ids");
        let (x, y) = (a[1].as_f64().expect("logit"), b[1].as_f64().expect("logit"));
        assert!((x - y).abs() <= 1e-3, "{name}: logit {x} vs {y}");
    }
    assert!(out["text"].is_string());
}

#[test]
fn generate_json_with_a_weighted_adapter_mix_matches_the_reference() {
    let reference = reference();
    let c = case(&reference, "mix_r8_r2");
    let mut args = REFERENCE_ARGS.to_vec();
    let prompt = c["prompt"].as_str().expect("prompt").to_string();
    args.extend(["--prompt", &prompt]);
    let flags = adapter_flags(c);
    args.extend(flags.iter().map(String::as_str));
    let out = loramux(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_matches(&line, c);
}

#[test]
fn generate_batch_runs_a_mixed_batch_in_order() {
    let reference = reference();
    let names: Vec<String> = reference["batches"][0]["cases"]
        .as_array()
        .expect("batch")
        .iter()
        .map(|n| n.as_str().expect("name").to_string())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("batch.jsonl");
    let mut lines = String::new();
    for n in &names {
        let c = case(&reference, n);
        assert_eq!(c["chat"], false, "the batch file feeds raw prompts");
        let adapters: Vec<Value> = c["adapters"]
            .as_array()
            .expect("adapters")
            .iter()
            .map(|a| serde_json::json!({"path": fixtures().join(a["path"].as_str().expect("path")), "weight": a["weight"]}))
            .collect();
        lines.push_str(
            &serde_json::json!({"prompt": c["prompt"], "adapters": adapters}).to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&file, lines).expect("write batch");
    let mut args = REFERENCE_ARGS.to_vec();
    args.extend(["--batch", file.to_str().expect("utf-8 path")]);
    let out = loramux(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(rows.len(), names.len());
    for (row, n) in rows.iter().zip(&names) {
        assert_matches(row, case(&reference, n));
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let missing = loramux(&[
        "generate",
        "--prompt",
        "hi",
        "--adapter",
        "/nonexistent/adapter",
        "--max-tokens",
        "1",
    ]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("/nonexistent/adapter"),
        "names the folder: {err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.jsonl");
    std::fs::write(&file, "{\"prompt\": \"ok\"}\n{\"prompt\": \n").expect("write");
    let broken = loramux(&[
        "generate",
        "--batch",
        file.to_str().expect("path"),
        "--json",
    ]);
    assert!(!broken.status.success());
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(err.contains("broken.jsonl:2"), "names the line: {err}");

    let bad_weight = loramux(&["generate", "--prompt", "hi", "--adapter", "x=inf"]);
    assert!(!bad_weight.status.success());
    assert!(String::from_utf8_lossy(&bad_weight.stderr).contains("finite"));
}

/// Built without the `cuda` feature, asking for CUDA is a one-line error that says how to
/// build with it, from every command that takes `--device`.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_build_it() {
    for args in [
        &["generate", "--device", "cuda", "--prompt", "hi"][..],
        &["serve", "--device", "cuda", "--no-zoo"],
        &["bench", "--device", "cuda", "--quick"],
    ] {
        let out = loramux(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("scripts/build-cuda.sh"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// The binary on a model folder the user brings: each architecture fixture of
/// `runtime/tests/fixtures/architectures` (Qwen3 with yarn, Llama 3.1 rotary, Qwen2 biases),
/// its two PEFT adapters mixed, through `generate --model DIR`, against transformers + PEFT.
#[test]
fn generate_runs_a_brought_model_folder_with_a_mixture() {
    let root = fixtures().join("architectures");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("reference.json")).expect("fixtures"),
    )
    .expect("json");
    for name in ["qwen3_yarn", "llama31_rope_llama3", "qwen2"] {
        let model = manifest["models"]
            .as_array()
            .expect("models")
            .iter()
            .find(|m| m["name"] == name)
            .expect("fixture model");
        let mixture = model["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["name"] == "mixture")
            .expect("mixture case");
        let dir = tempfile::tempdir().expect("tempdir");
        for (from, to) in [
            (
                root.join(name).join("model.safetensors"),
                "model.safetensors",
            ),
            (root.join(name).join("config.json"), "config.json"),
            (root.join("tokenizer.json"), "tokenizer.json"),
        ] {
            std::fs::copy(from, dir.path().join(to)).expect("copy");
        }
        let max_tokens = manifest["n_greedy"].to_string();
        let mut args: Vec<String> = [
            "generate",
            "--dtype",
            "f32",
            "--raw",
            "--greedy",
            "--ignore-eos",
            "--json",
            "--max-tokens",
            &max_tokens,
            "--model",
            dir.path().to_str().expect("utf-8"),
            "--prompt",
            manifest["prompt"].as_str().expect("prompt"),
        ]
        .map(String::from)
        .to_vec();
        for a in mixture["adapters"].as_array().expect("adapters") {
            let path = root.join(a["path"].as_str().expect("path"));
            args.push("--adapter".into());
            args.push(format!("{}={}", path.display(), a["weight"]));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = loramux(&refs);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        let mut expected = mixture.clone();
        expected["name"] = format!("{name}/mixture").into();
        expected["prompt_ids"] = manifest["prompt_ids"].clone();
        assert_matches(&line, &expected);
    }
}
