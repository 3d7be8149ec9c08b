//! `BenchConfig`: what one run of the decode benchmark measures, its defaults and its checks;
//! `Mode` and `Subject`: the closed set of things timed at each batch size.

use std::fmt;

use anyhow::{bail, ensure, Context, Result};
use loramux_runtime::DeviceChoice;
use serde::Serialize;

use super::model::BenchModel;

/// Decode steps timed per shape by default. 24 steps left the batch-8 mixed/base ratio
/// moving by ±0.1 between runs; 48 keep it within a few hundredths, and the full run
/// (batches 1, 8, 16, 32; five subjects) still takes under two minutes on the 2-core
/// development machine.
pub const DEFAULT_STEPS: usize = 48;
/// Steps per shape with `--quick`: enough to exercise every path, too few for stable figures.
pub const QUICK_STEPS: usize = 8;
pub const DEFAULT_BATCHES: [usize; 3] = [1, 8, 32];
pub const QUICK_BATCHES: [usize; 2] = [1, 8];

/// What is timed at one batch size. Serialized as its display name (`loramux mixed8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// candle-transformers' `quantized_llama` on the same GGUF: the baseline.
    Candle,
    Loramux(Mode),
}

/// How loramux's rows use adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No adapters: the base model alone.
    Base,
    /// Every row uses the same adapter.
    One,
    /// `adapters` distinct adapters assigned to rows round-robin.
    Mixed { adapters: usize },
    /// Every row has `candidates` adapters and a learned gate (random weights) keeps the
    /// top `top_k` per token in every layer: the cost of per-token routing.
    Gated { candidates: usize, top_k: usize },
}

/// Experts the gated subject keeps per token.
pub const GATE_TOP_K: usize = 2;

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Base => f.write_str("base"),
            Mode::One => f.write_str("one"),
            Mode::Mixed { adapters } => write!(f, "mixed{adapters}"),
            Mode::Gated { candidates, top_k } => write!(f, "gate{candidates}top{top_k}"),
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Candle => f.write_str("candle quantized_llama"),
            Subject::Loramux(mode) => write!(f, "loramux {mode}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchConfig {
    /// A GGUF file (the baseline reads GGUF only) or random weights.
    pub model: BenchModel,
    /// Where loramux's model runs: the host backend (`cpu`) or the device backend on a GPU.
    pub device: DeviceChoice,
    /// Threads for candle's CPU kernels and for rayon (attention, LoRA GEMMs).
    pub threads: usize,
    pub batches: Vec<usize>,
    /// What is timed at every batch size, in run order.
    pub subjects: Vec<Subject>,
    /// Decode steps timed per shape.
    pub steps: usize,
    /// Untimed decode steps after the prefill, so caches and thread pools are warm.
    pub warmup_steps: usize,
    /// Tokens per row in the prefill.
    pub prompt_len: usize,
    pub rank: usize,
    /// Distinct adapters in the `mixed` mode (and slots in the bank).
    pub adapters: usize,
    /// Seed of the random adapters.
    pub seed: u64,
    /// Whether the random adapters' values are f16 values, as PEFT saves adapters (the zoo's
    /// are f16); `false` gives arbitrary f32 values.
    pub f16_adapters: bool,
    /// How a GGUF's weights are kept (`NativeCandle`: candle's kernels for the base product).
    pub dtype: loramux_runtime::WeightDtype,
}

impl BenchConfig {
    /// The full benchmark on `model`.
    pub fn new(model: BenchModel) -> Self {
        let adapters = 8;
        Self {
            model,
            device: DeviceChoice::Cpu,
            threads: 2,
            batches: DEFAULT_BATCHES.to_vec(),
            subjects: all_subjects(adapters),
            steps: DEFAULT_STEPS,
            warmup_steps: 3,
            prompt_len: 32,
            rank: 16,
            adapters,
            seed: 42,
            f16_adapters: true,
            dtype: loramux_runtime::WeightDtype::Native,
        }
    }

