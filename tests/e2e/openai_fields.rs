//! OpenAI fields that change the answer, served end to end in-process: log-probabilities
//! (chat's `logprobs`/`top_logprobs`, completions' `logprobs`/`echo` as lm-evaluation-harness
//! asks for log-likelihoods), `n` choices streamed, and request bodies that arrive too slowly.
//! Log-probabilities are checked against the float64 log-softmax of the model's own logits,
//! computed here step by step the way the engine runs a lone request.

use super::server::{base, sse_chunks, state};
use actix_web::{test, App};
use loramux::server::configure;
use loramux_runtime::{BaseModel, FixedGate, KvCache, LogitRows, NoAdapters, SeqStep};
use serde_json::{json, Value};

/// Log-probability of `token` in `row`, in f64.
fn log_softmax(row: &[f32], token: u32) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[token as usize] as f64 - max - z.ln()
}

/// The logits rows of one forward step over `tokens` on `cache`.
fn forward(base: &BaseModel, cache: &mut KvCache, tokens: &[u32], rows: LogitRows) -> Vec<f32> {
    base.model
        .forward(
            &mut [SeqStep {
                tokens,
                cache,
                candidates: &[],
                logits: rows,
            }],
            &NoAdapters,
            &FixedGate,
        )
        .expect("forward")
        .remove(0)
}

/// Greedy decoding as the engine runs one request alone (the prompt in one prefill, then
/// one row per step): each generated token with its log-probability.
fn greedy_logprobs(base: &BaseModel, prompt: &[u32], steps: usize) -> Vec<(u32, f64)> {
    let mut cache = KvCache::new(base.model.config());
    let mut row = forward(base, &mut cache, prompt, LogitRows::Last);
    let mut out = Vec::new();
    for _ in 0..steps {
        let token = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
            .expect("vocab") as u32;
        out.push((token, log_softmax(&row, token)));
        if base.tokenizer.eos_ids().contains(&token) {
            break;
        }
        row = forward(base, &mut cache, &[token], LogitRows::Last);
    }
    out
}

fn post(uri: &str, body: &Value) -> test::TestRequest {
    test::TestRequest::post().uri(uri).set_json(body)
}

/// Chat `logprobs: true` + `top_logprobs`: one entry per generated token, equal to the model's
/// log-softmax; the greedy token is its own top alternative; streamed chunks carry the same
/// entries. Before, `logprobs: true` was refused (and earlier still ignored with a 200).
#[actix_web::test]
async fn chat_logprobs_are_the_models_log_softmax_streamed_or_not() {
    let base = base();
    let app = test::init_service(App::new().configure(configure(state(64)))).await;
    let user = "Name three colours of the rainbow.";
    let body = json!({"model": "base", "temperature": 0, "max_tokens": 8, "logprobs": true,
        "top_logprobs": 3, "messages": [{"role": "user", "content": user}]});
    let resp: Value =
        test::call_and_read_body_json(&app, post("/v1/chat/completions", &body).to_request()).await;
    let content = resp["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no logprobs.content: {resp}"));
    let want = greedy_logprobs(&base, &base.chat_prompt_ids(user).unwrap(), 8);
    assert_eq!(
        content.len(),
        resp["usage"]["completion_tokens"].as_u64().unwrap() as usize
    );
    assert_eq!(content.len(), want.len(), "{resp}");
    for (entry, &(token, logprob)) in content.iter().zip(&want) {
        let text = base.tokenizer.decode(&[token], false).unwrap();
        assert_eq!(entry["token"], text.as_str(), "{entry}");
        assert_eq!(entry["bytes"], json!(text.as_bytes()));
        let got = entry["logprob"].as_f64().unwrap();
        assert!((got - logprob).abs() < 1e-4, "{got} vs {logprob}");
        assert!(got <= 0.0);
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(
            top[0]["token"], entry["token"],
            "greedy picks the most likely"
        );
        assert!(top
            .windows(2)
            .all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()));
    }
    // Some token is not a sure thing: the numbers are not all 0 (a fallback would be).
    assert!(content
        .iter()
        .any(|e| e["logprob"].as_f64().unwrap() < -0.05));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let raw =
        test::call_and_read_body(&app, post("/v1/chat/completions", &streamed).to_request()).await;
    let entries: Vec<Value> = sse_chunks(&raw)
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(&entries, content, "streamed entries equal the response's");

    // Without `logprobs`, none; `top_logprobs` alone is a client error.
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("top_logprobs");
    plain["logprobs"] = json!(false);
    let resp: Value =
        test::call_and_read_body_json(&app, post("/v1/chat/completions", &plain).to_request())
            .await;
    assert!(resp["choices"][0]["logprobs"].is_null(), "{resp}");
    plain.as_object_mut().unwrap().remove("logprobs");
    plain["top_logprobs"] = json!(2);
    let resp = test::call_service(&app, post("/v1/chat/completions", &plain).to_request()).await;
    assert_eq!(resp.status(), 400);
}

