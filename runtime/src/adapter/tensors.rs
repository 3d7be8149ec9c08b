//! Reads `adapter_model.safetensors` (memory-mapped) into one [`LoraWeights`] per targeted
//! (layer, module), checked against the adapter's config and the base model.
//!
//! Shape contract, per module with `(d_in, d_out) = ModelConfig::module_shape` and
//! `r = rank_pattern match or r`: `lora_A` is `[r, d_in]`, `lora_B` is `[d_out, r]`, dtype
//! F32, F16 or BF16 (converted to f32), every value finite. Every error names the file, and
//! the tensor when there is one.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::config::{module_path, AdapterConfig};
use super::tensor_name::{self, Side};
use super::weights::{LoraWeights, NonFinite};
use crate::{ModelConfig, ModuleKind, Result, RuntimeError};

/// The LoRA content of one safetensors file.
#[derive(Debug)]
pub(crate) struct LoraFile {
    pub weights: BTreeMap<(usize, ModuleKind), LoraWeights>,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// A tensor found for one side of one module: its name in the file and its view.
type Found<'a> = (String, TensorView<'a>);

/// (layer, module) → its [lora_A, lora_B], as found in the file.
type Pairs<'a> = BTreeMap<(usize, ModuleKind), [Option<Found<'a>>; 2]>;

pub(crate) fn read(path: &Path, config: &AdapterConfig, model: &ModelConfig) -> Result<LoraFile> {
    let refuse = |reason: String| RuntimeError::Adapter {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| {
        refuse(match e.kind() {
            std::io::ErrorKind::NotFound => "the file is missing".into(),
            _ => format!("cannot open the file: {e}"),
        })
    })?;
    // SAFETY: the map is read-only and lives only for this call; every byte we keep is copied
    // out (and hashed) before it returns. Another process truncating the file meanwhile could
    // fault the read, the accepted risk of every mmap-based model loader (candle, safetensors).
    let mmap =
        unsafe { Mmap::map(&file) }.map_err(|e| refuse(format!("cannot map the file: {e}")))?;
    let sha256 = loramux_types::sha256_hex(&mmap[..]);
    let tensors = SafeTensors::deserialize(&mmap).map_err(|e| {
        refuse(format!(
            "not a readable safetensors file (truncated or corrupt?): {e}"
        ))
    })?;
    let pairs = pair_up(path, &tensors, config, model)?;
    if pairs.is_empty() {
        return Err(refuse("the file contains no LoRA tensors".into()));
    }
    let mut weights = BTreeMap::new();
    for (&(layer, module), [a, b]) in &pairs {
        let Some((a, b)) = both_sides(path, a, b)? else {
            continue;
        };
        let expect = Expected::new(config, model, layer, module);
        let lora = LoraWeights {
            a: expect.factor(path, Side::A, a)?,
            b: expect.factor(path, Side::B, b)?,
            rank: expect.rank,
            scale: config.scale_of(layer, module),
        };
        weights.insert((layer, module), lora);
    }
    let untouched = config
        .selected(model.num_layers)
        .len()
        .saturating_sub(weights.len());
    if untouched > 0 {
        // PEFT leaves such modules at B = 0, i.e. no change; so does skipping them.
        tracing::warn!(
            path = %path.display(),
            modules = untouched,
            "adapter_config.json targets modules that have no tensors in the file"
        );
    }
    Ok(LoraFile { weights, sha256 })
}

/// Both factors of one module, or an error naming the one that is alone.
fn both_sides<'f, 'a>(
    path: &Path,
    a: &'f Option<Found<'a>>,
    b: &'f Option<Found<'a>>,
) -> Result<Option<(&'f Found<'a>, &'f Found<'a>)>> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (Some((name, _)), None) | (None, Some((name, _))) => {
            let missing = if a.is_none() { Side::A } else { Side::B };
            Err(tensor_error(
                path,
                name,
                format!(
                    "has no matching {} in the file; every targeted module needs both lora_A \
                     and lora_B",
                    missing.label()
                ),
            ))
        }
        (None, None) => Ok(None),
    }
}

fn tensor_error(path: &Path, tensor: &str, reason: String) -> RuntimeError {
    RuntimeError::AdapterTensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        reason,
    }
}