    /// The CI smoke run: batches 1 and 8, a few steps.
    pub fn quick(model: BenchModel) -> Self {
        Self {
            batches: QUICK_BATCHES.to_vec(),
            steps: QUICK_STEPS,
            warmup_steps: 1,
            ..Self::new(model)
        }
    }

    /// Positions a row reaches by the end of a shape: prompt, warm-up and timed steps.
    pub fn positions(&self) -> usize {
        self.prompt_len + self.warmup_steps + self.steps
    }

    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("threads", self.threads),
            ("steps", self.steps),
            ("prompt length", self.prompt_len),
            ("rank", self.rank),
            ("adapters", self.adapters),
        ] {
            ensure!(value > 0, "{name} must be at least 1");
        }
        ensure!(!self.batches.is_empty(), "no batch sizes given");
        ensure!(!self.subjects.is_empty(), "nothing to time");
        ensure!(
            !(self.model == BenchModel::Random && self.subjects.contains(&Subject::Candle)),
            "candle's baseline reads a GGUF file: leave it out with random weights \
             (e.g. --only base,one,mixed)"
        );
        ensure!(
            !(self.device.is_cuda() && self.subjects.contains(&Subject::Candle)),
            "candle's baseline runs on the CPU only: leave it out with --device {} \
             (e.g. --only base,one,mixed)",
            self.device
        );
        for subject in &self.subjects {
            if let Subject::Loramux(
                Mode::Mixed { adapters }
                | Mode::Gated {
                    candidates: adapters,
                    ..
                },
            ) = subject
            {
                ensure!(
                    *adapters <= self.adapters,
                    "{subject} needs {adapters} adapters but only {} are loaded",
                    self.adapters
                );
            }
        }
        ensure!(
            self.batches.iter().all(|&b| b > 0),
            "batch sizes must be at least 1"
        );
        Ok(())
    }
}

/// Every subject that `model` on `device` allows, in run order: candle's baseline first
/// (it needs a GGUF file and the CPU), then loramux from light to heavy.
pub fn subjects_for(model: &BenchModel, device: DeviceChoice, adapters: usize) -> Vec<Subject> {
    let mut subjects = all_subjects(adapters);
    if device.is_cuda() || *model == BenchModel::Random {
        subjects.retain(|s| *s != Subject::Candle);
    }
    subjects
}

/// Every subject, in run order: the baseline first, then loramux from light to heavy.
pub fn all_subjects(adapters: usize) -> Vec<Subject> {
    vec![
        Subject::Candle,
        Subject::Loramux(Mode::Base),
        Subject::Loramux(Mode::One),
        Subject::Loramux(Mode::Mixed { adapters }),
        Subject::Loramux(Mode::Gated {
            candidates: adapters,
            top_k: GATE_TOP_K.min(adapters),
        }),
    ]
}

/// Parses `--only`: comma-separated `candle`, `base`, `one`, `mixed`, `gate` (the last two
/// with `adapters` adapters), kept in the order given.
pub fn parse_subjects(text: &str, adapters: usize) -> Result<Vec<Subject>> {
    let mut subjects = Vec::new();
    for part in text.split(',').map(str::trim) {
        let subject = match part {
            "candle" => Subject::Candle,
            "base" => Subject::Loramux(Mode::Base),
            "one" => Subject::Loramux(Mode::One),
            "mixed" => Subject::Loramux(Mode::Mixed { adapters }),
            "gate" => Subject::Loramux(Mode::Gated {
                candidates: adapters,
                top_k: GATE_TOP_K.min(adapters),
            }),
            other => bail!("unknown subject {other:?}: expected candle, base, one, mixed or gate"),
        };
        if subjects.contains(&subject) {
            bail!("{part} is given twice in {text:?}");
        }
        subjects.push(subject);
    }
    Ok(subjects)
}

