//! Next-token choice from one sequence's logits row `[vocab]`: repetition penalty, then greedy
//! argmax, or temperature → top-k → top-p (Hugging Face order) and a seeded draw.
//!
//! The RNG is a `StdRng` seeded once per sampler, so one request with one seed gives the same
//! tokens on every run of the same build (rand does not promise `StdRng` across versions).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Result, RuntimeError};

/// How to pick tokens. `Default` is greedy decoding with every filter off.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 keeps every token.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Hugging Face (CTRL) penalty for tokens already seen; 1 = off.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(RuntimeError::InvalidRequest { reason });
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            ));
        }
        // `!(x > 0)` rather than `x <= 0` so NaN is rejected too.
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(format!(
                "repetition_penalty must be a finite number > 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    /// Whether `sample` is a plain argmax (temperature 0, or only one candidate kept).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// A per-sequence sampler: params, RNG state and scratch buffers reused across steps.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    logits: Vec<f32>,
    seen: Vec<u32>,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// `params` should have passed [`SamplingParams::validate`] (the request path checks it);
    /// invalid values give meaningless picks, never a panic.
    pub fn new(params: SamplingParams) -> Self {
        Self {
            rng: StdRng::seed_from_u64(params.seed),
            params,
            logits: Vec::new(),
            seen: Vec::new(),
            candidates: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `previous` is the sequence so far (prompt and generated), used by
    /// the repetition penalty. NaN logits are never picked. A row with no usable logit (empty,
    /// or all NaN / -inf) is a numerical fault upstream, not a choice: it is logged and
    /// yields id 0 so one broken sequence cannot take the batch loop down.
    pub fn sample(&mut self, logits: &[f32], previous: &[u32]) -> u32 {
        self.try_sample(logits, previous).unwrap_or_else(|| {
            tracing::warn!(
                vocab = logits.len(),
                "logits row has no number above -inf; emitting token 0"
            );
            0
        })
    }

    fn try_sample(&mut self, logits: &[f32], previous: &[u32]) -> Option<u32> {
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        if self.params.repetition_penalty != 1.0 {
            self.apply_repetition_penalty(previous);
        }
        if self.params.is_greedy() {
            return argmax(&self.logits);
        }
        self.sample_filtered()
    }

    /// HF semantics: a seen token's logit is divided by the penalty when positive and
    /// multiplied when negative, once however often it was seen.
    fn apply_repetition_penalty(&mut self, previous: &[u32]) {
        let penalty = self.params.repetition_penalty;
        self.seen.clear();
        self.seen.extend_from_slice(previous);
        self.seen.sort_unstable();
        self.seen.dedup();
        for &id in &self.seen {
            if let Some(logit) = self.logits.get_mut(id as usize) {
                *logit = if *logit < 0.0 {
                    *logit * penalty
                } else {
                    *logit / penalty
                };
            }
        }
    }

    fn sample_filtered(&mut self) -> Option<u32> {
        let SamplingParams {
            temperature,
            top_k,
            top_p,
            ..
        } = self.params;
        self.candidates.clear();
        self.candidates.extend(
            self.logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(id, &l)| (id as u32, l)),
        );
        // Dividing by a positive temperature keeps the order, so filter on raw logits.
        if top_k > 0 && top_k < self.candidates.len() {
            self.candidates
                .select_nth_unstable_by(top_k - 1, descending);
            self.candidates.truncate(top_k);
        }
        let max = self
            .candidates
            .iter()
            .map(|&(_, l)| l)
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return None;
        }
        // exp((l - max) / T) in f64: no overflow however small T is; `l == max` also covers +inf.
        let weight = |l: f32| {
            if l == max {
                1.0
            } else {
                ((f64::from(l) - f64::from(max)) / f64::from(temperature)).exp()
            }
        };
        let mut total: f64 = self.candidates.iter().map(|&(_, l)| weight(l)).sum();
        if top_p < 1.0 {
            self.candidates.sort_unstable_by(descending);
            // Smallest head whose mass reaches top_p; the first token always stays.
            let mut mass = 0.0;
            let mut keep = 0;
            for &(_, l) in &self.candidates {
                mass += weight(l) / total;
                keep += 1;
                if mass >= f64::from(top_p) {
                    break;
                }
            }
            self.candidates.truncate(keep);
            total = self.candidates.iter().map(|&(_, l)| weight(l)).sum();
        }
        let mut threshold = self.rng.random::<f64>() * total;
        for &(id, l) in &self.candidates {
            threshold -= weight(l);
            if threshold < 0.0 {
                return Some(id);
            }
        }
        // Rounding left a sliver of mass unassigned: it belongs to the last kept token.
        self.candidates
            .iter()
            .rev()
            .find(|&&(_, l)| weight(l) > 0.0)
            .map(|&(id, _)| id)
    }
}

/// The `n` largest logits as `(id, logit)`, largest first, ties by lower id; NaN is skipped.
pub fn top_logits(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_nan())
        .map(|(id, &l)| (id as u32, l))
        .collect();
    if n == 0 {
        return Vec::new();
    }
    if n < all.len() {
        all.select_nth_unstable_by(n - 1, descending);
        all.truncate(n);
    }
    all.sort_unstable_by(descending);
    all
}

/// Largest logit, lowest id among equals; `None` when none is a number above -inf.
fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (id, &l) in logits.iter().enumerate() {
        if l.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((id, l));
        }
    }
    match best {
        Some((id, l)) if l > f32::NEG_INFINITY => Some(id as u32),
        _ => None,
    }
}

