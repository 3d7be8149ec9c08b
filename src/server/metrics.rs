//! `/metrics`: one Prometheus [`Registry`] holding the server's own series (HTTP requests,
//! routing decisions, latency histograms), the engine's counters and gauges as loramux
//! names them, and the series vLLM exports under its names, which the Kubernetes Gateway
//! API Inference Extension's endpoint picker reads (`vllm:num_requests_waiting`,
//! `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`, `vllm:lora_requests_info`).
//!
//! The engine publishes from its own thread into its `EngineMetrics`; a scrape takes one
//! snapshot of it, sets the engine's series from it and encodes the registry, under one lock
//! so concurrent scrapes never see each other's half-set values.

use loramux_runtime::engine::{LoraRequests, MetricsSnapshot};
use loramux_runtime::AdapterId;
use prometheus::core::Collector;
use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};
use std::sync::Mutex;
use std::time::Duration;

const TTFT_BOUNDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const TOKEN_BOUNDS: &[f64] = &[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

type Count = fn(&MetricsSnapshot) -> u64;
type Seconds = fn(&MetricsSnapshot) -> f64;

/// The engine's counters: name, help, and the snapshot's value.
const ENGINE_COUNTERS: &[(&str, &str, Count)] = &[
    ("loramux_generated_tokens_total", "Tokens generated.", |s| {
        s.generated_tokens
    }),
    (
        "loramux_prompt_tokens_total",
        "Prompt tokens prefilled.",
        |s| s.prompt_tokens,
    ),
    (
        "loramux_engine_steps_total",
        "Batched forward steps.",
        |s| s.steps,
    ),
    (
        "loramux_sequences_finished_total",
        "Sequences finished.",
        |s| s.finished,
    ),
    (
        "loramux_sequences_cancelled_total",
        "Sequences cancelled by their client.",
        |s| s.cancelled,
    ),
    (
        "loramux_sequences_failed_total",
        "Sequences refused or failed.",
        |s| s.failed,
    ),
    (
        "loramux_adapter_cache_hits_total",
        "Adapter bank hits.",
        |s| s.bank.hits,
    ),
    (
        "loramux_adapter_cache_misses_total",
        "Adapter bank misses.",
        |s| s.bank.misses,
    ),
    (
        "loramux_adapter_cache_loads_total",
        "Adapters written into the bank.",
        |s| s.bank.loads,
    ),
    (
        "loramux_adapter_cache_evictions_total",
        "Adapters evicted from the bank.",
        |s| s.bank.evictions,
    ),
];

const ENGINE_SECONDS: &[(&str, &str, Seconds)] = &[
    (
        "loramux_engine_admission_seconds_total",
        "Engine-thread time admitting requests: planning, leasing, writing bank slots.",
        |s| s.admission_seconds,
    ),
    (
        "loramux_engine_forward_seconds_total",
        "Engine-thread time in batched forward passes and sampling.",
        |s| s.forward_seconds,
    ),
];

const ENGINE_GAUGES: &[(&str, &str, Count)] = &[
    (
        "loramux_queue_depth",
        "Requests waiting for the engine.",
        |s| s.queue_depth,
    ),
    (
        "loramux_running_sequences",
        "Sequences in the batch.",
        |s| s.running,
    ),
    // vLLM's names and meanings, for the Gateway API Inference Extension.
    (
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        |s| s.running,
    ),
    (
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        |s| s.waiting,
    ),
];

const LORA_INFO: &str = "vllm:lora_requests_info";
const LORA_LABELS: [&str; 3] = ["max_lora", "running_lora_adapters", "waiting_lora_adapters"];

/// The engine's series, set from a snapshot at each scrape.
struct EngineSeries {
    counters: Vec<(IntCounter, Count)>,
    seconds: Vec<(Counter, Seconds)>,
    gauges: Vec<(IntGauge, Count)>,
    kv_usage: Gauge,
    lora: GaugeVec,
}

pub struct ServerMetrics {
    registry: Registry,
    requests: IntCounterVec,
    routed: IntCounterVec,
    response_tokens: IntCounter,
    ttft: Histogram,
    inter_token: Histogram,
    engine: EngineSeries,
    /// Held while a scrape sets the engine's series and encodes; holds the label values of
    /// the one `vllm:lora_requests_info` series exported now.
    scrape: Mutex<Option<[String; 3]>>,
}

/// Registers `metric`. The definitions are constants (valid names, unique in the
/// registry), which the unit tests below construct: a failure is a bug in this file.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("a valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("a metric name registered once");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, bounds: &[f64]) -> Histogram {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(bounds.to_vec())),
    )
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let r = Registry::new();
        let engine = EngineSeries {
            counters: ENGINE_COUNTERS
                .iter()
                .map(|&(name, help, get)| (register(&r, IntCounter::new(name, help)), get))
                .collect(),
            seconds: ENGINE_SECONDS
                .iter()
                .map(|&(name, help, get)| (register(&r, Counter::new(name, help)), get))
                .collect(),
            gauges: ENGINE_GAUGES
                .iter()
                .map(|&(name, help, get)| (register(&r, IntGauge::new(name, help)), get))
                .collect(),
            kv_usage: register(
                &r,
                Gauge::new(
                    "vllm:kv_cache_usage_perc",
                    "KV-cache usage. 1 means 100 percent usage.",
                ),
            ),
            lora: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        LORA_INFO,
                        "Running stats on lora requests: the adapters of the running and \
                         waiting requests; the value is the Unix time they last changed.",
                    ),
                    &LORA_LABELS,
                ),
            ),
        };
        Self {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "loramux_requests_total",
                        "HTTP requests by endpoint and status.",
                    ),
                    &["endpoint", "status"],
                ),
            ),
            routed: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "loramux_routing_decisions_total",
                        "Requests that used each adapter.",
                    ),
                    &["adapter"],
                ),
            ),
            response_tokens: register(
                &r,
                IntCounter::new(
                    "loramux_response_tokens_total",
                    "Tokens the server sent to its clients.",
                ),
            ),
            ttft: histogram(
                &r,
                "loramux_time_to_first_token_seconds",
                "Time from submission to the first token.",
                TTFT_BOUNDS,
            ),
            inter_token: histogram(
                &r,
                "loramux_inter_token_latency_seconds",
                "Time between consecutive tokens of a sequence.",
                TOKEN_BOUNDS,
            ),
            engine,
            registry: r,
            scrape: Mutex::new(None),
        }
    }
}

