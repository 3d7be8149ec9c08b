//! The learned gate's training data and run: single-task prompts of each adapter's task
//! (every token labelled with that adapter) and composite prompts asking for two tasks
//! (the answer's first line labelled with the first task's adapter, the rest with the
//! second's), tokenized through the chat template like everything else.

use crate::tasks::{Split, Suite};
use crate::training::TrainBase;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use loramux_router::gate::train::{train_gate, GateExample, GateStepReport, GateTrainConfig};
use loramux_router::gate::GateWeights;
use loramux_runtime::train::TrainExample;
use loramux_runtime::Adapter;
use std::time::Instant;

/// Seed of the gate's training prompts: apart from the adapters' own training data.
pub const GATE_DATA_SEED: u64 = 2_000_003;

/// How much data the gate trains on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateDataSize {
    pub per_adapter: usize,
    pub composites: usize,
}

impl Default for GateDataSize {
    fn default() -> Self {
        Self {
            per_adapter: 40,
            composites: 240,
        }
    }
}

/// Labelled examples for a gate over `ids` (adapters named after tasks of `suite`).
pub fn gate_examples(
    base: &TrainBase,
    suite: &Suite,
    ids: &[String],
    size: GateDataSize,
) -> anyhow::Result<Vec<GateExample>> {
    let mut out = Vec::new();
    for (e, id) in ids.iter().enumerate() {
        let task = suite
            .task(id)
            .with_context(|| format!("adapter {id} has no task of that name in the suite"))?;
        let pairs = task.generate(Split::Train, GATE_DATA_SEED, size.per_adapter);
        let examples =
            base.tokenize(pairs.iter().map(|p| (p.prompt.as_str(), p.answer.as_str())))?;
        out.extend(
            examples
                .into_iter()
                .map(|ex| GateExample::single(ex, e as u32)),
        );
    }
    unlabel_shared_prefix(&mut out);
    let expert = |task: &str| ids.iter().position(|id| id == task);
    for c in suite.composite_for_training(GATE_DATA_SEED, size.composites) {
        let (Some(a), Some(b)) = (expert(&c.parts[0].task), expert(&c.parts[1].task)) else {
            continue;
        };
        let answer = format!("{}\n{}", c.parts[0].answer, c.parts[1].answer);
        let example = base
            .tokenize([(c.prompt.as_str(), answer.as_str())])?
            .remove(0);
        let first_line = base.tokenizer.encode(&c.parts[0].answer, false)?.len();
        out.push(composite_labels(example, first_line, a as u32, b as u32));
    }
    Ok(out)
}

/// Drops the labels of the positions every single-task prompt shares (the chat template's
/// header and system prompt): their hidden states cannot tell the tasks apart, so labelling
/// them only teaches the gate to be uncertain there and buries the positions that can.
fn unlabel_shared_prefix(examples: &mut [GateExample]) {
    let Some((first, rest)) = examples.split_first() else {
        return;
    };
    let first = &first.example.prompt;
    let shared = rest.iter().fold(first.len(), |n, e| {
        let common = first.iter().zip(&e.example.prompt);
        n.min(common.take_while(|(a, b)| a == b).count())
    });
    // Position i has seen tokens 0..=i: the first that has seen a token of its own is `shared`.
    for e in examples.iter_mut() {
        e.labels.iter_mut().take(shared).for_each(|l| *l = None);
    }
}

/// Labels of a two-part answer: the positions that predict the first `first_line` answer
/// tokens belong to expert `a`, the ones predicting the rest to `b`, the prompt to none.
fn composite_labels(example: TrainExample, first_line: usize, a: u32, b: u32) -> GateExample {
    let p = example.prompt.len();
    let mut labels = vec![None; example.len()];
    for (i, label) in labels.iter_mut().enumerate().skip(p - 1) {
        // Position i predicts answer token i + 1 - p.
        *label = Some(if i + 1 - p < first_line { a } else { b });
    }
    GateExample { example, labels }
}

/// How a gate training run went.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GateSummary {
    pub steps: usize,
    pub examples: usize,
    pub first_loss: f32,
    pub last_loss: f32,
    pub first_gate_loss: f32,
    pub last_gate_loss: f32,
    /// The last layer's label loss and top-1 label accuracy at the last step.
    pub last_layer_gate_loss: f32,
    pub last_layer_gate_acc: f32,
    /// Means over the last [`TAIL_STEPS`] steps (single batches are noisy).
    pub tail_gate_loss: f32,
    pub tail_last_layer_gate_loss: f32,
    pub tail_last_layer_gate_acc: f32,
    pub seconds: f64,
}

