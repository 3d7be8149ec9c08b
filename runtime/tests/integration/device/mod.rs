//! The device backend of the model: on `Device::Cpu` against the host backend (`cpu`), and
//! on a GPU against itself on the CPU (`cuda`, feature `cuda`, skipped without a GPU).

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod scenario;
