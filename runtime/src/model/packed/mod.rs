//! Quantized base weights re-laid out for integer dot-product instructions (AVX-512 VNNI,
//! or AVX2's `vpmaddubsw`), the tier chosen at run time by the CPU's features.
//!
//! candle's quantized CPU matmul re-reads every weight block once per input row and has no
//! SIMD dot product for Q4_1, the default model's format, so loramux used to re-round Q4_1 to
//! Q8_0 for few rows and keep a dense f32 copy (4 bytes a weight) for many. This module keeps
//! the file's own 4- or 8-bit values and multiplies them the way llama.cpp does: each input
//! row is rounded to 8 bits per 32-value block (one scale per block), and `vpdpbusd` forms 64
//! byte products per instruction — four times the work of an f32 FMA, on a quarter of the
//! bytes. Weights are packed so that one 64-byte load feeds sixteen output columns, and a
//! tile of up to eight input rows reuses each load.
//!
//! Numerics: the integer dot product of a block is exact; each block then adds
//! `d_w·d_x·dot (+ m_w·d_x·Σq_x)` in f32 with fused multiply-adds. The portable kernel does
//! the same operations in the same order, so both kernels give bit-identical results (a
//! test holds them to it); against an f64 product of the unrounded input the error is the
//! 8-bit rounding of the input (a test bounds it).

mod activation;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod layout;
mod portable;
#[cfg(test)]
mod tests;

pub use activation::QuantRows;
pub use layout::PackedWeight;

use rayon::prelude::*;

/// Which implementation multiplies. A SIMD kernel can only be had from the constructor that
/// checks the CPU for it, so holding one proves the instructions exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel(KernelKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelKind {
    /// AVX-512 VNNI (x86-64 with avx512f, avx512bw, avx512vnni).
    Vnni,
    /// AVX2 with FMA.
    Avx2,
    /// Plain Rust: the twin the SIMD kernels are tested against.
    #[cfg_attr(not(test), allow(dead_code))]
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs: VNNI, else AVX2; `None` where neither exists (the
    /// portable kernel is a test twin, slower than candle's own kernels).
    pub fn best() -> Option<Self> {
        Self::vnni().or_else(Self::avx2)
    }

    /// Its name in benchmark output and logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            KernelKind::Vnni => "avx512-vnni",
            KernelKind::Avx2 => "avx2",
            KernelKind::Portable => "portable",
        }
    }

    /// The AVX2 kernel, when this CPU has AVX2 and FMA.
    pub fn avx2() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Self(KernelKind::Avx2));
            }
        }
        None
    }

    /// The VNNI kernel, when this CPU has it.
    pub fn vnni() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Some(Self(KernelKind::Vnni));
            }
        }
        None
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn portable() -> Self {
        Self(KernelKind::Portable)
    }
}

/// Rows handled by one pass over a weight block (accumulators held in registers).
const ROW_TILE: usize = 8;

/// Output-column groups per parallel task: enough work to amortize a task's start.
const MIN_GROUPS_PER_TASK: usize = 4;

/// `*mut f32` that crosses threads: tasks write disjoint column ranges of the output.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the columns of its own groups, so no two threads touch the
// same element, and the buffer outlives the parallel loop that uses the pointer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the `Send` wrapper rather than its raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl PackedWeight {
    /// `x` is `[rows, k]` row-major; returns `x · Wᵀ`, `[rows, n]`.
    pub fn matmul(&self, x: &[f32], kernel: Kernel) -> Vec<f32> {
        let rows = x.len() / self.k();
        let q = QuantRows::new(x, self.k(), self.bits());
        let mut y = vec![0f32; rows * self.n()];
        if rows == 0 {
            return y;
        }
        let out = OutPtr(y.as_mut_ptr());
        let groups = self.groups();
        let tasks =
            (groups / MIN_GROUPS_PER_TASK).clamp(1, rayon::current_num_threads().max(1) * 2);
        let per_task = groups.div_ceil(tasks);
        (0..tasks).into_par_iter().for_each(|t| {
            let first = t * per_task;
            let last = ((t + 1) * per_task).min(groups);
            for g in first..last {
                let mut r0 = 0;
                while r0 < rows {
                    let tile = (rows - r0).min(ROW_TILE);
                    // SAFETY: group `g` belongs to this task only; `y` holds rows × n values.
                    unsafe { self.tile(kernel, g, &q, r0, tile, out.get()) };
                    r0 += tile;
                }
            }
        });
        y
    }

    /// Output columns `[16g, 16g + 16)` of rows `[r0, r0 + tile)`.
    ///
    /// # Safety
    /// `out` points to `[rows, n]` f32 values and no other thread writes these columns.
    unsafe fn tile(
        &self,
        kernel: Kernel,
        g: usize,
        q: &QuantRows,
        r0: usize,
        tile: usize,
        out: *mut f32,
    ) {
        // SAFETY: the caller upholds this function's contract (see its doc).
        unsafe {
            match kernel.0 {
                // SAFETY: a `Vnni` kernel exists only where `Kernel::vnni` found the features.
                #[cfg(target_arch = "x86_64")]
                KernelKind::Vnni => avx512::tile(self, g, q, r0, tile, out),
                // SAFETY: an `Avx2` kernel exists only where `Kernel::avx2` found the features.
                #[cfg(target_arch = "x86_64")]
                KernelKind::Avx2 => avx2::tile(self, g, q, r0, tile, out),
                #[cfg(not(target_arch = "x86_64"))]
                KernelKind::Vnni | KernelKind::Avx2 => portable::tile(self, g, q, r0, tile, out),
                KernelKind::Portable => portable::tile(self, g, q, r0, tile, out),
            }
        }
    }
}
