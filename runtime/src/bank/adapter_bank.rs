//! `AdapterBank`: the resident adapters of one base model — [`ModuleStacks`] for the tensors,
//! a shared [`SlotTable`] for the policy, [`AdapterLease`]s for the pins.
//!
//! Shape contract: `stack(layer, module)` is A `[slots, r_max, d_in]`, B `[slots, d_out,
//! r_max]`, scale and rank per slot, with `(d_in, d_out) = ModelConfig::module_shape(module)`;
//! `None` until some loaded adapter has targeted that module.
//!
//! Residency is keyed by [`ResidencyKey`] (id and the weights file's sha256): an adapter
//! loaded from other files under a resident id is a miss and gets its own slot. Adapters
//! built in memory have no file and are keyed by id alone.

use std::sync::{Arc, Mutex};

use candle_core::Device;
use loramux_kernels::{DeviceSlotStack, SlotStack};

use super::lease::lock;
use super::stacks::ModuleStacks;
use super::{AdapterLease, BankConfig, BankStats, ResidencyKey, SlotPlan, SlotTable};
use crate::model::LoraStacks;
use crate::{Adapter, AdapterId, ModelConfig, ModuleKind, Result, RuntimeError};

#[derive(Debug)]
pub struct AdapterBank {
    config: BankConfig,
    table: Arc<Mutex<SlotTable>>,
    stacks: ModuleStacks,
}

impl AdapterBank {
    /// A bank whose stacks live on the host: for the host backend (and the device backend
    /// on `Device::Cpu`).
    pub fn new(model: &ModelConfig, config: BankConfig) -> Result<Self> {
        Self::on_device(model, config, &Device::Cpu)
    }

    /// A bank whose stacks live on `device` (as well as on the host): for a model on that
    /// device (see `LlamaModel::device`).
    pub fn on_device(model: &ModelConfig, config: BankConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            table: Arc::new(Mutex::new(SlotTable::new(config.slots))),
            stacks: ModuleStacks::new(model, config, device),
        })
    }

    /// Makes `adapter` resident and pins it until the returned lease is dropped.
    ///
    /// A hit writes nothing. A miss takes the lowest free slot, or evicts the least recently
    /// released idle adapter, and writes every module of `adapter` into that slot. Errors:
    /// `AdapterDoesNotFit` (rank above `r_max`, or weights for another model shape; nothing
    /// is evicted) and `BankFull` when every slot is pinned.
    pub fn acquire(&mut self, adapter: &Adapter) -> Result<AdapterLease> {
        let key = ResidencyKey::of(adapter);
        let _span = tracing::debug_span!("bank_acquire", key = %key).entered();
        if lock(&self.table).slot_of(&key).is_none() {
            self.stacks.check_fits(adapter)?;
        }
        // The lock is not held while writing: only `&mut self` methods change residency, and
        // a lease dropped meanwhile can only release a slot, never the one being written
        // (it is pinned by this acquire).
        let plan = lock(&self.table).acquire(&key);
        let slot = match plan {
            SlotPlan::Hit(slot) => slot,
            SlotPlan::Full => {
                return Err(RuntimeError::BankFull {
                    slots: self.config.slots,
                })
            }
            SlotPlan::Load { slot, evict } => {
                if let Err(e) = self.stacks.write(slot, adapter) {
                    // Half-written: make sure no one can use the slot's remains.
                    if let Err(clear) = self.stacks.clear(slot) {
                        tracing::error!(slot, "could not clear a half-written slot: {clear}");
                    }
                    lock(&self.table).forget(slot);
                    return Err(e);
                }
                tracing::debug!(slot, evicted = ?evict.as_ref().map(ToString::to_string), "adapter loaded");
                slot
            }
        };
        Ok(AdapterLease::new(self.table.clone(), slot, key.id))
    }

    /// The stacked adapters of one module, `None` until an adapter has targeted it.
    pub fn stack(&self, layer: usize, module: ModuleKind) -> Option<&SlotStack> {
        self.stacks.get(layer, module).map(DeviceSlotStack::host)
    }

    /// The device the stacks live on.
    pub fn device(&self) -> &Device {
        self.stacks.device()
    }

    /// The slot holding an adapter with this id (whatever its content), if one is resident.
    pub fn slot_of(&self, id: &AdapterId) -> Option<u32> {
        let table = lock(&self.table);
        let key = table.resident_ids().into_iter().find(|k| &k.id == id)?;
        table.slot_of(&key)
    }

    pub fn stats(&self) -> BankStats {
        lock(&self.table).stats()
    }

    /// Resident adapters (pinned or idle), in slot order.
    pub fn resident(&self) -> Vec<AdapterId> {
        lock(&self.table)
            .resident_ids()
            .into_iter()
            .map(|k| k.id)
            .collect()
    }

    /// What the engine's admission planner sees of the bank: the pinned adapters, and the
    /// idle resident ones in eviction order (next victim first).
    pub fn residency(&self) -> (Vec<ResidencyKey>, Vec<ResidencyKey>) {
        let table = lock(&self.table);
        (table.pinned_ids(), table.idle_order())
    }

    /// Whether this adapter (these files) is resident, pinned or idle.
    pub fn is_resident(&self, key: &ResidencyKey) -> bool {
        lock(&self.table).slot_of(key).is_some()
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.config.slots
    }

    pub fn config(&self) -> BankConfig {
        self.config
    }
}

