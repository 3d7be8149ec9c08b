//! The step planner: a pure function from the running sequences' phases to the work of one
//! step. Every decoding sequence gets its one token; prefilling sequences share the prefill
//! budget first come, first served, so a long prompt is chunked over several steps while the
//! others keep decoding.

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
        let mut budget = self.prefill_chunk;
        let mut items = Vec::with_capacity(phases.len());
        for (seq, phase) in phases.iter().enumerate() {
            match *phase {
                SeqPhase::Decode => items.push(StepItem {
                    seq,
                    start: 0,
                    len: 1,
                    sample: true,
                }),
                SeqPhase::Prefill { done, prompt_len } => {
                    let take = (prompt_len - done).min(budget);
                    if take == 0 {
                        continue;
                    }
                    budget -= take;
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
    fn decoders_always_step_and_prefill_is_chunked_fifo() {
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
                    len: 10,
                    sample: true
                },
                StepItem {
                    seq: 2,
                    start: 0,
                    len: 2,
                    sample: false
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
        assert!(
            s.plan(&[
                SeqPhase::Prefill {
                    done: 0,
                    prompt_len: 3
                },
                SeqPhase::Prefill {
                    done: 0,
                    prompt_len: 3
                }
            ])[1]
                .len
                == 1
        );
    }
}
