//! The engine (continuous batching, chunked prefill, cancellation, bounded queue) against
//! `generate_batch` on the same requests: with greedy sampling every sequence must produce
//! exactly the tokens it produces in a plain batched run, however it was scheduled.

use loramux_kernels::{MixPlan, SlotWeight};
use loramux_runtime::engine::{
    self, EngineConfig, EngineEvent, EngineHandle, EngineRequest, SubmitError,
};
use loramux_runtime::generate::{generate_batch, GenerationRequest};
use loramux_runtime::{
    Adapter, AdapterBank, AdapterId, BankConfig, BaseModel, Candidate, FixedGate, Gate, GateInput,
    ModelConfig, SamplingParams, WeightDtype,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// f32 weights: the engine's steps and the reference's one batch group rows differently, and
/// with quantized weights the row count picks the arithmetic (Q8_0 dot products below 8 rows,
/// a dense f32 GEMM from 8), so greedy tokens may part at a near-tie for reasons that have
/// nothing to do with scheduling. With f32 weights every path is the same math.
pub(crate) fn base() -> Arc<BaseModel> {
    let path = loramux_runtime::fetch::default_model_path().expect("default model fetched");
    Arc::new(BaseModel::load(&path, WeightDtype::F32).expect("loads"))
}

pub(crate) fn fixture_adapter(base: &BaseModel, name: &str) -> Arc<Adapter> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/adapters")
        .join(name);
    let id = AdapterId::new(&name.replace('_', "-")).expect("id");
    Arc::new(Adapter::load(id, &dir, base.model.config()).expect("adapter"))
}

/// Drains one sequence's events: its tokens, and whether it finished cleanly.
fn collect(mut rx: UnboundedReceiver<EngineEvent>) -> (Vec<u32>, Option<EngineEvent>) {
    let mut tokens = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            EngineEvent::Token(t) => tokens.push(t),
            EngineEvent::Started { .. }
            | EngineEvent::Gate(_)
            | EngineEvent::Logprob(_)
            | EngineEvent::PromptLogprobs(_) => {}
            done @ (EngineEvent::Finished { .. } | EngineEvent::Failed(_)) => {
                return (tokens, Some(done))
            }
        }
    }
    (tokens, None)
}

#[test]
fn engine_matches_plain_batched_generation() {
    let base = base();
    let adapters = [
        fixture_adapter(&base, "r8_qv"),
        fixture_adapter(&base, "r2_all7"),
    ];
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "Once upon a time, in a land far away, there lived",
        "In 2023, 17 + 25 =",
    ]
    .iter()
    .map(|p| base.tokenizer.encode(p, false).expect("encodes"))
    .collect();
    let mixes: Vec<Vec<(Arc<Adapter>, f32)>> = vec![
        vec![],
        vec![(adapters[0].clone(), 1.0)],
        vec![(adapters[0].clone(), 0.7), (adapters[1].clone(), 0.5)],
    ];
    let max_tokens = 12;

    // Reference: all rows in one plain batched run.
    let cfg = base.model.config();
    let mut bank = AdapterBank::new(
        cfg,
        BankConfig {
            slots: 4,
            r_max: 16,
        },
    )
    .expect("bank");
    let mut leases = Vec::new();
    let mut requests = Vec::new();
    for (p, mix) in prompts.iter().zip(&mixes) {
        let mut candidates = Vec::new();
        for (a, w) in mix {
            let lease = bank.acquire(a).expect("room");
            candidates.push(Candidate {
                slot: lease.slot(),
                prior: *w,
            });
            leases.push(lease);
        }
        requests.push(GenerationRequest {
            prompt_ids: p.clone(),
            candidates,
            sampling: SamplingParams::default(),
            max_tokens,
            stop_ids: vec![],
        });
    }
    let expected = generate_batch(&base.model, &bank, &FixedGate, &requests, &mut |_, _| {})
        .expect("reference run");
    drop(leases);

    // Engine: a tiny prefill budget forces chunked prompts that overlap other rows' decoding,
    // and the requests arrive one after another.
    let handle = engine::spawn(
        base.clone(),
        AdapterBank::new(
            cfg,
            BankConfig {
                slots: 2,
                r_max: 16,
            },
        )
        .expect("bank"),
        EngineConfig {
            prefill_chunk: 5,
            ..EngineConfig::default()
        },
    );
    let mut receivers = Vec::new();
    for (p, mix) in prompts.iter().zip(&mixes) {
        receivers.push(submit_greedy(&handle, p, mix, max_tokens));
        std::thread::sleep(Duration::from_millis(30));
    }
    for (i, rx) in receivers.into_iter().enumerate() {
        let (tokens, end) = collect(rx);
        assert_eq!(tokens, expected[i].output_ids, "row {i}");
        assert!(
            matches!(end, Some(EngineEvent::Finished { completion_tokens, .. }) if completion_tokens == max_tokens),
            "row {i}: {end:?}"
        );
    }
    let m = handle.metrics().snapshot();
    assert_eq!((m.finished, m.failed, m.running), (3, 0, 0));
    assert!(m.bank.loads >= 2, "both adapters were loaded: {:?}", m.bank);
}

