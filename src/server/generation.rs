//! The request path shared by chat and text completions, typed in stages:
//! parsed body → [`validate`] (limits, routing, adapters) → [`Prepared`] → submitted to the
//! engine → streamed (SSE) or collected into one response.

use super::errors::ApiError;
use super::gate_report::GateTally;
use super::openai::{CommonParams, GateUse, Routing, Scored, Usage, Weighted};
use super::ServerState;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use loramux_router::{Choice, RoutePlan};
use loramux_runtime::engine::{EngineEvent, EngineRequest, SubmitError};
use loramux_runtime::generate::FinishReason;
use loramux_runtime::{
    Adapter, AdapterId, LogprobRequest, SamplingParams, TokenLogprob, TokenStream,
};
use serde_json::json;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedReceiver;

/// Most choices (`n`) one request may ask for: each is a sequence in the engine's batch.
const MAX_CHOICES: usize = 16;

/// Which endpoint shapes the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Text,
}

/// A validated request, ready for the engine.
pub struct Prepared {
    kind: Kind,
    model: String,
    prompt_ids: Vec<u32>,
    adapters: Vec<(Arc<Adapter>, f32)>,
    routing: Routing,
    /// Mixed per token by the engine's learned gate.
    gated: bool,
    sampling: SamplingParams,
    max_tokens: usize,
    stop: Vec<String>,
    stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage and no choices.
    include_usage: bool,
    /// Choices to generate (`n`).
    n: usize,
    logprobs: LogprobRequest,
    /// Text completions' `echo`: the answer starts with the prompt.
    echo: bool,
    /// The prompt as text, for `echo`.
    prompt_text: String,
}

pub fn validate(
    state: &ServerState,
    kind: Kind,
    mut params: CommonParams,
    prompt_ids: Vec<u32>,
    routing_text: &str,
) -> Result<Prepared, ApiError> {
    let limits = &state.limits;
    if prompt_ids.len() > limits.max_prompt_tokens {
        return Err(ApiError::TooLarge(format!(
            "the prompt has {} tokens; the limit is {}",
            prompt_ids.len(),
            limits.max_prompt_tokens
        )));
    }
    let (logprobs, echo) = super::logprobs::requested(kind, &mut params.other)?;
    super::unsupported::check(&params.other)?;
    if echo && params.stream {
        return Err(ApiError::UnsupportedParameter {
            field: "echo".into(),
            reason: "echo is implemented for non-streamed responses only".into(),
        });
    }
    let include_usage = match (&params.stream_options, params.stream) {
        (Some(_), false) => {
            return Err(ApiError::InvalidRequest(
                "`stream_options` is only allowed with `stream: true`".into(),
            ))
        }
        (Some(o), true) => o.include_usage,
        (None, _) => false,
    };
    let n = params.n.unwrap_or(1);
    if n == 0 || n > MAX_CHOICES {
        return Err(ApiError::InvalidRequest(format!(
            "n must be between 1 and {MAX_CHOICES}"
        )));
    }
    let max_tokens = params
        .max_completion_tokens
        .or(params.max_tokens)
        .unwrap_or(limits.default_max_tokens);
    if max_tokens > limits.max_tokens {
        return Err(ApiError::InvalidRequest(format!(
            "max_tokens {max_tokens} is above the limit of {}",
            limits.max_tokens
        )));
    }
    let sampling = SamplingParams {
        temperature: params.temperature.unwrap_or(0.7),
        top_p: params.top_p.unwrap_or(1.0),
        top_k: params.top_k.unwrap_or(0),
        repetition_penalty: params.repetition_penalty.unwrap_or(1.0),
        seed: params.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        }),
    };
    sampling
        .validate()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let resolved = resolve_routing(state, &params.model, params.adapters, routing_text)?;
    let cfg = state.base.model.config();
    let mut adapters = Vec::with_capacity(resolved.adapters.len());
    for (id, weight) in resolved.adapters {
        let entry = state
            .catalog
            .get(id.as_str())
            .ok_or_else(|| ApiError::UnknownModel(id.to_string()))?;
        let adapter = state
            .adapters
            .get_or_load(&entry.id, &entry.dir, cfg)
            .map_err(|e| ApiError::Internal(format!("adapter {id}: {e}")))?;
        adapters.push((adapter, weight));
    }
    let routing = resolved.routing;
    for w in &routing.weights {
        state.metrics.routed(&w.id);
    }
    Ok(Prepared {
        kind,
        model: params.model,
        prompt_ids,
        adapters,
        gated: resolved.auto && state.gate_top_k.is_some(),
        routing,
        sampling,
        max_tokens,
        stop: params.stop.map(|s| s.into_vec()).unwrap_or_default(),
        stream: params.stream,
        include_usage,
        n,
        logprobs,
        echo,
        prompt_text: if echo {
            routing_text.to_string()
        } else {
            String::new()
        },
    })
}