/// Order for candidates: larger logit first, then lower id (NaN already removed).
fn descending(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(params: SamplingParams) -> Sampler {
        Sampler::new(params)
    }

    fn with(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
            ..SamplingParams::default()
        }
    }

    fn softmax(logits: &[f32], temperature: f32) -> Vec<f64> {
        let exps: Vec<f64> = logits
            .iter()
            .map(|&l| (f64::from(l) / f64::from(temperature)).exp())
            .collect();
        let total: f64 = exps.iter().sum();
        exps.iter().map(|e| e / total).collect()
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = sampler(SamplingParams::default());
        assert_eq!(s.sample(&[0.5, 3.0, -1.0, 2.0], &[]), 1);
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0], &[]), 1);
        assert_eq!(s.sample(&[f32::NAN, 0.1, 0.2], &[]), 2);
        // Degenerate rows fall back to id 0 instead of failing the batch.
        assert_eq!(s.sample(&[], &[]), 0);
        assert_eq!(s.sample(&[f32::NAN, f32::NEG_INFINITY, f32::NAN], &[]), 0);
        let mut s = sampler(with(1.0, 0, 0.9, 0));
        assert_eq!(s.sample(&[f32::NEG_INFINITY, f32::NAN], &[]), 0);
    }

    #[test]
    fn repetition_penalty_changes_the_argmax() {
        let params = SamplingParams {
            repetition_penalty: 1.5,
            ..SamplingParams::default()
        };
        let mut s = sampler(params);
        // Positive: 2.0 / 1.5 = 1.33 < 1.9.
        assert_eq!(s.sample(&[2.0, 1.9, -1.0], &[]), 0);
        assert_eq!(s.sample(&[2.0, 1.9, -1.0], &[0]), 1);
        // Negative: -0.5 * 1.5 = -0.75 < -0.6.
        assert_eq!(s.sample(&[-0.5, -0.6], &[0]), 1);
        // Applied once per distinct token: 2.0 / 1.5 = 1.33 still beats 1.2.
        assert_eq!(s.sample(&[2.0, 1.2], &[0, 0, 0]), 0);
        // Ids beyond the row (e.g. from another vocabulary) are ignored.
        assert_eq!(s.sample(&[2.0, 1.2], &[7]), 0);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let best = argmax(&logits).unwrap();
        for temperature in [0.5, 1.0, 5.0, 100.0] {
            let mut s = sampler(with(temperature, 1, 1.0, 7));
            for _ in 0..100 {
                assert_eq!(s.sample(&logits, &[]), best);
            }
        }
    }

    #[test]
    fn top_p_keeps_only_the_head_of_a_peaked_distribution() {
        // p ≈ 0.62, 0.38, then 20 tokens sharing ≈ 0.0009: a 0.9 nucleus is the first two.
        let mut logits = vec![10.0, 9.5];
        logits.extend([0.0; 20]);
        let mut s = sampler(with(1.0, 0, 0.9, 3));
        let mut counts = [0usize; 2];
        for _ in 0..1000 {
            let id = s.sample(&logits, &[]);
            assert!(id < 2, "tail token {id} sampled");
            counts[id as usize] += 1;
        }
        assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
        // A nucleus smaller than the top token still keeps that token.
        let mut s = sampler(with(1.0, 0, 0.01, 3));
        assert!((0..100).all(|_| s.sample(&logits, &[]) == 0));
    }

    #[test]
    fn seeds_make_sampling_reproducible() {
        let flat = vec![0.0f32; 100];
        let run = |seed: u64| {
            let mut s = sampler(with(1.0, 0, 1.0, seed));
            (0..50).map(|_| s.sample(&flat, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn frequencies_match_softmax() {
        let probs = [0.1f32, 0.2, 0.3, 0.4];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        for temperature in [1.0f32, 2.0] {
            let expected = softmax(&logits, temperature);
            let mut s = sampler(with(temperature, 0, 1.0, 11));
            let draws = 20_000;
            let mut counts = [0usize; 4];
            for _ in 0..draws {
                counts[s.sample(&logits, &[]) as usize] += 1;
            }
            for (count, p) in counts.iter().zip(&expected) {
                let freq = *count as f64 / draws as f64;
                assert!(
                    (freq - p).abs() < 0.03,
                    "T={temperature}: {counts:?} vs {expected:?}"
                );
            }
        }
    }

    #[test]
    fn tiny_temperature_does_not_overflow() {
        let mut s = sampler(with(1e-6, 0, 1.0, 0));
        assert_eq!(s.sample(&[100.0, 99.0, -100.0], &[]), 0);
    }

    #[test]
    fn top_logits_are_sorted_descending() {
        let logits = [0.1, 5.0, f32::NAN, 3.0, 5.0, -2.0];
        assert_eq!(top_logits(&logits, 3), [(1, 5.0), (4, 5.0), (3, 3.0)]);
        assert_eq!(top_logits(&logits, 0), []);
        assert_eq!(top_logits(&logits, 10).len(), 5);
    }

    #[test]
    fn validate_rejects_bad_params() {
        let bad = [
            SamplingParams {
                temperature: -0.1,
                ..SamplingParams::default()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..SamplingParams::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..SamplingParams::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..SamplingParams::default()
            },
            SamplingParams {
                top_p: f32::NAN,
                ..SamplingParams::default()
            },
            SamplingParams {
                repetition_penalty: 0.0,
                ..SamplingParams::default()
            },
            SamplingParams {
                repetition_penalty: f32::NAN,
                ..SamplingParams::default()
            },
        ];
        for params in bad {
            let err = params.validate().unwrap_err();
            assert!(
                matches!(err, RuntimeError::InvalidRequest { .. }),
                "{params:?}"
            );
        }
        assert!(SamplingParams::default().validate().is_ok());
        assert!(with(0.7, 40, 0.95, 1).validate().is_ok());
    }
}
