//! Trainable LoRA factors per (layer, module), and their export as a PEFT adapter folder.
//!
//! Per module: `A` `[rank, d_in]` initialized like PEFT (Kaiming-uniform, bound
//! `1/sqrt(d_in)`), `B` `[d_out, rank]` zero, so training starts from the base model; the
//! update is `y += scale · B(A x)` with `scale = alpha / rank`.

use crate::adapter::Adapter;
use crate::{ModelConfig, ModuleKind, Result, RuntimeError};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;

/// The shape of an adapter to train.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraShape {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<ModuleKind>,
}

impl LoraShape {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(RuntimeError::InvalidRequest {
                reason: format!("LoRA shape: {reason}"),
            })
        };
        if self.rank == 0 || self.rank > 256 {
            return bad("rank must be in 1..=256");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad("alpha must be a positive number");
        }
        if self.targets.is_empty() {
            return bad("at least one target module is needed");
        }
        Ok(())
    }
}

struct LoraPair {
    a: Var,
    b: Var,
}

/// What the training graph adds to each LoRA-targeted projection: the factors being trained
/// ([`LoraSet`]), or frozen adapters mixed per token by a gate being trained (the router's
/// gate trainer).
pub trait LoraHook {
    /// `base` plus this hook's update for `module` of `layer`; `x` `[rows, d_in]` is the
    /// projection's input and `layer_input` `[rows, hidden]` the normalized input of the
    /// layer's attention block (what the inference model's gate sees).
    fn apply(
        &self,
        layer: usize,
        module: ModuleKind,
        x: &Tensor,
        base: Tensor,
        layer_input: &Tensor,
    ) -> Result<Tensor>;
}

impl LoraHook for LoraSet {
    fn apply(
        &self,
        layer: usize,
        module: ModuleKind,
        x: &Tensor,
        base: Tensor,
        _layer_input: &Tensor,
    ) -> Result<Tensor> {
        LoraSet::apply(self, layer, module, x, base)
    }
}

/// The LoRA factors being trained; modules without factors pass through unchanged.
pub struct LoraSet {
    shape: LoraShape,
    pairs: BTreeMap<(usize, ModuleKind), LoraPair>,
}

