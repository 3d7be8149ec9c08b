//! `ModuleStacks`: the bank's tensors — one lazily allocated `DeviceSlotStack` per (layer,
//! module), A `[slots, r_max, d_in]`, B `[slots, d_out, r_max]`, and how one adapter is
//! written into one slot of all of them. Each stack keeps its f32 host copy (what the host
//! backend reads) and, on a CUDA device, its device copy in f32 (what the device backend
//! reads); on the CPU there is only the host copy.

use candle_core::{DType, Device};
use loramux_kernels::{DeviceSlotStack, SlotStack};

use super::BankConfig;
use crate::{Adapter, ModelConfig, ModuleKind, Result, RuntimeError};

#[derive(Debug)]
pub(crate) struct ModuleStacks {
    model: ModelConfig,
    bank: BankConfig,
    device: Device,
    /// Indexed by `layer * 7 + module.index()`; `None` until an adapter targets it.
    stacks: Vec<Option<DeviceSlotStack>>,
}

/// The element type of device stacks: the device backend's activations are f32.
const STACK_DTYPE: DType = DType::F32;

const MODULES: usize = ModuleKind::ALL.len();

impl ModuleStacks {
    pub(crate) fn new(model: &ModelConfig, bank: BankConfig, device: &Device) -> Self {
        Self {
            model: model.clone(),
            bank,
            device: device.clone(),
            stacks: (0..model.num_layers * MODULES).map(|_| None).collect(),
        }
    }

    pub(crate) fn get(&self, layer: usize, module: ModuleKind) -> Option<&DeviceSlotStack> {
        self.stacks
            .get(layer * MODULES + module.index())
            .and_then(Option::as_ref)
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Refuses an adapter whose ranks exceed `r_max` or whose weights were built for a
    /// model of another shape, before any slot is touched.
    pub(crate) fn check_fits(&self, adapter: &Adapter) -> Result<()> {
        let refuse = |reason: String| RuntimeError::AdapterDoesNotFit {
            id: adapter.id().to_string(),
            reason,
        };
        for ((layer, module), w) in adapter.modules() {
            let name = module.hf_name();
            if layer >= self.model.num_layers {
                return Err(refuse(format!(
                    "it changes layer {layer}, but the bank's model has {} layers",
                    self.model.num_layers
                )));
            }
            if w.rank > self.bank.r_max {
                return Err(refuse(format!(
                    "{name} of layer {layer} has rank {}, more than the bank's r_max = {}",
                    w.rank, self.bank.r_max
                )));
            }
            let (d_in, d_out) = self.model.module_shape(module);
            if let Some(problem) = w.problem(module, d_in, d_out) {
                return Err(refuse(format!(
                    "layer {layer}, {problem} (built for a model of another shape?)"
                )));
            }
        }
        Ok(())
    }

    /// Writes `adapter` into `slot` of every stack: its own modules get its weights (the
    /// stack is allocated on first use), every other existing stack gets rank 0, so nothing
    /// of the slot's previous adapter survives.
    pub(crate) fn write(&mut self, slot: u32, adapter: &Adapter) -> Result<()> {
        self.clear(slot)?;
        let slot = slot as usize;
        for ((layer, module), w) in adapter.modules() {
            let (d_in, d_out) = self.model.module_shape(module);
            let (slots, r_max) = (self.bank.slots, self.bank.r_max);
            let Some(entry) = self.stacks.get_mut(layer * MODULES + module.index()) else {
                return Err(RuntimeError::AdapterDoesNotFit {
                    id: adapter.id().to_string(),
                    reason: format!("it changes layer {layer}, which the bank's model lacks"),
                });
            };
            let stack = match entry {
                Some(stack) => stack,
                None => entry.insert(DeviceSlotStack::upload(
                    SlotStack::new(slots, r_max, d_in, d_out),
                    STACK_DTYPE,
                    &self.device,
                )?),
            };
            match adapter.prepared(layer, module) {
                Some(small) => {
                    stack.write_slot_prepared(slot, &w.a, &w.b, w.rank, w.scale, small.clone())?
                }
                None => stack.write_slot(slot, &w.a, &w.b, w.rank, w.scale)?,
            }
        }
        Ok(())
    }

    /// Sets `slot` to rank 0 in every stack.
    pub(crate) fn clear(&mut self, slot: u32) -> Result<()> {
        for stack in self.stacks.iter_mut().flatten() {
            stack.clear_slot(slot as usize)?;
        }
        Ok(())
    }
}
