//! loramux evaluation: benchmarks of the runtime and the task suite (the adapter zoo and
//! reports come next). Binaries stay thin: they parse arguments, call in here and print.

pub mod bench;
pub mod gate_training;
pub mod harness;
pub mod route_calibration;
pub mod tasks;
pub mod training;
pub mod zoo;
