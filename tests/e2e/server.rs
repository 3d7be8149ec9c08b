//! Every endpoint and error of the HTTP API, in-process (actix test service) over the real
//! default model, the real engine and the PEFT fixture adapters.

use actix_web::{test, App};
use loramux::server::{configure, DirCatalog, Limits, ServerMetrics, ServerState};
use loramux_runtime::engine::{self, EngineConfig};
use loramux_runtime::generate::{generate_batch, GenerationRequest};
use loramux_runtime::{
    AdapterBank, BankConfig, BaseModel, FixedGate, NoAdapters, SamplingParams, WeightDtype,
};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, OnceLock};

pub(crate) fn base() -> Arc<BaseModel> {
    static BASE: OnceLock<Arc<BaseModel>> = OnceLock::new();
    BASE.get_or_init(|| {
        let path = loramux_runtime::fetch::default_model_path().expect("default model fetched");
        Arc::new(BaseModel::load(&path, WeightDtype::Native).expect("loads"))
    })
    .clone()
}

pub(crate) fn default_embedder() -> loramux_index::BertEmbedder {
    let dir = loramux_runtime::fetch::DEFAULT_EMBEDDER
        .path()
        .expect("embedder fetched");
    loramux_index::BertEmbedder::load(&dir, loramux_index::BertEmbedderConfig::default())
        .expect("embedder")
}

pub(crate) fn state(queue: usize) -> Arc<ServerState> {
    state_with(queue, EngineConfig::default().max_running)
}

pub(crate) fn state_with(queue: usize, max_running: usize) -> Arc<ServerState> {
    let base = base();
    let bank = AdapterBank::new(
        base.model.config(),
        BankConfig {
            slots: 4,
            r_max: 16,
        },
    )
    .expect("bank");
    let engine = engine::spawn(
        base.clone(),
        bank,
        EngineConfig {
            queue_capacity: queue,
            max_running,
            ..EngineConfig::default()
        },
    );
    let adapters = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/adapters");
    Arc::new(ServerState {
        base,
        base_name: "smollm2".into(),
        engine,
        catalog: Arc::new(DirCatalog::new(adapters)),
        adapters: loramux_runtime::HostCache::new(1 << 30),
        limits: Limits {
            max_body_bytes: 64 * 1024,
            max_prompt_tokens: 512,
            max_tokens: 128,
            default_max_tokens: 16,
            ..Limits::default()
        },
        metrics: ServerMetrics::default(),
        admin_token: None,
        gate_top_k: None,
        upload_permits: tokio::sync::Semaphore::new(Limits::default().max_concurrent_uploads),
    })
}

/// Greedy reference for a one-message chat, straight from the runtime.
fn reference_text(base: &BaseModel, user: &str, max_tokens: usize) -> String {
    let ids = base.chat_prompt_ids(user).expect("prompt");
    let out = generate_batch(
        &base.model,
        &NoAdapters,
        &FixedGate,
        &[GenerationRequest {
            prompt_ids: ids,
            candidates: vec![],
            sampling: SamplingParams::default(),
            max_tokens,
            stop_ids: base.tokenizer.eos_ids(),
        }],
        &mut |_, _| {},
    )
    .expect("generation");
    let mut ids = out[0].output_ids.clone();
    if ids
        .last()
        .is_some_and(|t| base.tokenizer.eos_ids().contains(t))
    {
        ids.pop();
    }
    base.tokenizer.decode(&ids, true).expect("decode")
}

#[actix_web::test]
async fn chat_completion_streamed_and_not_match_the_runtime() {
    let state = state(64);
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let ask = "What is the capital of France?";
    let body = json!({"model": "base", "messages": [{"role": "user", "content": ask}], "temperature": 0, "max_tokens": 20});
    let resp: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(&body)
            .to_request(),
    )
    .await;
    let expected = reference_text(&state.base, ask, 20);
    assert_eq!(resp["choices"][0]["message"]["content"], expected.as_str());
    assert_eq!(resp["object"], "chat.completion");
    assert_eq!(resp["routing"]["mode"], "base");
    let usage = &resp["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let raw = test::call_and_read_body(
        &app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(&streamed)
            .to_request(),
    )
    .await;
    let chunks = sse_chunks(&raw);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["routing"]["mode"], "base");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, expected);
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());
}