/// Sorts every tensor of the file into (layer, module) → [A, B], refusing names that are
/// not LoRA weights of a targeted projection of this model.
fn pair_up<'a>(
    path: &Path,
    tensors: &SafeTensors<'a>,
    config: &AdapterConfig,
    model: &ModelConfig,
) -> Result<Pairs<'a>> {
    let mut all: Vec<(&str, TensorView<'a>)> = tensors.iter().collect();
    // File order is a hash-map order; sorting makes the first error reported deterministic.
    all.sort_by(|x, y| x.0.cmp(y.0));
    let mut pairs = Pairs::new();
    for (name, view) in all {
        let parsed =
            tensor_name::parse(name).map_err(|p| tensor_error(path, name, p.to_string()))?;
        let (layer, module) = (parsed.layer, parsed.module);
        if layer >= model.num_layers {
            return Err(tensor_error(
                path,
                name,
                format!(
                    "layer {layer} does not exist: the model has {} layers",
                    model.num_layers
                ),
            ));
        }
        if !config.selects(layer, module) {
            return Err(tensor_error(
                path,
                name,
                format!(
                    "adapter_config.json does not target {} (see target_modules, \
                     layers_to_transform, exclude_modules)",
                    module_path(layer, module)
                ),
            ));
        }
        let slot = &mut pairs.entry((layer, module)).or_default()[parsed.side as usize];
        if let Some((other, _)) = slot {
            return Err(tensor_error(
                path,
                name,
                format!("holds the same {} as tensor {other}", parsed.side.label()),
            ));
        }
        *slot = Some((name.to_string(), view));
    }
    Ok(pairs)
}

/// What one module's tensors must look like.
struct Expected<'c> {
    module: ModuleKind,
    rank: usize,
    rank_key: Option<&'c str>,
    d_in: usize,
    d_out: usize,
}

impl<'c> Expected<'c> {
    fn new(
        config: &'c AdapterConfig,
        model: &ModelConfig,
        layer: usize,
        module: ModuleKind,
    ) -> Self {
        let (rank, rank_key) = config.rank_of(layer, module);
        let (d_in, d_out) = model.module_shape(module);
        Self {
            module,
            rank,
            rank_key,
            d_in,
            d_out,
        }
    }

    /// Checks one factor's dtype, shape and values and returns it as f32.
    fn factor(&self, path: &Path, side: Side, (name, view): &Found<'_>) -> Result<Vec<f32>> {
        let err = |reason: String| tensor_error(path, name, reason);
        let values = to_f32(view).ok_or_else(|| {
            err(format!(
                "dtype {:?} is not supported (expected F32, F16 or BF16)",
                view.dtype()
            ))
        })?;
        let cols = self.check_shape(side, view.shape(), err)?;
        if let Some(bad) = NonFinite::find(&values, cols) {
            return Err(err(bad.to_string()));
        }
        Ok(values)
    }

    /// Returns the number of columns, or `err(why the shape does not fit the model)`.
    fn check_shape(
        &self,
        side: Side,
        shape: &[usize],
        err: impl Fn(String) -> RuntimeError,
    ) -> Result<usize> {
        let label = side.label();
        let &[rows, cols] = shape else {
            let expected = match side {
                Side::A => "[rank, d_in]",
                Side::B => "[d_out, rank]",
            };
            return Err(err(format!(
                "{label} has shape {shape:?}; expected 2 dimensions {expected}"
            )));
        };
        let name = self.module.hf_name();
        let via = self
            .rank_key
            .map(|k| format!(" (rank_pattern key {k:?})"))
            .unwrap_or_default();
        let (rank_dim, rank_axis) = match side {
            Side::A => (rows, "rows"),
            Side::B => (cols, "columns"),
        };
        if rank_dim != self.rank {
            return Err(err(format!(
                "rank {} in adapter_config.json{via} but {label} has {rank_dim} {rank_axis}",
                self.rank
            )));
        }
        match side {
            Side::A if cols != self.d_in => Err(err(format!(
                "{label} has {cols} columns but {name} takes {} inputs (an adapter for a \
                 different {}?)",
                self.d_in,
                input_hint(self.module)
            ))),
            Side::B if rows != self.d_out => Err(err(format!(
                "{label} has {rows} rows but {name} produces {} outputs (an adapter for a \
                 different {}?)",
                self.d_out,
                output_hint(self.module)
            ))),
            _ => Ok(cols),
        }
    }
}

