//! `AdapterConfig`: what the runtime keeps of a PEFT LoRA config, checked against the model.
//!
//! Every rule below is PEFT's, applied to a module's full name in the base model,
//! `model.layers.{L}.{self_attn|mlp}.{q_proj|k_proj|...}` ([`module_path`]):
//! - `target_modules` as a list: an entry matches a name equal to it or ending in `.{entry}`;
//!   as a string: a regex that must match the whole name; `"all-linear"`: every projection.
//! - `layers_to_transform` (list targets only) keeps the listed layers; absent means all.
//! - `exclude_modules` removes matches, with the same list/string rules.
//! - `rank_pattern` / `alpha_pattern`: the first key whose regex `(.*\.)?{key}$` matches the
//!   name overrides `r` / `lora_alpha` for that module.
//! - scale = alpha / r, or alpha / sqrt(r) with `use_rslora`, per module.
//!
//! Anything that would change the model beyond `y += scale · B(A x)` on the seven llama
//! projections (DoRA, biases, `modules_to_save`, other target modules) is refused here.

use std::path::Path;

use regex::Regex;

use super::peft_config::{IntOrList, OrderedMap, PeftLoraConfig, StringOrList};
use crate::{ModelConfig, ModuleKind, Result, RuntimeError};

/// PEFT's shorthand for "every linear layer except the output head".
const ALL_LINEAR: &str = "all-linear";

/// The full name PEFT matches against: `model.layers.3.self_attn.q_proj`.
pub fn module_path(layer: usize, module: ModuleKind) -> String {
    format!(
        "model.layers.{layer}.{}.{}",
        module.hf_parent(),
        module.hf_name()
    )
}

fn allowed_names() -> String {
    ModuleKind::ALL.map(ModuleKind::hf_name).join(", ")
}

/// Which module names a `target_modules` (or `exclude_modules`) value selects.
#[derive(Debug, Clone)]
pub enum ModuleMatcher {
    /// PEFT list semantics: an entry matches a name equal to it or ending in `.{entry}`.
    Names(Vec<String>),
    /// PEFT string semantics: `pattern` must match the whole name.
    Regex { pattern: String, regex: Regex },
}

impl ModuleMatcher {
    pub fn matches(&self, full_name: &str) -> bool {
        match self {
            Self::Names(names) => names.iter().any(|n| name_matches(n, full_name)),
            Self::Regex { regex, .. } => regex.is_match(full_name),
        }
    }

    fn from_peft(value: &StringOrList, field: &str, path: &Path) -> Result<Self> {
        Ok(match value {
            StringOrList::One(s) if s == ALL_LINEAR => {
                Self::Names(ModuleKind::ALL.map(|m| m.hf_name().to_string()).to_vec())
            }
            StringOrList::One(pattern) => Self::Regex {
                pattern: pattern.clone(),
                regex: compile(&format!("^(?:{pattern})$"), field, pattern, path)?,
            },
            StringOrList::Many(names) => Self::Names(names.clone()),
        })
    }
}

fn name_matches(entry: &str, full_name: &str) -> bool {
    full_name == entry
        || full_name
            .strip_suffix(entry)
            .is_some_and(|head| head.ends_with('.'))
}

fn compile(regex: &str, field: &str, key: &str, path: &Path) -> Result<Regex> {
    Regex::new(regex).map_err(|e| RuntimeError::Adapter {
        path: path.to_path_buf(),
        reason: format!("{field} {key:?} is not a regex this runtime can use: {e}"),
    })
}

/// The decoder layers an adapter applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelection {
    All,
    /// Sorted, without duplicates.
    Only(Vec<usize>),
}

impl LayerSelection {
    pub fn contains(&self, layer: usize) -> bool {
        match self {
            Self::All => true,
            Self::Only(layers) => layers.binary_search(&layer).is_ok(),
        }
    }
}

/// One `rank_pattern` / `alpha_pattern` entry, compiled.
#[derive(Debug, Clone)]
struct PatternOverride<V> {
    key: String,
    regex: Regex,
    value: V,
}

fn compile_patterns<V: Copy>(
    map: Option<&OrderedMap<V>>,
    field: &str,
    path: &Path,
) -> Result<Vec<PatternOverride<V>>> {
    map.map_or(&[][..], |m| &m.0[..])
        .iter()
        .map(|(key, value)| {
            Ok(PatternOverride {
                key: key.clone(),
                regex: compile(&format!("^(?:.*\\.)?(?:{key})$"), field, key, path)?,
                value: *value,
            })
        })
        .collect()
}

