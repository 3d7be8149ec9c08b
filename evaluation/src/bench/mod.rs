//! Decode throughput of loramux against candle's `quantized_llama`, in one run.
//!
//! At each batch size, four subjects decode greedily after the same prefill: candle's
//! baseline, loramux with no adapters (`base`), every row on one adapter (`one`), and rows
//! on distinct adapters round-robin (`mixedN`). Weights stay quantized in both engines;
//! adapters are random, of one rank, on all seven projections. Throughput is aggregate:
//! batch × steps ÷ decode time. The subjects of a batch size decode in interleaved rounds
//! (see `timing.rs`), never concurrently.

mod adapters;
mod candle_run;
mod config;
mod engines;
mod llama_cpp;
mod loramux_run;
mod machine;
mod model;
mod prompts;
mod report;
mod side_by_side;
mod table;
mod threads;
mod timing;

pub use config::{
    all_subjects, parse_batches, parse_subjects, subjects_for, BenchConfig, Mode, Subject,
    DEFAULT_STEPS, QUICK_STEPS,
};
pub use llama_cpp::LlamaCppFigures;
pub use machine::{cpu_model, detected_features, load_average, TargetFeatures};
pub use model::{smollm2_135m, BenchModel};
pub use report::{BatchRatios, BenchReport, Measurement, RatioSet};
pub use side_by_side::{run as side_by_side, SideBySide, SideBySideConfig};
pub use threads::ThreadReport;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use engines::Engines;
use timing::{time_interleaved, Steps};

/// Runs the whole benchmark described by `config`, with a progress bar on stderr.
pub fn run(config: &BenchConfig) -> Result<BenchReport> {
    config.validate()?;
    // First, before any tensor work: the pools are sized once, on first use.
    let threads = threads::configure(config.threads)?;
    let load_before = load_average();

    let mut engines = Engines::load(config)?;
    let max_batch = config.batches.iter().copied().max().unwrap_or(1);
    let all_prompts = match &engines.tokenizer {
        Some(tokenizer) => prompts::row_prompts(tokenizer, max_batch, config.prompt_len)?,
        None => prompts::random_prompts(
            max_batch,
            config.prompt_len,
            engines.model.config().vocab_size,
            config.seed,
        ),
    };

    let steps = Steps {
        warmup: config.warmup_steps,
        timed: config.steps,
    };
    let subjects = &config.subjects;
    // One tick per prefill and per round of decode steps.
    let ticks_per_batch = subjects.len() + steps.warmup + steps.timed;
    let progress = ProgressBar::new((config.batches.len() * ticks_per_batch) as u64);
    progress.set_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} [{elapsed_precise}] {msg}",
    )?);
    let mut measurements = Vec::new();
    for &batch in &config.batches {
        progress.set_message(format!("batch {batch}"));
        let prompts = &all_prompts[..batch];
        let mut decoders = engines.decoders(subjects, prompts)?;
        let timings = time_interleaved(&mut decoders, steps, &mut || progress.inc(1))?;
        for (&subject, timing) in subjects.iter().zip(&timings) {
            measurements.push(Measurement::new(batch, subject, timing));
        }
    }
    progress.finish_and_clear();

    Ok(BenchReport {
        config: config.clone(),
        threads,
        features: TargetFeatures::compiled(),
        load_before,
        load_after: load_average(),
        ratios: report::ratios(&measurements),
        measurements,
    })
}
