//! Counters and gauges the engine thread updates and the server's `/metrics` reads:
//! lock-free atomics, plus one mutex for what cannot be an atomic (the bank's stats, the
//! adapter ids of the running and waiting sequences).

use crate::{AdapterId, BankStats};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Requests submitted that the engine thread has not taken from its queue yet.
    queue_depth: AtomicU64,
    /// Requests the engine thread holds that wait for admission.
    waiting: AtomicU64,
    running: AtomicU64,
    /// KV cache positions held by the running sequences, and the most the engine can hold
    /// (`max_running` sequences of the model's whole context).
    kv_positions: AtomicU64,
    kv_capacity: AtomicU64,
    steps: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    finished: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    admission_nanos: AtomicU64,
    forward_nanos: AtomicU64,
    bank: Mutex<BankStats>,
    lora: Mutex<LoraRequests>,
}

/// The adapters of the engine's sequences, as vLLM's `vllm:lora_requests_info` reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraRequests {
    /// Bank slots: how many adapters can run at once.
    pub max_lora: usize,
    /// The distinct adapters (catalog ids, sorted) of the running sequences.
    pub running: Vec<AdapterId>,
    /// The distinct adapters (catalog ids, sorted) of the requests waiting for admission.
    pub waiting: Vec<AdapterId>,
    /// Unix time in seconds when any of the above last changed (0 before the engine starts).
    pub updated_unix_seconds: f64,
}

/// What runs and waits in the engine, published by the engine thread after each change.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Occupancy {
    pub running: usize,
    pub waiting: usize,
    pub kv_positions: usize,
    pub running_adapters: Vec<AdapterId>,
    pub waiting_adapters: Vec<AdapterId>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Requests submitted and not taken by the engine thread yet.
    pub queue_depth: u64,
    /// Requests queued and not running yet: `queue_depth` plus those the engine thread
    /// holds until the admission planner lets them start.
    pub waiting: u64,
    pub running: u64,
    /// Fraction (0..=1) of the engine's KV cache capacity that running sequences hold:
    /// cached positions over `max_running` times the model's context.
    pub kv_cache_usage: f64,
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
    pub lora: LoraRequests,
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EngineMetrics {
    /// The engine's fixed sizes: KV positions it can hold and bank slots.
    pub(super) fn started(&self, kv_capacity: usize, max_lora: usize) {
        self.kv_capacity.store(kv_capacity as u64, Relaxed);
        if let Ok(mut l) = self.lora.lock() {
            l.max_lora = max_lora;
            l.updated_unix_seconds = unix_seconds();
        }
    }
    pub(super) fn queued(&self) {
        self.queue_depth.fetch_add(1, Relaxed);
    }
    pub(super) fn dequeued(&self) {
        // Saturating: tests push into an `EngineState` directly, without a queue.
        let _ = self
            .queue_depth
            .fetch_update(Relaxed, Relaxed, |d| Some(d.saturating_sub(1)));
    }
    /// Publishes what runs and waits; the adapter lists (and their time) change only when
    /// they differ from the last ones.
    pub(super) fn occupancy(&self, o: Occupancy) {
        self.running.store(o.running as u64, Relaxed);
        self.waiting.store(o.waiting as u64, Relaxed);
        self.kv_positions.store(o.kv_positions as u64, Relaxed);
        if let Ok(mut l) = self.lora.lock() {
            if l.running != o.running_adapters || l.waiting != o.waiting_adapters {
                l.running = o.running_adapters;
                l.waiting = o.waiting_adapters;
                l.updated_unix_seconds = unix_seconds();
            }
        }
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
        let queue_depth = self.queue_depth.load(Relaxed);
        let capacity = self.kv_capacity.load(Relaxed);
        let kv_cache_usage = if capacity == 0 {
            0.0
        } else {
            (self.kv_positions.load(Relaxed) as f64 / capacity as f64).min(1.0)
        };
        MetricsSnapshot {
            queue_depth,
            waiting: queue_depth + self.waiting.load(Relaxed),
            running: self.running.load(Relaxed),
            kv_cache_usage,
            steps: self.steps.load(Relaxed),
            prompt_tokens: self.prompt_tokens.load(Relaxed),
            generated_tokens: self.generated_tokens.load(Relaxed),
            finished: self.finished.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            failed: self.failed.load(Relaxed),
            admission_seconds: self.admission_nanos.load(Relaxed) as f64 * 1e-9,
            forward_seconds: self.forward_nanos.load(Relaxed) as f64 * 1e-9,
            bank: self.bank.lock().map(|b| *b).unwrap_or_default(),
            lora: self.lora.lock().map(|l| l.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<AdapterId> {
        names.iter().map(|n| AdapterId::new(n).unwrap()).collect()
    }

    #[test]
    fn occupancy_is_what_the_snapshot_reports_and_the_lists_keep_their_time_until_they_change() {
        let m = EngineMetrics::default();
        m.started(1000, 4);
        m.queued();
        m.occupancy(Occupancy {
            running: 2,
            waiting: 1,
            kv_positions: 250,
            running_adapters: ids(&["a", "b"]),
            waiting_adapters: ids(&["c"]),
        });
        let s = m.snapshot();
        assert_eq!((s.queue_depth, s.waiting, s.running), (1, 2, 2));
        assert_eq!(s.kv_cache_usage, 0.25);
        assert_eq!(s.lora.max_lora, 4);
        assert_eq!(s.lora.running, ids(&["a", "b"]));
        assert_eq!(s.lora.waiting, ids(&["c"]));
        let stamped = s.lora.updated_unix_seconds;
        assert!(stamped > 1.6e9, "{stamped}");
        // Same lists, more positions: the lists' time stays.
        m.occupancy(Occupancy {
            running: 2,
            waiting: 1,
            kv_positions: 300,
            running_adapters: ids(&["a", "b"]),
            waiting_adapters: ids(&["c"]),
        });
        assert_eq!(m.snapshot().lora.updated_unix_seconds, stamped);
        m.occupancy(Occupancy::default());
        let s = m.snapshot();
        assert_eq!((s.waiting, s.running, s.kv_cache_usage), (1, 0, 0.0));
        assert!(s.lora.running.is_empty() && s.lora.waiting.is_empty());
        assert!(s.lora.updated_unix_seconds >= stamped);
    }
}
