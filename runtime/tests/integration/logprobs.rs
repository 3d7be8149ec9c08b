//! Log-probabilities through the engine against one plain forward over the whole text: the
//! engine prefills the prompt in chunks and samples step by step, so an off-by-one between a
//! logits row and the token it predicts, or a chunk boundary lost, shows as a different
//! number. The reference is the float64 log-softmax of the one-shot forward's rows.

use loramux_runtime::engine::EngineState;
use loramux_runtime::engine::{EngineConfig, EngineEvent, EngineMetrics, EngineRequest};
use loramux_runtime::{
    AdapterBank, BankConfig, FixedGate, KvCache, LogitRows, LogprobRequest, NoAdapters,
    SamplingParams, SeqStep, TokenLogprob,
};
use std::sync::Arc;
use tokio::sync::mpsc::unbounded_channel;

use super::engine::base;

fn log_softmax(row: &[f32], token: u32) -> f64 {
    let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
    row[token as usize] as f64 - z.ln()
}

#[test]
fn prompt_and_generated_logprobs_match_a_one_shot_forward_across_prefill_chunks() {
    const CHUNK: usize = 16;
    const GENERATE: usize = 6;
    const TOP: usize = 3;
    let base = base();
    let cfg = base.model.config().clone();
    let prompt = base
        .tokenizer
        .encode(
            "The history of the printing press begins in the fifteenth century, when \
             Johannes Gutenberg combined movable metal type, oil-based ink and a wooden \
             press adapted from those used for wine. Within fifty years",
            false,
        )
        .expect("ids");
    assert!(prompt.len() > 2 * CHUNK, "the prompt spans several chunks");
    let bank = AdapterBank::new(&cfg, BankConfig { slots: 1, r_max: 8 }).expect("bank");
    let mut state = EngineState::new(
        base.clone(),
        bank,
        EngineConfig {
            prefill_chunk: CHUNK,
            ..EngineConfig::default()
        },
        None,
        Arc::new(EngineMetrics::default()),
    );
    let (tx, mut rx) = unbounded_channel();
    state.push(EngineRequest {
        prompt_ids: prompt.clone(),
        adapters: vec![],
        sampling: SamplingParams::default(),
        max_tokens: GENERATE,
        stop_ids: vec![],
        gated: false,
        logprobs: LogprobRequest {
            generated: true,
            prompt: true,
            top: TOP,
        },
        events: tx,
    });
    while !state.is_idle() {
        state.step();
    }
    let (mut prompt_lp, mut generated_lp, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    let mut chunks = 0;
    while let Ok(ev) = rx.try_recv() {
        match ev {
            EngineEvent::PromptLogprobs(lps) => {
                chunks += 1;
                prompt_lp.extend(lps);
            }
            EngineEvent::Logprob(lp) => generated_lp.push(lp),
            EngineEvent::Token(t) => tokens.push(t),
            _ => {}
        }
    }
    assert_eq!(chunks, prompt.len().div_ceil(CHUNK));
    assert_eq!(tokens.len(), GENERATE);
    assert_eq!(
        prompt_lp.len(),
        prompt.len() - 1,
        "every prompt token after the first"
    );
    assert_eq!(generated_lp.len(), GENERATE);

    let text: Vec<u32> = prompt.iter().chain(&tokens).copied().collect();
    let mut cache = KvCache::new(&cfg);
    let rows = base
        .model
        .forward(
            &mut [SeqStep {
                tokens: &text,
                cache: &mut cache,
                candidates: &[],
                logits: LogitRows::All,
            }],
            &NoAdapters,
            &FixedGate,
        )
        .expect("forward")
        .remove(0);
    let row = |i: usize| &rows[i * cfg.vocab_size..(i + 1) * cfg.vocab_size];
    let check = |at: usize, lp: &TokenLogprob| {
        assert_eq!(lp.token, text[at + 1], "row {at} predicts token {}", at + 1);
        let want = log_softmax(row(at), lp.token);
        assert!(
            (lp.logprob as f64 - want).abs() < 2e-3,
            "position {}: {} vs {want}",
            at + 1,
            lp.logprob
        );
        assert_eq!(lp.top.len(), TOP);
        for &(id, l) in &lp.top {
            assert!((l as f64 - log_softmax(row(at), id)).abs() < 2e-3);
        }
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
    };
    for (i, lp) in prompt_lp.iter().enumerate() {
        check(i, lp);
    }
    for (i, lp) in generated_lp.iter().enumerate() {
        check(prompt.len() - 1 + i, lp);
        // Greedy: the generated token is the most likely one.
        assert_eq!(lp.top[0].0, lp.token);
    }
    // Not a flat distribution: the model is confident about some tokens and not others.
    let spread = prompt_lp
        .iter()
        .map(|l| l.logprob)
        .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    assert!(spread.1 - spread.0 > 5.0, "{spread:?}");
}
