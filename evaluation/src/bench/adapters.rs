//! Random in-memory adapters for the benchmark, and which rows use which.
//!
//! Each adapter targets all seven projections of every layer (the most work per token) with
//! A `[rank, d_in]` ~ N(0, 1/d_in) — rows of unit norm in expectation, like PEFT's Kaiming
//! init — and a small B `[d_out, rank]` ~ N(0, 0.01²), as after a short training run: the
//! model's output stays sensible, so the argmax tokens fed back stay realistic.

use anyhow::{Context, Result};
use loramux_runtime::adapter::{AdapterConfig, LoraWeights};
use loramux_runtime::{
    Adapter, AdapterBank, AdapterId, AdapterLease, Candidate, ModelConfig, ModuleKind,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::Mode;

const B_STD: f32 = 0.01;

/// A seeded random adapter of `rank` on every projection, with alpha = 2·rank (scale 2).
/// With `f16_values`, every value is rounded to the nearest f16 (an adapter saved in f16).
pub fn random_adapter(
    cfg: &ModelConfig,
    name: &str,
    rank: usize,
    seed: u64,
    f16_values: bool,
) -> Result<Adapter> {
    let round = |v: f32| {
        if f16_values {
            half::f16::from_f32(v).to_f32()
        } else {
            v
        }
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let alpha = 2.0 * rank as f64;
    let scale = (alpha / rank as f64) as f32;
    let mut weights = Vec::with_capacity(cfg.num_layers * ModuleKind::ALL.len());
    for layer in 0..cfg.num_layers {
        for module in ModuleKind::ALL {
            let (d_in, d_out) = cfg.module_shape(module);
            let a_std = 1.0 / (d_in as f32).sqrt();
            let a = (0..rank * d_in)
                .map(|_| round(a_std * normal(&mut rng)))
                .collect();
            let b = (0..d_out * rank)
                .map(|_| round(B_STD * normal(&mut rng)))
                .collect();
            weights.push(((layer, module), LoraWeights { a, b, rank, scale }));
        }
    }
    let id = AdapterId::new(name)?;
    let config = AdapterConfig::for_modules(rank, alpha, &ModuleKind::ALL);
    Adapter::from_parts(id, config, weights, cfg)
        .with_context(|| format!("building random adapter {name}"))
}

/// Loads `count` random adapters into `bank` and pins them. Each adapter is dropped once
/// written: the bank holds its own copy, and the leases keep the slots.
pub fn load_random(
    bank: &mut AdapterBank,
    cfg: &ModelConfig,
    count: usize,
    rank: usize,
    seed: u64,
    f16_values: bool,
) -> Result<Vec<AdapterLease>> {
    (0..count)
        .map(|i| {
            let adapter = random_adapter(
                cfg,
                &format!("bench-{i}"),
                rank,
                seed.wrapping_add(i as u64),
                f16_values,
            )?;
            Ok(bank.acquire(&adapter)?)
        })
        .collect()
}

/// A standard normal sample (Box–Muller; `rand` alone has no normal distribution).
fn normal(rng: &mut StdRng) -> f32 {
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Row i of a batch uses adapter `i % adapters`.
pub fn round_robin(rows: usize, adapters: usize) -> Vec<usize> {
    (0..rows).map(|i| i % adapters.max(1)).collect()
}

/// Each row's candidates for `mode`, given the pinned slots of the adapters. `One` uses the
/// first slot; `Mixed` uses the first `adapters` slots round-robin (weight 1); `Gated`
/// gives every row the first `candidates` slots with equal priors.
pub fn row_candidates(mode: Mode, rows: usize, slots: &[u32]) -> Vec<Vec<Candidate>> {
    let fixed = |slot: u32| vec![Candidate { slot, prior: 1.0 }];
    match mode {
        Mode::Base => vec![Vec::new(); rows],
        Mode::One => vec![fixed(slots[0]); rows],
        Mode::Mixed { adapters } => {
            let used = &slots[..adapters.min(slots.len())];
            round_robin(rows, used.len())
                .into_iter()
                .map(|a| fixed(used[a]))
                .collect()
        }
        Mode::Gated { candidates, .. } => {
            let used = &slots[..candidates.min(slots.len())];
            let prior = 1.0 / used.len().max(1) as f32;
            let row: Vec<Candidate> = used.iter().map(|&slot| Candidate { slot, prior }).collect();
            vec![row; rows]
        }
    }
}

/// A learned gate with random weights over the bench adapters `bench-0..count`, each bound
/// to its slot: scores that vary per token and layer, so top-k selection does real work.
pub fn random_gate(
    cfg: &ModelConfig,
    slots: &[u32],
    top_k: usize,
    seed: u64,
) -> loramux_router::gate::LearnedGate {
    use loramux_router::gate::{GateConfig, GateWeights, LearnedGate};
    use loramux_runtime::Gate;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6a7e);
    let e = slots.len();
    let spread = 1.0 / (cfg.hidden_size as f32).sqrt();
    let weights = GateWeights {
        adapter_ids: (0..e).map(|i| format!("bench-{i}")).collect(),
        num_layers: cfg.num_layers,
        hidden_size: cfg.hidden_size,
        weight: (0..cfg.num_layers * e * cfg.hidden_size)
            .map(|_| normal(&mut rng) * spread)
            .collect(),
        bias: vec![0.0; cfg.num_layers * e],
    };
    let gate = LearnedGate::new(
        weights,
        GateConfig {
            top_k,
            prior_weight: 1.0,
        },
    );
    for (i, &slot) in slots.iter().enumerate() {
        gate.bind(slot, &format!("bench-{i}"));
    }
    gate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_through_adapters() {
        assert_eq!(round_robin(5, 2), [0, 1, 0, 1, 0]);
        assert_eq!(round_robin(1, 8), [0]);
        assert_eq!(round_robin(3, 1), [0, 0, 0]);
    }

    #[test]
    fn candidates_per_mode() {
        let slots = [4, 2, 7];
        let slot_of = |c: &Vec<Vec<Candidate>>| -> Vec<Vec<u32>> {
            c.iter()
                .map(|r| r.iter().map(|c| c.slot).collect())
                .collect()
        };
        assert_eq!(
            slot_of(&row_candidates(Mode::Base, 2, &slots)),
            [vec![], vec![]] as [Vec<u32>; 2]
        );
        assert_eq!(
            slot_of(&row_candidates(Mode::One, 3, &slots)),
            [[4], [4], [4]]
        );
        let mixed = row_candidates(Mode::Mixed { adapters: 3 }, 4, &slots);
        assert_eq!(slot_of(&mixed), [[4], [2], [7], [4]]);
        assert!(mixed.iter().flatten().all(|c| c.prior == 1.0));
        assert_eq!(
            slot_of(&row_candidates(Mode::Mixed { adapters: 3 }, 1, &slots)),
            [[4]]
        );
    }

    #[test]
    fn normal_samples_have_unit_variance() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| normal(&mut rng) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
