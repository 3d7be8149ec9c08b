//! `Engines`: everything loaded once per run — loramux's model, its adapter bank with the
//! random adapters pinned, and candle's baseline — and the [`Decoder`] of each subject.

use anyhow::{bail, ensure, Context, Result};
use candle_transformers::models::quantized_llama::ModelWeights;
use loramux_router::gate::LearnedGate;
use loramux_runtime::{
    AdapterBank, AdapterLease, BankConfig, FixedGate, LlamaModel, NoAdapters, Tokenizer,
};

use super::adapters::{load_random, random_gate, row_candidates};
use super::candle_run::{load_candle, CandleDecoder, CANDLE_MAX_POSITIONS};
use super::config::{BenchConfig, Mode, Subject};
use super::loramux_run::LoramuxDecoder;
use super::model::{BenchModel, LoadedModel};
use super::timing::Decoder;

pub struct Engines {
    pub model: LlamaModel,
    /// The model file's tokenizer; `None` for random weights.
    pub tokenizer: Option<Tokenizer>,
    /// Loaded only when the baseline is timed.
    candle: Option<ModelWeights>,
    bank: AdapterBank,
    /// Pins the random adapters for the whole run; empty when no subject uses adapters.
    leases: Vec<AdapterLease>,
    /// The random learned gate of the gated subject, bound to the adapters' slots.
    gate: Option<LearnedGate>,
}

impl Engines {
    pub fn load(config: &BenchConfig) -> Result<Self> {
        let backend = config.device.backend()?;
        let LoadedModel { model, tokenizer } = config
            .model
            .load(&backend, config.dtype, config.seed)
            .with_context(|| format!("loading {} on {}", config.model, config.device))?;
        let cfg = model.config().clone();
        let limit = cfg.max_position.min(CANDLE_MAX_POSITIONS);
        ensure!(
            config.positions() <= limit,
            "prompt + warm-up + steps = {} positions, but the model (or candle's baseline) stops at {limit}",
            config.positions()
        );
        let has = |want: fn(&Subject) -> bool| config.subjects.iter().any(want);
        let candle = match &config.model {
            BenchModel::Gguf(path) if has(|s| *s == Subject::Candle) => Some(load_candle(path)?),
            _ => None,
        };
        let mut bank = AdapterBank::on_device(
            &cfg,
            BankConfig {
                slots: config.adapters,
                r_max: config.rank,
            },
            &model.device(),
        )?;
        let leases = if has(|s| {
            matches!(
                s,
                Subject::Loramux(Mode::One | Mode::Mixed { .. } | Mode::Gated { .. })
            )
        }) {
            load_random(
                &mut bank,
                &cfg,
                config.adapters,
                config.rank,
                config.seed,
                config.f16_adapters,
            )?
        } else {
            Vec::new()
        };
        let gate = config.subjects.iter().find_map(|s| match s {
            Subject::Loramux(Mode::Gated { candidates, top_k }) => {
                let slots: Vec<u32> = leases
                    .iter()
                    .take(*candidates)
                    .map(AdapterLease::slot)
                    .collect();
                Some(random_gate(&cfg, &slots, *top_k, config.seed))
            }
            _ => None,
        });
        Ok(Self {
            model,
            tokenizer,
            candle,
            bank,
            leases,
            gate,
        })
    }

    /// One fresh decoder per subject, in order, over the same `prompts`. Each subject may
    /// appear once (the baseline has a single, internal KV cache).
    pub fn decoders<'a>(
        &'a mut self,
        subjects: &[Subject],
        prompts: &'a [Vec<u32>],
    ) -> Result<Vec<Box<dyn Decoder + 'a>>> {
        let slots: Vec<u32> = self.leases.iter().map(AdapterLease::slot).collect();
        let model = &self.model;
        let bank = &self.bank;
        let mut candle = self.candle.as_mut();
        let mut out: Vec<Box<dyn Decoder + 'a>> = Vec::with_capacity(subjects.len());
        for &subject in subjects {
            out.push(match subject {
                Subject::Candle => match candle.take() {
                    Some(weights) => Box::new(CandleDecoder::new(weights, prompts)?),
                    None => bail!("the baseline is not loaded, or was asked for twice"),
                },
                Subject::Loramux(Mode::Base) => {
                    let candidates = row_candidates(Mode::Base, prompts.len(), &slots);
                    Box::new(LoramuxDecoder::new(
                        model,
                        &NoAdapters,
                        &FixedGate,
                        prompts,
                        candidates,
                    )?)
                }
                Subject::Loramux(mode) => {
                    ensure!(!slots.is_empty(), "the adapters were not loaded");
                    let candidates = row_candidates(mode, prompts.len(), &slots);
                    let gate: &dyn loramux_runtime::Gate = match (mode, &self.gate) {
                        (Mode::Gated { .. }, Some(g)) => g,
                        (Mode::Gated { .. }, None) => bail!("the gate was not built"),
                        _ => &FixedGate,
                    };
                    Box::new(LoramuxDecoder::new(model, bank, gate, prompts, candidates)?)
                }
            });
        }
        Ok(out)
    }
}
