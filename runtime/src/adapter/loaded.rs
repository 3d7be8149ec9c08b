//! `Adapter`: a loaded LoRA adapter — id, where it came from, its config summary, and one
//! [`LoraWeights`] (A `[rank, d_in]`, B `[d_out, rank]`, scale) per targeted (layer, module).
//!
//! Built by [`Adapter::load`] from a PEFT folder, or by [`Adapter::from_parts`] from weights
//! in memory (tests, training). Either way every weight has been checked against the
//! [`ModelConfig`] it was built for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use loramux_kernels::SmallGroupCopy;

use super::config::AdapterConfig;
use super::tensors;
use super::{AdapterId, LoraWeights};
use crate::{ModelConfig, ModuleKind, Result, RuntimeError};

/// Where an adapter's weights came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterSource {
    /// A PEFT folder; `sha256` is the hex digest of its `adapter_model.safetensors`.
    Peft { dir: PathBuf, sha256: String },
    /// Built in memory.
    Memory,
}

#[derive(Debug, Clone)]
pub struct Adapter {
    id: AdapterId,
    source: AdapterSource,
    config: AdapterConfig,
    weights: BTreeMap<(usize, ModuleKind), LoraWeights>,
    /// Per module, the bank's small-group copy of its weights, made when the adapter is
    /// built (on the loading thread) so that writing a bank slot only copies.
    prepared: BTreeMap<(usize, ModuleKind), Arc<SmallGroupCopy>>,
}

/// The small-group copies of every module's weights.
fn prepare(
    weights: &BTreeMap<(usize, ModuleKind), LoraWeights>,
    model: &ModelConfig,
) -> BTreeMap<(usize, ModuleKind), Arc<SmallGroupCopy>> {
    weights
        .iter()
        .map(|(&(layer, module), w)| {
            let (_, d_out) = model.module_shape(module);
            let copy = SmallGroupCopy::of(&w.a, &w.b, w.rank, d_out);
            ((layer, module), Arc::new(copy))
        })
        .collect()
}

impl Adapter {
    pub const CONFIG_FILE: &'static str = "adapter_config.json";
    pub const WEIGHTS_FILE: &'static str = "adapter_model.safetensors";

    /// Loads a PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`)
    /// for a base model of shape `model`.
    pub fn load(id: AdapterId, dir: &Path, model: &ModelConfig) -> Result<Self> {
        let _span = tracing::info_span!("adapter_load", id = %id, dir = %dir.display()).entered();
        let config = AdapterConfig::load(&dir.join(Self::CONFIG_FILE), model)?;
        let weights_path = dir.join(Self::WEIGHTS_FILE);
        if !weights_path.exists() && dir.join("adapter_model.bin").exists() {
            return Err(RuntimeError::Adapter {
                path: weights_path,
                reason: "the file is missing; adapter_model.bin is a pickle checkpoint, which is \
                         not supported (save with safe_serialization=True)"
                    .into(),
            });
        }
        let file = tensors::read(&weights_path, &config, model)?;
        tracing::debug!(modules = file.weights.len(), sha256 = %file.sha256, "adapter loaded");
        Ok(Self {
            id,
            source: AdapterSource::Peft {
                dir: dir.to_path_buf(),
                sha256: file.sha256,
            },
            config,
            prepared: prepare(&file.weights, model),
            weights: file.weights,
        })
    }

    /// Builds an adapter from weights in memory. Each (layer, module) must be selected by
    /// `config` and its weights must fit `model`; ranks and scales are taken as given.
    pub fn from_parts(
        id: AdapterId,
        config: AdapterConfig,
        weights: impl IntoIterator<Item = ((usize, ModuleKind), LoraWeights)>,
        model: &ModelConfig,
    ) -> Result<Self> {
        let refuse = |reason: String| RuntimeError::AdapterParts {
            id: id.to_string(),
            reason,
        };
        let mut map = BTreeMap::new();
        for ((layer, module), w) in weights {
            let at = format!("layer {layer}");
            if layer >= model.num_layers {
                return Err(refuse(format!(
                    "{at} does not exist: the model has {} layers",
                    model.num_layers
                )));
            }
            if !config.selects(layer, module) {
                return Err(refuse(format!(
                    "{at}: the config does not target {}",
                    module.hf_name()
                )));
            }
            let (d_in, d_out) = model.module_shape(module);
            if let Some(problem) = w.problem(module, d_in, d_out) {
                return Err(refuse(format!("{at}, {problem}")));
            }
            if map.insert((layer, module), w).is_some() {
                return Err(refuse(format!("{at}: {} is given twice", module.hf_name())));
            }
        }
        if map.is_empty() {
            return Err(refuse("no weights".into()));
        }
        Ok(Self {
            id,
            source: AdapterSource::Memory,
            config,
            prepared: prepare(&map, model),
            weights: map,
        })
    }

