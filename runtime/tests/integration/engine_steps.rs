//! The engine's state driven step by step, without a thread: what the admission planner
//! decides is checked against what the engine does, on the default model with real PEFT
//! adapters in a one-slot bank.

use loramux_runtime::engine::{
    EngineConfig, EngineEvent, EngineMetrics, EngineRequest, EngineState, FailureKind,
};
use loramux_runtime::{Adapter, AdapterBank, BankConfig, BaseModel, SamplingParams};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::engine::{base, fixture_adapter};

fn one_slot_state(base: &Arc<BaseModel>, r_max: usize, max_wait_steps: usize) -> EngineState {
    let cfg = base.model.config();
    let bank = AdapterBank::new(cfg, BankConfig { slots: 1, r_max }).expect("bank");
    EngineState::new(
        base.clone(),
        bank,
        EngineConfig {
            max_wait_steps,
            ..EngineConfig::default()
        },
        None,
        Arc::new(EngineMetrics::default()),
    )
}

fn push(
    state: &mut EngineState,
    prompt: &[u32],
    adapter: Option<&Arc<Adapter>>,
    max_tokens: usize,
) -> UnboundedReceiver<EngineEvent> {
    let (tx, rx) = unbounded_channel();
    state.push(EngineRequest {
        prompt_ids: prompt.to_vec(),
        adapters: adapter.map(|a| (a.clone(), 1.0)).into_iter().collect(),
        sampling: SamplingParams::default(),
        max_tokens,
        stop_ids: vec![],
        gated: false,
        logprobs: Default::default(),
        events: tx,
    });
    rx
}

/// Whether the sequence has been told it started (events up to now, without blocking).
fn started(rx: &mut UnboundedReceiver<EngineEvent>, seen: &mut bool) -> bool {
    while let Ok(ev) = rx.try_recv() {
        if matches!(ev, EngineEvent::Started { .. }) {
            *seen = true;
        }
    }
    *seen
}

/// With its one slot pinned, a request for another adapter waits while requests for the
/// resident adapter keep arriving and passing it; once it has waited `max_wait_steps`, they
/// stop passing, the slot frees when the running ones finish, and it starts. Without the
/// bound it would wait forever: every step a new request pins the resident adapter again.
#[test]
fn a_waiter_starts_within_its_bound_while_resident_requests_keep_coming() {
    const WAIT: usize = 3;
    const RUN: usize = 4;
    let base = base();
    let resident = fixture_adapter(&base, "r8_qv");
    let other = fixture_adapter(&base, "r2_all7");
    let prompt = base
        .tokenizer
        .encode("Once upon a time", false)
        .expect("ids");
    let mut state = one_slot_state(&base, 16, WAIT);
    let mut stream = vec![push(&mut state, &prompt, Some(&resident), RUN)];
    assert_eq!(state.step().admitted, 1);
    let mut waiter = push(&mut state, &prompt, Some(&other), 1);
    let mut waiter_started = false;
    let mut passed = 0;
    let mut steps = 0;
    while !started(&mut waiter, &mut waiter_started) {
        stream.push(push(&mut state, &prompt, Some(&resident), RUN));
        let report = state.step();
        steps += 1;
        if !started(&mut waiter, &mut waiter_started) {
            passed += report.admitted;
        }
        assert!(
            steps <= WAIT + RUN + 2,
            "the waiter still waits after {steps} steps"
        );
    }
    assert!(
        passed >= WAIT,
        "resident requests passed the waiter {passed} times"
    );
    let mut failed = 0;
    while !state.is_idle() {
        state.step();
    }
    for mut rx in stream {
        while let Ok(ev) = rx.try_recv() {
            failed += usize::from(matches!(ev, EngineEvent::Failed(_)));
        }
    }
    assert_eq!(failed, 0);
}

/// An adapter the bank cannot hold (rank 16 over `r_max` 8) fails its own request, as the
/// client's fault; the request queued beside it for a good adapter runs to the end.
#[test]
fn a_load_failure_fails_only_its_own_request() {
    let base = base();
    let too_big = fixture_adapter(&base, "r16_rslora_regex");
    let good = fixture_adapter(&base, "r2_all7");
    let prompt = base.tokenizer.encode("Hello there", false).expect("ids");
    let mut state = one_slot_state(&base, 8, 32);
    let mut bad = push(&mut state, &prompt, Some(&too_big), 2);
    let mut fine = push(&mut state, &prompt, Some(&good), 2);
    while !state.is_idle() {
        state.step();
    }
    match bad.try_recv() {
        Ok(EngineEvent::Failed(why)) => assert_eq!(why.kind, FailureKind::Request, "{why}"),
        other => panic!("expected the oversized adapter to fail, got {other:?}"),
    }
    let mut tokens = 0;
    let mut finished = false;
    while let Ok(ev) = fine.try_recv() {
        tokens += usize::from(matches!(ev, EngineEvent::Token(_)));
        finished |= matches!(ev, EngineEvent::Finished { .. });
    }
    assert_eq!((tokens, finished), (2, true));
    assert_eq!(state.bank().resident().len(), 1);
}
