//! Trainer tests on a tiny llama built in memory.

use super::*;
use crate::adapter::testing::tiny_model;
use crate::weights::MemorySource;
use crate::{
    Adapter, AdapterBank, AdapterId, BankConfig, Candidate, FixedGate, KvCache, LlamaModel,
    LogitRows, SeqStep, WeightDtype,
};
use candle_core::DType;

fn tiny_source() -> MemorySource {
    MemorySource::random(&tiny_model(), 11).unwrap()
}

/// A toy task the base model cannot do: answer with the prompt's tokens reversed.
fn reversal_examples(n: usize) -> Vec<TrainExample> {
    (0..n)
        .map(|i| {
            let prompt: Vec<u32> = (0..4).map(|j| ((i * 7 + j * 3) % 28 + 2) as u32).collect();
            let mut answer: Vec<u32> = prompt.iter().rev().copied().collect();
            answer.push(1);
            let mut prompt = prompt;
            prompt.insert(0, 0);
            TrainExample { prompt, answer }
        })
        .collect()
}

fn config(steps: usize) -> TrainConfig {
    TrainConfig {
        lora: LoraShape {
            rank: 4,
            alpha: 8.0,
            targets: ModuleKind::ALL.to_vec(),
        },
        steps,
        batch_size: 8,
        lr: 1e-2,
        warmup_steps: 5,
        ..TrainConfig::default()
    }
}

#[test]
fn loss_falls_on_a_tiny_model() {
    let model = TrainModel::load(&mut tiny_source()).unwrap();
    let examples = reversal_examples(64);
    let mut losses = Vec::new();
    train_lora(&model, &examples, &config(80), &mut |r| losses.push(r.loss)).unwrap();
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(
        last < 0.5 * first,
        "loss should at least halve: first {first}, last {last}"
    );
}

