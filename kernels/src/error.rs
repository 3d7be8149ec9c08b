//! The one error type of the kernels crate.

/// Why a LoRA mixture call was refused. Every variant names the offending sizes.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("x has {len} values, not a multiple of d_in={d_in}")]
    InputShape { len: usize, d_in: usize },
    #[error("y has {len} values but {rows} rows of d_out={d_out} need {expected}")]
    OutputShape {
        len: usize,
        rows: usize,
        d_out: usize,
        expected: usize,
    },
    #[error("mix plan covers {plan_rows} rows but x has {rows}")]
    PlanRows { plan_rows: usize, rows: usize },
    #[error("row {row} names slot {slot}, but the stack has {slots} slots")]
    SlotOutOfRange { row: usize, slot: u32, slots: usize },
    #[error("row {row} has weight {weight}, which is not finite")]
    NonFiniteWeight { row: usize, weight: f32 },
    #[error("slot {slot}: rank {rank} exceeds the stack's r_max={r_max}")]
    RankTooLarge {
        slot: usize,
        rank: usize,
        r_max: usize,
    },
    #[error("slot {slot}: {what} has {len} values, expected {expected}")]
    SlotShape {
        slot: usize,
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("{what} has {len} values, expected {expected}")]
    BufferLength {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("tensor {what} has shape {shape:?}, expected {expected:?}")]
    TensorShape {
        what: &'static str,
        shape: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("dtypes differ: x is {x:?}, y is {y:?}, the slot stack is {stack:?}")]
    DtypeMismatch {
        x: candle_core::DType,
        y: candle_core::DType,
        stack: candle_core::DType,
    },
    #[error("x, y and the slot stack must live on one device ({what} is elsewhere)")]
    DeviceMismatch { what: &'static str },
    /// A failure inside candle or the CUDA driver, kept as text so the enum stays comparable.
    #[error("the {tier} kernels need {missing}, which this CPU lacks")]
    TierUnavailable {
        tier: &'static str,
        missing: &'static str,
    },
    #[error("{context}: {message}")]
    Backend {
        context: &'static str,
        message: String,
    },
}

impl KernelError {
    /// Wraps a candle (or CUDA driver) error with what was being done when it happened.
    pub fn backend(context: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Backend {
            context,
            message: error.to_string(),
        }
    }
}
