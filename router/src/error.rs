//! The one public error type of the router crate.

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Index(#[from] loramux_index::IndexError),
    #[error(transparent)]
    Runtime(#[from] loramux_runtime::RuntimeError),
    #[error(transparent)]
    InvalidAdapterId(#[from] loramux_types::InvalidAdapterId),
    #[error("adapter {id} is not registered")]
    UnknownAdapter { id: String },
    #[error("invalid adapter choice: {reason}")]
    InvalidChoice { reason: String },
    #[error("router config: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("gate {}: {reason}", path.display())]
    Gate {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("gate training: {reason}")]
    GateTraining { reason: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("the registry lock was poisoned by a panic in another thread")]
    Poisoned,
}

pub type Result<T> = std::result::Result<T, RouterError>;
