//! What the engine publishes for `/metrics`, step by step without a thread: the sequences
//! running and waiting, the adapters (catalog ids) of each, and the KV cache they hold.

use loramux_runtime::engine::{
    EngineConfig, EngineEvent, EngineMetrics, EngineRequest, EngineState,
};
use loramux_runtime::{Adapter, AdapterBank, AdapterId, BankConfig, SamplingParams};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::engine::{base, fixture_adapter};

fn push(
    state: &mut EngineState,
    prompt: &[u32],
    adapter: &Arc<Adapter>,
    max_tokens: usize,
) -> UnboundedReceiver<EngineEvent> {
    let (tx, rx) = unbounded_channel();
    state.push(EngineRequest {
        prompt_ids: prompt.to_vec(),
        adapters: vec![(adapter.clone(), 1.0)],
        sampling: SamplingParams::default(),
        max_tokens,
        stop_ids: vec![],
        gated: false,
        logprobs: Default::default(),
        events: tx,
    });
    rx
}

fn ids(names: &[&str]) -> Vec<AdapterId> {
    names
        .iter()
        .map(|n| AdapterId::new(n).expect("id"))
        .collect()
}

/// One sequence runs at a time: the second request waits, then runs once the first is
/// done; the snapshot says so at every step, by the adapters' ids.
#[test]
fn the_engine_publishes_what_runs_and_waits_by_adapter_id_and_its_kv_cache() {
    const TOKENS: usize = 3;
    let base = base();
    let first = fixture_adapter(&base, "r8_qv");
    let second = fixture_adapter(&base, "r2_all7");
    let cfg = base.model.config();
    let bank = AdapterBank::new(
        cfg,
        BankConfig {
            slots: 2,
            r_max: 16,
        },
    )
    .expect("bank");
    let metrics = Arc::new(EngineMetrics::default());
    let mut state = EngineState::new(
        base.clone(),
        bank,
        EngineConfig {
            max_running: 1,
            ..EngineConfig::default()
        },
        None,
        metrics.clone(),
    );
    let idle = metrics.snapshot();
    assert_eq!(
        (idle.running, idle.waiting, idle.kv_cache_usage),
        (0, 0, 0.0)
    );
    assert_eq!(idle.lora.max_lora, 2);
    assert!(idle.lora.running.is_empty() && idle.lora.waiting.is_empty());
    assert!(idle.lora.updated_unix_seconds > 1.6e9);

    let prompt = base
        .tokenizer
        .encode("Once upon a time", false)
        .expect("ids");
    let _a = push(&mut state, &prompt, &first, TOKENS);
    let _b = push(&mut state, &prompt, &second, TOKENS);
    let queued = metrics.snapshot();
    assert_eq!((queued.running, queued.waiting), (0, 2));
    assert!(queued.lora.running.is_empty());
    assert_eq!(queued.lora.waiting, ids(&["r2-all7", "r8-qv"]));

    state.step();
    let s = metrics.snapshot();
    assert_eq!((s.running, s.waiting), (1, 1));
    assert_eq!(s.lora.running, ids(&["r8-qv"]));
    assert_eq!(s.lora.waiting, ids(&["r2-all7"]));
    // The whole prompt is cached (the sampled token enters with the next step), out of
    // one sequence's context.
    assert_eq!(
        s.kv_cache_usage,
        prompt.len() as f64 / cfg.max_position as f64
    );
    assert!(s.lora.updated_unix_seconds >= queued.lora.updated_unix_seconds);

    let mut seen_second_alone = false;
    let mut steps = 1;
    while !state.is_idle() {
        state.step();
        steps += 1;
        assert!(steps < 4 * TOKENS, "the engine did not finish");
        let s = metrics.snapshot();
        if s.lora.running == ids(&["r2-all7"]) {
            assert_eq!((s.running, s.waiting), (1, 0));
            assert!(s.lora.waiting.is_empty());
            assert!(s.kv_cache_usage > 0.0);
            seen_second_alone = true;
        }
    }
    assert!(
        seen_second_alone,
        "the waiting request ran once the first was done"
    );
    let done = metrics.snapshot();
    assert_eq!(
        (done.running, done.waiting, done.kv_cache_usage),
        (0, 0, 0.0)
    );
    assert!(done.lora.running.is_empty() && done.lora.waiting.is_empty());
    assert_eq!(done.finished, 2);
}
