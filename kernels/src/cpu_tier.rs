//! Which SIMD tier the CPU path's small-group kernels run on, chosen at run time from the
//! CPU's features (the binary is built for a portable baseline), or named by a caller that
//! wants one tier (the tests run every tier the machine has against the same reference).

use crate::{KernelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuTier {
    /// Sixteen-lane kernels (AVX-512F).
    Avx512,
    /// Eight-lane kernels (AVX2 + FMA + F16C).
    Avx2,
    /// Plain Rust, every CPU.
    Portable,
}

impl CpuTier {
    /// Every tier, fastest first.
    pub const ALL: [CpuTier; 3] = [CpuTier::Avx512, CpuTier::Avx2, CpuTier::Portable];

    pub fn name(self) -> &'static str {
        match self {
            CpuTier::Avx512 => "avx512",
            CpuTier::Avx2 => "avx2",
            CpuTier::Portable => "portable",
        }
    }

    /// Whether this CPU runs the tier; otherwise what it lacks.
    pub fn check(self) -> Result<()> {
        let missing = match self {
            CpuTier::Portable => None,
            #[cfg(target_arch = "x86_64")]
            CpuTier::Avx512 => (!crate::cpu_avx512::cpu_has()).then_some("avx512f"),
            #[cfg(target_arch = "x86_64")]
            CpuTier::Avx2 => (!crate::cpu_avx2::cpu_has()).then_some("avx2, fma and f16c"),
            #[cfg(not(target_arch = "x86_64"))]
            CpuTier::Avx512 => Some("an x86-64 CPU with avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            CpuTier::Avx2 => Some("an x86-64 CPU with avx2"),
        };
        match missing {
            None => Ok(()),
            Some(missing) => Err(KernelError::TierUnavailable {
                tier: self.name(),
                missing,
            }),
        }
    }

    /// The fastest tier this CPU runs (decided once per process).
    pub fn best() -> Self {
        static BEST: std::sync::OnceLock<CpuTier> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            Self::ALL
                .into_iter()
                .find(|t| t.check().is_ok())
                .unwrap_or(CpuTier::Portable)
        })
    }
}
