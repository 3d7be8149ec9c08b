//! `BenchReport`: every measurement of a run, the ratios derived from them, and what is
//! needed to interpret them (threads, compiled SIMD features, load). Serialized as is for
//! `--json`; rendered as a table by `table.rs`.

use serde::Serialize;

use super::config::{BenchConfig, Mode, Subject};
use super::machine::{LoadAverage, TargetFeatures};
use super::threads::ThreadReport;
use super::timing::Timing;

/// One shape: a subject at a batch size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    pub batch: usize,
    pub subject: Subject,
    /// Timed decode steps.
    pub steps: usize,
    pub prefill_ms: f64,
    pub decode_s: f64,
    /// Aggregate decode throughput: batch × steps / decode time.
    pub tokens_per_s: f64,
    pub ms_per_step: f64,
    /// The median step: robust to steps slowed down by other work on the machine.
    pub median_ms_per_step: f64,
}

impl Measurement {
    pub fn new(batch: usize, subject: Subject, timing: &Timing) -> Self {
        let decode_s = timing.decode().as_secs_f64();
        let steps = timing.steps.len();
        Self {
            batch,
            subject,
            steps,
            prefill_ms: timing.prefill.as_secs_f64() * 1e3,
            decode_s,
            tokens_per_s: throughput(batch, steps, decode_s),
            ms_per_step: decode_s * 1e3 / steps.max(1) as f64,
            median_ms_per_step: timing.median_step().as_secs_f64() * 1e3,
        }
    }
}

/// Tokens per second of `steps` steps of `batch` rows in `seconds`.
pub fn throughput(batch: usize, steps: usize, seconds: f64) -> f64 {
    (batch * steps) as f64 / seconds
}

/// The comparisons of one batch size, from one way of summarizing the steps; `None` where
/// a subject was not measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatioSet {
    /// Time of `one` over time of `base` (= base tok/s ÷ one tok/s): the cost of an adapter.
    pub one_over_base_time: Option<f64>,
    /// Time of `mixed` over time of `base`: the cost of mixing distinct adapters in a batch.
    pub mixed_over_base_time: Option<f64>,
    /// loramux base tok/s ÷ candle tok/s: above 1, loramux's base path is faster.
    pub base_over_candle_throughput: Option<f64>,
    /// Gated (learned gate, top-k of the candidates per token) tok/s ÷ one adapter tok/s.
    #[serde(default)]
    pub gate_over_one_throughput: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchRatios {
    pub batch: usize,
    /// From the total decode time (`tokens_per_s`).
    pub mean: RatioSet,
    /// From the median step (`median_ms_per_step`): robust to disturbed rounds.
    pub median: RatioSet,
}

/// The ratios at every batch size, in the order the batches were first measured.
pub fn ratios(measurements: &[Measurement]) -> Vec<BatchRatios> {
    let mut batches: Vec<usize> = Vec::new();
    for m in measurements {
        if !batches.contains(&m.batch) {
            batches.push(m.batch);
        }
    }
    batches
        .into_iter()
        .map(|batch| {
            let rows: Vec<&Measurement> =
                measurements.iter().filter(|m| m.batch == batch).collect();
            BatchRatios {
                batch,
                mean: ratio_set(&rows, |m| m.tokens_per_s),
                median: ratio_set(&rows, |m| 1.0 / m.median_ms_per_step),
            }
        })
        .collect()
}

/// The ratios among `rows` (one batch size) of `speed`, any quantity proportional to tok/s.
fn ratio_set(rows: &[&Measurement], speed: fn(&Measurement) -> f64) -> RatioSet {
    let of = |want: fn(&Subject) -> bool| rows.iter().find(|m| want(&m.subject)).map(|m| speed(m));
    let base = of(|s| *s == Subject::Loramux(Mode::Base));
    let one = of(|s| *s == Subject::Loramux(Mode::One));
    let mixed = of(|s| matches!(s, Subject::Loramux(Mode::Mixed { .. })));
    let candle = of(|s| *s == Subject::Candle);
    let gated = of(|s| matches!(s, Subject::Loramux(Mode::Gated { .. })));
    RatioSet {
        gate_over_one_throughput: quotient(gated, one),
        one_over_base_time: quotient(base, one),
        mixed_over_base_time: quotient(base, mixed),
        base_over_candle_throughput: quotient(base, candle),
    }
}

fn quotient(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 && d.is_finite() && n.is_finite() => Some(n / d),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub threads: ThreadReport,
    pub features: TargetFeatures,
    pub load_before: Option<LoadAverage>,
    pub load_after: Option<LoadAverage>,
    pub measurements: Vec<Measurement>,
    pub ratios: Vec<BatchRatios>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(batch: usize, subject: Subject, seconds: f64) -> Measurement {
        let timing = Timing {
            prefill: Duration::from_millis(5),
            steps: vec![Duration::from_secs_f64(seconds / 10.0); 10],
        };
        Measurement::new(batch, subject, &timing)
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn throughput_is_rows_times_steps_over_time() {
        assert_eq!(throughput(8, 10, 2.0), 40.0);
        let m = at(4, Subject::Candle, 0.5);
        assert_eq!(
            (m.tokens_per_s, m.ms_per_step, m.prefill_ms),
            (80.0, 50.0, 5.0)
        );
    }

    #[test]
    fn ratios_compare_times_within_a_batch() {
        let mixed = Subject::Loramux(Mode::Mixed { adapters: 8 });
        let ms = [
            at(1, Subject::Candle, 2.0),
            at(1, Subject::Loramux(Mode::Base), 1.0),
            at(1, Subject::Loramux(Mode::One), 1.5),
            at(1, mixed, 1.25),
            at(8, Subject::Loramux(Mode::Base), 4.0),
            at(8, mixed, 10.0),
        ];
        let r = ratios(&ms);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].batch, 1);
        for set in [&r[0].mean, &r[0].median] {
            assert!(close(set.one_over_base_time, 1.5));
            assert!(close(set.mixed_over_base_time, 1.25));
            assert!(close(set.base_over_candle_throughput, 2.0));
        }
        assert_eq!(r[1].batch, 8);
        assert!(close(r[1].mean.mixed_over_base_time, 2.5));
        assert_eq!(
            (
                r[1].mean.one_over_base_time,
                r[1].mean.base_over_candle_throughput
            ),
            (None, None)
        );
    }
}
