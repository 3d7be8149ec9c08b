//! Gate tests on a tiny llama built in memory, with random adapters.

use super::train::{gate_batch_loss, train_gate, ExpertMixture, GateExample, GateTrainConfig};
use super::*;
use loramux_runtime::adapter::{AdapterConfig, LoraWeights};
use loramux_runtime::train::{TrainExample, TrainModel};
use loramux_runtime::weights::MemorySource;
use loramux_runtime::{
    Adapter, AdapterBank, AdapterId, BankConfig, Candidate, FixedGate, KvCache, LlamaModel,
    LogitRows, ModelConfig, ModuleKind, SeqStep, WeightDtype,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn tiny() -> ModelConfig {
    ModelConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 3,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 4,
        vocab_size: 32,
        rope: loramux_runtime::config::RopeConfig::plain(10_000.0),
        rms_norm_eps: 1e-5,
        max_position: 64,
        tie_word_embeddings: true,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
    }
}

fn source() -> MemorySource {
    MemorySource::random(&tiny(), 5).unwrap()
}

/// A random adapter on q, v and down with weights large enough to move the logits.
fn adapter(name: &str, rank: usize, seed: u64) -> Adapter {
    let cfg = tiny();
    let modules = [ModuleKind::Q, ModuleKind::V, ModuleKind::Down];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut weights = Vec::new();
    for layer in 0..cfg.num_layers {
        for m in modules {
            let (d_in, d_out) = cfg.module_shape(m);
            let mut v = |n: usize| (0..n).map(|_| rng.random_range(-0.5..0.5)).collect();
            weights.push((
                (layer, m),
                LoraWeights {
                    a: v(rank * d_in),
                    b: v(d_out * rank),
                    rank,
                    scale: 2.0,
                },
            ));
        }
    }
    Adapter::from_parts(
        AdapterId::new(name).unwrap(),
        AdapterConfig::for_modules(rank, 2.0 * rank as f64, &modules),
        weights,
        &cfg,
    )
    .unwrap()
}

fn random_gate(ids: &[&str], seed: u64) -> GateWeights {
    let cfg = tiny();
    let mut rng = StdRng::seed_from_u64(seed);
    let e = ids.len();
    GateWeights {
        adapter_ids: ids.iter().map(|s| s.to_string()).collect(),
        num_layers: cfg.num_layers,
        hidden_size: cfg.hidden_size,
        weight: (0..cfg.num_layers * e * cfg.hidden_size)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect(),
        bias: (0..cfg.num_layers * e)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect(),
    }
}

fn hidden_rows(rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..rows * tiny().hidden_size)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn cand(slot: u32, prior: f32) -> Candidate {
    Candidate { slot, prior }
}

#[test]
fn a_token_never_gets_weight_on_a_non_candidate_and_weights_sum_to_one() {
    let ids = ["a", "b", "c", "d", "e"];
    let gate = LearnedGate::new(random_gate(&ids, 1), GateConfig::default());
    for (slot, id) in ids.iter().enumerate() {
        assert!(gate.bind(slot as u32, id));
    }
    let sets: Vec<Vec<Candidate>> = vec![
        vec![cand(0, 0.5), cand(3, 0.5)],
        vec![cand(1, 0.2), cand(2, 0.3), cand(4, 0.5)],
        vec![cand(4, 1.0)],
        vec![],
    ];
    let rows: Vec<&[Candidate]> = (0..40).map(|i| sets[i % sets.len()].as_slice()).collect();
    let hidden = hidden_rows(rows.len(), 2);
    for layer in 0..tiny().num_layers {
        let plan = gate.plan(&GateInput {
            layer,
            hidden: &hidden,
            hidden_size: tiny().hidden_size,
            row_candidates: &rows,
        });
        assert_eq!(plan.rows(), rows.len());
        for (r, cands) in rows.iter().enumerate() {
            let row = plan.row(r);
            assert!(row.len() <= 2.min(cands.len()));
            assert_eq!(row.is_empty(), cands.is_empty());
            for sw in row {
                assert!(cands.iter().any(|c| c.slot == sw.slot), "row {r}: {sw:?}");
            }
            if !row.is_empty() {
                let total: f32 = row.iter().map(|s| s.weight).sum();
                assert!((total - 1.0).abs() < 1e-5, "row {r} sums to {total}");
            }
        }
    }
}

