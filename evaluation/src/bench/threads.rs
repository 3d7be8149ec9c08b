//! Makes `--threads` real for every pool the benchmark runs on, and reports what took effect.
//!
//! candle 0.11 has two CPU pools, each sized once, lazily, from the environment:
//! - the barrier pool of the quantized matmuls (`candle_core::utils::barrier_pool`):
//!   `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the physical core count;
//! - rayon's global pool, used by candle's float matmul (`get_num_threads()` reads
//!   `RAYON_NUM_THREADS`), by loramux's attention and by the LoRA GEMMs.
//!
//! So both variables are set, and both pools are built, before any tensor work happens.

use anyhow::{bail, Result};
use serde::Serialize;

/// The thread counts in effect after [`configure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ThreadReport {
    pub requested: usize,
    /// Threads that run a quantized matmul: the barrier pool's workers plus the caller.
    pub candle_quantized: usize,
    /// What candle's float matmul asks rayon for.
    pub candle_float: usize,
    pub rayon_global: usize,
}

/// Sizes every pool to `threads`. Must run before the first tensor operation of the
/// process: a pool built earlier keeps its size, which is reported as an error.
pub fn configure(threads: usize) -> Result<ThreadReport> {
    let value = threads.to_string();
    // Setting the environment is only sound while no other thread reads it; this runs at the
    // start of the benchmark, before either pool (or anything else) has spawned a thread.
    std::env::set_var("RAYON_NUM_THREADS", &value);
    std::env::set_var("CANDLE_NUM_THREADS", &value);
    // An error here means the global pool exists already; the check below says whether its
    // size is the one asked for.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("rayon-{i}"))
        .build_global();
    let report = ThreadReport {
        requested: threads,
        candle_quantized: candle_core::utils::barrier_pool().n_workers() + 1,
        candle_float: candle_core::utils::get_num_threads(),
        rayon_global: rayon::current_num_threads(),
    };
    if [
        report.candle_quantized,
        report.candle_float,
        report.rayon_global,
    ]
    .iter()
    .any(|&n| n != threads)
    {
        bail!("asked for {threads} threads but a pool was built before: {report:?}");
    }
    Ok(report)
}