#[actix_web::test]
async fn adapters_by_id_mixtures_models_and_text_completions() {
    let state = state(64);
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let models: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get().uri("/v1/models").to_request(),
    )
    .await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in ["auto", "smollm2", "r8-qv", "r2-all7"] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    // An open prompt: where the base model is certain ("The capital of France is"), the small
    // random fixture adapters do not flip a greedy token; here they do from the third token.
    let prompt = "Once upon a time";
    let one: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/completions")
            .set_json(
                json!({"model": "r8-qv", "prompt": prompt, "temperature": 0, "max_tokens": 8}),
            )
            .to_request(),
    )
    .await;
    assert_eq!(one["routing"]["mode"], "adapter");
    assert_eq!(one["routing"]["weights"][0]["id"], "r8-qv");
    let base: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/completions")
            .set_json(json!({"model": "base", "prompt": prompt, "temperature": 0, "max_tokens": 8}))
            .to_request(),
    )
    .await;
    assert_ne!(
        one["choices"][0]["text"], base["choices"][0]["text"],
        "the adapter must change the greedy text"
    );
    let mix: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/completions")
            .set_json(json!({"prompt": prompt, "temperature": 0, "max_tokens": 8, "adapters": [{"id": "r8-qv", "weight": 0.7}, {"id": "r2-all7", "weight": 0.5}]}))
            .to_request(),
    )
    .await;
    assert_eq!(mix["routing"]["mode"], "mixture");
    assert_eq!(mix["routing"]["weights"].as_array().unwrap().len(), 2);
    // `auto` with a catalog that has no index falls back to the base model and says so.
    let auto: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/completions")
            .set_json(json!({"model": "auto", "prompt": prompt, "temperature": 0, "max_tokens": 8}))
            .to_request(),
    )
    .await;
    assert_eq!(auto["routing"]["mode"], "base");
    assert_eq!(auto["choices"][0]["text"], base["choices"][0]["text"]);
    // Stop strings cut the text and finish with "stop".
    let full = base["choices"][0]["text"].as_str().unwrap().to_string();
    let word: String = full.trim().chars().skip(1).take(3).collect();
    let stopped: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post().uri("/v1/completions").set_json(json!({"model": "base", "prompt": prompt, "temperature": 0, "max_tokens": 8, "stop": word})).to_request(),
    )
    .await;
    let cut = stopped["choices"][0]["text"].as_str().unwrap();
    assert!(
        !cut.contains(&word) && full.starts_with(cut),
        "{cut:?} vs {full:?} stop {word:?}"
    );
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    let health: Value =
        test::call_and_read_body_json(&app, test::TestRequest::get().uri("/health").to_request())
            .await;
    assert_eq!(health["status"], "ok");
    let metrics = String::from_utf8(
        test::call_and_read_body(&app, test::TestRequest::get().uri("/metrics").to_request())
            .await
            .to_vec(),
    )
    .unwrap();
    // The values this test's traffic (five completions, r8-qv in two of them, two adapters
    // loaded into a fresh bank) moved from zero.
    let metrics = super::gateway_metrics::Metrics::parse(&metrics);
    let completions = ["endpoint=completions", "status=200"];
    assert_eq!(metrics.value("loramux_requests_total", &completions), 5.0);
    let r8 = ["adapter=r8-qv"];
    assert_eq!(metrics.value("loramux_routing_decisions_total", &r8), 2.0);
    assert_eq!(metrics.gauge("loramux_adapter_cache_loads_total"), 2.0);
    assert_eq!(metrics.count("loramux_time_to_first_token_seconds"), 5.0);
    assert!(metrics.gauge("loramux_generated_tokens_total") > 0.0);
}

#[actix_web::test]
async fn bad_requests_get_stable_json_errors() {
    let state = state(64);
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let post = |body: Value| {
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(body)
    };
    let cases: Vec<(test::TestRequest, u16, &str)> = vec![
        (
            post(json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})),
            404,
            "model_not_found",
        ),
        (post(json!({"messages": []})), 400, "invalid_request"),
        (
            post(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000})),
            400,
            "invalid_request",
        ),
        (
            post(json!({"messages": [{"role": "user", "content": "hi"}], "temperature": -1})),
            400,
            "invalid_request",
        ),
        (
            post(json!({"messages": [{"role": "user", "content": "hi"}], "adapters": []})),
            400,
            "invalid_request",
        ),
        (
            post(json!({"messages": [{"role": "user", "content": "word ".repeat(600)}]})),
            413,
            "request_too_large",
        ),
        (
            test::TestRequest::post()
                .uri("/v1/chat/completions")
                .insert_header(("content-type", "application/json"))
                .set_payload("{\"messages\": ["),
            400,
            "invalid_request",
        ),
        (
            test::TestRequest::post()
                .uri("/v1/chat/completions")
                .insert_header(("content-type", "application/json"))
                .set_payload(format!(
                    "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
                    "x".repeat(70_000)
                )),
            413,
            "request_too_large",
        ),
        (
            post(json!({"model": "base", "messages": [{"role": "foo", "content": "hi"}]})),
            400,
            "invalid_request",
        ),
        (
            post(json!({"model": "", "messages": [{"role": "user", "content": "hi"}]})),
            400,
            "invalid_request",
        ),
        (
            post(
                json!({"model": "x".repeat(10_000), "messages": [{"role": "user", "content": "hi"}]}),
            ),
            404,
            "model_not_found",
        ),
        (
            test::TestRequest::get().uri("/v1/nothing-here"),
            404,
            "not_found",
        ),
        (
            test::TestRequest::delete().uri("/v1/models"),
            404,
            "not_found",
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let resp = test::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(body["error"]["code"], code, "case {i}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.len() < 200,
            "case {i}: a client's input is not echoed whole"
        );
    }
}