/// The routing decision alone, for `/v1/route`.
pub fn explain(
    state: &ServerState,
    model: &str,
    explicit: Option<Vec<super::openai::AdapterChoice>>,
    text: &str,
) -> Result<Routing, ApiError> {
    Ok(resolve_routing(state, model, explicit, text)?.routing)
}

/// A request's routing: the adapters it runs with and what the response says of them.
struct Resolved {
    adapters: Vec<(AdapterId, f32)>,
    routing: Routing,
    /// Retrieved for `auto`: the engine's learned gate may mix these per token.
    auto: bool,
}

/// Translates the request's `model` and `adapters` into the catalog's choice and its plan
/// into the response's routing object; every rule about the plan lives in the catalog's
/// resolve (the router's, for the registry).
fn resolve_routing(
    state: &ServerState,
    model: &str,
    explicit: Option<Vec<super::openai::AdapterChoice>>,
    text: &str,
) -> Result<Resolved, ApiError> {
    let adapter_id =
        |id: &str| AdapterId::new(id).map_err(|_| ApiError::UnknownModel(id.to_string()));
    let choice = match (explicit, model) {
        (Some(list), _) => Choice::Weighted(
            list.into_iter()
                .map(|a| Ok((adapter_id(&a.id)?, a.weight)))
                .collect::<Result<_, ApiError>>()?,
        ),
        (None, "") => {
            return Err(ApiError::InvalidRequest(
                "`model` is empty: use \"auto\", \"base\" or an adapter id".into(),
            ))
        }
        (None, "auto") => Choice::Auto,
        (None, "base") => Choice::Base,
        (None, name) if name == state.base_name => Choice::Base,
        (None, id) => Choice::Named(adapter_id(id)?),
    };
    let plan = state
        .catalog
        .resolve(&choice, text)
        .map_err(super::catalog_error)?;
    let weighted = |list: &[(AdapterId, f32)]| {
        list.iter()
            .map(|(id, w)| Weighted {
                id: id.to_string(),
                weight: *w,
            })
            .collect()
    };
    let routing = |mode, candidates, adapters: &[(AdapterId, f32)]| Routing {
        mode,
        candidates,
        weights: weighted(adapters),
        gate: None,
        gate_weights: None,
    };
    Ok(match plan {
        RoutePlan::Base => Resolved {
            adapters: vec![],
            routing: routing("base", vec![], &[]),
            auto: false,
        },
        RoutePlan::Fixed { adapters } => {
            let mode = match choice {
                Choice::Weighted(_) => "mixture",
                _ => "adapter",
            };
            Resolved {
                routing: routing(mode, vec![], &adapters),
                adapters,
                auto: false,
            }
        }
        RoutePlan::Auto { candidates, .. } => {
            let scored = candidates
                .iter()
                .map(|c| Scored {
                    id: c.id.to_string(),
                    score: c.similarity,
                })
                .collect();
            let adapters: Vec<(AdapterId, f32)> =
                candidates.into_iter().map(|c| (c.id, c.prior)).collect();
            Resolved {
                routing: routing("auto", scored, &adapters),
                adapters,
                auto: true,
            }
        }
    })
}

