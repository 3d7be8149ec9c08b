//! Counters the engine updates and the server's `/metrics` reads; lock-free atomics.

use crate::BankStats;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct EngineMetrics {
    queue_depth: AtomicU64,
    running: AtomicU64,
    steps: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    finished: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    admission_nanos: AtomicU64,
    forward_nanos: AtomicU64,
    bank: Mutex<BankStats>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub queue_depth: u64,
    pub running: u64,
    pub steps: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub finished: u64,
    pub cancelled: u64,
    pub failed: u64,
    /// Engine-thread time spent admitting requests (planning, leasing, writing bank slots)
    /// and running forward passes, in seconds.
    pub admission_seconds: f64,
    pub forward_seconds: f64,
    pub bank: BankStats,
}

impl EngineMetrics {
    pub(super) fn queued(&self) {
        self.queue_depth.fetch_add(1, Relaxed);
    }
    pub(super) fn dequeued(&self) {
        self.queue_depth.fetch_sub(1, Relaxed);
    }
    pub(super) fn set_running(&self, n: usize) {
        self.running.store(n as u64, Relaxed);
    }
    pub(super) fn step(&self, prompt_tokens: usize, generated: usize) {
        self.steps.fetch_add(1, Relaxed);
        self.prompt_tokens.fetch_add(prompt_tokens as u64, Relaxed);
        self.generated_tokens.fetch_add(generated as u64, Relaxed);
    }
    pub(super) fn finished(&self) {
        self.finished.fetch_add(1, Relaxed);
    }
    pub(super) fn cancelled(&self) {
        self.cancelled.fetch_add(1, Relaxed);
    }
    pub(super) fn failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }
    pub(super) fn timed(&self, admission: std::time::Duration, forward: std::time::Duration) {
        self.admission_nanos
            .fetch_add(admission.as_nanos() as u64, Relaxed);
        self.forward_nanos
            .fetch_add(forward.as_nanos() as u64, Relaxed);
    }
    pub(super) fn set_bank(&self, stats: BankStats) {
        if let Ok(mut b) = self.bank.lock() {
            *b = stats;
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            queue_depth: self.queue_depth.load(Relaxed),
            running: self.running.load(Relaxed),
            steps: self.steps.load(Relaxed),
            prompt_tokens: self.prompt_tokens.load(Relaxed),
            generated_tokens: self.generated_tokens.load(Relaxed),
            finished: self.finished.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            failed: self.failed.load(Relaxed),
            admission_seconds: self.admission_nanos.load(Relaxed) as f64 * 1e-9,
            forward_seconds: self.forward_nanos.load(Relaxed) as f64 * 1e-9,
            bank: self.bank.lock().map(|b| *b).unwrap_or_default(),
        }
    }
}
