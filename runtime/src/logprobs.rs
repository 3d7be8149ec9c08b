//! Log-probabilities of tokens under the model's own next-token distribution: the
//! log-softmax of the raw logits row, before repetition penalty, temperature or top-k/top-p
//! (what OpenAI's `logprobs` and lm-evaluation-harness' log-likelihoods mean, and vLLM's
//! default).

/// Which log-probabilities a request wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogprobRequest {
    /// For every generated token: its log-probability and those of the `top` most likely.
    pub generated: bool,
    /// For every prompt token after the first (`echo`): the same, from the prompt's
    /// prefill.
    pub prompt: bool,
    /// Most likely alternatives reported per token (0: only the token's own).
    pub top: usize,
}

impl LogprobRequest {
    pub fn any(&self) -> bool {
        self.generated || self.prompt
    }
}

/// Most alternatives per token a request may ask for.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One token's log-probability and the most likely tokens at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// The `top` most likely tokens with their log-probabilities, most likely first (ties by
    /// lower id).
    pub top: Vec<(u32, f32)>,
}

/// `token`'s log-probability in `logits` (one row over the vocabulary) and the `top` most
/// likely tokens'. The normalizer is summed in f64 so a 50k-token row loses no precision.
/// NaN logits count as impossible.
pub fn token_logprob(logits: &[f32], token: u32, top: usize) -> TokenLogprob {
    let max = logits
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    let log_z = if max == f32::NEG_INFINITY {
        0.0
    } else {
        let sum: f64 = logits
            .iter()
            .filter(|x| !x.is_nan())
            .map(|&x| ((x - max) as f64).exp())
            .sum();
        max as f64 + sum.ln()
    };
    let logprob_of = |x: f32| {
        if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            (x as f64 - log_z) as f32
        }
    };
    TokenLogprob {
        token,
        logprob: logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |&x| logprob_of(x)),
        top: most_likely(logits, top)
            .into_iter()
            .map(|id| (id, logprob_of(logits[id as usize])))
            .collect(),
    }
}

/// The ids of the `k` largest logits, largest first, ties by lower id; NaN never chosen.
fn most_likely(logits: &[f32], k: usize) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    // `k` is small (≤ MAX_TOP_LOGPROBS): one pass keeping a sorted shortlist beats sorting
    // the whole vocabulary.
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (id, &x) in logits.iter().enumerate() {
        if x.is_nan() || (best.len() == k && x <= best[k - 1].0) {
            continue;
        }
        let at = best.partition_point(|&(y, _)| y >= x);
        best.insert(at, (x, id as u32));
        best.truncate(k);
    }
    best.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The float64 twin: log-softmax by definition.
    fn reference(logits: &[f32], token: usize) -> f64 {
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        logits[token] as f64 - z.ln()
    }

    #[test]
    fn logprobs_match_a_float64_log_softmax_on_a_vocabulary_sized_row() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let logits: Vec<f32> = (0..49_152).map(|_| rng.random_range(-12.0..18.0)).collect();
        for token in [0u32, 17, 40_000, 49_151] {
            let lp = token_logprob(&logits, token, 5);
            let want = reference(&logits, token as usize);
            assert!(
                (lp.logprob as f64 - want).abs() < 1e-4,
                "{} vs {want}",
                lp.logprob
            );
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let ids: Vec<u32> = lp.top.iter().map(|&(id, _)| id).collect();
            assert_eq!(
                ids,
                order[..5].iter().map(|&i| i as u32).collect::<Vec<_>>()
            );
            for &(id, l) in &lp.top {
                assert!((l as f64 - reference(&logits, id as usize)).abs() < 1e-4);
            }
        }
        let total: f64 = logits
            .iter()
            .enumerate()
            .map(|(i, _)| (token_logprob(&logits, i as u32, 0).logprob as f64).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
    }

    #[test]
    fn ties_go_to_the_lower_id_and_nan_is_never_likely() {
        let logits = [1.0, f32::NAN, 3.0, 3.0, -1.0];
        let lp = token_logprob(&logits, 1, 3);
        assert_eq!(lp.logprob, f32::NEG_INFINITY);
        let ids: Vec<u32> = lp.top.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, vec![2, 3, 0]);
        assert!(token_logprob(&logits, 99, 0).logprob == f32::NEG_INFINITY);
    }
}