/// What lm-evaluation-harness sends for a log-likelihood: `echo: true`, `logprobs: 1`,
/// `max_tokens: 0`, the prompt as text or as a batch of one token list. The answer is the
/// prompt itself with a log-probability for every token but the first, equal to the model's;
/// the likelier continuation scores higher.
#[actix_web::test]
async fn echoed_prompt_logprobs_give_log_likelihoods() {
    let base = base();
    let app = test::init_service(App::new().configure(configure(state(64)))).await;
    let score = |prompt: Value| {
        let app = &app;
        async move {
            let body = json!({"model": "base", "prompt": prompt, "max_tokens": 0, "echo": true,
                "logprobs": 1, "temperature": 0});
            let resp = test::call_service(app, post("/v1/completions", &body).to_request()).await;
            assert_eq!(resp.status(), 200);
            let v: Value = test::read_body_json(resp).await;
            v
        }
    };
    let text = "The capital of France is Paris";
    let resp = score(json!(text)).await;
    let choice = &resp["choices"][0];
    assert_eq!(choice["text"], text, "echo returns the prompt: {resp}");
    assert_eq!(resp["usage"]["completion_tokens"], 0);
    let lp = &choice["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let ids = base.raw_ids(text).unwrap();
    assert_eq!(tokens.len(), ids.len());
    assert_eq!(tokens.concat(), text);
    let offsets: Vec<usize> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap() as usize)
        .collect();
    let mut at = 0;
    for (token, &offset) in tokens.iter().zip(&offsets) {
        assert_eq!(offset, at);
        at += token.chars().count();
    }
    let logprobs = lp["token_logprobs"].as_array().unwrap();
    assert!(
        logprobs[0].is_null() && lp["top_logprobs"][0].is_null(),
        "{lp}"
    );
    let mut cache = KvCache::new(base.model.config());
    let rows = forward(&base, &mut cache, &ids, LogitRows::All);
    let vocab = base.model.config().vocab_size;
    for i in 1..ids.len() {
        let want = log_softmax(&rows[(i - 1) * vocab..i * vocab], ids[i]);
        let got = logprobs[i].as_f64().unwrap();
        assert!((got - want).abs() < 1e-4, "token {i}: {got} vs {want}");
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert_eq!(top.len(), 1, "logprobs: 1 gives one alternative");
        assert!(top.values().next().unwrap().as_f64().unwrap() >= got - 1e-6);
    }
    // The same prompt as lm-evaluation-harness' tokenized batch of one.
    let as_ids = score(json!([ids])).await;
    assert_eq!(
        as_ids["choices"][0]["logprobs"]["token_logprobs"],
        lp["token_logprobs"]
    );

    let continuation = |resp: &Value, from: usize| -> f64 {
        resp["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()[from..]
            .iter()
            .map(|l| l.as_f64().unwrap())
            .sum()
    };
    let context = base.raw_ids("The capital of France is").unwrap().len();
    let paris = continuation(&resp, context);
    let london = continuation(
        &score(json!("The capital of France is London")).await,
        context,
    );
    assert!(paris > london + 1.0, "Paris {paris} vs London {london}");

    // Echo with generation: the prompt, then the answer, then logprobs for both.
    let body = json!({"model": "base", "prompt": text, "max_tokens": 3, "echo": true,
        "logprobs": 0, "temperature": 0});
    let both: Value =
        test::call_and_read_body_json(&app, post("/v1/completions", &body).to_request()).await;
    let answer = both["choices"][0]["text"].as_str().unwrap();
    assert!(
        answer.starts_with(text) && answer.len() > text.len(),
        "{both}"
    );
    let n = both["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(n, ids.len() + 3);
    // Streaming the echo is refused by name, not ignored.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = test::call_service(&app, post("/v1/completions", &streamed).to_request()).await;
    assert_eq!(resp.status(), 400);
    let err: Value = test::read_body_json(resp).await;
    assert!(
        err["error"]["message"].as_str().unwrap().contains("echo"),
        "{err}"
    );
    // Two prompts in one request are refused by name.
    let resp = test::call_service(
        &app,
        post(
            "/v1/completions",
            &json!({"model": "base", "prompt": ["a", "b"]}),
        )
        .to_request(),
    )
    .await;
    assert_eq!(resp.status(), 400);
}

/// `n` with `stream: true` (refused before): every choice streams under its own `index`,
/// each ends once with its `finish_reason`, the texts equal the non-streamed choices', and
/// the usage chunk sums them.
#[actix_web::test]
async fn n_choices_stream_side_by_side() {
    let app = test::init_service(App::new().configure(configure(state(64)))).await;
    let body = json!({"model": "base", "prompt": "Once upon a time", "max_tokens": 8,
        "temperature": 1.0, "seed": 11, "n": 3, "logprobs": 0});
    let whole: Value =
        test::call_and_read_body_json(&app, post("/v1/completions", &body).to_request()).await;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let raw = test::call_and_read_body(&app, post("/v1/completions", &streamed).to_request()).await;
    let chunks = sse_chunks(&raw);
    let mut texts = vec![String::new(); 3];
    let mut finishes = vec![0; 3];
    let mut tokens = [0; 3];
    for c in &chunks {
        let Some(choice) = c["choices"].as_array().and_then(|a| a.first()) else {
            continue;
        };
        let i = choice["index"].as_u64().unwrap() as usize;
        texts[i].push_str(choice["text"].as_str().unwrap_or(""));
        finishes[i] += usize::from(!choice["finish_reason"].is_null());
        tokens[i] += choice["logprobs"]["tokens"].as_array().map_or(0, Vec::len);
    }
    assert_eq!(finishes, vec![1, 1, 1], "{chunks:?}");
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(
            text,
            whole["choices"][i]["text"].as_str().unwrap(),
            "choice {i}"
        );
        let n = whole["choices"][i]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(
            tokens[i], n,
            "choice {i}: a log-probability per streamed token"
        );
    }
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage, &whole["usage"], "{chunks:?}");
}
