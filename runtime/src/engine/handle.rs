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
        // Counted before it is sent: the engine thread may take it (and count it out)
        // before `try_send` returns.
        self.metrics.queued();
        let refused = match self.tx.try_send(request) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => SubmitError::QueueFull,
            Err(TrySendError::Disconnected(_)) => SubmitError::Stopped,
        };
        self.metrics.dequeued();
        Err(refused)
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }
}
