//! LoRA training on the CPU with candle's autograd: the base model frozen, AdamW on the
//! LoRA factors, next-token cross-entropy on the answer tokens only.
//!
//! [`train_lora`] turns tokenized examples into a [`LoraSet`]; [`LoraSet::save_peft`] writes
//! it as a PEFT adapter folder that the runtime (and Hugging Face PEFT) loads.

mod batch;
mod lora;
mod model;
mod ops;

pub use batch::{pack, EpochSampler, PackedBatch, TrainExample};
pub use lora::{LoraHook, LoraSet, LoraShape};
pub use model::TrainModel;

use crate::{ModuleKind, Result, RuntimeError};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

/// How to train one adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub lora: LoraShape,
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate, reached after `warmup_steps`, then cosine decay to a tenth.
    pub lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub seed: u64,
    /// Longest example (prompt + answer tokens) accepted.
    pub max_len: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lora: LoraShape {
                rank: 8,
                alpha: 16.0,
                targets: vec![ModuleKind::Q, ModuleKind::V],
            },
            steps: 200,
            batch_size: 8,
            lr: 1e-3,
            warmup_steps: 10,
            weight_decay: 0.0,
            seed: 0,
            max_len: 256,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.lora.validate()?;
        let bad = |reason: &str| {
            Err(RuntimeError::InvalidRequest {
                reason: format!("training config: {reason}"),
            })
        };
        if self.steps == 0 || self.batch_size == 0 {
            return bad("steps and batch size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight decay must be >= 0");
        }
        Ok(())
    }

    /// Learning rate at `step` (0-based): linear warmup, then cosine down to `lr / 10`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.lr / 10.0;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub lr: f64,
    pub answer_tokens: usize,
}

/// Mean cross-entropy of the answer tokens of `batch`.
pub fn batch_loss(
    model: &TrainModel,
    lora: &dyn LoraHook,
    batch: &PackedBatch,
) -> Result<candle_core::Tensor> {
    let hidden = model.hidden(&batch.tokens, lora)?;
    let rows = hidden.index_select(&batch.loss_rows, 0)?;
    let logits = model.logits(&rows)?;
    Ok(candle_nn::loss::cross_entropy(&logits, &batch.targets)?)
}

/// Trains fresh LoRA factors on `examples`, visiting them in a seeded shuffled order (a new
/// order each epoch). `on_step` sees every step, for progress bars and logs.
pub fn train_lora(
    model: &TrainModel,
    examples: &[TrainExample],
    cfg: &TrainConfig,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<LoraSet> {
    cfg.validate()?;
    let lora = LoraSet::init(model.config(), &cfg.lora, cfg.seed)?;
    continue_lora(model, examples, cfg, lora, on_step)
}

/// Trains `lora` further on `examples` with a fresh optimizer and schedule (a warm restart):
/// how an adapter that still underfits gets more steps without starting over. `cfg.lora`
/// must describe `lora`.
pub fn continue_lora(
    model: &TrainModel,
    examples: &[TrainExample],
    cfg: &TrainConfig,
    lora: LoraSet,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<LoraSet> {
    cfg.validate()?;
    if lora.shape() != &cfg.lora {
        return Err(RuntimeError::InvalidRequest {
            reason: format!(
                "the adapter to continue has shape {:?}, the training config {:?}",
                lora.shape(),
                cfg.lora
            ),
        });
    }
    if examples.is_empty() {
        return Err(RuntimeError::InvalidRequest {
            reason: "no training examples".into(),
        });
    }
    let vocab = model.config().vocab_size;
    for (i, e) in examples.iter().enumerate() {
        e.validate(i, vocab, cfg.max_len)?;
    }
    let mut opt = AdamW::new(
        lora.vars(),
        ParamsAdamW {
            lr: cfg.lr_at(0),
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let mut sampler = EpochSampler::new(examples.len(), cfg.seed ^ 0x5eed);
    for step in 0..cfg.steps {
        let picked: Vec<&TrainExample> = sampler
            .next_batch(cfg.batch_size)
            .into_iter()
            .map(|i| &examples[i])
            .collect();
        let batch = pack(&picked)?;
        let lr = cfg.lr_at(step);
        opt.set_learning_rate(lr);
        let loss = batch_loss(model, &lora, &batch)?;
        opt.backward_step(&loss)?;
        let loss = loss.to_scalar::<f32>()?;
        if !loss.is_finite() {
            return Err(RuntimeError::InvalidRequest {
                reason: format!(
                    "training diverged at step {step} (loss {loss}); lower the learning rate"
                ),
            });
        }
        on_step(&StepReport {
            step,
            steps: cfg.steps,
            loss,
            lr,
            answer_tokens: batch.answer_tokens,
        });
    }
    Ok(lora)
}

#[cfg(test)]
mod tests;
