//! Parses the tensor names of a PEFT LoRA checkpoint into (layer, module, A|B).
//!
//! Accepted: `[base_model.model.][model.]layers.{L}.{self_attn|mlp}.{module}.lora_{A|B}
//! [.{adapter_name}].weight`. PEFT's `save_pretrained` writes
//! `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` (the adapter name is
//! stripped); a raw `state_dict()` keeps it (`...lora_A.default.weight`). Anything else is
//! refused with a reason that says what kind of tensor it looks like.

use crate::ModuleKind;
use std::fmt;

/// Which factor of `B·A` a tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Side {
    /// `lora_A`: `[rank, d_in]`.
    A,
    /// `lora_B`: `[d_out, rank]`.
    B,
}

impl Side {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::A => "lora_A",
            Self::B => "lora_B",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoraTensorName {
    pub layer: usize,
    pub module: ModuleKind,
    pub side: Side,
}

/// Why a tensor name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameProblem {
    DoraMagnitude,
    Embedding,
    Bias,
    UnknownModule { module: String },
    WrongParent { module: ModuleKind, parent: String },
    BadLayerIndex { index: String },
    NotLoraWeight,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DoraMagnitude => f.write_str("a DoRA magnitude vector; DoRA is not supported"),
            Self::Embedding => {
                f.write_str("an embedding LoRA; only the seven projections are supported")
            }
            Self::Bias => f.write_str("a bias; LoRA biases are not supported"),
            Self::UnknownModule { module } => write!(
                f,
                "{module:?} is not a llama projection (expected one of {})",
                ModuleKind::ALL.map(ModuleKind::hf_name).join(", ")
            ),
            Self::WrongParent { module, parent } => write!(
                f,
                "{} belongs under {}, not {parent}",
                module.hf_name(),
                module.hf_parent()
            ),
            Self::BadLayerIndex { index } => write!(f, "layer index {index} is too large"),
            Self::NotLoraWeight => f.write_str(
                "not a LoRA weight of a llama projection (expected \
                 `...layers.{L}.{self_attn|mlp}.{module}.lora_{A|B}.weight`)",
            ),
        }
    }
}

pub(crate) fn parse(name: &str) -> Result<LoraTensorName, NameProblem> {
    if name.contains("lora_magnitude_vector") {
        return Err(NameProblem::DoraMagnitude);
    }
    if name.contains("lora_embedding_") {
        return Err(NameProblem::Embedding);
    }
    if name.ends_with(".bias") {
        return Err(NameProblem::Bias);
    }
    let rest = name.strip_prefix("base_model.model.").unwrap_or(name);
    let rest = rest.strip_prefix("model.").unwrap_or(rest);
    let rest = rest
        .strip_prefix("layers.")
        .ok_or(NameProblem::NotLoraWeight)?;
    let parts: Vec<&str> = rest.split('.').collect();
    let (index, parent, module, side) = match parts.as_slice() {
        [index, parent, module, side, "weight"] => (*index, *parent, *module, *side),
        // A raw `state_dict()` keeps the adapter's name between `lora_A` and `weight`.
        [index, parent, module, side, adapter, "weight"] if !adapter.is_empty() => {
            (*index, *parent, *module, *side)
        }
        _ => return Err(NameProblem::NotLoraWeight),
    };
    let side = match side {
        "lora_A" => Side::A,
        "lora_B" => Side::B,
        _ => return Err(NameProblem::NotLoraWeight),
    };
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameProblem::NotLoraWeight);
    }
    let layer = index.parse().map_err(|_| NameProblem::BadLayerIndex {
        index: index.to_string(),
    })?;
    let module = ModuleKind::from_hf_name(module).ok_or_else(|| NameProblem::UnknownModule {
        module: module.to_string(),
    })?;
    if module.hf_parent() != parent {
        return Err(NameProblem::WrongParent {
            module,
            parent: parent.to_string(),
        });
    }
    Ok(LoraTensorName {
        layer,
        module,
        side,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(layer: usize, module: ModuleKind, side: Side) -> Result<LoraTensorName, NameProblem> {
        Ok(LoraTensorName {
            layer,
            module,
            side,
        })
    }

    #[test]
    fn parses_peft_names() {
        let cases = [
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                ok(0, ModuleKind::Q, Side::A),
            ),
            (
                "base_model.model.model.layers.12.mlp.down_proj.lora_B.weight",
                ok(12, ModuleKind::Down, Side::B),
            ),
            (
                "base_model.model.model.layers.3.self_attn.o_proj.lora_B.default.weight",
                ok(3, ModuleKind::O, Side::B),
            ),
            (
                "model.layers.1.mlp.gate_proj.lora_A.weight",
                ok(1, ModuleKind::Gate, Side::A),
            ),
            (
                "layers.2.mlp.up_proj.lora_A.my-adapter.weight",
                ok(2, ModuleKind::Up, Side::A),
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(parse(name), expected, "{name}");
        }
    }

    #[test]
    fn explains_refused_names() {
        let cases = [
            (
                "base_model.model.model.embed_tokens.lora_embedding_A",
                NameProblem::Embedding,
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
                NameProblem::Bias,
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
                NameProblem::DoraMagnitude,
            ),
            (
                "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight",
                NameProblem::UnknownModule {
                    module: "qkv_proj".into(),
                },
            ),
            (
                "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight",
                NameProblem::WrongParent {
                    module: ModuleKind::Q,
                    parent: "mlp".into(),
                },
            ),
            (
                "base_model.model.model.layers.99999999999999999999999.mlp.up_proj.lora_A.weight",
                NameProblem::BadLayerIndex {
                    index: "99999999999999999999999".into(),
                },
            ),
            (
                "base_model.model.lm_head.lora_A.weight",
                NameProblem::NotLoraWeight,
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.weight",
                NameProblem::NotLoraWeight,
            ),
            (
                "transformer.h.0.attn.c_attn.lora_A.weight",
                NameProblem::NotLoraWeight,
            ),
            (
                "base_model.model.model.layers.x.mlp.up_proj.lora_A.weight",
                NameProblem::NotLoraWeight,
            ),
            (
                "base_model.model.model.layers.0.mlp.up_proj.lora_C.weight",
                NameProblem::NotLoraWeight,
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(parse(name), Err(expected), "{name}");
        }
        assert!(NameProblem::UnknownModule { module: "x".into() }
            .to_string()
            .contains("q_proj, k_proj"));
    }
}