#[test]
fn top_k_keeps_the_highest_logits_and_renormalizes_them() {
    let ids = ["a", "b", "c"];
    let weights = random_gate(&ids, 3);
    let hidden = hidden_rows(1, 4);
    let priors = [0.2f32, 0.5, 0.3];
    let cands: Vec<Candidate> = (0..3).map(|s| cand(s, priors[s as usize])).collect();
    for prior_weight in [0.0f32, 1.0] {
        for k in 1..=3 {
            let gate = LearnedGate::new(
                weights.clone(),
                GateConfig {
                    top_k: k,
                    prior_weight,
                },
            );
            for (s, id) in ids.iter().enumerate() {
                gate.bind(s as u32, id);
            }
            let rows = [cands.as_slice()];
            let plan = gate.plan(&GateInput {
                layer: 1,
                hidden: &hidden,
                hidden_size: 16,
                row_candidates: &rows,
            });
            // Reference in f64: logits, keep the k best, softmax over them.
            let mut logits: Vec<(f64, u32)> = (0..3)
                .map(|e| {
                    let w = &weights.weight[(3 + e) * 16..(3 + e + 1) * 16];
                    let dot: f64 = w
                        .iter()
                        .zip(&hidden)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum();
                    let bias =
                        weights.bias[3 + e] as f64 + prior_weight as f64 * (priors[e] as f64).ln();
                    (dot + bias, e as u32)
                })
                .collect();
            logits.sort_by(|a, b| b.0.total_cmp(&a.0));
            logits.truncate(k);
            let z: f64 = logits.iter().map(|(l, _)| (l - logits[0].0).exp()).sum();
            let row = plan.row(0);
            assert_eq!(row.len(), k);
            for (sw, (l, slot)) in row.iter().zip(&logits) {
                assert_eq!(sw.slot, *slot);
                let want = (l - logits[0].0).exp() / z;
                assert!(
                    (sw.weight as f64 - want).abs() < 1e-5,
                    "{} vs {want}",
                    sw.weight
                );
            }
        }
    }
}

#[test]
fn an_unknown_candidate_keeps_its_prior_and_the_known_ones_are_still_gated() {
    let weights = random_gate(&["a", "b"], 5);
    let gate = LearnedGate::new(weights.clone(), GateConfig::default());
    assert!(gate.bind(0, "a"));
    assert!(gate.bind(2, "b"));
    assert!(!gate.bind(1, "newcomer"));
    let cands = [cand(0, 0.5), cand(1, 0.2), cand(2, 0.3)];
    let rows = [&cands[..]];
    let hidden = hidden_rows(1, 6);
    let input = |layer| GateInput {
        layer,
        hidden: &hidden,
        hidden_size: 16,
        row_candidates: &rows,
    };
    let mut differs_from_prior = false;
    for layer in 0..tiny().num_layers {
        let plan = gate.plan(&input(layer));
        let row = plan.row(0);
        let weight = |slot| row.iter().find(|w| w.slot == slot).map(|w| w.weight);
        assert_eq!(weight(1), Some(0.2), "the newcomer keeps its prior");
        // a and b share the remaining 0.8 by the gate's softmax over logit + ln(prior).
        let la = weights.logit(layer, 0, &hidden) + 0.5f32.ln();
        let lb = weights.logit(layer, 1, &hidden) + 0.3f32.ln();
        let wa = 0.8 / (1.0 + (lb - la).exp());
        assert!((weight(0).unwrap() - wa).abs() < 1e-6, "layer {layer}");
        assert!(
            (weight(2).unwrap() - (0.8 - wa)).abs() < 1e-6,
            "layer {layer}"
        );
        differs_from_prior |= (weight(0).unwrap() - 0.5).abs() > 1e-3;
    }
    assert!(differs_from_prior, "the gate, not the prior, mixed a and b");
    assert_ne!(gate.plan(&input(0)), FixedGate.plan(&input(0)));
}

#[test]
fn a_row_of_only_unknown_candidates_is_the_prior() {
    let gate = LearnedGate::new(random_gate(&["a", "b"], 5), GateConfig::default());
    assert!(!gate.bind(0, "x"));
    assert!(!gate.bind(1, "y"));
    let cands = [cand(0, 0.7), cand(1, 0.3)];
    let rows = [&cands[..]];
    let hidden = hidden_rows(1, 6);
    let input = GateInput {
        layer: 0,
        hidden: &hidden,
        hidden_size: 16,
        row_candidates: &rows,
    };
    assert_eq!(gate.plan(&input), FixedGate.plan(&input));
}

