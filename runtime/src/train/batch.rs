//! Training examples as token ids, and their packing into one right-padded batch.
//!
//! The loss covers the answer tokens only: the row of position `t` predicts token `t + 1`,
//! so an example with prompt length `p` and answer length `a` contributes rows
//! `p − 1 .. p + a − 1` with targets `answer[0..a]`.

use crate::{Result, RuntimeError};
use candle_core::{Device, Tensor};

/// One supervised example: the rendered prompt and the answer the model should produce
/// (ending with the end-of-turn token, so the adapter learns to stop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainExample {
    pub prompt: Vec<u32>,
    pub answer: Vec<u32>,
}

impl TrainExample {
    pub fn len(&self) -> usize {
        self.prompt.len() + self.answer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn validate(&self, index: usize, vocab: usize, max_len: usize) -> Result<()> {
        let bad = |reason: String| {
            Err(RuntimeError::InvalidRequest {
                reason: format!("training example {index}: {reason}"),
            })
        };
        if self.prompt.is_empty() || self.answer.is_empty() {
            return bad("prompt and answer both need at least one token".into());
        }
        if self.len() > max_len {
            return bad(format!(
                "{} tokens, more than the limit of {max_len}",
                self.len()
            ));
        }
        if let Some(t) = self
            .prompt
            .iter()
            .chain(&self.answer)
            .find(|&&t| t as usize >= vocab)
        {
            return bad(format!("token id {t} is outside the vocabulary of {vocab}"));
        }
        Ok(())
    }
}

/// A batch ready for the model: tokens `[batch, len]`, the flat rows whose logits enter
/// the loss and their target ids.
/// Draws batches of example indices: every example once per epoch, in a seeded shuffled
/// order that changes from epoch to epoch.
pub struct EpochSampler {
    rng: rand::rngs::StdRng,
    examples: usize,
    order: Vec<usize>,
}

impl EpochSampler {
    pub fn new(examples: usize, seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            examples,
            order: Vec::new(),
        }
    }

    /// The next `size` indices (empty when there are no examples).
    pub fn next_batch(&mut self, size: usize) -> Vec<usize> {
        use rand::seq::SliceRandom;
        let mut picked = Vec::with_capacity(size);
        while picked.len() < size && self.examples > 0 {
            if self.order.is_empty() {
                self.order = (0..self.examples).collect();
                self.order.shuffle(&mut self.rng);
            }
            picked.extend(self.order.pop());
        }
        picked
    }
}

pub struct PackedBatch {
    pub tokens: Tensor,
    pub loss_rows: Tensor,
    pub targets: Tensor,
    pub answer_tokens: usize,
}

/// Pads with token 0 on the right: causal attention keeps padding out of real positions,
/// and padded rows never enter the loss.
pub fn pack(examples: &[&TrainExample]) -> Result<PackedBatch> {
    let len = examples.iter().map(|e| e.len()).max().unwrap_or(0);
    if len == 0 {
        return Err(RuntimeError::InvalidRequest {
            reason: "empty training batch".into(),
        });
    }
    let mut tokens = Vec::with_capacity(examples.len() * len);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (b, e) in examples.iter().enumerate() {
        tokens.extend(e.prompt.iter().chain(&e.answer));
        tokens.resize((b + 1) * len, 0);
        for (i, &t) in e.answer.iter().enumerate() {
            rows.push((b * len + e.prompt.len() - 1 + i) as u32);
            targets.push(t);
        }
    }
    let answer_tokens = targets.len();
    Ok(PackedBatch {
        tokens: Tensor::from_vec(tokens, (examples.len(), len), &Device::Cpu)?,
        loss_rows: Tensor::from_vec(rows, answer_tokens, &Device::Cpu)?,
        targets: Tensor::from_vec(targets, answer_tokens, &Device::Cpu)?,
        answer_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rows_point_at_the_position_before_each_answer_token() {
        let a = TrainExample {
            prompt: vec![5, 6, 7],
            answer: vec![8, 9],
        };
        let b = TrainExample {
            prompt: vec![1],
            answer: vec![2],
        };
        let p = pack(&[&a, &b]).unwrap();
        assert_eq!(
            p.tokens.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7, 8, 9], vec![1, 2, 0, 0, 0]]
        );
        assert_eq!(p.loss_rows.to_vec1::<u32>().unwrap(), vec![2, 3, 5]);
        assert_eq!(p.targets.to_vec1::<u32>().unwrap(), vec![8, 9, 2]);
        assert_eq!(p.answer_tokens, 3);
    }

    #[test]
    fn examples_are_checked() {
        let e = TrainExample {
            prompt: vec![1, 40],
            answer: vec![2],
        };
        assert!(e.validate(0, 32, 16).is_err(), "token outside vocab");
        assert!(e.validate(0, 64, 2).is_err(), "too long");
        assert!(e.validate(0, 64, 16).is_ok());
        let empty = TrainExample {
            prompt: vec![1],
            answer: vec![],
        };
        assert!(empty.validate(3, 64, 16).is_err());
    }
}
