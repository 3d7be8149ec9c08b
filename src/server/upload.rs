//! `POST /v1/adapters` bodies: a JSON registration from an allowed path, or a multipart
//! upload of the two PEFT files plus the same fields. Uploads are written into a staging
//! folder inside the registry (always an allowed root), registered from there, and the
//! staging folder is removed whatever happens.

use super::catalog::Registration;
use super::errors::ApiError;
use actix_multipart::Multipart;
use actix_web::web::{Bytes, Payload};
use actix_web::HttpRequest;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};

/// Largest upload accepted for the two files together.
pub const MAX_UPLOAD_BYTES: usize = 512 << 20;

/// Removes the staging folders (`.upload-{pid}-{n}`) that a server process killed mid-upload
/// left in `root`; folders of processes still running (another server on the same registry)
/// are kept. Returns how many were removed.
pub fn sweep_stale_staging(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".upload-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes a staging folder when dropped.
pub struct Staging(pub PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn is_multipart(req: &HttpRequest) -> bool {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"))
}

pub async fn read_json(mut payload: Payload, limit: usize) -> Result<Registration, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk: Bytes = chunk.map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(format!(
                "the body exceeds {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

/// Streams a multipart body into `staging`; returns the registration pointing at it.
pub async fn read_multipart(
    req: &HttpRequest,
    payload: Payload,
    staging: &Path,
) -> Result<Registration, ApiError> {
    let io = |e: std::io::Error| ApiError::Internal(format!("staging upload: {e}"));
    std::fs::create_dir_all(staging).map_err(io)?;
    let mut form = Multipart::new(req.headers(), payload);
    let mut reg = Registration {
        id: String::new(),
        path: staging.to_path_buf(),
        description: String::new(),
        examples: Vec::new(),
        tags: Vec::new(),
        replace: false,
    };
    let mut total = 0usize;
    let mut files = 0;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| ApiError::InvalidRequest(format!("multipart: {e}")))?;
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field
            .bytes(MAX_UPLOAD_BYTES.saturating_sub(total))
            .await
            .map_err(|_| {
                ApiError::TooLarge(format!("the upload exceeds {MAX_UPLOAD_BYTES} bytes"))
            })?
            .map_err(|e| ApiError::InvalidRequest(format!("multipart field {name}: {e}")))?;
        total += bytes.len();
        let text = || {
            String::from_utf8(bytes.to_vec())
                .map_err(|_| ApiError::InvalidRequest(format!("field {name} is not UTF-8")))
        };
        match name.as_str() {
            "id" => reg.id = text()?,
            "description" => reg.description = text()?,
            "examples" => {
                reg.examples = serde_json::from_str(&text()?).map_err(|e| {
                    ApiError::InvalidRequest(format!(
                        "examples must be a JSON array of strings: {e}"
                    ))
                })?
            }
            "tags" => {
                reg.tags = text()?
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect()
            }
            "replace" => reg.replace = text()?.trim() == "true",
            "adapter_config.json" | "adapter_model.safetensors" => {
                std::fs::write(staging.join(&name), &bytes).map_err(io)?;
                files += 1;
            }
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "unexpected multipart field {other:?}"
                )))
            }
        }
    }
    if files != 2 {
        return Err(ApiError::InvalidRequest(
            "a multipart upload needs the fields adapter_config.json and adapter_model.safetensors"
                .into(),
        ));
    }
    Ok(reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_staging_of_dead_processes_is_swept_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        // u32::MAX is above Linux's pid limit: no such process runs.
        let dead = root.path().join(format!(".upload-{}-7", u32::MAX));
        let live = root.path().join(".upload-1-7");
        let own = root
            .path()
            .join(format!(".upload-{}-9", std::process::id()));
        let adapter = root.path().join("my-adapter");
        for d in [&dead, &live, &own, &adapter] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("adapter_model.safetensors"), b"partial").unwrap();
        }
        assert_eq!(sweep_stale_staging(root.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists() && own.exists() && adapter.exists());
    }
}
