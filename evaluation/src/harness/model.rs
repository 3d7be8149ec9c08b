//! The harness over the real stack: the base model with every zoo adapter resident in one
//! `AdapterBank`, and the router over a scratch registry holding the zoo.

use super::{Generated, Generator, Job, Retriever};
use crate::zoo::{register_zoo, ZooManifest};
use anyhow::Context;
use loramux_index::{BertEmbedder, BertEmbedderConfig, Registry, RegistryConfig};
use loramux_router::gate::{GateConfig, GateWeights, LearnedGate};
use loramux_router::{RoutePlan, Router, RouterConfig};
use loramux_runtime::generate::{generate_batch, GenerationRequest};
use loramux_runtime::{
    Adapter, AdapterBank, AdapterId, AdapterLease, BankConfig, BaseModel, Candidate, FixedGate,
    Gate, ModelConfig, SamplingParams,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Longest answer the harness waits for: every task's answer is a few tokens, composites two.
pub const MAX_TOKENS: usize = 32;

/// The router over the zoo's registry.
pub struct ZooRetriever {
    router: Router,
}

/// The zoo's learned gate, when one was trained: `gate.safetensors` beside the manifest.
pub const GATE_FILE: &str = "gate.safetensors";

/// The base model with every zoo adapter pinned in the bank.
pub struct ZooGenerator {
    base: BaseModel,
    bank: AdapterBank,
    slots: HashMap<String, u32>,
    /// The learned gate per top-k, slots bound (empty without a gate file).
    gates: HashMap<usize, LearnedGate>,
    /// Keeps every zoo adapter pinned in its slot for the whole run.
    _leases: Vec<AdapterLease>,
}

pub struct ZooModel {
    pub retriever: ZooRetriever,
    pub generator: ZooGenerator,
    /// Zoo adapter ids in manifest order.
    pub ids: Vec<String>,
    /// Top-k values the generator has a learned gate for.
    pub gate_top_ks: Vec<usize>,
}

impl ZooModel {
    /// Loads the base model and every adapter of the zoo, and registers the zoo in a fresh
    /// registry under `scratch` (embedding its descriptions and examples).
    pub fn load(
        base: BaseModel,
        zoo_dir: &Path,
        embedder_dir: &Path,
        scratch: &Path,
        router_config: RouterConfig,
        gate_prior_weight: f32,
    ) -> anyhow::Result<Self> {
        let manifest = ZooManifest::load(zoo_dir)?;
        let cfg = base.model.config().clone();
        let retriever = ZooRetriever::load(zoo_dir, embedder_dir, scratch, &cfg, router_config)?;
        let r_max = manifest.training.rank.max(1);
        let mut bank = AdapterBank::new(
            &cfg,
            BankConfig {
                slots: manifest.adapters.len().max(1),
                r_max,
            },
        )?;
        let mut slots = HashMap::new();
        let mut leases = Vec::new();
        let mut ids = Vec::new();
        for entry in &manifest.adapters {
            let dir = ZooManifest::adapter_dir(zoo_dir, entry);
            let adapter = Adapter::load(AdapterId::new(&entry.id)?, &dir, &cfg)
                .with_context(|| format!("loading zoo adapter {}", entry.id))?;
            let lease = bank.acquire(&adapter)?;
            slots.insert(entry.id.clone(), lease.slot());
            leases.push(lease);
            ids.push(entry.id.clone());
        }
        let mut gates = HashMap::new();
        let gate_path = zoo_dir.join(GATE_FILE);
        if gate_path.exists() {
            let weights = GateWeights::load(&gate_path)?;
            for top_k in [1, 2] {
                let gate = LearnedGate::new(
                    weights.clone(),
                    GateConfig {
                        top_k,
                        prior_weight: gate_prior_weight,
                    },
                );
                for (id, &slot) in &slots {
                    gate.bind(slot, id);
                }
                gates.insert(top_k, gate);
            }
        }
        let mut gate_top_ks: Vec<usize> = gates.keys().copied().collect();
        gate_top_ks.sort_unstable();
        Ok(Self {
            retriever,
            generator: ZooGenerator {
                base,
                bank,
                slots,
                gates,
                _leases: leases,
            },
            ids,
            gate_top_ks,
        })
    }
}

impl ZooRetriever {
    /// Registers the zoo in a fresh registry under `scratch` (embedding its descriptions and
    /// examples) and routes over it.
    pub fn load(
        zoo_dir: &Path,
        embedder_dir: &Path,
        scratch: &Path,
        model: &ModelConfig,
        router_config: RouterConfig,
    ) -> anyhow::Result<Self> {
        let embedder = BertEmbedder::load(embedder_dir, BertEmbedderConfig::default())?;
        let mut registry =
            Registry::open(scratch, RegistryConfig::default(), Arc::new(embedder))
                .with_context(|| format!("opening a scratch registry in {}", scratch.display()))?;
        register_zoo(zoo_dir, &mut registry, model, &mut |_| {})?;
        let router = Router::new(Arc::new(RwLock::new(registry)), router_config)?;
        Ok(Self { router })
    }

    pub fn router(&self) -> &Router {
        &self.router
    }
}

impl Retriever for ZooRetriever {
    fn retrieve(&self, prompt: &str) -> anyhow::Result<Vec<(String, f32)>> {
        Ok(match self.router.route(prompt)? {
            RoutePlan::Auto { candidates, .. } => candidates
                .into_iter()
                .map(|c| (c.id.as_str().to_string(), c.prior))
                .collect(),
            RoutePlan::Base | RoutePlan::Fixed { .. } => Vec::new(),
        })
    }
}

impl Generator for ZooGenerator {
    fn generate(&mut self, jobs: &[Job]) -> anyhow::Result<Vec<Generated>> {
        let stop_ids = self.base.tokenizer.eos_ids();
        let requests = jobs
            .iter()
            .map(|job| {
                let candidates = job
                    .adapters
                    .iter()
                    .map(|(id, w)| {
                        let slot = *self
                            .slots
                            .get(id)
                            .with_context(|| format!("adapter {id} is not in the zoo"))?;
                        Ok(Candidate { slot, prior: *w })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(GenerationRequest {
                    prompt_ids: self.base.chat_prompt_ids(&job.prompt)?,
                    candidates,
                    sampling: SamplingParams::default(),
                    max_tokens: MAX_TOKENS,
                    stop_ids: stop_ids.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The harness batches one strategy at a time: one gate serves the whole call.
        let gate: &dyn Gate = match jobs.first().and_then(|j| j.gate_top_k) {
            Some(k) => self
                .gates
                .get(&k)
                .with_context(|| format!("no learned gate for top-{k} in the zoo"))?,
            None => &FixedGate,
        };
        anyhow::ensure!(
            jobs.iter().all(|j| j.gate_top_k == jobs[0].gate_top_k),
            "one generate call mixes gate settings"
        );
        let outputs = generate_batch(
            &self.base.model,
            &self.bank,
            gate,
            &requests,
            &mut |_, _| {},
        )?;
        outputs
            .into_iter()
            .map(|o| {
                let mut ids = o.output_ids;
                let tokens = ids.len();
                if ids.last().is_some_and(|t| stop_ids.contains(t)) {
                    ids.pop();
                }
                Ok(Generated {
                    text: self.base.tokenizer.decode(&ids, true)?,
                    tokens,
                })
            })
            .collect()
    }
}
