//! Runtime configuration of a llama-family decoder, independent of the file it came from.

mod rope;

pub use rope::{RopeConfig, RopeScaling};

use crate::{Result, RuntimeError};

/// The seven projections a LoRA adapter may target in a llama-family decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModuleKind {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl ModuleKind {
    pub const ALL: [ModuleKind; 7] = [
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::Gate,
        Self::Up,
        Self::Down,
    ];

    /// The Hugging Face / PEFT module name, e.g. `q_proj`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    /// The parent block in Hugging Face naming: `self_attn` or `mlp`.
    pub fn hf_parent(self) -> &'static str {
        match self {
            Self::Q | Self::K | Self::V | Self::O => "self_attn",
            Self::Gate | Self::Up | Self::Down => "mlp",
        }
    }

    pub fn from_hf_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.hf_name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Shapes and constants of a llama-family decoder (Llama 2/3/3.1/3.2, Mistral, Qwen2/2.5,
/// Qwen3, SmolLM). The architectures differ only in the named switches below.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rope: RopeConfig,
    pub rms_norm_eps: f64,
    /// The longest context the model runs (its `max_position_embeddings`, or a shorter
    /// sliding window).
    pub max_position: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (Qwen2; Llama's and Qwen3's `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on o (Llama's and Qwen3's `attention_bias`).
    pub o_bias: bool,
    /// Biases on gate/up/down (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// RMSNorm over each head of q and k before rotation (Qwen3).
    pub qk_norm: bool,
}

impl ModelConfig {
    /// `(d_in, d_out)` of one projection.
    pub fn module_shape(&self, module: ModuleKind) -> (usize, usize) {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let i = self.intermediate_size;
        match module {
            ModuleKind::Q => (h, q),
            ModuleKind::K | ModuleKind::V => (h, kv),
            ModuleKind::O => (q, h),
            ModuleKind::Gate | ModuleKind::Up => (h, i),
            ModuleKind::Down => (i, h),
        }
    }

    /// Whether the projection has a bias.
    pub fn has_bias(&self, module: ModuleKind) -> bool {
        match module {
            ModuleKind::Q | ModuleKind::K | ModuleKind::V => self.qkv_bias,
            ModuleKind::O => self.o_bias,
            ModuleKind::Gate | ModuleKind::Up | ModuleKind::Down => self.mlp_bias,
        }
    }

    /// Bytes of every weight matrix and the embedding as f32.
    pub fn f32_bytes(&self) -> usize {
        let per_layer: usize = ModuleKind::ALL
            .iter()
            .map(|&m| {
                let (i, o) = self.module_shape(m);
                i * o
            })
            .sum();
        4 * (per_layer * self.num_layers + self.vocab_size * self.hidden_size)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(RuntimeError::UnsupportedModel { reason });
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_layers == 0 {
            return bad(format!("degenerate config {self:?}"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} attention heads is not a multiple of {} kv heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} is odd", self.head_dim));
        }
        if let RopeScaling::FreqFactors(f) = &self.rope.scaling {
            if f.len() != self.head_dim / 2 {
                return bad(format!(
                    "{} rotary frequency factors for head_dim {}",
                    f.len(),
                    self.head_dim
                ));
            }
        }
        Ok(())
    }
}
