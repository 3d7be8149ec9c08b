//! vLLM's dynamic-adapter endpoints, onto the same registry, auth and path confinement as
//! `/v1/adapters`, so tools written for vLLM (the inference gateways' adapter syncers, scripts)
//! manage loramux's adapters unchanged. Answers are vLLM's: plain-text success lines, JSON
//! errors.

use super::errors::ApiError;
use super::{authorize, json_body, register, unregister, Registration, ServerState};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadLora {
    lora_name: String,
    lora_path: std::path::PathBuf,
    /// vLLM's id for the adapter's base model; loramux serves one base, so only its name
    /// (or nothing) is accepted.
    #[serde(default)]
    base_model_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnloadLora {
    lora_name: String,
    /// vLLM's integer id: ignored by vLLM itself when `lora_name` is given.
    #[serde(default)]
    lora_int_id: Option<i64>,
}

/// `POST /v1/load_lora_adapter`: registers `lora_path` as adapter `lora_name`. vLLM has no
/// description; the registry needs one, so the adapter is described by its name: it is
/// served by name, and `auto` retrieves it only for prompts close to that name.
pub async fn load(
    state: web::Data<ServerState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let body: LoadLora = json_body(&state, payload).await?;
    if let Some(base) = body.base_model_name.filter(|b| b != &state.base_name) {
        return Err(ApiError::InvalidRequest(format!(
            "base_model_name {:?}: this server serves {:?} only",
            super::errors::clip(&base),
            state.base_name
        )));
    }
    let name = body.lora_name.clone();
    let entry = register(
        &state,
        Registration {
            description: body.lora_name.clone(),
            id: body.lora_name,
            path: body.lora_path,
            examples: Vec::new(),
            tags: Vec::new(),
            replace: false,
        },
        None,
    )
    .await?;
    state.metrics.request("load_lora_adapter", 200);
    tracing::info!(id = %entry.id, "adapter loaded through the vLLM API");
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!(
            "Success: LoRA adapter '{name}' added successfully."
        )))
}

/// `POST /v1/unload_lora_adapter`: removes adapter `lora_name`.
pub async fn unload(
    state: web::Data<ServerState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let body: UnloadLora = json_body(&state, payload).await?;
    let _ = body.lora_int_id;
    unregister(&state, &body.lora_name).await?;
    state.metrics.request("unload_lora_adapter", 200);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!(
            "Success: LoRA adapter '{}' removed successfully.",
            body.lora_name
        )))
}