impl LoraSet {
    /// Fresh factors for every layer and target module of `model`.
    pub fn init(model: &ModelConfig, shape: &LoraShape, seed: u64) -> Result<Self> {
        shape.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pairs = BTreeMap::new();
        for layer in 0..model.num_layers {
            for &m in &shape.targets {
                let (d_in, d_out) = model.module_shape(m);
                let bound = 1.0 / (d_in as f32).sqrt();
                let a: Vec<f32> = (0..shape.rank * d_in)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (shape.rank, d_in), &Device::Cpu)?)?;
                let b = Var::zeros((d_out, shape.rank), DType::F32, &Device::Cpu)?;
                pairs.insert((layer, m), LoraPair { a, b });
            }
        }
        Ok(Self {
            shape: shape.clone(),
            pairs,
        })
    }

    /// The factors of a saved adapter, to train further: every layer must carry the same
    /// modules with one rank and one scale (what [`LoraSet::save_peft`] writes), so the
    /// continued adapter saves back to the same PEFT config.
    pub fn from_adapter(adapter: &Adapter, model: &ModelConfig) -> Result<Self> {
        let refuse = |reason: String| RuntimeError::InvalidRequest {
            reason: format!("continuing adapter {}: {reason}", adapter.id()),
        };
        let mut modules = adapter.modules().peekable();
        let Some((_, first)) = modules.peek() else {
            return Err(refuse("it has no weights".into()));
        };
        let (rank, scale) = (first.rank, first.scale);
        let mut targets: Vec<ModuleKind> = Vec::new();
        let mut pairs = BTreeMap::new();
        for ((layer, m), w) in modules {
            if w.rank != rank || w.scale != scale {
                return Err(refuse(format!(
                    "layer {layer} {} has rank {} and scale {}, others rank {rank} and scale \
                     {scale}; only uniform adapters can be trained further",
                    m.hf_name(),
                    w.rank,
                    w.scale
                )));
            }
            if !targets.contains(&m) {
                targets.push(m);
            }
            let (d_in, d_out) = model.module_shape(m);
            let a = Tensor::from_vec(w.a.clone(), (rank, d_in), &Device::Cpu)?;
            let b = Tensor::from_vec(w.b.clone(), (d_out, rank), &Device::Cpu)?;
            pairs.insert(
                (layer, m),
                LoraPair {
                    a: Var::from_tensor(&a)?,
                    b: Var::from_tensor(&b)?,
                },
            );
        }
        if pairs.len() != targets.len() * model.num_layers {
            return Err(refuse(format!(
                "it covers {} (layer, module) pairs, not every layer's {}",
                pairs.len(),
                targets
                    .iter()
                    .map(|m| m.hf_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        targets.sort();
        let shape = LoraShape {
            rank,
            alpha: scale as f64 * rank as f64,
            targets,
        };
        shape.validate()?;
        Ok(Self { shape, pairs })
    }

    /// No factors at all: the base model.
    pub fn empty() -> Self {
        Self {
            shape: LoraShape {
                rank: 1,
                alpha: 1.0,
                targets: Vec::new(),
            },
            pairs: BTreeMap::new(),
        }
    }

    pub fn shape(&self) -> &LoraShape {
        &self.shape
    }

    /// Every trainable tensor, for the optimizer.
    pub fn vars(&self) -> Vec<Var> {
        self.pairs
            .values()
            .flat_map(|p| [p.a.clone(), p.b.clone()])
            .collect()
    }

    /// `base + scale · (x Aᵀ) Bᵀ` for `x` `[rows, d_in]`, or `base` when the module has none.
    pub fn apply(
        &self,
        layer: usize,
        module: ModuleKind,
        x: &Tensor,
        base: Tensor,
    ) -> Result<Tensor> {
        match self.pairs.get(&(layer, module)) {
            None => Ok(base),
            Some(p) => {
                let delta = x
                    .matmul(&p.a.as_tensor().t()?)?
                    .matmul(&p.b.as_tensor().t()?)?;
                Ok((base + (delta * self.shape.scale())?)?)
            }
        }
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` as PEFT's
    /// `save_pretrained` does, with tensors in `dtype` (F32, F16 or BF16).
    pub fn save_peft(&self, dir: &Path, dtype: DType, base_model: &str) -> Result<()> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(RuntimeError::InvalidRequest {
                reason: format!("adapters are saved as f32, f16 or bf16, not {dtype:?}"),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io(dir, e))?;
        let mut tensors = Vec::with_capacity(self.pairs.len() * 2);
        for (&(layer, m), p) in &self.pairs {
            for (side, var) in [("A", &p.a), ("B", &p.b)] {
                let name = format!(
                    "base_model.model.model.layers.{layer}.{}.{}.lora_{side}.weight",
                    m.hf_parent(),
                    m.hf_name()
                );
                tensors.push((name, var.as_tensor().to_dtype(dtype)?));
            }
        }
        let weights = dir.join("adapter_model.safetensors");
        candle_core::safetensors::save(
            &tensors
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            &weights,
        )?;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.shape.rank,
            "lora_alpha": self.shape.alpha,
            "lora_dropout": 0.0,
            "target_modules": self.shape.targets.iter().map(|m| m.hf_name()).collect::<Vec<_>>(),
            "bias": "none",
            "use_rslora": false,
            "use_dora": false,
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "inference_mode": true,
        });
        let path = dir.join("adapter_config.json");
        let text =
            serde_json::to_string_pretty(&config).map_err(|e| RuntimeError::InvalidRequest {
                reason: format!("adapter config: {e}"),
            })?;
        std::fs::write(&path, text).map_err(|e| RuntimeError::io(&path, e))
    }
}
