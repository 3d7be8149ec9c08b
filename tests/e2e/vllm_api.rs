//! vLLM's adapter endpoints (`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`) and model
//! list fields (`parent`, `root`) on the registry, in-process: what a vLLM adapter syncer
//! does, with the same auth and path confinement as `/v1/adapters`.

use super::server::{base, default_embedder, state};
use actix_web::{test, App};
use loramux::server::{configure, RegistryCatalog};
use loramux_index::{Registry, RegistryConfig};
use loramux_router::{PeftValidator, Router, RouterConfig};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, RwLock};

#[actix_web::test]
async fn vllm_clients_load_serve_and_unload_adapters() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/adapters");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RegistryConfig {
        allowed_roots: vec![fixtures.clone()],
        ..Default::default()
    };
    let registry =
        Registry::open(dir.path(), config, Arc::new(default_embedder())).expect("registry");
    let router =
        Router::new(Arc::new(RwLock::new(registry)), RouterConfig::default()).expect("router");
    let mut st = Arc::try_unwrap(state(64)).ok().expect("fresh state");
    st.catalog = Arc::new(RegistryCatalog::new(
        router,
        PeftValidator::new(base().model.config().clone()),
    ));
    st.admin_token = Some("tok".into());
    let app = test::init_service(App::new().configure(configure(Arc::new(st)))).await;
    let call = |uri: &str, body: Value, token: Option<&str>| {
        let mut req = test::TestRequest::post().uri(uri).set_json(body);
        if let Some(t) = token {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        req.to_request()
    };
    let load = |name: &str, path: &Path| json!({"lora_name": name, "lora_path": path});
    let adapter = fixtures.join("r8_qv");

    let resp = test::call_service(
        &app,
        call("/v1/load_lora_adapter", load("vl", &adapter), None),
    )
    .await;
    assert_eq!(resp.status(), 401, "the admin token is required");
    let resp = test::call_service(
        &app,
        call("/v1/load_lora_adapter", load("vl", &adapter), Some("tok")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = test::read_body(resp).await;
    assert_eq!(&text[..], b"Success: LoRA adapter 'vl' added successfully.");

    let models: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get().uri("/v1/models").to_request(),
    )
    .await;
    let entry = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {models}"))
    };
    assert_eq!(entry("vl")["parent"], "smollm2");
    assert_eq!(entry("vl")["root"], "vl");
    assert!(entry("smollm2")["parent"].is_null());

    // Served by name, as vLLM serves a loaded adapter.
    let chat = json!({"model": "vl", "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello"}]});
    let resp: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(&chat)
            .to_request(),
    )
    .await;
    assert_eq!(resp["routing"]["mode"], "adapter", "{resp}");
    assert_eq!(resp["routing"]["weights"][0]["id"], "vl", "{resp}");

    for (body, status) in [
        // Taken already.
        (load("vl", &adapter), 409),
        // Outside the allowed roots.
        (load("escape", Path::new("/etc")), 400),
        // A field vLLM does not have either.
        (
            json!({"lora_name": "x", "lora_path": adapter, "frobnicate": 1}),
            400,
        ),
        (
            json!({"lora_name": "x", "lora_path": adapter, "base_model_name": "other-model"}),
            400,
        ),
    ] {
        let resp = test::call_service(
            &app,
            call("/v1/load_lora_adapter", body.clone(), Some("tok")),
        )
        .await;
        assert_eq!(resp.status(), status, "{body}");
    }

    let unload = json!({"lora_name": "vl"});
    let resp =
        test::call_service(&app, call("/v1/unload_lora_adapter", unload.clone(), None)).await;
    assert_eq!(resp.status(), 401);
    let resp = test::call_service(
        &app,
        call("/v1/unload_lora_adapter", unload.clone(), Some("tok")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = test::read_body(resp).await;
    assert_eq!(
        &text[..],
        b"Success: LoRA adapter 'vl' removed successfully."
    );
    let resp = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(&chat)
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), 404, "gone once unloaded");
    let resp = test::call_service(&app, call("/v1/unload_lora_adapter", unload, Some("tok"))).await;
    assert_eq!(resp.status(), 404);
}
