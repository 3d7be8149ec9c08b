//! `RegistryConfig`: where adapters may come from and the limits on what describes them.

use std::path::PathBuf;

use crate::vectors::GraphParams;

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Folders adapters may be registered from (the registry's own folder is always
    /// allowed). A path is checked after resolving symlinks and `..`.
    pub allowed_roots: Vec<PathBuf>,
    /// At most this many example prompts per adapter.
    pub max_examples: usize,
    /// At most this many characters per description or example.
    pub max_text_chars: usize,
    /// At most this many tags, each `[a-z0-9][a-z0-9._-]*` like an id.
    pub max_tags: usize,
    pub graph: GraphParams,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            allowed_roots: Vec::new(),
            max_examples: 200,
            max_text_chars: 4000,
            max_tags: 32,
            graph: GraphParams::default(),
        }
    }
}
