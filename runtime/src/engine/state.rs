//! `EngineState`: the engine as a plain struct — the waiting queue, the running sequences,
//! the bank and the gate — that one `step` call moves forward: admit what the admission
//! planner allows, drop cancelled sequences, run one batched forward, sample, stream, retire.
//! The worker thread only feeds it requests; tests drive it step by step without threads.

use super::admission::{plan_admissions, AdmissionLimits, BankView, Decision, Waiter};
use super::gate_trace::{TokenGateWeights, TracingGate};
use super::metrics::Occupancy;
use super::scheduler::{Scheduler, SeqPhase};
use super::{EngineConfig, EngineEvent, EngineFailure, EngineMetrics, EngineRequest};
use crate::bank::ResidencyKey;
use crate::generate::FinishReason;
use crate::logprobs::{token_logprob, TokenLogprob};
use crate::model::{LogitRows, SeqStep};
use crate::{
    AdapterBank, AdapterId, AdapterLease, BaseModel, Candidate, FixedGate, Gate, KvCache,
    RowSplitGate, RuntimeError, Sampler,
};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

struct Running {
    request: EngineRequest,
    /// Planned by the learned gate: a gated request whose gate knows at least one adapter.
    gated: bool,
    _leases: Vec<AdapterLease>,
    candidates: Vec<Candidate>,
    cache: KvCache,
    sampler: Sampler,
    history: Vec<u32>,
    phase: SeqPhase,
    last: [u32; 1],
    generated: usize,
}

struct Waiting {
    request: EngineRequest,
    keys: Vec<ResidencyKey>,
    waited_steps: usize,
}

pub struct EngineState {
    base: Arc<BaseModel>,
    bank: AdapterBank,
    config: EngineConfig,
    scheduler: Scheduler,
    /// The learned gate for `gated` requests, if the engine has one.
    gate: Option<Arc<dyn Gate>>,
    metrics: Arc<EngineMetrics>,
    waiting: VecDeque<Waiting>,
    running: Vec<Running>,
}

/// What one [`EngineState::step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Requests that started this step.
    pub admitted: usize,
    /// Prompt tokens prefilled and tokens generated.
    pub prompt_tokens: usize,
    pub generated: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Continue,
    Finished,
    Cancelled,
}

enum Admission {
    /// With, for a gated sequence, which of its adapters the gate scores.
    Admitted(Box<Running>, Option<Vec<bool>>),
    /// A slot the planner counted on is pinned after all (by a lease held outside the
    /// engine): try again next step.
    Wait(EngineRequest),
    Refused,
}

impl EngineState {
    pub fn new(
        base: Arc<BaseModel>,
        bank: AdapterBank,
        config: EngineConfig,
        gate: Option<Arc<dyn Gate>>,
        metrics: Arc<EngineMetrics>,
    ) -> Self {
        // Each running sequence owns a cache that grows up to the model's context.
        let kv_capacity = config.max_running * base.model.config().max_position;
        metrics.started(kv_capacity, bank.capacity());
        Self {
            scheduler: Scheduler::new(&config),
            gate,
            base,
            bank,
            config,
            metrics,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    /// Queues a request. One that could never start (empty prompt, too long for the
    /// context, invalid sampling, a mixture larger than the bank) is refused at once with a
    /// request fault instead of waiting for its turn.
    pub fn push(&mut self, request: EngineRequest) {
        self.metrics.dequeued();
        if let Err(why) = self.check(&request) {
            let _ = request.events.send(EngineEvent::Failed(why));
            self.metrics.failed();
            return;
        }
        let keys = request
            .adapters
            .iter()
            .map(|(adapter, _)| ResidencyKey::of(adapter))
            .collect();
        self.waiting.push_back(Waiting {
            request,
            keys,
            waited_steps: 0,
        });
        self.publish();
    }

    /// Tells the metrics what runs and waits now, with their adapters' catalog ids.
    fn publish(&self) {
        fn distinct<'a>(requests: impl Iterator<Item = &'a EngineRequest>) -> Vec<AdapterId> {
            let ids: BTreeSet<&AdapterId> = requests
                .flat_map(|r| r.adapters.iter().map(|(a, _)| a.id()))
                .collect();
            ids.into_iter().cloned().collect()
        }
        self.metrics.occupancy(Occupancy {
            running: self.running.len(),
            waiting: self.waiting.len(),
            kv_positions: self.running.iter().map(|r| r.cache.len()).sum(),
            running_adapters: distinct(self.running.iter().map(|r| &r.request)),
            waiting_adapters: distinct(self.waiting.iter().map(|w| &w.request)),
        });
    }

    /// Nothing waits and nothing runs: the worker may block for the next request.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn bank(&self) -> &AdapterBank {
        &self.bank
    }