/// The model reads the resident adapters through this trait.
impl LoraStacks for AdapterBank {
    fn stack(&self, layer: usize, module: ModuleKind) -> Option<&SlotStack> {
        self.stacks.get(layer, module).map(DeviceSlotStack::host)
    }

    fn device_stack(&self, layer: usize, module: ModuleKind) -> Option<&DeviceSlotStack> {
        self.stacks.get(layer, module)
    }
}

#[cfg(test)]
mod tests {
    use loramux_kernels::{lora_mix, MixPlan, SlotWeight};

    use super::*;
    use crate::adapter::testing::{mem_adapter, tiny_model, values};
    use crate::ModuleKind::{Down, Gate, Up, Q, V};

    fn bank(slots: usize, r_max: usize) -> AdapterBank {
        AdapterBank::new(&tiny_model(), BankConfig { slots, r_max }).unwrap()
    }

    fn id(name: &str) -> AdapterId {
        AdapterId::new(name).unwrap()
    }

    /// An adapter on q_proj and up_proj of layer 0, rank 2.
    fn small(name: &str, seed: u64) -> Adapter {
        mem_adapter(name, &[(0, Q), (0, Up)], 2, 4.0, seed)
    }

    #[test]
    fn evicts_the_least_recently_released_idle_adapter() {
        let mut bank = bank(3, 4);
        let (a, b, c, d) = (small("a", 1), small("b", 2), small("c", 3), small("d", 4));
        let la = bank.acquire(&a).unwrap();
        let lb = bank.acquire(&b).unwrap();
        let lc = bank.acquire(&c).unwrap();
        // Acquired a, b, c but released b, c, a: b is the least recently *released*.
        drop(lb);
        drop(lc);
        drop(la);
        let ld = bank.acquire(&d).unwrap();
        assert_eq!(ld.slot(), 1);
        assert_eq!(bank.slot_of(&id("b")), None);
        assert_eq!(bank.resident(), [id("a"), id("d"), id("c")]);
        drop(ld);
        let _lb = bank.acquire(&b).unwrap();
        assert_eq!(bank.slot_of(&id("b")), Some(2), "c was next in line");
    }

    #[test]
    fn pinned_adapters_are_never_evicted_and_full_is_an_error() {
        let mut bank = bank(2, 4);
        let la = bank.acquire(&small("a", 1)).unwrap();
        let lb = bank.acquire(&small("b", 2)).unwrap();
        let err = bank.acquire(&small("c", 3)).unwrap_err();
        assert!(matches!(err, RuntimeError::BankFull { slots: 2 }), "{err}");
        assert_eq!(bank.resident(), [id("a"), id("b")]);
        drop(lb);
        let lc = bank.acquire(&small("c", 3)).unwrap();
        assert_eq!((lc.slot(), la.slot()), (1, 0));
        assert_eq!(bank.slot_of(&id("a")), Some(0));
    }

