//! The small vocabulary every loramux crate shares, at the bottom of the dependency graph:
//! the one validated adapter id, and the content hash that keys adapter files.

mod adapter_id;
mod content_hash;

pub use adapter_id::{AdapterId, InvalidAdapterId};
pub use content_hash::{sha256_file, sha256_hex};
