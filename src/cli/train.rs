//! `loramux train`: one LoRA adapter from a task of the suite or a JSONL file.

use anyhow::{bail, Context};
use candle_core::DType;
use clap::Args;
use loramux_eval::training::{train_and_save, TrainBase};
use loramux_runtime::train::{LoraSet, LoraShape, TrainConfig};
use loramux_runtime::{Adapter, AdapterId, ModuleKind};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A task of the default suite to generate training data from.
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    task: Option<String>,
    /// JSONL training data, one `{"prompt": "..", "answer": ".."}` per line.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to write the PEFT adapter folder (may be the `--init` folder itself).
    #[arg(long)]
    out: PathBuf,
    /// Train this PEFT adapter further instead of fresh factors (a warm restart with a new
    /// schedule); its rank, alpha and targets replace `--rank`, `--alpha`, `--targets`.
    #[arg(long, conflicts_with_all = ["rank", "alpha", "targets"])]
    init: Option<PathBuf>,
    /// Base model: a GGUF file, a Hugging Face folder, or `default`.
    #[arg(long, default_value = "default")]
    model: String,
    #[arg(long, default_value_t = 8)]
    rank: usize,
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// Comma-separated projections: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.
    #[arg(long, default_value = "q_proj,v_proj")]
    targets: String,
    #[arg(long, default_value_t = 200)]
    steps: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Examples generated for `--task` (default: steps × batch size, each seen once).
    #[arg(long)]
    examples: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tensor type of the saved adapter: f16, bf16 or f32.
    #[arg(long, default_value = "f16")]
    dtype: String,
    /// Print a JSON summary instead of a line.
    #[arg(long)]
    json: bool,
}

pub fn parse_targets(list: &str) -> anyhow::Result<Vec<ModuleKind>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            ModuleKind::from_hf_name(name).with_context(|| {
                format!("unknown target module {name:?}; expected one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")
            })
        })
        .collect()
}

pub fn parse_dtype(name: &str) -> anyhow::Result<DType> {
    Ok(match name {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => bail!("--dtype {other}: expected f16, bf16 or f32"),
    })
}

/// The non-empty lines of a JSONL file parsed as `T`, with their 1-based line numbers; a bad
/// line is an error naming the file, the line and the `expected` shape.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    expected: &str,
) -> anyhow::Result<Vec<(usize, T)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let line = serde_json::from_str(l).with_context(|| {
                format!("{} line {}: expected {expected}", path.display(), i + 1)
            })?;
            Ok((i + 1, line))
        })
        .collect()
}

/// `(prompt, answer)` pairs from a JSONL file.
fn read_pairs(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct Line {
        prompt: String,
        answer: String,
    }
    Ok(read_jsonl::<Line>(path, "{\"prompt\", \"answer\"}")?
        .into_iter()
        .map(|(_, l)| (l.prompt, l.answer))
        .collect())
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut config = TrainConfig {
        lora: LoraShape {
            rank: args.rank,
            alpha: args.alpha,
            targets: parse_targets(&args.targets)?,
        },
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        ..TrainConfig::default()
    };
    config.validate()?;
    let dtype = parse_dtype(&args.dtype)?;
    let (pairs, label) = match (&args.task, &args.data) {
        (_, Some(path)) => (read_pairs(path)?, "data".to_string()),
        (Some(name), None) => {
            let n = args.examples.unwrap_or(args.steps * args.batch_size);
            (
                crate::cli::zoo::task_pairs(name, args.seed, n)?,
                name.clone(),
            )
        }
        (None, None) => bail!("give --task NAME or --data FILE.jsonl"),
    };
    if pairs.is_empty() {
        bail!("no training examples");
    }
    let base = TrainBase::load(&crate::cli::generate::resolve_model(&args.model)?)?;
    let start = match &args.init {
        Some(dir) => {
            let model = base.model.config();
            let adapter = Adapter::load(AdapterId::new("init")?, dir, model)
                .with_context(|| format!("--init {}", dir.display()))?;
            let lora = LoraSet::from_adapter(&adapter, model)?;
            config.lora = lora.shape().clone();
            Some(lora)
        }
        None => None,
    };
    let examples = base.tokenize(pairs.iter().map(|(p, a)| (p.as_str(), a.as_str())))?;
    let summary = train_and_save(&base, &examples, &config, start, &args.out, dtype, &label)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{}: {} steps in {:.0}s, loss {:.3} -> {:.3}",
            args.out.display(),
            summary.steps,
            summary.seconds,
            summary.first_loss,
            summary.last_loss
        );
    }
    Ok(())
}
