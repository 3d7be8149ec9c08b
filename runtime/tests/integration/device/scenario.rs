//! The ragged-batch scenario both device tests run: tiny llamas built in memory with random
//! weights, random adapters, a gate that reads hidden states, and a schedule of steps
//! (prefill, a chunked prefill overlapping decode, then decode) whose logits are collected.

use loramux_kernels::{MixPlan, SlotWeight};
use loramux_runtime::adapter::{AdapterConfig, LoraWeights};
use loramux_runtime::weights::MemorySource;
use loramux_runtime::{
    Adapter, AdapterBank, AdapterId, AdapterLease, BankConfig, Candidate, Gate, GateInput, KvCache,
    LlamaModel, LogitRows, ModelBackend, ModelConfig, ModuleKind, RowSplitGate, SeqStep,
    WeightDtype,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A tiny llama: 3 layers, hidden 16, head_dim 4, with grouped KV heads.
pub fn tiny(num_kv_heads: usize, qkv_bias: bool, tie_word_embeddings: bool) -> ModelConfig {
    ModelConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 3,
        num_heads: 4,
        num_kv_heads,
        head_dim: 4,
        vocab_size: 32,
        rope: loramux_runtime::config::RopeConfig::plain(10_000.0),
        rms_norm_eps: 1e-5,
        max_position: 64,
        tie_word_embeddings,
        qkv_bias,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
    }
}

/// The model with random weights (seeded) on `backend`, every projection in f32.
pub fn model(cfg: &ModelConfig, backend: &ModelBackend) -> LlamaModel {
    let mut source = MemorySource::random(cfg, 17).expect("random model");
    LlamaModel::load_on(&mut source, WeightDtype::F32, backend).expect("loads")
}

/// A random adapter of `rank` on `modules` of every layer, weights uniform in ±0.5 (large
/// enough to move the logits), scale 2.
pub fn adapter(
    cfg: &ModelConfig,
    name: &str,
    modules: &[ModuleKind],
    rank: usize,
    seed: u64,
) -> Adapter {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut weights = Vec::new();
    for layer in 0..cfg.num_layers {
        for &m in modules {
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
        AdapterId::new(name).expect("id"),
        AdapterConfig::for_modules(rank, 2.0 * rank as f64, modules),
        weights,
        cfg,
    )
    .expect("adapter")
}

/// Loads `adapters` into a bank on the model's device and pins them; returns their slots.
pub fn bank(
    cfg: &ModelConfig,
    model: &LlamaModel,
    adapters: &[Adapter],
    r_max: usize,
) -> (AdapterBank, Vec<AdapterLease>) {
    let mut bank = AdapterBank::on_device(
        cfg,
        BankConfig {
            slots: adapters.len().max(1),
            r_max,
        },
        &model.device(),
    )
    .expect("bank");
    let leases = adapters
        .iter()
        .map(|a| bank.acquire(a).expect("room"))
        .collect();
    (bank, leases)
}

/// A gate that reads hidden states: candidate c of a row scores `w[layer, slot] · hidden +
/// ln(prior)`; the top 2 are softmaxed.
pub struct DotGate {
    weights: Vec<f32>,
    slots: usize,
    hidden: usize,
}

impl DotGate {
    pub fn new(cfg: &ModelConfig, slots: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = cfg.num_layers * slots * cfg.hidden_size;
        Self {
            weights: (0..n).map(|_| rng.random_range(-1.0..1.0)).collect(),
            slots,
            hidden: cfg.hidden_size,
        }
    }
}

impl Gate for DotGate {
    fn plan(&self, input: &GateInput<'_>) -> MixPlan {
        let h = self.hidden;
        let mut plan = MixPlan::new();
        for (r, cands) in input.row_candidates.iter().enumerate() {
            let x = &input.hidden[r * h..(r + 1) * h];
            let mut scored: Vec<(u32, f32)> = cands
                .iter()
                .map(|c| {
                    let at = (input.layer * self.slots + c.slot as usize) * h;
                    let w = &self.weights[at..at + h];
                    let s: f32 = w.iter().zip(x).map(|(a, b)| a * b).sum();
                    (c.slot, s + c.prior.ln())
                })
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1));
            scored.truncate(2);
            let max = scored.first().map_or(0.0, |s| s.1);
            let z: f32 = scored.iter().map(|s| (s.1 - max).exp()).sum();
            let row: Vec<SlotWeight> = scored
                .iter()
                .map(|&(slot, s)| SlotWeight {
                    slot,
                    weight: (s - max).exp() / z,
                })
                .collect();
            plan.push_row(&row);
        }
        plan
    }
}

