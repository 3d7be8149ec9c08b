//! `loramux generate`: one prompt (streamed) or a JSONL batch run in shared forward passes,
//! with any mix of PEFT adapters per prompt.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use loramux_runtime::generate::{generate_batch, GenerationOutput, GenerationRequest};
use loramux_runtime::{
    fetch, Adapter, AdapterBank, AdapterId, AdapterLease, BankConfig, BaseModel, Candidate,
    DeviceChoice, FixedGate, SamplingParams, WeightDtype,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    /// Keep GGUF weights quantized (fast).
    Native,
    /// Quantized weights exactly as stored (no re-quantization of Q4_1/Q5_x to Q8_0).
    Stored,
    /// Dequantize everything to f32 (precise; what the reference tests use).
    F32,
    /// As native, through candle's quantized kernels instead of loramux's packed ones (the
    /// baseline of `loramux bench`).
    NativeCandle,
}

impl From<DtypeArg> for WeightDtype {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::Native => WeightDtype::Native,
            DtypeArg::Stored => WeightDtype::Stored,
            DtypeArg::F32 => WeightDtype::F32,
            DtypeArg::NativeCandle => WeightDtype::NativeCandle,
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A .gguf file, a Hugging Face safetensors folder, or `default`.
    #[arg(long, default_value = "default")]
    model: String,
    /// A PEFT adapter folder, optionally with a mixing weight: DIR or DIR=WEIGHT. Repeat to mix.
    #[arg(long = "adapter", value_name = "DIR[=WEIGHT]")]
    adapters: Vec<String>,
    /// The prompt (a user message, unless --raw).
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    prompt: Option<String>,
    /// JSONL file, one `{"prompt": "..", "adapters": [{"path": "..", "weight": 1.0}]}` per line.
    #[arg(long)]
    batch: Option<PathBuf>,
    /// Feed the text as is: no chat template, no BOS unless the model asks for one.
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Greedy decoding (overrides the sampling flags).
    #[arg(long)]
    greedy: bool,
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    #[arg(long, value_enum, default_value = "native")]
    dtype: DtypeArg,
    /// Where the base model runs: cpu (the host backend) or cuda / cuda:N (the device
    /// backend; needs a build with scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Print one JSON object per prompt instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Deserialize)]
struct BatchLine {
    prompt: String,
    #[serde(default)]
    adapters: Vec<AdapterSpec>,
}

#[derive(Debug, Clone, Deserialize)]
struct AdapterSpec {
    path: PathBuf,
    #[serde(default = "one")]
    weight: f32,
}

fn one() -> f32 {
    1.0
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    prompt_ids: &'a [u32],
    output_ids: &'a [u32],
    text: String,
    top_logits: Vec<(u32, f32)>,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    // The device first: a missing GPU or CUDA support fails before anything is loaded.
    let backend = args.device.backend()?;
    let model_path = resolve_model(&args.model)?;
    let base = BaseModel::load_on(&model_path, args.dtype.into(), &backend)
        .with_context(|| format!("loading {} on {}", model_path.display(), args.device))?;
    let rows: Vec<BatchLine> = match (&args.prompt, &args.batch) {
        (Some(prompt), _) => vec![BatchLine {
            prompt: prompt.clone(),
            adapters: args
                .adapters
                .iter()
                .map(|a| parse_adapter_flag(a))
                .collect::<anyhow::Result<_>>()?,
        }],
        (None, Some(file)) => {
            if !args.adapters.is_empty() {
                bail!(
                    "--adapter applies to --prompt; in --batch mode each line names its adapters"
                );
            }
            read_batch(file)?
        }
        (None, None) => bail!("give --prompt or --batch"),
    };
    let adapters = AdapterSet::load(&base, &rows)?;
    let sampling = if args.greedy {
        SamplingParams::default()
    } else {
        SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
        }
    };
    sampling.validate()?;
    let stop_ids = if args.ignore_eos {
        vec![]
    } else {
        base.tokenizer.eos_ids()
    };
    let mut requests = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let prompt_ids = if args.raw {
            base.raw_ids(&row.prompt)?
        } else {
            base.chat_prompt_ids(&row.prompt)?
        };
        if prompt_ids.is_empty() {
            bail!("prompt {} encodes to no tokens", i + 1);
        }
        requests.push(GenerationRequest {
            prompt_ids,
            candidates: adapters.candidates(&row.adapters),
            sampling: SamplingParams {
                seed: sampling.seed.wrapping_add(i as u64),
                ..sampling.clone()
            },
            max_tokens: args.max_tokens,
            stop_ids: stop_ids.clone(),
        });
    }
    let stream_text = !args.json && rows.len() == 1;
    let mut stream = base.tokenizer.stream(true);
    let stdout = std::io::stdout();
    let outputs = generate_batch(
        &base.model,
        &adapters.bank,
        &FixedGate,
        &requests,
        &mut |_, token| {
            if stream_text {
                if let Ok(Some(text)) = stream.push(token) {
                    let mut out = stdout.lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
            }
        },
    )?;
    if stream_text {
        if let Some(rest) = stream.finish()? {
            print!("{rest}");
        }
        println!();
        return Ok(());
    }
    for (i, out) in outputs.iter().enumerate() {
        let text = base.tokenizer.decode(&visible(out, &stop_ids), true)?;
        if args.json {
            let line = JsonOutput {
                prompt_ids: &out.prompt_ids,
                output_ids: &out.output_ids,
                text,
                top_logits: out.top_logits.clone(),
            };
            println!("{}", serde_json::to_string(&line)?);
        } else {
            println!("[{}] {text}", i + 1);
        }
    }
    Ok(())
}

