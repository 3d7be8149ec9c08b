//! The baseline as a [`Decoder`]: candle-transformers' `quantized_llama` on the same GGUF
//! and the same tokens.
//!
//! It batches only rectangular input: each step is one `[batch, 1]` tensor, every row at the
//! same position. Its KV cache lives inside the layers and is cleared when a decoder starts.
//!
//! The prefill runs one position at a time. A `[batch, prompt_len]` prefill with batch > 1
//! fails in candle 0.11.1: `forward` slices the last position out of `[batch, len, hidden]`
//! (a strided view) and hands it to the output `QMatMul`, which refuses non-contiguous input.
//! The decode steps, which are what is timed, are unaffected.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;

use super::timing::{argmax, Decoder};

/// Longest sequence the baseline's rotary tables cover.
pub use candle_transformers::models::quantized_llama::MAX_SEQ_LEN as CANDLE_MAX_POSITIONS;

/// Loads the baseline with its weights kept quantized.
pub fn load_candle(path: &Path) -> Result<ModelWeights> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("reading GGUF {}", path.display()))?;
    ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
        .context("candle quantized_llama could not load the model")
}

pub struct CandleDecoder<'a> {
    model: &'a mut ModelWeights,
    prompts: &'a [Vec<u32>],
    /// Position of the next token (the same for every row).
    position: usize,
}

impl<'a> CandleDecoder<'a> {
    /// Every prompt must have the same length.
    pub fn new(model: &'a mut ModelWeights, prompts: &'a [Vec<u32>]) -> Result<Self> {
        let len = prompts.first().map_or(0, Vec::len);
        ensure!(len > 0, "the baseline needs at least one non-empty prompt");
        ensure!(
            prompts.iter().all(|p| p.len() == len),
            "the baseline needs prompts of one length"
        );
        model.clear_kv_cache();
        Ok(Self {
            model,
            prompts,
            position: 0,
        })
    }
}

impl Decoder for CandleDecoder<'_> {
    fn prefill(&mut self) -> Result<Vec<u32>> {
        let mut next = Vec::new();
        for position in 0..self.prompts[0].len() {
            let column: Vec<u32> = self.prompts.iter().map(|p| p[position]).collect();
            next = self.decode(&column)?;
        }
        Ok(next)
    }

    fn decode(&mut self, tokens: &[u32]) -> Result<Vec<u32>> {
        let input = Tensor::from_slice(tokens, (tokens.len(), 1), &Device::Cpu)?;
        let logits = self.model.forward(&input, self.position)?;
        self.position += 1;
        // Each row's argmax of `[batch, vocab]`, with the same helper as loramux's decoder.
        Ok(logits
            .to_vec2::<f32>()?
            .iter()
            .map(|row| argmax(row))
            .collect())
    }
}
