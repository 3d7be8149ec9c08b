//! The OpenAI-compatible HTTP server. [`configure`] builds the routes so tests run the app
//! in-process; `loramux serve` only wires a model, an engine and a catalog into it.

mod body;
mod catalog;
mod errors;
mod gate_report;
mod generation;
mod logprobs;
mod metrics;
mod openai;
mod registry_catalog;
mod unsupported;
mod upload;
mod vllm_api;

pub use body::BodyTimeouts;
pub use catalog::{AdapterCatalog, CatalogEntry, CatalogError, DirCatalog, Registration};
pub use errors::ApiError;
pub use metrics::ServerMetrics;
pub use registry_catalog::RegistryCatalog;
pub use upload::sweep_stale_staging;

use actix_web::{web, HttpRequest, HttpResponse};
use generation::Kind;
use loramux_runtime::engine::EngineHandle;
use loramux_runtime::{BaseModel, ChatMessage, HostCache};
use openai::{ChatRequest, CompletionRequest};
use serde_json::json;
use std::sync::Arc;

/// Request limits; past them the server answers 4xx before any work is queued.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_prompt_tokens: usize,
    pub max_tokens: usize,
    pub default_max_tokens: usize,
    /// How slowly a request body may arrive before the server answers 408.
    pub body: BodyTimeouts,
    /// Adapter uploads staged at once; more are answered 429.
    pub max_concurrent_uploads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_prompt_tokens: 4096,
            max_tokens: 2048,
            default_max_tokens: 256,
            body: BodyTimeouts::default(),
            max_concurrent_uploads: 2,
        }
    }
}

pub struct ServerState {
    pub base: Arc<BaseModel>,
    pub base_name: String,
    pub engine: EngineHandle,
    pub catalog: Arc<dyn AdapterCatalog>,
    /// Adapters in host memory, bounded in bytes; the bank holds the resident slots.
    pub adapters: HostCache,
    pub limits: Limits,
    pub metrics: ServerMetrics,
    /// Bearer token required by the admin endpoints (registration, deletion), when set.
    pub admin_token: Option<String>,
    /// Experts per token of the engine's learned gate, when it has one: `auto` requests
    /// are then mixed per token by the gate.
    pub gate_top_k: Option<usize>,
    /// One permit per upload being staged (`limits.max_concurrent_uploads` in all).
    pub upload_permits: tokio::sync::Semaphore,
}

/// Registers every route and the JSON limits on an actix app.
pub fn configure(state: Arc<ServerState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(state))
            .route("/v1/chat/completions", web::post().to(chat))
            .route("/v1/completions", web::post().to(completions))
            .route("/v1/models", web::get().to(models))
            .route("/v1/route", web::post().to(route))
            .route("/v1/adapters", web::get().to(list_adapters))
            .route("/v1/adapters", web::post().to(register_adapter))
            .route("/v1/adapters/{id}", web::get().to(get_adapter))
            .route("/v1/adapters/{id}", web::delete().to(delete_adapter))
            .route("/v1/load_lora_adapter", web::post().to(vllm_api::load))
            .route("/v1/unload_lora_adapter", web::post().to(vllm_api::unload))
            .route("/health", web::get().to(health))
            .route("/metrics", web::get().to(metrics_text))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::NotFound)
            }));
    }
}

fn record(
    state: &ServerState,
    endpoint: &'static str,
    result: Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => actix_web::ResponseError::status_code(e).as_u16(),
    };
    state.metrics.request(endpoint, status);
    result
}

/// Reads a JSON request body under the server's size and time limits.
async fn json_body<T: serde::de::DeserializeOwned>(
    state: &ServerState,
    payload: web::Payload,
) -> Result<T, ApiError> {
    body::read_json(payload, state.limits.max_body_bytes, state.limits.body).await
}

