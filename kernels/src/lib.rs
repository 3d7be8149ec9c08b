//! The LoRA mixture op of loramux: `y[i] += Σ_k w_ik · s_k · B_k (A_k x[i])` over a batch of
//! token rows, each row with its own list of up to k `(slot, weight)` pairs ([`MixPlan`]).
//!
//! Shapes: `x` is `[rows, d_in]`, `y` is `[rows, d_out]`, both row-major. A [`SlotStack`]
//! holds every resident adapter of one (layer, module) side by side: A `[slots, r_max, d_in]`,
//! B `[slots, d_out, r_max]`, a scale and a rank per slot. The kernels know nothing about
//! models: they see rows, slots and weights.
//!
//! Backends: [`lora_mix_cpu`] (host f32, rows grouped by slot, one GEMM pair per group) and,
//! with the feature `cuda`, fused gather kernels (`src/cuda/lora_mix.cu`) behind
//! [`lora_mix_tensor`] and a [`DeviceSlotStack`]. Every kernel has a CPU twin ([`twin`]) and
//! the dispatch rule is a pure function ([`eligibility`]).

mod cpu;
#[cfg(target_arch = "x86_64")]
mod cpu_avx2;
#[cfg(target_arch = "x86_64")]
mod cpu_avx512;
#[cfg(target_arch = "x86_64")]
mod cpu_simd;
mod cpu_tier;
#[cfg(feature = "cuda")]
mod cuda;
mod dense_plan;
mod device_stack;
mod dot;
pub mod element;
pub mod eligibility;
mod error;
pub mod launch_shape;
mod mix_plan;
pub mod reference;
mod slot_stack;
mod tensor_op;
pub mod twin;

pub use cpu::{lora_mix_cpu, lora_mix_cpu_on};
pub use cpu_tier::CpuTier;
pub use dense_plan::DensePlan;
pub use device_stack::DeviceSlotStack;
pub use dot::dot;
pub use element::Element;
pub use error::KernelError;
pub use mix_plan::{MixPlan, SlotGroups, SlotWeight};
pub use slot_stack::{SlotStack, SmallGroupCopy};
pub use tensor_op::{device_kind, lora_mix_tensor};

pub type Result<T> = std::result::Result<T, KernelError>;

/// Applies the LoRA mixture to `y` in place, on the best backend available for these inputs.
///
/// Host slices are CPU inputs, so this is always the CPU implementation; device tensors go
/// through [`lora_mix_tensor`], which picks the CUDA kernels when they are eligible.
pub fn lora_mix(x: &[f32], y: &mut [f32], stack: &SlotStack, plan: &MixPlan) -> Result<()> {
    lora_mix_cpu(x, y, stack, plan)
}
