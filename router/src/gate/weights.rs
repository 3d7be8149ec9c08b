//! The learned gate's parameters and their file: per layer, one linear scorer from the
//! hidden state entering the layer to one logit per adapter the gate was trained over.
//!
//! File: safetensors with `gate.weight` `[layers, experts, hidden]` and `gate.bias`
//! `[layers, experts]` (f32), and in the header metadata the adapter ids in expert order
//! (`adapter_ids`, a JSON list) and `format = loramux-gate-v1`.

use crate::{Result, RouterError};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

const FORMAT: &str = "loramux-gate-v1";

#[derive(Debug, Clone, PartialEq)]
pub struct GateWeights {
    /// Adapter ids in expert order.
    pub adapter_ids: Vec<String>,
    pub num_layers: usize,
    pub hidden_size: usize,
    /// `[layers, experts, hidden]`, row-major.
    pub weight: Vec<f32>,
    /// `[layers, experts]`.
    pub bias: Vec<f32>,
}

fn bad(path: &Path, reason: impl Into<String>) -> RouterError {
    RouterError::Gate {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl GateWeights {
    pub fn experts(&self) -> usize {
        self.adapter_ids.len()
    }

    /// Expert index of an adapter id.
    pub fn expert(&self, id: &str) -> Option<usize> {
        self.adapter_ids.iter().position(|a| a == id)
    }

    /// The logit of `expert` in `layer` for the hidden row `h`.
    pub fn logit(&self, layer: usize, expert: usize, h: &[f32]) -> f32 {
        let e = self.experts();
        let row = &self.weight[(layer * e + expert) * self.hidden_size..][..self.hidden_size];
        // Runs for every row, candidate and layer: the vectorized dot, not a sequential sum.
        loramux_kernels::dot(row, h) + self.bias[layer * e + expert]
    }

    fn check(&self, path: &Path) -> Result<()> {
        let e = self.experts();
        if e == 0 {
            return Err(bad(path, "the gate covers no adapter"));
        }
        if self.weight.len() != self.num_layers * e * self.hidden_size
            || self.bias.len() != self.num_layers * e
        {
            return Err(bad(
                path,
                "tensor sizes do not match layers × experts × hidden",
            ));
        }
        if self.weight.iter().chain(&self.bias).any(|v| !v.is_finite()) {
            return Err(bad(path, "the gate holds NaN or infinite values"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.adapter_ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(bad(path, format!("adapter {dup} appears twice")));
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.check(path)?;
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (w, b) = (bytes(&self.weight), bytes(&self.bias));
        let e = self.experts();
        let views = [
            (
                "gate.weight",
                TensorView::new(Dtype::F32, vec![self.num_layers, e, self.hidden_size], &w)
                    .map_err(|err| bad(path, err.to_string()))?,
            ),
            (
                "gate.bias",
                TensorView::new(Dtype::F32, vec![self.num_layers, e], &b)
                    .map_err(|err| bad(path, err.to_string()))?,
            ),
        ];
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            (
                "adapter_ids".to_string(),
                serde_json::to_string(&self.adapter_ids).map_err(|e| bad(path, e.to_string()))?,
            ),
        ]);
        // Write beside, then rename: a crash never leaves a torn gate file.
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(views, Some(metadata), &tmp)
            .map_err(|e| bad(path, e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| bad(path, e.to_string()))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| bad(path, e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(&data)
            .map_err(|e| bad(path, format!("not safetensors: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(
                path,
                format!("not a loramux gate (format is not {FORMAT})"),
            ));
        }
        let adapter_ids: Vec<String> = meta
            .get("adapter_ids")
            .ok_or_else(|| bad(path, "no adapter_ids in the metadata"))
            .and_then(|s| serde_json::from_str(s).map_err(|e| bad(path, e.to_string())))?;
        let st = SafeTensors::deserialize(&data).map_err(|e| bad(path, e.to_string()))?;
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(path, format!("tensor {name} is missing")))?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(
                    path,
                    format!("{name} is {:?}, expected F32", t.dtype()),
                ));
            }
            let values = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok((t.shape().to_vec(), values))
        };
        let (wshape, weight) = read("gate.weight")?;
        let (bshape, bias) = read("gate.bias")?;
        let [num_layers, experts, hidden_size] = wshape[..] else {
            return Err(bad(
                path,
                format!("gate.weight has shape {wshape:?}, expected 3 dims"),
            ));
        };
        if bshape != [num_layers, experts] || experts != adapter_ids.len() {
            return Err(bad(
                path,
                format!(
                    "shapes {wshape:?} / {bshape:?} do not fit {} adapter ids",
                    adapter_ids.len()
                ),
            ));
        }
        let gate = Self {
            adapter_ids,
            num_layers,
            hidden_size,
            weight,
            bias,
        };
        gate.check(path)?;
        Ok(gate)
    }
}
