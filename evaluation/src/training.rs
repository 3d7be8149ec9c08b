//! Training one adapter from (prompt, answer) text pairs: tokenize through the model's chat
//! template (the same rendering the server and the harness use), train with the runtime's
//! trainer under a progress bar, and save a PEFT folder.

use anyhow::Context;
use candle_core::DType;
use indicatif::{ProgressBar, ProgressStyle};
use loramux_runtime::base::chat_prompt_ids;
use loramux_runtime::train::{
    continue_lora, train_lora, LoraSet, TrainConfig, TrainExample, TrainModel,
};
use loramux_runtime::{ChatTemplate, Tokenizer};
use std::path::Path;
use std::time::Instant;

/// The tokenizer, template and trainable weights of one base model.
pub struct TrainBase {
    pub model: TrainModel,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// Recorded as `base_model_name_or_path` in the adapter config.
    pub name: String,
}

impl TrainBase {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut source = loramux_runtime::weights::open(path)?;
        let (tokenizer, template) = loramux_runtime::base::load_text(source.as_ref(), path)?;
        let model = TrainModel::load(source.as_mut())?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "base".into());
        Ok(Self {
            model,
            tokenizer,
            template,
            name,
        })
    }

    /// Chat-rendered prompt ids and answer ids followed by the end-of-turn token.
    pub fn tokenize<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> anyhow::Result<Vec<TrainExample>> {
        let eos = self
            .tokenizer
            .eos_id()
            .context("the model's tokenizer has no end-of-sequence token to stop answers with")?;
        pairs
            .into_iter()
            .map(|(prompt, answer)| {
                let prompt_ids = chat_prompt_ids(&self.tokenizer, &self.template, prompt)?;
                let mut answer_ids = self.tokenizer.encode(answer, false)?;
                answer_ids.push(eos);
                Ok(TrainExample {
                    prompt: prompt_ids,
                    answer: answer_ids,
                })
            })
            .collect()
    }
}

/// How a training run went.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub first_loss: f32,
    pub last_loss: f32,
    pub seconds: f64,
    pub answer_tokens: usize,
}

/// Trains on `examples` (fresh factors, or further from `start`), shows a progress bar
/// labelled `label` with the running loss, and writes the adapter to `out` in `dtype`.
pub fn train_and_save(
    base: &TrainBase,
    examples: &[TrainExample],
    config: &TrainConfig,
    start: Option<LoraSet>,
    out: &Path,
    dtype: DType,
    label: &str,
) -> anyhow::Result<TrainSummary> {
    let bar = ProgressBar::new(config.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>18} [{bar:30}] {pos}/{len} {msg} {elapsed}/{duration}",
        )?
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let started = Instant::now();
    let mut losses = Vec::with_capacity(config.steps);
    let mut tokens = 0;
    let mut on_step = |r: &loramux_runtime::train::StepReport| {
        losses.push(r.loss);
        tokens += r.answer_tokens;
        // A short running mean: single-batch losses jump around.
        let recent = &losses[losses.len().saturating_sub(10)..];
        let mean = recent.iter().sum::<f32>() / recent.len() as f32;
        bar.set_message(format!("loss {mean:.3}"));
        bar.inc(1);
        if bar.is_hidden() && (r.step + 1).is_multiple_of(10) {
            // No terminal (a log file, a parent process): a line every ten steps instead.
            eprintln!("{label}: step {}/{} loss {mean:.3}", r.step + 1, r.steps);
        }
    };
    let lora = match start {
        Some(lora) => continue_lora(&base.model, examples, config, lora, &mut on_step)?,
        None => train_lora(&base.model, examples, config, &mut on_step)?,
    };
    bar.finish();
    lora.save_peft(out, dtype, &base.name)
        .with_context(|| format!("writing the adapter to {}", out.display()))?;
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len().max(1) as f32;
    let k = losses.len().min(10);
    Ok(TrainSummary {
        steps: config.steps,
        first_loss: mean(&losses[..k]),
        last_loss: mean(&losses[losses.len() - k..]),
        seconds: started.elapsed().as_secs_f64(),
        answer_tokens: tokens,
    })
}
