//! `loramux bench --llama-cpp DIR`: loramux and a llama.cpp build on the same GGUF, the same
//! threads and the same machine, in one invocation, as ratios against the targets loramux
//! holds itself to (decode at batch 1 and prefill at 512 and 2,048 tokens at least
//! llama.cpp's; aggregate decode with 8 distinct adapters at batch 16 at least 1.5× llama.cpp's
//! base-only figure; mixing 8 adapters at most 15% slower than the base model).
//!
//! loramux prefills the way `serve` does (chunks of the engine's default `prefill_chunk`);
//! its decode figures come from the decode benchmark with llama.cpp's shapes (a 128-token
//! prompt per sequence, 64 decode steps for the batched figures, 128 at batch 1).

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};
use loramux_runtime::engine::EngineConfig;
use loramux_runtime::{FixedGate, KvCache, LogitRows, ModelBackend, NoAdapters, SeqStep};
use serde::Serialize;

use super::config::{BenchConfig, Mode, Subject};
use super::llama_cpp::{self, LlamaCppFigures, BATCHED_GENERATE, BATCHED_PROMPT, DECODE_TOKENS};
use super::machine::{cpu_model, detected_features};
use super::model::BenchModel;
use super::prompts;

/// Prompt lengths of the prefill comparison.
pub const PREFILL_LENGTHS: [usize; 2] = [512, 2048];
/// Parallel sequences of the batched decode comparison.
pub const BATCHED: [usize; 3] = [8, 16, 32];
/// Distinct adapters in the mixed subject.
pub const MIXED_ADAPTERS: usize = 8;

#[derive(Debug, Clone)]
pub struct SideBySideConfig {
    pub model: PathBuf,
    pub llama_cpp: PathBuf,
    pub threads: usize,
    pub rank: usize,
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub measure: String,
    pub llama_cpp: f64,
    pub loramux: f64,
    /// loramux ÷ llama.cpp throughput.
    pub ratio: f64,
    /// The ratio loramux aims for (at least).
    pub target: Option<f64>,
}

/// mixed-N time over base time at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixCost {
    pub batch: usize,
    pub mixed_over_base_time: f64,
    /// At most.
    pub target: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideBySide {
    pub cpu: String,
    pub features: String,
    pub threads: usize,
    pub llama_cpp: LlamaCppFigures,
    pub comparisons: Vec<Comparison>,
    pub mix_costs: Vec<MixCost>,
}

/// Runs loramux's measurements, then llama.cpp's, on `config.model`.
pub fn run(config: &SideBySideConfig) -> Result<SideBySide> {
    ensure!(config.threads > 0, "threads must be at least 1");
    super::threads::configure(config.threads)?;
    let model = BenchModel::Gguf(config.model.clone());
    let prefill = prefill_throughput(&model, &PREFILL_LENGTHS)?;
    let decode = |batches: Vec<usize>, subjects: Vec<Subject>, prompt_len, steps| {
        let bench = BenchConfig {
            threads: config.threads,
            batches,
            subjects,
            steps,
            prompt_len,
            rank: config.rank,
            adapters: MIXED_ADAPTERS,
            ..BenchConfig::new(model.clone())
        };
        super::run(&bench)
    };
    let base = Subject::Loramux(Mode::Base);
    let mixed = Subject::Loramux(Mode::Mixed {
        adapters: MIXED_ADAPTERS,
    });
    let b1 = decode(vec![1], vec![base], 1, DECODE_TOKENS)?;
    let batched = decode(
        BATCHED.to_vec(),
        vec![base, mixed],
        BATCHED_PROMPT,
        BATCHED_GENERATE,
    )?;
    let llama = llama_cpp::run(
        &config.llama_cpp,
        &config.model,
        config.threads,
        &PREFILL_LENGTHS,
        &BATCHED,
    )?;

    let tok_s = |report: &super::BenchReport, batch: usize, subject: Subject| {
        report
            .measurements
            .iter()
            .find(|m| m.batch == batch && m.subject == subject)
            .map_or(f64::NAN, |m| m.tokens_per_s)
    };
    let compare = |measure: String, llama_cpp: f64, loramux: f64, target: Option<f64>| Comparison {
        measure,
        llama_cpp,
        loramux,
        ratio: loramux / llama_cpp,
        target,
    };
    let mut comparisons = vec![compare(
        "decode, batch 1".into(),
        llama.decode_b1,
        tok_s(&b1, 1, base),
        Some(1.0),
    )];
    for &(len, theirs) in &llama.prefill {
        let ours = prefill
            .iter()
            .find(|(l, _)| *l == len)
            .map_or(f64::NAN, |&(_, t)| t);
        comparisons.push(compare(
            format!("prefill, {len} tokens"),
            theirs,
            ours,
            Some(1.0),
        ));
    }
    let mut mix_costs = Vec::new();
    for &(batch, theirs) in &llama.batched {
        let (ours_base, ours_mixed) = (tok_s(&batched, batch, base), tok_s(&batched, batch, mixed));
        comparisons.push(compare(
            format!("aggregate decode b{batch}, base"),
            theirs,
            ours_base,
            None,
        ));
        comparisons.push(compare(
            format!("aggregate decode b{batch}, {MIXED_ADAPTERS} adapters (llama.cpp: base)"),
            theirs,
            ours_mixed,
            (batch == 16).then_some(1.5),
        ));
        if batch != 16 {
            mix_costs.push(MixCost {
                batch,
                mixed_over_base_time: ours_base / ours_mixed,
                target: 1.15,
            });
        }
    }
    Ok(SideBySide {
        cpu: cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        features: detected_features(),
        threads: config.threads,
        llama_cpp: llama,
        comparisons,
        mix_costs,
    })
}

