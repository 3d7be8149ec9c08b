//! `POST /v1/adapters` bodies: a JSON registration from an allowed path, or a multipart
//! upload of the two PEFT files plus the same fields. Uploads are written into a staging
//! folder inside the registry (always an allowed root), registered from there, and the
//! staging folder is removed whatever happens.

use super::body::{guarded, payload_error, BodyTimeouts};
use super::catalog::Registration;
use super::errors::{clip, ApiError};
use actix_multipart::{Multipart, MultipartError};
use actix_web::web::Payload;
use actix_web::HttpRequest;
use futures_util::StreamExt;
use std::io::Write;
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

/// Streams a multipart body into `staging`, file fields chunk by chunk straight to disk (at
/// most `MAX_UPLOAD_BYTES` in all, under `timeouts`); returns the registration pointing at it.
pub async fn read_multipart(
    req: &HttpRequest,
    payload: Payload,
    staging: &Path,
    timeouts: BodyTimeouts,
) -> Result<Registration, ApiError> {
    let io = |e: std::io::Error| ApiError::Internal(format!("staging upload: {e}"));
    std::fs::create_dir_all(staging).map_err(io)?;
    let mut form = Multipart::new(req.headers(), guarded(payload, timeouts));
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
        let mut field = field.map_err(|e| multipart_error("", e))?;
        let name = field.name().unwrap_or_default().to_string();
        let mut sink = match name.as_str() {
            "adapter_config.json" | "adapter_model.safetensors" => {
                if staging.join(&name).exists() {
                    return Err(ApiError::InvalidRequest(format!(
                        "the multipart field {name} is given twice"
                    )));
                }
                files += 1;
                Sink::File(std::fs::File::create(staging.join(&name)).map_err(io)?)
            }
            "id" | "description" | "examples" | "tags" | "replace" => Sink::Text(Vec::new()),
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "unexpected multipart field {:?}",
                    clip(other)
                )))
            }
        };
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| multipart_error(&name, e))?;
            total += chunk.len();
            if total > MAX_UPLOAD_BYTES {
                return Err(ApiError::TooLarge(format!(
                    "the upload exceeds {MAX_UPLOAD_BYTES} bytes"
                )));
            }
            match &mut sink {
                Sink::File(file) => file.write_all(&chunk).map_err(io)?,
                Sink::Text(text) if text.len() + chunk.len() > MAX_TEXT_FIELD_BYTES => {
                    return Err(ApiError::TooLarge(format!(
                        "field {name} exceeds {MAX_TEXT_FIELD_BYTES} bytes"
                    )))
                }
                Sink::Text(text) => text.extend_from_slice(&chunk),
            }
        }
        let Sink::Text(bytes) = sink else {
            continue;
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| ApiError::InvalidRequest(format!("field {name} is not UTF-8")))?;
        match name.as_str() {
            "id" => reg.id = text,
            "description" => reg.description = text,
            "examples" => {
                reg.examples = serde_json::from_str(&text).map_err(|e| {
                    ApiError::InvalidRequest(format!(
                        "examples must be a JSON array of strings: {e}"
                    ))
                })?
            }
            "tags" => {
                reg.tags = text
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect()
            }
            _ => reg.replace = text.trim() == "true",
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

/// Where a multipart field's bytes go: the adapter's files to the staging folder, the
/// registration's text fields to memory.
enum Sink {
    File(std::fs::File),
    Text(Vec<u8>),
}

/// Largest text field (`description`, `examples`, ...) of an upload.
const MAX_TEXT_FIELD_BYTES: usize = 1 << 20;

fn multipart_error(field: &str, e: MultipartError) -> ApiError {
    match e {
        MultipartError::Payload(p) => payload_error(&p),
        other if field.is_empty() => ApiError::InvalidRequest(format!("multipart: {other}")),
        other => ApiError::InvalidRequest(format!("multipart field {field}: {other}")),
    }
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
