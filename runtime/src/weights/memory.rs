//! `MemorySource`: a model whose tensors live in memory, for tests and benchmarks that need
//! a real (if tiny) llama without a file. `random` fills every tensor deterministically.

use super::{TensorRole, TokenizerSource, WeightSource};
use crate::{ModelConfig, ModuleKind, Result};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

pub struct MemorySource {
    cfg: ModelConfig,
    tensors: HashMap<String, Tensor>,
}

impl MemorySource {
    /// Random weights with the scales of a trained model (norm gains near 1, projections
    /// `±1/sqrt(d_in)`), so activations stay in a realistic range through every layer.
    pub fn random(cfg: &ModelConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        let mut put = |role: TensorRole, shape: &[usize], center: f32, spread: f32| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| center + rng.random_range(-spread..spread))
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).map(|t| tensors.insert(role.hf_name(), t))
        };
        let h = cfg.hidden_size;
        put(TensorRole::Embed, &[cfg.vocab_size, h], 0.0, 1.0)?;
        put(TensorRole::FinalNorm, &[h], 1.0, 0.2)?;
        if !cfg.tie_word_embeddings {
            put(TensorRole::LmHead, &[cfg.vocab_size, h], 0.0, 0.5)?;
        }
        for l in 0..cfg.num_layers {
            put(TensorRole::AttnNorm(l), &[h], 1.0, 0.2)?;
            put(TensorRole::MlpNorm(l), &[h], 1.0, 0.2)?;
            for m in ModuleKind::ALL {
                let (d_in, d_out) = cfg.module_shape(m);
                put(
                    TensorRole::Proj(l, m),
                    &[d_out, d_in],
                    0.0,
                    1.0 / (d_in as f32).sqrt(),
                )?;
                if cfg.qkv_bias && matches!(m, ModuleKind::Q | ModuleKind::K | ModuleKind::V) {
                    put(TensorRole::ProjBias(l, m), &[d_out], 0.0, 0.1)?;
                }
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            tensors,
        })
    }
}

impl WeightSource for MemorySource {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn tensor(&mut self, role: TensorRole) -> Result<Option<QTensor>> {
        match self.tensors.get(&role.hf_name()) {
            Some(t) => Ok(Some(QTensor::quantize(
                t,
                candle_core::quantized::GgmlDType::F32,
            )?)),
            None => Ok(None),
        }
    }

    fn tokenizer_source(&self) -> TokenizerSource {
        TokenizerSource::Absent
    }
}