/// Which model dimension sets a module's `d_in`: the likeliest cause of a mismatch.
fn input_hint(module: ModuleKind) -> &'static str {
    match module {
        ModuleKind::O => "number of attention heads or head size",
        ModuleKind::Down => "intermediate size",
        _ => "hidden size",
    }
}

/// Which model dimension sets a module's `d_out`.
fn output_hint(module: ModuleKind) -> &'static str {
    match module {
        ModuleKind::Q => "number of attention heads or head size",
        ModuleKind::K | ModuleKind::V => "number of key-value heads or head size",
        ModuleKind::Gate | ModuleKind::Up => "intermediate size",
        ModuleKind::O | ModuleKind::Down => "hidden size",
    }
}

/// Little-endian F32/F16/BF16 bytes as f32; `None` for any other dtype. The safetensors
/// crate has already checked that the byte length matches the shape.
fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    Some(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::{json, Value};

    use crate::adapter::testing::{
        lora_config, lora_pair, peft_name, tiny_model, write_adapter, TestTensor,
    };
    use crate::adapter::{Adapter, AdapterId};
    use crate::{ModuleKind, RuntimeError};
    use safetensors::Dtype;

    fn load(dir: &std::path::Path) -> crate::Result<Adapter> {
        Adapter::load(AdapterId::new("test").unwrap(), dir, &tiny_model())
    }

    fn q_config() -> Value {
        lora_config(4, 8.0, json!(["q_proj"]))
    }

    /// Writes `q_proj` pairs for every layer plus `extra`, with `config`, and loads them.
    fn load_with(
        config: &Value,
        tensors: Vec<TestTensor>,
    ) -> (tempfile::TempDir, crate::Result<Adapter>) {
        let dir = tempfile::tempdir().unwrap();
        write_adapter(dir.path(), config, &tensors);
        let result = load(dir.path());
        (dir, result)
    }

    fn valid_q() -> Vec<TestTensor> {
        (0..3)
            .flat_map(|l| lora_pair(l, ModuleKind::Q, 4, Dtype::F32, l as u64 * 10))
            .collect()
    }

    /// Asserts an `AdapterTensor` error naming the weights file, `tensor` and every needle.
    fn assert_tensor_refused(
        err: RuntimeError,
        dir: &tempfile::TempDir,
        tensor: &str,
        needles: &[&str],
    ) {
        let file: PathBuf = dir.path().join("adapter_model.safetensors");
        match &err {
            RuntimeError::AdapterTensor {
                path, tensor: t, ..
            } => {
                assert_eq!(path, &file);
                assert_eq!(t, tensor);
            }
            other => panic!("expected AdapterTensor, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&file.display().to_string()) && msg.contains(tensor),
            "{msg}"
        );
        for needle in needles {
            assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
        }
    }

    /// Asserts an `Adapter` error naming `file` (inside the adapter folder) and every needle.
    fn assert_file_refused(
        err: RuntimeError,
        dir: &tempfile::TempDir,
        file: &str,
        needles: &[&str],
    ) {
        let file = dir.path().join(file);
        assert!(
            matches!(&err, RuntimeError::Adapter { path, .. } if path == &file),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        for needle in needles {
            assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
        }
    }

    #[test]
    fn refuses_tensors_that_are_not_projection_lora_weights() {
        let q = "base_model.model.model.layers.0.self_attn.q_proj";
        let cases = [
            (
                "base_model.model.model.embed_tokens.lora_embedding_A".to_string(),
                "embedding LoRA",
            ),
            (format!("{q}.lora_B.bias"), "bias"),
            (format!("{q}.lora_magnitude_vector"), "DoRA"),
            (
                "base_model.model.lm_head.lora_A.weight".to_string(),
                "not a LoRA weight",
            ),
        ];
        for (name, reason) in cases {
            let mut tensors = valid_q();
            tensors.push(TestTensor::new(name.clone(), Dtype::F32, &[4], &[0.0; 4]));
            let (dir, result) = load_with(&q_config(), tensors);
            assert_tensor_refused(result.unwrap_err(), &dir, &name, &[reason]);
        }
    }

    #[test]
    fn refuses_a_layer_the_model_does_not_have() {
        let mut tensors = valid_q();
        tensors.extend(lora_pair(3, ModuleKind::Q, 4, Dtype::F32, 1));
        let (dir, result) = load_with(&q_config(), tensors);
        let name = peft_name(3, ModuleKind::Q, 'A');
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &name,
            &["layer 3 does not exist", "3 layers"],
        );
    }

    #[test]
    fn refuses_a_tensor_the_config_does_not_target() {
        let mut tensors = valid_q();
        tensors.extend(lora_pair(1, ModuleKind::Up, 4, Dtype::F32, 1));
        let (dir, result) = load_with(&q_config(), tensors);
        let name = peft_name(1, ModuleKind::Up, 'A');
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &name,
            &["does not target model.layers.1.mlp.up_proj"],
        );
    }

    #[test]
    fn refuses_a_lora_a_without_b_and_the_reverse() {
        for (keep, missing) in [(0, "lora_B"), (1, "lora_A")] {
            let pair = lora_pair(1, ModuleKind::Q, 4, Dtype::F32, 5);
            let mut tensors = valid_q();
            tensors.retain(|t| t.name != pair[1 - keep].name);
            let (dir, result) = load_with(&q_config(), tensors);
            assert_tensor_refused(
                result.unwrap_err(),
                &dir,
                &pair[keep].name,
                &[&format!("has no matching {missing}")],
            );
        }
    }

    #[test]
    fn refuses_duplicate_tensors() {
        let mut tensors = valid_q();
        let alias =
            peft_name(0, ModuleKind::Q, 'A').replace("lora_A.weight", "lora_A.default.weight");
        tensors.push(TestTensor::new(
            alias.clone(),
            Dtype::F32,
            &[4, 16],
            &[0.0; 64],
        ));
        let (dir, result) = load_with(&q_config(), tensors);
        // Sorted by name, `lora_A.default.weight` comes first; the plain name is refused.
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &peft_name(0, ModuleKind::Q, 'A'),
            &[&format!("holds the same lora_A as tensor {alias}")],
        );
    }

    /// Replaces the tensor called `name` in the valid set.
    fn replace(name: &str, tensor: TestTensor) -> Vec<TestTensor> {
        let mut tensors = valid_q();
        for t in &mut tensors {
            if t.name == name {
                *t = TestTensor {
                    name: name.to_string(),
                    ..tensor.clone()
                };
            }
        }
        tensors
    }

    #[test]
    fn refuses_a_rank_that_disagrees_with_the_config() {
        let a = peft_name(0, ModuleKind::Q, 'A');
        let (dir, result) = load_with(
            &q_config(),
            replace(&a, TestTensor::new("", Dtype::F32, &[2, 16], &[0.1; 32])),
        );
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &a,
            &["rank 4 in adapter_config.json but lora_A has 2 rows"],
        );

        let b = peft_name(2, ModuleKind::Q, 'B');
        let (dir, result) = load_with(
            &q_config(),
            replace(&b, TestTensor::new("", Dtype::F32, &[16, 2], &[0.1; 32])),
        );
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &b,
            &["rank 4 in adapter_config.json but lora_B has 2 columns"],
        );

        let mut config = q_config();
        config["rank_pattern"] = json!({"layers.0.self_attn.q_proj": 2});
        let (dir, result) = load_with(&config, valid_q());
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &a,
            &["rank 2 in adapter_config.json (rank_pattern key \"layers.0.self_attn.q_proj\") but lora_A has 4 rows"],
        );
    }

    #[test]
    fn refuses_shapes_for_another_model() {
        let a = peft_name(0, ModuleKind::Q, 'A');
        let (dir, result) = load_with(
            &q_config(),
            replace(&a, TestTensor::new("", Dtype::F32, &[4, 32], &[0.1; 128])),
        );
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &a,
            &["lora_A has 32 columns but q_proj takes 16 inputs (an adapter for a different hidden size?)"],
        );
        let b = peft_name(1, ModuleKind::Q, 'B');
        let (dir, result) = load_with(
            &q_config(),
            replace(&b, TestTensor::new("", Dtype::F32, &[12, 4], &[0.1; 48])),
        );
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &b,
            &[
                "lora_B has 12 rows but q_proj produces 16 outputs",
                "attention heads",
            ],
        );
        let (dir, result) = load_with(
            &q_config(),
            replace(&a, TestTensor::new("", Dtype::F32, &[4, 16, 1], &[0.1; 64])),
        );
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &a,
            &["shape [4, 16, 1]", "2 dimensions"],
        );
    }

    #[test]
    fn refuses_nan_and_infinity_naming_the_first_bad_index() {
        let b = peft_name(1, ModuleKind::Q, 'B');
        let mut values = vec![0.5f32; 64];
        values[9] = f32::NAN;
        values[20] = f32::INFINITY;
        let (dir, result) = load_with(
            &q_config(),
            replace(&b, TestTensor::new("", Dtype::F32, &[16, 4], &values)),
        );
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &b,
            &["NaN at index 9 (row 2, column 1)"],
        );

        let a = peft_name(0, ModuleKind::Q, 'A');
        let mut values = vec![0.5f32; 64];
        values[3] = f32::NEG_INFINITY;
        let (dir, result) = load_with(
            &q_config(),
            replace(&a, TestTensor::new("", Dtype::F16, &[4, 16], &values)),
        );
        assert_tensor_refused(
            result.unwrap_err(),
            &dir,
            &a,
            &["-inf at index 3 (row 0, column 3)"],
        );
    }

    #[test]
    fn refuses_unsupported_dtypes() {
        let a = peft_name(0, ModuleKind::Q, 'A');
        let f64_tensor = TestTensor::new("", Dtype::F64, &[4, 16], &[0.1; 64]);
        let i32_tensor = TestTensor {
            name: String::new(),
            dtype: Dtype::I32,
            shape: vec![4, 16],
            bytes: vec![0; 256],
        };
        for (tensor, dtype) in [(f64_tensor, "F64"), (i32_tensor, "I32")] {
            let (dir, result) = load_with(&q_config(), replace(&a, tensor));
            assert_tensor_refused(
                result.unwrap_err(),
                &dir,
                &a,
                &[&format!(
                    "dtype {dtype} is not supported (expected F32, F16 or BF16)"
                )],
            );
        }
    }

    #[test]
    fn refuses_a_truncated_file() {
        let dir = tempfile::tempdir().unwrap();
        write_adapter(dir.path(), &q_config(), &valid_q());
        let file = dir.path().join("adapter_model.safetensors");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 7]).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_file_refused(
            err,
            &dir,
            "adapter_model.safetensors",
            &["not a readable safetensors file", "truncated"],
        );
        // Cut inside the header, too.
        std::fs::write(&file, &bytes[..20]).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_file_refused(
            err,
            &dir,
            "adapter_model.safetensors",
            &["not a readable safetensors file"],
        );
    }

    #[test]
    fn refuses_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_file_refused(
            load(dir.path()).unwrap_err(),
            &dir,
            "adapter_config.json",
            &["missing"],
        );
        write_adapter(dir.path(), &q_config(), &valid_q());
        std::fs::remove_file(dir.path().join("adapter_model.safetensors")).unwrap();
        assert_file_refused(
            load(dir.path()).unwrap_err(),
            &dir,
            "adapter_model.safetensors",
            &["missing"],
        );
        std::fs::write(dir.path().join("adapter_model.bin"), b"pickle").unwrap();
        assert_file_refused(
            load(dir.path()).unwrap_err(),
            &dir,
            "adapter_model.safetensors",
            &["adapter_model.bin", "safe_serialization=True"],
        );
    }

    #[test]
    fn refuses_an_adapter_without_lora_tensors() {
        let (dir, result) = load_with(&q_config(), Vec::new());
        assert_file_refused(
            result.unwrap_err(),
            &dir,
            "adapter_model.safetensors",
            &["no LoRA tensors"],
        );
    }
}