/// `vllm:lora_requests_info`'s label values: the bank's slots, then the running and the
/// waiting adapters' catalog ids, comma-separated (empty when none).
fn lora_labels(lora: &LoraRequests) -> [String; 3] {
    let join = |ids: &[AdapterId]| {
        ids.iter()
            .map(AdapterId::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    [
        lora.max_lora.to_string(),
        join(&lora.running),
        join(&lora.waiting),
    ]
}

impl ServerMetrics {
    pub fn request(&self, endpoint: &'static str, status: u16) {
        self.requests
            .with_label_values(&[endpoint, &status.to_string()])
            .inc();
    }
    pub fn routed(&self, adapter: &str) {
        self.routed.with_label_values(&[adapter]).inc();
    }
    pub fn tokens(&self, n: u64) {
        self.response_tokens.inc_by(n);
    }
    pub fn ttft(&self, d: Duration) {
        self.ttft.observe(d.as_secs_f64());
    }
    pub fn inter_token(&self, d: Duration) {
        self.inter_token.observe(d.as_secs_f64());
    }

    /// The Prometheus text exposition of every series, the engine's set from `engine`.
    pub fn render(&self, engine: &MetricsSnapshot) -> prometheus::Result<String> {
        // A scrape that panicked left the series as valid as any other scrape would.
        let mut lora_now = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let e = &self.engine;
        // The engine's counters are monotonic; a counter is set by reset and increment,
        // which no other scrape sees half done (the lock).
        for (counter, get) in &e.counters {
            counter.reset();
            counter.inc_by(get(engine));
        }
        for (counter, get) in &e.seconds {
            counter.reset();
            counter.inc_by(get(engine));
        }
        for (gauge, get) in &e.gauges {
            gauge.set(get(engine) as i64);
        }
        e.kv_usage.set(engine.kv_cache_usage);
        // vLLM exports one series with the current label values: the previous label set
        // goes when the adapters change.
        let labels = lora_labels(&engine.lora);
        if let Some(old) = lora_now.as_ref().filter(|old| **old != labels) {
            e.lora.remove_label_values(old)?;
        }
        e.lora
            .with_label_values(&labels)
            .set(engine.lora.updated_unix_seconds);
        *lora_now = Some(labels);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        drop(lora_now);
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prom_text_format_parser::{Scrape, Type};

    fn ids(names: &[&str]) -> Vec<AdapterId> {
        names.iter().map(|n| AdapterId::new(n).unwrap()).collect()
    }

    /// Each sample of `name`: its labels as (key, value) and its value.
    fn samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        let scrape = Scrape::parse(text).expect("valid Prometheus text");
        scrape
            .metrics
            .iter()
            .filter(|m| m.name == name)
            .flat_map(|m| &m.samples)
            .map(|s| {
                let labels = s
                    .labels
                    .iter()
                    .map(|l| (l.key.clone(), l.value.clone()))
                    .collect();
                (labels, s.value.value.as_f64())
            })
            .collect()
    }

    fn lora(running: &[&str], waiting: &[&str], at: f64) -> LoraRequests {
        LoraRequests {
            max_lora: 4,
            running: ids(running),
            waiting: ids(waiting),
            updated_unix_seconds: at,
        }
    }

    fn labels(max_lora: &str, running: &str, waiting: &str) -> Vec<(String, String)> {
        LORA_LABELS
            .iter()
            .zip([max_lora, running, waiting])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_snapshot_is_what_every_series_reports_under_its_type() {
        let m = ServerMetrics::default();
        m.request("completions", 200);
        m.request("completions", 200);
        m.routed("r8-qv");
        m.ttft(Duration::from_millis(30));
        let snapshot = MetricsSnapshot {
            queue_depth: 1,
            waiting: 3,
            running: 2,
            kv_cache_usage: 0.125,
            generated_tokens: 17,
            forward_seconds: 1.5,
            lora: lora(&["a", "b"], &["c"], 1.7e9),
            ..MetricsSnapshot::default()
        };
        let text = m.render(&snapshot).expect("renders");
        let scrape = Scrape::parse(&text).expect("valid Prometheus text");
        let kind = |name: &str| {
            scrape
                .metrics
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.kind)
        };
        for (name, want) in [
            ("loramux_requests_total", Type::Counter),
            ("loramux_generated_tokens_total", Type::Counter),
            ("loramux_engine_forward_seconds_total", Type::Counter),
            ("loramux_queue_depth", Type::Gauge),
            ("vllm:num_requests_waiting", Type::Gauge),
            ("vllm:kv_cache_usage_perc", Type::Gauge),
            (LORA_INFO, Type::Gauge),
            ("loramux_time_to_first_token_seconds", Type::Histogram),
            ("loramux_inter_token_latency_seconds", Type::Histogram),
        ] {
            assert_eq!(kind(name), Some(want), "{name}");
        }
        let one = |name: &str| {
            let s = samples(&text, name);
            assert_eq!(s.len(), 1, "{name}: {s:?}");
            s[0].1
        };
        assert_eq!(one("loramux_requests_total"), 2.0);
        assert_eq!(one("loramux_routing_decisions_total"), 1.0);
        assert_eq!(one("loramux_generated_tokens_total"), 17.0);
        assert_eq!(one("loramux_engine_forward_seconds_total"), 1.5);
        assert_eq!(one("loramux_queue_depth"), 1.0);
        assert_eq!(one("loramux_running_sequences"), 2.0);
        assert_eq!(one("vllm:num_requests_running"), 2.0);
        assert_eq!(one("vllm:num_requests_waiting"), 3.0);
        assert_eq!(one("vllm:kv_cache_usage_perc"), 0.125);
        assert_eq!(
            samples(&text, LORA_INFO),
            vec![(labels("4", "a,b", "c"), 1.7e9)]
        );
        let ttft = samples(&text, "loramux_time_to_first_token_seconds");
        let bucket = |le: &str| {
            ttft.iter()
                .find(|(l, _)| l == &vec![("le".to_string(), le.to_string())])
                .map(|s| s.1)
        };
        assert_eq!((bucket("0.025"), bucket("0.05")), (Some(0.0), Some(1.0)));
    }

    #[test]
    fn counters_follow_the_engine_and_only_the_current_lora_label_set_is_exported() {
        let m = ServerMetrics::default();
        let mut snapshot = MetricsSnapshot {
            steps: 5,
            lora: lora(&["a"], &["b", "c"], 10.0),
            ..MetricsSnapshot::default()
        };
        let text = m.render(&snapshot).expect("renders");
        assert_eq!(samples(&text, "loramux_engine_steps_total")[0].1, 5.0);
        snapshot.steps = 9;
        snapshot.lora = lora(&["b", "c"], &[], 20.0);
        let text = m.render(&snapshot).expect("renders");
        // Set to the engine's count, not added to the last scrape's.
        assert_eq!(samples(&text, "loramux_engine_steps_total")[0].1, 9.0);
        assert_eq!(
            samples(&text, LORA_INFO),
            vec![(labels("4", "b,c", ""), 20.0)]
        );
        snapshot.lora = lora(&[], &[], 30.0);
        let text = m.render(&snapshot).expect("renders");
        assert_eq!(samples(&text, LORA_INFO), vec![(labels("4", "", ""), 30.0)]);
    }
}