fn first_match<'a, V>(
    patterns: &'a [PatternOverride<V>],
    name: &str,
) -> Option<&'a PatternOverride<V>> {
    patterns.iter().find(|p| p.regex.is_match(name))
}

/// The runtime summary of an adapter's config.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    rank: usize,
    alpha: f64,
    use_rslora: bool,
    targets: ModuleMatcher,
    exclude: Option<ModuleMatcher>,
    layers: LayerSelection,
    rank_pattern: Vec<PatternOverride<usize>>,
    alpha_pattern: Vec<PatternOverride<f64>>,
    base_model: Option<String>,
}

impl AdapterConfig {
    /// A plain config for adapters built in memory (tests, training): `modules` in every
    /// layer, one rank and alpha, no patterns.
    pub fn for_modules(rank: usize, alpha: f64, modules: &[ModuleKind]) -> Self {
        Self {
            rank,
            alpha,
            use_rslora: false,
            targets: ModuleMatcher::Names(
                modules.iter().map(|m| m.hf_name().to_string()).collect(),
            ),
            exclude: None,
            layers: LayerSelection::All,
            rank_pattern: Vec::new(),
            alpha_pattern: Vec::new(),
            base_model: None,
        }
    }

    /// Reads `adapter_config.json` at `path` and checks it against `model`.
    pub fn load(path: &Path, model: &ModelConfig) -> Result<Self> {
        Self::from_peft(&PeftLoraConfig::read(path)?, path, model)
    }

    /// Converts the file's config, refusing what the runtime cannot apply exactly.
    /// `path` is only used in errors.
    pub fn from_peft(peft: &PeftLoraConfig, path: &Path, model: &ModelConfig) -> Result<Self> {
        check_supported(peft, path)?;
        let refuse = |reason: String| RuntimeError::Adapter {
            path: path.to_path_buf(),
            reason,
        };
        if peft.r == 0 {
            return Err(refuse("r is 0; a LoRA rank must be at least 1".into()));
        }
        if !peft.lora_alpha.is_finite() {
            return Err(refuse(format!("lora_alpha is {}", peft.lora_alpha)));
        }
        let targets = match &peft.target_modules {
            Some(t) => ModuleMatcher::from_peft(t, "target_modules", path)?,
            None => return Err(refuse("target_modules is missing".into())),
        };
        let config = Self {
            rank: peft.r,
            alpha: peft.lora_alpha,
            use_rslora: peft.use_rslora,
            layers: layer_selection(peft, &targets, model, path)?,
            targets,
            exclude: peft
                .exclude_modules
                .as_ref()
                .map(|e| ModuleMatcher::from_peft(e, "exclude_modules", path))
                .transpose()?,
            rank_pattern: compile_patterns(peft.rank_pattern.as_ref(), "rank_pattern", path)?,
            alpha_pattern: compile_patterns(peft.alpha_pattern.as_ref(), "alpha_pattern", path)?,
            base_model: peft.base_model_name_or_path.clone(),
        };
        if let Some(p) = config.rank_pattern.iter().find(|p| p.value == 0) {
            return Err(refuse(format!("rank_pattern gives {:?} rank 0", p.key)));
        }
        if let Some(p) = config.alpha_pattern.iter().find(|p| !p.value.is_finite()) {
            return Err(refuse(format!(
                "alpha_pattern gives {:?} alpha {}",
                p.key, p.value
            )));
        }
        config.check_targets(model, path)?;
        Ok(config)
    }

