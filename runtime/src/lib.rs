//! loramux runtime: a llama-family base model with PEFT LoRA adapters applied per token row.
//!
//! Data flow of one step: token rows of many sequences are flattened into one
//! `[rows, hidden]` matrix; every projection runs once over all rows; a [`gate::Gate`] turns
//! each row's candidate adapters into a `MixPlan` that `loramux_kernels::lora_mix` applies;
//! attention runs per sequence against that sequence's own KV cache.

pub mod chat_template;
pub mod config;
pub mod error;
pub mod sampling;
pub mod tokenizer;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use config::{ModelConfig, ModuleKind};
pub use error::{Result, RuntimeError};
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::{TokenStream, Tokenizer};
