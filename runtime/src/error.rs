//! The one public error type of the runtime crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file {path}: {reason}")]
    ModelFormat { path: PathBuf, reason: String },
    #[error("model is missing tensor {name}")]
    MissingTensor { name: String },
    #[error("tensor {name}: expected shape {expected:?}, found {found:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("unsupported model: {reason}")]
    UnsupportedModel { reason: String },
    /// A config field that would change the computation in a way loramux does not implement.
    #[error("{}: {field} = {value}: {reason}", file.display())]
    UnsupportedConfig {
        file: PathBuf,
        field: String,
        value: String,
        reason: String,
    },
    #[error("adapter {path}: {reason}")]
    Adapter { path: PathBuf, reason: String },
    #[error("adapter {path}, tensor {tensor}: {reason}")]
    AdapterTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error(transparent)]
    InvalidAdapterId(#[from] loramux_types::InvalidAdapterId),
    #[error("adapter {id} (built in memory): {reason}")]
    AdapterParts { id: String, reason: String },
    #[error("adapter {id} does not fit the adapter bank: {reason}")]
    AdapterDoesNotFit { id: String, reason: String },
    #[error("adapter bank is full: all {slots} slots are pinned by running sequences")]
    BankFull { slots: usize },
    #[error("bank config: {field} = {value}: {reason}")]
    BankConfig {
        field: &'static str,
        value: usize,
        reason: &'static str,
    },
    #[error("tokenizer: {reason}")]
    Tokenizer { reason: String },
    #[error("chat template: {reason}")]
    ChatTemplate { reason: String },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("models are missing: {what}. Run `{fix}` first")]
    ModelsMissing { what: String, fix: String },
    #[error("device {device} is unavailable: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    #[error("model fetch failed: {reason}")]
    Fetch { reason: String },
    #[error(transparent)]
    Kernel(#[from] loramux_kernels::KernelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

impl RuntimeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
