//! Every API error in one place: a stable snake_case code, an HTTP status, and a JSON body
//! `{"error": {"code", "message"}}`. Internal details never reach clients.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use loramux_runtime::engine::{EngineFailure, FailureKind};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    /// An OpenAI field loramux does not implement, with a value that would change the answer.
    #[error("unsupported parameter `{field}`: {reason}")]
    UnsupportedParameter { field: String, reason: String },
    #[error("unknown model or adapter {:?}", clip(.0))]
    UnknownModel(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("the server is at capacity; retry later")]
    Overloaded,
    /// The engine cannot take the request now (no adapter slot or memory for it).
    #[error("{0}; retry later")]
    Unavailable(String),
    /// The client sent its body too slowly (see `body::BodyTimeouts`).
    #[error("{0}")]
    Timeout(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
}

/// A client's string as an error message shows it: at most 64 characters, so a huge id is
/// not echoed back whole.
pub fn clip(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// What a 429 or 503 asks the client to wait: about one engine step's backlog.
const RETRY_AFTER_SECONDS: u32 = 1;

impl ApiError {
    /// The message a client sees: internal details go to the log only.
    pub fn client_message(&self) -> String {
        match self {
            Self::Internal(detail) => {
                tracing::error!("internal error: {detail}");
                "internal error".to_string()
            }
            other => other.to_string(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnsupportedParameter { .. } => "unsupported_parameter",
            Self::UnknownModel(_) => "model_not_found",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "request_too_large",
            Self::Overloaded => "overloaded",
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "request_timeout",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) | Self::UnsupportedParameter { .. } => StatusCode::BAD_REQUEST,
            Self::UnknownModel(_) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unavailable(_) | Self::Overloaded) {
            response.insert_header(("Retry-After", RETRY_AFTER_SECONDS.to_string()));
        }
        response.json(Body {
            error: Inner {
                code: self.code(),
                message: self.client_message(),
            },
        })
    }
}

impl From<loramux_runtime::RuntimeError> for ApiError {
    fn from(e: loramux_runtime::RuntimeError) -> Self {
        use loramux_runtime::RuntimeError as R;
        match e {
            R::InvalidRequest { reason } => Self::InvalidRequest(reason),
            R::ChatTemplate { reason } => Self::InvalidRequest(format!("chat template: {reason}")),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<EngineFailure> for ApiError {
    fn from(e: EngineFailure) -> Self {
        match e.kind {
            FailureKind::Request => Self::InvalidRequest(e.message),
            FailureKind::Capacity => Self::Unavailable(e.message),
            FailureKind::Internal => Self::Internal(e.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_web::test]
    async fn errors_map_to_status_and_stable_codes_and_hide_internals() {
        let cases = [
            (ApiError::InvalidRequest("x".into()), 400, "invalid_request"),
            (ApiError::UnknownModel("m".into()), 404, "model_not_found"),
            (ApiError::TooLarge("big".into()), 413, "request_too_large"),
            (ApiError::Overloaded, 429, "overloaded"),
            (
                EngineFailure::capacity("every bank slot is pinned").into(),
                503,
                "unavailable",
            ),
            (
                EngineFailure::request("the prompt is empty").into(),
                400,
                "invalid_request",
            ),
            (
                EngineFailure::internal("secret forward failure").into(),
                500,
                "internal_error",
            ),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::Timeout("slow".into()), 408, "request_timeout"),
            (
                ApiError::Internal("secret path /etc".into()),
                500,
                "internal_error",
            ),
        ];
        for (err, status, code) in cases {
            let resp = err.error_response();
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(
                resp.headers().contains_key("retry-after"),
                matches!(status, 429 | 503),
                "{code}"
            );
            let body = to_bytes(resp.into_body()).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], code);
            assert!(!v["error"]["message"].as_str().unwrap().contains("secret"));
        }
    }
}
