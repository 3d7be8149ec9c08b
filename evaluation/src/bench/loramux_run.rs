//! loramux as a [`Decoder`]: a ragged prefill of every row, then decode steps, each one
//! `LlamaModel::forward` over all rows with a gate turning each row's candidates into the
//! mixture plan: `FixedGate` for none, one adapter or its round-robin adapter; a learned
//! gate for the gated subject.

use anyhow::{ensure, Result};
use loramux_runtime::{Candidate, Gate, KvCache, LlamaModel, LogitRows, LoraStacks, SeqStep};

use super::timing::{argmax, Decoder};

pub struct LoramuxDecoder<'a> {
    model: &'a LlamaModel,
    lora: &'a dyn LoraStacks,
    gate: &'a dyn Gate,
    prompts: &'a [Vec<u32>],
    candidates: Vec<Vec<Candidate>>,
    caches: Vec<KvCache>,
}

impl<'a> LoramuxDecoder<'a> {
    /// `prompts[i]` and `candidates[i]` belong to row i.
    pub fn new(
        model: &'a LlamaModel,
        lora: &'a dyn LoraStacks,
        gate: &'a dyn Gate,
        prompts: &'a [Vec<u32>],
        candidates: Vec<Vec<Candidate>>,
    ) -> Result<Self> {
        ensure!(
            prompts.len() == candidates.len(),
            "{} prompts but {} candidate lists",
            prompts.len(),
            candidates.len()
        );
        let caches = prompts
            .iter()
            .map(|_| KvCache::new(model.config()))
            .collect();
        Ok(Self {
            model,
            lora,
            gate,
            prompts,
            candidates,
            caches,
        })
    }

    /// One forward over every row; returns each row's greedy next token.
    fn step(&mut self, inputs: &[&[u32]]) -> Result<Vec<u32>> {
        let mut seqs: Vec<SeqStep<'_>> = inputs
            .iter()
            .zip(self.caches.iter_mut())
            .zip(&self.candidates)
            .map(|((&tokens, cache), candidates)| SeqStep {
                tokens,
                cache,
                candidates,
                logits: LogitRows::Last,
            })
            .collect();
        let logits = self.model.forward(&mut seqs, self.lora, self.gate)?;
        Ok(logits.iter().map(|row| argmax(row)).collect())
    }
}

impl Decoder for LoramuxDecoder<'_> {
    fn prefill(&mut self) -> Result<Vec<u32>> {
        let prompts = self.prompts;
        let inputs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        self.step(&inputs)
    }

    fn decode(&mut self, tokens: &[u32]) -> Result<Vec<u32>> {
        let inputs: Vec<&[u32]> = tokens.iter().map(std::slice::from_ref).collect();
        self.step(&inputs)
    }
}