struct Run {
    rx: UnboundedReceiver<EngineEvent>,
    /// The response's routing; `gate_weights` is filled in from `gate` at the end.
    routing: Routing,
    gate: GateTally,
    detok: TokenStream,
    stop: Vec<String>,
    text: String,
    started: Instant,
    first_token: Option<Instant>,
    prompt_tokens: usize,
    /// Tokens the engine sent so far (the usage when a stop string ends the run).
    completion_tokens: usize,
    /// Log-probabilities of the generated tokens (when asked for), and how many of them a
    /// stream has sent.
    logprobs: Vec<TokenLogprob>,
    streamed_logprobs: usize,
    /// Characters of `text` a stream has sent (completions' `text_offset`).
    streamed_chars: usize,
    /// Log-probabilities of the prompt's tokens after the first (`echo`).
    prompt_logprobs: Vec<TokenLogprob>,
}

/// What one engine event means for the client.
enum Step {
    Text(String),
    /// The run is over: `text` is the last visible output (before the stop string, when
    /// one matched) and `reason` the engine's own or `stop` for a stop string.
    Done {
        text: String,
        reason: &'static str,
        usage: Usage,
    },
    Failed(ApiError),
}

impl Run {
    /// The next piece of visible output; stop strings end the run (the engine sees the
    /// receiver dropped and frees the sequence).
    async fn next(&mut self, state: &ServerState) -> Step {
        loop {
            let Some(event) = self.rx.recv().await else {
                return Step::Failed(ApiError::Internal(
                    "the engine dropped the request without finishing it".into(),
                ));
            };
            match event {
                // `admitted` read it before the response began.
                EngineEvent::Started { .. } => continue,
                EngineEvent::Gate(weights) => {
                    self.gate.gate(weights);
                    continue;
                }
                EngineEvent::Logprob(lp) => {
                    self.logprobs.push(lp);
                    continue;
                }
                EngineEvent::PromptLogprobs(lps) => {
                    self.prompt_logprobs.extend(lps);
                    continue;
                }
                EngineEvent::Token(t) => {
                    self.gate.token(t);
                    self.completion_tokens += 1;
                    let now = Instant::now();
                    match self.first_token {
                        None => state.metrics.ttft(now - self.started),
                        Some(prev) => state.metrics.inter_token(now - prev),
                    }
                    self.first_token = Some(now);
                    state.metrics.tokens(1);
                    let piece = match self.detok.push(t) {
                        Ok(Some(p)) => p,
                        Ok(None) => continue,
                        Err(e) => return Step::Failed(ApiError::Internal(e.to_string())),
                    };
                    if let Some(cut) = self.stop_cut(&piece) {
                        // Dropping the receiver is what frees the sequence in the engine.
                        self.rx.close();
                        // The token that completed the stop string is not part of the
                        // answer, nor is its log-probability.
                        if self.logprobs.len() == self.completion_tokens {
                            self.logprobs.pop();
                        }
                        self.text.push_str(&cut);
                        return Step::Done {
                            text: cut,
                            reason: "stop",
                            usage: self.usage(self.completion_tokens),
                        };
                    }
                    self.text.push_str(&piece);
                    return Step::Text(piece);
                }
                EngineEvent::Finished {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    let reason = match reason {
                        FinishReason::Stop => "stop",
                        FinishReason::Length => "length",
                    };
                    self.prompt_tokens = prompt_tokens;
                    let text = match self.detok.finish() {
                        Ok(rest) => rest.unwrap_or_default(),
                        Err(e) => return Step::Failed(ApiError::Internal(e.to_string())),
                    };
                    self.text.push_str(&text);
                    return Step::Done {
                        text,
                        reason,
                        usage: self.usage(completion_tokens),
                    };
                }
                EngineEvent::Failed(why) => return Step::Failed(why.into()),
            }
        }
    }

    /// The engine admitted the request: when its learned gate mixes this sequence, the
    /// routing says so, and which adapters it scores. Nothing before this names a gate.
    fn started(&mut self, gate_scored: Option<Vec<bool>>, state: &ServerState) {
        let (Some(scored), Some(top_k)) = (gate_scored, state.gate_top_k) else {
            return;
        };
        let pick = |want: bool| {
            self.routing
                .weights
                .iter()
                .zip(&scored)
                .filter(|(_, &s)| s == want)
                .map(|(w, _)| w.id.clone())
                .collect()
        };
        self.routing.gate = Some(GateUse {
            kind: "learned",
            top_k,
            scored: pick(true),
            prior: pick(false),
        });
    }