    #[test]
    fn new_files_under_a_resident_id_are_a_miss_and_keep_the_id() {
        use crate::adapter::testing::{lora_config, lora_pair, write_adapter};
        use safetensors::Dtype;
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model();
        let load = |seed: u64| {
            let sub = dir.path().join(format!("v{seed}"));
            std::fs::create_dir_all(&sub).unwrap();
            let tensors = lora_pair(0, Q, 2, Dtype::F32, seed);
            write_adapter(
                &sub,
                &lora_config(2, 4.0, serde_json::json!(["q_proj"])),
                &tensors,
            );
            Adapter::load(id("a"), &sub, &model).unwrap()
        };
        let (old, new) = (load(1), load(7));
        let mut bank = bank(2, 4);
        let first = bank.acquire(&old).unwrap();
        let second = bank.acquire(&new).unwrap();
        assert_ne!(first.slot(), second.slot());
        assert_ne!(
            bank.stack(0, Q).unwrap().a(first.slot() as usize),
            bank.stack(0, Q).unwrap().a(second.slot() as usize)
        );
        assert_eq!((first.id(), second.id()), (&id("a"), &id("a")));
        assert_eq!(bank.acquire(&load(7)).unwrap().slot(), second.slot());
    }

    #[test]
    fn counts_and_hits_need_no_write() {
        let mut bank = bank(2, 4);
        let a = small("a", 1);
        drop(bank.acquire(&a).unwrap());
        let before = bank.stack(0, Q).unwrap().a(0).to_vec();
        // Same id, different weights: a hit must not touch the slot.
        let impostor = small("a", 99);
        let lease = bank.acquire(&impostor).unwrap();
        assert_eq!(lease.slot(), 0);
        assert_eq!(bank.stack(0, Q).unwrap().a(0), &before[..]);
        let _second = bank.acquire(&a).unwrap();
        assert_eq!(
            bank.stats(),
            BankStats {
                hits: 2,
                misses: 1,
                loads: 1,
                evictions: 0
            }
        );
        assert_eq!(bank.capacity(), 2);
    }

    #[test]
    fn a_reused_slot_keeps_nothing_of_the_previous_adapter() {
        let mut bank = bank(1, 4);
        let wide = mem_adapter("wide", &[(0, Q), (1, Up), (2, Down), (2, Gate)], 4, 8.0, 1);
        drop(bank.acquire(&wide).unwrap());
        assert_eq!(bank.stack(1, Up).unwrap().rank(0), 4);
        let narrow = mem_adapter("narrow", &[(0, Q)], 2, 2.0, 2);
        let lease = bank.acquire(&narrow).unwrap();
        assert_eq!(lease.slot(), 0);
        assert_eq!(bank.stats().evictions, 1);
        assert_eq!(bank.stack(0, Q).unwrap().rank(0), 2);
        for (layer, module) in [(1, Up), (2, Down), (2, Gate)] {
            assert_eq!(bank.stack(layer, module).unwrap().rank(0), 0, "{module:?}");
        }
        // And the kernel agrees: slot 0 adds nothing to up_proj of layer 1.
        let stack = bank.stack(1, Up).unwrap();
        let x = values(5, 2 * stack.d_in());
        let mut y = vec![0.25; 2 * stack.d_out()];
        lora_mix(
            &x,
            &mut y,
            stack,
            &MixPlan::uniform(
                2,
                &[SlotWeight {
                    slot: 0,
                    weight: 1.0,
                }],
            ),
        )
        .unwrap();
        assert!(y.iter().all(|&v| v == 0.25));
        assert!(
            bank.stack(1, Q).is_none(),
            "never targeted, never allocated"
        );
    }

