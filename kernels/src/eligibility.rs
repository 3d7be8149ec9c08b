//! Whether one LoRA mixture call can run on the CUDA kernels: a pure function of sizes, dtype
//! and device, so dispatch is decided (and tested) without a GPU.

use crate::launch_shape::{EXPAND_THREADS, MAX_EXPERTS, MAX_RANK};
use candle_core::DType;

/// The PTX is compiled for this architecture (`cuda/program.rs`); older GPUs cannot load it.
pub const MIN_COMPUTE_CAPABILITY: (u32, u32) = (9, 0);

/// Where the inputs of a call live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda { compute_capability: (u32, u32) },
    Other,
}

/// The sizes of one call: the stack's r_max (its row stride), the plan's longest row (k),
/// x `[rows, d_in]`, y `[rows, d_out]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixRequest {
    pub dtype: DType,
    pub r_max: usize,
    pub k_max: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub rows: usize,
    pub slots: usize,
    pub device: DeviceKind,
}

/// Why a call stays off the CUDA kernels (it then runs on the CPU path).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Ineligible {
    #[error("inputs are not on a CUDA device ({device:?})")]
    NotCuda { device: DeviceKind },
    #[error("compute capability {found:?} is below {needed:?}")]
    OldGpu {
        found: (u32, u32),
        needed: (u32, u32),
    },
    #[error("dtype {dtype:?} is not one of f32, f16, bf16")]
    Dtype { dtype: DType },
    #[error("r_max {r_max} exceeds the kernels' limit of {limit}")]
    Rank { r_max: usize, limit: usize },
    #[error("{k} experts per row exceed the kernels' limit of {limit}")]
    Experts { k: usize, limit: usize },
    #[error("nothing to compute: {what} is zero")]
    Empty { what: &'static str },
    #[error("{what} = {value} exceeds the launch limit {limit}")]
    TooLarge {
        what: &'static str,
        value: usize,
        limit: usize,
    },
}

/// `Ok(())` when the CUDA kernels take this call, else the first reason they do not.
pub fn cuda_eligibility(req: &MixRequest) -> Result<(), Ineligible> {
    let DeviceKind::Cuda { compute_capability } = req.device else {
        return Err(Ineligible::NotCuda { device: req.device });
    };
    if compute_capability < MIN_COMPUTE_CAPABILITY {
        return Err(Ineligible::OldGpu {
            found: compute_capability,
            needed: MIN_COMPUTE_CAPABILITY,
        });
    }
    if !matches!(req.dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Ineligible::Dtype { dtype: req.dtype });
    }
    if req.r_max > MAX_RANK {
        return Err(Ineligible::Rank {
            r_max: req.r_max,
            limit: MAX_RANK,
        });
    }
    if req.k_max > MAX_EXPERTS {
        return Err(Ineligible::Experts {
            k: req.k_max,
            limit: MAX_EXPERTS,
        });
    }
    for (what, value) in [
        ("rows", req.rows),
        ("k (no row has an expert)", req.k_max),
        ("r_max", req.r_max),
        ("d_in", req.d_in),
        ("d_out", req.d_out),
        ("slots", req.slots),
    ] {
        if value == 0 {
            return Err(Ineligible::Empty { what });
        }
    }
    // Grid x counts rows (expand) or rows · k (shrink); grid y counts d_out tiles; slot
    // indices travel as i32.
    let i32_max = i32::MAX as usize;
    for (what, value, limit) in [
        ("rows · k", req.rows.saturating_mul(req.k_max), i32_max),
        ("d_out tiles", req.d_out.div_ceil(EXPAND_THREADS), 65_535),
        ("slots", req.slots, i32_max),
    ] {
        if value > limit {
            return Err(Ineligible::TooLarge { what, value, limit });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h200() -> MixRequest {
        MixRequest {
            dtype: DType::BF16,
            r_max: 16,
            k_max: 2,
            d_in: 4096,
            d_out: 4096,
            rows: 64,
            slots: 32,
            device: DeviceKind::Cuda {
                compute_capability: (9, 0),
            },
        }
    }

    #[test]
    fn a_typical_decode_batch_on_an_h200_is_eligible() {
        assert_eq!(cuda_eligibility(&h200()), Ok(()));
        for dtype in [DType::F32, DType::F16] {
            assert_eq!(cuda_eligibility(&MixRequest { dtype, ..h200() }), Ok(()));
        }
        let edge = MixRequest {
            r_max: MAX_RANK,
            k_max: MAX_EXPERTS,
            rows: 1,
            slots: 1,
            device: DeviceKind::Cuda {
                compute_capability: (12, 0),
            },
            ..h200()
        };
        assert_eq!(cuda_eligibility(&edge), Ok(()));
    }

    #[test]
    fn each_limit_gives_its_own_reason() {
        let cases = [
            (
                MixRequest {
                    device: DeviceKind::Cpu,
                    ..h200()
                },
                Ineligible::NotCuda {
                    device: DeviceKind::Cpu,
                },
            ),
            (
                MixRequest {
                    device: DeviceKind::Cuda {
                        compute_capability: (8, 0),
                    },
                    ..h200()
                },
                Ineligible::OldGpu {
                    found: (8, 0),
                    needed: (9, 0),
                },
            ),
            (
                MixRequest {
                    dtype: DType::F64,
                    ..h200()
                },
                Ineligible::Dtype { dtype: DType::F64 },
            ),
            (
                MixRequest {
                    r_max: 65,
                    ..h200()
                },
                Ineligible::Rank {
                    r_max: 65,
                    limit: 64,
                },
            ),
            (
                MixRequest { k_max: 5, ..h200() },
                Ineligible::Experts { k: 5, limit: 4 },
            ),
            (
                MixRequest { rows: 0, ..h200() },
                Ineligible::Empty { what: "rows" },
            ),
            (
                MixRequest { k_max: 0, ..h200() },
                Ineligible::Empty {
                    what: "k (no row has an expert)",
                },
            ),
            (
                MixRequest { d_in: 0, ..h200() },
                Ineligible::Empty { what: "d_in" },
            ),
            (
                MixRequest {
                    d_out: 65_536 * EXPAND_THREADS,
                    ..h200()
                },
                Ineligible::TooLarge {
                    what: "d_out tiles",
                    value: 65_536,
                    limit: 65_535,
                },
            ),
        ];
        for (req, reason) in cases {
            assert_eq!(cuda_eligibility(&req), Err(reason), "{req:?}");
        }
    }
}
