//! Server-side metrics and the Prometheus text exposition of them plus the engine's.

use dashmap::DashMap;
use loramux_runtime::engine::MetricsSnapshot;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Cumulative histogram with fixed bucket bounds in seconds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if s <= *b {
                c.fetch_add(1, Relaxed);
            }
        }
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Relaxed));
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

const TTFT_BOUNDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const TOKEN_BOUNDS: &[f64] = &[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

pub struct ServerMetrics {
    requests: DashMap<(&'static str, u16), u64>,
    routed: DashMap<String, u64>,
    tokens: AtomicU64,
    ttft: Histogram,
    inter_token: Histogram,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self {
            requests: DashMap::new(),
            routed: DashMap::new(),
            tokens: AtomicU64::new(0),
            ttft: Histogram::new(TTFT_BOUNDS),
            inter_token: Histogram::new(TOKEN_BOUNDS),
        }
    }
}

impl ServerMetrics {
    pub fn request(&self, endpoint: &'static str, status: u16) {
        *self.requests.entry((endpoint, status)).or_insert(0) += 1;
    }
    pub fn routed(&self, adapter: &str) {
        *self.routed.entry(adapter.to_string()).or_insert(0) += 1;
    }
    pub fn tokens(&self, n: u64) {
        self.tokens.fetch_add(n, Relaxed);
    }
    pub fn ttft(&self, d: Duration) {
        self.ttft.observe(d);
    }
    pub fn inter_token(&self, d: Duration) {
        self.inter_token.observe(d);
    }

    pub fn render(&self, engine: &MetricsSnapshot) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP loramux_requests_total HTTP requests by endpoint and status.\n# TYPE loramux_requests_total counter");
        let mut rows: Vec<_> = self
            .requests
            .iter()
            .map(|e| (*e.key(), *e.value()))
            .collect();
        rows.sort();
        for ((endpoint, status), n) in rows {
            let _ = writeln!(
                out,
                "loramux_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP loramux_routing_decisions_total Requests that used each adapter.\n# TYPE loramux_routing_decisions_total counter");
        let mut routed: Vec<_> = self
            .routed
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        routed.sort();
        for (adapter, n) in routed {
            let _ = writeln!(
                out,
                "loramux_routing_decisions_total{{adapter=\"{adapter}\"}} {n}"
            );
        }
        let gauges = [
            (
                "loramux_queue_depth",
                "Requests waiting for the engine.",
                engine.queue_depth,
            ),
            (
                "loramux_running_sequences",
                "Sequences in the batch.",
                engine.running,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let counters = [
            (
                "loramux_generated_tokens_total",
                "Tokens generated.",
                engine.generated_tokens,
            ),
            (
                "loramux_prompt_tokens_total",
                "Prompt tokens prefilled.",
                engine.prompt_tokens,
            ),
            (
                "loramux_engine_steps_total",
                "Batched forward steps.",
                engine.steps,
            ),
            (
                "loramux_sequences_finished_total",
                "Sequences finished.",
                engine.finished,
            ),
            (
                "loramux_sequences_cancelled_total",
                "Sequences cancelled by their client.",
                engine.cancelled,
            ),
            (
                "loramux_sequences_failed_total",
                "Sequences refused or failed.",
                engine.failed,
            ),
            (
                "loramux_adapter_cache_hits_total",
                "Adapter bank hits.",
                engine.bank.hits,
            ),
            (
                "loramux_adapter_cache_misses_total",
                "Adapter bank misses.",
                engine.bank.misses,
            ),
            (
                "loramux_adapter_cache_loads_total",
                "Adapters written into the bank.",
                engine.bank.loads,
            ),
            (
                "loramux_adapter_cache_evictions_total",
                "Adapters evicted from the bank.",
                engine.bank.evictions,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        for (name, help, v) in [
            (
                "loramux_engine_admission_seconds_total",
                "Engine-thread time admitting requests: planning, leasing, writing bank slots.",
                engine.admission_seconds,
            ),
            (
                "loramux_engine_forward_seconds_total",
                "Engine-thread time in batched forward passes and sampling.",
                engine.forward_seconds,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v:.6}"
            );
        }
        self.ttft.render(
            "loramux_time_to_first_token_seconds",
            "Time from submission to the first token.",
            &mut out,
        );
        self.inter_token.render(
            "loramux_inter_token_latency_seconds",
            "Time between consecutive tokens of a sequence.",
            &mut out,
        );
        out
    }
}