    #[test]
    fn refuses_ranks_above_r_max_without_evicting() {
        let mut bank = bank(1, 4);
        drop(bank.acquire(&small("a", 1)).unwrap());
        let big = mem_adapter("big-rank", &[(1, V)], 8, 8.0, 3);
        let err = bank.acquire(&big).unwrap_err();
        assert!(
            matches!(err, RuntimeError::AdapterDoesNotFit { ref id, .. } if id == "big-rank"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("big-rank")
                && msg.contains("v_proj of layer 1 has rank 8")
                && msg.contains("r_max = 4"),
            "{msg}"
        );
        assert_eq!(bank.resident(), [id("a")]);
        assert_eq!(bank.stats().evictions, 0);
    }

    #[test]
    fn refuses_adapters_for_another_model_shape() {
        let mut other = tiny_model();
        other.num_layers = 2;
        let mut bank = AdapterBank::new(&other, BankConfig::default()).unwrap();
        let err = bank
            .acquire(&mem_adapter("deep", &[(2, Q)], 2, 2.0, 1))
            .unwrap_err();
        assert!(err.to_string().contains("2 layers"), "{err}");
        other.num_layers = 3;
        other.intermediate_size = 32;
        let mut bank = AdapterBank::new(&other, BankConfig::default()).unwrap();
        let err = bank
            .acquire(&mem_adapter("wide", &[(0, Up)], 2, 2.0, 1))
            .unwrap_err();
        assert!(err.to_string().contains("another shape"), "{err}");
        assert!(AdapterBank::new(&other, BankConfig { slots: 0, r_max: 4 }).is_err());
    }

    /// `y + Σ w · scale · B (A x)` straight from the adapters' own weights, in f64.
    fn direct(
        x: &[f32],
        y: &[f32],
        rows: &[Vec<(&Adapter, f32)>],
        layer: usize,
        module: ModuleKind,
    ) -> Vec<f64> {
        let (d_in, d_out) = tiny_model().module_shape(module);
        let mut out: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        for (i, experts) in rows.iter().enumerate() {
            let xi = &x[i * d_in..(i + 1) * d_in];
            for &(adapter, weight) in experts {
                let w = adapter.weights(layer, module).unwrap();
                let t: Vec<f64> = (0..w.rank)
                    .map(|r| {
                        (0..d_in)
                            .map(|c| w.a[r * d_in + c] as f64 * xi[c] as f64)
                            .sum()
                    })
                    .collect();
                for j in 0..d_out {
                    let bt: f64 = (0..w.rank).map(|r| w.b[j * w.rank + r] as f64 * t[r]).sum();
                    out[i * d_out + j] += weight as f64 * w.scale as f64 * bt;
                }
            }
        }
        out
    }

    #[test]
    fn mixes_two_resident_adapters_like_a_direct_computation() {
        let mut bank = bank(4, 8);
        // Different ranks (4 and 2) under r_max 8 exercise the zero padding.
        let math = mem_adapter("math", &[(1, V), (0, Q)], 4, 8.0, 11);
        let code = mem_adapter("code", &[(1, V), (2, Down)], 2, 6.0, 12);
        let filler = small("filler", 13);
        let _lf = bank.acquire(&filler).unwrap();
        let lm = bank.acquire(&math).unwrap();
        let lc = bank.acquire(&code).unwrap();
        let (sm, sc) = (lm.slot(), lc.slot());
        assert_ne!(sm, sc);

        let (layer, module) = (1, V);
        let stack = bank.stack(layer, module).unwrap();
        let rows: Vec<Vec<(&Adapter, f32)>> = vec![
            vec![(&math, 1.0)],
            vec![(&code, 0.5)],
            vec![(&math, 0.3), (&code, 0.7)],
            vec![],
            vec![(&code, -1.25), (&math, 2.0)],
        ];
        let mut plan = MixPlan::new();
        for experts in &rows {
            let pairs: Vec<SlotWeight> = experts
                .iter()
                .map(|&(a, weight)| SlotWeight {
                    slot: if a.id() == math.id() { sm } else { sc },
                    weight,
                })
                .collect();
            plan.push_row(&pairs);
        }
        let x = values(21, rows.len() * stack.d_in());
        let y0 = values(22, rows.len() * stack.d_out());
        let mut y = y0.clone();
        lora_mix(&x, &mut y, stack, &plan).unwrap();

        let expected = direct(&x, &y0, &rows, layer, module);
        let err: f64 = y
            .iter()
            .zip(&expected)
            .map(|(&g, e)| (g as f64 - e).powi(2))
            .sum::<f64>()
            .sqrt();
        let delta: f64 = expected
            .iter()
            .zip(&y0)
            .map(|(e, &v)| (e - v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            delta > 1.0,
            "the adapters must change y for the test to mean anything"
        );
        assert!(err / delta < 1e-4, "relative error {}", err / delta);
        // Row 3 has no experts: untouched.
        let d_out = stack.d_out();
        assert_eq!(&y[3 * d_out..4 * d_out], &y0[3 * d_out..4 * d_out]);
    }
}