/// One sequence of the scenario.
#[derive(Clone)]
pub struct SeqPlan {
    pub candidates: Vec<Candidate>,
    /// Whether the gate plans its rows (else its candidates' fixed weights).
    pub gated: bool,
    /// Tokens fed at each step (empty: the sequence sits the step out).
    pub steps: Vec<Vec<u32>>,
    pub logits: Vec<LogitRows>,
}

/// Runs every step of `seqs` on `model`; returns every logit produced, in order.
pub fn run(model: &LlamaModel, bank: &AdapterBank, gate: &dyn Gate, seqs: &[SeqPlan]) -> Vec<f32> {
    let cfg = model.config();
    let mut caches: Vec<KvCache> = seqs.iter().map(|_| KvCache::new(cfg)).collect();
    let steps = seqs.iter().map(|s| s.steps.len()).max().unwrap_or(0);
    let mut all = Vec::new();
    for step in 0..steps {
        let mut rows = Vec::new();
        let mut batch = Vec::new();
        for (seq, cache) in seqs.iter().zip(caches.iter_mut()) {
            let tokens = match seq.steps.get(step) {
                Some(t) if !t.is_empty() => t,
                _ => continue,
            };
            rows.extend(std::iter::repeat_n(seq.gated, tokens.len()));
            batch.push(SeqStep {
                tokens,
                cache,
                candidates: &seq.candidates,
                logits: seq.logits[step],
            });
        }
        let split = RowSplitGate {
            gated: gate,
            rows: &rows,
        };
        let logits = model.forward(&mut batch, bank, &split).expect("forward");
        all.extend(logits.into_iter().flatten());
    }
    all
}

/// Deterministic token ids below `vocab`.
pub fn tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// Four sequences over slots `a`, `b`, `c`: no adapter, one adapter, a weighted mixture,
/// and gate-planned rows over three candidates. Step 0 prefills (sequence 3 only its first
/// chunk), step 1 decodes three sequences while sequence 3 prefills its second chunk, then
/// four decode steps.
pub fn ragged_schedule(slots: [u32; 3], vocab: usize) -> Vec<SeqPlan> {
    let [a, b, c] = slots;
    let cand = |slot, prior| Candidate { slot, prior };
    let decode =
        |seed: u64| -> Vec<Vec<u32>> { (0..5).map(|i| tokens(seed + i, 1, vocab)).collect() };
    let seq = |candidates, gated, prompt: Vec<u32>, seed, first: LogitRows| {
        let mut steps = vec![prompt];
        steps.extend(decode(seed));
        let mut logits = vec![first];
        logits.extend([LogitRows::Last; 5]);
        SeqPlan {
            candidates,
            gated,
            steps,
            logits,
        }
    };
    let mut chunked = seq(
        vec![cand(a, 0.5), cand(b, 0.3), cand(c, 0.2)],
        true,
        tokens(4, 4, vocab),
        40,
        LogitRows::None,
    );
    chunked.steps[1] = tokens(5, 3, vocab);
    chunked.logits[1] = LogitRows::All;
    vec![
        seq(vec![], false, tokens(1, 5, vocab), 10, LogitRows::Last),
        seq(
            vec![cand(a, 1.0)],
            false,
            tokens(2, 3, vocab),
            20,
            LogitRows::All,
        ),
        seq(
            vec![cand(a, 0.7), cand(b, 0.4)],
            false,
            tokens(3, 6, vocab),
            30,
            LogitRows::Last,
        ),
        chunked,
    ]
}

/// Largest |a − b| over two equally long logit lists.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "logit counts differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
