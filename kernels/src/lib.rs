//! The LoRA mixture op of loramux: `y[i] += Σ_k w_ik · s_k · B_k (A_k x[i])` over a batch of
//! token rows, each row with its own list of up to k `(slot, weight)` pairs ([`MixPlan`]).
//!
//! Shapes: `x` is `[rows, d_in]`, `y` is `[rows, d_out]`, both row-major f32. A
//! [`SlotStack`] holds every resident adapter of one (layer, module) side by side:
//! A `[slots, r_max, d_in]`, B `[slots, d_out, r_max]`, a scale and a rank per slot. The
//! kernels know nothing about models: they see rows, slots and weights.

mod cpu;
mod error;
mod mix_plan;
pub mod reference;
mod slot_stack;

pub use cpu::lora_mix_cpu;
pub use error::KernelError;
pub use mix_plan::{MixPlan, SlotGroups, SlotWeight};
pub use slot_stack::SlotStack;

pub type Result<T> = std::result::Result<T, KernelError>;

/// Applies the LoRA mixture to `y` in place, on the best backend available for these inputs.
///
/// Today every input runs on the CPU implementation; the CUDA kernels (feature `cuda`) slot in
/// here behind a pure eligibility check.
pub fn lora_mix(x: &[f32], y: &mut [f32], stack: &SlotStack, plan: &MixPlan) -> Result<()> {
    lora_mix_cpu(x, y, stack, plan)
}