#[actix_web::test]
async fn a_full_queue_answers_429() {
    // One sequence runs and one waits; a response starts only once the engine admits its
    // request, so the requests are sent together.
    let state = state_with(1, 1);
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let body = json!({"model": "base", "prompt": "Tell me a long story about", "temperature": 0, "max_tokens": 64, "stream": true});
    let calls = (0..12).map(|_| {
        test::call_service(
            &app,
            test::TestRequest::post()
                .uri("/v1/completions")
                .set_json(&body)
                .to_request(),
        )
    });
    let responses = futures_util::future::join_all(calls).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let limited = responses.iter().find(|r| r.status() == 429).unwrap();
    assert!(
        limited.headers().contains_key("retry-after"),
        "a 429 says when to retry"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
}

/// Registration over HTTP into a real SQLite registry, retrieval routing through it, the
/// bearer token on admin endpoints, and deletion.
#[actix_web::test]
async fn registry_registration_auto_routing_and_admin_auth() {
    use loramux::server::RegistryCatalog;
    use loramux_index::{Registry, RegistryConfig};
    use loramux_router::{PeftValidator, Router, RouterConfig};
    use std::sync::RwLock;

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/adapters");
    let dir = tempfile::tempdir().expect("tempdir");
    let embedder = default_embedder();
    let config = RegistryConfig {
        allowed_roots: vec![fixtures.clone()],
        ..Default::default()
    };
    let registry = Registry::open(dir.path(), config, Arc::new(embedder)).expect("registry");
    let router =
        Router::new(Arc::new(RwLock::new(registry)), RouterConfig::default()).expect("router");
    let base = base();
    let mut st = Arc::try_unwrap(state(64)).ok().expect("fresh state");
    st.catalog = Arc::new(RegistryCatalog::new(
        router,
        PeftValidator::new(base.model.config().clone()),
    ));
    st.admin_token = Some("s3cret".into());
    let app = test::init_service(App::new().configure(configure(Arc::new(st)))).await;

    let register =
        |id: &str, sub: &str, description: &str, examples: Vec<&str>, token: Option<&str>| {
            let mut req = test::TestRequest::post().uri("/v1/adapters").set_json(json!({
            "id": id, "path": fixtures.join(sub), "description": description, "examples": examples
        }));
            if let Some(t) = token {
                req = req.insert_header(("authorization", format!("Bearer {t}")));
            }
            req.to_request()
        };
    let resp = test::call_service(
        &app,
        register("cooking", "r8_qv", "Cooking recipes", vec![], None),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 401);
    let resp = test::call_service(
        &app,
        register("cooking", "r8_qv", "Cooking recipes", vec![], Some("wrong")),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 401);
    let resp = test::call_service(
        &app,
        register(
            "cooking",
            "r8_qv",
            "Cooking recipes and kitchen advice",
            vec![
                "How long should I bake a chocolate cake?",
                "Give me a recipe for tomato soup",
            ],
            Some("s3cret"),
        ),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    let resp = test::call_service(
        &app,
        register(
            "tax-law",
            "r2_all7",
            "Questions about income tax law",
            vec![
                "Can I deduct my home office from my taxes?",
                "What is the capital gains tax rate?",
            ],
            Some("s3cret"),
        ),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    // The id is taken: 409, and the first registration stands.
    let resp = test::call_service(
        &app,
        register("tax-law", "r8_qv", "Other", vec![], Some("s3cret")),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 409);
    let body: Value = test::read_body_json(resp).await;
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    // Ids that `model` already means something by are not registrable.
    for reserved in ["auto", "base", "smollm2"] {
        let resp = test::call_service(
            &app,
            register(reserved, "r8_qv", "Shadowing", vec![], Some("s3cret")),
        )
        .await;
        assert_eq!(resp.status().as_u16(), 400, "{reserved}");
        let body: Value = test::read_body_json(resp).await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("reserved"),
            "{body}"
        );
    }
    // A path outside the allowed roots is refused and leaves nothing behind.
    let outside = test::TestRequest::post()
        .uri("/v1/adapters")
        .insert_header(("authorization", "Bearer s3cret"))
        .set_json(json!({"id": "evil", "path": "/etc", "description": "x"}))
        .to_request();
    let resp = test::call_service(&app, outside).await;
    assert_eq!(resp.status().as_u16(), 400);
    let list: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get().uri("/v1/adapters").to_request(),
    )
    .await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");

    let routed: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/route")
            .set_json(json!({"prompt": "What temperature should I roast a chicken at?"}))
            .to_request(),
    )
    .await;
    assert_eq!(routed["routing"]["mode"], "auto", "{routed}");
    assert_eq!(
        routed["routing"]["candidates"][0]["id"], "cooking",
        "{routed}"
    );
    let chat: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(json!({"model": "auto", "messages": [{"role": "user", "content": "Is my home office tax deductible?"}], "max_tokens": 4, "temperature": 0}))
            .to_request(),
    )
    .await;
    assert_eq!(chat["routing"]["candidates"][0]["id"], "tax-law", "{chat}");
    let weights: f32 = chat["routing"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["weight"].as_f64().unwrap() as f32)
        .sum();
    assert!(
        (weights - 1.0).abs() < 1e-4,
        "mixture weights sum to 1: {weights}"
    );

    // Multipart upload of the two PEFT files.
    let boundary = "loramuxBoundary7";
    let multipart_from = |source: &Path, files: &[&str]| {
        let mut body = Vec::new();
        for (name, value) in [
            ("id", "uploaded"),
            ("description", "Uploaded over HTTP"),
            ("examples", "[\"an example\"]"),
        ] {
            body.extend(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").into_bytes(),
            );
        }
        for file in files {
            let bytes = std::fs::read(source.join(file)).expect("fixture file");
            body.extend(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{file}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .into_bytes(),
            );
            body.extend(bytes);
            body.extend(b"\r\n");
        }
        body.extend(format!("--{boundary}--\r\n").into_bytes());
        test::TestRequest::post()
            .uri("/v1/adapters")
            .insert_header(("authorization", "Bearer s3cret"))
            .insert_header((
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            ))
            .set_payload(body)
            .to_request()
    };
    let good = fixtures.join("r4_rank_pattern");
    let multipart = |files: &[&str]| multipart_from(&good, files);
    let half = test::call_service(&app, multipart(&["adapter_config.json"])).await;
    assert_eq!(half.status().as_u16(), 400, "one file is not an adapter");
    // Truncated weights reach the registry's validation, whose refusal names the files.
    let broken = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        good.join("adapter_config.json"),
        broken.path().join("adapter_config.json"),
    )
    .expect("copy");
    let weights = std::fs::read(good.join("adapter_model.safetensors")).expect("weights");
    std::fs::write(
        broken.path().join("adapter_model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .expect("write");
    let refused = test::call_service(
        &app,
        multipart_from(
            broken.path(),
            &["adapter_config.json", "adapter_model.safetensors"],
        ),
    )
    .await;
    assert_eq!(
        refused.status().as_u16(),
        400,
        "truncated weights are refused"
    );
    let why = String::from_utf8(test::read_body(refused).await.to_vec()).expect("utf-8");
    assert!(
        why.contains("adapter_model.safetensors") && !why.contains(&*dir.path().to_string_lossy()),
        "the refusal names the upload, not the server's staging folder: {why}"
    );
    let up = test::call_service(
        &app,
        multipart(&["adapter_config.json", "adapter_model.safetensors"]),
    )
    .await;
    assert_eq!(up.status().as_u16(), 201);
    let got: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get()
            .uri("/v1/adapters/uploaded")
            .to_request(),
    )
    .await;
    assert_eq!(got["description"], "Uploaded over HTTP");
    let leftovers = std::fs::read_dir(dir.path().join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        leftovers, 0,
        "staging folders are removed after registration"
    );

    let del = test::TestRequest::delete()
        .uri("/v1/adapters/cooking")
        .insert_header(("authorization", "Bearer s3cret"))
        .to_request();
    assert_eq!(test::call_service(&app, del).await.status().as_u16(), 200);
    let gone = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/v1/adapters/cooking")
            .to_request(),
    )
    .await;
    assert_eq!(gone.status().as_u16(), 404);
}