#[test]
fn gradients_reach_only_the_lora_factors() {
    let model = TrainModel::load(&mut tiny_source()).unwrap();
    let lora = LoraSet::init(model.config(), &config(1).lora, 3).unwrap();
    let examples = reversal_examples(4);
    let batch = pack(&examples.iter().collect::<Vec<_>>()).unwrap();
    let grads = batch_loss(&model, &lora, &batch)
        .unwrap()
        .backward()
        .unwrap();
    for var in lora.vars() {
        assert!(
            grads.get(var.as_tensor()).is_some(),
            "every factor gets a gradient"
        );
    }
    // B starts at zero, so A's gradient is zero at step 0; B's must not be.
    let b_norm: f32 = lora
        .vars()
        .iter()
        .skip(1)
        .step_by(2)
        .map(|v| {
            grads
                .get(v.as_tensor())
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .sum();
    assert!(b_norm > 0.0);
    for t in model.frozen_tensors() {
        assert!(grads.get(t).is_none(), "a base weight received a gradient");
    }
}

/// The training graph and the inference model agree: train a few steps, save as PEFT, load
/// through the adapter bank, and compare logits at every position.
#[test]
fn saved_adapter_reproduces_training_logits_in_the_inference_model() {
    let cfg = tiny_model();
    let model = TrainModel::load(&mut tiny_source()).unwrap();
    let examples = reversal_examples(32);
    let lora = train_lora(&model, &examples, &config(20), &mut |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    lora.save_peft(dir.path(), DType::F32, "tiny").unwrap();

    let tokens: Vec<u32> = examples[3]
        .prompt
        .iter()
        .chain(&examples[3].answer)
        .copied()
        .collect();
    let packed = pack(&[&examples[3]]).unwrap();
    let hidden = model.hidden(&packed.tokens, &lora).unwrap();
    let expected = model
        .logits(&hidden)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();

    let inference = LlamaModel::load(&mut tiny_source(), WeightDtype::F32).unwrap();
    let adapter = Adapter::load(AdapterId::new("trained").unwrap(), dir.path(), &cfg).unwrap();
    let mut bank = AdapterBank::new(&cfg, BankConfig { slots: 2, r_max: 8 }).unwrap();
    let lease = bank.acquire(&adapter).unwrap();
    let candidates = [Candidate {
        slot: lease.slot(),
        prior: 1.0,
    }];
    let mut cache = KvCache::new(&cfg);
    let mut steps = [SeqStep {
        tokens: &tokens,
        cache: &mut cache,
        candidates: &candidates,
        logits: LogitRows::All,
    }];
    let got = inference
        .forward(&mut steps, &bank, &FixedGate)
        .unwrap()
        .remove(0);
    assert_eq!(got.len(), expected.len());
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst < 1e-4,
        "inference and training logits differ by {worst}"
    );
    // And the adapter is not a no-op: the base model gives different logits.
    let base = model.hidden(&packed.tokens, &LoraSet::empty()).unwrap();
    let base = model
        .logits(&base)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let moved = base
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(moved > 1e-2, "training left the logits where they were");
}

#[test]
fn learning_rate_warms_up_then_decays_to_a_tenth() {
    let cfg = TrainConfig {
        steps: 100,
        warmup_steps: 10,
        lr: 1e-3,
        ..TrainConfig::default()
    };
    assert!((cfg.lr_at(0) - 1e-4).abs() < 1e-12);
    assert!((cfg.lr_at(9) - 1e-3).abs() < 1e-12);
    assert!(cfg.lr_at(50) < cfg.lr_at(20));
    assert!((cfg.lr_at(99) - 1e-4).abs() < 2e-6);
}

#[test]
fn bad_configs_and_examples_are_refused() {
    let model = TrainModel::load(&mut tiny_source()).unwrap();
    let mut cfg = config(1);
    cfg.lora.rank = 0;
    assert!(train_lora(&model, &reversal_examples(2), &cfg, &mut |_| {}).is_err());
    assert!(train_lora(&model, &[], &config(1), &mut |_| {}).is_err());
    let bad = [TrainExample {
        prompt: vec![1, 999],
        answer: vec![2],
    }];
    let Err(err) = train_lora(&model, &bad, &config(1), &mut |_| {}) else {
        panic!("an example with a token outside the vocabulary was accepted");
    };
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}

fn logits_of(model: &TrainModel, lora: &LoraSet, example: &TrainExample) -> Vec<f32> {
    let packed = pack(&[example]).unwrap();
    let hidden = model.hidden(&packed.tokens, lora).unwrap();
    model
        .logits(&hidden)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// A saved adapter read back for more training is the adapter that was saved (same logits),
/// and the warm restart starts from its loss, not from the fresh one.
#[test]
fn continuing_a_saved_adapter_starts_where_it_stopped() {
    let cfg = tiny_model();
    let model = TrainModel::load(&mut tiny_source()).unwrap();
    let examples = reversal_examples(64);
    let mut first_run = Vec::new();
    let lora = train_lora(&model, &examples, &config(40), &mut |r| {
        first_run.push(r.loss)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    lora.save_peft(dir.path(), DType::F32, "tiny").unwrap();
    let adapter = Adapter::load(AdapterId::new("saved").unwrap(), dir.path(), &cfg).unwrap();
    let resumed = LoraSet::from_adapter(&adapter, &cfg).unwrap();
    assert_eq!(resumed.shape().rank, 4);
    assert!((resumed.shape().alpha - 8.0).abs() < 1e-9);
    assert_eq!(resumed.shape().targets.len(), ModuleKind::ALL.len());
    let (before, after) = (
        logits_of(&model, &lora, &examples[5]),
        logits_of(&model, &resumed, &examples[5]),
    );
    let worst = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-6, "the reloaded factors differ: {worst}");

    let mut second_run = Vec::new();
    let mut cont = config(20);
    cont.lora = resumed.shape().clone();
    cont.seed = 1;
    continue_lora(&model, &examples, &cont, resumed, &mut |r| {
        second_run.push(r.loss)
    })
    .unwrap();
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    let fresh = mean(&first_run[..3]);
    let restart = mean(&second_run[..3]);
    let end_of_first = mean(&first_run[first_run.len() - 5..]);
    assert!(
        restart < 0.5 * fresh,
        "the restart began at loss {restart}, a fresh adapter at {fresh}"
    );
    assert!(
        mean(&second_run[second_run.len() - 5..]) < end_of_first,
        "more steps did not lower the loss below {end_of_first}: {second_run:?}"
    );
}

#[test]
fn continuing_with_another_shape_is_refused() {
    let model = TrainModel::load(&mut tiny_source()).unwrap();
    let lora = LoraSet::init(model.config(), &config(1).lora, 0).unwrap();
    let mut cfg = config(1);
    cfg.lora.rank = 8;
    let Err(err) = continue_lora(&model, &reversal_examples(4), &cfg, lora, &mut |_| {}) else {
        panic!("a rank-4 adapter was continued under a rank-8 config");
    };
    assert!(err.to_string().contains("shape"), "{err}");
}
