//! loramux router: from a request to the adapters that serve it.
//!
//! - [`Router`]: explicit choices (`base`, an adapter, a weighted list) or retrieval over
//!   the registry's index, with a cache of recent decisions.
//! - [`retrieve`]: the LoraRetriever-style candidates and their softmax prior.
//! - [`PeftValidator`]: the registry's adapter check, with the runtime's PEFT loader.
//! - [`gate`]: the learned per-token gate (an implementation of the runtime's `Gate`) and its
//!   training.
//! - [`bench`]: embedding throughput, routing latency, index build and load times.

pub mod bench;
mod cache;
mod error;
pub mod gate;
mod plan;
pub mod retrieve;
mod router;
mod validator;

pub use cache::RouteCache;
pub use error::{Result, RouterError};
pub use plan::{Choice, RouteCandidate, RoutePlan};
pub use retrieve::RetrievalConfig;
pub use router::{Router, RouterConfig};
pub use validator::PeftValidator;
