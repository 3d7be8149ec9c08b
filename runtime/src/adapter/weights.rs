//! `LoraWeights`: one module's LoRA factors and scale, so that the module computes
//! `y += scale · B (A x)`.
//!
//! Shapes, row-major f32: A `[rank, d_in]`, B `[d_out, rank]` — PEFT's `lora_A.weight` and
//! `lora_B.weight` as they are. q/k rows stay in the Hugging Face layout: the base model
//! un-permutes GGUF q/k weights at load, so no adapter tensor is ever permuted.

use crate::ModuleKind;

#[derive(Debug, Clone, PartialEq)]
pub struct LoraWeights {
    /// `[rank, d_in]`, row-major.
    pub a: Vec<f32>,
    /// `[d_out, rank]`, row-major.
    pub b: Vec<f32>,
    pub rank: usize,
    /// alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub scale: f32,
}

impl LoraWeights {
    /// Why these weights cannot serve a module of shape `(d_in, d_out)`, if they cannot.
    pub(crate) fn problem(&self, module: ModuleKind, d_in: usize, d_out: usize) -> Option<String> {
        let name = module.hf_name();
        if self.rank == 0 {
            return Some(format!("{name}: rank is 0"));
        }
        if self.a.len() != self.rank * d_in {
            return Some(format!(
                "{name}: A has {} values, but rank {} × d_in {d_in} needs {}",
                self.a.len(),
                self.rank,
                self.rank * d_in
            ));
        }
        if self.b.len() != d_out * self.rank {
            return Some(format!(
                "{name}: B has {} values, but d_out {d_out} × rank {} needs {}",
                self.b.len(),
                self.rank,
                d_out * self.rank
            ));
        }
        if !self.scale.is_finite() {
            return Some(format!("{name}: scale is {}", self.scale));
        }
        if let Some(bad) = NonFinite::find(&self.a, d_in) {
            return Some(format!("{name}: A {bad}"));
        }
        if let Some(bad) = NonFinite::find(&self.b, self.rank) {
            return Some(format!("{name}: B {bad}"));
        }
        None
    }
}

/// The first NaN or infinity in a row-major matrix with `cols` columns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NonFinite {
    pub index: usize,
    pub value: f32,
    pub cols: usize,
}

impl NonFinite {
    pub(crate) fn find(values: &[f32], cols: usize) -> Option<Self> {
        let index = values.iter().position(|v| !v.is_finite())?;
        Some(Self {
            index,
            value: values[index],
            cols: cols.max(1),
        })
    }
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "has {} at index {} (row {}, column {})",
            self.value,
            self.index,
            self.index / self.cols,
            self.index % self.cols
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(rank: usize, d_in: usize, d_out: usize) -> LoraWeights {
        LoraWeights {
            a: vec![0.5; rank * d_in],
            b: vec![0.25; d_out * rank],
            rank,
            scale: 2.0,
        }
    }

    #[test]
    fn accepts_matching_shapes() {
        assert_eq!(weights(2, 4, 3).problem(ModuleKind::Q, 4, 3), None);
    }

    #[test]
    fn names_the_problem() {
        let w = weights(2, 4, 3);
        let p = w.problem(ModuleKind::K, 5, 3).unwrap();
        assert!(p.contains("k_proj: A has 8 values"), "{p}");
        let p = w.problem(ModuleKind::K, 4, 2).unwrap();
        assert!(p.contains("B has 6 values"), "{p}");
        let mut nan = w.clone();
        nan.b[5] = f32::NAN;
        let p = nan.problem(ModuleKind::Up, 4, 3).unwrap();
        assert_eq!(p, "up_proj: B has NaN at index 5 (row 2, column 1)");
        let mut inf = w.clone();
        inf.scale = f32::INFINITY;
        assert!(inf
            .problem(ModuleKind::Up, 4, 3)
            .unwrap()
            .contains("scale is inf"));
        assert!(weights(0, 4, 3)
            .problem(ModuleKind::Q, 4, 3)
            .unwrap()
            .contains("rank is 0"));
    }
}