async fn chat(
    state: web::Data<ServerState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let result = async {
        let ChatRequest { messages, params } = json_body(&state, payload).await?;
        if messages.is_empty() {
            return Err(ApiError::InvalidRequest("`messages` is empty".into()));
        }
        if let Some(m) = messages
            .iter()
            .find(|m| !["system", "user", "assistant"].contains(&m.role.as_str()))
        {
            return Err(ApiError::InvalidRequest(format!(
                "unsupported message role {:?} (system, user or assistant)",
                errors::clip(&m.role)
            )));
        }
        let messages: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Ok(ChatMessage::new(m.role.clone(), m.text(i)?)))
            .collect::<Result<_, ApiError>>()?;
        // Retrieval looks at what the user asked last.
        let routing_text = messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .unwrap_or_default();
        // Tokenizing, routing (an embedding) and reading adapter files block: keep them off
        // the async workers.
        let st = state.clone();
        let prepared = web::block(move || {
            let ids = st.base.chat_ids(&messages)?;
            generation::validate(&st, Kind::Chat, params, ids, &routing_text)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        generation::respond(state.clone(), prepared).await
    }
    .await;
    record(&state, "chat_completions", result)
}

async fn completions(
    state: web::Data<ServerState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let result = async {
        let CompletionRequest { prompt, params } = json_body(&state, payload).await?;
        let prompt = prompt.single()?;
        let st = state.clone();
        let prepared = web::block(move || {
            let (ids, text) = match prompt {
                openai::Prompt::Text(text) => (st.base.raw_ids(&text)?, text),
                openai::Prompt::Tokens(ids) => {
                    let vocab = st.base.model.config().vocab_size;
                    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                        return Err(ApiError::InvalidRequest(format!(
                            "token id {bad} in `prompt` is outside the {vocab}-token vocabulary"
                        )));
                    }
                    let text = st.base.tokenizer.decode(&ids, false)?;
                    (ids, text)
                }
            };
            if ids.is_empty() {
                return Err(ApiError::InvalidRequest("`prompt` is empty".into()));
            }
            generation::validate(&st, Kind::Text, params, ids, &text)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        generation::respond(state.clone(), prepared).await
    }
    .await;
    record(&state, "completions", result)
}

/// The served models as OpenAI lists them, with vLLM's `parent` (an adapter's base model)
/// and `root`, which gateways read to tell adapters from base models.
async fn models(state: web::Data<ServerState>) -> HttpResponse {
    let base = state.base_name.as_str();
    let mut data = vec![
        json!({"id": "auto", "object": "model", "owned_by": "loramux", "root": base, "parent": null}),
        json!({"id": base, "object": "model", "owned_by": "loramux", "kind": "base", "root": base, "parent": null}),
    ];
    for e in state.catalog.list() {
        // vLLM's `root` is the adapter's path; the server's folders are not the client's
        // business, so loramux names the adapter itself.
        data.push(
            json!({"id": e.id.as_str(), "object": "model", "owned_by": "loramux",
            "kind": "adapter", "description": e.description, "root": e.id.as_str(),
            "parent": base}),
        );
    }
    state.metrics.request("models", 200);
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

async fn health(state: web::Data<ServerState>) -> HttpResponse {
    let m = state.engine.metrics().snapshot();
    HttpResponse::Ok()
        .json(json!({"status": "ok", "running": m.running, "queue_depth": m.queue_depth}))
}

async fn metrics_text(
    state: web::Data<ServerState>,
    _req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let body = state
        .metrics
        .render(&state.engine.metrics().snapshot())
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(body))
}

#[derive(serde::Deserialize)]
struct RouteRequest {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<openai::ChatMessageIn>>,
    #[serde(flatten)]
    params: openai::CommonParams,
}

/// Explains the routing decision for a prompt without generating.
async fn route(
    state: web::Data<ServerState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    let RouteRequest {
        prompt,
        messages,
        params,
    } = json_body(&state, payload).await?;
    let text = match (prompt, messages) {
        (Some(p), _) => p,
        (None, Some(m)) => match m.iter().enumerate().rev().find(|(_, m)| m.role == "user") {
            Some((i, m)) => m.text(i)?,
            None => String::new(),
        },
        (None, None) => {
            return Err(ApiError::InvalidRequest(
                "give `prompt` or `messages`".into(),
            ))
        }
    };
    let st = state.clone();
    let routing =
        web::block(move || generation::explain(&st, &params.model, params.adapters, &text))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    state.metrics.request("route", 200);
    Ok(HttpResponse::Ok().json(json!({"routing": routing})))
}

fn entry_json(e: &CatalogEntry) -> serde_json::Value {
    json!({"id": e.id.as_str(), "object": "adapter", "description": e.description})
}

async fn list_adapters(state: web::Data<ServerState>) -> HttpResponse {
    let data: Vec<_> = state.catalog.list().iter().map(entry_json).collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

async fn get_adapter(
    state: web::Data<ServerState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let entry = state
        .catalog
        .get(&id)
        .ok_or_else(|| ApiError::UnknownModel(id.into_inner()))?;
    Ok(HttpResponse::Ok().json(entry_json(&entry)))
}

/// Constant-time comparison so the token cannot be guessed byte by byte from timings.
pub(crate) fn authorize(state: &ServerState, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(token) = &state.admin_token else {
        return Ok(());
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn catalog_error(e: CatalogError) -> ApiError {
    match e {
        CatalogError::Rejected(why) => ApiError::InvalidRequest(why),
        CatalogError::Conflict(why) => ApiError::Conflict(why),
        CatalogError::NotFound(id) => ApiError::UnknownModel(id),
        CatalogError::ReadOnly => ApiError::InvalidRequest(
            "this server's adapter catalog is read-only (started with --adapters-dir)".into(),
        ),
        CatalogError::Internal(why) => ApiError::Internal(why),
    }
}

async fn register_adapter(
    state: web::Data<ServerState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let mut _staging = None;
    let mut staging_dir = None;
    let _permit;
    let registration = if upload::is_multipart(&req) {
        _permit = state
            .upload_permits
            .try_acquire()
            .map_err(|_| ApiError::Overloaded)?;
        let root = state
            .catalog
            .upload_dir()
            .ok_or_else(|| catalog_error(CatalogError::ReadOnly))?;
        let dir = root.join(format!(
            ".upload-{}-{}",
            std::process::id(),
            generation::request_id()
        ));
        let reg = upload::read_multipart(&req, payload, &dir, state.limits.body).await;
        staging_dir = Some(dir.display().to_string());
        _staging = Some(upload::Staging(dir));
        reg?
    } else {
        json_body(&state, payload).await?
    };
    let entry = register(&state, registration, staging_dir.as_deref()).await?;
    state.metrics.request("adapters_register", 201);
    Ok(HttpResponse::Created().json(entry_json(&entry)))
}

async fn delete_adapter(
    state: web::Data<ServerState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let id = id.into_inner();
    unregister(&state, &id).await?;
    Ok(HttpResponse::Ok().json(json!({"id": id, "deleted": true})))
}

/// Registers an adapter in the catalog: reserved ids refused, the registry's folders
/// redacted from what the client is told, the host cache's stale copy forgotten.
async fn register(
    state: &web::Data<ServerState>,
    registration: Registration,
    staging_dir: Option<&str>,
) -> Result<CatalogEntry, ApiError> {
    let reserved = ["auto", "base", state.base_name.as_str()];
    if reserved.contains(&registration.id.as_str()) {
        return Err(ApiError::InvalidRequest(format!(
            "the id {:?} is reserved: `model` uses it for {}",
            registration.id,
            if registration.id == "auto" {
                "automatic routing"
            } else {
                "the base model"
            }
        )));
    }
    let st = state.clone().into_inner();
    let entry = web::block(move || st.catalog.register(registration))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| {
            // The registry's own folders (uploads and its staging copies) are the server's
            // paths: the client is told which file, not where the server keeps it.
            let e = match staging_dir {
                Some(dir) => e.redact(dir, "the uploaded files"),
                None => e,
            };
            match state
                .catalog
                .upload_dir()
                .as_deref()
                .and_then(std::path::Path::parent)
            {
                Some(root) => catalog_error(e.redact(&root.display().to_string(), "<registry>")),
                None => catalog_error(e),
            }
        })?;
    state.adapters.forget(&entry.id);
    Ok(entry)
}

/// Removes an adapter from the catalog and forgets its host-cache copy.
async fn unregister(state: &web::Data<ServerState>, id: &str) -> Result<(), ApiError> {
    let st = state.clone().into_inner();
    let target = id.to_string();
    web::block(move || st.catalog.remove(&target))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(catalog_error)?;
    if let Ok(aid) = loramux_runtime::AdapterId::new(id) {
        state.adapters.forget(&aid);
    }
    Ok(())
}