/// Records, for every gate call (one per layer and step), the plan of the last token row:
/// with one sequence that is the row that samples the next token.
struct RecordingGate<'a> {
    inner: &'a dyn loramux_runtime::Gate,
    last_rows: std::sync::Mutex<Vec<Vec<loramux_kernels::SlotWeight>>>,
}

impl loramux_runtime::Gate for RecordingGate<'_> {
    fn plan(&self, input: &loramux_runtime::GateInput<'_>) -> loramux_kernels::MixPlan {
        let plan = self.inner.plan(input);
        let last = plan.row(plan.rows() - 1).to_vec();
        self.last_rows.lock().unwrap().push(last);
        plan
    }

    fn bind(&self, slot: u32, id: &str) -> bool {
        self.inner.bind(slot, id)
    }
}

/// The learned gate acts in the served path: a gate built here (random scorers, so its
/// weights differ by layer and token) over two of three registered adapters is served
/// in-process behind the real registry and router. The HTTP response's `gate_weights` must
/// differ across layers and tokens and equal, within 1e-5, what the same gate computes
/// directly for the same prompt; the adapter the gate does not know keeps its prior, and
/// the response says which adapters the gate scored. If the engine bound the gate by any
/// other id than the catalog's, no adapter would be scored, `routing.gate` would be absent
/// and the weights would be the prior's: every assertion below would fail.
#[actix_web::test]
async fn the_served_gate_is_the_gate_the_runtime_computes() {
    use loramux::server::RegistryCatalog;
    use loramux_index::{NewAdapter, Registry};
    use loramux_router::gate::{GateConfig, GateWeights, LearnedGate};
    use loramux_router::{PeftValidator, Router, RouterConfig};
    use loramux_runtime::{Adapter, AdapterId, Candidate};
    use rand::{Rng, SeedableRng};
    use std::sync::RwLock;

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/adapters");
    let base = base();
    let cfg = base.model.config().clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let embedder = default_embedder();
    let mut registry = Registry::open(
        dir.path(),
        loramux_index::RegistryConfig {
            allowed_roots: vec![fixtures.clone()],
            ..Default::default()
        },
        Arc::new(embedder),
    )
    .expect("registry");
    let validator = PeftValidator::new(cfg.clone());
    let adapters = [
        (
            "roasting",
            "r8_qv",
            "Roasting meat and vegetables in the oven",
        ),
        (
            "baking",
            "r4_rank_pattern",
            "Baking bread, cakes and pastries",
        ),
        ("grilling", "r2_all7", "Grilling and barbecue cooking"),
    ];
    for (id, sub, description) in adapters {
        registry
            .register(
                NewAdapter {
                    id: AdapterId::new(id).unwrap(),
                    source: fixtures.join(sub),
                    description: description.into(),
                    examples: vec![format!("{description}: how long and at what temperature?")],
                    tags: vec![],
                    replace: false,
                },
                &validator,
            )
            .expect("registered");
    }
    let router =
        Router::new(Arc::new(RwLock::new(registry)), RouterConfig::default()).expect("router");
    // The gate knows roasting and baking; grilling is new to it.
    let known = ["roasting", "baking"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let weights = GateWeights {
        adapter_ids: known.iter().map(|s| s.to_string()).collect(),
        num_layers: cfg.num_layers,
        hidden_size: cfg.hidden_size,
        weight: (0..cfg.num_layers * known.len() * cfg.hidden_size)
            .map(|_| rng.random_range(-0.02..0.02))
            .collect(),
        bias: (0..cfg.num_layers * known.len())
            .map(|_| rng.random_range(-0.5..0.5))
            .collect(),
    };
    // The gate alone, without the retrieval prior in its logits: the prior of two recipe
    // adapters is nearly one-hot and would hide how the gate's weights move by layer.
    let gate_config = GateConfig {
        prior_weight: 0.0,
        ..GateConfig::default()
    };
    let bank_config = BankConfig {
        slots: 4,
        r_max: 16,
    };
    let engine = engine::spawn_with_gate(
        base.clone(),
        AdapterBank::new(&cfg, bank_config).expect("bank"),
        EngineConfig::default(),
        Some(Arc::new(LearnedGate::new(weights.clone(), gate_config))),
    );
    let state = Arc::new(ServerState {
        base: base.clone(),
        base_name: "smollm2".into(),
        engine,
        catalog: Arc::new(RegistryCatalog::new(router, validator).with_all_candidates()),
        adapters: loramux_runtime::HostCache::new(1 << 30),
        limits: Limits::default(),
        metrics: ServerMetrics::default(),
        admin_token: None,
        gate_top_k: Some(gate_config.top_k),
        upload_permits: tokio::sync::Semaphore::new(Limits::default().max_concurrent_uploads),
    });
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let ask = "How long should I roast a chicken in the oven, and at what temperature?";
    let max_tokens = 8;
    let resp: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(
                json!({"model": "auto", "messages": [{"role": "user", "content": ask}],
                             "temperature": 0, "max_tokens": max_tokens}),
            )
            .to_request(),
    )
    .await;
    let routing = &resp["routing"];
    let ids: Vec<String> = routing["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    let priors: Vec<f32> = routing["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["weight"].as_f64().unwrap() as f32)
        .collect();
    assert_eq!(ids.len(), 3, "all three adapters are candidates: {routing}");
    let gate = &routing["gate"];
    assert_eq!(gate["kind"], "learned", "{routing}");
    let mut scored: Vec<&str> = gate["scored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    scored.sort();
    assert_eq!(scored, ["baking", "roasting"], "{routing}");
    assert_eq!(gate["prior"], json!(["grilling"]), "{routing}");
    let report = &routing["gate_weights"];
    assert_eq!(report["adapters"], json!(ids));

    // The same request computed directly: the runtime's plain generation with the same gate.
    let direct_gate = LearnedGate::new(weights, gate_config);
    let recording = RecordingGate {
        inner: &direct_gate,
        last_rows: Default::default(),
    };
    let mut bank = AdapterBank::new(&cfg, bank_config).expect("bank");
    let subs: std::collections::HashMap<&str, &str> =
        adapters.iter().map(|(id, sub, _)| (*id, *sub)).collect();
    let mut leases = Vec::new();
    let mut candidates = Vec::new();
    for (id, prior) in ids.iter().zip(&priors) {
        let adapter = Adapter::load(
            AdapterId::new(id).unwrap(),
            &fixtures.join(subs[id.as_str()]),
            &cfg,
        )
        .expect("adapter");
        let lease = bank.acquire(&adapter).expect("room");
        loramux_runtime::Gate::bind(&recording, lease.slot(), id);
        candidates.push(Candidate {
            slot: lease.slot(),
            prior: *prior,
        });
        leases.push(lease);
    }
    let out = generate_batch(
        &base.model,
        &bank,
        &recording,
        &[GenerationRequest {
            prompt_ids: base.chat_prompt_ids(ask).expect("prompt"),
            candidates: candidates.clone(),
            sampling: SamplingParams::default(),
            max_tokens,
            stop_ids: base.tokenizer.eos_ids(),
        }],
        &mut |_, _| {},
    )
    .expect("direct generation");
    let layers = cfg.num_layers;
    let rows = recording.last_rows.into_inner().unwrap();
    let tokens = out[0].output_ids.len();
    assert_eq!(
        rows.len(),
        tokens * layers,
        "one gate call per layer and step"
    );
    // expected[t][l][c]: candidate c's weight in layer l for completion token t.
    let expected: Vec<Vec<Vec<f64>>> = rows
        .chunks(layers)
        .map(|step| {
            step.iter()
                .map(|row| {
                    candidates
                        .iter()
                        .map(|c| {
                            row.iter()
                                .filter(|w| w.slot == c.slot)
                                .map(|w| w.weight as f64)
                                .sum()
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let per_token = report["per_token"].as_array().unwrap();
    assert_eq!(per_token.len(), tokens, "{report}");
    let close = |got: &Value, want: f64, what: &str| {
        let got = got.as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-5,
            "{what}: served {got}, direct {want}"
        );
    };
    for (t, token) in per_token.iter().enumerate() {
        for c in 0..ids.len() {
            let want = expected[t].iter().map(|l| l[c]).sum::<f64>() / layers as f64;
            close(
                &token["weights"][c],
                want,
                &format!("token {t}, {}", ids[c]),
            );
        }
    }
    let per_layer = report["per_layer"].as_array().unwrap();
    assert_eq!(per_layer.len(), layers);
    for (l, layer) in per_layer.iter().enumerate() {
        for c in 0..ids.len() {
            let want = expected.iter().map(|t| t[l][c]).sum::<f64>() / tokens as f64;
            close(&layer[c], want, &format!("layer {l}, {}", ids[c]));
        }
    }
    // The unknown adapter keeps its prior in every layer and token; the gated ones do not.
    let grilling = ids.iter().position(|i| i == "grilling").unwrap();
    let roasting = ids.iter().position(|i| i == "roasting").unwrap();
    for step in &expected {
        for layer in step {
            assert!((layer[grilling] - priors[grilling] as f64).abs() < 1e-6);
        }
    }
    let spread = |xs: &[f64]| {
        xs.iter().cloned().fold(f64::MIN, f64::max) - xs.iter().cloned().fold(f64::MAX, f64::min)
    };
    let by_layer: Vec<f64> = per_layer
        .iter()
        .map(|l| l[roasting].as_f64().unwrap())
        .collect();
    let by_token: Vec<f64> = per_token
        .iter()
        .map(|t| t["weights"][roasting].as_f64().unwrap())
        .collect();
    assert!(
        spread(&by_layer) > 0.05,
        "the weights differ across layers: {by_layer:?}"
    );
    assert!(
        spread(&by_token) > 1e-3,
        "the weights differ across tokens: {by_token:?}"
    );
    // And the text is the directly generated one.
    let mut ids_out = out[0].output_ids.clone();
    if ids_out
        .last()
        .is_some_and(|t| base.tokenizer.eos_ids().contains(t))
    {
        ids_out.pop();
    }
    assert_eq!(
        resp["choices"][0]["message"]["content"],
        base.tokenizer.decode(&ids_out, true).expect("decode")
    );
}

/// The JSON chunks of an SSE body, which must end with `[DONE]`.
pub(crate) fn sse_chunks(raw: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(raw).expect("utf-8 SSE");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str(e.strip_prefix("data: ").expect("data line")).expect("chunk json")
        })
        .collect()
}

/// The streamed text and the last chunk's `finish_reason` of an SSE completion (a macro: the
/// test service's type cannot be named without depending on actix-http).
macro_rules! streamed_completion {
    ($app:expr, $body:expr) => {{
        let mut body: Value = $body;
        body["stream"] = json!(true);
        let raw = test::call_and_read_body(
            $app,
            test::TestRequest::post()
                .uri("/v1/completions")
                .set_json(&body)
                .to_request(),
        )
        .await;
        let chunks = sse_chunks(&raw);
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        let reason = chunks.last().unwrap()["choices"][0]["finish_reason"]
            .as_str()
            .unwrap_or("<none>")
            .to_string();
        (content, reason)
    }};
}

/// `finish_reason` is the engine's own (or `stop` for a matched stop string), the same
/// streamed and not, run after run: an answer cut by `max_tokens` is `length` even when the
/// engine has closed its channel, and a stop string that never appears changes nothing.
#[actix_web::test]
async fn finish_reason_is_the_engines_own_streamed_or_not() {
    let state = state(64);
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let prompt = "Tell me a long story about a dragon";
    let cut_by_length =
        json!({"model": "base", "prompt": prompt, "temperature": 0, "max_tokens": 6});
    let mut never_matching = cut_by_length.clone();
    never_matching["stop"] = json!(["zzqqxx"]);
    let full: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/completions")
            .set_json(&cut_by_length)
            .to_request(),
    )
    .await;
    let full_text = full["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(full["usage"]["completion_tokens"], 6, "{full}");
    for body in [&cut_by_length, &never_matching] {
        for _ in 0..3 {
            let plain: Value = test::call_and_read_body_json(
                &app,
                test::TestRequest::post()
                    .uri("/v1/completions")
                    .set_json(body)
                    .to_request(),
            )
            .await;
            assert_eq!(plain["choices"][0]["finish_reason"], "length", "{plain}");
            assert_eq!(plain["choices"][0]["text"], full_text.as_str());
            let (text, reason) = streamed_completion!(&app, body.clone());
            assert_eq!(reason, "length", "{body}");
            assert_eq!(text, full_text);
        }
    }
    // A stop string inside the answer: `stop`, the text before it, streamed or not.
    let word: String = full_text.trim().chars().skip(2).take(3).collect();
    let mut stopped = cut_by_length.clone();
    stopped["stop"] = json!([word]);
    let plain: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/completions")
            .set_json(&stopped)
            .to_request(),
    )
    .await;
    assert_eq!(plain["choices"][0]["finish_reason"], "stop", "{plain}");
    let cut = plain["choices"][0]["text"].as_str().unwrap();
    assert!(
        full_text.starts_with(cut) && !cut.contains(&word),
        "{cut:?}"
    );
    let (text, reason) = streamed_completion!(&app, stopped.clone());
    assert_eq!((text.as_str(), reason.as_str()), (cut, "stop"));
}

/// OpenAI fields loramux does not implement are refused by name unless they carry the value
/// that means "off"; before this, `logprobs: true`, `tools` with `tool_choice: "required"`
/// and `response_format` were answered with 200 as if absent.
#[actix_web::test]
async fn unimplemented_openai_fields_are_refused_by_name() {
    let state = state(64);
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let chat = json!({"model": "base", "max_tokens": 2, "temperature": 0,
        "messages": [{"role": "user", "content": "Hello"}]});
    let with = |field: &str, value: Value| {
        let mut b = chat.clone();
        b[field] = value;
        b
    };
    let defaults = [
        ("n", json!(1)),
        ("logprobs", json!(false)),
        ("tools", json!([])),
        ("tool_choice", json!("none")),
        ("response_format", json!({"type": "text"})),
        ("presence_penalty", json!(0)),
        ("user", json!("someone")),
    ];
    for (field, value) in defaults {
        let resp = test::call_service(
            &app,
            test::TestRequest::post()
                .uri("/v1/chat/completions")
                .set_json(with(field, value))
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 200, "{field} at its default");
    }
    let refused = [
        // Chat has no `echo` (text completions do).
        ("echo", json!(true)),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ),
        ("tool_choice", json!("required")),
        ("response_format", json!({"type": "json_object"})),
        ("frequency_penalty", json!(1.0)),
        ("no_such_field", json!(1)),
    ];
    for (field, value) in refused {
        let resp = test::call_service(
            &app,
            test::TestRequest::post()
                .uri("/v1/chat/completions")
                .set_json(with(field, value.clone()))
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 400, "{field} = {value}");
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(body["error"]["code"], "unsupported_parameter", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    // Text completions too: `top_logprobs` is chat's field (completions take `logprobs: N`).
    let resp = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/v1/completions")
            .set_json(json!({"model": "base", "prompt": "Hi", "top_logprobs": 1}))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = test::read_body_json(resp).await;
    assert_eq!(body["error"]["code"], "unsupported_parameter", "{body}");
}

/// Content as an array of text parts is the same prompt as the joined string; a non-text
/// part is refused by its position; `content: null` is an (empty) assistant turn only.
#[actix_web::test]
async fn content_parts_and_null_content() {
    let state = state(64);
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let ask = |messages: Value| json!({"model": "base", "max_tokens": 6, "temperature": 0, "messages": messages});
    let post = |body: Value| {
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(body)
            .to_request()
    };
    let as_string: Value = test::call_and_read_body_json(
        &app,
        post(ask(
            json!([{"role": "user", "content": "Name a color.\nJust one."}]),
        )),
    )
    .await;
    let as_parts: Value = test::call_and_read_body_json(
        &app,
        post(ask(json!([{"role": "user", "content": [
            {"type": "text", "text": "Name a color."},
            {"type": "text", "text": "Just one."}
        ]}]))),
    )
    .await;
    assert_eq!(as_parts["usage"], as_string["usage"], "{as_parts}");
    assert_eq!(
        as_parts["choices"][0]["message"]["content"],
        as_string["choices"][0]["message"]["content"]
    );
    let image = test::call_service(
        &app,
        post(ask(json!([{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]}]))),
    )
    .await;
    assert_eq!(image.status(), 400);
    let body: Value = test::read_body_json(image).await;
    assert_eq!(body["error"]["code"], "unsupported_parameter");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].content[1].type"),
        "{body}"
    );
    let assistant_null = test::call_service(
        &app,
        post(ask(json!([
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": null},
            {"role": "user", "content": "Again"}
        ]))),
    )
    .await;
    assert_eq!(assistant_null.status(), 200);
    let user_null =
        test::call_service(&app, post(ask(json!([{"role": "user", "content": null}])))).await;
    assert_eq!(user_null.status(), 400);
}

/// `stream_options.include_usage` adds one last chunk with no choices and the same usage the
/// plain response reports; without it no chunk carries usage; without `stream` it is refused.
#[actix_web::test]
async fn streamed_usage_on_request() {
    let state = state(64);
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let body = json!({"model": "base", "max_tokens": 5, "temperature": 0,
        "messages": [{"role": "user", "content": "Count to ten."}]});
    let plain: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(&body)
            .to_request(),
    )
    .await;
    for include in [true, false] {
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": include});
        let raw = test::call_and_read_body(
            &app,
            test::TestRequest::post()
                .uri("/v1/chat/completions")
                .set_json(&streamed)
                .to_request(),
        )
        .await;
        let chunks = sse_chunks(&raw);
        let with_usage: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
        if include {
            assert_eq!(with_usage.len(), 1, "{chunks:?}");
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]));
            assert_eq!(last["usage"], plain["usage"]);
        } else {
            assert!(with_usage.is_empty(), "{chunks:?}");
        }
    }
    let mut not_streamed = body.clone();
    not_streamed["stream_options"] = json!({"include_usage": true});
    let resp = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(&not_streamed)
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), 400);
}