    /// One engine step: admissions, then one batched forward over the running sequences
    /// (none when nothing runs). Requests still waiting afterwards have waited one step more.
    pub fn step(&mut self) -> StepReport {
        let started = std::time::Instant::now();
        let mut report = StepReport {
            admitted: self.admit(),
            ..StepReport::default()
        };
        let admitted = std::time::Instant::now();
        let before = self.running.len();
        // A dropped event receiver means the client went away: free its slot at once.
        self.running.retain(|r| !r.request.events.is_closed());
        for _ in self.running.len()..before {
            self.metrics.cancelled();
        }
        self.publish();
        if !self.running.is_empty() {
            (report.prompt_tokens, report.generated) = self.forward();
        }
        self.metrics.timed(admitted - started, admitted.elapsed());
        for w in &mut self.waiting {
            w.waited_steps += 1;
        }
        report
    }

    fn check(&self, request: &EngineRequest) -> Result<(), EngineFailure> {
        let cfg = self.base.model.config();
        if request.prompt_ids.is_empty() {
            return Err(EngineFailure::request("the prompt is empty"));
        }
        if request.prompt_ids.len() + request.max_tokens > cfg.max_position {
            return Err(EngineFailure::request(format!(
                "prompt ({} tokens) plus max_tokens ({}) exceeds the context of {}",
                request.prompt_ids.len(),
                request.max_tokens,
                cfg.max_position
            )));
        }
        request
            .sampling
            .validate()
            .map_err(|e| EngineFailure::request(e.to_string()))?;
        // Such a request could never start; waiting, or answering "every slot is pinned",
        // would send the client back to retry forever.
        if request.adapters.len() > self.bank.capacity() {
            return Err(EngineFailure::request(format!(
                "a mixture of {} adapters needs as many bank slots; this server has {}",
                request.adapters.len(),
                self.bank.capacity()
            )));
        }
        Ok(())
    }

    /// Starts the waiting requests the admission planner lets in; returns how many started.
    /// A planned start that fails gives its slots back, so the planner runs again.
    fn admit(&mut self) -> usize {
        let mut admitted = 0;
        loop {
            let (started, refused) = self.admit_planned();
            admitted += started;
            if refused == 0 {
                break;
            }
        }
        if self.running.is_empty() {
            // Nothing runs, so no slot will free: what still waits is held out by leases
            // outside the engine, and waiting would spin forever.
            for w in self.waiting.drain(..) {
                let _ = w
                    .request
                    .events
                    .send(EngineEvent::Failed(EngineFailure::capacity(format!(
                        "every one of the {} bank slots is pinned outside the engine",
                        self.bank.capacity()
                    ))));
                self.metrics.failed();
            }
        }
        admitted
    }

    /// One round of planning and starting: returns the requests started and those whose
    /// start failed.
    fn admit_planned(&mut self) -> (usize, usize) {
        let metrics = &self.metrics;
        self.waiting.retain(|w| {
            let open = !w.request.events.is_closed();
            if !open {
                metrics.cancelled();
            }
            open
        });
        let (pinned, idle) = self.bank.residency();
        let view = BankView {
            slots: self.bank.capacity(),
            pinned,
            idle,
        };
        let waiters: Vec<Waiter<ResidencyKey>> = self
            .waiting
            .iter()
            .map(|w| Waiter {
                adapters: &w.keys,
                waited_steps: w.waited_steps,
            })
            .collect();
        let limits = AdmissionLimits {
            max_running: self.config.max_running,
            max_wait_steps: self.config.max_wait_steps,
        };
        let plan = plan_admissions(limits, self.running.len(), &view, &waiters);
        let (mut admitted, mut refused) = (0, 0);
        let mut still_waiting = VecDeque::with_capacity(self.waiting.len());
        // Started sequences (their index in `running`) and what their `Started` says.
        let mut started = Vec::new();
        for (waiting, decision) in std::mem::take(&mut self.waiting).into_iter().zip(plan) {
            if !matches!(decision, Decision::Admit { .. }) {
                still_waiting.push_back(waiting);
                continue;
            }
            let Waiting {
                request,
                keys,
                waited_steps,
            } = waiting;
            match self.start(request, &keys) {
                Admission::Admitted(r, gate_scored) => {
                    started.push((self.running.len(), gate_scored));
                    self.running.push(*r);
                    admitted += 1;
                }
                Admission::Wait(request) => still_waiting.push_back(Waiting {
                    request,
                    keys,
                    waited_steps,
                }),
                Admission::Refused => {
                    self.metrics.failed();
                    refused += 1;
                }
            }
        }
        self.waiting = still_waiting;
        // Publish first, then announce: whoever sees `Started` also sees it in the metrics.
        self.publish();
        for (i, gate_scored) in started {
            let _ = self.running[i]
                .request
                .events
                .send(EngineEvent::Started { gate_scored });
        }
        (admitted, refused)
    }

