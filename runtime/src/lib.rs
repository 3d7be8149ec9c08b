//! loramux runtime: a llama-family base model with PEFT LoRA adapters applied per token row.
//!
//! Data flow of one step: token rows of many sequences are flattened into one
//! `[rows, hidden]` matrix; every projection runs once over all rows; a [`gate::Gate`] turns
//! each row's candidate adapters into a `MixPlan` that `loramux_kernels::lora_mix` applies;
//! attention runs per sequence against that sequence's own KV cache.

pub mod adapter;
pub mod bank;
pub mod base;
pub mod chat_template;
pub mod config;
pub mod device;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod gate;
pub mod generate;
pub mod kv_cache;
pub mod logprobs;
pub mod model;
pub mod sampling;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use adapter::{Adapter, AdapterId, HostCache, HostCacheStats};
pub use bank::{AdapterBank, AdapterLease, BankConfig, BankStats, ResidencyKey};
pub use base::BaseModel;
pub use chat_template::{ChatMessage, ChatTemplate};
pub use config::{ModelConfig, ModuleKind, RopeConfig, RopeScaling};
pub use device::DeviceChoice;
pub use error::{Result, RuntimeError};
pub use gate::{prior_row, Candidate, FixedGate, Gate, GateInput, RowSplitGate};
pub use kv_cache::KvCache;
pub use logprobs::{LogprobRequest, TokenLogprob, MAX_TOP_LOGPROBS};
pub use model::{LlamaModel, LogitRows, LoraStacks, ModelBackend, NoAdapters, SeqStep};
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::{TokenStream, Tokenizer};
pub use weights::{WeightDtype, WeightSource};