/// `n` choices (it used to return one): `n` sequences with seeds `seed, seed + 1, ...`, each
/// the answer that seed gives alone, usage summed over the choices; `n` with `stream` is
/// refused by name and `n: 0` is invalid.
#[actix_web::test]
async fn n_choices_are_n_seeded_sequences() {
    let state = state(64);
    let app = test::init_service(App::new().configure(configure(state.clone()))).await;
    let body = |n: usize, seed: u64| {
        json!({"model": "base", "prompt": "Once upon a time", "max_tokens": 8,
            "temperature": 1.0, "seed": seed, "n": n})
    };
    let post = |b: Value| {
        test::TestRequest::post()
            .uri("/v1/completions")
            .set_json(b)
            .to_request()
    };
    let three: Value = test::call_and_read_body_json(&app, post(body(3, 40))).await;
    let choices = three["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3, "{three}");
    let mut completion = 0;
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let alone: Value = test::call_and_read_body_json(&app, post(body(1, 40 + i as u64))).await;
        assert_eq!(c["text"], alone["choices"][0]["text"], "choice {i}");
        completion += alone["usage"]["completion_tokens"].as_u64().unwrap();
    }
    assert_eq!(three["usage"]["completion_tokens"], completion);
    assert_ne!(
        choices[0]["text"], choices[1]["text"],
        "sampled choices differ: {three}"
    );
    let resp = test::call_service(&app, post(body(0, 1))).await;
    assert_eq!(resp.status(), 400);
}
