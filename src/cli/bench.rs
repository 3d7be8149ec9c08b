//! `loramux bench`: decode throughput of loramux (base, one adapter, mixed adapters) against
//! candle's quantized_llama. Parses the flags; the benchmark lives in `loramux_eval::bench`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use loramux_eval::bench::{self, BenchConfig, BenchModel};
use loramux_runtime::DeviceChoice;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// GGUF file of the base model, `default` for the default model, or `random` for random
    /// weights with the default model's shapes (no file needed; no candle baseline).
    #[arg(long, default_value = "default")]
    model: String,
    /// Where loramux's model runs: cpu (the host backend) or cuda / cuda:N (the device
    /// backend; needs a build with scripts/build-cuda.sh). candle's baseline is CPU-only and
    /// is left out on cuda.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Threads for candle's kernels and rayon's pool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Batch sizes, comma-separated [default: 1,8,32; 1,8 with --quick].
    #[arg(long)]
    batches: Option<String>,
    /// Decode steps timed per shape [default: 48; 8 with --quick].
    #[arg(long)]
    steps: Option<usize>,
    /// Rank of the random adapters.
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Random adapters with arbitrary f32 values instead of f16 values (PEFT saves adapters
    /// in f16 or bf16; f16 adapters take the half-size copy in the LoRA mixture).
    #[arg(long)]
    f32_adapters: bool,
    /// Distinct adapters in the mixed mode [default: 8; 32 with --device cuda].
    #[arg(long)]
    adapters: Option<usize>,
    /// Time only these, comma-separated: candle, base, one, mixed [default: all].
    #[arg(long)]
    only: Option<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// CI smoke run: batches 1 and 8, few steps.
    #[arg(long)]
    quick: bool,
    /// How the GGUF's weights are kept; native-candle runs loramux's model on candle's
    /// quantized kernels instead of the packed ones, for comparison.
    #[arg(long, value_enum, default_value = "native")]
    dtype: super::generate::DtypeArg,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let model = match args.model.as_str() {
        "default" => BenchModel::Gguf(loramux_runtime::fetch::default_model_path()?),
        "random" => BenchModel::Random,
        path => BenchModel::Gguf(PathBuf::from(path)),
    };
    let defaults = if args.quick {
        BenchConfig::quick(model)
    } else {
        BenchConfig::new(model)
    };
    let batches = match &args.batches {
        Some(text) => bench::parse_batches(text)?,
        None => defaults.batches.clone(),
    };
    let adapters = args
        .adapters
        .unwrap_or(if args.device.is_cuda() { 32 } else { 8 });
    let subjects = match &args.only {
        Some(text) => bench::parse_subjects(text, adapters)?,
        None => bench::subjects_for(&defaults.model, args.device, adapters),
    };
    let config = BenchConfig {
        threads: args.threads,
        batches,
        subjects,
        steps: args.steps.unwrap_or(defaults.steps),
        rank: args.rank,
        adapters,
        f16_adapters: !args.f32_adapters,
        dtype: args.dtype.into(),
        device: args.device,
        ..defaults
    };
    let report = bench::run(&config)?;
    print!("{report}");
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
