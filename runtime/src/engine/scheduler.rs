//! The step planner: a pure function from the running sequences' phases to the work of one
//! step. Every decoding sequence gets its one token; prefilling sequences share the prefill
//! budget fairly (water-filling: each gets an equal share, and what a short prompt leaves
//! over goes to the others), so a long prompt is chunked over several steps while a new
//! short prompt is prefilled at once instead of waiting for the long one to finish.

use super::EngineConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqPhase {
    /// `done` prompt tokens are already in the KV cache.
    Prefill {
        done: usize,
        prompt_len: usize,
    },
    Decode,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepItem {
    /// Index into the running sequences.
    pub seq: usize,
    /// For prefill: the prompt range `[start, start + len)`; for decode: `len == 1`.
    pub start: usize,
    pub len: usize,
    /// True when this step reaches the point where a token must be sampled.
    pub sample: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Scheduler {
    prefill_chunk: usize,
}

impl Scheduler {
    pub fn new(config: &EngineConfig) -> Self {
        Self {
            prefill_chunk: config.prefill_chunk.max(1),
        }
    }

    pub fn plan(&self, phases: &[SeqPhase]) -> Vec<StepItem> {
        let shares = self.prefill_shares(phases);
        let mut items = Vec::with_capacity(phases.len());
        for (seq, (phase, take)) in phases.iter().zip(shares).enumerate() {
            match *phase {
                SeqPhase::Decode => items.push(StepItem {
                    seq,
                    start: 0,
                    len: 1,
                    sample: true,
                }),
                SeqPhase::Prefill { done, prompt_len } => {
                    if take == 0 {
                        continue;
                    }
                    items.push(StepItem {
                        seq,
                        start: done,
                        len: take,
                        sample: done + take == prompt_len,
                    });
                }
            }
        }
        items
    }

    /// Prompt tokens each sequence prefills this step (0 for decoders). Rounds of equal
    /// shares over the sequences that still have prompt left, until the budget is spent:
    /// no prefilling sequence gets less than `budget / prefilling` unless it needs less.
    fn prefill_shares(&self, phases: &[SeqPhase]) -> Vec<usize> {
        let remaining: Vec<usize> = phases
            .iter()
            .map(|p| match *p {
                SeqPhase::Prefill { done, prompt_len } => prompt_len.saturating_sub(done),
                SeqPhase::Decode => 0,
            })
            .collect();
        let mut shares = vec![0; phases.len()];
        let mut budget = self.prefill_chunk;
        loop {
            let open = (0..phases.len())
                .filter(|&i| shares[i] < remaining[i])
                .count();
            if open == 0 || budget == 0 {
                return shares;
            }
            let each = (budget / open).max(1);
            for i in 0..phases.len() {
                if budget == 0 {
                    break;
                }
                let take = each.min(remaining[i] - shares[i]).min(budget);
                shares[i] += take;
                budget -= take;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduler(chunk: usize) -> Scheduler {
        Scheduler::new(&EngineConfig {
            prefill_chunk: chunk,
            ..EngineConfig::default()
        })
    }

    #[test]
    fn decoders_always_step_and_prefill_is_shared() {
        let phases = [
            SeqPhase::Decode,
            SeqPhase::Prefill {
                done: 0,
                prompt_len: 10,
            },
            SeqPhase::Prefill {
                done: 0,
                prompt_len: 5,
            },
            SeqPhase::Decode,
        ];
        let plan = scheduler(12).plan(&phases);
        assert_eq!(
            plan,
            vec![
                StepItem {
                    seq: 0,
                    start: 0,
                    len: 1,
                    sample: true
                },
                StepItem {
                    seq: 1,
                    start: 0,
                    len: 7,
                    sample: false
                },
                StepItem {
                    seq: 2,
                    start: 0,
                    len: 5,
                    sample: true
                },
                StepItem {
                    seq: 3,
                    start: 0,
                    len: 1,
                    sample: true
                },
            ]
        );
    }

    #[test]
    fn a_long_prompt_finishes_over_several_steps() {
        let s = scheduler(4);
        let mut done = 0;
        let mut steps = 0;
        loop {
            let plan = s.plan(&[SeqPhase::Prefill {
                done,
                prompt_len: 10,
            }]);
            assert_eq!(plan.len(), 1);
            done += plan[0].len;
            steps += 1;
            if plan[0].sample {
                break;
            }
        }
        assert_eq!((done, steps), (10, 3));
        let two = s.plan(&[
            SeqPhase::Prefill {
                done: 0,
                prompt_len: 3,
            },
            SeqPhase::Prefill {
                done: 0,
                prompt_len: 3,
            },
        ]);
        assert_eq!((two[0].len, two[1].len), (2, 2));
    }

    /// A 4,000-token prompt mid-prefill does not hold back a new 8-token prompt: the
    /// newcomer is prefilled whole in the first step it is running, and the long prompt
    /// keeps the rest of the budget.
    #[test]
    fn a_long_prefill_never_starves_a_short_prompt() {
        let s = scheduler(256);
        for done in [0, 256, 3800] {
            let plan = s.plan(&[
                SeqPhase::Prefill {
                    done,
                    prompt_len: 4000,
                },
                SeqPhase::Decode,
                SeqPhase::Prefill {
                    done: 0,
                    prompt_len: 8,
                },
            ]);
            let short = plan
                .iter()
                .find(|i| i.seq == 2)
                .expect("the short prompt runs");
            assert_eq!((short.len, short.sample), (8, true), "done = {done}");
            let long = plan
                .iter()
                .find(|i| i.seq == 0)
                .expect("the long prompt runs");
            assert_eq!(long.len, (4000 - done).min(248));
        }
        // Many newcomers: each gets at least an equal share of the budget.
        let mut phases = vec![SeqPhase::Prefill {
            done: 0,
            prompt_len: 4000,
        }];
        phases.extend(std::iter::repeat_n(
            SeqPhase::Prefill {
                done: 0,
                prompt_len: 100,
            },
            7,
        ));
        let plan = s.plan(&phases);
        assert_eq!(plan.iter().map(|i| i.len).sum::<usize>(), 256);
        assert!(plan.iter().all(|i| i.len == 32), "{plan:?}");
    }
}
