//! Prompts for the prefill: real text, different per row, cut or cycled to exactly
//! `prompt_len` tokens so that candle's baseline (one `[batch, prompt_len]` tensor, every row
//! at the same position) and loramux see the same tokens.

use anyhow::{ensure, Result};
use loramux_runtime::Tokenizer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TEXTS: [&str; 8] = [
    "Explain in simple words why the sky looks blue on a clear day and red at sunset, and what that says about light.",
    "Write a short Python function that checks whether a string is a palindrome, ignoring spaces and punctuation.",
    "Summarize the main causes of the French Revolution for a high-school student preparing for an exam.",
    "What is the derivative of x squared times the sine of x? Show each step of the product rule clearly.",
    "Translate into French: the meeting has been moved to Thursday afternoon because the director is travelling.",
    "Give three practical tips for keeping basil and other kitchen herbs alive on a windowsill during winter.",
    "A train leaves at 9:40 and arrives at 13:15. How long is the journey in minutes? Explain the reasoning.",
    "Describe how a hash map works, including collisions, load factor and resizing, for a new programmer.",
];

/// `rows` prompts of `len` tokens each; row i starts from text `i % 8`, and rows that share a
/// text start at different offsets, so no two rows of a batch of up to 8·len are identical.
pub fn row_prompts(tokenizer: &Tokenizer, rows: usize, len: usize) -> Result<Vec<Vec<u32>>> {
    let texts: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| tokenizer.encode(t, true))
        .collect::<Result<_, _>>()?;
    (0..rows)
        .map(|row| {
            let ids = &texts[row % texts.len()];
            ensure!(
                !ids.is_empty(),
                "the tokenizer produced no tokens for a prompt"
            );
            Ok(cycle(ids, row / texts.len(), len))
        })
        .collect()
}

/// `rows` prompts of `len` random token ids below `vocab` (for a model without a
/// tokenizer), seeded.
pub fn random_prompts(rows: usize, len: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37);
    let vocab = vocab.max(1) as u32;
    (0..rows)
        .map(|_| (0..len).map(|_| rng.random_range(0..vocab)).collect())
        .collect()
}

/// `len` tokens of `ids` read cyclically from `offset`.
fn cycle(ids: &[u32], offset: usize, len: usize) -> Vec<u32> {
    ids.iter()
        .cycle()
        .skip(offset % ids.len())
        .take(len)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_from_an_offset() {
        assert_eq!(cycle(&[1, 2, 3], 0, 5), [1, 2, 3, 1, 2]);
        assert_eq!(cycle(&[1, 2, 3], 1, 2), [2, 3]);
        assert_eq!(cycle(&[1, 2, 3], 4, 3), [2, 3, 1]);
    }
}
