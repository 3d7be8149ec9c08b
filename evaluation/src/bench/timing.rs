//! The timing loop both engines share. Subjects of one batch size are timed interleaved:
//! each round runs one decode step of every subject, in a rotating order. Other work on the
//! machine then slows all subjects alike instead of whichever one happened to be running,
//! and the per-step times give a median that ignores the rounds it disturbed.

use std::time::{Duration, Instant};

use anyhow::Result;

/// One subject's sequences on one batch: the engine's caches and the rows' prompts.
pub trait Decoder {
    /// Runs the prompts; returns each row's first generated token.
    fn prefill(&mut self) -> Result<Vec<u32>>;
    /// Feeds each row its last token; returns each row's next.
    fn decode(&mut self, tokens: &[u32]) -> Result<Vec<u32>>;
}

/// Decode steps of one shape: `warmup` untimed, then `timed` timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub warmup: usize,
    pub timed: usize,
}

/// Wall-clock times of one shape: the prefill, and each timed decode step.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub prefill: Duration,
    pub steps: Vec<Duration>,
}

impl Timing {
    /// All timed decode steps together.
    pub fn decode(&self) -> Duration {
        self.steps.iter().sum()
    }

    /// The median step: unlike the mean, barely moved by a few steps that another process
    /// slowed down.
    pub fn median_step(&self) -> Duration {
        let mut sorted = self.steps.clone();
        sorted.sort_unstable();
        match sorted.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        }
    }
}

/// Prefills every decoder (one after another), then runs `steps.warmup + steps.timed`
/// rounds of one decode step each, timing each step on its own; `tick` is called after each
/// prefill and each round. Returns the timings in the order of `decoders`.
pub fn time_interleaved(
    decoders: &mut [Box<dyn Decoder + '_>],
    steps: Steps,
    tick: &mut dyn FnMut(),
) -> Result<Vec<Timing>> {
    let mut next = Vec::with_capacity(decoders.len());
    let mut timings = Vec::with_capacity(decoders.len());
    for decoder in decoders.iter_mut() {
        let start = Instant::now();
        next.push(decoder.prefill()?);
        timings.push(Timing {
            prefill: start.elapsed(),
            steps: Vec::with_capacity(steps.timed),
        });
        tick();
    }
    let n = decoders.len();
    for round in 0..steps.warmup + steps.timed {
        for k in 0..n {
            let i = (round + k) % n;
            let start = Instant::now();
            next[i] = decoders[i].decode(&next[i])?;
            if round >= steps.warmup {
                timings[i].steps.push(start.elapsed());
            }
        }
        tick();
    }
    Ok(timings)
}

/// Index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let (mut best, mut best_value) = (0, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v > best_value {
            (best, best_value) = (i, v);
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 0.0]), 1);
        assert_eq!(argmax(&[3.0]), 0);
    }

    #[test]
    fn median_and_total_of_steps() {
        let ms = Duration::from_millis;
        let odd = Timing {
            prefill: ms(1),
            steps: vec![ms(9), ms(1), ms(50)],
        };
        assert_eq!((odd.median_step(), odd.decode()), (ms(9), ms(60)));
        let even = Timing {
            prefill: ms(1),
            steps: vec![ms(4), ms(2), ms(100), ms(6)],
        };
        assert_eq!(even.median_step(), ms(5));
    }

    /// Every call of every fake decoder as `(id, input)`.
    type CallLog = Rc<RefCell<Vec<(u32, Vec<u32>)>>>;

    /// Adds its id to every token and logs each call.
    struct Fake {
        id: u32,
        log: CallLog,
    }

    impl Decoder for Fake {
        fn prefill(&mut self) -> Result<Vec<u32>> {
            self.log.borrow_mut().push((self.id, vec![]));
            Ok(vec![self.id])
        }
        fn decode(&mut self, tokens: &[u32]) -> Result<Vec<u32>> {
            self.log.borrow_mut().push((self.id, tokens.to_vec()));
            Ok(tokens.iter().map(|t| t + self.id).collect())
        }
    }

    #[test]
    fn rounds_rotate_and_feed_each_decoder_its_own_tokens() {
        let log = CallLog::default();
        let mut decoders: Vec<Box<dyn Decoder>> = (1..=2)
            .map(|id| {
                Box::new(Fake {
                    id,
                    log: log.clone(),
                }) as Box<dyn Decoder>
            })
            .collect();
        let mut ticks = 0;
        let steps = Steps {
            warmup: 1,
            timed: 2,
        };
        let timings = time_interleaved(&mut decoders, steps, &mut || ticks += 1).unwrap();
        assert_eq!(ticks, 2 + 3);
        assert_eq!(timings.len(), 2);
        assert!(timings.iter().all(|t| t.steps.len() == 2));
        let expected: Vec<(u32, Vec<u32>)> = vec![
            (1, vec![]),
            (2, vec![]),
            (1, vec![1]),
            (2, vec![2]),
            (2, vec![4]),
            (1, vec![2]),
            (1, vec![3]),
            (2, vec![6]),
        ];
        assert_eq!(*log.borrow(), expected);
    }
}
