//! Batched generation: many sequences, each with its own prompt, adapters, sampling and
//! stop rules, advanced together — one ragged prefill, then one decode row per live
//! sequence per step. Finished sequences leave the batch at once.

use crate::gate::{Candidate, Gate};
use crate::model::{LlamaModel, LogitRows, LoraStacks, SeqStep};
use crate::sampling::{top_logits, Sampler, SamplingParams};
use crate::{KvCache, Result, RuntimeError};

#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub candidates: Vec<Candidate>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Generation stops after producing any of these (the stop token is kept in the output).
    pub stop_ids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone)]
pub struct GenerationOutput {
    pub prompt_ids: Vec<u32>,
    pub output_ids: Vec<u32>,
    /// The 10 largest logits at the last prompt position, descending.
    pub top_logits: Vec<(u32, f32)>,
    pub finish: FinishReason,
}

/// Receives each token as it is produced: `(request index, token id)`.
pub type TokenSink<'a> = dyn FnMut(usize, u32) + 'a;

struct Live {
    request: usize,
    cache: KvCache,
    sampler: Sampler,
    history: Vec<u32>,
    output: Vec<u32>,
    next_input: Vec<u32>,
    top: Vec<(u32, f32)>,
}

impl Live {
    fn finish(self, req: &GenerationRequest, finish: FinishReason) -> GenerationOutput {
        GenerationOutput {
            prompt_ids: req.prompt_ids.clone(),
            output_ids: self.output,
            top_logits: self.top,
            finish,
        }
    }
}

/// Runs every request to completion in shared batched forward passes.
pub fn generate_batch(
    model: &LlamaModel,
    lora: &dyn LoraStacks,
    gate: &dyn Gate,
    requests: &[GenerationRequest],
    on_token: &mut TokenSink<'_>,
) -> Result<Vec<GenerationOutput>> {
    let mut outputs: Vec<Option<GenerationOutput>> = vec![None; requests.len()];
    let mut live = Vec::with_capacity(requests.len());
    for (i, req) in requests.iter().enumerate() {
        if req.prompt_ids.is_empty() {
            return Err(RuntimeError::InvalidRequest {
                reason: format!("request {i} has an empty prompt"),
            });
        }
        req.sampling.validate()?;
        live.push(Live {
            request: i,
            cache: KvCache::new(model.config()),
            sampler: Sampler::new(req.sampling.clone()),
            history: req.prompt_ids.clone(),
            output: Vec::new(),
            next_input: req.prompt_ids.clone(),
            top: Vec::new(),
        });
    }
    let mut first_step = true;
    while !live.is_empty() {
        let logits = {
            let mut steps: Vec<SeqStep<'_>> = live
                .iter_mut()
                .map(|l| SeqStep {
                    tokens: &l.next_input,
                    cache: &mut l.cache,
                    candidates: &requests[l.request].candidates,
                    logits: LogitRows::Last,
                })
                .collect();
            model.forward(&mut steps, lora, gate)?
        };
        let mut still_live = Vec::with_capacity(live.len());
        for (mut l, logits) in live.into_iter().zip(logits) {
            let req = &requests[l.request];
            if first_step {
                l.top = top_logits(&logits, 10);
            }
            if req.max_tokens == 0 {
                let at = l.request;
                outputs[at] = Some(l.finish(req, FinishReason::Length));
                continue;
            }
            let token = l.sampler.sample(&logits, &l.history);
            l.history.push(token);
            l.output.push(token);
            on_token(l.request, token);
            if req.stop_ids.contains(&token) {
                let at = l.request;
                outputs[at] = Some(l.finish(req, FinishReason::Stop));
                continue;
            }
            if l.output.len() >= req.max_tokens {
                let at = l.request;
                outputs[at] = Some(l.finish(req, FinishReason::Length));
                continue;
            }
            l.next_input = vec![token];
            still_live.push(l);
        }
        live = still_live;
        first_step = false;
    }
    Ok(outputs.into_iter().flatten().collect())
}
