//! Rotary position embedding settings, as read from a model's config (the frequencies they
//! imply are computed in `model::rope`).

/// The base frequency and how the model scales it for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f32,
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// Plain rotary embedding with base `theta`.
    pub fn plain(theta: f32) -> Self {
        Self {
            theta,
            scaling: RopeScaling::None,
        }
    }
}

/// Each variant is computed exactly as transformers computes the `rope_type` of that name
/// (`modeling_rope_utils.py`), or, for [`RopeScaling::FreqFactors`], as llama.cpp applies a
/// GGUF's `rope_freqs.weight`.
///
/// `dynamic` (NTK) has no variant: transformers uses the plain frequencies for every position
/// below `max_position_embeddings`, and loramux never runs past it.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// `linear`: every frequency divided by `factor`.
    Linear {
        factor: f32,
    },
    /// `llama3` (Llama 3.1 / 3.2): low frequencies divided by `factor`, high ones kept, a
    /// smooth blend between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position: usize,
    },
    /// `yarn` (Qwen2.5 / Qwen3 long context): interpolation blended with extrapolation per
    /// frequency, and cos/sin scaled by `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
    /// GGUF `rope_freqs.weight`: frequency i divided by `factors[i]` (how llama.cpp's
    /// converter stores Llama 3.1 scaling).
    FreqFactors(Vec<f32>),
}
