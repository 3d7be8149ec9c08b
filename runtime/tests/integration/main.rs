//! The runtime's one integration-test binary: the model against transformers + PEFT, and the
//! engine against plain batched generation (both need the default model: `loramux models
//! fetch`), and the device backend against the host backend on tiny in-memory models.

mod architectures;
mod config_refusals;
mod device;
mod engine;
mod engine_metrics;
mod engine_steps;
mod logprobs;
mod reference;
