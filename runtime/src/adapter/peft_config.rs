//! `PeftLoraConfig`: serde mirror of PEFT's `adapter_config.json` (a `LoraConfig`), as saved.
//!
//! This type only says what the file says; [`super::AdapterConfig::from_peft`] decides what
//! the runtime accepts. Fields the runtime never reads (`lora_dropout`, `task_type`,
//! `init_lora_weights`, ...) are ignored by serde, so newer PEFT versions still parse.

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::{Result, RuntimeError};

#[derive(Debug, Clone, Deserialize)]
pub struct PeftLoraConfig {
    #[serde(default)]
    pub peft_type: Option<String>,
    #[serde(default = "default_r")]
    pub r: usize,
    /// PEFT writes an int, but a float is legal Python and shows up in hand-written files.
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub bias: Option<String>,
    #[serde(default)]
    pub lora_bias: bool,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub target_modules: Option<StringOrList>,
    #[serde(default)]
    pub exclude_modules: Option<StringOrList>,
    #[serde(default)]
    pub target_parameters: Option<Vec<String>>,
    #[serde(default)]
    pub layers_to_transform: Option<IntOrList>,
    #[serde(default)]
    pub layers_pattern: Option<StringOrList>,
    #[serde(default)]
    pub rank_pattern: Option<OrderedMap<usize>>,
    #[serde(default)]
    pub alpha_pattern: Option<OrderedMap<f64>>,
    #[serde(default)]
    pub layer_replication: Option<serde_json::Value>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
}

/// PEFT's defaults for a `LoraConfig()` built without arguments.
fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    8.0
}

/// `Union[str, list[str]]` in PEFT: a string and a list mean different things.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// `Union[int, list[int]]` in PEFT (`layers_to_transform`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, expecting = "a layer index or a list of layer indices")]
pub enum IntOrList {
    One(usize),
    Many(Vec<usize>),
}

/// A JSON object whose key order is kept: PEFT's `rank_pattern` and `alpha_pattern` are
/// Python dicts where the first matching key wins, and serde_json's `Map` (without the
/// `preserve_order` feature) would sort the keys.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        struct Entries<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, V>()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        de.deserialize_map(Entries(PhantomData))
    }
}

impl PeftLoraConfig {
    /// Reads and parses `adapter_config.json`. Errors name the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::Adapter {
            path: path.to_path_buf(),
            reason: match e.kind() {
                std::io::ErrorKind::NotFound => "the file is missing".to_string(),
                _ => format!("cannot read the file: {e}"),
            },
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of an `adapter_config.json`; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| RuntimeError::Adapter {
            path: path.to_path_buf(),
            reason: format!("not a valid PEFT LoRA config: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PeftLoraConfig> {
        PeftLoraConfig::parse(text, Path::new("dir/adapter_config.json"))
    }

    #[test]
    fn parses_a_peft_file_and_ignores_unknown_fields() {
        let cfg = parse(
            r#"{
                "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 16, "lora_alpha": 32,
                "lora_dropout": 0.05, "target_modules": ["v_proj", "q_proj"],
                "bias": "none", "modules_to_save": null, "use_rslora": false,
                "rank_pattern": {"z_key": 4, "a_key": 2}, "alpha_pattern": {},
                "layers_to_transform": 1, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M",
                "some_future_field": {"nested": [1, 2]}
            }"#,
        )
        .unwrap();
        assert_eq!(cfg.peft_type.as_deref(), Some("LORA"));
        assert_eq!(cfg.r, 16);
        assert_eq!(cfg.lora_alpha, 32.0);
        assert_eq!(
            cfg.target_modules,
            Some(StringOrList::Many(vec!["v_proj".into(), "q_proj".into()]))
        );
        assert_eq!(cfg.layers_to_transform, Some(IntOrList::One(1)));
        // File order, not sorted order: the first matching key wins in PEFT.
        let keys: Vec<&str> = cfg
            .rank_pattern
            .as_ref()
            .unwrap()
            .0
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["z_key", "a_key"]);
        assert_eq!(cfg.modules_to_save, None);
    }

    #[test]
    fn defaults_follow_peft() {
        let cfg = parse(r#"{"peft_type": "LORA", "target_modules": ".*q_proj"}"#).unwrap();
        assert_eq!((cfg.r, cfg.lora_alpha), (8, 8.0));
        assert_eq!(
            cfg.target_modules,
            Some(StringOrList::One(".*q_proj".into()))
        );
        assert!(!cfg.use_dora && !cfg.use_rslora && !cfg.fan_in_fan_out);
    }

    #[test]
    fn bad_json_names_the_file_and_the_place() {
        let err = parse(r#"{"r": "eight"}"#).unwrap_err();
        assert!(matches!(err, RuntimeError::Adapter { .. }));
        let msg = err.to_string();
        assert!(msg.contains("dir/adapter_config.json"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn missing_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adapter_config.json");
        let err = PeftLoraConfig::read(&path).unwrap_err();
        assert!(matches!(err, RuntimeError::Adapter { path: ref p, .. } if p == &path));
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
