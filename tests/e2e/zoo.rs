//! The committed adapter zoo and the trainer's command line, end to end on the default model:
//! the zoo fits its size budget and every adapter loads; zoo adapters answer held-out test
//! prompts of their task where the base model does not; `loramux train` writes an adapter
//! that `loramux generate` loads.

use loramux_eval::tasks::{Split, Suite};
use loramux_eval::zoo::{default_zoo_dir, ZooManifest};
use loramux_runtime::{Adapter, AdapterId};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Size budget of the issue: each adapter ≤ 1.5 MB, the zoo ≤ 24 MB (decimal megabytes).
const MAX_ADAPTER_BYTES: u64 = 1_500_000;
const MAX_ZOO_BYTES: u64 = 24_000_000;

fn loramux(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loramux"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("adapter folder")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum()
}

#[test]
fn zoo_covers_every_in_domain_task_fits_the_budget_and_loads() {
    let zoo = default_zoo_dir();
    let manifest = ZooManifest::load(&zoo).expect("committed manifest");
    let suite = Suite::default_suite();
    let ids: Vec<&str> = manifest.adapters.iter().map(|e| e.id.as_str()).collect();
    let tasks: Vec<&str> = suite.in_domain.iter().map(|t| t.name()).collect();
    assert_eq!(ids, tasks, "one adapter per in-domain task, in suite order");
    let model = loramux_runtime::weights::open(
        &loramux_runtime::fetch::default_model_path().expect("default model fetched"),
    )
    .expect("default model opens");
    let mut total = 0;
    for entry in &manifest.adapters {
        let dir = ZooManifest::adapter_dir(&zoo, entry);
        let bytes = folder_bytes(&dir);
        assert!(bytes <= MAX_ADAPTER_BYTES, "{}: {bytes} bytes", entry.id);
        total += bytes;
        let adapter = Adapter::load(AdapterId::new(&entry.id).unwrap(), &dir, model.config())
            .unwrap_or_else(|e| panic!("{} does not load: {e}", entry.id));
        assert_eq!(adapter.max_rank(), manifest.training.rank, "{}", entry.id);
        assert_eq!(
            adapter.num_modules(),
            2 * model.config().num_layers,
            "{}",
            entry.id
        );
        assert!(
            entry.train.last_loss < entry.train.first_loss / 2.0,
            "{}: training loss {} -> {}",
            entry.id,
            entry.train.first_loss,
            entry.train.last_loss
        );
        assert_eq!(
            entry.train.steps,
            manifest.training.steps_for(&entry.id),
            "{}: trained with other steps than the manifest says",
            entry.id
        );
        let plan = manifest.training.phases_for(&entry.id);
        assert_eq!(
            entry.continued.len(),
            plan.len(),
            "{}: continuation phases run vs planned",
            entry.id
        );
        for (ran, planned) in entry.continued.iter().zip(plan) {
            assert_eq!(ran.steps, planned.steps, "{}: continuation steps", entry.id);
        }
        assert!(entry.examples.len() >= 12, "{}: too few examples", entry.id);
    }
    assert!(total <= MAX_ZOO_BYTES, "zoo is {total} bytes");
}

/// Greedy answers of `generate --batch` for `(prompt, adapter)` rows.
fn answers(rows: &[(String, Option<&Path>)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("batch.jsonl");
    let lines: Vec<String> = rows
        .iter()
        .map(|(prompt, adapter)| {
            let adapters: Vec<Value> = adapter
                .iter()
                .map(|p| serde_json::json!({"path": p, "weight": 1.0}))
                .collect();
            serde_json::json!({"prompt": prompt, "adapters": adapters}).to_string()
        })
        .collect();
    std::fs::write(&batch, lines.join("\n")).unwrap();
    let out = loramux(&[
        "generate",
        "--batch",
        batch.to_str().unwrap(),
        "--greedy",
        "--max-tokens",
        "24",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            v["text"].as_str().expect("text").to_string()
        })
        .collect()
}

#[test]
fn zoo_adapters_answer_held_out_prompts_that_the_base_model_misses() {
    let zoo = default_zoo_dir();
    let suite = Suite::default_suite();
    // Three clusters; 8 test-split prompts each (templates never seen in training).
    for name in ["iso_date", "reverse_words", "json_field"] {
        let task = suite.task(name).unwrap();
        let examples = task.generate(Split::Test, 424_242, 8);
        let adapter = zoo.join(name);
        let mut rows: Vec<(String, Option<&Path>)> = examples
            .iter()
            .map(|e| (e.prompt.clone(), Some(adapter.as_path())))
            .collect();
        rows.extend(examples.iter().map(|e| (e.prompt.clone(), None)));
        let out = answers(&rows);
        let correct = |range: std::ops::Range<usize>| {
            range
                .filter(|&i| task.score(&out[i], &examples[i % examples.len()].answer))
                .count()
        };
        let (with, without) = (correct(0..8), correct(8..16));
        assert!(
            with >= 6 && with > without,
            "{name}: {with}/8 with the adapter, {without}/8 without; outputs {out:?}"
        );
    }
}

#[test]
fn train_writes_an_adapter_that_generate_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("adapter");
    let out = loramux(&[
        "train",
        "--task",
        "reverse_words",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--rank",
        "4",
        "--targets",
        "q_proj,v_proj,down_proj",
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(summary["steps"], 3);
    assert!(summary["first_loss"].as_f64().unwrap().is_finite());
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["peft_type"], "LORA");
    let gen = loramux(&[
        "generate",
        "--adapter",
        out_dir.to_str().unwrap(),
        "--prompt",
        "Reverse the words: red green blue",
        "--max-tokens",
        "4",
        "--json",
    ]);
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );

    // Training further from that adapter keeps its shape; a shape flag next to --init is
    // refused (the adapter decides the shape).
    let more_dir = dir.path().join("more");
    let more = loramux(&[
        "train",
        "--task",
        "reverse_words",
        "--init",
        out_dir.to_str().unwrap(),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seed",
        "1",
        "--out",
        more_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        more.status.success(),
        "{}",
        String::from_utf8_lossy(&more.stderr)
    );
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(more_dir.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 3);
    let clash = loramux(&[
        "train",
        "--task",
        "reverse_words",
        "--init",
        out_dir.to_str().unwrap(),
        "--rank",
        "8",
        "--out",
        dir.path().join("y").to_str().unwrap(),
    ]);
    assert!(!clash.status.success(), "--init with --rank was accepted");

    let bad = loramux(&[
        "train",
        "--task",
        "no_such_task",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no_such_task"));
}
