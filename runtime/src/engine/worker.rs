//! The engine thread: admits requests, runs one batched forward per step, samples, streams
//! tokens, and retires finished or cancelled sequences.

use super::gate_trace::{TokenGateWeights, TracingGate};
use super::scheduler::{Scheduler, SeqPhase};
use super::{EngineConfig, EngineEvent, EngineFailure, EngineMetrics, EngineRequest};
use crate::generate::FinishReason;
use crate::model::{LogitRows, SeqStep};
use crate::{
    AdapterBank, AdapterLease, BaseModel, Candidate, FixedGate, Gate, KvCache, RowSplitGate,
    RuntimeError, Sampler,
};
use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
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

pub(super) struct Worker {
    base: Arc<BaseModel>,
    bank: AdapterBank,
    config: EngineConfig,
    /// The learned gate for `gated` requests, if the engine has one.
    gate: Option<Arc<dyn Gate>>,
    rx: Receiver<EngineRequest>,
    metrics: Arc<EngineMetrics>,
    waiting: VecDeque<EngineRequest>,
    running: Vec<Running>,
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
    /// Every bank slot is pinned: try again once a sequence finishes.
    Wait(EngineRequest),
    Refused,
}

impl Worker {
    pub(super) fn new(
        base: Arc<BaseModel>,
        bank: AdapterBank,
        config: EngineConfig,
        gate: Option<Arc<dyn Gate>>,
        rx: Receiver<EngineRequest>,
        metrics: Arc<EngineMetrics>,
    ) -> Self {
        Self {
            gate,
            base,
            bank,
            config,
            rx,
            metrics,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    pub(super) fn run(mut self) {
        let scheduler = Scheduler::new(&self.config);
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match self.rx.recv() {
                    Ok(r) => self.enqueue(r),
                    Err(_) => return, // every handle dropped: shut down
                }
            }
            while let Ok(r) = self.rx.try_recv() {
                self.enqueue(r);
            }
            self.admit();
            let before = self.running.len();
            // A dropped event receiver means the client went away: free its slot at once.
            self.running.retain(|r| !r.request.events.is_closed());
            for _ in self.running.len()..before {
                self.metrics.cancelled();
            }
            self.metrics.set_running(self.running.len());
            if self.running.is_empty() {
                continue;
            }
            self.step(&scheduler);
        }
    }

    fn enqueue(&mut self, r: EngineRequest) {
        self.metrics.dequeued();
        self.waiting.push_back(r);
    }

    /// Admits waiting requests in arrival order while there is room. A request that waits
    /// for a bank slot does not block the ones behind it: those whose adapters are resident
    /// (or need none, or find a slot) start now. Waiters keep their order, so the oldest one
    /// takes the next slot that frees.
    fn admit(&mut self) {
        let mut still_waiting = VecDeque::new();
        while self.running.len() < self.config.max_running {
            let Some(request) = self.waiting.pop_front() else {
                break;
            };
            if request.events.is_closed() {
                self.metrics.cancelled();
                continue;
            }
            match self.prepare(request) {
                Admission::Admitted(r, gate_scored) => {
                    let _ = r.request.events.send(EngineEvent::Started { gate_scored });
                    self.running.push(*r);
                }
                Admission::Wait(request) => still_waiting.push_back(request),
                Admission::Refused => self.metrics.failed(),
            }
        }
        still_waiting.append(&mut self.waiting);
        self.waiting = still_waiting;
    }

    fn prepare(&mut self, request: EngineRequest) -> Admission {
        let cfg = self.base.model.config();
        let fail = |request: &EngineRequest, why: EngineFailure| {
            let _ = request.events.send(EngineEvent::Failed(why));
        };
        if request.prompt_ids.is_empty() {
            fail(&request, EngineFailure::request("the prompt is empty"));
            return Admission::Refused;
        }
        if request.prompt_ids.len() + request.max_tokens > cfg.max_position {
            fail(
                &request,
                EngineFailure::request(format!(
                    "prompt ({} tokens) plus max_tokens ({}) exceeds the context of {}",
                    request.prompt_ids.len(),
                    request.max_tokens,
                    cfg.max_position
                )),
            );
            return Admission::Refused;
        }
        if let Err(e) = request.sampling.validate() {
            fail(&request, EngineFailure::request(e.to_string()));
            return Admission::Refused;
        }
        // Checked before any slot is taken: such a request could never start, and waiting or
        // answering "every slot is pinned" would send the client back to retry forever.
        if request.adapters.len() > self.bank.capacity() {
            fail(
                &request,
                EngineFailure::request(format!(
                    "a mixture of {} adapters needs as many bank slots; this server has {}",
                    request.adapters.len(),
                    self.bank.capacity()
                )),
            );
            return Admission::Refused;
        }
        let mut leases = Vec::with_capacity(request.adapters.len());
        let mut candidates = Vec::with_capacity(request.adapters.len());
        let mut scored = Vec::with_capacity(request.adapters.len());
        for (adapter, weight) in &request.adapters {
            match self.bank.acquire(adapter) {
                Ok(lease) => {
                    // Every lease rebinds its slot (a slot may have held another adapter);
                    // the answer says whether the gate scores this adapter.
                    scored.push(
                        self.gate
                            .as_ref()
                            .is_some_and(|g| g.bind(lease.slot(), adapter.id().as_str())),
                    );
                    candidates.push(Candidate {
                        slot: lease.slot(),
                        prior: *weight,
                    });
                    leases.push(lease);
                }
                Err(RuntimeError::BankFull { .. }) if !self.running.is_empty() => {
                    return Admission::Wait(request);
                }
                Err(e) => {
                    fail(&request, EngineFailure::from_lease(&e));
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

    fn step(&mut self, scheduler: &Scheduler) {
        let phases: Vec<SeqPhase> = self.running.iter().map(|r| r.phase).collect();
        let plan = scheduler.plan(&phases);
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
                steps.push(SeqStep {
                    tokens,
                    cache,
                    candidates,
                    logits: if item.sample {
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
                return;
            }
        };
        let mut generated = 0;
        let mut outcome = vec![Outcome::Continue; self.running.len()];
        for (item, logits) in plan.iter().zip(logits) {
            let r = &mut self.running[item.seq];
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
            let token = r.sampler.sample(&logits, &r.history);
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
        self.metrics.set_running(self.running.len());
        for (events, (reason, prompt_tokens, completion_tokens)) in retired {
            self.metrics.finished();
            let _ = events.send(EngineEvent::Finished {
                reason,
                prompt_tokens,
                completion_tokens,
            });
        }
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
