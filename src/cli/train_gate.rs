//! `loramux train-gate`: the learned per-token gate over zoo adapters.

use anyhow::{bail, Context};
use clap::Args;
use loramux_eval::gate_training::{gate_examples, train_gate_and_save, GateDataSize};
use loramux_eval::harness::model::GATE_FILE;
use loramux_eval::tasks::Suite;
use loramux_eval::training::TrainBase;
use loramux_eval::zoo::{default_zoo_dir, ZooManifest};
use loramux_router::gate::train::{GateExample, GateTrainConfig};
use loramux_router::gate::GateWeights;
use loramux_runtime::{Adapter, AdapterId};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct TrainGateArgs {
    /// `all`, or comma-separated adapter ids of the zoo.
    #[arg(long, default_value = "all")]
    adapters: String,
    /// The zoo the adapters come from (default: the project's evaluation/zoo).
    #[arg(long)]
    zoo: Option<PathBuf>,
    /// JSONL data instead of the suite's: `{"prompt", "answer", "adapter"}` per line
    /// (`adapter`, the id whose task the line is, is optional and supervises the gate).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Gate file to write [default: ZOO/gate.safetensors, where `loramux eval` finds it].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start from this gate: adapters it covers keep their weights (extend a gate with new
    /// adapters).
    #[arg(long)]
    extend: Option<PathBuf>,
    #[arg(long, default_value = "default")]
    model: String,
    #[arg(long, default_value_t = GateTrainConfig::default().steps)]
    steps: usize,
    #[arg(long, default_value_t = GateTrainConfig::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = GateTrainConfig::default().batch_size)]
    batch_size: usize,
    /// Experts kept per token during training.
    #[arg(long, default_value_t = GateTrainConfig::default().top_k)]
    top_k: usize,
    /// Weight of the per-token adapter-label loss (0: language-model loss only).
    #[arg(long, default_value_t = GateTrainConfig::default().supervision)]
    supervision: f64,
    /// Single-task prompts per adapter (suite data).
    #[arg(long, default_value_t = GateDataSize::default().per_adapter)]
    per_adapter: usize,
    /// Two-task composite prompts (suite data).
    #[arg(long, default_value_t = GateDataSize::default().composites)]
    composites: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: TrainGateArgs) -> anyhow::Result<()> {
    let zoo = args.zoo.clone().unwrap_or_else(default_zoo_dir);
    let manifest = ZooManifest::load(&zoo)?;
    let ids: Vec<String> = if args.adapters == "all" {
        manifest.adapters.iter().map(|e| e.id.clone()).collect()
    } else {
        args.adapters
            .split(',')
            .map(|s| s.trim().to_string())
            .collect()
    };
    if ids.is_empty() {
        bail!("--adapters names no adapter");
    }
    let base = TrainBase::load(&crate::cli::generate::resolve_model(&args.model)?)?;
    let adapters = ids
        .iter()
        .map(|id| {
            let entry = manifest
                .entry(id)
                .with_context(|| format!("adapter {id} is not in the zoo at {}", zoo.display()))?;
            let dir = ZooManifest::adapter_dir(&zoo, entry);
            Adapter::load(AdapterId::new(id)?, &dir, base.model.config())
                .with_context(|| format!("loading {}", dir.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let examples = match &args.data {
        Some(path) => read_jsonl(&base, path, &ids)?,
        None => gate_examples(
            &base,
            &Suite::default_suite(),
            &ids,
            GateDataSize {
                per_adapter: args.per_adapter,
                composites: args.composites,
            },
        )?,
    };
    let init = args.extend.as_deref().map(GateWeights::load).transpose()?;
    let config = GateTrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        top_k: args.top_k,
        supervision: args.supervision,
        seed: args.seed,
        ..GateTrainConfig::default()
    };
    let out = args.out.unwrap_or_else(|| zoo.join(GATE_FILE));
    eprintln!(
        "training a gate over {} adapters on {} examples",
        ids.len(),
        examples.len()
    );
    let summary = train_gate_and_save(&base, &adapters, &examples, &config, init.as_ref(), &out)?;
    println!("{}", serde_json::to_string(&summary)?);
    eprintln!("gate written to {}", out.display());
    Ok(())
}

fn read_jsonl(base: &TrainBase, path: &Path, ids: &[String]) -> anyhow::Result<Vec<GateExample>> {
    #[derive(serde::Deserialize)]
    struct Line {
        prompt: String,
        answer: String,
        adapter: Option<String>,
    }
    let lines = super::train::read_jsonl::<Line>(path, "{\"prompt\", \"answer\", \"adapter\"?}")?;
    let mut out = Vec::with_capacity(lines.len());
    for (n, line) in lines {
        let example = base
            .tokenize([(line.prompt.as_str(), line.answer.as_str())])?
            .remove(0);
        let label = match &line.adapter {
            None => None,
            Some(id) => Some(ids.iter().position(|x| x == id).with_context(|| {
                format!(
                    "{} line {n}: adapter {id} is not one of the gate's",
                    path.display()
                )
            })? as u32),
        };
        out.push(GateExample {
            labels: vec![label; example.len()],
            example,
        });
    }
    if out.is_empty() {
        bail!("{} holds no examples", path.display());
    }
    Ok(out)
}