    /// Leases the request's adapters (`keys`: their residency keys, in the same order),
    /// writing the missing ones into their slots, and makes it a running sequence. A lease
    /// failure fails this request only.
    fn start(&mut self, request: EngineRequest, keys: &[ResidencyKey]) -> Admission {
        let cfg = self.base.model.config();
        let n = request.adapters.len();
        let mut leases = Vec::with_capacity(n);
        let mut candidates = vec![
            Candidate {
                slot: 0,
                prior: 0.0
            };
            n
        ];
        let mut scored = vec![false; n];
        // Resident adapters are pinned before any load evicts an idle one, so a mixture
        // never evicts one of its own members (the order the planner assumed).
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| !self.bank.is_resident(&keys[i]));
        for i in order {
            let (adapter, weight) = &request.adapters[i];
            match self.bank.acquire(adapter) {
                Ok(lease) => {
                    // Every lease rebinds its slot (a slot may have held another adapter);
                    // the answer says whether the gate scores this adapter.
                    scored[i] = self
                        .gate
                        .as_ref()
                        .is_some_and(|g| g.bind(lease.slot(), adapter.id().as_str()));
                    candidates[i] = Candidate {
                        slot: lease.slot(),
                        prior: *weight,
                    };
                    leases.push(lease);
                }
                Err(RuntimeError::BankFull { .. }) if !self.running.is_empty() => {
                    return Admission::Wait(request);
                }
                Err(e) => {
                    let _ = request
                        .events
                        .send(EngineEvent::Failed(EngineFailure::from_lease(&e)));
                    return Admission::Refused;
                }
            }
        }
        self.metrics.set_bank(self.bank.stats());
        let prompt_len = request.prompt_ids.len();
        let gated = request.gated && scored.contains(&true);
        let gate_scored = gated.then_some(scored);
        Admission::Admitted(
            Box::new(Running {
                gated,
                sampler: Sampler::new(request.sampling.clone()),
                history: request.prompt_ids.clone(),
                cache: KvCache::new(cfg),
                request,
                _leases: leases,
                candidates,
                phase: SeqPhase::Prefill {
                    done: 0,
                    prompt_len,
                },
                last: [0],
                generated: 0,
            }),
            gate_scored,
        )
    }

    /// One batched forward over the running sequences; returns the prompt tokens prefilled
    /// and the tokens generated.
    fn forward(&mut self) -> (usize, usize) {
        let phases: Vec<SeqPhase> = self.running.iter().map(|r| r.phase).collect();
        let plan = self.scheduler.plan(&phases);
        let mut prompt_tokens = 0;
        // Per running sequence, the gate weights of the row that samples its next token.
        let mut traces: Vec<Option<TokenGateWeights>> = vec![None; self.running.len()];
        let result = {
            let has_gate = self.gate.is_some();
            let mut by_seq: Vec<Option<&mut Running>> = self.running.iter_mut().map(Some).collect();
            let mut steps = Vec::with_capacity(plan.len());
            // Per token row (the model's row order: sequence by sequence), whether the
            // learned gate plans it.
            let mut gated_rows = Vec::new();
            // The rows that produce a token of a gated sequence: their gate weights go to
            // the client with the token.
            let mut traced_rows = Vec::new();
            let mut traced_seqs = Vec::new();
            let mut row = 0;
            for item in &plan {
                let Some(r) = by_seq[item.seq].take() else {
                    continue;
                };
                let gated = r.gated;
                let Running {
                    request,
                    cache,
                    candidates,
                    last,
                    ..
                } = r;
                let candidates: &[Candidate] = candidates;
                let tokens: &[u32] = match r.phase {
                    SeqPhase::Prefill { .. } => {
                        prompt_tokens += item.len;
                        &request.prompt_ids[item.start..item.start + item.len]
                    }
                    SeqPhase::Decode => &last[..],
                };
                if has_gate {
                    gated_rows.extend(std::iter::repeat_n(gated, tokens.len()));
                }
                row += tokens.len();
                if gated && item.sample && request.max_tokens > 0 {
                    traced_rows.push((row - 1, candidates));
                    traced_seqs.push(item.seq);
                }
                let prompt_logprobs =
                    request.logprobs.prompt && matches!(r.phase, SeqPhase::Prefill { .. });
                steps.push(SeqStep {
                    tokens,
                    cache,
                    candidates,
                    logits: if prompt_logprobs {
                        LogitRows::All
                    } else if item.sample {
                        LogitRows::Last
                    } else {
                        LogitRows::None
                    },
                });
            }
            match &self.gate {
                Some(gate) => {
                    let split = RowSplitGate {
                        gated: gate.as_ref(),
                        rows: &gated_rows,
                    };
                    let layers = self.base.model.config().num_layers;
                    let tracing = TracingGate::new(&split, layers, traced_rows);
                    let logits = self.base.model.forward(&mut steps, &self.bank, &tracing);
                    for (seq, weights) in traced_seqs.into_iter().zip(tracing.finish()) {
                        traces[seq] = Some(weights);
                    }
                    logits
                }
                None => self.base.model.forward(&mut steps, &self.bank, &FixedGate),
            }
        };
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("forward failed: {e}");
                for r in self.running.drain(..) {
                    let _ = r
                        .request
                        .events
                        .send(EngineEvent::Failed(EngineFailure::internal(format!(
                            "forward failed: {e}"
                        ))));
                    self.metrics.failed();
                }
                self.publish();
                return (prompt_tokens, 0);
            }
        };
        let mut generated = 0;
        let mut outcome = vec![Outcome::Continue; self.running.len()];
        let vocab = self.base.model.config().vocab_size;
        for (item, logits) in plan.iter().zip(logits) {
            let r = &mut self.running[item.seq];
            let wants = r.request.logprobs;
            if wants.prompt && matches!(r.phase, SeqPhase::Prefill { .. }) {
                // Row `i` of the chunk predicts the prompt token after it; the chunk's last
                // row predicts the next chunk's first token or, once the prompt is done,
                // the first generated one.
                let prompt = &r.request.prompt_ids;
                let scored: Vec<TokenLogprob> = logits
                    .chunks_exact(vocab)
                    .enumerate()
                    .filter_map(|(i, row)| {
                        let target = *prompt.get(item.start + i + 1)?;
                        Some(token_logprob(row, target, wants.top))
                    })
                    .collect();
                if r.request
                    .events
                    .send(EngineEvent::PromptLogprobs(scored))
                    .is_err()
                {
                    outcome[item.seq] = Outcome::Cancelled;
                    continue;
                }
            }
            // The row this step samples from: the block's last.
            let logits = &logits[logits.len().saturating_sub(vocab)..];
            if let SeqPhase::Prefill { prompt_len, .. } = r.phase {
                r.phase = if item.sample {
                    SeqPhase::Decode
                } else {
                    SeqPhase::Prefill {
                        done: item.start + item.len,
                        prompt_len,
                    }
                };
            }
            if !item.sample {
                continue;
            }
            if r.request.max_tokens == 0 {
                outcome[item.seq] = Outcome::Finished;
                continue;
            }
            if let Some(weights) = traces[item.seq].take() {
                if r.request.events.send(EngineEvent::Gate(weights)).is_err() {
                    outcome[item.seq] = Outcome::Cancelled;
                    continue;
                }
            }
            let token = r.sampler.sample(logits, &r.history);
            if wants.generated {
                let scored = token_logprob(logits, token, wants.top);
                if r.request.events.send(EngineEvent::Logprob(scored)).is_err() {
                    outcome[item.seq] = Outcome::Cancelled;
                    continue;
                }
            }
            r.history.push(token);
            r.last = [token];
            r.generated += 1;
            generated += 1;
            if r.request.events.send(EngineEvent::Token(token)).is_err() {
                outcome[item.seq] = Outcome::Cancelled; // the client went away
                continue;
            }
            if r.request.stop_ids.contains(&token) || r.generated >= r.request.max_tokens {
                outcome[item.seq] = Outcome::Finished;
            }
        }
        self.metrics.step(prompt_tokens, generated);
        // Retire first, then announce: whoever sees `Finished` also sees the metrics updated.
        let mut retired = Vec::new();
        let mut i = 0;
        let metrics = &self.metrics;
        self.running.retain_mut(|r| {
            let o = outcome[i];
            i += 1;
            match o {
                Outcome::Continue => return true,
                Outcome::Cancelled => metrics.cancelled(),
                Outcome::Finished => {
                    let info = finish_info(r);
                    retired.push((
                        std::mem::replace(&mut r.request.events, closed_sender()),
                        info,
                    ));
                }
            }
            false
        });
        self.publish();
        for (events, (reason, prompt_len, completion_tokens)) in retired {
            self.metrics.finished();
            let _ = events.send(EngineEvent::Finished {
                reason,
                prompt_tokens: prompt_len,
                completion_tokens,
            });
        }
        (prompt_tokens, generated)
    }
}

/// Why a retiring sequence stopped, its prompt length and its generated token count.
fn finish_info(r: &Running) -> (FinishReason, usize, usize) {
    let reason = if r.generated > 0 && r.request.stop_ids.contains(&r.last[0]) {
        FinishReason::Stop
    } else {
        FinishReason::Length
    };
    (reason, r.request.prompt_ids.len(), r.generated)
}

/// A sender whose receiver is already gone: the placeholder left in a retired sequence.
fn closed_sender() -> tokio::sync::mpsc::UnboundedSender<EngineEvent> {
    tokio::sync::mpsc::unbounded_channel().0
}
