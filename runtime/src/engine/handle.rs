//! The cloneable handle through which servers and tools submit requests.

use super::{EngineMetrics, EngineRequest};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<EngineRequest>,
    metrics: Arc<EngineMetrics>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the engine queue is full")]
    QueueFull,
    #[error("the engine has stopped")]
    Stopped,
}

impl EngineHandle {
    pub(super) fn new(tx: SyncSender<EngineRequest>, metrics: Arc<EngineMetrics>) -> Self {
        Self { tx, metrics }
    }

    /// Queues a request without waiting: a full queue is an immediate `QueueFull` (429).
    pub fn submit(&self, request: EngineRequest) -> Result<(), SubmitError> {
        match self.tx.try_send(request) {
            Ok(()) => {
                self.metrics.queued();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }
}