    /// Every target must name a projection of this model, and the whole config must select
    /// at least one; otherwise the adapter was made for another architecture.
    fn check_targets(&self, model: &ModelConfig, path: &Path) -> Result<()> {
        let refuse = |reason: String| {
            Err(RuntimeError::Adapter {
                path: path.to_path_buf(),
                reason,
            })
        };
        let all: Vec<String> = (0..model.num_layers)
            .flat_map(|l| ModuleKind::ALL.map(|m| module_path(l, m)))
            .collect();
        match &self.targets {
            ModuleMatcher::Names(names) => {
                if names.is_empty() {
                    return refuse("target_modules is an empty list".into());
                }
                for entry in names {
                    if all.iter().any(|full| name_matches(entry, full)) {
                        continue;
                    }
                    let last = entry.rsplit('.').next().unwrap_or(entry);
                    return refuse(if ModuleKind::from_hf_name(last).is_some() {
                        format!(
                            "target_modules entry {entry:?} names no module of this model \
                             (it has {} layers)",
                            model.num_layers
                        )
                    } else {
                        format!(
                            "target_modules entry {entry:?} is not a projection of a llama-family \
                             decoder layer; allowed names are {}",
                            allowed_names()
                        )
                    });
                }
            }
            ModuleMatcher::Regex { pattern, regex } => {
                if !all.iter().any(|full| regex.is_match(full)) {
                    return refuse(format!(
                        "target_modules regex {pattern:?} matches none of this model's projections \
                         (full names like {:?}; projections are {})",
                        module_path(0, ModuleKind::Q),
                        allowed_names()
                    ));
                }
            }
        }
        if self.selected(model.num_layers).is_empty() {
            return refuse(
                "target_modules, layers_to_transform and exclude_modules together select no module"
                    .into(),
            );
        }
        Ok(())
    }

    /// Does the config put a LoRA on this module?
    pub fn selects(&self, layer: usize, module: ModuleKind) -> bool {
        let name = module_path(layer, module);
        if self.exclude.as_ref().is_some_and(|e| e.matches(&name)) {
            return false;
        }
        // PEFT checks `key in target_modules` before applying layers_to_transform, so a list
        // entry spelling out the full name selects its module in any layer selection.
        let listed_in_full =
            matches!(&self.targets, ModuleMatcher::Names(names) if names.contains(&name));
        listed_in_full || (self.layers.contains(layer) && self.targets.matches(&name))
    }

    /// Every selected (layer, module) of a model with `num_layers` layers, in order.
    pub fn selected(&self, num_layers: usize) -> Vec<(usize, ModuleKind)> {
        (0..num_layers)
            .flat_map(|l| ModuleKind::ALL.map(|m| (l, m)))
            .filter(|&(l, m)| self.selects(l, m))
            .collect()
    }

    /// The rank of one module, and the `rank_pattern` key that set it if one did.
    pub fn rank_of(&self, layer: usize, module: ModuleKind) -> (usize, Option<&str>) {
        match first_match(&self.rank_pattern, &module_path(layer, module)) {
            Some(p) => (p.value, Some(&p.key)),
            None => (self.rank, None),
        }
    }

    pub fn alpha_of(&self, layer: usize, module: ModuleKind) -> f64 {
        first_match(&self.alpha_pattern, &module_path(layer, module))
            .map_or(self.alpha, |p| p.value)
    }

    /// PEFT's `scaling`: alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub fn scale_of(&self, layer: usize, module: ModuleKind) -> f32 {
        let r = self.rank_of(layer, module).0 as f64;
        let alpha = self.alpha_of(layer, module);
        let scale = if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        };
        scale as f32
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
    pub fn use_rslora(&self) -> bool {
        self.use_rslora
    }
    pub fn targets(&self) -> &ModuleMatcher {
        &self.targets
    }
    pub fn layers(&self) -> &LayerSelection {
        &self.layers
    }
    /// `base_model_name_or_path`, as written in the file; informational only.
    pub fn base_model(&self) -> Option<&str> {
        self.base_model.as_deref()
    }
}

/// The flags whose presence means the adapter is not plain LoRA on linear layers.
fn check_supported(peft: &PeftLoraConfig, path: &Path) -> Result<()> {
    let refuse = |reason: String| {
        Err(RuntimeError::Adapter {
            path: path.to_path_buf(),
            reason,
        })
    };
    match peft.peft_type.as_deref() {
        Some("LORA") => {}
        Some(other) => {
            return refuse(format!(
                "peft_type is {other:?}; only LORA adapters are supported"
            ))
        }
        None => return refuse("peft_type is missing; expected \"LORA\"".into()),
    }
    if peft.use_dora {
        return refuse("use_dora is true; DoRA adapters are not supported".into());
    }
    match peft.bias.as_deref() {
        None | Some("none") => {}
        Some(other) => {
            return refuse(format!(
                "bias is {other:?}; only \"none\" is supported (the runtime adds no bias terms)"
            ))
        }
    }
    if peft.lora_bias {
        return refuse("lora_bias is true; LoRA B biases are not supported".into());
    }
    if let Some(modules) = peft.modules_to_save.as_ref().filter(|m| !m.is_empty()) {
        return refuse(format!(
            "modules_to_save is {modules:?}; adapters that replace whole modules are not supported"
        ));
    }
    if peft.fan_in_fan_out {
        return refuse(
            "fan_in_fan_out is true; that layout is for GPT-2 Conv1D layers, and llama \
             projections are nn.Linear"
                .into(),
        );
    }
    if peft
        .layer_replication
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return refuse("layer_replication is set; replicated layers are not supported".into());
    }
    if let Some(params) = peft.target_parameters.as_ref().filter(|p| !p.is_empty()) {
        return refuse(format!(
            "target_parameters is {params:?}; LoRA on raw parameters is not supported"
        ));
    }
    Ok(())
}

