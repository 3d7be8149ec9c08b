//! `Engine`: the actor that owns the batch loop. Continuous batching: sequences join between
//! steps, prefill chunks and decode tokens share a step, finished or cancelled sequences
//! leave at once and give back their adapter leases and KV caches.
//!
//! The handle is cheap to clone; requests go through a bounded queue (`submit` fails fast
//! when it is full); each request streams [`EngineEvent`]s back on its own channel, and
//! dropping that channel's receiver cancels the sequence.

mod admission;
mod failure;
mod gate_trace;
mod handle;
mod metrics;
mod scheduler;
mod state;
mod worker;

pub use admission::{plan_admissions, AdmissionLimits, BankView, Decision, Waiter};
pub use failure::{EngineFailure, FailureKind};
pub use gate_trace::TokenGateWeights;
pub use handle::{EngineHandle, SubmitError};
pub use metrics::{EngineMetrics, LoraRequests, MetricsSnapshot};
pub use scheduler::{Scheduler, SeqPhase, StepItem};
pub use state::{EngineState, StepReport};

use crate::generate::FinishReason;
use crate::{Adapter, LogprobRequest, SamplingParams, TokenLogprob};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// Knobs of the batch loop. `Default` suits the 135M default model on 2 cores.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Requests waiting to start; past it `submit` fails with `SubmitError::QueueFull`.
    pub queue_capacity: usize,
    /// Sequences in one step at most.
    pub max_running: usize,
    /// Prompt tokens prefilled per step, across all sequences (chunked prefill).
    pub prefill_chunk: usize,
    /// Steps a request may wait for bank slots while younger requests pass it; after that
    /// nothing behind it starts until it has (see the admission planner).
    pub max_wait_steps: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            max_running: 32,
            prefill_chunk: 256,
            max_wait_steps: 32,
        }
    }
}

/// One generation request for the engine.
pub struct EngineRequest {
    pub prompt_ids: Vec<u32>,
    /// Adapters with their mixing weights (empty: the base model).
    pub adapters: Vec<(Arc<Adapter>, f32)>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop_ids: Vec<u32>,
    /// Mix `adapters` per token with the engine's learned gate (when it has one) instead of
    /// with the fixed weights: for `auto` routing; explicit choices keep their weights.
    pub gated: bool,
    /// Log-probabilities to report (none by default).
    pub logprobs: LogprobRequest,
    pub events: UnboundedSender<EngineEvent>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The sequence was admitted: its adapters are resident and prefill begins.
    /// `gate_scored` is `Some` only when the learned gate mixes this sequence: per adapter
    /// of the request (in its order), whether the gate scores it (`false`: the gate does not
    /// know it and it keeps its fixed weight).
    Started {
        gate_scored: Option<Vec<bool>>,
    },
    /// For a `gated` request: the gate's weights in the step that produced the next
    /// `Token`, sent just before it.
    Gate(TokenGateWeights),
    /// For a request that asked for `logprobs.generated`: the next `Token`'s
    /// log-probability, sent just before it.
    Logprob(TokenLogprob),
    /// For a request that asked for `logprobs.prompt`: the log-probabilities of prompt
    /// tokens (from the second on, in order), one event per prefill chunk.
    PromptLogprobs(Vec<TokenLogprob>),
    Token(u32),
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(EngineFailure),
}

/// Starts the engine thread over a loaded model and an adapter bank.
pub fn spawn(
    base: Arc<crate::BaseModel>,
    bank: crate::AdapterBank,
    config: EngineConfig,
) -> EngineHandle {
    spawn_with_gate(base, bank, config, None)
}

/// [`spawn`] with a learned gate for the requests that ask for one (`gated`); the gate hears
/// every lease's slot and adapter id.
pub fn spawn_with_gate(
    base: Arc<crate::BaseModel>,
    bank: crate::AdapterBank,
    config: EngineConfig,
    gate: Option<Arc<dyn crate::Gate>>,
) -> EngineHandle {
    let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_capacity);
    let metrics = Arc::new(EngineMetrics::default());
    let state = EngineState::new(base, bank, config, gate, metrics.clone());
    std::thread::Builder::new()
        .name("loramux-engine".into())
        .spawn(move || worker::run(state, rx))
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!("could not start the engine thread: {e}"));
    EngineHandle::new(tx, metrics)
}