#[test]
fn cancelled_and_invalid_requests_leave_at_once_and_a_full_queue_fails_fast() {
    let base = base();
    let cfg = base.model.config().clone();
    let handle = engine::spawn(
        base.clone(),
        AdapterBank::new(&cfg, BankConfig { slots: 1, r_max: 8 }).expect("bank"),
        EngineConfig {
            queue_capacity: 1,
            ..EngineConfig::default()
        },
    );
    let request = |max_tokens: usize, prompt: Vec<u32>| {
        let (tx, rx) = unbounded_channel();
        (
            EngineRequest {
                prompt_ids: prompt,
                adapters: vec![],
                sampling: SamplingParams::default(),
                max_tokens,
                stop_ids: vec![],
                gated: false,
                logprobs: Default::default(),
                events: tx,
            },
            rx,
        )
    };
    // A long generation whose client hangs up after the first tokens.
    let (long, mut rx) = request(4000, vec![504, 3575, 282]);
    handle.submit(long).expect("queued");
    let mut seen = 0;
    while seen < 3 {
        if let Some(EngineEvent::Token(_)) = rx.blocking_recv() {
            seen += 1;
        }
    }
    drop(rx);
    // An impossible request fails with a reason instead of stalling the loop.
    let (too_long, rx_bad) = request(cfg.max_position, vec![504; 10]);
    handle.submit(too_long).expect("queued");
    let (_, end) = collect(rx_bad);
    assert!(
        matches!(end, Some(EngineEvent::Failed(ref why)) if why.message.contains("context")),
        "{end:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while handle.metrics().snapshot().cancelled < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "cancellation was not noticed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(handle.metrics().snapshot().running, 0);

    // Queue of one: while the engine is busy, a burst of submissions must see QueueFull.
    let mut full = 0;
    let mut keep = Vec::new();
    for _ in 0..50 {
        let (r, rx) = request(64, vec![504, 3575]);
        match handle.submit(r) {
            Ok(()) => keep.push(rx),
            Err(SubmitError::QueueFull) => full += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(full > 0, "a bounded queue must refuse a burst");
}

/// Weights that depend only on the layer and the candidate's position: 0.8/0.2 in even
/// layers, 0.3/0.7 in odd ones, so the trace the engine reports can be predicted exactly.
struct LayerParity;

impl Gate for LayerParity {
    fn plan(&self, input: &GateInput<'_>) -> MixPlan {
        let mut plan = MixPlan::new();
        for cands in input.row_candidates {
            let split = if input.layer.is_multiple_of(2) {
                0.8
            } else {
                0.3
            };
            let row: Vec<SlotWeight> = cands
                .iter()
                .zip([split, 1.0 - split])
                .map(|(c, weight)| SlotWeight {
                    slot: c.slot,
                    weight,
                })
                .collect();
            plan.push_row(&row);
        }
        plan
    }
}

#[test]
fn gated_requests_hear_the_gates_weights_before_every_token() {
    let base = base();
    let cfg = base.model.config().clone();
    let adapters = [
        fixture_adapter(&base, "r8_qv"),
        fixture_adapter(&base, "r2_all7"),
    ];
    let handle = engine::spawn_with_gate(
        base.clone(),
        AdapterBank::new(
            &cfg,
            BankConfig {
                slots: 4,
                r_max: 16,
            },
        )
        .expect("bank"),
        EngineConfig::default(),
        Some(Arc::new(LayerParity)),
    );
    let submit = |gated: bool| {
        let (tx, rx) = unbounded_channel();
        handle
            .submit(EngineRequest {
                prompt_ids: base
                    .tokenizer
                    .encode("Once upon a time", false)
                    .expect("ids"),
                // Listed second-first: the trace follows the request's order, not the slots'.
                adapters: vec![(adapters[1].clone(), 0.5), (adapters[0].clone(), 0.5)],
                sampling: SamplingParams::default(),
                max_tokens: 6,
                stop_ids: vec![],
                gated,
                logprobs: Default::default(),
                events: tx,
            })
            .expect("queued");
        rx
    };
    let (gated, plain) = (submit(true), submit(false));
    let events = |mut rx: UnboundedReceiver<EngineEvent>| {
        let mut all = Vec::new();
        while let Some(ev) = rx.blocking_recv() {
            all.push(ev);
        }
        all
    };
    let gated = events(gated);
    assert_eq!(
        gated.first(),
        Some(&EngineEvent::Started {
            gate_scored: Some(vec![true, true])
        }),
        "the engine says the gate scores both adapters"
    );
    let tokens = gated
        .iter()
        .filter(|e| matches!(e, EngineEvent::Token(_)))
        .count();
    assert_eq!(tokens, 6);
    let mut expect_token = false;
    for ev in &gated {
        match ev {
            EngineEvent::Gate(w) => {
                assert!(!expect_token, "two gate reports without a token between");
                assert_eq!((w.layers, w.candidates), (cfg.num_layers, 2));
                for layer in 0..cfg.num_layers {
                    let want = if layer % 2 == 0 {
                        [0.8, 0.2]
                    } else {
                        [0.3, 0.7]
                    };
                    let got = w.layer(layer);
                    assert!(
                        (got[0] - want[0]).abs() < 1e-6 && (got[1] - want[1]).abs() < 1e-6,
                        "layer {layer}: {got:?}"
                    );
                }
                expect_token = true;
            }
            EngineEvent::Token(_) => {
                assert!(expect_token, "a gated token came without its gate weights");
                expect_token = false;
            }
            _ => {}
        }
    }
    let plain = events(plain);
    assert_eq!(
        plain.first(),
        Some(&EngineEvent::Started { gate_scored: None })
    );
    assert!(
        !plain.iter().any(|e| matches!(e, EngineEvent::Gate(_))),
        "a request with fixed weights got gate reports"
    );
    assert_eq!(
        plain
            .iter()
            .filter(|e| matches!(e, EngineEvent::Token(_)))
            .count(),
        6
    );
}

/// The engine on the device backend (here on `Device::Cpu`, the same code CUDA runs), with
/// the bank on the model's device: the greedy tokens of the host backend's plain batched
/// run, for rows with no adapter, one, and a mixture. f32 weights; the backends' logits
/// agree to ~1e-5, far inside the top-2 gaps of these prompts.
#[test]
fn engine_on_the_device_backend_matches_the_host_backend() {
    let host = base();
    let path = loramux_runtime::fetch::default_model_path().expect("default model fetched");
    let device = Arc::new(
        BaseModel::load_on(
            &path,
            WeightDtype::F32,
            &loramux_runtime::ModelBackend::Device(candle_core::Device::Cpu),
        )
        .expect("loads on the device backend"),
    );
    let adapters = [
        fixture_adapter(&host, "r8_qv"),
        fixture_adapter(&host, "r2_all7"),
    ];
    let mixes: Vec<Vec<(Arc<Adapter>, f32)>> = vec![
        vec![],
        vec![(adapters[1].clone(), 1.0)],
        vec![(adapters[0].clone(), 0.7), (adapters[1].clone(), 0.5)],
    ];
    let prompts: Vec<Vec<u32>> = ["The capital of France is", "Once upon a time", "17 + 25 ="]
        .iter()
        .map(|p| host.tokenizer.encode(p, false).expect("encodes"))
        .collect();
    let max_tokens = 8;
    let cfg = host.model.config();
    let bank_config = BankConfig {
        slots: 4,
        r_max: 16,
    };
    let mut bank = AdapterBank::new(cfg, bank_config).expect("bank");
    let mut leases = Vec::new();
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .zip(&mixes)
        .map(|(p, mix)| {
            let candidates = mix
                .iter()
                .map(|(a, w)| {
                    let lease = bank.acquire(a).expect("room");
                    let c = Candidate {
                        slot: lease.slot(),
                        prior: *w,
                    };
                    leases.push(lease);
                    c
                })
                .collect();
            GenerationRequest {
                prompt_ids: p.clone(),
                candidates,
                sampling: SamplingParams::default(),
                max_tokens,
                stop_ids: vec![],
            }
        })
        .collect();
    let expected = generate_batch(&host.model, &bank, &FixedGate, &requests, &mut |_, _| {})
        .expect("host run");

    let device_bank =
        AdapterBank::on_device(cfg, bank_config, &device.model.device()).expect("bank");
    let handle = engine::spawn(device, device_bank, EngineConfig::default());
    let receivers: Vec<_> = prompts
        .iter()
        .zip(&mixes)
        .map(|(p, mix)| submit_greedy(&handle, p, mix, max_tokens))
        .collect();
    for (i, rx) in receivers.into_iter().enumerate() {
        let (tokens, end) = collect(rx);
        assert_eq!(tokens, expected[i].output_ids, "row {i}");
        assert!(
            matches!(end, Some(EngineEvent::Finished { .. })),
            "row {i}: {end:?}"
        );
    }
}

/// Admission in the spirit of S-LoRA: with the one bank slot pinned by a running sequence,
/// a request for another adapter waits, and a request behind it for the resident adapter
/// (or for none) starts at once instead of queueing behind it; the waiter starts as soon
/// as the slot frees.
#[test]
fn a_request_waiting_for_a_slot_does_not_block_resident_adapters() {
    let base = base();
    let cfg = base.model.config().clone();
    let (resident, other) = (
        fixture_adapter(&base, "r8_qv"),
        fixture_adapter(&base, "r2_all7"),
    );
    let handle = one_slot_engine(&base, &cfg);
    let prompt = base
        .tokenizer
        .encode("Once upon a time", false)
        .expect("ids");
    let mut holder = submit_greedy(&handle, &prompt, &[(resident.clone(), 1.0)], 40);
    assert!(matches!(
        holder.blocking_recv(),
        Some(EngineEvent::Started { .. })
    ));
    let mut waiter = submit_greedy(&handle, &prompt, &[(other, 1.0)], 2);
    let behind = submit_greedy(&handle, &prompt, &[(resident, 1.0)], 2);
    let plain = submit_greedy(&handle, &prompt, &[], 2);
    let (behind_tokens, behind_end) = collect(behind);
    let (plain_tokens, _) = collect(plain);
    assert_eq!((behind_tokens.len(), plain_tokens.len()), (2, 2));
    assert!(matches!(behind_end, Some(EngineEvent::Finished { .. })));
    // Both finished while the slot was still pinned: the waiter has not started.
    assert!(
        waiter.try_recv().is_err(),
        "the waiter cannot have a slot yet"
    );
    let (holder_tokens, _) = collect(holder);
    assert_eq!(holder_tokens.len(), 40);
    let (waiter_tokens, waiter_end) = collect(waiter);
    assert_eq!(
        waiter_tokens.len(),
        2,
        "the waiter runs once the slot frees"
    );
    assert!(matches!(waiter_end, Some(EngineEvent::Finished { .. })));
    assert_eq!(handle.metrics().snapshot().failed, 0);
}

/// Fair prefill: while a 4,000-token prompt prefills, an 8-token request submitted after it
/// gets its first token within two engine steps of starting, long before the long prompt's
/// first token. The time to first token is printed (run with --nocapture to see it).
#[test]
fn a_long_prefill_does_not_hold_back_a_short_request() {
    let base = base();
    let cfg = base.model.config().clone();
    let handle = engine::spawn(
        base.clone(),
        AdapterBank::new(&cfg, BankConfig { slots: 1, r_max: 8 }).expect("bank"),
        EngineConfig::default(),
    );
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(400);
    let mut long_prompt = base.tokenizer.encode(&text, false).expect("ids");
    long_prompt.truncate(4000);
    assert_eq!(long_prompt.len(), 4000);
    let mut long = submit_greedy(&handle, &long_prompt, &[], 1);
    assert!(matches!(
        long.blocking_recv(),
        Some(EngineEvent::Started { .. })
    ));
    let short_prompt = base
        .tokenizer
        .encode("One two three four five six seven", false)
        .expect("ids");
    assert!(short_prompt.len() <= 8);
    let submitted = std::time::Instant::now();
    let mut short = submit_greedy(&handle, &short_prompt, &[], 1);
    assert!(matches!(
        short.blocking_recv(),
        Some(EngineEvent::Started { .. })
    ));
    let steps_at_start = handle.metrics().snapshot().steps;
    assert!(matches!(short.blocking_recv(), Some(EngineEvent::Token(_))));
    let ttft = submitted.elapsed();
    let steps = handle.metrics().snapshot().steps - steps_at_start;
    assert!(steps <= 2, "first token after {steps} steps");
    assert!(
        long.try_recv().is_err(),
        "the long prompt cannot have finished its prefill yet"
    );
    let (long_tokens, _) = collect(long);
    let long_done = submitted.elapsed();
    assert_eq!(long_tokens.len(), 1);
    println!(
        "8-token request beside a 4,000-token prefill: first token after {:.0} ms ({steps} \
         steps); the long prompt's first token after {:.1} s",
        ttft.as_secs_f64() * 1e3,
        long_done.as_secs_f64()
    );
}

/// Queues an ungated request with default (greedy) sampling; returns its event stream.
/// An engine whose bank has a single slot (rank up to 16).
fn one_slot_engine(base: &Arc<BaseModel>, cfg: &ModelConfig) -> EngineHandle {
    engine::spawn(
        base.clone(),
        AdapterBank::new(
            cfg,
            BankConfig {
                slots: 1,
                r_max: 16,
            },
        )
        .expect("bank"),
        EngineConfig::default(),
    )
}

fn submit_greedy(
    handle: &EngineHandle,
    prompt_ids: &[u32],
    adapters: &[(Arc<Adapter>, f32)],
    max_tokens: usize,
) -> UnboundedReceiver<EngineEvent> {
    let (tx, rx) = unbounded_channel();
    handle
        .submit(EngineRequest {
            prompt_ids: prompt_ids.to_vec(),
            adapters: adapters.to_vec(),
            sampling: SamplingParams::default(),
            max_tokens,
            stop_ids: vec![],
            gated: false,
            logprobs: Default::default(),
            events: tx,
        })
        .expect("queued");
    rx
}

/// A mixture with more adapters than the bank has slots can never start: it is refused as
/// the client's fault, naming both numbers, even with nothing else running (it used to be
/// told that every slot was pinned by running sequences, and to retry).
#[test]
fn a_mixture_larger_than_the_bank_is_refused_up_front() {
    let base = base();
    let cfg = base.model.config().clone();
    let handle = one_slot_engine(&base, &cfg);
    let prompt = base.tokenizer.encode("Hello", false).expect("ids");
    let two = [
        (fixture_adapter(&base, "r8_qv"), 0.5),
        (fixture_adapter(&base, "r2_all7"), 0.5),
    ];
    let mut events = submit_greedy(&handle, &prompt, &two, 2);
    match events.blocking_recv() {
        Some(EngineEvent::Failed(why)) => {
            assert_eq!(why.kind, loramux_runtime::engine::FailureKind::Request);
            assert!(
                why.message.contains("2 adapters") && why.message.contains("has 1"),
                "{}",
                why.message
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
