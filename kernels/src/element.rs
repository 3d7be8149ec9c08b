//! Element types of the kernels: f32, f16 and bf16 in memory, always f32 in arithmetic.
//!
//! The conversions are the ones the CUDA kernels perform (round to nearest even), so a CPU
//! twin and a kernel round the same values to the same bits.

use candle_core::DType;
use half::{bf16, f16};

/// A storage type of x, y, A and B. Sums are carried in f32 whatever the storage type.
pub trait Element: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    const DTYPE: DType;
    /// Suffix of the kernel names for this type (`lora_shrink_{SUFFIX}`).
    const SUFFIX: &'static str;
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    const SUFFIX: &'static str = "f32";
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    const SUFFIX: &'static str = "f16";
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    const SUFFIX: &'static str = "bf16";
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// Rounds f32 values into the element type `T`.
pub fn convert_from_f32<T: Element>(values: &[f32]) -> Vec<T> {
    values.iter().map(|&v| T::from_f32(v)).collect()
}

/// Rounds f32 values through `T` and back: the values a `T` kernel actually sees.
pub fn round_through<T: Element>(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| T::from_f32(v).to_f32()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_and_loses_the_expected_bits() {
        // 1 + 2^-8 lies exactly between two bf16 values: ties go to the even one (1.0).
        assert_eq!(bf16::from_f32(1.0 + 2f32.powi(-8)).to_f32(), 1.0);
        assert_eq!(
            bf16::from_f32(1.0 + 3.0 * 2f32.powi(-8)).to_f32(),
            1.0 + 2f32.powi(-6)
        );
        let v = 0.123_456_79f32;
        assert!((round_through::<f16>(&[v])[0] - v).abs() <= v * 2f32.powi(-11));
        assert!((round_through::<bf16>(&[v])[0] - v).abs() <= v * 2f32.powi(-8));
        assert_eq!(round_through::<f32>(&[v])[0], v);
    }
}
