//! The device backend on `Device::Cpu` against the host backend (the numerics reference):
//! same random model, same adapters, same gate, same ragged schedule; every logit within
//! 1e-4.

use super::scenario::{adapter, bank, max_abs_diff, model, ragged_schedule, run, tiny, DotGate};
use candle_core::Device;
use loramux_runtime::{FixedGate, LogitRows, ModelBackend, ModelConfig, ModuleKind};

const TOLERANCE: f32 = 1e-4;

/// Runs the ragged schedule on both backends of `cfg` and compares every logit.
fn device_matches_host(cfg: &ModelConfig) {
    let host = model(cfg, &ModelBackend::Host);
    let device = model(cfg, &ModelBackend::Device(Device::Cpu));
    let adapters = [
        adapter(cfg, "a", &ModuleKind::ALL, 4, 1),
        adapter(
            cfg,
            "b",
            &[ModuleKind::Q, ModuleKind::V, ModuleKind::Down],
            2,
            2,
        ),
        adapter(
            cfg,
            "c",
            &[ModuleKind::K, ModuleKind::O, ModuleKind::Up],
            3,
            3,
        ),
    ];
    let (host_bank, host_leases) = bank(cfg, &host, &adapters, 4);
    let (device_bank, device_leases) = bank(cfg, &device, &adapters, 4);
    let slots: Vec<u32> = host_leases.iter().map(|l| l.slot()).collect();
    assert_eq!(
        slots,
        device_leases.iter().map(|l| l.slot()).collect::<Vec<_>>()
    );
    let schedule = ragged_schedule([slots[0], slots[1], slots[2]], cfg.vocab_size);
    let gate = DotGate::new(cfg, 3, 9);
    let expected = run(&host, &host_bank, &gate, &schedule);
    let found = run(&device, &device_bank, &gate, &schedule);
    assert!(expected.iter().all(|v| v.is_finite()));
    // Sequence 1 asks for all 3 prefill rows, sequence 3 for all 3 rows of its second chunk.
    assert_eq!(expected.len(), (5 + 6 + 4 * 4) * cfg.vocab_size);
    let diff = max_abs_diff(&expected, &found);
    assert!(diff <= TOLERANCE, "device vs host: max |Δlogit| = {diff}");

    // Reversed, the prefill chunk comes before the decode rows of its step: the device
    // backend's batched decode rows and per-sequence chunk rows then return out of order.
    let mut reversed = schedule.clone();
    reversed.reverse();
    let diff = max_abs_diff(
        &run(&host, &host_bank, &gate, &reversed),
        &run(&device, &device_bank, &gate, &reversed),
    );
    assert!(diff <= TOLERANCE, "reversed: max |Δlogit| = {diff}");

    // The adapters matter: without them the logits move by far more than the tolerance.
    let base_only = run(&host, &host_bank, &FixedGate, &without_adapters(schedule));
    assert!(max_abs_diff(&expected, &base_only) > 100.0 * TOLERANCE);
}

fn without_adapters(mut schedule: Vec<super::scenario::SeqPlan>) -> Vec<super::scenario::SeqPlan> {
    for seq in &mut schedule {
        seq.candidates.clear();
        seq.gated = false;
    }
    schedule
}

#[test]
fn device_backend_on_cpu_matches_host_with_grouped_kv_heads() {
    device_matches_host(&tiny(2, false, true));
}

#[test]
fn device_backend_on_cpu_matches_host_with_qkv_bias_one_kv_head_and_lm_head() {
    device_matches_host(&tiny(1, true, false));
}

#[test]
fn device_backend_on_cpu_matches_host_on_the_base_model_alone() {
    let cfg = tiny(2, false, true);
    let host = model(&cfg, &ModelBackend::Host);
    let device = model(&cfg, &ModelBackend::Device(Device::Cpu));
    let mut schedule = without_adapters(ragged_schedule([0, 0, 0], cfg.vocab_size));
    schedule[0].logits[0] = LogitRows::All;
    let (host_bank, _) = bank(&cfg, &host, &[], 4);
    let (device_bank, _) = bank(&cfg, &device, &[], 4);
    let expected = run(&host, &host_bank, &FixedGate, &schedule);
    let found = run(&device, &device_bank, &FixedGate, &schedule);
    let diff = max_abs_diff(&expected, &found);
    assert!(diff <= TOLERANCE, "device vs host: max |Δlogit| = {diff}");
}

#[test]
fn a_cache_filled_by_one_backend_is_refused_by_the_other() {
    use loramux_runtime::{KvCache, NoAdapters, SeqStep};
    let cfg = tiny(2, false, true);
    let host = model(&cfg, &ModelBackend::Host);
    let device = model(&cfg, &ModelBackend::Device(Device::Cpu));
    let mut cache = KvCache::new(&cfg);
    let step = |cache| SeqStep {
        tokens: &[1, 2],
        cache,
        candidates: &[],
        logits: LogitRows::Last,
    };
    host.forward(&mut [step(&mut cache)], &NoAdapters, &FixedGate)
        .expect("host step");
    let step = |cache| SeqStep {
        tokens: &[3],
        cache,
        candidates: &[],
        logits: LogitRows::Last,
    };
    let err = device
        .forward(&mut [step(&mut cache)], &NoAdapters, &FixedGate)
        .expect_err("the device backend refuses a host cache");
    assert!(err.to_string().contains("another backend"), "{err}");
}
