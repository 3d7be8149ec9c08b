//! Per-sequence KV cache, owned by the caller (the engine or the generator), never by layers.
//!
//! Layout per layer: `[positions, num_kv_heads, head_dim]` row-major for K and for V, so
//! appending a step is a plain `extend`. K is stored after rotary embedding.

use crate::ModelConfig;

#[derive(Debug, Clone)]
pub struct KvCache {
    kv_width: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig) -> Self {
        Self {
            kv_width: cfg.num_kv_heads * cfg.head_dim,
            keys: vec![Vec::new(); cfg.num_layers],
            values: vec![Vec::new(); cfg.num_layers],
            len: 0,
        }
    }

    /// Positions already cached (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held, for memory accounting.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|v| v.capacity() * 4)
            .sum()
    }

    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        self.keys[layer].extend_from_slice(k);
        self.values[layer].extend_from_slice(v);
    }

    /// Called once per step after every layer appended the step's tokens.
    pub(crate) fn commit(&mut self, tokens: usize) {
        self.len += tokens;
        debug_assert!(self
            .keys
            .iter()
            .all(|k| k.len() == self.len * self.kv_width));
    }

    pub(crate) fn keys(&self, layer: usize) -> &[f32] {
        &self.keys[layer]
    }

    pub(crate) fn values(&self, layer: usize) -> &[f32] {
        &self.values[layer]
    }
}