/// `layers_to_transform` (and its companion `layers_pattern`) under PEFT's rules.
fn layer_selection(
    peft: &PeftLoraConfig,
    targets: &ModuleMatcher,
    model: &ModelConfig,
    path: &Path,
) -> Result<LayerSelection> {
    let refuse = |reason: String| {
        Err(RuntimeError::Adapter {
            path: path.to_path_buf(),
            reason,
        })
    };
    // PEFT finds the layer index after `.{layers_pattern}.`; llama's decoder layers live
    // under `model.layers`, so only that pattern (or none) selects anything here.
    let pattern_ok = match &peft.layers_pattern {
        None => true,
        Some(StringOrList::One(p)) => p == "layers",
        Some(StringOrList::Many(ps)) => ps.is_empty() || ps.iter().any(|p| p == "layers"),
    };
    if !pattern_ok {
        return refuse(format!(
            "layers_pattern {:?} does not name this model's decoder layers (\"layers\")",
            peft.layers_pattern
        ));
    }
    let mut layers = match &peft.layers_to_transform {
        None => return Ok(LayerSelection::All),
        Some(IntOrList::One(l)) => vec![*l],
        // PEFT treats an empty list like no list.
        Some(IntOrList::Many(ls)) if ls.is_empty() => return Ok(LayerSelection::All),
        Some(IntOrList::Many(ls)) => ls.clone(),
    };
    if let ModuleMatcher::Regex { .. } = targets {
        return refuse(
            "layers_to_transform is set but target_modules is a regex string; PEFT only applies \
             layers_to_transform to a list of target modules"
                .into(),
        );
    }
    layers.sort_unstable();
    layers.dedup();
    if let Some(&bad) = layers.iter().find(|&&l| l >= model.num_layers) {
        return refuse(format!(
            "layers_to_transform names layer {bad}, but the model has {} layers",
            model.num_layers
        ));
    }
    Ok(LayerSelection::Only(layers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::testing::{lora_config, tiny_model};
    use serde_json::{json, Value};

    const PATH: &str = "adapters/demo/adapter_config.json";

    fn convert(cfg: &Value) -> Result<AdapterConfig> {
        let path = Path::new(PATH);
        let peft = PeftLoraConfig::parse(&cfg.to_string(), path)?;
        AdapterConfig::from_peft(&peft, path, &tiny_model())
    }

    /// Asserts an `Adapter` error naming the config file and containing every needle.
    fn assert_refused(cfg: &Value, needles: &[&str]) {
        let err = convert(cfg).unwrap_err();
        let RuntimeError::Adapter { path, .. } = &err else {
            panic!("expected RuntimeError::Adapter, got {err:?}");
        };
        assert_eq!(path, Path::new(PATH));
        let msg = err.to_string();
        assert!(msg.contains(PATH), "{msg}");
        for needle in needles {
            assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
        }
    }

    fn with(mut cfg: Value, key: &str, value: Value) -> Value {
        cfg[key] = value;
        cfg
    }

    fn base() -> Value {
        lora_config(8, 16.0, json!(["q_proj", "v_proj"]))
    }

    #[test]
    fn list_targets_select_every_layer() {
        let cfg = convert(&base()).unwrap();
        assert_eq!(cfg.selected(3).len(), 6);
        assert!(cfg.selects(2, ModuleKind::V) && !cfg.selects(2, ModuleKind::K));
        assert_eq!(cfg.rank_of(0, ModuleKind::Q), (8, None));
        assert_eq!(cfg.scale_of(0, ModuleKind::Q), 2.0);
        assert_eq!(
            cfg.base_model(),
            Some("HuggingFaceTB/SmolLM2-135M-Instruct")
        );
    }

    #[test]
    fn list_entries_match_whole_name_suffixes_only() {
        let cfg = convert(&lora_config(
            8,
            8.0,
            json!(["layers.1.mlp.up_proj", "o_proj"]),
        ))
        .unwrap();
        let selected = cfg.selected(3);
        assert!(
            selected.contains(&(1, ModuleKind::Up)) && !selected.contains(&(0, ModuleKind::Up))
        );
        assert_eq!(selected.len(), 4);
        // "proj" is a substring of every name but a suffix after a dot of none.
        assert_refused(
            &lora_config(8, 8.0, json!(["proj"])),
            &["\"proj\"", "allowed names are q_proj"],
        );
    }

    #[test]
    fn regex_targets_are_full_matches() {
        let cfg = convert(&lora_config(
            4,
            8.0,
            json!(r"model\.layers\.[02]\.(self_attn\.k|mlp\.down)_proj"),
        ))
        .unwrap();
        let selected = cfg.selected(3);
        let expected = [
            (0, ModuleKind::K),
            (0, ModuleKind::Down),
            (2, ModuleKind::K),
            (2, ModuleKind::Down),
        ];
        assert_eq!(selected, expected);
        // A partial match is not a match: `q_proj` alone does not fully match any name.
        assert_refused(
            &lora_config(4, 8.0, json!("q_proj")),
            &["regex \"q_proj\"", "matches none"],
        );
    }

    #[test]
    fn all_linear_selects_every_projection() {
        let cfg = convert(&lora_config(4, 8.0, json!("all-linear"))).unwrap();
        assert_eq!(cfg.selected(3).len(), 21);
    }

    #[test]
    fn layers_to_transform_as_int_or_list() {
        let cfg = convert(&with(base(), "layers_to_transform", json!(1))).unwrap();
        assert_eq!(cfg.selected(3), [(1, ModuleKind::Q), (1, ModuleKind::V)]);
        let cfg = convert(&with(
            with(base(), "layers_to_transform", json!([2, 0])),
            "layers_pattern",
            json!("layers"),
        ))
        .unwrap();
        assert_eq!(cfg.layers(), &LayerSelection::Only(vec![0, 2]));
        assert_eq!(cfg.selected(3).len(), 4);
        let cfg = convert(&with(base(), "layers_to_transform", json!([]))).unwrap();
        assert_eq!(cfg.layers(), &LayerSelection::All);
        // A full name in the list bypasses layers_to_transform, as in PEFT.
        let targets = json!(["model.layers.0.self_attn.q_proj", "v_proj"]);
        let cfg = convert(&with(
            lora_config(8, 8.0, targets),
            "layers_to_transform",
            json!([1]),
        ));
        assert_eq!(
            cfg.unwrap().selected(3),
            [(0, ModuleKind::Q), (1, ModuleKind::V)]
        );
    }

    #[test]
    fn exclude_modules_removes_matches() {
        let cfg = convert(&with(
            lora_config(4, 8.0, json!("all-linear")),
            "exclude_modules",
            json!(["down_proj", "layers.0.self_attn.q_proj"]),
        ))
        .unwrap();
        assert_eq!(cfg.selected(3).len(), 21 - 3 - 1);
        assert!(!cfg.selects(0, ModuleKind::Q) && cfg.selects(1, ModuleKind::Q));
    }

    #[test]
    fn rank_and_alpha_patterns_first_match_wins() {
        let cfg = with(
            with(
                lora_config(8, 16.0, json!("all-linear")),
                "rank_pattern",
                json!({
                    "layers.1.self_attn.q_proj": 2, "q_proj": 4, "mlp\\.(up|gate)_proj": 6
                }),
            ),
            "alpha_pattern",
            json!({"q_proj": 2, "self_attn.q_proj": 100}),
        );
        let cfg = convert(&cfg).unwrap();
        assert_eq!(
            cfg.rank_of(1, ModuleKind::Q),
            (2, Some("layers.1.self_attn.q_proj"))
        );
        assert_eq!(cfg.rank_of(0, ModuleKind::Q), (4, Some("q_proj")));
        assert_eq!(cfg.rank_of(0, ModuleKind::Up).0, 6);
        assert_eq!(cfg.rank_of(0, ModuleKind::Down), (8, None));
        // "q_proj" comes first in the file, so it wins over the longer "self_attn.q_proj".
        assert_eq!(cfg.alpha_of(0, ModuleKind::Q), 2.0);
        assert_eq!(cfg.alpha_of(0, ModuleKind::K), 16.0);
        assert_eq!(cfg.scale_of(0, ModuleKind::Q), 0.5);
        assert_eq!(cfg.scale_of(0, ModuleKind::Up), 16.0 / 6.0);
    }

    #[test]
    fn rslora_scales_by_the_square_root() {
        let cfg = convert(&with(
            lora_config(16, 8.0, json!(["q_proj"])),
            "use_rslora",
            json!(true),
        ))
        .unwrap();
        assert_eq!(cfg.scale_of(0, ModuleKind::Q), 2.0);
    }

    #[test]
    fn refuses_other_peft_types() {
        assert_refused(
            &with(base(), "peft_type", json!("IA3")),
            &["peft_type is \"IA3\"", "only LORA"],
        );
        assert_refused(
            &with(base(), "peft_type", Value::Null),
            &["peft_type is missing"],
        );
    }

    #[test]
    fn refuses_dora() {
        assert_refused(
            &with(base(), "use_dora", json!(true)),
            &["use_dora", "DoRA"],
        );
    }

    #[test]
    fn refuses_bias() {
        assert_refused(
            &with(base(), "bias", json!("lora_only")),
            &["bias is \"lora_only\"", "\"none\""],
        );
        assert_refused(&with(base(), "lora_bias", json!(true)), &["lora_bias"]);
    }

    #[test]
    fn refuses_modules_to_save() {
        assert_refused(
            &with(base(), "modules_to_save", json!(["lm_head"])),
            &["modules_to_save", "lm_head"],
        );
        convert(&with(base(), "modules_to_save", json!([]))).unwrap();
    }

    #[test]
    fn refuses_fan_in_fan_out() {
        assert_refused(
            &with(base(), "fan_in_fan_out", json!(true)),
            &["fan_in_fan_out", "Conv1D"],
        );
    }

    #[test]
    fn refuses_targets_that_are_not_llama_projections() {
        for bad in ["qkv_proj", "embed_tokens", "lm_head"] {
            let cfg = lora_config(8, 8.0, json!(["q_proj", bad]));
            assert_refused(
                &cfg,
                &[
                    &format!("{bad:?}"),
                    "allowed names are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
                ],
            );
        }
        assert_refused(
            &lora_config(8, 8.0, json!(["layers.7.self_attn.q_proj"])),
            &["3 layers"],
        );
        assert_refused(&lora_config(8, 8.0, json!([])), &["empty list"]);
        assert_refused(
            &with(base(), "target_modules", Value::Null),
            &["target_modules is missing"],
        );
    }

    #[test]
    fn refuses_a_regex_that_matches_nothing_or_does_not_compile() {
        assert_refused(
            &lora_config(8, 8.0, json!(r".*\.qkv_proj")),
            &["matches none", "q_proj"],
        );
        assert_refused(
            &lora_config(8, 8.0, json!(r"(?<=x)q_proj")),
            &["target_modules", "not a regex"],
        );
    }

    #[test]
    fn refuses_bad_layer_selections() {
        assert_refused(
            &with(base(), "layers_to_transform", json!([0, 3])),
            &["layer 3", "3 layers"],
        );
        assert_refused(
            &with(
                lora_config(8, 8.0, json!(".*q_proj")),
                "layers_to_transform",
                json!(0),
            ),
            &["layers_to_transform", "regex"],
        );
        assert_refused(
            &with(
                with(base(), "layers_to_transform", json!(0)),
                "layers_pattern",
                json!("h"),
            ),
            &["layers_pattern"],
        );
        assert_refused(
            &with(
                with(base(), "layers_to_transform", json!(0)),
                "exclude_modules",
                json!(["q_proj", "v_proj"]),
            ),
            &["select no module"],
        );
    }

    #[test]
    fn refuses_bad_ranks_and_alphas() {
        assert_refused(&with(base(), "r", json!(0)), &["r is 0"]);
        assert_refused(
            &with(base(), "rank_pattern", json!({"q_proj": 0})),
            &["rank_pattern", "rank 0"],
        );
    }
}
