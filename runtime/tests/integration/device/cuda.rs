//! The device backend on CUDA against the same backend on `Device::Cpu` (feature `cuda`, GPU
//! machines only; without a usable GPU each test prints why and passes): the ragged
//! schedule of the CPU tests, and decode with 32 distinct adapters in a batch of 32, where
//! every LoRA call must be eligible for the fused kernels.

use super::scenario::{adapter, bank, max_abs_diff, model, ragged_schedule, run, tiny, tokens};
use super::scenario::{DotGate, SeqPlan};
use candle_core::Device;
use loramux_kernels::device_kind;
use loramux_kernels::eligibility::{cuda_eligibility, MixRequest};
use loramux_runtime::{Candidate, FixedGate, LogitRows, ModelBackend, ModuleKind};

/// f32 on both sides; cuBLAS and the fused kernels sum in other orders than the CPU.
const TOLERANCE: f32 = 1e-3;

/// The first GPU, or None (with the reason printed) where there is none.
fn gpu(test: &str) -> Option<Device> {
    match loramux_runtime::device::cuda_device(0) {
        Ok(device) => Some(device),
        Err(e) => {
            eprintln!("{test}: skipped ({e})");
            None
        }
    }
}

#[test]
fn cuda_matches_the_cpu_device_backend_on_a_ragged_batch() {
    let Some(gpu) = gpu("cuda_matches_the_cpu_device_backend_on_a_ragged_batch") else {
        return;
    };
    let cfg = tiny(2, true, false);
    let on_cpu = model(&cfg, &ModelBackend::Device(Device::Cpu));
    let on_gpu = model(&cfg, &ModelBackend::Device(gpu));
    let adapters = [
        adapter(&cfg, "a", &ModuleKind::ALL, 4, 1),
        adapter(
            &cfg,
            "b",
            &[ModuleKind::Q, ModuleKind::V, ModuleKind::Down],
            2,
            2,
        ),
        adapter(
            &cfg,
            "c",
            &[ModuleKind::K, ModuleKind::O, ModuleKind::Up],
            3,
            3,
        ),
    ];
    let (cpu_bank, leases) = bank(&cfg, &on_cpu, &adapters, 4);
    let (gpu_bank, _gpu_leases) = bank(&cfg, &on_gpu, &adapters, 4);
    let slots: Vec<u32> = leases.iter().map(|l| l.slot()).collect();
    let schedule = ragged_schedule([slots[0], slots[1], slots[2]], cfg.vocab_size);
    let gate = DotGate::new(&cfg, 3, 9);
    let expected = run(&on_cpu, &cpu_bank, &gate, &schedule);
    let found = run(&on_gpu, &gpu_bank, &gate, &schedule);
    let diff = max_abs_diff(&expected, &found);
    assert!(diff <= TOLERANCE, "cuda vs cpu: max |Δlogit| = {diff}");
}

#[test]
fn cuda_decodes_32_distinct_adapters_in_a_batch_of_32() {
    let Some(gpu) = gpu("cuda_decodes_32_distinct_adapters_in_a_batch_of_32") else {
        return;
    };
    let cfg = tiny(2, false, true);
    let on_cpu = model(&cfg, &ModelBackend::Device(Device::Cpu));
    let on_gpu = model(&cfg, &ModelBackend::Device(gpu.clone()));
    let adapters: Vec<_> = (0..32)
        .map(|i| adapter(&cfg, &format!("a{i}"), &ModuleKind::ALL, 4, 100 + i))
        .collect();
    let (cpu_bank, leases) = bank(&cfg, &on_cpu, &adapters, 4);
    let (gpu_bank, _gpu_leases) = bank(&cfg, &on_gpu, &adapters, 4);
    // The fused kernels take every projection of this batch (not the CPU fallback).
    for module in ModuleKind::ALL {
        let (d_in, d_out) = cfg.module_shape(module);
        let request = MixRequest {
            dtype: candle_core::DType::F32,
            r_max: 4,
            k_max: 1,
            d_in,
            d_out,
            rows: 32,
            slots: 32,
            device: device_kind(&gpu),
        };
        assert_eq!(cuda_eligibility(&request), Ok(()), "{module:?}");
    }
    let schedule: Vec<SeqPlan> = leases
        .iter()
        .enumerate()
        .map(|(i, lease)| {
            let mut steps = vec![tokens(i as u64, 4, cfg.vocab_size)];
            steps.extend((0..4).map(|s| tokens(1000 + 10 * i as u64 + s, 1, cfg.vocab_size)));
            SeqPlan {
                candidates: vec![Candidate {
                    slot: lease.slot(),
                    prior: 1.0,
                }],
                gated: false,
                steps,
                logits: vec![LogitRows::Last; 5],
            }
        })
        .collect();
    let expected = run(&on_cpu, &cpu_bank, &FixedGate, &schedule);
    let found = run(&on_gpu, &gpu_bank, &FixedGate, &schedule);
    assert_eq!(found.len(), 32 * 5 * cfg.vocab_size);
    let diff = max_abs_diff(&expected, &found);
    assert!(diff <= TOLERANCE, "cuda vs cpu: max |Δlogit| = {diff}");
}