    /// Waits until the engine admits the request (or refuses it), so a refusal is an HTTP
    /// error and the first streamed chunk already tells whether the gate mixes it.
    async fn admitted(&mut self, state: &ServerState) -> Result<(), ApiError> {
        loop {
            match self.rx.recv().await {
                Some(EngineEvent::Started { gate_scored }) => {
                    self.started(gate_scored, state);
                    return Ok(());
                }
                Some(EngineEvent::Failed(why)) => return Err(why.into()),
                Some(_) => continue,
                None => return Err(ApiError::Internal("the engine dropped the request".into())),
            }
        }
    }

    /// The routing object with the gate's weights over the tokens generated so far.
    fn final_routing(&self, state: &ServerState) -> Routing {
        let mut routing = self.routing.clone();
        let ids: Vec<String> = routing.weights.iter().map(|w| w.id.clone()).collect();
        let tokenizer = &state.base.tokenizer;
        if routing.gate.is_none() {
            return routing;
        }
        routing.gate_weights = self.gate.report(&ids, |id| {
            tokenizer.decode(&[id], false).unwrap_or_default()
        });
        routing
    }

    fn usage(&self, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
        }
    }

    /// If `piece` completes a stop string, the part of `piece` before it.
    fn stop_cut(&self, piece: &str) -> Option<String> {
        // Runs for every token: without stop strings there is nothing to join or search.
        if self.stop.is_empty() {
            return None;
        }
        let joined = format!("{}{piece}", self.text);
        self.stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| joined.find(s.as_str()))
            .min()
            .map(|at| joined[self.text.len().min(at)..at].to_string())
    }
}

/// Submits one sequence of the request (with `seed`) and waits until the engine admits it.
async fn start_run(state: &Arc<ServerState>, p: &Prepared, seed: u64) -> Result<Run, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    state
        .engine
        .submit(EngineRequest {
            prompt_ids: p.prompt_ids.clone(),
            adapters: p.adapters.clone(),
            sampling: SamplingParams {
                seed,
                ..p.sampling.clone()
            },
            max_tokens: p.max_tokens,
            stop_ids: state.base.tokenizer.eos_ids(),
            gated: p.gated,
            logprobs: p.logprobs,
            events: tx,
        })
        .map_err(|e| match e {
            SubmitError::QueueFull => ApiError::Overloaded,
            SubmitError::Stopped => ApiError::Internal("engine stopped".into()),
        })?;
    let mut run = Run {
        rx,
        routing: p.routing.clone(),
        gate: GateTally::default(),
        detok: state.base.tokenizer.stream(true),
        stop: p.stop.clone(),
        text: String::new(),
        started: Instant::now(),
        first_token: None,
        prompt_tokens: p.prompt_ids.len(),
        completion_tokens: 0,
        logprobs: Vec::new(),
        streamed_logprobs: 0,
        streamed_chars: 0,
        prompt_logprobs: Vec::new(),
    };
    run.admitted(state).await?;
    Ok(run)
}

pub async fn respond(state: Arc<ServerState>, p: Prepared) -> Result<HttpResponse, ApiError> {
    // `n` choices are `n` sequences in the engine's batch, seeds `seed, seed + 1, ...`; all
    // are admitted (or the request fails) before the response begins.
    let mut runs = Vec::with_capacity(p.n);
    for i in 0..p.n {
        runs.push(start_run(&state, &p, p.sampling.seed.wrapping_add(i as u64)).await?);
    }
    let chunks = Chunks {
        kind: p.kind,
        id: format!(
            "{}-{:x}",
            if p.kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            request_id()
        ),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model: p.model.clone(),
    };
    if p.stream {
        Ok(stream(state, p, runs, chunks))
    } else {
        collect(&state, &p, runs, &chunks).await
    }
}