/// Prefill tokens per second of one prompt of each length, prefilled in the engine's chunks;
/// the mean of three runs (llama-bench's `avg_ts`) after one untimed run.
fn prefill_throughput(model: &BenchModel, lengths: &[usize]) -> Result<Vec<(usize, f64)>> {
    const RUNS: usize = 3;
    let loaded = model.load(&ModelBackend::Host, loramux_runtime::WeightDtype::Native, 0)?;
    let tokenizer = loaded
        .tokenizer
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the prefill comparison needs a GGUF with a tokenizer"))?;
    let chunk = EngineConfig::default().prefill_chunk;
    let prefill = |prompt: &[u32]| -> Result<f64> {
        let mut cache = KvCache::new(loaded.model.config());
        let start = Instant::now();
        let pieces: Vec<&[u32]> = prompt.chunks(chunk).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            loaded.model.forward(
                &mut [SeqStep {
                    tokens: piece,
                    cache: &mut cache,
                    candidates: &[],
                    logits: if last {
                        LogitRows::Last
                    } else {
                        LogitRows::None
                    },
                }],
                &NoAdapters,
                &FixedGate,
            )?;
        }
        Ok(prompt.len() as f64 / start.elapsed().as_secs_f64())
    };
    let mut out = Vec::new();
    for (i, &len) in lengths.iter().enumerate() {
        let prompt = prompts::row_prompts(tokenizer, 1, len)?.remove(0);
        if i == 0 {
            prefill(&prompt)?;
        }
        let mut total = 0.0;
        for _ in 0..RUNS {
            total += prefill(&prompt)?;
        }
        out.push((len, total / RUNS as f64));
    }
    Ok(out)
}

impl fmt::Display for SideBySide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "loramux vs llama.cpp {} on {} ({}), {} threads",
            self.llama_cpp.build, self.cpu, self.features, self.threads
        )?;
        writeln!(
            f,
            "{:<52} {:>12} {:>12} {:>8} {:>8}",
            "tokens/s", "llama.cpp", "loramux", "ratio", "target"
        )?;
        for c in &self.comparisons {
            let (target, mark) = match c.target {
                Some(t) => (
                    format!(">= {t}"),
                    if c.ratio >= t { "" } else { "  MISSED" },
                ),
                None => (String::new(), ""),
            };
            writeln!(
                f,
                "{:<52} {:>12.1} {:>12.1} {:>8.3} {:>8}{mark}",
                c.measure, c.llama_cpp, c.loramux, c.ratio, target
            )?;
        }
        for m in &self.mix_costs {
            let mark = if m.mixed_over_base_time <= m.target {
                ""
            } else {
                "  MISSED"
            };
            writeln!(
                f,
                "mixed{MIXED_ADAPTERS} / base time at batch {}: {:.3} (target <= {}){mark}",
                m.batch, m.mixed_over_base_time, m.target
            )?;
        }
        Ok(())
    }
}