/// Logits of the inference model for `tokens` with each adapter leased in `bank` order.
fn inference_logits(
    adapters: &[Adapter],
    candidates: &[Candidate],
    gate: &dyn Gate,
    tokens: &[u32],
    bind: &dyn Fn(u32, &str),
) -> Vec<f32> {
    let cfg = tiny();
    let model = LlamaModel::load(&mut source(), WeightDtype::F32).unwrap();
    let mut bank = AdapterBank::new(&cfg, BankConfig { slots: 4, r_max: 8 }).unwrap();
    let leases: Vec<_> = adapters.iter().map(|a| bank.acquire(a).unwrap()).collect();
    for (lease, a) in leases.iter().zip(adapters) {
        bind(lease.slot(), a.id().as_str());
    }
    let slots: Vec<u32> = leases.iter().map(|l| l.slot()).collect();
    let candidates: Vec<Candidate> = candidates
        .iter()
        .map(|c| cand(slots[c.slot as usize], c.prior))
        .collect();
    let mut cache = KvCache::new(&cfg);
    let mut steps = [SeqStep {
        tokens,
        cache: &mut cache,
        candidates: &candidates,
        logits: LogitRows::All,
    }];
    model.forward(&mut steps, &bank, gate).unwrap().remove(0)
}

#[test]
fn top_1_with_a_dominant_expert_equals_that_fixed_adapter() {
    let adapters = [adapter("a", 4, 10), adapter("b", 2, 11)];
    let mut weights = random_gate(&["a", "b"], 7);
    // Expert b wins every token in every layer by a wide margin.
    for l in 0..weights.num_layers {
        weights.bias[l * 2 + 1] = 1e3;
    }
    let gate = LearnedGate::new(
        weights,
        GateConfig {
            top_k: 1,
            prior_weight: 1.0,
        },
    );
    let tokens = [3u32, 9, 1, 17, 30, 4];
    let gated = inference_logits(
        &adapters,
        &[cand(0, 0.5), cand(1, 0.5)],
        &gate,
        &tokens,
        &|s, id| {
            gate.bind(s, id);
        },
    );
    let fixed = inference_logits(&adapters, &[cand(1, 1.0)], &FixedGate, &tokens, &|_, _| {});
    let worst = max_abs_diff(&gated, &fixed);
    assert!(
        worst < 1e-5,
        "top-1 gate and fixed adapter differ by {worst}"
    );
    let base = inference_logits(&adapters, &[], &FixedGate, &tokens, &|_, _| {});
    let moved = max_abs_diff(&base, &fixed);
    assert!(moved > 1e-2, "the adapter does not move the logits");
}

fn gate_examples(n: usize, experts: u32, seed: u64) -> Vec<GateExample> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Each expert's examples draw tokens from a vocabulary range of their own: every token's
    // embedding says which expert it belongs to, a signal the gate can learn to read.
    let width = (32 - 2) / experts;
    (0..n)
        .map(|i| {
            let e = i as u32 % experts;
            let lo = 2 + e * width;
            let mut draw = |k: usize| -> Vec<u32> {
                (0..k).map(|_| rng.random_range(lo..lo + width)).collect()
            };
            let prompt = draw(6);
            let answer = draw(3);
            GateExample::single(TrainExample { prompt, answer }, e)
        })
        .collect()
}

#[test]
fn gradients_reach_only_the_gate() {
    let model = TrainModel::load(&mut source()).unwrap();
    let adapters = [adapter("a", 4, 1), adapter("b", 4, 2), adapter("c", 2, 3)];
    let mix = ExpertMixture::new(model.config(), &adapters, 2, None, 0).unwrap();
    let examples = gate_examples(4, 3, 9);
    let refs: Vec<&GateExample> = examples.iter().collect();
    let (loss, _, gate_loss) = gate_batch_loss(&model, &mix, &refs, 0.5).unwrap();
    assert!(gate_loss.to_scalar::<f32>().unwrap() > 0.0);
    let grads = loss.backward().unwrap();
    for var in mix.vars() {
        let g = grads
            .get(var.as_tensor())
            .expect("every gate tensor gets a gradient");
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0 && norm.is_finite());
    }
    for frozen in model.frozen_tensors() {
        assert!(
            grads.get(frozen).is_none(),
            "a frozen base tensor got a gradient"
        );
    }
}

