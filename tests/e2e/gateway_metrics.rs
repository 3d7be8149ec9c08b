//! `/metrics` as the Gateway API Inference Extension's endpoint picker reads it, parsed with
//! a Prometheus text parser: the vLLM-named series (`vllm:num_requests_running`,
//! `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`, `vllm:lora_requests_info`) and
//! loramux's own move with the traffic of slow requests with distinct adapters, in an
//! engine that runs two sequences at a time so the others are seen waiting.

use super::server::{sse_chunks, state_with};
use actix_web::{test, App};
use loramux::server::configure;
use prom_text_format_parser::Scrape;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The fixture adapters by their catalog ids (folder names with `-`).
const FIRST: [&str; 2] = ["r8-qv", "r2-all7"];
const THEN: [&str; 2] = ["r4-rank-pattern", "r16-rslora-regex"];
const MAX_RUNNING: usize = 2;
/// Long enough that the requests are still running while the test scrapes: a greedy count
/// continues to `max_tokens` (the test checks the finish reason).
const MAX_TOKENS: usize = 100;
const PROMPT: &str = "1, 2, 3, 4, 5, 6, 7, 8,";

/// Parses one `/metrics` answer of `$app`.
macro_rules! scrape {
    ($app:expr) => {{
        let body =
            test::call_and_read_body($app, test::TestRequest::get().uri("/metrics").to_request())
                .await;
        Metrics::parse(&String::from_utf8(body.to_vec()).expect("utf-8 metrics"))
    }};
}

/// One scrape, parsed (strictly: any malformed line fails the test).
pub(crate) struct Metrics(Scrape);

/// `vllm:lora_requests_info`'s one series.
#[derive(Debug)]
struct LoraInfo {
    max_lora: String,
    running: Vec<String>,
    waiting: Vec<String>,
    updated: f64,
}

impl Metrics {
    pub(crate) fn parse(text: &str) -> Self {
        Self(Scrape::parse(text).unwrap_or_else(|e| panic!("{e:?} in:\n{text}")))
    }

    /// The samples of `name`: their labels as `key=value` and their values.
    fn samples(&self, name: &str) -> Vec<(Vec<String>, f64)> {
        self.0
            .metrics
            .iter()
            .filter(|m| m.name == name)
            .flat_map(|m| &m.samples)
            .map(|s| {
                let labels = s
                    .labels
                    .iter()
                    .map(|l| format!("{}={}", l.key, l.value))
                    .collect();
                (labels, s.value.value.as_f64())
            })
            .collect()
    }

    /// The value of the one sample of `name` that has `labels` (0 when there is none: a
    /// labelled counter appears with its first increment).
    pub(crate) fn value(&self, name: &str, labels: &[&str]) -> f64 {
        let found: Vec<f64> = self
            .samples(name)
            .into_iter()
            .filter(|(l, _)| l == labels)
            .map(|(_, v)| v)
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?}: {found:?}");
        found.first().copied().unwrap_or(0.0)
    }

    pub(crate) fn gauge(&self, name: &str) -> f64 {
        let samples = self.samples(name);
        assert_eq!(samples.len(), 1, "{name}: {samples:?}");
        samples[0].1
    }

    /// The count of a histogram without labels.
    pub(crate) fn count(&self, histogram: &str) -> f64 {
        let scrape = &self.0;
        let metric = scrape
            .metrics
            .iter()
            .find(|m| m.name == histogram)
            .unwrap_or_else(|| panic!("{histogram} missing"));
        let count = metric
            .samples
            .iter()
            .find(|s| s.value.value_type == prom_text_format_parser::ValueType::Count)
            .unwrap_or_else(|| panic!("{histogram} has no count"));
        count.value.value.as_f64()
    }

    fn lora(&self) -> LoraInfo {
        let metric: Vec<_> = self
            .0
            .metrics
            .iter()
            .filter(|m| m.name == "vllm:lora_requests_info")
            .flat_map(|m| &m.samples)
            .collect();
        assert_eq!(metric.len(), 1, "one current label set: {metric:?}");
        let label = |key: &str| {
            metric[0]
                .labels
                .iter()
                .find(|l| l.key == key)
                .unwrap_or_else(|| panic!("label {key}"))
                .value
                .clone()
        };
        let ids = |v: String| -> Vec<String> {
            let mut ids: Vec<String> = v
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            ids.sort();
            ids
        };
        LoraInfo {
            max_lora: label("max_lora"),
            running: ids(label("running_lora_adapters")),
            waiting: ids(label("waiting_lora_adapters")),
            updated: metric[0].value.value.as_f64(),
        }
    }
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// What the client side knows of each request: admitted (its streamed response began) and
/// finished (its stream ended), by adapter id.
#[derive(Default)]
struct Seen {
    admitted: Vec<&'static str>,
    finished: Vec<(&'static str, String)>,
}

/// Polls `done` every few milliseconds for at most a minute.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_web::test]
async fn vllm_series_follow_running_and_waiting_requests_and_their_adapters() {
    let state = state_with(64, MAX_RUNNING);
    let app = Rc::new(test::init_service(App::new().configure(configure(state.clone()))).await);
    let seen = Rc::new(RefCell::new(Seen::default()));
    // Starts one streamed completion with `adapter` on the test's runtime.
    let send = |adapter: &'static str| {
        let (app, seen) = (app.clone(), seen.clone());
        actix_web::rt::spawn(async move {
            let body = json!({"model": adapter, "prompt": PROMPT, "temperature": 0,
                "max_tokens": MAX_TOKENS, "stream": true});
            let resp = test::call_service(
                &*app,
                test::TestRequest::post()
                    .uri("/v1/completions")
                    .set_json(&body)
                    .to_request(),
            )
            .await;
            assert_eq!(resp.status(), 200, "{adapter}");
            seen.borrow_mut().admitted.push(adapter);
            let raw = test::read_body(resp).await;
            let chunks = sse_chunks(&raw);
            let reason = chunks
                .iter()
                .rev()
                .find_map(|c| c["choices"][0]["finish_reason"].as_str())
                .unwrap_or("none")
                .to_string();
            seen.borrow_mut().finished.push((adapter, reason));
        })
    };