/// The generated ids without a final stop token, for display.
fn visible(out: &GenerationOutput, stop_ids: &[u32]) -> Vec<u32> {
    let mut ids = out.output_ids.clone();
    if ids.last().is_some_and(|t| stop_ids.contains(t)) {
        ids.pop();
    }
    ids
}

pub(crate) fn resolve_model(model: &str) -> anyhow::Result<PathBuf> {
    if model == "default" {
        Ok(fetch::default_model_path()?)
    } else {
        Ok(PathBuf::from(model))
    }
}

fn parse_adapter_flag(flag: &str) -> anyhow::Result<AdapterSpec> {
    // Split on the last '=' so folder names containing '=' still work when a weight is given.
    if let Some((dir, weight)) = flag.rsplit_once('=') {
        if let Ok(w) = weight.parse::<f32>() {
            if !w.is_finite() {
                bail!("--adapter {flag}: weight must be a finite number");
            }
            return Ok(AdapterSpec {
                path: PathBuf::from(dir),
                weight: w,
            });
        }
    }
    Ok(AdapterSpec {
        path: PathBuf::from(flag),
        weight: 1.0,
    })
}

fn read_batch(file: &Path) -> anyhow::Result<Vec<BatchLine>> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut rows = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: BatchLine = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a batch line", file.display(), n + 1))?;
        if row.adapters.iter().any(|a| !a.weight.is_finite()) {
            bail!(
                "{}:{}: adapter weights must be finite",
                file.display(),
                n + 1
            );
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("{} has no prompts", file.display());
    }
    Ok(rows)
}

/// Every distinct adapter folder named on the command line, loaded once and kept resident.
struct AdapterSet {
    bank: AdapterBank,
    slots: BTreeMap<PathBuf, u32>,
    _leases: Vec<AdapterLease>,
}

impl AdapterSet {
    fn load(base: &BaseModel, rows: &[BatchLine]) -> anyhow::Result<Self> {
        let cfg = base.model.config();
        let mut loaded: BTreeMap<PathBuf, Adapter> = BTreeMap::new();
        for spec in rows.iter().flat_map(|r| &r.adapters) {
            if loaded.contains_key(&spec.path) {
                continue;
            }
            let id = AdapterId::new(&format!("cli-{}", loaded.len()))?;
            let adapter = Adapter::load(id, &spec.path, cfg)?;
            loaded.insert(spec.path.clone(), adapter);
        }
        let r_max = loaded
            .values()
            .map(|a| a.max_rank())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut bank = AdapterBank::on_device(
            cfg,
            BankConfig {
                slots: loaded.len().max(1),
                r_max,
            },
            &base.model.device(),
        )?;
        let mut slots = BTreeMap::new();
        let mut leases = Vec::new();
        for (path, adapter) in &loaded {
            let lease = bank.acquire(adapter)?;
            slots.insert(path.clone(), lease.slot());
            leases.push(lease);
        }
        Ok(Self {
            bank,
            slots,
            _leases: leases,
        })
    }

    fn candidates(&self, specs: &[AdapterSpec]) -> Vec<Candidate> {
        specs
            .iter()
            .filter_map(|s| {
                self.slots.get(&s.path).map(|&slot| Candidate {
                    slot,
                    prior: s.weight,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_flag_takes_an_optional_weight() {
        let a = parse_adapter_flag("some/dir=0.25").unwrap();
        assert_eq!((a.path, a.weight), (PathBuf::from("some/dir"), 0.25));
        let b = parse_adapter_flag("plain").unwrap();
        assert_eq!((b.path, b.weight), (PathBuf::from("plain"), 1.0));
        let c = parse_adapter_flag("a=b").unwrap();
        assert_eq!((c.path, c.weight), (PathBuf::from("a=b"), 1.0));
        assert!(parse_adapter_flag("x=NaN").is_err());
    }
}