#[test]
fn training_learns_the_labels_and_the_inference_gate_matches_the_training_graph() {
    let model = TrainModel::load(&mut source()).unwrap();
    let adapters = [adapter("a", 4, 1), adapter("b", 4, 2), adapter("c", 2, 3)];
    let examples = gate_examples(24, 3, 4);
    let cfg = GateTrainConfig {
        steps: 60,
        batch_size: 6,
        lr: 0.05,
        warmup_steps: 5,
        top_k: 2,
        supervision: 5.0,
        ..GateTrainConfig::default()
    };
    let mut reports = Vec::new();
    let weights = train_gate(&model, &adapters, &examples, &cfg, None, &mut |r| {
        reports.push(*r)
    })
    .unwrap();
    assert_eq!(reports.len(), 60);
    let first: f32 = reports[..5].iter().map(|r| r.gate_loss).sum::<f32>() / 5.0;
    let last: f32 = reports[55..].iter().map(|r| r.gate_loss).sum::<f32>() / 5.0;
    assert!(last < first * 0.5, "gate label loss {first} -> {last}");
    // The last layer's own figures are reported and learn too.
    let acc: f32 = reports[55..]
        .iter()
        .map(|r| r.last_layer_gate_acc)
        .sum::<f32>()
        / 5.0;
    let first_ll: f32 = reports[..5]
        .iter()
        .map(|r| r.last_layer_gate_loss)
        .sum::<f32>()
        / 5.0;
    let last_ll: f32 = reports[55..]
        .iter()
        .map(|r| r.last_layer_gate_loss)
        .sum::<f32>()
        / 5.0;
    assert!(
        last_ll < first_ll && last_ll > 0.0,
        "last layer {first_ll} -> {last_ll}"
    );
    assert!(acc > 0.5 && acc <= 1.0, "last layer label accuracy {acc}");
    assert_eq!(weights.adapter_ids, ["a", "b", "c"]);

    // The trained gate in the inference model gives the training graph's logits.
    let mix = ExpertMixture::new(model.config(), &adapters, 2, Some(&weights), 99).unwrap();
    let tokens = examples[1].example.prompt.clone();
    let batch = [&GateExample::single(
        TrainExample {
            prompt: tokens[..tokens.len() - 1].to_vec(),
            answer: vec![tokens[tokens.len() - 1]],
        },
        0,
    )];
    mix.reset();
    let packed = loramux_runtime::train::pack(&[&batch[0].example]).unwrap();
    let hidden = model.hidden(&packed.tokens, &mix).unwrap();
    let expected = model
        .logits(&hidden)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let gate = LearnedGate::new(
        weights,
        GateConfig {
            top_k: 2,
            prior_weight: 0.0,
        },
    );
    let all = [cand(0, 1.0 / 3.0), cand(1, 1.0 / 3.0), cand(2, 1.0 / 3.0)];
    let got = inference_logits(&adapters, &all, &gate, &tokens, &|s, id| {
        gate.bind(s, id);
    });
    let worst = max_abs_diff(&got, &expected);
    assert!(
        worst < 1e-4,
        "inference and training logits differ by {worst}"
    );
}

#[test]
fn gate_files_round_trip_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.safetensors");
    let weights = random_gate(&["a", "b", "c"], 8);
    weights.save(&path).unwrap();
    assert_eq!(GateWeights::load(&path).unwrap(), weights);

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(GateWeights::load(&path).is_err(), "a truncated file loaded");

    let mut nan = weights.clone();
    nan.weight[3] = f32::NAN;
    let err = nan.save(&path).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");

    let mut dup = weights.clone();
    dup.adapter_ids[2] = "a".into();
    assert!(dup.save(&path).unwrap_err().to_string().contains("twice"));

    let adapter_file = dir.path().join("other.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(
            "x".to_string(),
            candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap(),
        )]),
        &adapter_file,
    )
    .unwrap();
    let err = GateWeights::load(&adapter_file).unwrap_err();
    assert!(err.to_string().contains("not a loramux gate"), "{err}");
}