    // Before any traffic.
    let before = scrape!(&*app);
    assert_eq!(before.gauge("vllm:num_requests_running"), 0.0);
    assert_eq!(before.gauge("vllm:num_requests_waiting"), 0.0);
    assert_eq!(before.gauge("vllm:kv_cache_usage_perc"), 0.0);
    assert_eq!(before.gauge("loramux_running_sequences"), 0.0);
    let idle = before.lora();
    assert_eq!(idle.max_lora, "4", "the bank's slots");
    assert!(
        idle.running.is_empty() && idle.waiting.is_empty(),
        "{idle:?}"
    );
    assert!(idle.updated > 1.6e9, "a Unix time: {idle:?}");
    assert_eq!(before.count("loramux_time_to_first_token_seconds"), 0.0);

    // Two requests run; two more wait behind them (two sequences at most run).
    let mut tasks: Vec<_> = FIRST.iter().map(|a| send(a)).collect();
    until("the first two admitted", || {
        seen.borrow().admitted.len() == 2
    })
    .await;
    tasks.extend(THEN.iter().map(|a| send(a)));
    let start = Instant::now();
    let during = loop {
        let m = scrape!(&*app);
        // Waiting counts the requests still in the engine's queue too; the adapter lists
        // name those the engine thread took from it (within a step).
        if m.gauge("vllm:num_requests_waiting") == 2.0 && m.gauge("loramux_queue_depth") == 0.0 {
            break m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never 2 waiting: running {}, waiting {}, queued {}, {:?}",
            m.gauge("vllm:num_requests_running"),
            m.gauge("vllm:num_requests_waiting"),
            m.gauge("loramux_queue_depth"),
            m.lora()
        );
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        seen.borrow().finished.is_empty(),
        "a request finished before the scrape: generations too short"
    );
    assert_eq!(during.gauge("vllm:num_requests_running"), 2.0);
    assert_eq!(during.gauge("loramux_running_sequences"), 2.0);
    // The first two prefilled in the step that admitted them, before the engine took the
    // others from its queue.
    let kv = during.gauge("vllm:kv_cache_usage_perc");
    assert!(kv > 0.0 && kv < 1.0, "{kv}");
    let lora = during.lora();
    assert_eq!(lora.max_lora, "4");
    assert_eq!(lora.running, sorted(&FIRST), "{lora:?}");
    assert_eq!(lora.waiting, sorted(&THEN), "{lora:?}");
    assert!(lora.updated >= idle.updated, "{lora:?} vs {idle:?}");

    // The first two finish; the other two run and nothing waits.
    until("the first two finished, the others admitted", || {
        let s = seen.borrow();
        s.finished.len() == 2 && s.admitted.len() == 4
    })
    .await;
    let later = scrape!(&*app);
    assert!(
        seen.borrow().finished.len() == 2,
        "a later request finished before the scrape: generations too short"
    );
    assert_eq!(later.gauge("vllm:num_requests_running"), 2.0);
    assert_eq!(later.gauge("vllm:num_requests_waiting"), 0.0);
    let lora = later.lora();
    assert_eq!(lora.running, sorted(&THEN), "{lora:?}");
    assert!(lora.waiting.is_empty(), "{lora:?}");

    for task in tasks {
        task.await.expect("request task");
    }
    for (adapter, reason) in &seen.borrow().finished {
        assert_eq!(reason, "length", "{adapter} stopped early");
    }

    // After: nothing runs, nothing waits, no adapter is named.
    let after = scrape!(&*app);
    assert_eq!(after.gauge("vllm:num_requests_running"), 0.0);
    assert_eq!(after.gauge("vllm:num_requests_waiting"), 0.0);
    assert_eq!(after.gauge("vllm:kv_cache_usage_perc"), 0.0);
    assert_eq!(after.gauge("loramux_running_sequences"), 0.0);
    let done = after.lora();
    assert!(
        done.running.is_empty() && done.waiting.is_empty(),
        "{done:?}"
    );
    assert!(done.updated >= lora.updated);
    assert_eq!(after.count("loramux_time_to_first_token_seconds"), 4.0);
    assert_eq!(
        after.value(
            "loramux_requests_total",
            &["endpoint=completions", "status=200"]
        ),
        4.0
    );
    for adapter in FIRST.iter().chain(&THEN) {
        let labels = [format!("adapter={adapter}")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(
            before.value("loramux_routing_decisions_total", &labels),
            0.0
        );
        assert_eq!(after.value("loramux_routing_decisions_total", &labels), 1.0);
    }
    assert_eq!(
        after.value("loramux_sequences_finished_total", &[])
            - before.value("loramux_sequences_finished_total", &[]),
        4.0
    );
}