    pub fn id(&self) -> &AdapterId {
        &self.id
    }
    pub fn source(&self) -> &AdapterSource {
        &self.source
    }
    /// The PEFT folder, for an adapter loaded from one.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            AdapterSource::Peft { dir, .. } => Some(dir),
            AdapterSource::Memory => None,
        }
    }
    /// Hex SHA-256 of `adapter_model.safetensors`, for an adapter loaded from files.
    pub fn sha256(&self) -> Option<&str> {
        match &self.source {
            AdapterSource::Peft { sha256, .. } => Some(sha256),
            AdapterSource::Memory => None,
        }
    }
    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }
    /// The weights of one module, `None` where the adapter leaves it alone.
    pub fn weights(&self, layer: usize, module: ModuleKind) -> Option<&LoraWeights> {
        self.weights.get(&(layer, module))
    }
    /// Every (layer, module) the adapter changes, in (layer, module) order.
    pub fn modules(&self) -> impl Iterator<Item = ((usize, ModuleKind), &LoraWeights)> + '_ {
        self.weights.iter().map(|(&k, w)| (k, w))
    }
    /// The bank's small-group copy of one module's weights (see [`SmallGroupCopy::of`]).
    pub fn prepared(&self, layer: usize, module: ModuleKind) -> Option<&Arc<SmallGroupCopy>> {
        self.prepared.get(&(layer, module))
    }

    /// Bytes of weights held in host memory: A and B of every module in f32, and their
    /// small-group copies.
    pub fn host_bytes(&self) -> usize {
        let weights: usize = self
            .weights
            .values()
            .map(|w| (w.a.len() + w.b.len()) * std::mem::size_of::<f32>())
            .sum();
        weights + self.prepared.values().map(|c| c.bytes()).sum::<usize>()
    }

    pub fn num_modules(&self) -> usize {
        self.weights.len()
    }
    /// The largest rank over all modules: what a bank slot must hold.
    pub fn max_rank(&self) -> usize {
        self.weights.values().map(|w| w.rank).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use safetensors::Dtype;
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::adapter::testing::{
        lora_config, lora_pair, quantize, tiny_model, values, write_adapter, TestTensor,
    };
    use crate::adapter::ModuleMatcher;

    fn id(name: &str) -> AdapterId {
        AdapterId::new(name).unwrap()
    }

    /// Writes `config` and pairs for `modules` (with per-module ranks), loads, and checks that
    /// every loaded value equals the written one after the dtype's rounding.
    fn round_trip(config: &Value, modules: &[(usize, ModuleKind, usize)], dtype: Dtype) -> Adapter {
        let dir = tempfile::tempdir().unwrap();
        let tensors: Vec<TestTensor> = modules
            .iter()
            .enumerate()
            .flat_map(|(i, &(l, m, r))| lora_pair(l, m, r, dtype, 100 * i as u64))
            .collect();
        write_adapter(dir.path(), config, &tensors);
        let adapter = Adapter::load(id("round-trip"), dir.path(), &tiny_model()).unwrap();
        assert_eq!(adapter.num_modules(), modules.len());
        for (i, &(l, m, r)) in modules.iter().enumerate() {
            let w = adapter.weights(l, m).unwrap();
            let (d_in, d_out) = tiny_model().module_shape(m);
            assert_eq!(w.rank, r);
            let expect_a: Vec<f32> = values(100 * i as u64, r * d_in)
                .into_iter()
                .map(|v| quantize(dtype, v))
                .collect();
            let expect_b: Vec<f32> = values(100 * i as u64 + 1, d_out * r)
                .into_iter()
                .map(|v| quantize(dtype, v))
                .collect();
            assert_eq!(w.a, expect_a, "A of layer {l} {m:?}");
            assert_eq!(w.b, expect_b, "B of layer {l} {m:?}");
        }
        let bytes = std::fs::read(dir.path().join(Adapter::WEIGHTS_FILE)).unwrap();
        assert_eq!(
            adapter.sha256(),
            Some(hex::encode(Sha256::digest(&bytes)).as_str())
        );
        assert_eq!(adapter.path(), Some(dir.path()));
        adapter
    }

    fn every_layer(modules: &[ModuleKind], rank: usize) -> Vec<(usize, ModuleKind, usize)> {
        (0..3)
            .flat_map(|l| modules.iter().map(move |&m| (l, m, rank)))
            .collect()
    }

    #[test]
    fn loads_list_targets_in_every_float_dtype() {
        let config = lora_config(4, 8.0, json!(["q_proj", "v_proj", "down_proj"]));
        let modules = every_layer(&[ModuleKind::Q, ModuleKind::V, ModuleKind::Down], 4);
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let adapter = round_trip(&config, &modules, dtype);
            assert_eq!(adapter.weights(1, ModuleKind::V).unwrap().scale, 2.0);
            assert!(adapter.weights(1, ModuleKind::K).is_none());
            assert_eq!(adapter.max_rank(), 4);
            assert_eq!(adapter.id().as_str(), "round-trip");
        }
    }

    #[test]
    fn loads_regex_targets() {
        let config = lora_config(2, 4.0, json!(r".*\.(k_proj|gate_proj)"));
        let modules = every_layer(&[ModuleKind::K, ModuleKind::Gate], 2);
        let adapter = round_trip(&config, &modules, Dtype::F32);
        assert!(matches!(
            adapter.config().targets(),
            ModuleMatcher::Regex { .. }
        ));
    }

    #[test]
    fn loads_layers_to_transform() {
        let mut config = lora_config(4, 8.0, json!(["o_proj", "up_proj"]));
        config["layers_to_transform"] = json!([0, 2]);
        let modules: Vec<_> = [0, 2]
            .iter()
            .flat_map(|&l| [(l, ModuleKind::O, 4), (l, ModuleKind::Up, 4)])
            .collect();
        let adapter = round_trip(&config, &modules, Dtype::BF16);
        assert!(adapter.weights(1, ModuleKind::O).is_none());
    }

    #[test]
    fn loads_rank_and_alpha_patterns() {
        let mut config = lora_config(4, 8.0, json!(["q_proj", "up_proj"]));
        config["rank_pattern"] = json!({"layers.1.self_attn.q_proj": 2, "up_proj": 6});
        config["alpha_pattern"] = json!({"up_proj": 3});
        let mut modules = every_layer(&[ModuleKind::Q], 4);
        modules[1].2 = 2;
        modules.extend(every_layer(&[ModuleKind::Up], 6));
        let adapter = round_trip(&config, &modules, Dtype::F16);
        assert_eq!(adapter.weights(0, ModuleKind::Q).unwrap().scale, 2.0);
        assert_eq!(adapter.weights(1, ModuleKind::Q).unwrap().scale, 4.0);
        assert_eq!(adapter.weights(2, ModuleKind::Up).unwrap().scale, 0.5);
        assert_eq!(adapter.max_rank(), 6);
    }

    #[test]
    fn rslora_scale_is_alpha_over_sqrt_r() {
        let mut config = lora_config(4, 8.0, json!(["k_proj"]));
        config["use_rslora"] = json!(true);
        let adapter = round_trip(&config, &every_layer(&[ModuleKind::K], 4), Dtype::F32);
        assert_eq!(adapter.weights(2, ModuleKind::K).unwrap().scale, 4.0);
    }

    #[test]
    fn accepts_names_with_an_adapter_segment() {
        let dir = tempfile::tempdir().unwrap();
        let tensors: Vec<TestTensor> = lora_pair(0, ModuleKind::Q, 4, Dtype::F32, 3)
            .into_iter()
            .map(|mut t| {
                t.name = t.name.replace(".weight", ".default.weight");
                t
            })
            .collect();
        write_adapter(
            dir.path(),
            &lora_config(4, 4.0, json!(["q_proj"])),
            &tensors,
        );
        let adapter = Adapter::load(id("named"), dir.path(), &tiny_model()).unwrap();
        assert_eq!(
            adapter.modules().map(|(k, _)| k).collect::<Vec<_>>(),
            [(0, ModuleKind::Q)]
        );
        assert_eq!(adapter.weights(0, ModuleKind::Q).unwrap().a, values(3, 64));
    }

    /// The adapters `scripts/make_reference_fixtures.py` saved with PEFT for SmolLM2-135M.
    #[test]
    fn loads_the_peft_reference_fixtures() {
        let smollm2 = ModelConfig {
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            vocab_size: 49152,
            ..tiny_model()
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adapters");
        // (folder, modules, [(layer, module, rank, scale)] spot checks)
        let cases = [
            (
                "r8_qv",
                60,
                vec![(0, ModuleKind::Q, 8, 2.0), (29, ModuleKind::V, 8, 2.0)],
            ),
            // Regex over layers 0-9 of o_proj/down_proj, rsLoRA: 8 / sqrt(16).
            (
                "r16_rslora_regex",
                20,
                vec![(9, ModuleKind::Down, 16, 2.0), (3, ModuleKind::O, 16, 2.0)],
            ),
            (
                "r2_all7",
                210,
                vec![(0, ModuleKind::Gate, 2, 2.0), (29, ModuleKind::K, 2, 2.0)],
            ),
            // rank_pattern / alpha_pattern {"gate_proj": 8 / 32}: 32 / 8.
            (
                "r4_rank_pattern",
                90,
                vec![(5, ModuleKind::Gate, 8, 4.0), (5, ModuleKind::Up, 4, 2.0)],
            ),
        ];
        for (folder, modules, checks) in cases {
            let dir = root.join(folder);
            let adapter = Adapter::load(id(&folder.replace('_', "-")), &dir, &smollm2).unwrap();
            assert_eq!(adapter.num_modules(), modules, "{folder}");
            for (layer, module, rank, scale) in checks {
                let w = adapter.weights(layer, module).unwrap();
                assert_eq!(
                    (w.rank, w.scale),
                    (rank, scale),
                    "{folder} layer {layer} {module:?}"
                );
            }
            assert!(adapter.weights(10, ModuleKind::O).is_none() || folder != "r16_rslora_regex");
            let bytes = std::fs::read(dir.join(Adapter::WEIGHTS_FILE)).unwrap();
            assert_eq!(
                adapter.sha256(),
                Some(hex::encode(Sha256::digest(&bytes)).as_str())
            );
        }
    }

    fn part(module: ModuleKind, rank: usize) -> LoraWeights {
        let (d_in, d_out) = tiny_model().module_shape(module);
        LoraWeights {
            a: values(1, rank * d_in),
            b: values(2, d_out * rank),
            rank,
            scale: 1.5,
        }
    }

    #[test]
    fn from_parts_builds_and_checks() {
        let model = tiny_model();
        let config = AdapterConfig::for_modules(4, 6.0, &[ModuleKind::Q, ModuleKind::Down]);
        let adapter = Adapter::from_parts(
            id("mem"),
            config.clone(),
            [
                ((0, ModuleKind::Q), part(ModuleKind::Q, 4)),
                ((2, ModuleKind::Down), part(ModuleKind::Down, 2)),
            ],
            &model,
        )
        .unwrap();
        assert_eq!(adapter.source(), &AdapterSource::Memory);
        assert_eq!((adapter.path(), adapter.sha256()), (None, None));
        assert_eq!(adapter.max_rank(), 4);

        let refused = |weights: Vec<((usize, ModuleKind), LoraWeights)>, needle: &str| {
            let err = Adapter::from_parts(id("mem"), config.clone(), weights, &model).unwrap_err();
            assert!(
                matches!(err, RuntimeError::AdapterParts { ref id, .. } if id == "mem"),
                "{err:?}"
            );
            assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
        };
        refused(
            vec![((3, ModuleKind::Q), part(ModuleKind::Q, 4))],
            "the model has 3 layers",
        );
        refused(
            vec![((0, ModuleKind::K), part(ModuleKind::K, 4))],
            "does not target k_proj",
        );
        refused(
            vec![((0, ModuleKind::Q), part(ModuleKind::Down, 4))],
            "q_proj: A has",
        );
        refused(
            vec![
                ((0, ModuleKind::Q), part(ModuleKind::Q, 4)),
                ((0, ModuleKind::Q), part(ModuleKind::Q, 2)),
            ],
            "twice",
        );
        refused(Vec::new(), "no weights");
    }
}