/// One JSON response with every choice.
async fn collect(
    state: &ServerState,
    p: &Prepared,
    mut runs: Vec<Run>,
    chunks: &Chunks,
) -> Result<HttpResponse, ApiError> {
    let tokenizer = &state.base.tokenizer;
    let mut choices = Vec::with_capacity(runs.len());
    let mut usage = Usage {
        prompt_tokens: p.prompt_ids.len(),
        completion_tokens: 0,
        total_tokens: 0,
    };
    let mut routing = None;
    for (index, run) in runs.iter_mut().enumerate() {
        let reason = loop {
            match run.next(state).await {
                Step::Text(_) => {}
                Step::Done {
                    reason, usage: u, ..
                } => {
                    usage.completion_tokens += u.completion_tokens;
                    break reason;
                }
                Step::Failed(why) => return Err(why),
            }
        };
        let text = std::mem::take(&mut run.text);
        choices.push(match p.kind {
            Kind::Chat => {
                let logprobs = p
                    .logprobs
                    .generated
                    .then(|| super::logprobs::chat(tokenizer, &run.logprobs));
                json!({"index": index, "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs, "finish_reason": reason})
            }
            Kind::Text => {
                let logprobs = p.logprobs.generated.then(|| {
                    if p.echo {
                        let scored: Vec<TokenLogprob> = run
                            .prompt_logprobs
                            .iter()
                            .chain(&run.logprobs)
                            .cloned()
                            .collect();
                        super::logprobs::completion(
                            tokenizer,
                            p.prompt_ids.first().copied(),
                            &scored,
                            0,
                        )
                    } else {
                        super::logprobs::completion(tokenizer, None, &run.logprobs, 0)
                    }
                });
                let text = if p.echo {
                    format!("{}{text}", p.prompt_text)
                } else {
                    text
                };
                json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason})
            }
        });
        // The routing (and gate weights) of the first choice: every choice shares the
        // routing decision; the gate's per-token weights are those of choice 0.
        routing.get_or_insert_with(|| run.final_routing(state));
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    let object = if p.kind == Kind::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": chunks.id, "object": object, "created": chunks.created, "model": chunks.model,
        "choices": choices, "usage": usage, "routing": routing,
    })))
}

/// What a stream still has to send.
struct Streaming {
    state: Arc<ServerState>,
    /// One per choice, `None` once it finished.
    runs: Vec<Option<Run>>,
    pending: Option<Bytes>,
    usage: Usage,
    over: bool,
}

