//! `loramux bench`: decode throughput of loramux (base, one adapter, mixed adapters) against
//! candle's quantized_llama. Parses the flags; the benchmark lives in `loramux_eval::bench`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use loramux_eval::bench::{self, BenchConfig, BenchModel, SideBySideConfig};
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
    /// A llama.cpp build's folder (with llama-bench and llama-batched-bench): run it on the
    /// same GGUF and threads in this invocation and print loramux / llama.cpp ratios for
    /// decode at batch 1, prefill of 512 and 2,048 tokens, and aggregate decode at batch
    /// 8/16/32 (base and 8 distinct adapters), instead of the decode benchmark.
    #[arg(long, value_name = "DIR")]
    llama_cpp: Option<PathBuf>,
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
    if let Some(dir) = &args.llama_cpp {
        return side_by_side(&args, &model, dir);
    }
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
    write_json(args.json.as_deref(), &report)
}

/// `--llama-cpp DIR`: the side-by-side comparison; the flags that shape the decode
/// benchmark are refused rather than ignored.
fn side_by_side(args: &BenchArgs, model: &BenchModel, dir: &std::path::Path) -> anyhow::Result<()> {
    let BenchModel::Gguf(path) = model else {
        anyhow::bail!("--llama-cpp needs a GGUF model (llama.cpp cannot read random weights)");
    };
    if args.device.is_cuda() {
        anyhow::bail!("--llama-cpp compares CPU builds: leave out --device");
    }
    for (given, flag) in [
        (args.batches.is_some(), "--batches"),
        (args.steps.is_some(), "--steps"),
        (args.adapters.is_some(), "--adapters"),
        (args.only.is_some(), "--only"),
        (args.quick, "--quick"),
        (args.f32_adapters, "--f32-adapters"),
    ] {
        if given {
            anyhow::bail!(
                "{flag} shapes the decode benchmark; --llama-cpp uses llama.cpp's shapes"
            );
        }
    }
    if !matches!(args.dtype, super::generate::DtypeArg::Native) {
        anyhow::bail!("--llama-cpp compares the native (packed) weights: leave out --dtype");
    }
    let report = bench::side_by_side(&SideBySideConfig {
        model: path.clone(),
        llama_cpp: dir.to_path_buf(),
        threads: args.threads,
        rank: args.rank,
    })?;
    print!("{report}");
    write_json(args.json.as_deref(), &report)
}

fn write_json<T: serde::Serialize>(
    path: Option<&std::path::Path>,
    report: &T,
) -> anyhow::Result<()> {
    if let Some(path) = path {
        let json = serde_json::to_string_pretty(report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
