//! The PTX of `lora_mix.cu`, compiled once per process by NVRTC.

use crate::launch_shape::{MAX_EXPERTS, MAX_RANK, SHRINK_WARPS};
use crate::{KernelError, Result};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use std::sync::OnceLock;

/// Name under which candle caches the loaded module, per device.
pub(crate) const MODULE: &str = "loramux_lora_mix";

/// The target GPUs are H100/H200. PTX for sm_90 is JIT-compiled by the driver for any newer
/// architecture; `eligibility::MIN_COMPUTE_CAPABILITY` keeps older GPUs on the CPU path.
const PTX_ARCH: &str = "sm_90";

const SOURCE: &str = include_str!("lora_mix.cu");

/// Compiling takes a few hundred milliseconds and every (layer, module) stack uses the same
/// code, so the result is computed once and never changes afterwards (a failure too: the
/// toolkit does not get better by retrying).
static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();

pub(crate) fn ptx() -> Result<&'static str> {
    PTX.get_or_init(compile)
        .as_deref()
        .map_err(|message| KernelError::Backend {
            context: "NVRTC compile of lora_mix.cu",
            message: message.clone(),
        })
}

fn compile() -> std::result::Result<String, String> {
    let options = CompileOptions {
        arch: Some(PTX_ARCH),
        options: vec![
            format!("-DLORA_MAX_RANK={MAX_RANK}"),
            format!("-DLORA_MAX_EXPERTS={MAX_EXPERTS}"),
            format!("-DLORA_SHRINK_WARPS={SHRINK_WARPS}"),
        ],
        name: Some("lora_mix.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(SOURCE, options)
        .map(|ptx| ptx.to_src())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    /// NVRTC needs no GPU: this runs wherever the binary starts (with the stub driver too).
    #[test]
    fn the_source_compiles_to_sm_90_ptx_with_six_typed_kernels() {
        let ptx = super::ptx().unwrap();
        assert!(ptx.contains(".target sm_90"));
        for op in ["lora_shrink", "lora_expand"] {
            for dtype in ["f32", "f16", "bf16"] {
                let entry = format!(".entry {op}_{dtype}(");
                assert!(ptx.contains(&entry), "no {entry} in the PTX");
            }
        }
    }
}
