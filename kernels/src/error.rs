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
}