/// Steps the summary's `tail_*` means cover.
pub const TAIL_STEPS: usize = 10;

/// Trains the gate under a progress bar and saves it to `out`.
pub fn train_gate_and_save(
    base: &TrainBase,
    adapters: &[Adapter],
    examples: &[GateExample],
    config: &GateTrainConfig,
    init: Option<&GateWeights>,
    out: &std::path::Path,
) -> anyhow::Result<GateSummary> {
    let bar = ProgressBar::new(config.steps as u64);
    bar.set_style(ProgressStyle::with_template(
        "gate [{bar:30}] {pos}/{len} steps {msg} {elapsed}/{duration}",
    )?);
    let started = Instant::now();
    let mut first = None;
    let mut last = None;
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_STEPS);
    let weights = train_gate(&base.model, adapters, examples, config, init, &mut |r| {
        first.get_or_insert(*r);
        last = Some(*r);
        if tail.len() == TAIL_STEPS {
            tail.pop_front();
        }
        tail.push_back(*r);
        bar.set_message(format!(
            "loss {:.3} (gate {:.3}, last layer {:.3} acc {:.2})",
            r.loss, r.gate_loss, r.last_layer_gate_loss, r.last_layer_gate_acc
        ));
        bar.inc(1);
        if bar.is_hidden() && (r.step % 10 == 0 || r.step + 1 == r.steps) {
            eprintln!(
                "gate: step {}/{} loss {:.3} lm {:.3} gate {:.3} last layer {:.3} acc {:.3}",
                r.step + 1,
                r.steps,
                r.loss,
                r.lm_loss,
                r.gate_loss,
                r.last_layer_gate_loss,
                r.last_layer_gate_acc
            );
        }
    })?;
    bar.finish_and_clear();
    weights.save(out)?;
    let (first, last) = (first.context("no step ran")?, last.context("no step ran")?);
    let mean = |f: fn(&GateStepReport) -> f32| tail.iter().map(f).sum::<f32>() / tail.len() as f32;
    Ok(GateSummary {
        steps: config.steps,
        examples: examples.len(),
        first_loss: first.loss,
        last_loss: last.loss,
        first_gate_loss: first.gate_loss,
        last_gate_loss: last.gate_loss,
        last_layer_gate_loss: last.last_layer_gate_loss,
        last_layer_gate_acc: last.last_layer_gate_acc,
        tail_gate_loss: mean(|r| r.gate_loss),
        tail_last_layer_gate_loss: mean(|r| r.last_layer_gate_loss),
        tail_last_layer_gate_acc: mean(|r| r.last_layer_gate_acc),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_labels_split_the_answer_at_the_first_line() {
        let example = TrainExample {
            prompt: vec![1, 2, 3],
            answer: vec![10, 11, 12, 13, 14],
        };
        let g = composite_labels(example, 2, 4, 7);
        // Positions 0, 1 are prompt-only; 2 predicts answer token 0, 3 token 1 (both of the
        // first line), 4.. the second line and the end token.
        assert_eq!(
            g.labels,
            vec![
                None,
                None,
                Some(4),
                Some(4),
                Some(7),
                Some(7),
                Some(7),
                Some(7)
            ]
        );
    }

    #[test]
    fn positions_every_prompt_shares_lose_their_labels() {
        let single = |prompt: Vec<u32>, expert| {
            GateExample::single(
                TrainExample {
                    prompt,
                    answer: vec![9, 9],
                },
                expert,
            )
        };
        let mut examples = vec![
            single(vec![1, 2, 3, 4], 0),
            single(vec![1, 2, 5], 1),
            single(vec![1, 2, 3, 6, 7], 2),
        ];
        unlabel_shared_prefix(&mut examples);
        // Tokens 1, 2 are common to all: positions 0 and 1 have seen nothing of their own.
        assert_eq!(
            examples[1].labels,
            vec![None, None, Some(1), Some(1), Some(1)]
        );
        assert_eq!(examples[2].labels[..3], [None, None, Some(2)]);
        assert!(examples[0].labels[2..].iter().all(|l| *l == Some(0)));
    }
}
