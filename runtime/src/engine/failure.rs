//! Why the engine could not serve a request, typed so the server maps each kind to its own
//! HTTP status: the client's fault, a capacity limit worth retrying, or a fault of ours
//! (whose details belong in the log, not in the response).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request itself cannot be served (empty prompt, too long for the context,
    /// invalid sampling, an adapter the bank cannot hold).
    Request,
    /// Not now: no bank slot or memory for it; the same request may succeed later.
    Capacity,
    /// The engine failed (a forward pass error); nothing the client did.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl EngineFailure {
    pub fn request(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Request,
            message: message.into(),
        }
    }

    pub fn capacity(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Capacity,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Internal,
            message: message.into(),
        }
    }

    /// The failure an adapter lease error stands for.
    pub fn from_lease(e: &crate::RuntimeError) -> Self {
        use crate::RuntimeError as R;
        match e {
            R::BankFull { .. } => Self::capacity(e.to_string()),
            R::AdapterDoesNotFit { .. } => Self::request(e.to_string()),
            _ => Self::internal(e.to_string()),
        }
    }
}