/// Parses `--batches`: comma-separated positive sizes, e.g. `1,8,32`, without duplicates.
pub fn parse_batches(text: &str) -> Result<Vec<usize>> {
    let mut batches = Vec::new();
    for part in text.split(',').map(str::trim) {
        let size: usize = part
            .parse()
            .with_context(|| format!("batch size {part:?} in {text:?} is not a number"))?;
        if size == 0 {
            bail!("batch size 0 in {text:?}: a batch needs at least one row");
        }
        if batches.contains(&size) {
            bail!("batch size {size} is given twice in {text:?}");
        }
        batches.push(size);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf() -> BenchModel {
        BenchModel::Gguf(std::path::PathBuf::from("m.gguf"))
    }

    #[test]
    fn parses_batch_lists() {
        assert_eq!(parse_batches("1,8,32").unwrap(), [1, 8, 32]);
        assert_eq!(parse_batches(" 4 , 2").unwrap(), [4, 2]);
        assert_eq!(parse_batches("16").unwrap(), [16]);
        for bad in ["", "1,,8", "1,x", "0,8", "8,8", "-1"] {
            assert!(parse_batches(bad).is_err(), "{bad:?} should be refused");
        }
        let msg = parse_batches("1,8,8").unwrap_err().to_string();
        assert!(msg.contains("given twice"), "{msg}");
    }

    #[test]
    fn parses_subject_lists() {
        let mixed = Subject::Loramux(Mode::Mixed { adapters: 4 });
        assert_eq!(
            parse_subjects("base, mixed", 4).unwrap(),
            [Subject::Loramux(Mode::Base), mixed]
        );
        assert_eq!(
            parse_subjects("candle,base,one,mixed,gate", 4).unwrap(),
            all_subjects(4)
        );
        for bad in ["", "base,base", "lora", "base,,one"] {
            assert!(parse_subjects(bad, 4).is_err(), "{bad:?} should be refused");
        }
        let cfg = BenchConfig {
            subjects: vec![Subject::Loramux(Mode::Mixed { adapters: 9 })],
            ..BenchConfig::new(gguf())
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("only 8"));
    }

    #[test]
    fn names_and_checks() {
        let cfg = BenchConfig::new(gguf());
        cfg.validate().unwrap();
        let names: Vec<String> = cfg.subjects.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "candle quantized_llama",
                "loramux base",
                "loramux one",
                "loramux mixed8",
                "loramux gate8top2"
            ]
        );
        assert_eq!(cfg.positions(), 32 + 3 + DEFAULT_STEPS);
        let json = serde_json::to_string(&cfg.subjects[3]).unwrap();
        assert_eq!(json, "\"loramux mixed8\"");
        let quick = BenchConfig::quick(gguf());
        assert_eq!(
            (quick.batches.as_slice(), quick.steps),
            (&[1, 8][..], QUICK_STEPS)
        );
        let broken = BenchConfig {
            rank: 0,
            ..cfg.clone()
        };
        assert!(broken.validate().unwrap_err().to_string().contains("rank"));
        let empty = BenchConfig {
            batches: vec![],
            ..cfg.clone()
        };
        assert!(empty.validate().is_err());
        let cuda = DeviceChoice::Cuda { ordinal: 0 };
        let on_gpu = BenchConfig {
            device: cuda,
            ..cfg.clone()
        };
        let msg = on_gpu.validate().unwrap_err().to_string();
        assert!(msg.contains("CPU only"), "{msg}");
        let on_gpu = BenchConfig {
            subjects: subjects_for(&gguf(), cuda, 8),
            ..on_gpu
        };
        on_gpu.validate().unwrap();
        assert_eq!(on_gpu.subjects.len(), cfg.subjects.len() - 1);
        let random = BenchConfig {
            model: BenchModel::Random,
            ..cfg.clone()
        };
        let msg = random.validate().unwrap_err().to_string();
        assert!(msg.contains("GGUF"), "{msg}");
        BenchConfig {
            subjects: subjects_for(&BenchModel::Random, DeviceChoice::Cpu, 8),
            ..random
        }
        .validate()
        .unwrap();
    }
}