/// A server-sent-event stream over every choice: chunks go out as each choice's tokens
/// arrive (OpenAI's `index` tells them apart), then the usage (when asked for) and `[DONE]`.
fn stream(state: Arc<ServerState>, p: Prepared, runs: Vec<Run>, chunks: Chunks) -> HttpResponse {
    let logprobs = p.logprobs.generated;
    let include_usage = p.include_usage;
    let mut first = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        first.extend_from_slice(&chunks.piece(index, Some(""), None, Some(&run.routing), None));
    }
    let start = Streaming {
        state,
        pending: Some(Bytes::from(first)),
        usage: Usage {
            prompt_tokens: p.prompt_ids.len(),
            completion_tokens: 0,
            total_tokens: 0,
        },
        runs: runs.into_iter().map(Some).collect(),
        over: false,
    };
    let body = futures_util::stream::unfold(start, move |mut s| {
        let chunks = chunks.clone();
        async move {
            if let Some(bytes) = s.pending.take() {
                return Some((Ok::<Bytes, actix_web::Error>(bytes), s));
            }
            if s.over {
                return None;
            }
            if s.runs.iter().all(Option::is_none) {
                s.over = true;
                let mut tail = Vec::new();
                if include_usage {
                    s.usage.total_tokens = s.usage.prompt_tokens + s.usage.completion_tokens;
                    tail.extend_from_slice(&chunks.usage(&s.usage));
                }
                tail.extend_from_slice(b"data: [DONE]\n\n");
                return Some((Ok(Bytes::from(tail)), s));
            }
            // Any choice's next event; the others' futures are dropped, which loses
            // nothing: `Run::next` only awaits the (cancel-safe) channel.
            let (index, step) = {
                let state: &ServerState = &s.state;
                let live = s.runs.iter_mut().enumerate().filter_map(|(index, run)| {
                    let run = run.as_mut()?;
                    Some(Box::pin(async move { (index, run.next(state).await) }))
                });
                futures_util::future::select_all(live).await.0
            };
            let out = match step {
                Step::Text(t) => {
                    let run = s.runs[index].as_mut().expect("live run");
                    let lp = logprobs.then(|| chunks.logprobs(&s.state, run));
                    run.streamed_chars += t.chars().count();
                    chunks.piece(index, Some(&t), None, None, lp)
                }
                Step::Done {
                    text,
                    reason,
                    usage,
                } => {
                    let mut run = s.runs[index].take()?;
                    s.usage.completion_tokens += usage.completion_tokens;
                    let routing = run.final_routing(&s.state);
                    let lp = logprobs.then(|| chunks.logprobs(&s.state, &mut run));
                    let mut all = Vec::new();
                    if !text.is_empty() || lp.is_some() {
                        all.extend_from_slice(&chunks.piece(index, Some(&text), None, None, lp));
                    }
                    all.extend_from_slice(&chunks.piece(
                        index,
                        None,
                        Some(reason),
                        Some(&routing),
                        None,
                    ));
                    Bytes::from(all)
                }
                Step::Failed(why) => {
                    // The status is sent already: the error is the stream's last event, and
                    // the other choices end with it (dropping their runs cancels them).
                    s.runs.clear();
                    s.over = true;
                    let err =
                        json!({"error": {"code": why.code(), "message": why.client_message()}});
                    Bytes::from(format!("data: {err}\n\ndata: [DONE]\n\n"))
                }
            };
            Some((Ok(out), s))
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body)
}

/// The fields every chunk of one response shares, and the chunk shapes.
#[derive(Clone)]
struct Chunks {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

impl Chunks {
    fn object(&self) -> &'static str {
        if self.kind == Kind::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        }
    }

    /// One choice's chunk: a piece of text, or its end (`finish`); the first and last chunk
    /// of a choice carry the routing.
    fn piece(
        &self,
        index: usize,
        text: Option<&str>,
        finish: Option<&str>,
        routing: Option<&Routing>,
        logprobs: Option<serde_json::Value>,
    ) -> Bytes {
        let mut choice = match self.kind {
            Kind::Chat => {
                let delta = match (text, routing) {
                    (Some(t), Some(_)) => json!({"role": "assistant", "content": t}),
                    (Some(t), None) => json!({"content": t}),
                    (None, _) => json!({}),
                };
                json!({"index": index, "delta": delta, "finish_reason": finish})
            }
            Kind::Text => {
                json!({"index": index, "text": text.unwrap_or(""), "finish_reason": finish})
            }
        };
        if let Some(lp) = logprobs {
            choice["logprobs"] = lp;
        }
        let mut v = json!({"id": self.id, "object": self.object(), "created": self.created,
            "model": self.model, "choices": [choice]});
        if let Some(r) = routing {
            v["routing"] = json!(r);
        }
        Bytes::from(format!("data: {v}\n\n"))
    }

    /// The chunk `stream_options.include_usage` asks for: the usage, and no choices.
    fn usage(&self, usage: &Usage) -> Bytes {
        let v = json!({"id": self.id, "object": self.object(), "created": self.created,
            "model": self.model, "choices": [], "usage": usage});
        Bytes::from(format!("data: {v}\n\n"))
    }

    /// The log-probabilities of the tokens `run` produced since its last chunk.
    fn logprobs(&self, state: &ServerState, run: &mut Run) -> serde_json::Value {
        let fresh = &run.logprobs[run.streamed_logprobs.min(run.logprobs.len())..];
        run.streamed_logprobs = run.logprobs.len();
        let tokenizer = &state.base.tokenizer;
        match self.kind {
            Kind::Chat => super::logprobs::chat(tokenizer, fresh),
            Kind::Text => super::logprobs::completion(tokenizer, None, fresh, run.streamed_chars),
        }
    }
}

/// A process-unique id for responses and staging folders.
pub fn request_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
}
