//! PEFT LoRA adapters: validated ids, `adapter_config.json`, `adapter_model.safetensors`.
//!
//! Shape contract: an [`Adapter`] holds, per targeted (layer, module), A `[rank, d_in]` and
//! B `[d_out, rank]` as row-major f32 with `(d_in, d_out) = ModelConfig::module_shape`, and a
//! scale, so the module computes `y += scale · B (A x)`. Files that would need anything
//! else (DoRA, biases, other modules, other shapes) are refused with the file, the tensor
//! and the reason.

mod config;
mod host_cache;
mod loaded;
mod peft_config;
mod tensor_name;
mod tensors;
mod weights;

#[cfg(test)]
pub(crate) mod testing;

pub use config::{module_path, AdapterConfig, LayerSelection, ModuleMatcher};
pub use host_cache::{HostCache, HostCacheStats};
pub use loaded::{Adapter, AdapterSource};
pub use loramux_types::{AdapterId, InvalidAdapterId};
pub use peft_config::{IntOrList, OrderedMap, PeftLoraConfig, StringOrList};
pub use weights::LoraWeights;
